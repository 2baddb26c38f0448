//! The bridge between a client API that is not chat completions (Anthropic Messages,
//! OpenAI Responses) and the chat-completions form every provider codec speaks
//! (`providers::Codec`). A request of such an API to a provider that does not speak it
//! natively ([`super::Translation::ViaChat`]) goes: client form → [`ChatBridge::request_to_chat`]
//! → `Codec::encode_request` → provider; the answer comes back: provider →
//! `Codec::decode_response` (or its `StreamDecoder`) → chat form → [`ChatBridge::answer_from_chat`]
//! (or [`ChatBridge::stream_from_chat`]) → client form.
//!
//! Every stage sees the client's form on both sides: guards and shaping run before the
//! request is bridged, response guards after the answer is bridged back, so a stage works
//! the same whether the provider speaks the client's API or not.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::providers::{Exchange, StreamDecoder};

pub trait ChatBridge: Sync {
    /// The client's validated (and shaped, guarded) request as a chat-completions request.
    /// The model is already resolved in `request["model"]`. A request that needs what chat
    /// completions cannot carry gets a 400 naming the field (`unsupported_operation` for
    /// server-side state).
    fn request_to_chat(&self, request: &Value, exchange: &Exchange) -> Result<Value, ApiError>;

    /// A `chat.completion` answer as the client API's answer object.
    fn answer_from_chat(&self, answer: &Value, exchange: &Exchange) -> Result<Value, ApiError>;

    /// A translator from `chat.completion.chunk` events (ending with `[DONE]`) to the client
    /// API's events. It always receives the usage chunk (the filter asks for it upstream)
    /// and carries usage into the client's events.
    fn stream_from_chat(&self, exchange: &Exchange) -> Box<dyn StreamDecoder>;

    /// [`ChatBridge::answer_from_chat`] given the client's request as well (its form, stages
    /// done), for an API whose answer reports what the request asked (Responses echoes
    /// `tools`, `instructions` ...). The default ignores the request.
    fn answer_from_chat_for(
        &self,
        answer: &Value,
        _request: &Value,
        exchange: &Exchange,
    ) -> Result<Value, ApiError> {
        self.answer_from_chat(answer, exchange)
    }

    /// [`ChatBridge::stream_from_chat`] given the client's request as well; the default
    /// ignores it.
    fn stream_from_chat_for(
        &self,
        _request: &Value,
        exchange: &Exchange,
    ) -> Box<dyn StreamDecoder> {
        self.stream_from_chat(exchange)
    }
}

/// Copies the client's field `from` (its `value`), a positive integer when present (null is
/// absence), to the chat request's `to`; anything else is the client's 400 from `invalid`.
pub fn copy_positive_integer(
    value: Option<&Value>,
    from: &str,
    chat: &mut Map<String, Value>,
    to: &str,
    invalid: fn(&str, &str) -> ApiError,
) -> Result<(), ApiError> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => {
                chat.insert(to.into(), Value::from(n));
                Ok(())
            }
            _ => Err(invalid(from, "must be a positive integer")),
        },
    }
}

/// Copies each of `keys` that is a number in the client's request (`field` reads one) to the
/// chat request under the same name; a key present and not a number is the client's 400.
pub fn copy_numbers<'a>(
    field: impl Fn(&str) -> Option<&'a Value>,
    keys: &[&str],
    chat: &mut Map<String, Value>,
    invalid: fn(&str, &str) -> ApiError,
) -> Result<(), ApiError> {
    for key in keys {
        match field(key) {
            None | Some(Value::Null) => {}
            Some(value @ Value::Number(_)) => {
                chat.insert((*key).into(), value.clone());
            }
            Some(_) => return Err(invalid(key, "must be a number")),
        }
    }
    Ok(())
}
