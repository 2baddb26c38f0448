//! Responses streams: the regex guard's masker over `response.*` events, and a whole
//! `response` object as the events a streaming client expects.
//!
//! Masking. Text arrives in `*.delta` events (output text, refusals, function-call
//! arguments, custom tool input, reasoning text and summaries, MCP arguments, interpreter
//! code), one channel per (kind, `output_index`, `content_index`/`summary_index`), held back
//! with `guards::stream_mask::Holdback` so a hit split across deltas is masked whole. The
//! last delta event is itself held until the next event arrives: when that event ends the
//! channel (its `.done`, `response.content_part.done`, `response.output_item.done`,
//! `response.completed` ...), the held tail goes into that delta, and no event is added.
//! Only when a channel ends after another event came between is a delta event added; from
//! then on every `sequence_number` is shifted so they stay strictly increasing. Every event
//! that repeats a text (`.done`, `content_part.*`, `output_item.*`, `response.*` with its
//! `output`) has that text masked the same way (a whole text masks as its deltas did).
//! `encrypted_content` is never read or changed.

use std::rc::Rc;

use serde_json::{json, Value};

use super::items;
use crate::error::ApiError;
use crate::guards::regex_guard::RegexGuard;
use crate::guards::stream_mask::{
    guard_failed, unreadable_event, Holdback, Overflow, Released, StreamGuard,
};
use crate::host::Host;
use crate::pipeline::stage::EventFilter;
use crate::sse::SseEvent;

/// The streamed texts: event type prefix (`<prefix>.delta`, `<prefix>.done`), the member of
/// the `.done` event that repeats the whole text, and the index within the output item.
const KINDS: [(&str, &str, Option<&str>); 8] = [
    ("response.output_text", "text", Some("content_index")),
    ("response.refusal", "refusal", Some("content_index")),
    ("response.function_call_arguments", "arguments", None),
    ("response.custom_tool_call_input", "input", None),
    (
        "response.reasoning_summary_text",
        "text",
        Some("summary_index"),
    ),
    ("response.reasoning_text", "text", Some("content_index")),
    ("response.mcp_call_arguments", "arguments", None),
    ("response.code_interpreter_call_code", "code", None),
];

/// Events whose `response` member is the whole response object (its `output` repeats texts).
const RESPONSE_EVENTS: [&str; 6] = [
    "response.created",
    "response.in_progress",
    "response.queued",
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// (kind, output_index, content or summary index)
type Key = (usize, u64, u64);

struct Channel {
    key: Key,
    hold: Holdback,
    /// The channel's last delta event: what an added delta copies.
    template: Value,
    event_name: Option<String>,
}

/// The last delta event, released text in place, until the next event arrives.
struct Pending {
    key: Key,
    value: Value,
    event: SseEvent,
    changed: bool,
}

pub struct ResponsesMasker {
    verdict: StreamGuard,
    channels: Vec<Channel>,
    pending: Option<Pending>,
    /// Events added so far: every later `sequence_number` is shifted by it.
    offset: u64,
    last_sequence: Option<u64>,
}

fn index_of(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The kind of a `<prefix>.delta` / `<prefix>.done` event type, and whether it is the delta.
fn kind_of(event_type: &str) -> Option<(usize, bool)> {
    KINDS.iter().enumerate().find_map(|(kind, (prefix, _, _))| {
        let rest = event_type.strip_prefix(prefix)?;
        match rest {
            ".delta" => Some((kind, true)),
            ".done" => Some((kind, false)),
            _ => None,
        }
    })
}

fn key_of(kind: usize, value: &Value) -> Key {
    let sub = KINDS
        .get(kind)
        .and_then(|(_, _, sub)| *sub)
        .map_or(0, |sub| index_of(value, sub));
    (kind, index_of(value, "output_index"), sub)
}

impl EventFilter for ResponsesMasker {
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        if event.is_done_marker() {
            self.finish(out, host)?;
            out.push(event);
            return Ok(());
        }
        let mut value = match serde_json::from_str::<Value>(&event.data) {
            Ok(value) => value,
            Err(_) if event.data.trim().is_empty() => {
                self.emit_pending(out);
                out.push(event);
                return Ok(());
            }
            Err(_) => return Err(self.verdict.fail_closed(host, unreadable_event())),
        };
        let event_type = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind_of(&event_type) {
            Some((kind, true)) => self.on_delta(kind, event, value, out, host),
            Some((kind, false)) => {
                self.end_channels(out, host, |key| key == key_of(kind, &value))?;
                let field = KINDS.get(kind).map_or("text", |(_, field, _)| *field);
                let changed = self
                    .verdict
                    .whole(host, |visit| match value.get_mut(field) {
                        Some(Value::String(text)) => visit(text),
                        _ => false,
                    })?;
                self.emit(event, value, changed, out);
                Ok(())
            }
            None => {
                let output_index = index_of(&value, "output_index");
                let content_index = index_of(&value, "content_index");
                let summary_index = index_of(&value, "summary_index");
                // (sub-index member, its value) of the part that ends, or None for every
                // channel of the item.
                let part = match event_type.as_str() {
                    "response.content_part.done" => Some(Some(("content_index", content_index))),
                    "response.reasoning_summary_part.done" => {
                        Some(Some(("summary_index", summary_index)))
                    }
                    "response.output_item.done" => Some(None),
                    _ => None,
                };
                let ends_all =
                    event_type == "error" || RESPONSE_EVENTS.contains(&event_type.as_str());
                if ends_all {
                    self.end_channels(out, host, |_| true)?;
                } else if let Some(part) = part {
                    self.end_channels(out, host, |(kind, output, sub): Key| {
                        output == output_index
                            && part.is_none_or(|(member, index)| {
                                sub == index && KINDS.get(kind).and_then(|k| k.2) == Some(member)
                            })
                    })?;
                } else {
                    self.emit_pending(out);
                }
                let changed = self
                    .verdict
                    .whole(host, |visit| match event_type.as_str() {
                        "response.content_part.added"
                        | "response.content_part.done"
                        | "response.reasoning_summary_part.added"
                        | "response.reasoning_summary_part.done" => match value.get_mut("part") {
                            Some(part) => items::visit_part(part, visit),
                            None => false,
                        },
                        "response.output_item.added" | "response.output_item.done" => {
                            match value.get_mut("item") {
                                Some(item) => items::visit_item(item, visit),
                                None => false,
                            }
                        }
                        kind if RESPONSE_EVENTS.contains(&kind) => {
                            match value.get_mut("response") {
                                Some(response) => items::visit_answer(response, visit),
                                None => false,
                            }
                        }
                        _ => false,
                    })?;
                self.emit(event, value, changed, out);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>, host: &mut dyn Host) -> Result<(), ApiError> {
        self.end_channels(out, host, |_| true)?;
        self.emit_pending(out);
        Ok(())
    }
}

impl ResponsesMasker {
    pub fn new(guard: Rc<RegexGuard>) -> Self {
        ResponsesMasker {
            verdict: StreamGuard::new(guard),
            channels: Vec::new(),
            pending: None,
            offset: 0,
            last_sequence: None,
        }
    }

    fn on_delta(
        &mut self,
        kind: usize,
        event: SseEvent,
        mut value: Value,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        let key = key_of(kind, &value);
        let piece = match value.get("delta") {
            Some(Value::String(piece)) => piece.clone(),
            None | Some(Value::Null) => String::new(),
            // Text in a shape the client may still read: it cannot be checked.
            Some(_) => return Err(self.verdict.fail_closed(host, unreadable_event())),
        };
        self.emit_pending(out);
        let guard = Rc::clone(&self.verdict.guard);
        let position = match self.channels.iter().position(|c| c.key == key) {
            Some(position) => position,
            None => {
                self.channels.push(Channel {
                    key,
                    hold: Holdback::default(),
                    template: Value::Null,
                    event_name: None,
                });
                self.channels.len() - 1
            }
        };
        let pushed = match self.channels.get_mut(position) {
            Some(channel) => {
                channel.template = value.clone();
                channel.event_name = event.event.clone();
                channel.hold.push(&guard.scanner, &piece)
            }
            None => Ok(Released::default()),
        };
        let released = match pushed {
            Ok(released) => self.verdict.judge(released, host)?,
            Err(Overflow) => return Err(self.verdict.fail_closed(host, guard_failed())),
        };
        let changed = released != piece;
        if changed {
            set_delta(&mut value, released);
        }
        self.pending = Some(Pending {
            key,
            value,
            event,
            changed,
        });
        Ok(())
    }

    /// Releases the held text of every channel `ends` picks: into the pending delta when it
    /// is that channel's, else as an added delta event (after the pending one).
    fn end_channels(
        &mut self,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
        ends: impl Fn(Key) -> bool,
    ) -> Result<(), ApiError> {
        let guard = Rc::clone(&self.verdict.guard);
        let mut added = Vec::new();
        let mut index = 0;
        while index < self.channels.len() {
            let Some(channel) = self.channels.get_mut(index) else {
                break;
            };
            if !ends(channel.key) {
                index += 1;
                continue;
            }
            let released = channel.hold.finish(&guard.scanner);
            let channel = self.channels.remove(index);
            let tail = self.verdict.judge(released, host)?;
            if tail.is_empty() {
                continue;
            }
            match self.pending.as_mut().filter(|p| p.key == channel.key) {
                Some(pending) => {
                    let mut text = pending
                        .value
                        .get("delta")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    text.push_str(&tail);
                    set_delta(&mut pending.value, text);
                    pending.changed = true;
                }
                None => {
                    let mut value = channel.template;
                    set_delta(&mut value, tail);
                    added.push(SseEvent {
                        event: channel.event_name,
                        data: String::new(),
                    });
                    if let Some(last) = added.last_mut() {
                        last.data = value.to_string();
                    }
                }
            }
        }
        self.emit_pending(out);
        for mut event in added {
            // An added event: the next number, and every later one shifted past it.
            let sequence = self.last_sequence.map_or(0, |last| last + 1);
            if let Ok(mut value) = serde_json::from_str::<Value>(&event.data) {
                if let Some(object) = value.as_object_mut() {
                    object.insert("sequence_number".into(), json!(sequence));
                }
                event.data = value.to_string();
            }
            self.last_sequence = Some(sequence);
            self.offset += 1;
            out.push(event);
        }
        Ok(())
    }

    fn emit_pending(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(pending) = self.pending.take() {
            self.emit(pending.event, pending.value, pending.changed, out);
        }
    }

    /// Writes an event, its `sequence_number` shifted past the events added before it.
    fn emit(
        &mut self,
        mut event: SseEvent,
        mut value: Value,
        changed: bool,
        out: &mut Vec<SseEvent>,
    ) {
        let mut changed = changed;
        if let Some(sequence) = value.get("sequence_number").and_then(Value::as_u64) {
            let mut shifted = sequence.saturating_add(self.offset);
            if let Some(last) = self.last_sequence {
                if shifted <= last {
                    // An upstream that repeats or reorders numbers: keep them increasing.
                    self.offset = self.offset.saturating_add(last + 1 - shifted);
                    shifted = last + 1;
                }
            }
            if shifted != sequence {
                if let Some(object) = value.as_object_mut() {
                    object.insert("sequence_number".into(), json!(shifted));
                }
                changed = true;
            }
            self.last_sequence = Some(shifted);
        }
        if changed {
            event.data = value.to_string();
        }
        out.push(event);
    }
}

/// Sets a delta event's text; its `logprobs` (the original tokens) are emptied.
fn set_delta(value: &mut Value, text: String) {
    if let Some(object) = value.as_object_mut() {
        object.insert("delta".into(), Value::String(text));
        if object.get("logprobs").is_some_and(|l| !l.is_null()) {
            object.insert("logprobs".into(), Value::Array(Vec::new()));
        }
    }
}

// ------------------------------------------------------------------ synthesis

/// A whole `response` object as the event stream the Responses API sends: `response.created`,
/// `response.in_progress`, per output item its `added`, content parts and text deltas, its
/// `done`, then `response.completed` (or `.incomplete` / `.failed` as its status says), with
/// `sequence_number` counting from 0.
pub fn synthesize(answer: &Value) -> Vec<u8> {
    let mut writer = Writer::default();
    let mut shell = answer.clone();
    if let Some(object) = shell.as_object_mut() {
        object.insert("status".into(), json!("in_progress"));
        object.insert("output".into(), json!([]));
        object.insert("usage".into(), Value::Null);
    }
    writer.event("response.created", json!({ "response": shell.clone() }));
    writer.event("response.in_progress", json!({ "response": shell }));
    let empty = Vec::new();
    let output = answer
        .get("output")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (output_index, item) in output.iter().enumerate() {
        synthesize_item(&mut writer, output_index, item);
    }
    let last = match answer.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    writer.event(last, json!({ "response": answer }));
    writer.out
}

fn synthesize_item(writer: &mut Writer, output_index: usize, item: &Value) {
    let item_id = item.get("id").cloned().unwrap_or(Value::Null);
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    let mut added = item.clone();
    if let Some(object) = added.as_object_mut() {
        object.insert("status".into(), json!("in_progress"));
        match kind {
            "message" => {
                object.insert("content".into(), json!([]));
            }
            "function_call" => {
                object.insert("arguments".into(), json!(""));
            }
            "custom_tool_call" => {
                object.insert("input".into(), json!(""));
            }
            _ => {}
        }
    }
    writer.event(
        "response.output_item.added",
        json!({ "output_index": output_index, "item": added }),
    );
    match kind {
        "message" => {
            let empty = Vec::new();
            let parts = item
                .get("content")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            for (content_index, part) in parts.iter().enumerate() {
                let at = json!({
                    "item_id": item_id, "output_index": output_index, "content_index": content_index,
                });
                let part_type = part.get("type").and_then(Value::as_str).unwrap_or_default();
                let (prefix, field) = match part_type {
                    "refusal" => ("response.refusal", "refusal"),
                    _ => ("response.output_text", "text"),
                };
                let mut empty_part = part.clone();
                if let Some(object) = empty_part.as_object_mut() {
                    if object.contains_key(field) {
                        object.insert(field.into(), json!(""));
                    }
                }
                writer.event("response.content_part.added", with(&at, "part", empty_part));
                if let Some(text) = part.get(field).and_then(Value::as_str) {
                    let mut delta = with(&at, "delta", json!(text));
                    let mut done = with(&at, field, json!(text));
                    if prefix == "response.output_text" {
                        delta = with(&delta, "logprobs", json!([]));
                        done = with(&done, "logprobs", json!([]));
                    }
                    writer.event(&format!("{prefix}.delta"), delta);
                    writer.event(&format!("{prefix}.done"), done);
                }
                writer.event(
                    "response.content_part.done",
                    with(&at, "part", part.clone()),
                );
            }
        }
        "function_call" | "custom_tool_call" => {
            let (prefix, field) = if kind == "function_call" {
                ("response.function_call_arguments", "arguments")
            } else {
                ("response.custom_tool_call_input", "input")
            };
            if let Some(text) = item.get(field).and_then(Value::as_str) {
                let at = json!({ "item_id": item_id, "output_index": output_index });
                writer.event(&format!("{prefix}.delta"), with(&at, "delta", json!(text)));
                writer.event(&format!("{prefix}.done"), with(&at, field, json!(text)));
            }
        }
        _ => {}
    }
    writer.event(
        "response.output_item.done",
        json!({ "output_index": output_index, "item": item }),
    );
}

/// `base` with one more member.
fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut copy = base.clone();
    if let Some(object) = copy.as_object_mut() {
        object.insert(key.into(), value);
    }
    copy
}

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    sequence: u64,
}

impl Writer {
    fn event(&mut self, event_type: &str, mut data: Value) {
        if let Some(object) = data.as_object_mut() {
            object.insert("type".into(), json!(event_type));
            object.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        SseEvent {
            event: Some(event_type.to_string()),
            data: data.to_string(),
        }
        .write_to(&mut self.out);
    }
}
