//! Messages streams: the regex guard's masker over Anthropic events, and a whole Message
//! re-told as the events a streaming client expects.
//!
//! The masker keeps one channel per content block `index` and kind: `text_delta` text, and
//! `input_json_delta` `partial_json` text. A channel holds back the tail a hit could still
//! be part of (`guards::stream_mask::Holdback`), masks what became final in the event that
//! brought it, and releases the rest in one more delta event of that block just before its
//! `content_block_stop` (or before `message_delta`/`message_stop`/`error`, or at the end).
//!
//! Tool input arrives as pieces of JSON text, where a string may spell any character as a
//! `\uXXXX` escape: the channel first rewrites the pieces into the same JSON with every
//! escape that is not needed decoded (`JsonText`, an escape split between events included),
//! so a hit written with escapes is found as it would be in the parsed input.
//!
//! `thinking_delta` and `signature_delta` are never edited (the signature covers the
//! thinking): a reject guard still reads thinking text through its own channel and ends
//! the stream on a hit; a mask guard leaves it. Other blocks' strings (a block that starts
//! with content, citations) are complete in their event and guarded whole.

use std::rc::Rc;

use serde_json::{json, Value};

use super::text;
use crate::config::model::RegexAction;
use crate::error::ApiError;
use crate::guards::regex_guard::RegexGuard;
use crate::guards::stream_mask::{
    guard_failed, unreadable_event, Holdback, Overflow, Released, StreamGuard,
};
use crate::host::Host;
use crate::pipeline::stage::EventFilter;
use crate::sse::SseEvent;

/// Content blocks open at once (a real answer has a handful): past it the stream fails
/// closed rather than let a hostile upstream make every event search a long list.
const MAX_CHANNELS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Json,
    /// Read by a reject guard only; never changed.
    Thinking,
}

struct Channel {
    index: u64,
    kind: Kind,
    hold: Holdback,
    json: JsonText,
}

pub struct MessagesMasker {
    verdict: StreamGuard,
    channels: Vec<Channel>,
}

impl MessagesMasker {
    pub fn new(guard: Rc<RegexGuard>) -> Self {
        MessagesMasker {
            verdict: StreamGuard::new(guard),
            channels: Vec::new(),
        }
    }

    fn channel(&mut self, index: u64, kind: Kind) -> Option<&mut Channel> {
        if !self
            .channels
            .iter()
            .any(|c| c.index == index && c.kind == kind)
        {
            if self.channels.len() >= MAX_CHANNELS {
                return None;
            }
            self.channels.push(Channel {
                index,
                kind,
                hold: Holdback::default(),
                json: JsonText::default(),
            });
        }
        self.channels
            .iter_mut()
            .find(|c| c.index == index && c.kind == kind)
    }

    /// Adds a piece to a channel; the text released for the client.
    fn feed(
        &mut self,
        index: u64,
        kind: Kind,
        piece: &str,
        host: &mut dyn Host,
    ) -> Result<String, ApiError> {
        let guard = Rc::clone(&self.verdict.guard);
        let released = match self.channel(index, kind) {
            Some(channel) => {
                let piece = match kind {
                    Kind::Json => channel.json.push(piece),
                    Kind::Text | Kind::Thinking => piece.to_string(),
                };
                channel.hold.push(&guard.scanner, &piece)
            }
            None => Err(Overflow),
        };
        match released {
            Ok(released) => self.verdict.judge(released, host),
            Err(Overflow) => Err(self.verdict.fail_closed(host, guard_failed())),
        }
    }

    fn flush(&mut self, index: u64, kind: Kind, host: &mut dyn Host) -> Result<String, ApiError> {
        let guard = Rc::clone(&self.verdict.guard);
        let released = match self.channel(index, kind) {
            Some(channel) => {
                let rest = channel.json.finish();
                let mut released = match channel.hold.push(&guard.scanner, &rest) {
                    Ok(released) => released,
                    Err(Overflow) => return Err(self.verdict.fail_closed(host, guard_failed())),
                };
                let last = channel.hold.finish(&guard.scanner);
                released.text.push_str(&last.text);
                released.hits += last.hits;
                released
            }
            None => Released::default(),
        };
        self.verdict.judge(released, host)
    }

    /// Releases every held channel of `index` (every channel when None) as delta events.
    fn flush_blocks(
        &mut self,
        index: Option<u64>,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        let mut held: Vec<(u64, Kind)> = self
            .channels
            .iter()
            .filter(|c| index.is_none_or(|i| c.index == i))
            .map(|c| (c.index, c.kind))
            .collect();
        held.sort_by_key(|(index, _)| *index);
        for (block, kind) in held {
            let rest = self.flush(block, kind, host)?;
            self.channels
                .retain(|c| !(c.index == block && c.kind == kind));
            let delta = match kind {
                Kind::Text => json!({"type": "text_delta", "text": rest}),
                Kind::Json => json!({"type": "input_json_delta", "partial_json": rest}),
                Kind::Thinking => continue,
            };
            if rest.is_empty() {
                continue;
            }
            out.push(SseEvent {
                event: Some("content_block_delta".into()),
                data: json!({"type": "content_block_delta", "index": block, "delta": delta})
                    .to_string(),
            });
        }
        Ok(())
    }

    fn on_delta(
        &mut self,
        index: u64,
        delta: &mut Value,
        host: &mut dyn Host,
    ) -> Result<bool, ApiError> {
        let (kind, field) = match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => (Kind::Text, "text"),
            Some("input_json_delta") => (Kind::Json, "partial_json"),
            Some("thinking_delta") => {
                if self.verdict.guard.action == RegexAction::Reject {
                    if let Some(thinking) = delta.get("thinking").and_then(Value::as_str) {
                        let thinking = thinking.to_string();
                        self.feed(index, Kind::Thinking, &thinking, host)?;
                    }
                }
                return Ok(false);
            }
            Some("signature_delta") => return Ok(false),
            // citations_delta and any other delta: its strings are whole.
            _ => {
                return self
                    .verdict
                    .whole(host, |visit| text::visit_block(delta, visit))
            }
        };
        let Some(Value::String(piece)) = delta.get_mut(field) else {
            // Not the API's shape: whatever strings it carries are guarded whole.
            return self
                .verdict
                .whole(host, |visit| text::visit_block(delta, visit));
        };
        let taken = std::mem::take(piece);
        let released = self.feed(index, kind, &taken, host)?;
        let changed = released != taken;
        if let Some(Value::String(slot)) = delta.get_mut(field) {
            *slot = released;
        }
        Ok(changed)
    }
}

impl EventFilter for MessagesMasker {
    fn on_event(
        &mut self,
        mut event: SseEvent,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        if event.data.trim().is_empty() {
            out.push(event);
            return Ok(());
        }
        let mut value = match serde_json::from_str::<Value>(&event.data) {
            Ok(value) => value,
            Err(_) => return Err(self.verdict.fail_closed(host, unreadable_event())),
        };
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut changed = match kind.as_str() {
            "content_block_start" => {
                let Some(block) = value.get_mut("content_block") else {
                    out.push(event);
                    return Ok(());
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get_mut("text") {
                        Some(Value::String(text)) if !text.is_empty() => {
                            let taken = std::mem::take(text);
                            let released = self.feed(index, Kind::Text, &taken, host)?;
                            let changed = released != taken;
                            if let Some(Value::String(slot)) = block.get_mut("text") {
                                *slot = released;
                            }
                            changed
                        }
                        _ => false,
                    },
                    Some("thinking") => {
                        if self.verdict.guard.action == RegexAction::Reject {
                            let thinking = block
                                .get("thinking")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string();
                            self.feed(index, Kind::Thinking, &thinking, host)?;
                        }
                        false
                    }
                    _ => self
                        .verdict
                        .whole(host, |visit| text::visit_block(block, visit))?,
                }
            }
            "content_block_stop" => {
                self.flush_blocks(Some(index), out, host)?;
                false
            }
            "message_start" => match value.get_mut("message") {
                Some(message) => self
                    .verdict
                    .whole(host, |visit| text::visit_answer(message, visit))?,
                None => false,
            },
            "message_delta" | "message_stop" | "error" => {
                self.flush_blocks(None, out, host)?;
                false
            }
            _ => false,
        };
        // A `delta` on any event but `message_delta` (stop reason, usage) is read as a
        // content block's: the type an event claims is no way around the masker.
        if kind != "message_delta" && kind != "content_block_start" {
            if let Some(delta) = value.get_mut("delta") {
                changed |= self.on_delta(index, delta, host)?;
            }
        }
        if changed {
            event.data = value.to_string();
        }
        out.push(event);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>, host: &mut dyn Host) -> Result<(), ApiError> {
        self.flush_blocks(None, out, host)
    }
}

/// Pieces of JSON text rewritten with every escape that is not needed decoded: `\u0073`
/// becomes `s`, `\/` becomes `/`; `\"`, `\\` and control characters stay escaped (the text
/// must stay the same JSON). An escape split between pieces is completed by the next one.
#[derive(Debug, Default)]
pub struct JsonText {
    in_string: bool,
    /// An escape begun and not yet complete (starts with `\`).
    escape: String,
}

impl JsonText {
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len());
        for c in piece.chars() {
            self.char(c, &mut out);
        }
        out
    }

    /// The incomplete escape at the end of the text, as it was.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.escape)
    }

    fn char(&mut self, c: char, out: &mut String) {
        if !self.escape.is_empty() {
            self.escape.push(c);
            self.escape_step(out);
            return;
        }
        if !self.in_string {
            self.in_string = c == '"';
            out.push(c);
            return;
        }
        match c {
            '\\' => self.escape.push(c),
            '"' => {
                self.in_string = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }

    fn escape_step(&mut self, out: &mut String) {
        let escape = self.escape.as_bytes();
        match escape.get(1) {
            Some(b'u') => {}
            Some(b'/') => {
                out.push('/');
                self.escape.clear();
                return;
            }
            Some(_) => {
                out.push_str(&self.escape);
                self.escape.clear();
                return;
            }
            None => return,
        }
        if escape.len() < 6 {
            return;
        }
        let Some(unit) = hex4(escape.get(2..6)) else {
            out.push_str(&self.escape);
            self.escape.clear();
            return;
        };
        if !(0xD800..0xDC00).contains(&unit) {
            let decoded = char::from_u32(u32::from(unit));
            self.emit(decoded, 6, out);
            return;
        }
        // A high surrogate: its pair must follow as `\uDC00`-`\uDFFF`.
        let expected = b"\\u";
        for (offset, byte) in escape.iter().enumerate().skip(6).take(2) {
            if expected.get(offset - 6) != Some(byte) {
                self.keep_first(6, out);
                return;
            }
        }
        if escape.len() < 12 {
            return;
        }
        match hex4(escape.get(8..12)) {
            Some(low) if (0xDC00..0xE000).contains(&low) => {
                let code = 0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                self.emit(char::from_u32(code), 12, out);
            }
            _ => self.keep_first(6, out),
        }
    }

    /// The escape's first `len` bytes decoded to `decoded` (kept escaped when JSON needs it).
    fn emit(&mut self, decoded: Option<char>, len: usize, out: &mut String) {
        match decoded {
            Some(c) if c != '"' && c != '\\' && u32::from(c) >= 0x20 => out.push(c),
            _ => out.push_str(self.escape.get(..len).unwrap_or_default()),
        }
        self.escape.clear();
    }

    /// A lone surrogate: its escape stays as it was; what followed is read again.
    fn keep_first(&mut self, len: usize, out: &mut String) {
        let escape = std::mem::take(&mut self.escape);
        out.push_str(escape.get(..len).unwrap_or_default());
        for c in escape.get(len..).unwrap_or_default().chars() {
            self.char(c, out);
        }
    }
}

fn hex4(digits: Option<&[u8]>) -> Option<u16> {
    let digits = std::str::from_utf8(digits?).ok()?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

/// A whole Message as the event stream a streaming Messages client expects: `message_start`,
/// per content block `content_block_start` / one delta / `content_block_stop`,
/// `message_delta` (stop reason, usage) and `message_stop`.
pub fn synthesize(answer: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut write = |name: &str, data: Value| {
        SseEvent {
            event: Some(name.into()),
            data: data.to_string(),
        }
        .write_to(&mut out);
    };
    let usage = answer.get("usage").cloned().unwrap_or_else(|| json!({}));
    let mut start_usage = usage.clone();
    if let Some(object) = start_usage.as_object_mut() {
        object.insert("output_tokens".into(), json!(0));
    }
    let mut message = json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": answer.get("role").cloned().unwrap_or_else(|| json!("assistant")),
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": start_usage,
    });
    if let (Some(object), Some(container)) = (message.as_object_mut(), answer.get("container")) {
        object.insert("container".into(), container.clone());
    }
    write(
        "message_start",
        json!({"type": "message_start", "message": message}),
    );
    let blocks = answer
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, block) in blocks.iter().enumerate() {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (start, deltas) = match kind {
            "text" => {
                let mut start = json!({"type": "text", "text": ""});
                if block.get("citations").is_some() {
                    start["citations"] = json!([]);
                }
                let mut deltas = vec![
                    json!({"type": "text_delta", "text": block.get("text").cloned().unwrap_or_else(|| json!(""))}),
                ];
                for citation in block
                    .get("citations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    deltas.push(json!({"type": "citations_delta", "citation": citation}));
                }
                (start, deltas)
            }
            "tool_use" | "server_tool_use" | "mcp_tool_use" => {
                let mut start = block.clone();
                start["input"] = json!({});
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                (
                    start,
                    vec![json!({"type": "input_json_delta", "partial_json": input.to_string()})],
                )
            }
            "thinking" => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": block.get("thinking").cloned().unwrap_or_else(|| json!(""))}),
                    json!({"type": "signature_delta", "signature": block.get("signature").cloned().unwrap_or_else(|| json!(""))}),
                ],
            ),
            _ => (block.clone(), Vec::new()),
        };
        write(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        for delta in deltas {
            write(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
        }
        write(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    write(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": answer.get("stop_reason").cloned().unwrap_or(Value::Null),
                "stop_sequence": answer.get("stop_sequence").cloned().unwrap_or(Value::Null),
            },
            "usage": usage,
        }),
    );
    write("message_stop", json!({"type": "message_stop"}));
    out
}
