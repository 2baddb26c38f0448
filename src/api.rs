//! The client-facing OpenAI API surface: which operation a request is, and the checks a
//! request body must pass before anything else looks at it.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST .../chat/completions`
    ChatCompletions,
    /// `POST .../completions` (legacy, `prompt`)
    Completions,
    /// `POST .../embeddings`
    Embeddings,
    /// `POST .../responses` (the OpenAI Responses API)
    Responses,
    /// `POST .../responses/compact` (the Responses API's context compaction; never streamed)
    ResponsesCompact,
    /// `GET .../models`: answered by the filter from the route's config.
    ListModels,
    /// `POST .../messages` (Anthropic Messages)
    Messages,
    /// `POST .../messages/count_tokens` (Anthropic token counting)
    CountTokens,
}

impl Operation {
    pub fn method(self) -> &'static str {
        match self {
            Operation::ListModels => "GET",
            _ => "POST",
        }
    }

    /// The last path segments that name the operation upstream.
    pub fn path_suffix(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Completions => "completions",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
            Operation::ResponsesCompact => "responses/compact",
            Operation::ListModels => "models",
            Operation::Messages => "messages",
            Operation::CountTokens => "messages/count_tokens",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat",
            Operation::Completions => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
            Operation::ResponsesCompact => "responses_compact",
            Operation::ListModels => "models",
            Operation::Messages => "messages",
            Operation::CountTokens => "count_tokens",
        }
    }
}

pub const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Parses the body as JSON, whatever `content-type` claimed: a text/plain label is no way
/// around the filter.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "The request body is empty; expected a JSON object.",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::invalid_request(
            "invalid_json",
            format!(
                "The request body is not valid JSON: {}",
                crate::error::truncate_chars(&err.to_string(), 200)
            ),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid_request(
            "invalid_body",
            "The request body must be a JSON object.",
        ));
    }
    Ok(value)
}

/// What an embeddings `input` is, if it is one of the API's shapes: a string, an array of
/// strings (text), or an array of token ids or of token arrays (not text). An empty array
/// is left to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsInput {
    Text,
    Tokens,
}

pub fn embeddings_input_shape(input: &Value) -> Option<EmbeddingsInput> {
    let is_token = |item: &Value| item.is_u64() || item.is_i64();
    match input {
        Value::String(_) => Some(EmbeddingsInput::Text),
        Value::Array(items) if items.iter().all(Value::is_string) => Some(EmbeddingsInput::Text),
        Value::Array(items) if items.iter().all(is_token) => Some(EmbeddingsInput::Tokens),
        Value::Array(items)
            if items.iter().all(|item| {
                item.as_array()
                    .is_some_and(|tokens| tokens.iter().all(is_token))
            }) =>
        {
            Some(EmbeddingsInput::Tokens)
        }
        _ => None,
    }
}

/// Content part types whose text field guards read, and that field.
pub const TEXT_PARTS: [(&str, &str); 2] = [("text", "text"), ("refusal", "refusal")];
#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::{operation_for_path, validate};
    use serde_json::json;

    #[test]
    fn operations_from_paths() {
        assert_eq!(
            operation_for_path("/v1/chat/completions"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            operation_for_path("/v1/chat/completions?x=1"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            operation_for_path("/openai/v1/completions"),
            Some(Operation::Completions)
        );
        assert_eq!(
            operation_for_path("/v1/embeddings"),
            Some(Operation::Embeddings)
        );
        assert_eq!(
            operation_for_path("/v1/models"),
            Some(Operation::ListModels)
        );
        assert_eq!(operation_for_path("/v1/files"), None);
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth_and_in_any_spelling() {
        assert!(!crate::json_view::has_duplicate_keys(
            br#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#
        ));
        assert!(crate::json_view::has_duplicate_keys(br#"{"a":1,"a":2}"#));
        assert!(crate::json_view::has_duplicate_keys(
            br#"{"m":[{"x":{"k":1,"\u006b":2}}]}"#
        ));
        assert!(crate::json_view::has_duplicate_keys(
            br#"{"s":"{\"a\":1,\"a\":2}","t":{"u":1,"u":1}}"#
        ));
        assert!(!crate::json_view::has_duplicate_keys(
            br#"{"s":"{\"a\":1,\"a\":2}"}"#
        ));
        assert!(!crate::json_view::has_duplicate_keys(b"not json"));
    }

    #[test]
    fn parse_rejects_non_objects() {
        assert_eq!(parse_body(b"").unwrap_err().code, "invalid_json");
        assert_eq!(parse_body(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(parse_body(b"[1]").unwrap_err().code, "invalid_body");
        assert!(parse_body(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn validates_messages() {
        let ok = json!({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":[{"type":"text","text":"x"}]}]});
        assert!(validate(Operation::ChatCompletions, &ok).is_ok());
        for (body, needle) in [
            (json!({"model":"m"}), "messages"),
            (json!({"messages":"hi"}), "messages"),
            (json!({"messages":[]}), "messages"),
            (json!({"messages":[1]}), "messages[0]"),
            (json!({"messages":[{"content":"x"}]}), "messages[0].role"),
            (
                json!({"messages":[{"role":"wizard","content":"x"}]}),
                "messages[0].role",
            ),
            (json!({"messages":[{"role":"user"}]}), "messages[0].content"),
            (
                json!({"messages":[{"role":"user","content":5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages":[{"role":"user","content":[{"text":"x"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model":5,"messages":[{"role":"user","content":"x"}]}),
                "model",
            ),
            (
                json!({"stream":"yes","messages":[{"role":"user","content":"x"}]}),
                "stream",
            ),
        ] {
            let err = validate(Operation::ChatCompletions, &body).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.contains(needle),
                "{} should name {needle}",
                err.message
            );
        }
    }

    #[test]
    fn validates_legacy_and_embeddings() {
        assert!(validate(Operation::Completions, &json!({"prompt":"x"})).is_ok());
        assert!(validate(Operation::Completions, &json!({"prompt":5})).is_err());
        assert!(validate(Operation::Embeddings, &json!({"input":["a"]})).is_ok());
        assert!(validate(Operation::Embeddings, &json!({})).is_err());
        for ok in [
            json!("a"),
            json!(["a", "b"]),
            json!([1, 2]),
            json!([[1], [2, 3]]),
        ] {
            assert!(validate(Operation::Embeddings, &json!({"input": ok})).is_ok());
        }
        for bad in [
            json!([["a"]]),
            json!(["a", 1]),
            json!([[1, "a"]]),
            json!({"a": 1}),
        ] {
            let err = validate(Operation::Embeddings, &json!({"input": bad})).unwrap_err();
            assert!(err.message.contains("'input'"), "{}", err.message);
        }
    }

    #[test]
    fn text_in_shapes_that_are_not_the_apis_is_refused() {
        for (message, needle) in [
            (
                json!({"role": "user", "content": [{"type": "text", "text": 5}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"role": "user", "content": [{"type": "text"}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"role": "assistant", "content": [{"type": "refusal", "refusal": ["no"]}]}),
                "messages[0].content[0].refusal",
            ),
            (
                json!({"role": "assistant", "content": "x", "refusal": {"r": "no"}}),
                "messages[0].refusal",
            ),
            (
                json!({"role": "assistant", "content": null, "tool_calls": {"function": {"arguments": "x"}}}),
                "messages[0].tool_calls",
            ),
            (
                json!({"role": "assistant", "content": null, "tool_calls": ["x"]}),
                "messages[0].tool_calls[0]",
            ),
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{"function": "x"}]}),
                "messages[0].tool_calls[0].function",
            ),
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{"function": {"arguments": {"a": 1}}}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"role": "assistant", "content": null, "function_call": {"arguments": 5}}),
                "messages[0].function_call.arguments",
            ),
        ] {
            let err =
                validate(Operation::ChatCompletions, &json!({"messages": [message]})).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.contains(&format!("'{needle}'")),
                "{} should name {needle}",
                err.message
            );
        }
    }
}
