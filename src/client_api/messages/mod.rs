//! Anthropic Messages (`POST .../messages`) and its token counting
//! (`POST .../messages/count_tokens`) as client APIs.
//!
//! Native on `anthropic` providers and on `openai_compatible` servers configured with
//! `"messages": true` (the codec says so: `Codec::supports(Operation::Messages)`); elsewhere
//! through the API's `ChatBridge` when one is registered ([`ClientApi::chat_bridge`]), else
//! refused with 400 `unsupported_operation`.
//!
//! - Validation (`validate.rs`): the fields the gateway relies on, in Anthropic's terms; a
//!   text in a shape the visitors do not walk is refused, never passed unguarded.
//! - Texts (`text.rs`): `system`, every content block's text (text, tool_use input,
//!   tool_result content, document text sources, search results, and any other block's
//!   strings); `thinking` is read but never edited (its signature covers it).
//! - Streams (`stream.rs`): the masker holds text and tool-input deltas back per content
//!   block; usage is merged from `message_start` and the cumulative `message_delta`s.
//! - Errors: `{"type":"error","error":{"type","message"}}`, in band as `event: error`.

mod stream;
mod text;
mod usage;
mod validate;

#[cfg(test)]
mod tests;

use std::rc::Rc;

use serde_json::{json, Value};

use super::{ClientApi, Translation};
use crate::api::Operation;
use crate::error::ApiError;
use crate::guards::regex_guard::RegexGuard;
use crate::guards::text::Visitor;
use crate::pipeline::stage::EventFilter;
use crate::providers::Codec;
use crate::sse::SseEvent;
use crate::usage::Usage;

pub use stream::MessagesMasker;
pub use usage::{generated_text_len, usage_from_json};

/// `POST .../messages`.
pub struct Messages;

/// `POST .../messages/count_tokens`.
pub struct CountTokens;

impl ClientApi for Messages {
    fn operation(&self) -> Operation {
        Operation::Messages
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/messages")
    }

    fn validate(&self, body: &Value) -> Result<(), ApiError> {
        validate::request(body, true)
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        validate::request(body, true)
    }

    /// Anthropic streams always carry usage (`message_start`, `message_delta`).
    fn wants_stream_usage(&self, _body: &Value) -> bool {
        true
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        text::visit_request(body, visit)
    }

    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        text::visit_answer(body, visit)
    }

    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        usage::usage_from_json(body)
    }

    fn usage_from_json_tail(&self, tail: &[u8]) -> Option<Usage> {
        usage::usage_from_json_tail(tail)
    }

    fn usage_from_event(&self, data: &str) -> Option<Usage> {
        usage::usage_from_event(data, None)
    }

    fn update_stream_usage(&self, data: &str, usage: &mut Option<Usage>) {
        if let Some(found) = usage::usage_from_event(data, *usage) {
            *usage = Some(found);
        }
    }

    fn generated_text_len(&self, data: &str) -> usize {
        usage::generated_text_len(data)
    }

    /// `message_stop` ends a Messages stream.
    fn ends_stream(&self, event: &SseEvent) -> bool {
        crate::find::contains(&event.data, "\"message_stop\"")
            && serde_json::from_str::<Value>(&event.data)
                .ok()
                .is_some_and(|value| {
                    value.get("type").and_then(Value::as_str) == Some("message_stop")
                })
    }

    fn error_body(&self, error: &ApiError) -> Vec<u8> {
        error_body(error)
    }

    fn write_error_event(&self, error: &ApiError, out: &mut Vec<u8>) {
        write_error_event(error, out);
    }

    fn translation(&self, codec: &dyn Codec) -> Option<Translation> {
        translation(self, codec)
    }

    /// Chat-completions providers are reached through the Messages bridge
    /// (`client_api::messages_bridge`).
    fn chat_bridge(&self) -> Option<&'static dyn super::bridge::ChatBridge> {
        Some(&super::messages_bridge::BRIDGE)
    }

    fn forwards_query(&self) -> bool {
        true
    }

    fn synthesize_stream(&self, answer: &Value, _include_usage: bool) -> Vec<u8> {
        stream::synthesize(answer)
    }

    fn stream_masker(&self, guard: Rc<RegexGuard>) -> Box<dyn EventFilter> {
        Box::new(MessagesMasker::new(guard))
    }

    fn shaping_form(&self) -> crate::shaping::MessageForm {
        crate::shaping::MessageForm::AnthropicMessages
    }
}

impl ClientApi for CountTokens {
    fn operation(&self) -> Operation {
        Operation::CountTokens
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/messages/count_tokens")
    }

    fn validate(&self, body: &Value) -> Result<(), ApiError> {
        validate::request(body, false)
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        validate::request(body, false)
    }

    fn streams(&self) -> bool {
        false
    }

    fn wants_stream_usage(&self, _body: &Value) -> bool {
        false
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        text::visit_request(body, visit)
    }

    /// `{"input_tokens": n}`: no text.
    fn visit_answer_texts(&self, _body: &mut Value, _visit: &mut Visitor<'_>) -> bool {
        false
    }

    /// Counting is free at Anthropic: the answer charges no tokens (the budget check still
    /// admits or refuses the request).
    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|answer| answer.get("input_tokens").is_some_and(Value::is_u64))
            .map(|_| Usage::default())
    }

    fn usage_from_event(&self, _data: &str) -> Option<Usage> {
        None
    }

    fn error_body(&self, error: &ApiError) -> Vec<u8> {
        error_body(error)
    }

    fn write_error_event(&self, error: &ApiError, out: &mut Vec<u8>) {
        write_error_event(error, out);
    }

    fn translation(&self, codec: &dyn Codec) -> Option<Translation> {
        // Counting needs the provider's tokenizer: no bridge can answer it.
        codec
            .supports(Operation::CountTokens)
            .then_some(Translation::Native)
    }

    fn forwards_query(&self) -> bool {
        true
    }

    fn shaping_form(&self) -> crate::shaping::MessageForm {
        crate::shaping::MessageForm::AnthropicMessages
    }
}

fn translation(api: &dyn ClientApi, codec: &dyn Codec) -> Option<Translation> {
    if codec.supports(api.operation()) {
        Some(Translation::Native)
    } else if api.chat_bridge().is_some() {
        Some(Translation::ViaChat)
    } else {
        None
    }
}

/// Anthropic's error `type` for a gateway error: chosen by status, as Anthropic does.
pub fn error_type(error: &ApiError) -> &'static str {
    match error.status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_value(error: &ApiError) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(error), "message": error.message},
    })
}

pub fn error_body(error: &ApiError) -> Vec<u8> {
    error_value(error).to_string().into_bytes()
}

/// The in-band error as Anthropic sends it: `event: error` with the error object.
pub fn write_error_event(error: &ApiError, out: &mut Vec<u8>) {
    SseEvent {
        event: Some("error".into()),
        data: error_value(error).to_string(),
    }
    .write_to(out);
}

/// The list of models in Anthropic's shape (`GET /v1/models` with `anthropic-version`).
pub fn model_list(names: &[&str]) -> Value {
    let data: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": names.first(),
        "last_id": names.last(),
    })
}
