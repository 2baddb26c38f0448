//! OpenAI chat completions (`POST .../chat/completions`): `messages` in, a
//! `chat.completion` (or its chunks) out. Every provider's codec translates it.

use serde_json::Value;

use super::openai::{self, invalid_param, missing_param};
use super::{ClientApi, Translation};
use crate::api::{Operation, ROLES, TEXT_PARTS};
use crate::error::ApiError;
use crate::guards::text::Visitor;
use crate::pipeline::in_place;
use crate::providers::Codec;
use crate::usage::Usage;

pub struct Chat;

impl ClientApi for Chat {
    fn operation(&self) -> Operation {
        Operation::ChatCompletions
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/chat/completions")
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        validate_messages(body.get("messages"))
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        openai::visit_request_texts(body, visit)
    }

    fn read_request<'a>(&self, body: &'a str) -> Option<in_place::Request<'a>> {
        in_place::read_request(body, |view, texts| {
            in_place::read_messages(body, view, texts)
        })
    }

    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        openai::visit_answer_texts(body, visit)
    }

    fn read_answer<'a>(&self, body: &'a str) -> Option<in_place::Answer<'a>> {
        openai::read_answer(body)
    }

    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        openai::usage_from_json(body)
    }

    fn usage_from_json_tail(&self, tail: &[u8]) -> Option<Usage> {
        openai::usage_from_json_tail(tail)
    }

    fn usage_from_event(&self, data: &str) -> Option<Usage> {
        openai::usage_from_event(data)
    }

    fn translation(&self, _codec: &dyn Codec) -> Option<Translation> {
        Some(Translation::Codec)
    }
}

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
