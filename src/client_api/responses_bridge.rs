//! The OpenAI Responses API over chat completions ([`super::Translation::ViaChat`]): for
//! providers without `/v1/responses` (`openai_compatible` with `"responses": false`,
//! `anthropic`, `gemini`), a Responses request that carries its whole conversation becomes a
//! chat-completions request (which the provider's codec then translates), and the chat answer,
//! whole or streamed, becomes a Responses `response` object or event stream.
//!
//! Request (`request_to_chat`):
//! - `instructions` → a leading `system` message; `input` (a string: one user message; or
//!   items): `message` items (roles `user`, `assistant`, `system`, `developer` → `system`;
//!   content `input_text`/`output_text` → text, `refusal` → text, `input_image` with an
//!   `image_url` → an `image_url` part), `function_call` → assistant `tool_calls` (consecutive
//!   calls, and the assistant message right before them, make one assistant message),
//!   `function_call_output` → `tool` messages; `reasoning` items are dropped (chat completions
//!   has no field for them and the providers behind this bridge cannot read OpenAI's).
//! - function `tools` (flat → `{"type":"function","function":{...}}`, `strict` kept; the
//!   functions of a `namespace` tool are flattened into the list, and the answer's calls of
//!   them get their `namespace` back),
//!   `tool_choice`, `max_output_tokens` → `max_tokens`, `temperature`, `top_p`, `text.format`
//!   → `response_format`, `parallel_tool_calls`, `user` (or `safety_identifier`), `stream`
//!   (+ `stream_options.include_usage`).
//! - Dropped on purpose (hints with no chat-completions meaning; see [`DROPPED`]): `store`
//!   (nothing is stored: the answer says `"store": false`), `include`, `reasoning`,
//!   `metadata`, `prompt_cache_key`, `prompt_cache_retention`, `service_tier`, `truncation`,
//!   `stream_options`, `text.verbosity`, `top_logprobs`.
//! - Refused with 400 `unsupported_operation` (server-side state or server tools):
//!   `previous_response_id`, `conversation`, `prompt`, `background: true`, tools and
//!   `tool_choice` other than functions, `item_reference` and every input item type but
//!   `message`, `function_call`, `function_call_output` and `reasoning`. Any other field
//!   with a value gets 400 `unsupported_parameter` naming it; `input_file` parts and images
//!   by `file_id` too.
//!
//! Answer (`answer_from_chat`, `stream_from_chat` in `stream.rs`): the chat message becomes
//! one `message` output item (`output_text`, or `refusal`) followed by one `function_call`
//! item per tool call; `finish_reason: "length"` makes the response `incomplete` with
//! `incomplete_details.reason: "max_output_tokens"` (`content_filter` likewise); usage becomes
//! `input_tokens`, `output_tokens`, `total_tokens` and their details. Given the client's
//! request (`ChatBridge::answer_from_chat_for`, `stream_from_chat_for`), the response echoes
//! its settings (`tools`, `instructions` ...) as the Responses API does.

mod stream;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::bridge::{self, ChatBridge};
use crate::error::ApiError;
use crate::providers::{Exchange, StreamDecoder};

pub use stream::ResponsesStream;

/// The Responses API's bridge to chat completions.
pub struct ResponsesBridge;

/// The one instance `ClientApi::chat_bridge` hands out.
pub static RESPONSES_BRIDGE: ResponsesBridge = ResponsesBridge;

/// Request fields translated to chat completions.
const MAPPED: [&str; 14] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "stream",
    "background",
];

/// Request fields dropped on purpose: hints and OpenAI-side options with no meaning for a
/// chat-completions provider. `store` is among them: the gateway keeps nothing, so a later
/// `previous_response_id` naming this answer gets 400 `unsupported_operation`.
pub const DROPPED: [&str; 11] = [
    "store",
    "include",
    "reasoning",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "truncation",
    "stream_options",
    "top_logprobs",
    "client_metadata",
];

/// Fields that need the provider's own Responses state: refused when they carry a value.
const STATEFUL: [&str; 3] = ["previous_response_id", "conversation", "prompt"];

impl ChatBridge for ResponsesBridge {
    fn request_to_chat(&self, request: &Value, _exchange: &Exchange) -> Result<Value, ApiError> {
        request_to_chat(request)
    }

    fn answer_from_chat(&self, answer: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
        answer_from_chat(answer, exchange)
    }

    fn stream_from_chat(&self, exchange: &Exchange) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesStream::new(exchange, Echo::default()))
    }

    fn answer_from_chat_for(
        &self,
        answer: &Value,
        request: &Value,
        exchange: &Exchange,
    ) -> Result<Value, ApiError> {
        answer_with_echo(answer, exchange, &Echo::of(request))
    }

    fn stream_from_chat_for(&self, request: &Value, exchange: &Exchange) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesStream::new(exchange, Echo::of(request)))
    }
}

// ------------------------------------------------------------------------ errors

/// 400 `unsupported_operation`: the request needs what only the provider's own Responses API
/// has (stored responses, conversations, server tools).
pub fn unsupported_operation(what: &str, why: &str) -> ApiError {
    ApiError::invalid_request(
        "unsupported_operation",
        format!(
            "{what} is not supported on this route: {why}. The route's provider does not serve \
             the Responses API, so the gateway translates the request to chat completions and \
             keeps no state; send the whole conversation in 'input' and use function tools."
        ),
    )
}

fn unsupported_parameter(what: &str) -> ApiError {
    ApiError::invalid_request(
        "unsupported_parameter",
        format!(
            "{what} is not supported on this route (the Responses request is translated to chat \
             completions)."
        ),
    )
}

fn invalid(what: &str, why: &str) -> ApiError {
    ApiError::invalid_request(
        "invalid_value",
        format!("Invalid parameter '{what}': {why}."),
    )
}

// ------------------------------------------------------------------------ request

/// A Responses request as a chat-completions request (see the module's table).
pub fn request_to_chat(request: &Value) -> Result<Value, ApiError> {
    let request = request.as_object().ok_or_else(|| {
        ApiError::invalid_request("invalid_body", "The request body must be a JSON object.")
    })?;
    check_fields(request)?;
    let mut chat = Map::new();
    if let Some(model) = request.get("model") {
        chat.insert("model".into(), model.clone());
    }
    chat.insert("messages".into(), Value::Array(messages(request)?));
    if let Some(tools) = tools(request)? {
        chat.insert("tools".into(), tools);
    }
    if let Some(choice) = tool_choice(request.get("tool_choice"))? {
        chat.insert("tool_choice".into(), choice);
    }
    bridge::copy_positive_integer(
        request.get("max_output_tokens"),
        "max_output_tokens",
        &mut chat,
        "max_tokens",
        invalid,
    )?;
    bridge::copy_numbers(
        |key| request.get(key),
        &["temperature", "top_p"],
        &mut chat,
        invalid,
    )?;
    if let Some(format) = response_format(request.get("text"))? {
        chat.insert("response_format".into(), format);
    }
    match request.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(value @ Value::Bool(_)) => {
            chat.insert("parallel_tool_calls".into(), value.clone());
        }
        Some(_) => return Err(invalid("parallel_tool_calls", "must be a boolean")),
    }
    let mut user = None;
    for key in ["safety_identifier", "user"] {
        match request.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) => user = Some(value),
            Some(_) => return Err(invalid(key, "must be a string")),
        }
    }
    if let Some(user) = user {
        chat.insert("user".into(), Value::String(user.clone()));
    }
    match request.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            chat.insert("stream".into(), Value::Bool(true));
            chat.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(invalid("stream", "must be a boolean")),
    }
    Ok(Value::Object(chat))
}

/// Refuses what needs server state, and every field neither mapped nor dropped.
fn check_fields(request: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in request {
        let key = key.as_str();
        if value.is_null() || MAPPED.contains(&key) || DROPPED.contains(&key) {
            continue;
        }
        if STATEFUL.contains(&key) {
            let why = match key {
                "previous_response_id" => "it continues a response stored by the provider",
                "conversation" => "it continues a conversation stored by the provider",
                _ => "it names a prompt template stored by the provider",
            };
            return Err(unsupported_operation(&format!("Parameter '{key}'"), why));
        }
        return Err(unsupported_parameter(&format!("Parameter '{key}'")));
    }
    match request.get("background") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(unsupported_operation(
                "Parameter 'background' set to true",
                "a background response is run and stored by the provider",
            ))
        }
        Some(_) => return Err(invalid("background", "must be a boolean")),
    }
    Ok(())
}

/// The chat messages: `instructions` first, then `input`.
fn messages(request: &Map<String, Value>) -> Result<Vec<Value>, ApiError> {
    let mut messages = Vec::new();
    match request.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        Some(_) => return Err(invalid("instructions", "must be a string")),
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            let mut builder = Messages {
                messages,
                assistant_open: false,
            };
            for (index, item) in items.iter().enumerate() {
                builder.item(item, &format!("input[{index}]"))?;
            }
            messages = builder.messages;
        }
        None | Some(Value::Null) => return Err(invalid("input", "is required")),
        Some(_) => return Err(invalid("input", "must be a string or an array of items")),
    }
    Ok(messages)
}

struct Messages {
    messages: Vec<Value>,
    /// The last message is an assistant message made from the items just before, so a
    /// `function_call` that follows joins it (one assistant turn, as the answer had it).
    assistant_open: bool,
}

impl Messages {
    fn item(&mut self, item: &Value, at: &str) -> Result<(), ApiError> {
        let object = item
            .as_object()
            .ok_or_else(|| invalid(at, "must be an object"))?;
        let kind = match object.get("type") {
            // An easy input message (`{"role","content"}`) has no type.
            None | Some(Value::Null) if object.contains_key("role") => "message",
            Some(Value::String(kind)) => kind.as_str(),
            _ => return Err(invalid(&format!("{at}.type"), "is required")),
        };
        match kind {
            "message" => self.message(object, at),
            "function_call" => self.function_call(object, at),
            "function_call_output" => {
                self.assistant_open = false;
                let call_id = string_field(object, "call_id", at)?;
                let content = tool_output(object.get("output"), &format!("{at}.output"))?;
                self.messages
                    .push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                Ok(())
            }
            // Reasoning items (summaries, OpenAI's encrypted content) mean nothing to a chat
            // provider: dropped.
            "reasoning" => Ok(()),
            "item_reference" => Err(unsupported_operation(
                &format!("{at}: an item_reference"),
                "it names an item stored by the provider",
            )),
            other => Err(unsupported_operation(
                &format!("{at}: an input item of type {other:?}"),
                "only message, function_call, function_call_output and reasoning items can be \
                 carried over chat completions",
            )),
        }
    }

    fn message(&mut self, message: &Map<String, Value>, at: &str) -> Result<(), ApiError> {
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant" | "system")) => role,
            Some("developer") => "system",
            Some(other) => {
                return Err(invalid(
                    &format!("{at}.role"),
                    &format!("{other:?} is not one of user, assistant, system, developer"),
                ))
            }
            None => return Err(invalid(&format!("{at}.role"), "is required")),
        };
        let at = format!("{at}.content");
        let content = match message.get("content") {
            Some(Value::String(text)) => Value::String(text.clone()),
            Some(Value::Array(parts)) => {
                let mut chat_parts = Vec::with_capacity(parts.len());
                for (index, part) in parts.iter().enumerate() {
                    chat_parts.push(content_part(part, &format!("{at}[{index}]"))?);
                }
                collapse_parts(chat_parts, role != "user")
                    .map_err(|()| invalid(&at, &format!("a {role} message carries text only")))?
            }
            _ => {
                return Err(invalid(
                    &at,
                    "must be a string or an array of content parts",
                ))
            }
        };
        self.messages
            .push(json!({"role": role, "content": content}));
        self.assistant_open = role == "assistant";
        Ok(())
    }

    fn function_call(&mut self, call: &Map<String, Value>, at: &str) -> Result<(), ApiError> {
        let call_id = string_field(call, "call_id", at)?;
        let name = string_field(call, "name", at)?;
        let arguments = match call.get("arguments") {
            Some(Value::String(arguments)) => arguments.clone(),
            None | Some(Value::Null) => String::from("{}"),
            Some(_) => return Err(invalid(&format!("{at}.arguments"), "must be a string")),
        };
        let tool_call = json!({
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        });
        if self.assistant_open {
            if let Some(last) = self.messages.last_mut().and_then(Value::as_object_mut) {
                let calls = last.entry("tool_calls").or_insert_with(|| json!([]));
                if let Some(calls) = calls.as_array_mut() {
                    calls.push(tool_call);
                    return Ok(());
                }
            }
        }
        self.messages.push(json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [tool_call],
        }));
        self.assistant_open = true;
        Ok(())
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a str, ApiError> {
    match object.get(key) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(invalid(&format!("{at}.{key}"), "is required"))
        }
        Some(_) => Err(invalid(&format!("{at}.{key}"), "must be a string")),
    }
}

/// One Responses content part as a chat content part.
fn content_part(part: &Value, at: &str) -> Result<Value, ApiError> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{at}.type"), "is required"))?;
    let text = |key: &str| match part.get(key) {
        Some(Value::String(text)) => Ok(json!({"type": "text", "text": text})),
        _ => Err(invalid(&format!("{at}.{key}"), "must be a string")),
    };
    match kind {
        "input_text" | "output_text" => text("text"),
        "refusal" => text("refusal"),
        "input_image" => {
            let url = match (part.get("image_url"), part.get("file_id")) {
                (Some(Value::String(url)), _) => url,
                (None | Some(Value::Null), Some(Value::String(_))) => {
                    return Err(unsupported_parameter(&format!(
                        "{at}: an image by file_id (a file stored by the provider)"
                    )))
                }
                _ => return Err(invalid(&format!("{at}.image_url"), "is required")),
            };
            let mut image = json!({"url": url});
            if let (Some(Value::String(detail)), Some(object)) =
                (part.get("detail"), image.as_object_mut())
            {
                object.insert("detail".into(), Value::String(detail.clone()));
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        "input_file" => Err(unsupported_parameter(&format!("{at}: an input_file part"))),
        other => Err(unsupported_parameter(&format!(
            "{at}: a content part of type {other:?}"
        ))),
    }
}

/// A message's chat parts as its content: one text part becomes a string; `text_only`
/// messages (assistant, system) join their text parts into one string and refuse images.
fn collapse_parts(parts: Vec<Value>, text_only: bool) -> Result<Value, ()> {
    let all_text = parts
        .iter()
        .all(|part| part.get("type").and_then(Value::as_str) == Some("text"));
    if all_text && (text_only || parts.len() == 1) {
        let text: String = parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect();
        return Ok(Value::String(text));
    }
    if text_only {
        return Err(());
    }
    Ok(Value::Array(parts))
}

/// `function_call_output.output`: a string, or text parts (joined into the tool message).
fn tool_output(output: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    match output {
        Some(Value::String(text)) => Ok(Value::String(text.clone())),
        Some(Value::Array(parts)) => {
            let mut chat_parts = Vec::with_capacity(parts.len());
            for (index, part) in parts.iter().enumerate() {
                let at = format!("{at}[{index}]");
                let part = content_part(part, &at)?;
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(unsupported_parameter(&format!(
                        "{at}: an image in a function_call_output"
                    )));
                }
                chat_parts.push(part);
            }
            collapse_parts(chat_parts, true).map_err(|()| invalid(at, "must carry text only"))
        }
        None | Some(Value::Null) => Err(invalid(at, "is required")),
        Some(_) => Err(invalid(at, "must be a string or an array of content parts")),
    }
}

/// Function tools in the chat shape, those grouped in a `namespace` too (flattened: chat
/// completions has no namespaces; `Echo` gives the answer's calls of them their `namespace`
/// back); every other tool type needs the provider's servers.
fn tools(request: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "must be an array")),
    };
    let mut chat_tools = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let at = format!("tools[{index}]");
        let object = tool
            .as_object()
            .ok_or_else(|| invalid(&at, "must be an object"))?;
        if object.get("type").and_then(Value::as_str) == Some("namespace") {
            string_field(object, "name", &at)?;
            let inner = match object.get("tools") {
                Some(Value::Array(inner)) => inner,
                _ => return Err(invalid(&format!("{at}.tools"), "must be an array")),
            };
            for (inner_index, tool) in inner.iter().enumerate() {
                let at = format!("{at}.tools[{inner_index}]");
                chat_tools.push(function_tool(tool, &at)?);
            }
        } else {
            chat_tools.push(function_tool(tool, &at)?);
        }
    }
    let mut names: Vec<&str> = chat_tools
        .iter()
        .filter_map(|tool| tool.pointer("/function/name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair.first() == pair.get(1)) {
        let name = pair.first().copied().unwrap_or_default();
        return Err(invalid(
            "tools",
            &format!("the function name {name:?} is given twice (namespaces are flattened)"),
        ));
    }
    Ok(Some(Value::Array(chat_tools)))
}

/// One flat Responses function tool as a chat tool; any other type is refused.
fn function_tool(tool: &Value, at: &str) -> Result<Value, ApiError> {
    let object = tool
        .as_object()
        .ok_or_else(|| invalid(at, "must be an object"))?;
    match object.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(unsupported_operation(
                &format!("{at}: a tool of type {other:?}"),
                "only function tools can be carried over chat completions (the other tools \
                 run on the provider's servers)",
            ))
        }
        None => return Err(invalid(&format!("{at}.type"), "is required")),
    }
    let name = string_field(object, "name", at)?;
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_string()));
    for key in ["description", "parameters", "strict"] {
        if let Some(value) = object.get(key).filter(|value| !value.is_null()) {
            function.insert(key.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: Option<&Value>) -> Result<Option<Value>, ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(mode)) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(Some(Value::String(mode.clone())))
        }
        Some(Value::String(_)) => Err(invalid(
            "tool_choice",
            "must be auto, none, required or a function",
        )),
        Some(Value::Object(object)) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = string_field(object, "name", "tool_choice")?;
                Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                ))
            }
            Some("allowed_tools") => {
                Err(unsupported_parameter("tool_choice of type allowed_tools"))
            }
            Some(other) => Err(unsupported_operation(
                &format!("tool_choice of type {other:?}"),
                "only function tools can be carried over chat completions",
            )),
            None => Err(invalid("tool_choice.type", "is required")),
        },
        Some(_) => Err(invalid("tool_choice", "must be a string or an object")),
    }
}

/// `text.format` as chat's `response_format` (None for plain text). `text.verbosity` is
/// dropped.
fn response_format(text: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let format = match text {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(text)) => match text.get("format") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(format)) => format,
            Some(_) => return Err(invalid("text.format", "must be an object")),
        },
        Some(_) => return Err(invalid("text", "must be an object")),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = string_field(format, "name", "text.format")?;
            let schema = format
                .get("schema")
                .filter(|schema| schema.is_object())
                .ok_or_else(|| invalid("text.format.schema", "must be an object"))?;
            let mut json_schema = Map::new();
            json_schema.insert("name".into(), Value::String(name.to_string()));
            json_schema.insert("schema".into(), schema.clone());
            for key in ["description", "strict"] {
                if let Some(value) = format.get(key).filter(|value| !value.is_null()) {
                    json_schema.insert(key.into(), value.clone());
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": json_schema}),
            ))
        }
        Some(other) => Err(unsupported_parameter(&format!(
            "text.format of type {other:?}"
        ))),
        None => Err(invalid("text.format.type", "is required")),
    }
}

// ------------------------------------------------------------------------ answer

/// The ids of one response's objects, from the exchange's random id.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    suffix: String,
}

impl Ids {
    pub(crate) fn new(exchange: &Exchange) -> Self {
        let id = exchange.id.as_str();
        let suffix = id
            .split_once(['-', '_'])
            .map_or(id, |(_, rest)| rest)
            .to_string();
        Ids { suffix }
    }

    pub(crate) fn response(&self) -> String {
        format!("resp_{}", self.suffix)
    }

    pub(crate) fn message(&self) -> String {
        format!("msg_{}", self.suffix)
    }

    pub(crate) fn function_call(&self, index: usize) -> String {
        format!("fc_{}_{index}", self.suffix)
    }
}

/// How a chat answer ended, in the response's terms: its status and the incomplete reason.
pub(crate) fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A Responses `response` object. The fields that echo the request carry the API's defaults
/// (`tools: []`, `tool_choice: "auto"` ...) until [`Echo::apply`] fills them from the
/// client's request.
pub(crate) fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    incomplete_reason: Option<&str>,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": incomplete_reason.map(|reason| json!({"reason": reason})),
        "instructions": null,
        "max_output_tokens": null,
        "max_tool_calls": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {},
    })
}

/// The request settings a response reports (as the Responses API echoes them), and which
/// namespace each function of a `namespace` tool belongs to (its calls carry it back).
#[derive(Debug, Clone, Default)]
pub(crate) struct Echo {
    fields: Map<String, Value>,
    namespaces: BTreeMap<String, String>,
}

/// The request fields a response echoes.
const ECHOED: [&str; 11] = [
    "instructions",
    "max_output_tokens",
    "parallel_tool_calls",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
    "metadata",
    "reasoning",
];

impl Echo {
    pub(crate) fn of(request: &Value) -> Self {
        let mut echo = Echo::default();
        let Some(request) = request.as_object() else {
            return echo;
        };
        for key in ECHOED {
            if let Some(value) = request.get(key).filter(|value| !value.is_null()) {
                echo.fields.insert(key.into(), value.clone());
            }
        }
        for tool in request
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|tool| tool.get("type").and_then(Value::as_str) == Some("namespace"))
        {
            let Some(namespace) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            for inner in tool
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = inner.get("name").and_then(Value::as_str) {
                    echo.namespaces
                        .insert(name.to_string(), namespace.to_string());
                }
            }
        }
        echo
    }

    pub(crate) fn apply(&self, response: &mut Value) {
        if let Some(response) = response.as_object_mut() {
            for (key, value) in &self.fields {
                response.insert(key.clone(), value.clone());
            }
        }
    }

    /// The namespace of a function the model called, if the request grouped it in one.
    pub(crate) fn namespace(&self, name: &str) -> Option<&str> {
        self.namespaces.get(name).map(String::as_str)
    }
}

/// Copies the settings a response echoes from the client's Responses request (what the
/// client asked for, as the Responses API reports it): `instructions`, `max_output_tokens`,
/// `parallel_tool_calls`, `temperature`, `text`, `tool_choice`, `tools`, `top_p`, `user`,
/// `metadata`, `reasoning`.
pub fn echo_request(response: &mut Value, request: &Value) {
    Echo::of(request).apply(response);
}

/// Chat `usage` as Responses usage (None when the chat answer carried none).
pub(crate) fn usage_of(usage: Option<&Value>) -> Option<Value> {
    let usage = usage.filter(|usage| usage.is_object())?;
    let number = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or_default();
    let input = number(usage.get("prompt_tokens"));
    let output = number(usage.get("completion_tokens"));
    let total = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| input.saturating_add(output));
    let prompt_details = usage.get("prompt_tokens_details");
    let cached = number(prompt_details.and_then(|d| d.get("cached_tokens")));
    let cache_write = number(prompt_details.and_then(|d| d.get("cache_write_tokens")));
    let reasoning = number(
        usage
            .get("completion_tokens_details")
            .and_then(|d| d.get("reasoning_tokens")),
    );
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }))
}

pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(crate) fn refusal_part(refusal: &str) -> Value {
    json!({"type": "refusal", "refusal": refusal})
}

pub(crate) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

pub(crate) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    namespace: Option<&str>,
) -> Value {
    let mut item = json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    });
    if let (Some(namespace), Some(object)) = (namespace, item.as_object_mut()) {
        object.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    item
}

/// The text of a chat message's `content` (a string, or text parts joined).
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// A `chat.completion` as a Responses `response` object.
pub fn answer_from_chat(answer: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
    answer_with_echo(answer, exchange, &Echo::default())
}

/// [`answer_from_chat`], with the request's settings echoed and namespaced calls marked.
pub(crate) fn answer_with_echo(
    answer: &Value,
    exchange: &Exchange,
    echo: &Echo,
) -> Result<Value, ApiError> {
    let invalid_answer = || {
        ApiError::new(
            502,
            "api_error",
            "invalid_upstream_response",
            "The upstream answer could not be translated to a Responses answer.",
        )
    };
    let choice = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(invalid_answer)?;
    let message = choice.get("message").ok_or_else(invalid_answer)?;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str);
    let (status, reason) = status_of(finish_reason);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let ids = Ids::new(exchange);
    let text = content_text(message.get("content"));
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|refusal| !refusal.is_empty());
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => return Err(invalid_answer()),
    };
    let mut output = Vec::with_capacity(calls.len() + 1);
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(text_part(&text));
    }
    if let Some(refusal) = refusal {
        content.push(refusal_part(refusal));
    }
    if content.is_empty() && calls.is_empty() {
        content.push(text_part(""));
    }
    if !content.is_empty() {
        output.push(message_item(&ids.message(), item_status, content));
    }
    for (index, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let field = |value: Option<&Value>| {
            value
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(invalid_answer)
        };
        let name = field(function.and_then(|f| f.get("name")))?;
        // A server that sends the arguments as an object (not the string OpenAI sends) still
        // gets them through, as their JSON text.
        let arguments = match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(arguments)) => arguments.clone(),
            None | Some(Value::Null) => String::from("{}"),
            Some(other) => other.to_string(),
        };
        let call_id = match call.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("call_{}_{index}", ids.suffix),
        };
        output.push(function_call_item(
            &ids.function_call(index),
            item_status,
            &call_id,
            &name,
            &arguments,
            echo.namespace(&name),
        ));
    }
    let model = answer
        .get("model")
        .and_then(Value::as_str)
        .filter(|model| !model.is_empty())
        .unwrap_or(&exchange.model);
    let created = answer
        .get("created")
        .and_then(Value::as_u64)
        .unwrap_or(exchange.created);
    let mut response = response_object(
        &ids.response(),
        created,
        model,
        status,
        reason,
        output,
        usage_of(answer.get("usage")),
    );
    echo.apply(&mut response);
    Ok(response)
}

#[cfg(test)]
mod tests;
