//! What the OpenAI APIs (chat completions, legacy completions, embeddings) share: the
//! `model`/`stream` checks, the wording of a bad parameter, where their texts are, their
//! usage member, and how they reach a provider.
//!
//! Texts: an OpenAI upstream reads `messages`, `prompt`, `suffix` and `input` wherever the
//! client put them, so every OpenAI API's guards read all of them, whatever the endpoint
//! (a `prompt` on a chat request is no way around the guards).

use serde_json::{json, Value};

use super::Translation;
use crate::api::Operation;
use crate::error::ApiError;
use crate::guards::text::{self, Visitor};
use crate::pipeline::in_place;
use crate::providers::Codec;
use crate::sse::SseEvent;
use crate::usage::{self, Usage};

/// `model` is a string and `stream` a boolean (or null) when present.
pub fn validate_common(body: &Value) -> Result<(), ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid_request(
            "invalid_body",
            "The request body must be a JSON object.",
        ));
    };
    if let Some(model) = object.get("model") {
        if !model.is_string() {
            return Err(invalid_param("model", "must be a string"));
        }
    }
    if let Some(stream) = object.get("stream") {
        if !stream.is_boolean() && !stream.is_null() {
            return Err(invalid_param("stream", "must be a boolean"));
        }
    }
    Ok(())
}

pub fn missing_param(name: &str) -> ApiError {
    ApiError::invalid_request(
        "missing_required_parameter",
        format!("Missing required parameter: '{name}'."),
    )
}

pub fn invalid_param(name: &str, why: &str) -> ApiError {
    ApiError::invalid_request(
        "invalid_value",
        format!("Invalid parameter '{name}': {why}."),
    )
}

/// Every text of an OpenAI request (see the module's note).
pub fn visit_request_texts(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    text::visit_request(body, visit)
}

/// Every text of a `chat.completion` or `text_completion` answer.
pub fn visit_answer_texts(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    text::visit_answer(body, visit)
}

/// An OpenAI answer read in place.
pub fn read_answer(body: &str) -> Option<in_place::Answer<'_>> {
    in_place::read_answer(body)
}

pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    usage::from_json(body)
}

pub fn usage_from_json_tail(tail: &[u8]) -> Option<Usage> {
    usage::from_json_tail(tail)
}

pub fn usage_from_event(data: &str) -> Option<Usage> {
    usage::from_stream_event(data)
}

/// An OpenAI API other than chat reaches only providers that serve it (the OpenAI kinds),
/// through the OpenAI codec, which asks streams for their usage.
pub fn openai_kinds_only(codec: &dyn Codec, operation: Operation) -> Option<Translation> {
    codec.supports(operation).then_some(Translation::Codec)
}

/// Turns a whole `chat.completion` into the SSE stream a streaming client expects: one
/// content chunk, a usage chunk when asked for, and `[DONE]`.
pub fn synthesize_stream(completion: &Value, include_usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let id = completion.get("id").cloned().unwrap_or(Value::Null);
    let created = completion.get("created").cloned().unwrap_or(Value::Null);
    let model = completion.get("model").cloned().unwrap_or(Value::Null);
    let choices: Vec<Value> = completion
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .enumerate()
                .map(|(index, choice)| {
                    let message = choice.get("message").cloned().unwrap_or_else(|| json!({}));
                    let mut delta = serde_json::Map::new();
                    delta.insert("role".into(), message.get("role").cloned().unwrap_or_else(|| json!("assistant")));
                    delta.insert("content".into(), message.get("content").cloned().unwrap_or(Value::Null));
                    if let Some(tool_calls) = message.get("tool_calls").and_then(Value::as_array) {
                        let indexed: Vec<Value> = tool_calls
                            .iter()
                            .enumerate()
                            .map(|(i, call)| {
                                let mut call = call.clone();
                                if let Some(object) = call.as_object_mut() {
                                    object.insert("index".into(), json!(i));
                                }
                                call
                            })
                            .collect();
                        delta.insert("tool_calls".into(), Value::Array(indexed));
                    }
                    json!({
                        "index": choice.get("index").cloned().unwrap_or_else(|| json!(index)),
                        "delta": delta,
                        "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": choices,
    });
    SseEvent::data(chunk.to_string()).write_to(&mut out);
    if include_usage {
        if let Some(usage) = completion.get("usage") {
            let chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage,
            });
            SseEvent::data(chunk.to_string()).write_to(&mut out);
        }
    }
    SseEvent::data("[DONE]").write_to(&mut out);
    out
}
