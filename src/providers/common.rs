//! What the translating codecs (Anthropic, Gemini) share: reading the OpenAI request
//! (fields, content parts, tools, tool calls) with clear 400s for what cannot be carried
//! over, and writing the OpenAI shapes they produce (`chat.completion`, chunks, usage).

use serde_json::{json, Map, Value};

use super::codec::Exchange;
use crate::error::ApiError;
use crate::sse::SseEvent;

pub type Object = Map<String, Value>;

/// A 400 for a request the provider cannot honour. `what` names the field or part.
pub fn unsupported(provider: &str, what: &str) -> ApiError {
    ApiError::invalid_request(
        "unsupported_parameter",
        format!("{what} is not supported by provider {provider} on this gateway."),
    )
}

pub fn invalid(what: &str, why: &str) -> ApiError {
    ApiError::invalid_request(
        "invalid_value",
        format!("Invalid parameter '{what}': {why}."),
    )
}

/// OpenAI request fields that carry no meaning for another provider and are dropped on
/// purpose: OpenAI-side storage and tiers, and stream options the filter handles itself.
const IGNORED: [&str; 4] = ["stream_options", "store", "metadata", "service_tier"];

/// Refuses every field that the codec does not map (`mapped`) and that is not ignored on
/// purpose, unless it carries its default value (so `n: 1` or `logprobs: false` pass).
pub fn check_fields(request: &Object, provider: &str, mapped: &[&str]) -> Result<(), ApiError> {
    for (key, value) in request {
        if mapped.contains(&key.as_str()) || IGNORED.contains(&key.as_str()) {
            continue;
        }
        if !is_default(key, value) {
            return Err(unsupported(
                provider,
                &format!("Parameter '{key}' with this value"),
            ));
        }
    }
    Ok(())
}

fn is_default(key: &str, value: &Value) -> bool {
    match (key, value) {
        (_, Value::Null) => true,
        ("n", value) => value.as_u64() == Some(1),
        ("logprobs", Value::Bool(false)) | ("parallel_tool_calls", Value::Bool(true)) => true,
        ("presence_penalty" | "frequency_penalty", value) => value.as_f64() == Some(0.0),
        ("logit_bias", Value::Object(map)) => map.is_empty(),
        ("response_format", value) => value.get("type").and_then(Value::as_str) == Some("text"),
        ("modalities", Value::Array(items)) => items.iter().all(|m| m.as_str() == Some("text")),
        _ => false,
    }
}

pub fn messages(request: &Object) -> Result<&Vec<Value>, ApiError> {
    request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "must be an array"))
}

pub fn role(message: &Value) -> &str {
    message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `max_completion_tokens` (current) or `max_tokens` (legacy), if the client set one.
pub fn max_tokens(request: &Object) -> Result<Option<u64>, ApiError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        match request.get(key) {
            None | Some(Value::Null) => {}
            Some(value) => match value.as_u64() {
                Some(n) if n > 0 => return Ok(Some(n)),
                _ => return Err(invalid(key, "must be a positive integer")),
            },
        }
    }
    Ok(None)
}

/// `stop` as a list of sequences.
pub fn stop_sequences(request: &Object) -> Result<Option<Vec<Value>>, ApiError> {
    match request.get("stop") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(stop)) => Ok(Some(vec![Value::String(stop.clone())])),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(Some(items.clone())),
        Some(_) => Err(invalid("stop", "must be a string or an array of strings")),
    }
}

/// A number field copied as it is, if present.
pub fn number(request: &Object, key: &str) -> Result<Option<Value>, ApiError> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Number(_)) => Ok(Some(value.clone())),
        Some(_) => Err(invalid(key, "must be a number")),
    }
}

// ------------------------------------------------------------------------ content parts

/// One OpenAI content part, decoded.
#[derive(Debug, PartialEq)]
pub enum Part<'a> {
    Text(&'a str),
    /// `data:<media type>;base64,<data>`
    InlineImage {
        media_type: &'a str,
        data: &'a str,
    },
    /// An `http(s)` image URL.
    ImageUrl(&'a str),
    /// `input_audio`: base64 data and its format (`wav`, `mp3`).
    Audio {
        data: &'a str,
        format: &'a str,
    },
}

/// The parts of a message's `content` (a string is one text part; null is none).
pub fn parts<'a>(content: Option<&'a Value>, at: &str) -> Result<Vec<Part<'a>>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![Part::Text(text)]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| part(item, &format!("{at}.content[{index}]")))
            .collect(),
        Some(_) => Err(invalid(
            &format!("{at}.content"),
            "must be a string or an array of parts",
        )),
    }
}

fn part<'a>(item: &'a Value, at: &str) -> Result<Part<'a>, ApiError> {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "text" | "refusal" => item
            .get(kind)
            .and_then(Value::as_str)
            .map(Part::Text)
            .ok_or_else(|| invalid(&format!("{at}.{kind}"), "must be a string")),
        "image_url" => {
            let url = item
                .get("image_url")
                .and_then(|image| image.get("url").or(Some(image)))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.image_url.url"), "must be a string"))?;
            image(url, &format!("{at}.image_url.url"))
        }
        "input_audio" => {
            let audio = item.get("input_audio");
            let field = |name: &str| {
                audio
                    .and_then(|a| a.get(name))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("{at}.input_audio.{name}"), "must be a string"))
            };
            Ok(Part::Audio {
                data: field("data")?,
                format: field("format")?,
            })
        }
        other => Err(ApiError::invalid_request(
            "unsupported_content",
            format!("{at}: content parts of type {other:?} are not supported on this route."),
        )),
    }
}

fn image<'a>(url: &'a str, at: &str) -> Result<Part<'a>, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid(at, "a data: URL needs a ',' before its data"))?;
        let media_type = header
            .strip_suffix(";base64")
            .ok_or_else(|| invalid(at, "only base64 data: URLs are supported"))?;
        if media_type.is_empty() {
            return Err(invalid(at, "the data: URL must name its media type"));
        }
        return Ok(Part::InlineImage { media_type, data });
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(Part::ImageUrl(url));
    }
    Err(invalid(at, "must be an http(s) URL or a base64 data: URL"))
}

/// Each content part's `cache_control` (an Anthropic extension of the OpenAI parts that
/// LiteLLM and other gateways accept), in the order of `parts`.
pub fn cache_controls(content: Option<&Value>) -> Vec<Option<&Value>> {
    match content {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.get("cache_control").filter(|c| !c.is_null()))
            .collect(),
        Some(Value::String(_)) => vec![None],
        _ => Vec::new(),
    }
}

/// The deprecated `function_call` of an assistant message is refused, never dropped.
pub fn refuse_function_call(message: &Value, at: &str, provider: &str) -> Result<(), ApiError> {
    match message.get("function_call") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(unsupported(
            provider,
            &format!("{at}.function_call (deprecated; send tool_calls)"),
        )),
    }
}

/// A conversation with no text at all to send (only empty system/developer messages).
pub fn no_turns(provider: &str) -> ApiError {
    invalid(
        "messages",
        &format!(
            "provider {provider} needs a message with some content: a user, assistant or \
             tool message, or a non-empty system or developer message"
        ),
    )
}

/// A JSON text written back the way the translation will send it (`serde_json`'s compact
/// form: no `\uXXXX` escapes but for control characters), so that guards read what the
/// provider gets. None when it is not JSON (the translation refuses it or sends it as text).
pub fn canonical_json(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    Some(value.to_string())
}

/// Rewrites every `tool_calls[].function.arguments` string of the request's messages into
/// its canonical JSON form (see `canonical_json`): the translation parses the arguments and
/// sends them decoded, so the guards must read them decoded.
pub fn canonical_arguments(request: &mut Value) {
    let Some(messages) = request.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for message in messages {
        let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) else {
            continue;
        };
        for call in calls {
            if let Some(Value::String(arguments)) = call
                .get_mut("function")
                .and_then(|f| f.get_mut("arguments"))
            {
                if let Some(canonical) = canonical_json(arguments) {
                    *arguments = canonical;
                }
            }
        }
    }
}

/// The text of a message whose parts are all text, joined; None for other content.
pub fn joined_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => {
            let mut text = String::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some(kind @ ("text" | "refusal")) => {
                        text.push_str(item.get(kind)?.as_str()?);
                    }
                    _ => return None,
                }
            }
            Some(text)
        }
        _ => None,
    }
}

/// The text of a `system`/`developer` message: text parts only.
pub fn text_only(content: Option<&Value>, at: &str, provider: &str) -> Result<String, ApiError> {
    let mut text = String::new();
    for part in parts(content, at)? {
        match part {
            Part::Text(piece) => text.push_str(piece),
            _ => {
                return Err(unsupported(
                    provider,
                    &format!("{at}: non-text content in this message"),
                ))
            }
        }
    }
    Ok(text)
}

// ------------------------------------------------------------------------ tools

/// One `tools[]` entry of type `function`.
pub struct FunctionTool<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub parameters: Option<&'a Value>,
}

pub fn function_tools<'a>(
    request: &'a Object,
    provider: &str,
) -> Result<Vec<FunctionTool<'a>>, ApiError> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "must be an array")),
    };
    tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind != "function" {
                return Err(unsupported(
                    provider,
                    &format!("tools[{index}]: tools of type {kind:?}"),
                ));
            }
            let function = tool.get("function");
            // `strict` is a guarantee of OpenAI's sampler that no other provider gives: it is
            // dropped (the schema itself is sent), as docs/CONFIG.md says.
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("tools[{index}].function.name"), "is required"))?;
            Ok(FunctionTool {
                name,
                description: function
                    .and_then(|f| f.get("description"))
                    .and_then(Value::as_str),
                parameters: function
                    .and_then(|f| f.get("parameters"))
                    .filter(|p| !p.is_null()),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    Function(&'a str),
}

pub fn tool_choice(request: &Object) -> Result<Option<ToolChoice<'_>>, ApiError> {
    match request.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(invalid(
                "tool_choice",
                "must be \"auto\", \"none\", \"required\" or a function",
            )),
        },
        Some(choice) => choice
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| Some(ToolChoice::Function(name)))
            .ok_or_else(|| invalid("tool_choice.function.name", "is required")),
    }
}

/// One `tool_calls[]` entry of an assistant message, arguments parsed.
pub struct ToolCall<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub arguments: Value,
}

pub fn tool_calls<'a>(message: &'a Value, at: &str) -> Result<Vec<ToolCall<'a>>, ApiError> {
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(&format!("{at}.tool_calls"), "must be an array")),
    };
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let at = format!("{at}.tool_calls[{index}]");
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.id"), "is required"))?;
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.function.name"), "is required"))?;
            let arguments = match function.and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) if text.trim().is_empty() => json!({}),
                Some(Value::String(text)) => serde_json::from_str::<Value>(text)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        invalid(
                            &format!("{at}.function.arguments"),
                            "must be a JSON object in a string",
                        )
                    })?,
                Some(_) => {
                    return Err(invalid(
                        &format!("{at}.function.arguments"),
                        "must be a string",
                    ))
                }
            };
            Ok(ToolCall {
                id,
                name,
                arguments,
            })
        })
        .collect()
}

// ------------------------------------------------------------------------ OpenAI output

/// An assistant message as OpenAI returns it: content null when there is no text.
pub fn assistant_message(text: Option<String>, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty() {
        if let Some(object) = message.as_object_mut() {
            object.insert("tool_calls".into(), Value::Array(tool_calls));
        }
    }
    message
}

pub fn tool_call_json(id: &str, name: &str, arguments: String) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

pub fn completion(exchange: &Exchange, choices: Vec<Value>, usage: Option<Value>) -> Value {
    let mut completion = json!({
        "id": exchange.id,
        "object": "chat.completion",
        "created": exchange.created,
        "model": exchange.model,
        "choices": choices,
    });
    if let (Some(object), Some(usage)) = (completion.as_object_mut(), usage) {
        object.insert("usage".into(), usage);
    }
    completion
}

/// OpenAI `usage`, with the details the providers report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    /// Some providers report the total themselves (it may include thinking); else the sum.
    pub total: Option<u64>,
    pub cached: u64,
    /// Input tokens written to a prompt cache (Anthropic `cache_creation_input_tokens`),
    /// sent as `prompt_tokens_details.cache_write_tokens` (OpenRouter's name; OpenAI has none).
    pub cache_write: u64,
    pub reasoning: u64,
}

impl TokenCounts {
    pub fn to_json(self) -> Value {
        let total = self
            .total
            .unwrap_or_else(|| self.prompt.saturating_add(self.completion));
        let mut usage = json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": total,
        });
        if let Some(object) = usage.as_object_mut() {
            if self.cached > 0 || self.cache_write > 0 {
                let mut details = json!({"cached_tokens": self.cached});
                if let (Some(details), true) = (details.as_object_mut(), self.cache_write > 0) {
                    details.insert("cache_write_tokens".into(), json!(self.cache_write));
                }
                object.insert("prompt_tokens_details".into(), details);
            }
            if self.reasoning > 0 {
                object.insert(
                    "completion_tokens_details".into(),
                    json!({"reasoning_tokens": self.reasoning}),
                );
            }
        }
        usage
    }
}

/// Writes `chat.completion.chunk` events with the exchange's id, time and model.
pub struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
}

impl ChunkWriter {
    pub fn new(exchange: &Exchange) -> Self {
        ChunkWriter {
            id: exchange.id.clone(),
            created: exchange.created,
            model: exchange.model.clone(),
        }
    }

    fn event(&self, choices: Value, usage: Option<Value>) -> SseEvent {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some(object), Some(usage)) = (chunk.as_object_mut(), usage) {
            object.insert("usage".into(), usage);
        }
        SseEvent::data(chunk.to_string())
    }

    pub fn delta(&self, index: u64, delta: Value, finish_reason: Option<&str>) -> SseEvent {
        self.event(
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
            None,
        )
    }

    /// The usage-only chunk (`choices: []`) that `stream_options.include_usage` asks for.
    /// Always written: the pipeline drops it when the client did not ask.
    pub fn usage(&self, usage: Value) -> SseEvent {
        self.event(json!([]), Some(usage))
    }

    pub fn tool_call_start(&self, choice: u64, index: usize, id: &str, name: &str) -> SseEvent {
        self.delta(
            choice,
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            None,
        )
    }

    pub fn tool_call_arguments(&self, choice: u64, index: usize, arguments: &str) -> SseEvent {
        self.delta(
            choice,
            json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
            None,
        )
    }
}

pub fn done() -> SseEvent {
    SseEvent::data("[DONE]")
}

/// The in-band end of a stream that broke off before the provider finished it.
pub fn incomplete_stream(provider: &str, out: &mut Vec<SseEvent>) {
    let error = ApiError::new(
        502,
        "api_error",
        "incomplete_upstream_stream",
        format!("The {provider} stream ended before the answer was complete."),
    );
    out.push(SseEvent::data(
        String::from_utf8_lossy(&error.body()).into_owned(),
    ));
    out.push(done());
}

pub fn invalid_upstream(provider: &str) -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "invalid_upstream_response",
        format!("The {provider} answer could not be read."),
    )
}
