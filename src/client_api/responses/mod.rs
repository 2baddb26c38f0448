//! The OpenAI Responses API (`POST .../responses`): `instructions` and `input` (a string or
//! items) in, a `response` object (or its `response.*` events) out.
//!
//! Providers that serve it (`openai`, `azure_openai` at `/openai/v1/responses`,
//! `openai_compatible` unless `"responses": false`) take it natively: the body goes as the
//! client sent it but for what a stage changes, and the answer, stream and errors come back
//! as the provider sent them but for masking. Other providers are reached through the
//! API's chat bridge when there is one ([`super::Translation::ViaChat`]).
//!
//! Texts (`items`): `instructions`, every input item's text by item type, prompt template
//! variables; the answer's `output` items. Streams (`stream`): deltas held back per
//! (event kind, output index, content index), every event that repeats a text masked the
//! same way, `sequence_number` kept strictly increasing.

pub mod items;
pub mod stream;

use std::rc::Rc;

use serde::Deserialize;
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

pub struct Responses;

impl ClientApi for Responses {
    fn operation(&self) -> Operation {
        Operation::Responses
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/responses")
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        items::validate_request(body)
    }

    /// The Responses API has no `stream_options.include_usage`: `response.completed`
    /// always carries usage.
    fn wants_stream_usage(&self, _body: &Value) -> bool {
        true
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        items::visit_request(body, visit)
    }

    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        items::visit_answer(body, visit)
    }

    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        usage_from_json(body)
    }

    fn usage_from_json_tail(&self, tail: &[u8]) -> Option<Usage> {
        usage_from_json_tail(tail)
    }

    fn usage_from_event(&self, data: &str) -> Option<Usage> {
        usage_from_event(data)
    }

    /// OpenAI's error shape (`{"error":{"message","type","code","param"}}`), as for chat.
    fn error_body(&self, error: &ApiError) -> Vec<u8> {
        error.body()
    }

    /// An `error` event as the Responses API sends one. It also carries the chat-style
    /// `error` object, on which the OpenAI SDKs raise; no `[DONE]` follows (the API has none).
    fn write_error_event(&self, error: &ApiError, out: &mut Vec<u8>) {
        SseEvent {
            event: Some("error".into()),
            data: error_event(error).to_string(),
        }
        .write_to(out);
    }

    /// An `error` event, or `response.failed`.
    fn is_upstream_stream_error(&self, data: &str) -> bool {
        let cheap = crate::find::contains(data, "\"error\"")
            || crate::find::contains(data, "\"response.failed\"");
        cheap
            && serde_json::from_str::<TypeOnly>(data).is_ok_and(|event| {
                matches!(event.kind.as_deref(), Some("error" | "response.failed"))
            })
    }

    fn translation(&self, codec: &dyn Codec) -> Option<Translation> {
        if codec.supports(Operation::Responses) {
            Some(Translation::Native)
        } else if self.chat_bridge().is_some() {
            Some(Translation::ViaChat)
        } else {
            None
        }
    }

    /// Providers without the Responses API (`anthropic`, `gemini`, `openai_compatible` with
    /// `"responses": false`) are reached through chat completions (`responses_bridge`).
    fn chat_bridge(&self) -> Option<&'static dyn super::bridge::ChatBridge> {
        Some(&super::responses_bridge::RESPONSES_BRIDGE)
    }

    fn synthesize_stream(&self, answer: &Value, _include_usage: bool) -> Vec<u8> {
        stream::synthesize(answer)
    }

    fn stream_masker(&self, guard: Rc<RegexGuard>) -> Box<dyn EventFilter> {
        Box::new(stream::ResponsesMasker::new(guard))
    }
}

/// `POST .../responses/compact`: a Responses request whose answer is the compacted
/// conversation (`output` items, the last an opaque `compaction` item) with `usage`. Never
/// streamed; only providers that serve the Responses API take it (no bridge: the
/// compaction is the provider's own).
pub struct ResponsesCompact;

impl ClientApi for ResponsesCompact {
    fn operation(&self) -> Operation {
        Operation::ResponsesCompact
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/responses/compact")
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        items::validate_request(body)
    }

    fn streams(&self) -> bool {
        false
    }

    fn wants_stream_usage(&self, _body: &Value) -> bool {
        true
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        items::visit_request(body, visit)
    }

    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        items::visit_answer(body, visit)
    }

    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        usage_from_json(body)
    }

    fn usage_from_json_tail(&self, tail: &[u8]) -> Option<Usage> {
        usage_from_json_tail(tail)
    }

    fn usage_from_event(&self, data: &str) -> Option<Usage> {
        usage_from_event(data)
    }

    fn translation(&self, codec: &dyn Codec) -> Option<Translation> {
        codec
            .supports(Operation::ResponsesCompact)
            .then_some(Translation::Native)
    }
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// The data of a Responses `error` event for `error`.
pub fn error_event(error: &ApiError) -> Value {
    json!({
        "type": "error",
        "code": error.code,
        "message": error.message,
        "param": null,
        "error": {
            "type": error.kind,
            "code": error.code,
            "message": error.message,
            "param": null,
        },
    })
}

/// Responses usage: `input_tokens` (with `input_tokens_details.cached_tokens`),
/// `output_tokens` (with `output_tokens_details.reasoning_tokens`), `total_tokens`.
#[derive(Deserialize, Default)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize, Default)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl From<ResponsesUsage> for Usage {
    fn from(usage: ResponsesUsage) -> Usage {
        Usage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            cache_read_tokens: usage.input_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: 0,
            reasoning_tokens: usage
                .output_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
        }
        .normalised()
    }
}

#[derive(Deserialize)]
struct UsageCarrier {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct EventCarrier {
    #[serde(default)]
    response: Option<UsageCarrier>,
}

/// Usage of a whole `response` object; None when absent or null.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageCarrier>(body)
        .ok()?
        .usage
        .map(Usage::from)
}

/// Usage of a `response.completed` (`.incomplete`, `.failed`) event: its `response.usage`.
pub fn usage_from_event(data: &str) -> Option<Usage> {
    if !crate::find::contains(data, "\"usage\"") {
        return None;
    }
    serde_json::from_str::<EventCarrier>(data)
        .ok()?
        .response?
        .usage
        .map(Usage::from)
}

/// Usage from the last bytes of a large `response` object: the value of its last
/// `"usage":` key.
pub fn usage_from_json_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = tail.windows(KEY.len()).rposition(|window| window == KEY)?;
    let rest = tail.get(at + KEY.len()..)?;
    let rest = rest.get(rest.iter().position(|b| !b.is_ascii_whitespace())?..)?;
    let value = rest.strip_prefix(b":")?;
    serde_json::Deserializer::from_slice(value)
        .into_iter::<Option<ResponsesUsage>>()
        .next()?
        .ok()
        .flatten()
        .map(Usage::from)
}

#[cfg(test)]
mod tests;
