//! Google Gemini, native API (`/v1beta/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` for streams; `x-goog-api-key`).
//!
//! Request: roles `assistant` → `model`; system/developer → `systemInstruction`; tools →
//! `functionDeclarations` (JSON Schema in `parametersJsonSchema`); assistant `tool_calls` →
//! `functionCall` parts; `tool` messages → `functionResponse` parts (named after the call
//! they answer); sampling settings → `generationConfig`. Answers and streams (`stream.rs`)
//! come back as OpenAI shapes; `usageMetadata` → usage.
//!
//! Gemini function calls carry no stable id and, on thinking models, a `thoughtSignature`
//! that must be sent back with the call. Both ride in the OpenAI tool-call id the client
//! echoes: `call_<n>` or `call_<n>~ts~<signature>`.

mod stream;

use serde_json::{json, Value};

use super::codec::{Codec, Exchange, StreamDecoder};
use super::common::{self, Object, Part, TokenCounts, ToolChoice};
use super::Provider;
use crate::error::ApiError;

const NAME: &str = "gemini";
const SIGNATURE_MARK: &str = "~ts~";
/// Google's documented stand-in for a `thoughtSignature` the client did not carry (a call
/// that did not come from this route, or history rebuilt without it): Gemini 3 refuses a
/// replayed function call without a signature, and accepts this one
/// (<https://ai.google.dev/gemini-api/docs/thought-signatures>).
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

const MAPPED: [&str; 18] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "n",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    // An end-user id for abuse tracking; Gemini has no field for it.
    "user",
    "parallel_tool_calls",
];

pub struct GeminiCodec;

impl Codec for GeminiCodec {
    fn translates_responses(&self) -> bool {
        true
    }

    fn encode_request(
        &self,
        request: &Value,
        _provider: &Provider,
        _exchange: &Exchange,
    ) -> Result<Value, ApiError> {
        encode(request)
    }

    fn normalize_request(&self, request: &mut Value) {
        normalize(request);
    }

    fn decode_response(&self, body: &[u8], exchange: &Exchange) -> Result<Option<Value>, ApiError> {
        let answer: Value =
            serde_json::from_slice(body).map_err(|_| common::invalid_upstream(NAME))?;
        Ok(Some(decode(&answer, exchange)))
    }

    fn stream_decoder(&self, exchange: &Exchange) -> Option<Box<dyn StreamDecoder>> {
        Some(Box::new(stream::GeminiStream::new(exchange)))
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ApiError {
        decode_error(status, body)
    }

    /// Streaming is chosen by the path. `None` (the path is written before the body is
    /// read) streams: the filter then aggregates the stream for clients that did not ask.
    fn stream_method(&self, stream: Option<bool>) -> &'static str {
        if stream == Some(false) {
            "generateContent"
        } else {
            "streamGenerateContent"
        }
    }

    fn stream_query(&self, stream: Option<bool>) -> Option<&'static str> {
        (stream != Some(false)).then_some("alt=sse")
    }
}

// ------------------------------------------------------------------------ request

pub(crate) fn encode(request: &Value) -> Result<Value, ApiError> {
    let request = request.as_object().ok_or_else(|| {
        ApiError::invalid_request("invalid_body", "The request body must be a JSON object.")
    })?;
    common::check_fields(request, NAME, &MAPPED)?;
    if request.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(common::unsupported(
            NAME,
            "Parameter 'parallel_tool_calls' set to false",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool-call id → function name, from the assistant turns, for the tool results.
    let mut call_names: Vec<(&str, &str)> = Vec::new();
    for (index, message) in common::messages(request)?.iter().enumerate() {
        let at = format!("messages[{index}]");
        match common::role(message) {
            "system" | "developer" => {
                let text = common::text_only(message.get("content"), &at, NAME)?;
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => push_content(&mut contents, "user", user_parts(message, &at)?),
            "assistant" => {
                common::refuse_function_call(message, &at, NAME)?;
                let mut parts = Vec::new();
                for part in common::parts(message.get("content"), &at)? {
                    match part {
                        Part::Text("") => {}
                        Part::Text(text) => parts.push(json!({"text": text})),
                        _ => {
                            return Err(common::unsupported(
                                NAME,
                                &format!("{at}: non-text content in an assistant message"),
                            ))
                        }
                    }
                }
                for (number, call) in common::tool_calls(message, &at)?.into_iter().enumerate() {
                    call_names.push((call.id, call.name));
                    let mut part =
                        json!({"functionCall": {"name": call.name, "args": call.arguments}});
                    // Gemini signs the first of parallel calls only; a first call without
                    // the signature it came with gets Google's placeholder.
                    let signature = match call.id.split_once(SIGNATURE_MARK) {
                        Some((_, signature)) => Some(signature),
                        None if number == 0 => Some(PLACEHOLDER_SIGNATURE),
                        None => None,
                    };
                    if let (Some(object), Some(signature)) = (part.as_object_mut(), signature) {
                        object.insert("thoughtSignature".into(), Value::String(signature.into()));
                    }
                    parts.push(part);
                }
                push_content(&mut contents, "model", parts);
            }
            "tool" => {
                let part = function_response(message, &at, &call_names)?;
                push_content(&mut contents, "user", vec![part]);
            }
            other => {
                return Err(common::unsupported(
                    NAME,
                    &format!("{at}: messages with role {other:?}"),
                ))
            }
        }
    }
    if contents.is_empty() {
        // OpenAI answers a conversation of instructions alone; Gemini needs a turn, so the
        // instructions become it (and no `systemInstruction` is sent).
        if system.is_empty() {
            return Err(common::no_turns(NAME));
        }
        contents.push(("user", std::mem::take(&mut system)));
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut body = Object::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    encode_tools(request, &mut body)?;
    let config = generation_config(request)?;
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

/// The request rewritten into what the translation sends, before guards read it (see
/// `Codec::normalize_request`): tool-call arguments and tool results in the JSON form Gemini
/// gets (`args`, `functionResponse.response`), and each system/developer message's parts
/// joined as its `systemInstruction` part is.
pub(crate) fn normalize(request: &mut Value) {
    common::canonical_arguments(request);
    let Some(messages) = request.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    for message in messages {
        let role = common::role(message);
        if !matches!(role, "system" | "developer" | "tool") {
            continue;
        }
        let tool = role == "tool";
        let Some(mut text) = common::joined_text(message.get("content")) else {
            continue; // non-text content: the translation refuses it
        };
        if tool {
            if let Some(canonical) = common::canonical_json(&text) {
                text = canonical;
            }
        }
        if let Some(object) = message.as_object_mut() {
            object.insert("content".into(), Value::String(text));
        }
    }
}

/// Gemini wants turns alternating, and all function responses to one model turn in the
/// single user turn that follows it.
fn push_content(
    contents: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

fn user_parts(message: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    common::parts(message.get("content"), at)?
        .into_iter()
        .filter(|part| *part != Part::Text(""))
        .map(|part| match part {
            Part::Text(text) => Ok(json!({"text": text})),
            Part::InlineImage { media_type, data } => {
                Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}))
            }
            Part::ImageUrl(url) => {
                let mime = image_mime_from_url(url).ok_or_else(|| {
                    common::invalid(
                        &format!("{at}.content"),
                        "Gemini needs the image's type: use a URL ending in .png, .jpg, .jpeg, \
                         .webp, .gif, .heic or .heif, or a base64 data: URL",
                    )
                })?;
                Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
            }
            Part::Audio { data, format } => {
                Ok(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}))
            }
        })
        .collect()
}

fn image_mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

fn function_response(
    message: &Value,
    at: &str,
    call_names: &[(&str, &str)],
) -> Result<Value, ApiError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| common::invalid(&format!("{at}.tool_call_id"), "is required"))?;
    let name = call_names
        .iter()
        .rev()
        .find(|(call, _)| *call == id)
        .map(|(_, name)| *name)
        .ok_or_else(|| {
            common::invalid(
                &format!("{at}.tool_call_id"),
                "must name a tool call of an earlier assistant message",
            )
        })?;
    let text = common::text_only(message.get("content"), at, NAME)?;
    // Gemini wants an object; JSON results are passed as they are, anything else wrapped.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({"result": other}),
        Err(_) => json!({"result": text}),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

fn encode_tools(request: &Object, body: &mut Object) -> Result<(), ApiError> {
    let tools = common::function_tools(request, NAME)?;
    let choice = common::tool_choice(request)?;
    if tools.is_empty() {
        return match choice {
            None | Some(ToolChoice::None | ToolChoice::Auto) => Ok(()),
            Some(_) => Err(common::invalid("tool_choice", "needs tools")),
        };
    }
    let declarations: Vec<Value> = tools
        .iter()
        .map(|tool| {
            let mut declaration = Object::new();
            declaration.insert("name".into(), Value::String(tool.name.to_string()));
            if let Some(description) = tool.description {
                declaration.insert("description".into(), Value::String(description.to_string()));
            }
            if let Some(parameters) = tool.parameters {
                declaration.insert("parametersJsonSchema".into(), parameters.clone());
            }
            Value::Object(declaration)
        })
        .collect();
    body.insert(
        "tools".into(),
        json!([{"functionDeclarations": declarations}]),
    );
    let config = match choice {
        None => return Ok(()),
        Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::Function(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    body.insert(
        "toolConfig".into(),
        json!({"functionCallingConfig": config}),
    );
    Ok(())
}

fn generation_config(request: &Object) -> Result<Object, ApiError> {
    let mut config = Object::new();
    if let Some(max) = common::max_tokens(request)? {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(value) = common::number(request, from)? {
            config.insert(to.into(), value);
        }
    }
    if let Some(stop) = common::stop_sequences(request)? {
        config.insert("stopSequences".into(), Value::Array(stop));
    }
    match request.get("response_format") {
        None | Some(Value::Null) => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .ok_or_else(|| {
                        common::invalid("response_format.json_schema.schema", "is required")
                    })?;
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => {
                return Err(common::invalid(
                    "response_format.type",
                    "must be \"text\", \"json_object\" or \"json_schema\"",
                ))
            }
        },
    }
    Ok(config)
}

// ------------------------------------------------------------------------ answer

pub(crate) fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

pub(crate) fn usage_counts(answer: &Value, counts: &mut TokenCounts) -> bool {
    let Some(usage) = answer.get("usageMetadata") else {
        return false;
    };
    let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or_default();
    let thoughts = field("thoughtsTokenCount");
    counts.prompt = field("promptTokenCount").saturating_add(field("toolUsePromptTokenCount"));
    counts.completion = field("candidatesTokenCount").saturating_add(thoughts);
    counts.total = usage.get("totalTokenCount").and_then(Value::as_u64);
    counts.cached = field("cachedContentTokenCount");
    counts.reasoning = thoughts;
    true
}

/// The id the client sees for the `number`-th function call of this answer.
pub(crate) fn tool_call_id(exchange_id: &str, number: usize, part: &Value) -> String {
    let base = match part
        .get("functionCall")
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
    {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!(
            "call_{}_{number}",
            exchange_id.strip_prefix("chatcmpl-").unwrap_or(exchange_id)
        ),
    };
    match part.get("thoughtSignature").and_then(Value::as_str) {
        Some(signature) if !signature.is_empty() => format!("{base}{SIGNATURE_MARK}{signature}"),
        _ => base,
    }
}

fn is_thought(part: &Value) -> bool {
    part.get("thought")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn decode(answer: &Value, exchange: &Exchange) -> Value {
    let mut calls = 0;
    let mut choices = Vec::new();
    let candidates = answer
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (position, candidate) in candidates.iter().enumerate() {
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts.iter().filter(|p| !is_thought(p)) {
            if let Some(piece) = part.get("text").and_then(Value::as_str) {
                text.get_or_insert_with(String::new).push_str(piece);
            } else if let Some(call) = part.get("functionCall") {
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                calls += 1;
                let id = tool_call_id(&exchange.id, calls, part);
                tool_calls.push(common::tool_call_json(&id, name, args.to_string()));
            }
        }
        let reason = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .unwrap_or("STOP");
        let finish = finish_reason(reason, !tool_calls.is_empty());
        choices.push(json!({
            "index": candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64),
            "message": common::assistant_message(text, tool_calls),
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no candidates.
        choices.push(json!({
            "index": 0,
            "message": common::assistant_message(None, Vec::new()),
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let mut counts = TokenCounts::default();
    let usage = usage_counts(answer, &mut counts).then(|| counts.to_json());
    common::completion(exchange, choices, usage)
}

/// Gemini errors: `{"error":{"code":429,"message":"...","status":"RESOURCE_EXHAUSTED"}}`,
/// sometimes wrapped in an array.
pub(crate) fn decode_error(status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = match parsed {
        Some(Value::Array(mut items)) if !items.is_empty() => items.swap_remove(0),
        Some(other) => other,
        None => return crate::error::upstream_error(status, body, NAME),
    };
    let mut relayed = crate::error::upstream_error(status, error.to_string().as_bytes(), NAME);
    if let Some(name) = error
        .get("error")
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
    {
        relayed.code = name.to_string();
    }
    relayed
}

#[cfg(test)]
mod tests;
