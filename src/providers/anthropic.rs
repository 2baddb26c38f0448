//! Anthropic Messages API (`POST /v1/messages`, `x-api-key`, `anthropic-version`).
//!
//! Request: system/developer messages are lifted into `system`; `tool` messages become
//! `tool_result` blocks in a user turn; assistant `tool_calls` become `tool_use` blocks;
//! consecutive turns of one role are merged (Anthropic wants them alternating);
//! `max_tokens` (required by Anthropic) comes from `provider.anthropic.max_tokens` when the
//! client left it out. Answers, streams (`stream.rs`) and errors come back in OpenAI shapes.

mod stream;

use serde_json::{json, Value};

use super::codec::{Codec, Exchange, StreamDecoder};
use super::common::{self, Object, Part, ToolChoice};
use super::Provider;
use crate::api::Operation;
use crate::error::ApiError;

const NAME: &str = "anthropic";

/// OpenAI request fields this codec translates. Anything else is refused with a 400 unless
/// it carries its default value (see `common::check_fields`).
const MAPPED: [&str; 13] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
];

pub struct AnthropicCodec;

impl Codec for AnthropicCodec {
    /// Chat clients through this codec; Anthropic Messages clients natively.
    fn supports(&self, operation: Operation) -> bool {
        matches!(
            operation,
            Operation::ChatCompletions | Operation::Messages | Operation::CountTokens
        )
    }

    fn translates_responses(&self) -> bool {
        true
    }

    fn encode_request(
        &self,
        request: &Value,
        provider: &Provider,
        exchange: &Exchange,
    ) -> Result<Value, ApiError> {
        encode(request, provider.anthropic.max_tokens, exchange)
    }

    fn normalize_request(&self, request: &mut Value) {
        normalize(request);
    }

    fn decode_response(&self, body: &[u8], exchange: &Exchange) -> Result<Option<Value>, ApiError> {
        let answer: Value =
            serde_json::from_slice(body).map_err(|_| common::invalid_upstream(NAME))?;
        decode(&answer, exchange).map(Some)
    }

    fn stream_decoder(&self, exchange: &Exchange) -> Option<Box<dyn StreamDecoder>> {
        Some(Box::new(stream::AnthropicStream::new(exchange)))
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ApiError {
        crate::error::upstream_error(status, body, NAME)
    }

    fn extra_headers(&self, provider: &Provider) -> Vec<(&'static str, String)> {
        vec![("anthropic-version", provider.anthropic.version.clone())]
    }
}

// ------------------------------------------------------------------------ request

pub(crate) fn encode(
    request: &Value,
    default_max_tokens: u64,
    exchange: &Exchange,
) -> Result<Value, ApiError> {
    let request = request.as_object().ok_or_else(|| {
        ApiError::invalid_request("invalid_body", "The request body must be a JSON object.")
    })?;
    common::check_fields(request, NAME, &MAPPED)?;
    // Each system/developer message's text, and the `cache_control` one of its parts carried.
    let mut system: Vec<(String, Option<&Value>)> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (index, message) in common::messages(request)?.iter().enumerate() {
        let at = format!("messages[{index}]");
        match common::role(message) {
            "system" | "developer" => {
                let text = common::text_only(message.get("content"), &at, NAME)?;
                if !text.is_empty() {
                    let cache = common::cache_controls(message.get("content"))
                        .into_iter()
                        .flatten()
                        .next_back();
                    system.push((text, cache));
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(message, &at)?),
            "assistant" => {
                common::refuse_function_call(message, &at, NAME)?;
                push_turn(&mut turns, "assistant", assistant_blocks(message, &at)?)
            }
            "tool" => push_turn(&mut turns, "user", vec![tool_result(message, &at)?]),
            other => {
                return Err(common::unsupported(
                    NAME,
                    &format!("{at}: messages with role {other:?}"),
                ))
            }
        }
    }
    if turns.is_empty() {
        // OpenAI answers a conversation of instructions alone; Anthropic needs a turn, so
        // the instructions become it (and no `system` is sent).
        if system.is_empty() {
            return Err(common::no_turns(NAME));
        }
        let blocks = system
            .drain(..)
            .map(|(text, cache)| with_cache(json!({"type": "text", "text": text}), cache))
            .collect();
        turns.push(("user", blocks));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = Object::new();
    body.insert("model".into(), Value::String(exchange.model.clone()));
    body.insert("messages".into(), Value::Array(messages));
    let max_tokens = common::max_tokens(request)?.unwrap_or(default_max_tokens);
    body.insert("max_tokens".into(), json!(max_tokens));
    if system.iter().any(|(_, cache)| cache.is_some()) {
        // Cache breakpoints need blocks: one per message, marked where a part was.
        let blocks = system
            .iter()
            .map(|(text, cache)| with_cache(json!({"type": "text", "text": text}), *cache))
            .collect();
        body.insert("system".into(), Value::Array(blocks));
    } else if !system.is_empty() {
        let texts: Vec<&str> = system.iter().map(|(text, _)| text.as_str()).collect();
        body.insert("system".into(), Value::String(texts.join("\n\n")));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        if let Some(value) = common::number(request, from)? {
            body.insert(to.into(), value);
        }
    }
    if let Some(stop) = common::stop_sequences(request)? {
        body.insert("stop_sequences".into(), Value::Array(stop));
    }
    if exchange.upstream_stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    encode_tools(request, &mut body)?;
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(body))
}

/// Anthropic merges consecutive turns of one role anyway; merging here keeps every
/// `tool_result` of one assistant turn in the single user turn that must follow it.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// The request rewritten into what the translation sends, before guards read it: tool-call
/// arguments in the JSON form `input` gets, and the system/developer texts joined as
/// `system` gets them (see `Codec::normalize_request`).
pub(crate) fn normalize(request: &mut Value) {
    common::canonical_arguments(request);
    let Some(messages) = request.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    let is_instruction = |m: &Value| matches!(common::role(m), "system" | "developer");
    let mut first: Option<usize> = None;
    let mut texts: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if !is_instruction(message) {
            continue;
        }
        let content = message.get("content");
        if common::cache_controls(content).iter().any(Option::is_some) {
            return; // sent as blocks, one per message, as the guards read them
        }
        let Some(text) = common::joined_text(content) else {
            return; // non-text content: the translation refuses it
        };
        first.get_or_insert(index);
        if !text.is_empty() {
            texts.push(text);
        }
    }
    let Some(first) = first else { return };
    let joined = texts.join("\n\n");
    for (index, message) in messages.iter_mut().enumerate() {
        if index >= first && is_instruction(message) {
            if let Some(object) = message.as_object_mut() {
                let text = if index == first {
                    joined.clone()
                } else {
                    String::new()
                };
                object.insert("content".into(), Value::String(text));
            }
        }
    }
}

fn with_cache(mut block: Value, cache: Option<&Value>) -> Value {
    if let (Some(object), Some(cache)) = (block.as_object_mut(), cache) {
        object.insert("cache_control".into(), cache.clone());
    }
    block
}

/// The content blocks of a message's parts, empty text left out, each part's
/// `cache_control` kept.
fn blocks<'a>(
    message: &'a Value,
    at: &str,
    block: impl Fn(Part<'a>) -> Result<Value, ApiError>,
) -> Result<Vec<Value>, ApiError> {
    let content = message.get("content");
    let caches = common::cache_controls(content);
    let mut out = Vec::new();
    for (index, part) in common::parts(content, at)?.into_iter().enumerate() {
        if part == Part::Text("") {
            continue;
        }
        out.push(with_cache(
            block(part)?,
            caches.get(index).copied().flatten(),
        ));
    }
    Ok(out)
}

fn user_blocks(message: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    blocks(message, at, |part| content_block(part, at))
}

fn content_block(part: Part<'_>, at: &str) -> Result<Value, ApiError> {
    match part {
        Part::Text(text) => Ok(json!({"type": "text", "text": text})),
        Part::InlineImage { media_type, data } => Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        })),
        Part::ImageUrl(url) => Ok(json!({"type": "image", "source": {"type": "url", "url": url}})),
        Part::Audio { .. } => Err(common::unsupported(NAME, &format!("{at}: audio input"))),
    }
}

fn assistant_blocks(message: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let mut blocks = blocks(message, at, |part| match part {
        Part::Text(text) => Ok(json!({"type": "text", "text": text})),
        _ => Err(common::unsupported(
            NAME,
            &format!("{at}: non-text content in an assistant message"),
        )),
    })?;
    for call in common::tool_calls(message, at)? {
        blocks.push(
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}),
        );
    }
    Ok(blocks)
}

fn tool_result(message: &Value, at: &str) -> Result<Value, ApiError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| common::invalid(&format!("{at}.tool_call_id"), "is required"))?;
    let content = match message.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        other => {
            let caches = common::cache_controls(other);
            Value::Array(
                common::parts(other, at)?
                    .into_iter()
                    .enumerate()
                    .map(|(index, part)| {
                        let cache = caches.get(index).copied().flatten();
                        content_block(part, at).map(|block| with_cache(block, cache))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
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
    let tools: Vec<Value> = tools
        .iter()
        .map(|tool| {
            let mut out = json!({
                "name": tool.name,
                "input_schema": tool.parameters.cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let (Some(object), Some(description)) = (out.as_object_mut(), tool.description) {
                object.insert("description".into(), Value::String(description.to_string()));
            }
            out
        })
        .collect();
    body.insert("tools".into(), Value::Array(tools));
    let serial = request.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let mut choice = match choice {
        None if !serial => return Ok(()),
        None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => json!({"type": "none"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
    };
    if serial && choice["type"] != "none" {
        if let Some(object) = choice.as_object_mut() {
            object.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    body.insert("tool_choice".into(), choice);
    Ok(())
}

// ------------------------------------------------------------------------ answer

pub(crate) fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    Some(match stop_reason? {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and any later addition
        _ => "stop",
    })
}

/// Anthropic's usage counters. Each is cumulative: a later report of one replaces it, and
/// one a report leaves out keeps its value (a stream's `message_delta` after its
/// `message_start`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
}

impl Usage {
    pub(crate) fn merge(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else { return };
        for (name, counter) in [
            ("input_tokens", &mut self.input),
            ("cache_creation_input_tokens", &mut self.cache_creation),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("output_tokens", &mut self.output),
        ] {
            if let Some(value) = usage.get(name).and_then(Value::as_u64) {
                *counter = value;
            }
        }
    }

    /// Anthropic's `input_tokens` leaves out cached input; OpenAI's `prompt_tokens` counts it.
    pub(crate) fn apply(&self, counts: &mut super::common::TokenCounts) {
        counts.prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        counts.cached = self.cache_read;
        counts.cache_write = self.cache_creation;
        counts.completion = self.output;
    }
}

fn decode(answer: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
    let content = answer
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| common::invalid_upstream(NAME))?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let piece = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                text.get_or_insert_with(String::new).push_str(piece);
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(common::tool_call_json(id, name, input.to_string()));
            }
            // thinking blocks and anything newer carry nothing OpenAI clients can show
            _ => {}
        }
    }
    let finish = finish_reason(answer.get("stop_reason").and_then(Value::as_str)).unwrap_or("stop");
    let mut counts = common::TokenCounts::default();
    let mut usage = Usage::default();
    usage.merge(answer.get("usage"));
    usage.apply(&mut counts);
    let choice = json!({
        "index": 0,
        "message": common::assistant_message(text, tool_calls),
        "logprobs": null,
        "finish_reason": finish,
    });
    Ok(common::completion(
        exchange,
        vec![choice],
        answer.get("usage").map(|_| counts.to_json()),
    ))
}

#[cfg(test)]
mod tests;
