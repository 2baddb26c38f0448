//! The seam between the OpenAI chat-completions API the clients speak and each provider's
//! wire format. One implementation per format; `openai` is the identity with small fixes.

use serde_json::Value;

use super::Provider;
use crate::api::Operation;
use crate::config::model::ProviderKind;
use crate::error::ApiError;
use crate::sse::SseEvent;

/// Defined with the stage contract, which hands it to every stage.
pub use crate::pipeline::stage::Exchange;

pub trait Codec: Sync {
    /// Whether the provider serves this operation at all (chat is universal).
    fn supports(&self, operation: Operation) -> bool {
        operation == Operation::ChatCompletions
    }

    /// Whether non-streamed answers need `decode_response` (the answer is buffered then).
    fn translates_responses(&self) -> bool;

    /// True when the provider takes the OpenAI body as it is, but for the model and
    /// stream options (`pipeline::in_place` can then rewrite it without a `Value`).
    fn takes_openai_body(&self) -> bool {
        false
    }

    /// Rewrites the validated OpenAI request, before any guard reads it, into the texts the
    /// translation will send: where `encode_request` parses a JSON string (tool-call
    /// `arguments`, Gemini tool results) or joins texts (system messages), the request gets
    /// the parsed value's canonical JSON or the joined text, so a guard never reads an
    /// escaped or split form of what the provider decodes. What cannot be rewritten is left
    /// for `encode_request` to refuse.
    fn normalize_request(&self, _request: &mut Value) {}

    /// Turns the shaped OpenAI chat request (model already resolved) into the native body.
    fn encode_request(
        &self,
        request: &Value,
        provider: &Provider,
        exchange: &Exchange,
    ) -> Result<Value, ApiError>;

    /// Turns a native non-streamed answer into an OpenAI `chat.completion`. `None` means the
    /// answer already is one and may pass as it is.
    fn decode_response(&self, body: &[u8], exchange: &Exchange) -> Result<Option<Value>, ApiError>;

    /// A translator for the native event stream; `None` means the stream already is OpenAI SSE.
    fn stream_decoder(&self, exchange: &Exchange) -> Option<Box<dyn StreamDecoder>>;

    /// Turns a native error answer into the OpenAI error shape, keeping the status.
    fn decode_error(&self, status: u16, body: &[u8]) -> ApiError {
        crate::error::upstream_error(status, body, "upstream")
    }

    fn extra_headers(&self, _provider: &Provider) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Replaces `{method}` in a path template (Gemini's `generateContent`/`streamGenerateContent`).
    fn stream_method(&self, _stream: Option<bool>) -> &'static str {
        ""
    }

    /// A query parameter the upstream needs for streams (Gemini's `alt=sse`).
    fn stream_query(&self, _stream: Option<bool>) -> Option<&'static str> {
        None
    }
}

/// Translates one native stream event into zero or more OpenAI `chat.completion.chunk` events.
pub trait StreamDecoder {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError>;
    /// End of the upstream stream: emit whatever is still owed (final usage chunk, `[DONE]`).
    fn finish(&mut self, out: &mut Vec<SseEvent>);

    /// Whether the usage in the translated events is the provider's own: `Some(false)` when
    /// the translation had to write usage the provider never reported (a bridge's zeros), so
    /// the answer is charged by estimate instead. None: the events carry what they carry.
    fn usage_reported(&self) -> Option<bool> {
        None
    }
}

static OPENAI_CODEC: super::openai::OpenAiCodec = super::openai::OpenAiCodec {
    native_messages: false,
    responses: true,
};
/// An `openai_compatible` server that also serves Anthropic Messages (`"messages": true`).
static OPENAI_MESSAGES_CODEC: super::openai::OpenAiCodec = super::openai::OpenAiCodec {
    native_messages: true,
    responses: true,
};
/// An `openai_compatible` server with `"responses": false`: chat completions (and the
/// legacy OpenAI APIs) only.
static OPENAI_CHAT_ONLY_CODEC: super::openai::OpenAiCodec = super::openai::OpenAiCodec {
    native_messages: false,
    responses: false,
};
/// Both: Anthropic Messages served, the Responses API not.
static OPENAI_MESSAGES_NO_RESPONSES_CODEC: super::openai::OpenAiCodec =
    super::openai::OpenAiCodec {
        native_messages: true,
        responses: false,
    };

#[cfg(test)]
pub fn chat_only_openai() -> &'static dyn Codec {
    &OPENAI_CHAT_ONLY_CODEC
}
static ANTHROPIC_CODEC: super::anthropic::AnthropicCodec = super::anthropic::AnthropicCodec;
static GEMINI_CODEC: super::gemini::GeminiCodec = super::gemini::GeminiCodec;

pub fn for_kind(kind: ProviderKind) -> &'static dyn Codec {
    match kind {
        ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible => {
            &OPENAI_CODEC
        }
        ProviderKind::Anthropic => &ANTHROPIC_CODEC,
        ProviderKind::Gemini => &GEMINI_CODEC,
    }
}

/// The codec of a provider; `native_messages` is the provider's `messages` setting (an
/// `openai_compatible` server that serves Anthropic Messages itself).
pub fn for_provider(
    kind: ProviderKind,
    native_messages: bool,
    responses: bool,
) -> &'static dyn Codec {
    match (kind, native_messages, responses) {
        (ProviderKind::OpenaiCompatible, true, true) => &OPENAI_MESSAGES_CODEC,
        (ProviderKind::OpenaiCompatible, true, false) => &OPENAI_MESSAGES_NO_RESPONSES_CODEC,
        (ProviderKind::OpenaiCompatible, false, false) => &OPENAI_CHAT_ONLY_CODEC,
        _ => for_kind(kind),
    }
}

/// Every kind has a codec in this build; kept so a build without one can refuse the config.
pub fn is_available(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::Openai
            | ProviderKind::AzureOpenai
            | ProviderKind::OpenaiCompatible
            | ProviderKind::Anthropic
            | ProviderKind::Gemini
    )
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            model: String::new(),
            client_stream: false,
            upstream_stream: false,
            client_wants_usage: false,
            created: 0,
            id: String::new(),
            operation: Operation::ChatCompletions,
            client_operation: Operation::ChatCompletions,
        }
    }
}
