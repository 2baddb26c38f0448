//! Where the texts of a Responses request and answer are, item type by item type, and the
//! checks that keep text from passing the guards in a shape they do not read.
//!
//! Every item type of the current API is listed in [`ITEM_TEXTS`] with the paths of its
//! texts; an item type not listed (a newer one) has every string visited except the
//! structural members of [`NOT_TEXT`], so no text passes unread. `reasoning` items' opaque
//! `encrypted_content` is never read nor edited (nor is a `compaction` item's).

use serde_json::Value;

use super::super::openai::{invalid_param, missing_param};
use crate::error::ApiError;
use crate::guards::text::Visitor;

/// A path's leaf: a string (or null), or content (a string or an array of content parts).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Text,
    Content,
}

/// Paths of texts per item type. A segment ending in `[]` is an array (each element), `*`
/// is every value of an object.
#[allow(clippy::type_complexity)]
const ITEM_TEXTS: &[(&str, &[(&str, Leaf)])] = &[
    ("message", &[("content", Leaf::Content)]),
    ("function_call", &[("arguments", Leaf::Text)]),
    ("function_call_output", &[("output", Leaf::Content)]),
    ("custom_tool_call", &[("input", Leaf::Text)]),
    ("custom_tool_call_output", &[("output", Leaf::Content)]),
    (
        "local_shell_call",
        &[
            ("action.command[]", Leaf::Text),
            ("action.env.*", Leaf::Text),
            ("action.working_directory", Leaf::Text),
            ("action.user", Leaf::Text),
        ],
    ),
    ("local_shell_call_output", &[("output", Leaf::Text)]),
    ("shell_call", &[("action.commands[]", Leaf::Text)]),
    (
        "shell_call_output",
        &[
            ("output[].stdout", Leaf::Text),
            ("output[].stderr", Leaf::Text),
        ],
    ),
    (
        "apply_patch_call",
        &[
            ("operation.path", Leaf::Text),
            ("operation.diff", Leaf::Text),
        ],
    ),
    ("apply_patch_call_output", &[("output", Leaf::Text)]),
    (
        "reasoning",
        &[
            ("summary[].text", Leaf::Text),
            ("content[].text", Leaf::Text),
        ],
    ),
    (
        "file_search_call",
        &[("queries[]", Leaf::Text), ("results[].text", Leaf::Text)],
    ),
    (
        "web_search_call",
        &[
            ("action.query", Leaf::Text),
            ("action.queries[]", Leaf::Text),
        ],
    ),
    ("computer_call", &[("action.text", Leaf::Text)]),
    // A screenshot (image URL or file id): no text.
    ("computer_call_output", &[]),
    (
        "code_interpreter_call",
        &[("code", Leaf::Text), ("outputs[].logs", Leaf::Text)],
    ),
    // `result` is the base64 image.
    ("image_generation_call", &[]),
    (
        "mcp_list_tools",
        &[("tools[].description", Leaf::Text), ("error", Leaf::Text)],
    ),
    ("mcp_approval_request", &[("arguments", Leaf::Text)]),
    ("mcp_approval_response", &[("reason", Leaf::Text)]),
    (
        "mcp_call",
        &[
            ("arguments", Leaf::Text),
            ("output", Leaf::Text),
            ("error", Leaf::Text),
        ],
    ),
    // A reference to a stored item (server-side state): no text in the request.
    ("item_reference", &[]),
    // Opaque (`encrypted_content`).
    ("compaction", &[]),
];

/// Members of an unknown item that are never text (ids, enums, opaque blobs).
const NOT_TEXT: [&str; 10] = [
    "type",
    "id",
    "call_id",
    "item_id",
    "status",
    "role",
    "encrypted_content",
    "name",
    "server_label",
    "approval_request_id",
];

/// Content part types whose text the guards read, and its member.
const TEXT_PARTS: [(&str, &str); 5] = [
    ("input_text", "text"),
    ("output_text", "text"),
    ("text", "text"),
    ("refusal", "refusal"),
    ("summary_text", "text"),
];

/// Content parts that carry no text the gateway can read (images, files, audio).
const OPAQUE_PARTS: [&str; 3] = ["input_image", "input_file", "input_audio"];

const ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];

/// The type of an input item: its `type`, or `message` for the short form (`role` and
/// `content`, no `type`).
fn item_type(item: &Value) -> Option<&str> {
    match item.get("type") {
        Some(Value::String(kind)) => Some(kind),
        None if item.get("role").is_some() => Some("message"),
        _ => None,
    }
}

// ------------------------------------------------------------------ validation

/// The request members whose text the guards read: `instructions`, `input`,
/// `prompt.variables`.
pub fn validate_request(body: &Value) -> Result<(), ApiError> {
    match body.get("instructions") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(invalid_param("instructions", "must be a string")),
    }
    match body.get("input") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                validate_item(item, &format!("input[{index}]"))?;
            }
        }
        Some(_) => {
            return Err(invalid_param(
                "input",
                "must be a string or an array of input items",
            ))
        }
    }
    if let Some(prompt) = body.get("prompt").filter(|p| !p.is_null()) {
        let Some(prompt) = prompt.as_object() else {
            return Err(invalid_param("prompt", "must be an object"));
        };
        match prompt.get("variables") {
            None | Some(Value::Null) => {}
            Some(Value::Object(variables)) => {
                for (name, value) in variables {
                    let at = format!("prompt.variables.{name}");
                    match value {
                        Value::String(_) => {}
                        Value::Object(_) => validate_part(value, &at)?,
                        _ => {
                            return Err(invalid_param(
                                &at,
                                "must be a string or an input content part",
                            ))
                        }
                    }
                }
            }
            Some(_) => return Err(invalid_param("prompt.variables", "must be an object")),
        }
    }
    Ok(())
}

fn validate_item(item: &Value, at: &str) -> Result<(), ApiError> {
    if !item.is_object() {
        return Err(invalid_param(at, "must be an object"));
    }
    let Some(kind) = item_type(item) else {
        return match item.get("type") {
            None => Err(missing_param(&format!("{at}.type"))),
            Some(_) => Err(invalid_param(&format!("{at}.type"), "must be a string")),
        };
    };
    if kind == "message" {
        match item.get("role").and_then(Value::as_str) {
            Some(role) if ROLES.contains(&role) => {}
            Some(role) => {
                return Err(invalid_param(
                    &format!("{at}.role"),
                    &format!("{role:?} is not one of {}", ROLES.join(", ")),
                ))
            }
            None => return Err(missing_param(&format!("{at}.role"))),
        }
        if item.get("content").is_none() {
            return Err(missing_param(&format!("{at}.content")));
        }
    }
    match paths_of(kind) {
        Some(paths) => {
            for (path, leaf) in paths {
                let mut problem = None;
                walk_ref(item, path, at, &mut |value, where_| {
                    if problem.is_none() {
                        problem = match value {
                            Some(value) => check_leaf(value, *leaf, where_).err(),
                            None => Some(invalid_param(where_, "must be an array")),
                        };
                    }
                });
                if let Some(error) = problem {
                    return Err(error);
                }
            }
            Ok(())
        }
        None => Ok(()), // every string of an unknown item is visited
    }
}

fn check_leaf(value: &Value, leaf: Leaf, at: &str) -> Result<(), ApiError> {
    match (value, leaf) {
        (Value::Null | Value::String(_), _) => Ok(()),
        (Value::Array(parts), Leaf::Content) => {
            for (index, part) in parts.iter().enumerate() {
                validate_part(part, &format!("{at}[{index}]"))?;
            }
            Ok(())
        }
        (_, Leaf::Content) => Err(invalid_param(
            at,
            "must be a string or an array of content parts",
        )),
        (_, Leaf::Text) => Err(invalid_param(at, "must be a string")),
    }
}

fn validate_part(part: &Value, at: &str) -> Result<(), ApiError> {
    let Some(kind) = part.get("type").and_then(Value::as_str) else {
        return Err(invalid_param(at, "must be an object with a \"type\""));
    };
    if let Some((_, field)) = TEXT_PARTS.iter().find(|(k, _)| *k == kind) {
        if !part.get(field).is_some_and(Value::is_string) {
            return Err(invalid_param(&format!("{at}.{field}"), "must be a string"));
        }
    }
    Ok(())
}

fn paths_of(kind: &str) -> Option<&'static [(&'static str, Leaf)]> {
    ITEM_TEXTS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, paths)| *paths)
}

/// Calls `at_leaf` on each value `path` reaches in `value` (read only), with its location;
/// with None where the path has an array and the value something else.
fn walk_ref(value: &Value, path: &str, at: &str, at_leaf: &mut dyn FnMut(Option<&Value>, &str)) {
    let (segment, rest) = match path.split_once('.') {
        Some((segment, rest)) => (segment, Some(rest)),
        None => (path, None),
    };
    let next =
        |child: &Value, where_: String, at_leaf: &mut dyn FnMut(Option<&Value>, &str)| match rest {
            Some(rest) => walk_ref(child, rest, &where_, at_leaf),
            None => at_leaf(Some(child), &where_),
        };
    if segment == "*" {
        if let Some(object) = value.as_object() {
            for (key, child) in object {
                next(child, format!("{at}.{key}"), at_leaf);
            }
        }
    } else if let Some(key) = segment.strip_suffix("[]") {
        match value.get(key) {
            Some(Value::Array(items)) => {
                for (index, child) in items.iter().enumerate() {
                    next(child, format!("{at}.{key}[{index}]"), at_leaf);
                }
            }
            None | Some(Value::Null) => {}
            // Not an array where the API has one: text could hide in it.
            Some(_) => at_leaf(None, &format!("{at}.{key}")),
        }
    } else if let Some(child) = value.get(segment) {
        next(child, format!("{at}.{segment}"), at_leaf);
    }
}

// ------------------------------------------------------------------ visiting

/// Every text of a Responses request: `instructions`, `input`, `prompt.variables`.
pub fn visit_request(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    if let Some(Value::String(text)) = body.get_mut("instructions") {
        changed |= visit(text);
    }
    match body.get_mut("input") {
        Some(Value::String(text)) => changed |= visit(text),
        Some(Value::Array(items)) => {
            for item in items {
                changed |= visit_item(item, visit);
            }
        }
        _ => {}
    }
    if let Some(variables) = body
        .get_mut("prompt")
        .and_then(|p| p.get_mut("variables"))
        .and_then(Value::as_object_mut)
    {
        for value in variables.values_mut() {
            match value {
                Value::String(text) => changed |= visit(text),
                part => changed |= visit_part(part, visit),
            }
        }
    }
    changed
}

/// Every text of a Responses answer (the `response` object): its `output` items.
pub fn visit_answer(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    if let Some(items) = body.get_mut("output").and_then(Value::as_array_mut) {
        for item in items {
            changed |= visit_item(item, visit);
        }
    }
    changed
}

/// Every text of one item (input or output).
pub fn visit_item(item: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let kind = item_type(item).map(str::to_string);
    match kind.as_deref().and_then(paths_of) {
        Some(paths) => {
            let mut changed = false;
            for (path, leaf) in paths {
                walk_mut(item, path, &mut |value| match (value, leaf) {
                    (Value::String(text), _) => changed |= visit(text),
                    (Value::Array(parts), Leaf::Content) => {
                        for part in parts {
                            changed |= visit_part(part, visit);
                        }
                    }
                    // Not the API's shape (validation refuses it in requests; an answer
                    // may still carry it): whatever strings it holds are read.
                    (other, _) => changed |= visit_all_strings(other, visit),
                });
            }
            changed
        }
        None => visit_all_strings(item, visit),
    }
}

/// The text of one content part. An `output_text` part whose text changed loses its
/// `logprobs` (they carry the original tokens). Unknown part types have every string read.
pub fn visit_part(part: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    if OPAQUE_PARTS.contains(&kind) {
        return false;
    }
    let Some((_, field)) = TEXT_PARTS.iter().find(|(k, _)| *k == kind) else {
        return visit_all_strings(part, visit);
    };
    let changed = match part.get_mut(*field) {
        Some(Value::String(text)) => visit(text),
        _ => false,
    };
    if changed {
        if let Some(logprobs) = part.get_mut("logprobs") {
            *logprobs = Value::Array(Vec::new());
        }
    }
    changed
}

/// Every string in `value` at any depth, except the members of [`NOT_TEXT`].
fn visit_all_strings(value: &mut Value, visit: &mut Visitor<'_>) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= visit_all_strings(item, visit);
            }
            changed
        }
        Value::Object(object) => {
            let mut changed = false;
            for (key, child) in object.iter_mut() {
                if !NOT_TEXT.contains(&key.as_str()) {
                    changed |= visit_all_strings(child, visit);
                }
            }
            changed
        }
        _ => false,
    }
}

fn walk_mut(value: &mut Value, path: &str, at_leaf: &mut dyn FnMut(&mut Value)) {
    let (segment, rest) = match path.split_once('.') {
        Some((segment, rest)) => (segment, Some(rest)),
        None => (path, None),
    };
    let mut next = |child: &mut Value| match rest {
        Some(rest) => walk_mut(child, rest, at_leaf),
        None => at_leaf(child),
    };
    if segment == "*" {
        if let Some(object) = value.as_object_mut() {
            for child in object.values_mut() {
                next(child);
            }
        }
    } else if let Some(key) = segment.strip_suffix("[]") {
        match value.get_mut(key) {
            Some(Value::Array(items)) => {
                for child in items {
                    next(child);
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => at_leaf(other),
        }
    } else if let Some(child) = value.get_mut(segment) {
        next(child);
    }
}
