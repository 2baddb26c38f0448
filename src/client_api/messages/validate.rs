//! The Messages fields the gateway relies on. Errors name the field in Anthropic's dotted
//! form (`messages.0.content.1.type`); the provider checks everything else.
//!
//! Texts: every block's strings are visited (`text.rs`), so a block type the gateway does
//! not know is walked, not refused; what is refused is a shape where a text could hide from
//! the walk: a content that is neither a string nor an array of typed blocks, a `system`
//! that is not a string or text blocks, a text block whose `text` is not a string.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// `system` turns carry instructions among the messages: Claude Code 2.1 sends its
/// environment description as one (a string or text blocks, walked like any content).
pub const ROLES: [&str; 3] = ["user", "assistant", "system"];

fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::invalid_request("invalid_value", format!("{field}: {why}"))
}

fn missing(field: &str) -> ApiError {
    ApiError::invalid_request(
        "missing_required_parameter",
        format!("{field}: Field required"),
    )
}

/// Checks a `/messages` (`create`, with `max_tokens`) or `/messages/count_tokens` body.
pub fn request(body: &Value, create: bool) -> Result<(), ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid_request(
            "invalid_body",
            "The request body must be a JSON object.",
        ));
    };
    if let Some(model) = object.get("model") {
        if !model.is_string() {
            return Err(invalid("model", "Input should be a valid string"));
        }
    }
    match object.get("stream") {
        None => {}
        Some(_) if !create => return Err(invalid("stream", "Extra inputs are not permitted")),
        Some(Value::Bool(_) | Value::Null) => {}
        Some(_) => return Err(invalid("stream", "Input should be a valid boolean")),
    }
    if create {
        match object.get("max_tokens") {
            None => return Err(missing("max_tokens")),
            Some(value) if value.as_u64().is_some_and(|n| n > 0) => {}
            Some(_) => return Err(invalid("max_tokens", "Input should be a positive integer")),
        }
    }
    if let Some(system) = object.get("system") {
        system_field(system)?;
    }
    let Some(messages) = object.get("messages") else {
        return Err(missing("messages"));
    };
    let Some(messages) = messages.as_array() else {
        return Err(invalid("messages", "Input should be a valid list"));
    };
    if messages.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    for (index, message) in messages.iter().enumerate() {
        message_field(message, index)?;
    }
    Ok(())
}

/// `system`: a string, or an array of `{"type":"text","text":"..."}` blocks.
fn system_field(system: &Value) -> Result<(), ApiError> {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => {
            for (index, block) in blocks.iter().enumerate() {
                let at = format!("system.{index}");
                let Some(block) = block.as_object() else {
                    return Err(invalid(&at, "Input should be a text block object"));
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {}
                    Some(_) => {
                        return Err(invalid(&format!("{at}.type"), "Input should be 'text'"))
                    }
                    None => return Err(missing(&format!("{at}.type"))),
                }
                text_of(block, &at)?;
            }
            Ok(())
        }
        _ => Err(invalid(
            "system",
            "Input should be a valid string or a list of text blocks",
        )),
    }
}

fn message_field(message: &Value, index: usize) -> Result<(), ApiError> {
    let at = format!("messages.{index}");
    let Some(message) = message.as_object() else {
        return Err(invalid(&at, "Input should be a valid message object"));
    };
    match message.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
        Some(_) => {
            return Err(invalid(
                &format!("{at}.role"),
                "Input should be 'user', 'assistant' or 'system'",
            ))
        }
        None => return Err(missing(&format!("{at}.role"))),
    }
    match message.get("content") {
        None => Err(missing(&format!("{at}.content"))),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (block_index, block) in blocks.iter().enumerate() {
                block_field(block, &format!("{at}.content.{block_index}"))?;
            }
            Ok(())
        }
        Some(_) => Err(invalid(
            &format!("{at}.content"),
            "Input should be a valid string or a list of content blocks",
        )),
    }
}

/// A content block: an object with a string `type`; the block types whose text the
/// visitors read by name must have it where they read it.
fn block_field(block: &Value, at: &str) -> Result<(), ApiError> {
    let Some(object) = block.as_object() else {
        return Err(invalid(at, "Input should be a content block object"));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.type"),
                "Input should be a valid string",
            ))
        }
        None => return Err(missing(&format!("{at}.type"))),
    };
    match kind {
        "text" => text_of(object, at),
        "thinking" => match object.get("thinking") {
            Some(Value::String(_)) => Ok(()),
            _ => Err(invalid(
                &format!("{at}.thinking"),
                "Input should be a valid string",
            )),
        },
        "tool_result" => match object.get("content") {
            None | Some(Value::Null | Value::String(_)) => Ok(()),
            Some(Value::Array(blocks)) => {
                for (index, block) in blocks.iter().enumerate() {
                    block_field(block, &format!("{at}.content.{index}"))?;
                }
                Ok(())
            }
            Some(_) => Err(invalid(
                &format!("{at}.content"),
                "Input should be a valid string or a list of content blocks",
            )),
        },
        "tool_use" | "server_tool_use" => match object.get("input") {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(invalid(
                &format!("{at}.input"),
                "Input should be a valid dictionary",
            )),
        },
        "search_result" => match object.get("content") {
            None => Ok(()),
            Some(Value::Array(blocks)) => {
                for (index, block) in blocks.iter().enumerate() {
                    let at = format!("{at}.content.{index}");
                    let Some(block) = block.as_object() else {
                        return Err(invalid(&at, "Input should be a text block object"));
                    };
                    text_of(block, &at)?;
                }
                Ok(())
            }
            Some(_) => Err(invalid(
                &format!("{at}.content"),
                "Input should be a valid list",
            )),
        },
        _ => Ok(()),
    }
}

fn text_of(block: &Map<String, Value>, at: &str) -> Result<(), ApiError> {
    match block.get("text") {
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(invalid(
            &format!("{at}.text"),
            "Input should be a valid string",
        )),
        None => Err(missing(&format!("{at}.text"))),
    }
}
