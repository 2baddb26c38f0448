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
    /// `GET .../models`: answered by the filter from the route's config.
    ListModels,
}

impl Operation {
    /// Recognises the operation from the client's `:path` (query ignored).
    pub fn from_path(path: &str) -> Option<Operation> {
        let path = path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Operation::ChatCompletions)
        } else if path.ends_with("/completions") {
            Some(Operation::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Operation::Embeddings)
        } else if path.ends_with("/models") {
            Some(Operation::ListModels)
        } else {
            None
        }
    }

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
            Operation::ListModels => "models",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat",
            Operation::Completions => "text_completion",
            Operation::Embeddings => "embeddings",
            Operation::ListModels => "models",
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

/// Checks the fields the filter relies on; the provider checks the rest.
pub fn validate(operation: Operation, body: &Value) -> Result<(), ApiError> {
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
    match operation {
        Operation::ChatCompletions => validate_messages(object.get("messages")),
        Operation::Completions => match object.get("prompt") {
            Some(Value::String(_)) => Ok(()),
            Some(Value::Array(items))
                if items.iter().all(Value::is_string) && !items.is_empty() =>
            {
                Ok(())
            }
            Some(_) => Err(invalid_param(
                "prompt",
                "must be a string or a non-empty array of strings",
            )),
            None => Err(missing_param("prompt")),
        },
        Operation::Embeddings => match object.get("input") {
            Some(input) if embeddings_input_shape(input).is_some() => Ok(()),
            Some(_) => Err(invalid_param(
                "input",
                "must be a string, an array of strings, an array of integers (tokens) or an \
                 array of arrays of integers",
            )),
            None => Err(missing_param("input")),
        },
        Operation::ListModels => Ok(()),
    }
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

/// A message's `tool_calls` (null or an array of objects whose `function` is an object with
/// string `arguments`) and legacy `function_call` (null or such an object): anything else
/// would carry text past the guards.
fn validate_calls(message: &serde_json::Map<String, Value>, index: usize) -> Result<(), ApiError> {
    let function = |function: &Value, at: &str| -> Result<(), ApiError> {
        let Some(function) = function.as_object() else {
            return Err(invalid_param(at, "must be an object"));
        };
        match function.get("arguments") {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => Err(invalid_param(
                &format!("{at}.arguments"),
                "must be a string (JSON text)",
            )),
        }
    };
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (call_index, call) in calls.iter().enumerate() {
                let at = format!("messages[{index}].tool_calls[{call_index}]");
                let Some(call) = call.as_object() else {
                    return Err(invalid_param(&at, "must be an object"));
                };
                match call.get("function") {
                    None | Some(Value::Null) => {}
                    Some(value) => function(value, &format!("{at}.function"))?,
                }
            }
        }
        Some(_) => {
            return Err(invalid_param(
                &format!("messages[{index}].tool_calls"),
                "must be an array",
            ))
        }
    }
    match message.get("function_call") {
        None | Some(Value::Null) => Ok(()),
        Some(value) => function(value, &format!("messages[{index}].function_call")),
    }
}

fn validate_messages(messages: Option<&Value>) -> Result<(), ApiError> {
    let Some(messages) = messages else {
        return Err(missing_param("messages"));
    };
    let Some(messages) = messages.as_array() else {
        return Err(invalid_param("messages", "must be an array"));
    };
    if messages.is_empty() {
        return Err(invalid_param(
            "messages",
            "must contain at least one message",
        ));
    }
    for (index, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(invalid_param(
                &format!("messages[{index}]"),
                "must be an object",
            ));
        };
        match message.get("role").and_then(Value::as_str) {
            Some(role) if ROLES.contains(&role) => {}
            Some(role) => {
                return Err(invalid_param(
                    &format!("messages[{index}].role"),
                    &format!("{role:?} is not one of {}", ROLES.join(", ")),
                ))
            }
            None => return Err(missing_param(&format!("messages[{index}].role"))),
        }
        validate_calls(message, index)?;
        match message.get("refusal") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => {
                return Err(invalid_param(
                    &format!("messages[{index}].refusal"),
                    "must be a string or null",
                ))
            }
        }
        match message.get("content") {
            None | Some(Value::Null) => {
                let has_tool_calls = message.get("tool_calls").is_some_and(Value::is_array)
                    || message.get("function_call").is_some_and(Value::is_object);
                if !has_tool_calls {
                    return Err(missing_param(&format!("messages[{index}].content")));
                }
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (part_index, part) in parts.iter().enumerate() {
                    let at = format!("messages[{index}].content[{part_index}]");
                    let Some(kind) = part.get("type").and_then(Value::as_str) else {
                        return Err(invalid_param(&at, "must be an object with a \"type\""));
                    };
                    if let Some((_, field)) = TEXT_PARTS.iter().find(|(k, _)| *k == kind) {
                        if !part.get(field).is_some_and(Value::is_string) {
                            return Err(invalid_param(
                                &format!("{at}.{field}"),
                                "must be a string",
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(invalid_param(
                    &format!("messages[{index}].content"),
                    "must be a string, an array of content parts, or null",
                ))
            }
        }
    }
    Ok(())
}

fn missing_param(name: &str) -> ApiError {
    ApiError::invalid_request(
        "missing_required_parameter",
        format!("Missing required parameter: '{name}'."),
    )
}

fn invalid_param(name: &str, why: &str) -> ApiError {
    ApiError::invalid_request(
        "invalid_value",
        format!("Invalid parameter '{name}': {why}."),
    )
}

pub fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

pub fn wants_stream_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_from_paths() {
        assert_eq!(
            Operation::from_path("/v1/chat/completions"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            Operation::from_path("/v1/chat/completions?x=1"),
            Some(Operation::ChatCompletions)
        );
        assert_eq!(
            Operation::from_path("/openai/v1/completions"),
            Some(Operation::Completions)
        );
        assert_eq!(
            Operation::from_path("/v1/embeddings"),
            Some(Operation::Embeddings)
        );
        assert_eq!(
            Operation::from_path("/v1/models"),
            Some(Operation::ListModels)
        );
        assert_eq!(Operation::from_path("/v1/files"), None);
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
