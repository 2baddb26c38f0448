//! Every text of a Messages request and answer, for the guards.
//!
//! Request: `system` (a string or text blocks) and every message's content (a string or
//! blocks). Answer: the message's content blocks. Per block:
//! - `text`: its `text` (and its citations' `cited_text`, `title`);
//! - `tool_use`, `server_tool_use`, `mcp_tool_use`: every string in `input`, keys included
//!   (the tool reads them), at any depth;
//! - `tool_result`: `content` as a string or blocks (each walked as a block);
//! - `document`: a text source's `data`, a content source's blocks, `title`, `context`;
//! - `search_result`: its text blocks, `title`, `source`;
//! - `thinking`: read (a reject or callout guard sees it) but never edited: the block's
//!   `signature` covers the text, and Anthropic refuses an edited one;
//! - `redacted_thinking` (`data` is opaque), base64 sources (`data`): not text;
//! - any other block: every string it carries but ids, types, signatures and encrypted
//!   fields, so a new block type is guarded without the gateway knowing it.

use serde_json::{Map, Value};

use crate::guards::text::Visitor;

/// Members that are never text: ids, types and opaque or encrypted data.
const NOT_TEXT: [&str; 10] = [
    "type",
    "id",
    "tool_use_id",
    "signature",
    "encrypted_content",
    "encrypted_index",
    "media_type",
    "cache_control",
    "file_id",
    "name",
];

pub fn visit_request(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    match body.get_mut("system") {
        Some(Value::String(text)) => changed |= visit(text),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                changed |= visit_block(block, visit);
            }
        }
        _ => {}
    }
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        for message in messages {
            changed |= visit_content(message.get_mut("content"), visit);
        }
    }
    changed
}

/// The texts of a Message answer (`content` blocks).
pub fn visit_answer(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    visit_content(body.get_mut("content"), visit)
}

/// A `content`: a string or an array of blocks.
pub fn visit_content(content: Option<&mut Value>, visit: &mut Visitor<'_>) -> bool {
    match content {
        Some(Value::String(text)) => visit(text),
        Some(Value::Array(blocks)) => {
            let mut changed = false;
            for block in blocks {
                changed |= visit_block(block, visit);
            }
            changed
        }
        _ => false,
    }
}

pub fn visit_block(block: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let Some(object) = block.as_object_mut() else {
        return false;
    };
    match object.get("type").and_then(Value::as_str) {
        Some("thinking") => {
            if let Some(Value::String(thinking)) = object.get("thinking") {
                read_only(thinking, visit);
            }
            false
        }
        Some("redacted_thinking") => false,
        Some("tool_use" | "server_tool_use" | "mcp_tool_use") => {
            let mut changed = false;
            for (key, value) in object.iter_mut() {
                if key == "input" {
                    changed |= visit_json(value, visit);
                } else if !NOT_TEXT.contains(&key.as_str()) {
                    changed |= visit_fields(value, visit);
                }
            }
            changed
        }
        Some("tool_result" | "mcp_tool_result") => {
            let mut changed = false;
            for (key, value) in object.iter_mut() {
                if key == "content" {
                    changed |= visit_content(Some(value), visit);
                } else if !NOT_TEXT.contains(&key.as_str()) {
                    changed |= visit_fields(value, visit);
                }
            }
            changed
        }
        _ => visit_object(object, visit),
    }
}

/// A thinking text: the visitor reads a copy, so a reject guard sees it and nothing changes.
fn read_only(text: &str, visit: &mut Visitor<'_>) {
    let mut copy = text.to_string();
    visit(&mut copy);
}

/// Every string under `value` but `NOT_TEXT` members and base64 sources' `data`; nested
/// blocks (a document's content source) are walked as blocks.
fn visit_fields(value: &mut Value, visit: &mut Visitor<'_>) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= if item.get("type").is_some_and(Value::is_string) {
                    visit_block(item, visit)
                } else {
                    visit_fields(item, visit)
                };
            }
            changed
        }
        Value::Object(object) => visit_object(object, visit),
        _ => false,
    }
}

fn visit_object(object: &mut Map<String, Value>, visit: &mut Visitor<'_>) -> bool {
    let opaque_data = matches!(
        object.get("type").and_then(Value::as_str),
        Some("base64" | "redacted_thinking")
    );
    let mut changed = false;
    for (key, value) in object.iter_mut() {
        if NOT_TEXT.contains(&key.as_str()) || (opaque_data && key == "data") {
            continue;
        }
        changed |= visit_fields(value, visit);
    }
    changed
}

/// Arbitrary JSON a tool reads (`tool_use.input`): every string, and every key.
pub fn visit_json(value: &mut Value, visit: &mut Visitor<'_>) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= visit_json(item, visit);
            }
            changed
        }
        Value::Object(object) => {
            let mut changed = false;
            let entries = std::mem::take(object);
            for (mut key, mut item) in entries {
                changed |= visit(&mut key);
                changed |= visit_json(&mut item, visit);
                object.insert(key, item);
            }
            changed
        }
        _ => false,
    }
}
