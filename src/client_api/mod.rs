//! The client-API seam: everything a client API means to the pipeline sits behind
//! [`ClientApi`], one module per API, registered in [`REGISTERED`]. The pipeline (`Flow`,
//! the stream processor, the guards) asks the request's API and never matches on which API
//! it is.
//!
//! An API answers: which paths it serves, how its request is validated, where its texts
//! are (on a parsed `Value`, and in place over the raw body for the common route), whether
//! a request streams and wants usage, how usage is read from its JSON answers and SSE
//! events, how its errors look, and how it reaches each provider ([`Translation`]).
//!
//! Adding an API is one new module implementing the trait, plus its `Operation` and its
//! line in [`REGISTERED`] (below). An API with its own error shape (Anthropic Messages)
//! overrides [`ClientApi::error_body`]; one whose usage arrives in another event
//! (Responses' `response.completed`) overrides [`ClientApi::usage_from_event`]; one that
//! its native provider takes as is answers [`Translation::Native`] for that provider.

pub mod bridge;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod messages;
pub mod messages_bridge;
pub mod openai;
pub mod responses;
pub mod responses_bridge;

use std::rc::Rc;

use serde_json::Value;

use crate::api::Operation;
use crate::error::ApiError;
use crate::guards::regex_guard::RegexGuard;
use crate::guards::text::Visitor;
use crate::pipeline::in_place;
use crate::pipeline::stage::EventFilter;
use crate::providers::Codec;
use crate::sse::SseEvent;
use crate::usage::Usage;

/// How a request of an API reaches a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The provider speaks this API: the body goes as it is (model and what stages change
    /// aside), and so do the answer and the provider's errors; no codec is involved.
    Native,
    /// The provider's codec translates the request from the chat-completions form and its
    /// answer back (`providers::Codec`): chat clients, and the legacy OpenAI APIs.
    Codec,
    /// The API's [`bridge::ChatBridge`] turns the request into chat completions, which the
    /// provider's codec then translates; the answer takes the same way back.
    ViaChat,
}

/// What a client API means to the pipeline. Implementations are unit structs registered in
/// [`REGISTERED`]; the flow keeps a `&'static dyn ClientApi` per request.
pub trait ClientApi: Sync {
    /// The operation this API serves (its id: metrics, logs, the provider's upstream path).
    fn operation(&self) -> Operation;

    /// True when the client's `:path` (query and trailing `/` removed) names this API.
    /// [`REGISTERED`] is tried in order, so a more specific path comes first.
    fn matches_path(&self, path: &str) -> bool;

    /// The HTTP method the API takes.
    fn method(&self) -> &'static str {
        "POST"
    }

    /// Checks the fields the filter relies on (the provider checks the rest). The defaults
    /// check `model` and `stream`; [`ClientApi::validate_body`] the API's own fields.
    fn validate(&self, body: &Value) -> Result<(), ApiError> {
        openai::validate_common(body)?;
        self.validate_body(body)
    }

    /// The API's own request fields (messages, prompt, input ...).
    fn validate_body(&self, body: &Value) -> Result<(), ApiError>;

    /// Whether the API streams at all (embeddings do not).
    fn streams(&self) -> bool {
        true
    }

    /// The client asked for a streamed answer.
    fn is_stream(&self, body: &Value) -> bool {
        self.streams() && body.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The client asked for usage at the end of a stream.
    fn wants_stream_usage(&self, body: &Value) -> bool {
        body.get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Visits every text of a parsed request; true when the visitor changed one.
    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool;

    /// Copies of every non-empty text of a request, in order.
    fn request_texts(&self, body: &mut Value) -> Vec<String> {
        let mut texts = Vec::new();
        self.visit_request_texts(body, &mut |text: &mut String| {
            if !text.is_empty() {
                texts.push(text.clone());
            }
            false
        });
        texts
    }

    /// Reads a request in place (borrowed views, edits), validating it as
    /// [`ClientApi::validate`] would. None when the general `Value` path must see it (it
    /// words every error); the default always defers.
    fn read_request<'a>(&self, _body: &'a str) -> Option<in_place::Request<'a>> {
        None
    }

    /// Visits every text of a parsed answer (in the client API's shape).
    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool;

    /// Copies of every non-empty text of an answer, in order.
    fn answer_texts(&self, body: &mut Value) -> Vec<String> {
        let mut texts = Vec::new();
        self.visit_answer_texts(body, &mut |text: &mut String| {
            if !text.is_empty() {
                texts.push(text.clone());
            }
            false
        });
        texts
    }

    /// Reads an answer in place. None when the general `Value` path must see it.
    fn read_answer<'a>(&self, _body: &'a str) -> Option<in_place::Answer<'a>> {
        None
    }

    /// Usage of a whole JSON answer (in the client API's shape).
    fn usage_from_json(&self, body: &[u8]) -> Option<Usage>;

    /// Usage from the last bytes of a JSON answer too large to keep whole.
    fn usage_from_json_tail(&self, _tail: &[u8]) -> Option<Usage> {
        None
    }

    /// Usage carried by one SSE event's data, if any.
    fn usage_from_event(&self, data: &str) -> Option<Usage>;

    /// Updates a stream's usage so far with one event's data. The default replaces it with
    /// the event's usage (OpenAI's usage chunk is whole); an API whose events each carry a
    /// part (Anthropic's `message_start` and cumulative `message_delta`) merges.
    fn update_stream_usage(&self, data: &str, usage: &mut Option<Usage>) {
        if let Some(found) = self.usage_from_event(data) {
            *usage = Some(found);
        }
    }

    /// True when the event is the last of the API's stream (OpenAI's `[DONE]`): clients
    /// hang up right after it, so the answer is accounted there.
    fn ends_stream(&self, event: &SseEvent) -> bool {
        event.is_done_marker()
    }

    /// Bytes of generated text in one stream event (what an estimate counts when usage
    /// never arrives; `usage::estimate`).
    fn generated_text_len(&self, data: &str) -> usize {
        crate::usage::generated_text_len(data)
    }

    /// True when the client's query string goes on to a provider that serves the API
    /// natively (Claude Code's `/v1/messages?beta=true`); a translated request never
    /// carries it.
    fn forwards_query(&self) -> bool {
        false
    }

    /// Where shaping's prepend/append messages go (chat `messages`, or Anthropic's
    /// `system` and alternating turns).
    fn shaping_form(&self) -> crate::shaping::MessageForm {
        crate::shaping::MessageForm::Chat
    }

    /// True when a stream event is an upstream's in-band error in this API's own shape
    /// (counted and logged as the stream's failure, `upstream_stream_error`). OpenAI's
    /// `{"error":{...}}` events are recognised for every API without it.
    fn is_upstream_stream_error(&self, _data: &str) -> bool {
        false
    }

    /// The body of an error answer in the API's error shape.
    fn error_body(&self, error: &ApiError) -> Vec<u8> {
        error.body()
    }

    /// Ends a stream in-band with `error`. OpenAI clients raise an error when an event
    /// carries `error`; `[DONE]` closes the stream.
    fn write_error_event(&self, error: &ApiError, out: &mut Vec<u8>) {
        let body = String::from_utf8_lossy(&self.error_body(error)).into_owned();
        SseEvent::data(body).write_to(out);
        SseEvent::data("[DONE]").write_to(out);
    }

    /// How a request reaches the provider behind `codec`; None when it cannot.
    fn translation(&self, codec: &dyn Codec) -> Option<Translation>;

    /// The bridge to chat completions ([`Translation::ViaChat`]); None for APIs that never
    /// need one.
    fn chat_bridge(&self) -> Option<&'static dyn bridge::ChatBridge> {
        None
    }

    /// A whole answer (the API's answer object) as the event stream a streaming client of
    /// this API expects: used when the filter needed the answer whole (a response
    /// transformer) but the client asked for a stream.
    fn synthesize_stream(&self, answer: &Value, include_usage: bool) -> Vec<u8> {
        openai::synthesize_stream(answer, include_usage)
    }

    /// The regex guard's masker over this API's answer events (its text deltas held back
    /// across events so a hit split between them is masked whole).
    fn stream_masker(&self, guard: Rc<RegexGuard>) -> Box<dyn EventFilter> {
        Box::new(crate::guards::stream_mask::StreamMasker::new(guard))
    }
}

/// Every client API, in the order paths are matched (`/chat/completions` before
/// `/completions`). Registering an API is one line here.
pub static REGISTERED: [&dyn ClientApi; 7] = [
    &messages::CountTokens,
    &messages::Messages,
    &responses::Responses,
    &responses::ResponsesCompact,
    &chat::Chat,
    &completions::Completions,
    &embeddings::Embeddings,
];

/// The API a client's `:path` names, if the filter serves one there.
pub fn for_path(path: &str) -> Option<&'static dyn ClientApi> {
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    REGISTERED
        .iter()
        .copied()
        .find(|api| api.matches_path(path))
}

/// The API serving `operation`; None for operations the filter answers itself (models).
pub fn of(operation: Operation) -> Option<&'static dyn ClientApi> {
    REGISTERED
        .iter()
        .copied()
        .find(|api| api.operation() == operation)
}

/// The API of `operation`, or chat completions (the stages' and codecs' common case) for an
/// operation no API serves. Only the flow's requests reach the stages, and those always
/// have an API.
pub fn of_or_chat(operation: Operation) -> &'static dyn ClientApi {
    of(operation).unwrap_or(&chat::Chat)
}

/// Recognises the operation from the client's `:path` (query ignored): a registered client
/// API's (`for_path`), or the model list the filter answers itself.
pub fn operation_for_path(path: &str) -> Option<Operation> {
    if let Some(api) = for_path(path) {
        return Some(api.operation());
    }
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    path.ends_with("/models").then_some(Operation::ListModels)
}

/// Checks the fields the filter relies on (the provider checks the rest), as the
/// operation's client API does; an operation no API serves has no body to check.
pub fn validate(operation: Operation, body: &serde_json::Value) -> Result<(), ApiError> {
    match of(operation) {
        Some(api) => api.validate(body),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_but_models_has_exactly_one_api() {
        for operation in [
            Operation::ChatCompletions,
            Operation::Completions,
            Operation::Embeddings,
            Operation::Messages,
            Operation::CountTokens,
            Operation::Responses,
            Operation::ResponsesCompact,
        ] {
            let count = REGISTERED
                .iter()
                .filter(|api| api.operation() == operation)
                .count();
            assert_eq!(count, 1, "{operation:?}");
        }
        assert!(of(Operation::ListModels).is_none());
    }

    #[test]
    fn paths_name_their_api() {
        let op = |path: &str| for_path(path).map(|api| api.operation());
        assert_eq!(op("/v1/chat/completions"), Some(Operation::ChatCompletions));
        assert_eq!(
            op("/v1/chat/completions/?x=1"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(op("/openai/v1/completions"), Some(Operation::Completions));
        assert_eq!(op("/v1/embeddings"), Some(Operation::Embeddings));
        assert_eq!(op("/v1/messages"), Some(Operation::Messages));
        assert_eq!(op("/v1/messages?beta=true"), Some(Operation::Messages));
        assert_eq!(
            op("/anthropic/v1/messages/count_tokens/"),
            Some(Operation::CountTokens)
        );
        assert_eq!(op("/v1/responses"), Some(Operation::Responses));
        assert_eq!(op("/openai/v1/responses/"), Some(Operation::Responses));
        assert_eq!(
            op("/v1/responses/compact"),
            Some(Operation::ResponsesCompact)
        );
        // Retrieval, cancellation, input items: not served (404), never a way around.
        assert_eq!(op("/v1/responses/resp_123"), None);
        assert_eq!(op("/v1/responses/resp_123/input_items"), None);
        assert_eq!(op("/v1/models"), None);
        assert_eq!(op("/v1/files"), None);
    }
}
