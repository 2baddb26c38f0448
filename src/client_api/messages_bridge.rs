//! Anthropic Messages ↔ chat completions: the [`ChatBridge`] of the Messages API for
//! routes whose provider speaks chat completions (`openai`, `azure_openai`,
//! `openai_compatible` without `"messages": true`, and `gemini` through its chat codec).
//!
//! Request (`request_to_chat`): `system` → one system message (text blocks joined with a
//! blank line), as is a `system` turn among the messages, in place; user text and image
//! blocks → content parts (`image_url`, base64 sources as `data:` URLs); `tool_result`
//! blocks → `tool` messages, sent before the rest of their user turn (chat wants them right
//! after the assistant's calls), a result's images following in that user message;
//! assistant `tool_use` → `tool_calls` (arguments = the compact JSON text of `input`);
//! `thinking` and `redacted_thinking` blocks are dropped; `tools` (those with
//! `defer_loading` only once a `tool_reference` loaded them), `tool_choice`
//! (`disable_parallel_tool_use` → `parallel_tool_calls: false`), `stop_sequences` → `stop`,
//! `max_tokens` → `max_completion_tokens`, `metadata.user_id` → `user`, `stream` → `stream`
//! with `stream_options.include_usage`, `output_config.format` → `response_format`. Fields
//! with no chat equivalent that only tune the answer are dropped ([`DROPPED`]); blocks and
//! fields that carry content or server-side state chat cannot hold get a 400 naming them.
//! docs/CONFIG.md has the whole table.
//!
//! Answer (`answer_from_chat`): choice 0 → a `message` (text block, then `tool_use` blocks
//! with `input` parsed from the arguments: arguments that are not a JSON object are a 502),
//! `finish_reason` → `stop_reason`, usage → Anthropic usage (`input_tokens` excludes the
//! cached prompt tokens, which are `cache_read_input_tokens`).
//!
//! Stream (`stream_from_chat`, [`MessagesStream`]): `message_start` (usage zero: chat
//! reports usage only at the end), one content block at a time (`text_delta`,
//! `input_json_delta` per tool call), and at `[DONE]` the last block's stop, `message_delta`
//! (stop reason and the whole usage, input tokens included) and `message_stop`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::bridge::{self, ChatBridge};
use crate::error::ApiError;
use crate::providers::{Exchange, StreamDecoder};
use crate::sse::SseEvent;

type Object = Map<String, Value>;

/// The Messages API's bridge.
pub struct MessagesBridge;

pub static BRIDGE: MessagesBridge = MessagesBridge;

/// Top-level request fields translated to chat completions.
pub const MAPPED: [&str; 13] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "metadata",
    "output_config",
    "output_format",
];

/// Top-level request fields dropped on purpose: they tune sampling, reasoning, caching or
/// service tiers, and chat completions has no field for them (the answer is still a
/// complete answer to the same conversation).
pub const DROPPED: [&str; 5] = [
    "top_k",
    "thinking",
    "service_tier",
    "cache_control",
    "context_management",
];

/// Top-level fields that need state on Anthropic's side: 400 `unsupported_operation`.
const SERVER_STATE: [&str; 2] = ["container", "mcp_servers"];

/// Keys of a `tools[]` entry that are read (`name`, `description`, `input_schema`, `type`,
/// `defer_loading`) or dropped (`cache_control`, `strict`).
const TOOL_KEYS: [&str; 7] = [
    "name",
    "description",
    "input_schema",
    "type",
    "defer_loading",
    "cache_control",
    "strict",
];

impl ChatBridge for MessagesBridge {
    fn request_to_chat(&self, request: &Value, _exchange: &Exchange) -> Result<Value, ApiError> {
        request_to_chat(request)
    }

    fn answer_from_chat(&self, answer: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
        answer_from_chat(answer, exchange)
    }

    fn stream_from_chat(&self, exchange: &Exchange) -> Box<dyn StreamDecoder> {
        Box::new(MessagesStream::new(exchange))
    }
}

// ------------------------------------------------------------------------ errors

fn unsupported(what: &str) -> ApiError {
    ApiError::invalid_request(
        "unsupported_parameter",
        format!(
            "{what} is not supported on this route: its provider speaks chat completions, \
             which cannot carry it."
        ),
    )
}

fn invalid(what: &str, why: &str) -> ApiError {
    ApiError::invalid_request("invalid_value", format!("{what}: {why}."))
}

fn bad_upstream(why: &str) -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "invalid_upstream_response",
        format!("The upstream chat-completions answer could not be translated: {why}."),
    )
}

// ------------------------------------------------------------------------ request

/// The Messages request as a chat-completions request (see the module's text).
pub fn request_to_chat(request: &Value) -> Result<Value, ApiError> {
    let request = request
        .as_object()
        .ok_or_else(|| invalid("body", "must be a JSON object"))?;
    for key in request.keys() {
        let key = key.as_str();
        if SERVER_STATE.contains(&key) {
            return Err(ApiError::invalid_request(
                "unsupported_operation",
                format!(
                    "'{key}' needs Anthropic's server-side state and is not supported on this \
                     route (its provider speaks chat completions)."
                ),
            ));
        }
        if !MAPPED.contains(&key) && !DROPPED.contains(&key) {
            return Err(unsupported(&format!("Parameter '{key}'")));
        }
    }
    let mut body = Object::new();
    if let Some(model) = request.get("model") {
        body.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    if let Some(system) = system_text(request.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    // Deferred tools that a tool search loaded (`tool_reference` blocks of tool results).
    let mut loaded = BTreeSet::new();
    let turns = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be an array"))?;
    for (index, turn) in turns.iter().enumerate() {
        translate_turn(
            turn,
            &format!("messages[{index}]"),
            &mut messages,
            &mut loaded,
        )?;
    }
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "nothing is left to send once thinking blocks are dropped",
        ));
    }
    body.insert("messages".into(), Value::Array(messages));
    bridge::copy_positive_integer(
        request.get("max_tokens"),
        "max_tokens",
        &mut body,
        "max_completion_tokens",
        invalid,
    )?;
    bridge::copy_numbers(
        |key| request.get(key),
        &["temperature", "top_p"],
        &mut body,
        invalid,
    )?;
    match request.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            if !items.is_empty() {
                body.insert("stop".into(), Value::Array(items.clone()));
            }
        }
        Some(_) => return Err(invalid("stop_sequences", "must be an array of strings")),
    }
    match request.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(metadata)) => match metadata.get("user_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(user)) => {
                body.insert("user".into(), Value::String(chat_user(user)));
            }
            Some(_) => return Err(invalid("metadata.user_id", "must be a string")),
        },
        Some(_) => return Err(invalid("metadata", "must be an object")),
    }
    translate_tools(request, &loaded, &mut body)?;
    translate_output(request, &mut body)?;
    match request.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            body.insert("stream".into(), Value::Bool(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(invalid("stream", "must be a boolean")),
    }
    Ok(Value::Object(body))
}

/// The longest `user` OpenAI takes (a longer one is a 400).
pub const MAX_USER_LEN: usize = 64;

/// `metadata.user_id` as chat's `user`: as it is up to [`MAX_USER_LEN`] ASCII characters of
/// `[A-Za-z0-9_.:@-]`; else a stable opaque digest of it (Claude Code sends a JSON object of
/// device, account and session ids, about 150 characters, which OpenAI would refuse).
pub fn chat_user(user_id: &str) -> String {
    let plain = user_id.len() <= MAX_USER_LEN
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
    if plain {
        return user_id.to_string();
    }
    let bytes = user_id.as_bytes();
    let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
    format!(
        "user-{:016x}{:016x}",
        crate::limits::keys::fnv1a(bytes),
        crate::limits::keys::fnv1a(&reversed)
    )
}

/// `system` (a string or text blocks) as one text; None when absent or empty.
fn system_text(system: Option<&Value>) -> Result<Option<String>, ApiError> {
    instruction_text(system, "system")
}

/// Instructions (`system`, or a `system` turn's content: a string or text blocks) as one
/// text, blocks joined with a blank line; None when absent or empty.
fn instruction_text(system: Option<&Value>, at: &str) -> Result<Option<String>, ApiError> {
    let text = match system {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (index, block) in blocks.iter().enumerate() {
                let at = format!("{at}[{index}]");
                match block_type(block, &at)? {
                    "text" => texts.push(text_of(block, &at)?),
                    other => {
                        return Err(unsupported(&format!("{at}: a block of type {other:?}")));
                    }
                }
            }
            texts.join("\n\n")
        }
        Some(_) => return Err(invalid(at, "must be a string or an array of text blocks")),
    };
    Ok((!text.is_empty()).then_some(text))
}

fn block_type<'a>(block: &'a Value, at: &str) -> Result<&'a str, ApiError> {
    block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(at, "must be an object with a string \"type\""))
}

fn text_of(block: &Value, at: &str) -> Result<String, ApiError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid(&format!("{at}.text"), "must be a string"))
}

/// Blocks dropped wherever they are: the provider cannot read Anthropic's (signed) thinking.
fn is_thinking(kind: &str) -> bool {
    matches!(kind, "thinking" | "redacted_thinking")
}

/// One Messages turn as zero or more chat messages.
fn translate_turn(
    turn: &Value,
    at: &str,
    out: &mut Vec<Value>,
    loaded: &mut BTreeSet<String>,
) -> Result<(), ApiError> {
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        Some("system") => {
            // Instructions among the turns (Claude Code sends its environment so): a system
            // message in place.
            let text = instruction_text(turn.get("content"), &format!("{at}.content"))?;
            if let Some(text) = text {
                out.push(json!({"role": "system", "content": text}));
            }
            return Ok(());
        }
        _ => {
            return Err(invalid(
                &format!("{at}.role"),
                "must be \"user\", \"assistant\" or \"system\"",
            ))
        }
    };
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(invalid(
                &format!("{at}.content"),
                "must be a string or an array of content blocks",
            ))
        }
    };
    if role == "user" {
        user_turn(blocks, at, out, loaded)
    } else {
        assistant_turn(blocks, at, out)
    }
}

/// A user turn: its tool results as `tool` messages first, then one user message with the
/// tool results' images (chat's tool messages carry text only) and the turn's own parts.
fn user_turn(
    blocks: &[Value],
    at: &str,
    out: &mut Vec<Value>,
    loaded: &mut BTreeSet<String>,
) -> Result<(), ApiError> {
    let mut images = Vec::new();
    let mut parts = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{index}]");
        match block_type(block, &at)? {
            "text" => parts.push(json!({"type": "text", "text": text_of(block, &at)?})),
            "image" => parts.push(image_part(block, &at)?),
            "tool_result" => out.push(tool_message(block, &at, &mut images, loaded)?),
            kind if is_thinking(kind) => {}
            other => return Err(unsupported(&format!("{at}: a block of type {other:?}"))),
        }
    }
    images.extend(parts);
    if !images.is_empty() {
        out.push(json!({"role": "user", "content": images}));
    }
    Ok(())
}

fn assistant_turn(blocks: &[Value], at: &str, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let mut texts: Vec<String> = Vec::new();
    let mut calls = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let at = format!("{at}.content[{index}]");
        match block_type(block, &at)? {
            "text" => texts.push(text_of(block, &at)?),
            "tool_use" => calls.push(tool_call(block, &at)?),
            kind if is_thinking(kind) => {}
            other => return Err(unsupported(&format!("{at}: a block of type {other:?}"))),
        }
    }
    if texts.is_empty() && calls.is_empty() {
        return Ok(()); // a turn of thinking alone
    }
    let mut message = Object::new();
    message.insert("role".into(), json!("assistant"));
    let content = if texts.is_empty() {
        Value::Null
    } else {
        Value::String(texts.join("\n\n"))
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(message));
    Ok(())
}

fn image_part(block: &Value, at: &str) -> Result<Value, ApiError> {
    let source = block
        .get("source")
        .ok_or_else(|| invalid(&format!("{at}.source"), "is required"))?;
    let field = |name: &str| {
        source
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("{at}.source.{name}"), "must be a string"))
    };
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!("data:{};base64,{}", field("media_type")?, field("data")?),
        Some("url") => field("url")?.to_string(),
        Some(other) => {
            return Err(unsupported(&format!(
                "{at}.source: an image source of type {other:?}"
            )))
        }
        None => return Err(invalid(&format!("{at}.source.type"), "must be a string")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_call(block: &Value, at: &str) -> Result<Value, ApiError> {
    let field = |name: &str| {
        block
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("{at}.{name}"), "must be a string"))
    };
    let input = match block.get("input") {
        None | Some(Value::Null) => json!({}),
        Some(input @ Value::Object(_)) => input.clone(),
        Some(_) => return Err(invalid(&format!("{at}.input"), "must be an object")),
    };
    Ok(json!({
        "id": field("id")?,
        "type": "function",
        "function": {"name": field("name")?, "arguments": input.to_string()},
    }))
}

/// Marks the text of a `tool_result` with `is_error: true` (chat's tool messages have no
/// error flag).
pub const TOOL_ERROR_PREFIX: &str = "[tool error] ";

/// Said in a tool message whose result had images: they follow in the next user message.
pub const TOOL_IMAGES_NOTE: &str = "[the images of this tool result follow in the next message]";

fn tool_message(
    block: &Value,
    at: &str,
    images: &mut Vec<Value>,
    loaded: &mut BTreeSet<String>,
) -> Result<Value, ApiError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{at}.tool_use_id"), "must be a string"))?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            let had_images = images.len();
            for (index, item) in items.iter().enumerate() {
                let at = format!("{at}.content[{index}]");
                match block_type(item, &at)? {
                    "text" => texts.push(text_of(item, &at)?),
                    "image" => images.push(image_part(item, &at)?),
                    "tool_reference" => {
                        let name =
                            item.get("tool_name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    invalid(&format!("{at}.tool_name"), "must be a string")
                                })?;
                        texts.push(format!("Tool {name} is now available."));
                        loaded.insert(name.to_string());
                    }
                    other => {
                        return Err(unsupported(&format!(
                            "{at}: a tool result block of type {other:?}"
                        )))
                    }
                }
            }
            if images.len() > had_images {
                texts.push(TOOL_IMAGES_NOTE.to_string());
            }
            texts.join("\n\n")
        }
        Some(_) => {
            return Err(invalid(
                &format!("{at}.content"),
                "must be a string or an array of text blocks",
            ))
        }
    };
    match block.get("is_error") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => text.insert_str(0, TOOL_ERROR_PREFIX),
        Some(_) => return Err(invalid(&format!("{at}.is_error"), "must be a boolean")),
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn translate_tools(
    request: &Object,
    loaded: &BTreeSet<String>,
    body: &mut Object,
) -> Result<(), ApiError> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(tools)) => tools.as_slice(),
        Some(_) => return Err(invalid("tools", "must be an array")),
    };
    let mut functions = Vec::with_capacity(tools.len());
    for (index, tool) in tools.iter().enumerate() {
        let at = format!("tools[{index}]");
        let Some(tool) = tool.as_object() else {
            return Err(invalid(&at, "must be an object"));
        };
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "custom" => {}
            Some(Value::String(kind)) => {
                return Err(unsupported(&format!(
                    "{at}: a server tool of type {kind:?}"
                )))
            }
            Some(_) => return Err(invalid(&format!("{at}.type"), "must be a string")),
        }
        if let Some(key) = tool.keys().find(|key| !TOOL_KEYS.contains(&key.as_str())) {
            return Err(unsupported(&format!("{at}.{key}")));
        }
        match tool.get("defer_loading") {
            None | Some(Value::Null | Value::Bool(false)) => {}
            // A deferred tool is not in the model's context until a tool search loads it (a
            // `tool_reference` in a tool result): left out until then.
            Some(Value::Bool(true)) => {
                let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
                if !loaded.contains(name) {
                    continue;
                }
            }
            Some(_) => return Err(invalid(&format!("{at}.defer_loading"), "must be a boolean")),
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&format!("{at}.name"), "must be a string"))?;
        let mut function = Object::new();
        function.insert("name".into(), json!(name));
        match tool.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(description)) => {
                function.insert("description".into(), json!(description));
            }
            Some(_) => return Err(invalid(&format!("{at}.description"), "must be a string")),
        }
        match tool.get("input_schema") {
            Some(schema @ Value::Object(_)) => {
                function.insert("parameters".into(), schema.clone());
            }
            _ => return Err(invalid(&format!("{at}.input_schema"), "must be an object")),
        }
        functions.push(json!({"type": "function", "function": function}));
    }
    let choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(choice) => Some(choice),
    };
    let kind = match choice {
        None => None,
        Some(choice) => Some(
            choice
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.type", "must be a string"))?,
        ),
    };
    let serial = match choice.and_then(|c| c.get("disable_parallel_tool_use")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(serial)) => *serial,
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ))
        }
    };
    let chat_choice = match kind {
        None => None,
        Some("auto") => Some(json!("auto")),
        Some("any") => Some(json!("required")),
        Some("none") => Some(json!("none")),
        Some("tool") => {
            let name = choice
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice.name", "must be a string"))?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(other) => {
            return Err(invalid(
                "tool_choice.type",
                &format!("{other:?} is not one of auto, any, tool, none"),
            ))
        }
    };
    if functions.is_empty() {
        // Without tools only "no tool" choices mean anything; chat refuses a choice then.
        return match kind {
            None | Some("auto" | "none") => Ok(()),
            Some(_) => Err(invalid("tool_choice", "needs tools")),
        };
    }
    body.insert("tools".into(), Value::Array(functions));
    if let Some(choice) = chat_choice {
        body.insert("tool_choice".into(), choice);
    }
    if serial && kind != Some("none") {
        body.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

/// `output_config` (`effort` dropped: a reasoning hint; `format` → `response_format`) and
/// the older top-level `output_format`.
fn translate_output(request: &Object, body: &mut Object) -> Result<(), ApiError> {
    let mut format = match request.get("output_format") {
        None | Some(Value::Null) => None,
        Some(format) => Some(("output_format", format)),
    };
    match request.get("output_config") {
        None | Some(Value::Null) => {}
        Some(Value::Object(config)) => {
            for (key, value) in config {
                match key.as_str() {
                    "effort" => {}
                    "format" if !value.is_null() => format = Some(("output_config.format", value)),
                    "format" => {}
                    other => return Err(unsupported(&format!("output_config.{other}"))),
                }
            }
        }
        Some(_) => return Err(invalid("output_config", "must be an object")),
    }
    let Some((at, format)) = format else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid(&format!("{at}.schema"), "must be an object"))?;
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema",
                       "json_schema": {"name": "output", "schema": schema}}),
            );
            Ok(())
        }
        _ => Err(unsupported(&format!("{at} of this type"))),
    }
}

// ------------------------------------------------------------------------ answer

/// `msg_` and the upstream id's letters, digits, `_` and `-` (its `chatcmpl-` prefix
/// left out), or the exchange's id when the upstream gave none.
fn message_id(upstream: Option<&str>, exchange: &Exchange) -> String {
    let clean = |id: &str| -> String {
        let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
        id.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(64)
            .collect()
    };
    let mut id = upstream.map(clean).unwrap_or_default();
    if id.is_empty() {
        id = clean(&exchange.id);
    }
    if id.is_empty() {
        id = "0".into();
    }
    format!("msg_{id}")
}

/// Chat's `finish_reason` as a stop reason: `stop` is `end_turn` unless the answer holds
/// tool calls (some servers say `stop` then) or a refusal.
fn stop_reason(finish: Option<&str>, has_tools: bool, refused: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if has_tools => "tool_use",
        _ if refused => "refusal",
        _ => "end_turn",
    }
}

/// The stop sequence that ended a choice, when the server says which (vLLM and servers
/// like it set a string `stop_reason` on the choice; OpenAI says only `stop`).
fn stop_sequence(choice: &Value) -> Option<String> {
    (choice.get("finish_reason").and_then(Value::as_str) == Some("stop"))
        .then(|| choice.get("stop_reason").and_then(Value::as_str))
        .flatten()
        .map(str::to_string)
}

/// Chat usage as Anthropic usage: `input_tokens` leaves out the cached prompt tokens,
/// which are `cache_read_input_tokens`; reasoning tokens stay in `output_tokens`.
fn anthropic_usage(usage: Option<&Value>) -> Value {
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let prompt = count(usage.and_then(|u| u.get("prompt_tokens")));
    let completion = count(usage.and_then(|u| u.get("completion_tokens")));
    let cached = count(
        usage
            .and_then(|u| u.get("prompt_tokens_details"))
            .and_then(|d| d.get("cached_tokens")),
    )
    .min(prompt);
    json!({
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// Tool-call arguments as a `tool_use` input: blank is `{}`, anything else must be a JSON
/// object.
fn parse_arguments(arguments: &str) -> Result<Value, ApiError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad_upstream("a tool call's arguments are not a JSON object"))
}

/// The text of a chat message's `content` (a string, or text parts).
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

/// A `chat.completion` as an Anthropic `message` (choice 0; other choices are dropped).
pub fn answer_from_chat(answer: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
    let choice = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| {
            choices
                .iter()
                .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
                .or_else(|| choices.first())
        })
        .ok_or_else(|| bad_upstream("it has no choice"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| bad_upstream("its choice has no message"))?;
    let mut content = Vec::new();
    let text = content_text(message.get("content"));
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(refusal) = refusal {
        content.push(json!({"type": "text", "text": refusal}));
    }
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => return Err(bad_upstream("its tool_calls are not an array")),
    };
    for (index, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad_upstream("a tool call has no function name"))?;
        let arguments = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(arguments)) => parse_arguments(arguments)?,
            Some(Value::Object(input)) => Value::Object(input.clone()),
            Some(_) => return Err(bad_upstream("a tool call's arguments are not a string")),
        };
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| format!("call_{index}"), str::to_string);
        content.push(json!({"type": "tool_use", "id": id, "name": name, "input": arguments}));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let stop_sequence = stop_sequence(choice);
    let reason = if stop_sequence.is_some() {
        "stop_sequence"
    } else {
        stop_reason(finish, !calls.is_empty(), refusal.is_some())
    };
    let model = answer
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&exchange.model);
    Ok(json!({
        "id": message_id(answer.get("id").and_then(Value::as_str), exchange),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(answer.get("usage")),
    }))
}

// ------------------------------------------------------------------------ stream

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// The tool call with this chat `index`.
    Tool(u64),
}

/// `chat.completion.chunk` events → Anthropic Messages events (see the module's text).
///
/// Only choice 0 is read (chat clients may ask for several; a Messages client gets one).
/// Blocks open and stop one at a time, indexes rising from 0; text after a tool call opens
/// a new text block. A tool call continued after another began (interleaved deltas, which
/// no known server sends) cannot be expressed and ends the stream with a 502 error event,
/// as do arguments that are not a JSON object once the call's block stops. The stop reason
/// and usage wait for `[DONE]`, since the usage chunk follows the finish reason; without a
/// usage chunk the counts are zero. A stream cut before `[DONE]` but after the finish
/// reason is closed as if it had come; one cut earlier ends with an `error` event.
pub struct MessagesStream {
    id: String,
    model: String,
    exchange_id: String,
    started: bool,
    open: Option<Open>,
    next_block: u64,
    /// The chat indexes of the tool calls seen (a set: a lookup per delta stays cheap
    /// however many calls a hostile upstream sends).
    tools: BTreeSet<u64>,
    /// The JSON text of the open tool call's arguments so far, checked when it stops.
    arguments: String,
    finish: Option<String>,
    stop_sequence: Option<String>,
    refused: bool,
    usage: Option<Value>,
    finished: bool,
    /// The error that ended the stream, until `finish` (see `on_event`).
    failed: Option<ApiError>,
}

fn event(kind: &str, data: Value) -> SseEvent {
    SseEvent {
        event: Some(kind.to_string()),
        data: data.to_string(),
    }
}

/// A `content_block_delta` (almost every event of a stream) written directly: the JSON
/// `event` would write for it (`type` first), without building a `Value` first.
fn delta_event(index: u64, kind: &str, field: &str, text: &str) -> SseEvent {
    let mut data = String::with_capacity(text.len() + 96);
    data.push_str(r#"{"type":"content_block_delta","index":"#);
    data.push_str(&index.to_string());
    data.push_str(r#","delta":{"type":""#);
    data.push_str(kind);
    data.push_str(r#"",""#);
    data.push_str(field);
    data.push_str(r#"":"#);
    data.push_str(&Value::from(text).to_string());
    data.push_str("}}");
    SseEvent {
        event: Some("content_block_delta".to_string()),
        data,
    }
}

/// Anthropic's in-band stream error, for a stream that cannot be ended cleanly.
pub fn error_event(error: &ApiError) -> SseEvent {
    let kind = if error.status >= 500 {
        "api_error"
    } else {
        "invalid_request_error"
    };
    event(
        "error",
        json!({"type": "error", "error": {"type": kind, "message": error.message}}),
    )
}

impl MessagesStream {
    pub fn new(exchange: &Exchange) -> Self {
        MessagesStream {
            id: String::new(),
            model: exchange.model.clone(),
            exchange_id: exchange.id.clone(),
            started: false,
            open: None,
            next_block: 0,
            tools: BTreeSet::new(),
            arguments: String::new(),
            finish: None,
            stop_sequence: None,
            refused: false,
            usage: None,
            finished: false,
            failed: None,
        }
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let exchange = Exchange {
            id: self.exchange_id.clone(),
            ..Exchange::default()
        };
        self.id = message_id(
            chunk.and_then(|c| c.get("id")).and_then(Value::as_str),
            &exchange,
        );
        if let Some(model) = chunk
            .and_then(|c| c.get("model"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            self.model = model.to_string();
        }
        out.push(event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    /// The index the open block has (the last one handed out).
    fn block(&self) -> u64 {
        self.next_block.saturating_sub(1)
    }

    fn open_block(&mut self, block: Value, open: Open, out: &mut Vec<SseEvent>) {
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(open);
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
    }

    fn close_block(&mut self, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if let Open::Tool(_) = open {
            parse_arguments(&std::mem::take(&mut self.arguments))?;
        }
        out.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.block()}),
        ));
        Ok(())
    }

    fn text(&mut self, text: &str, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if text.is_empty() {
            return Ok(());
        }
        if self.open != Some(Open::Text) {
            self.close_block(out)?;
            self.open_block(json!({"type": "text", "text": ""}), Open::Text, out);
        }
        out.push(delta_event(self.block(), "text_delta", "text", text));
        Ok(())
    }

    fn tool_delta(
        &mut self,
        position: usize,
        call: &Value,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), ApiError> {
        let function = call.get("function");
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        if self.open != Some(Open::Tool(index)) {
            if self.tools.contains(&index) {
                return Err(bad_upstream(
                    "its tool calls' deltas interleave, which Anthropic content blocks cannot \
                     express",
                ));
            }
            self.close_block(out)?;
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map_or_else(|| format!("call_{index}"), str::to_string);
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name.is_empty() {
                return Err(bad_upstream("a tool call has no function name"));
            }
            self.tools.insert(index);
            self.open_block(
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                Open::Tool(index),
                out,
            );
        }
        let piece = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => "",
            Some(Value::String(piece)) => piece.as_str(),
            Some(_) => return Err(bad_upstream("a tool call's arguments are not a string")),
        };
        if piece.is_empty() {
            return Ok(());
        }
        self.arguments.push_str(piece);
        out.push(delta_event(
            self.block(),
            "input_json_delta",
            "partial_json",
            piece,
        ));
        Ok(())
    }

    fn choice(&mut self, choice: &Value, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.text(text, out)?;
            }
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                if !refusal.is_empty() {
                    self.refused = true;
                    self.text(refusal, out)?;
                }
            }
            match delta.get("tool_calls") {
                None | Some(Value::Null) => {}
                Some(Value::Array(calls)) => {
                    for (position, call) in calls.iter().enumerate() {
                        self.tool_delta(position, call, out)?;
                    }
                }
                Some(_) => return Err(bad_upstream("a chunk's tool_calls are not an array")),
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(finish.to_string());
            self.stop_sequence = stop_sequence(choice);
        }
        Ok(())
    }

    /// Stops the open block and writes `message_delta` and `message_stop`.
    fn end(&mut self, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        self.finished = true;
        self.start(None, out);
        self.close_block(out)?;
        let reason = if self.stop_sequence.is_some() {
            "stop_sequence"
        } else {
            stop_reason(self.finish.as_deref(), !self.tools.is_empty(), self.refused)
        };
        out.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": reason, "stop_sequence": self.stop_sequence},
                   "usage": anthropic_usage(self.usage.as_ref())}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        Ok(())
    }
}

impl MessagesStream {
    fn read(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if event.is_done_marker() {
            return self.end(out);
        }
        let chunk: Value =
            serde_json::from_str(&event.data).map_err(|_| bad_upstream("an event is not JSON"))?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            // An in-band error (the provider's, or its codec's for a stream cut short) has
            // no status of its own: the upstream failed mid-answer, a 502.
            return Err(crate::error::upstream_error(
                502,
                event.data.as_bytes(),
                "upstream",
            ));
        }
        self.start(Some(&chunk), out);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            let first = choices
                .iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
            if let Some(choice) = first {
                self.choice(choice, out)?;
            }
        }
        Ok(())
    }
}

impl StreamDecoder for MessagesStream {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if self.finished {
            return Ok(());
        }
        let read = self.read(event, out);
        if let Err(error) = &read {
            // Nothing more is read. The caller writes the error event, unless it only
            // learns of it at the end (a provider decoder's last events, read in `finish`):
            // then `finish` writes it.
            self.finished = true;
            self.failed = Some(error.clone());
        }
        read
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(error) = self.failed.take() {
            out.push(error_event(&error));
            return;
        }
        if self.finished {
            return;
        }
        let ended = if self.finish.is_some() {
            self.end(out)
        } else {
            self.finished = true;
            Err(ApiError::new(
                502,
                "api_error",
                "incomplete_upstream_stream",
                "The upstream stream ended before the answer was complete.",
            ))
        };
        if let Err(error) = ended {
            out.push(error_event(&error));
        }
    }
}

#[cfg(test)]
mod tests;
