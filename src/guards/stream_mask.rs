//! The regex guard on streamed answers. Text arrives in pieces (`delta.content`, tool call
//! arguments, legacy `text`), one piece per event; a hit may be split across any number of
//! them. Each text channel (choice × field) holds back only the tail that a hit could still
//! be part of, masks what is final and releases it in the event that brought the new piece.
//! The rest is released when the choice finishes, at `[DONE]`, or when the stream ends.
//!
//! How much is held: a built-in detector's hit consists of a known alphabet and has a
//! maximum length, so at most the trailing run of that alphabet (capped at that length) is
//! held: usually nothing or one word. Operator patterns are opaque: their text is held back
//! to the last sentence end (`.`, `!`, `?` before whitespace, a line break), at most
//! `MAX_SENTENCE_HOLD_CHARS` characters.

use std::rc::Rc;

use serde_json::{json, Map, Value};

use super::builtins::Reach;
use super::regex_guard::{Hit, RegexGuard, Scanner};
use super::EventFilterFactory;
use crate::config::model::RegexAction;
use crate::error::ApiError;
use crate::host::Host;
use crate::pipeline::stage::EventFilter;
use crate::sse::SseEvent;

/// Operator patterns: text after the last sentence end is held, up to this many characters.
pub const MAX_SENTENCE_HOLD_CHARS: usize = 1024;
/// Characters of released text kept as context for the next search (validators and `\b`
/// look at the character before a hit).
const CONTEXT_CHARS: usize = 8;
/// A channel never holds more than this; past it everything held is judged as final.
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// The text of one channel not yet released, with a little released context before it.
#[derive(Debug, Default)]
pub struct Holdback {
    /// `buf[..off]` is released context, `buf[off..]` is held.
    buf: String,
    off: usize,
}

/// Text that became final, already masked, and how many hits it had.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    pub hits: usize,
}

impl Holdback {
    pub fn push(&mut self, scanner: &Scanner, piece: &str) -> Released {
        self.buf.push_str(piece);
        let forced = self.buf.len() - self.off > MAX_PENDING_BYTES;
        self.release(scanner, forced)
    }

    /// Releases everything held: the text has ended.
    pub fn finish(&mut self, scanner: &Scanner) -> Released {
        self.release(scanner, true)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.off
    }

    fn release(&mut self, scanner: &Scanner, all: bool) -> Released {
        if self.is_empty() {
            return Released::default();
        }
        let mut hits = Vec::new();
        scanner.scan(&self.buf, self.off, &mut hits);
        let cut = if all {
            self.buf.len()
        } else {
            cut_point(scanner, &self.buf, self.off, &hits)
        };
        let final_hits: Vec<Hit> = hits.into_iter().take_while(|hit| hit.end <= cut).collect();
        let text = scanner.replace(&self.buf, self.off, cut, &final_hits);
        let keep_from = chars_back(&self.buf, cut, CONTEXT_CHARS);
        self.buf.drain(..keep_from);
        self.off = cut - keep_from;
        Released {
            text,
            hits: final_hits.len(),
        }
    }
}

/// Where the held text starts: text before it can no longer be part of a hit that more text
/// would change. A hit that starts before the hold point is final and released whole.
fn cut_point(scanner: &Scanner, buf: &str, off: usize, hits: &[Hit]) -> usize {
    let mut hold = buf.len();
    for detector in scanner.detectors() {
        let start = match detector.reach {
            Reach::Run {
                alphabet,
                max_chars,
            } => run_start(buf, off, alphabet, max_chars + 1),
            Reach::Sentence => sentence_start(buf, off),
        };
        hold = hold.min(start);
    }
    let mut cut = hold.max(off);
    for hit in hits {
        if hit.start >= cut {
            break;
        }
        if hit.end > cut {
            match scanner.detectors().get(hit.detector).map(|d| d.reach) {
                Some(Reach::Run { .. }) => cut = hit.end,
                _ => {
                    cut = hit.start;
                    break;
                }
            }
        }
    }
    cut
}

/// Start of the trailing run of `alphabet` characters, at most `limit` of them.
fn run_start(buf: &str, off: usize, alphabet: fn(char) -> bool, limit: usize) -> usize {
    let mut start = buf.len();
    for (count, (index, c)) in buf
        .get(off..)
        .unwrap_or_default()
        .char_indices()
        .rev()
        .enumerate()
    {
        if count == limit || !alphabet(c) {
            break;
        }
        start = off + index;
    }
    start
}

/// Just past the last sentence end in `buf[off..]`, but at most `MAX_SENTENCE_HOLD_CHARS`
/// characters before the end.
fn sentence_start(buf: &str, off: usize) -> usize {
    let mut boundary = off;
    let mut after_terminal = false;
    for (index, c) in buf.get(off..).unwrap_or_default().char_indices() {
        let end = off + index + c.len_utf8();
        if c == '\n' || matches!(c, '。' | '！' | '？') || (after_terminal && c.is_whitespace())
        {
            boundary = end;
        }
        after_terminal = matches!(c, '.' | '!' | '?');
    }
    boundary
        .max(chars_back(buf, buf.len(), MAX_SENTENCE_HOLD_CHARS))
        .max(off)
}

/// The byte offset `count` characters before `at` (or 0).
fn chars_back(text: &str, at: usize, count: usize) -> usize {
    if count == 0 {
        return at;
    }
    text.get(..at)
        .unwrap_or_default()
        .char_indices()
        .rev()
        .nth(count - 1)
        .map_or(0, |(index, _)| index)
}

/// Which text of a choice a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Content,
    Refusal,
    /// Legacy completions' `text`.
    Text,
    /// `delta.tool_calls[index == n].function.arguments`.
    Tool(u64),
}

#[derive(Debug)]
struct Channel {
    choice: u64,
    field: Field,
    hold: Holdback,
}

#[derive(Debug)]
pub struct StreamMaskFactory(pub Rc<RegexGuard>);

impl EventFilterFactory for StreamMaskFactory {
    fn create(&self) -> Box<dyn EventFilter> {
        Box::new(StreamMasker {
            guard: Rc::clone(&self.0),
            channels: Vec::new(),
            last: Map::new(),
            counted: false,
        })
    }
}

pub struct StreamMasker {
    guard: Rc<RegexGuard>,
    channels: Vec<Channel>,
    /// `id`, `object`, `created`, `model` of the last chunk, for a chunk the masker adds.
    last: Map<String, Value>,
    counted: bool,
}

impl EventFilter for StreamMasker {
    fn on_event(
        &mut self,
        mut event: SseEvent,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        if event.is_done_marker() {
            self.flush_all(out, host)?;
            out.push(event);
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_str::<Value>(&event.data) else {
            out.push(event);
            return Ok(());
        };
        for key in ["id", "object", "created", "model"] {
            if let Some(field) = value.get(key) {
                self.last.insert(key.to_string(), field.clone());
            }
        }
        let mut changed = false;
        if let Some(choices) = value.get_mut("choices").and_then(Value::as_array_mut) {
            for (position, choice) in choices.iter_mut().enumerate() {
                changed |= self.on_choice(choice, position as u64, host)?;
            }
        }
        if changed {
            event.data = value.to_string();
        }
        out.push(event);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>, host: &mut dyn Host) -> Result<(), ApiError> {
        self.flush_all(out, host)
    }
}

impl StreamMasker {
    fn on_choice(
        &mut self,
        choice: &mut Value,
        position: u64,
        host: &mut dyn Host,
    ) -> Result<bool, ApiError> {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let mut changed = false;
        // Log probabilities carry the original tokens.
        if let Some(logprobs) = choice.get_mut("logprobs") {
            if !logprobs.is_null() {
                *logprobs = Value::Null;
                changed = true;
            }
        }
        for field in fields_present(choice) {
            if let Some(slot) = slot_mut(choice, field, false) {
                let piece = std::mem::take(slot);
                let released = self.feed(index, field, &piece, host)?;
                if let Some(slot) = slot_mut(choice, field, false) {
                    *slot = released;
                }
                changed = true;
            }
        }
        let finished = choice
            .get("finish_reason")
            .is_some_and(|reason| !reason.is_null());
        if finished {
            for field in self.held_fields(index) {
                let rest = self.flush(index, field, host)?;
                if !rest.is_empty() {
                    if let Some(slot) = slot_mut(choice, field, true) {
                        slot.push_str(&rest);
                        changed = true;
                    }
                }
            }
        }
        Ok(changed)
    }

    fn hold(&mut self, choice: u64, field: Field) -> Option<&mut Holdback> {
        if !self
            .channels
            .iter()
            .any(|c| c.choice == choice && c.field == field)
        {
            self.channels.push(Channel {
                choice,
                field,
                hold: Holdback::default(),
            });
        }
        self.channels
            .iter_mut()
            .find(|c| c.choice == choice && c.field == field)
            .map(|c| &mut c.hold)
    }

    fn feed(
        &mut self,
        choice: u64,
        field: Field,
        piece: &str,
        host: &mut dyn Host,
    ) -> Result<String, ApiError> {
        let guard = Rc::clone(&self.guard);
        let released = match self.hold(choice, field) {
            Some(hold) => hold.push(&guard.scanner, piece),
            None => Released::default(),
        };
        self.judge(released, host)
    }

    fn flush(
        &mut self,
        choice: u64,
        field: Field,
        host: &mut dyn Host,
    ) -> Result<String, ApiError> {
        let guard = Rc::clone(&self.guard);
        let released = match self.hold(choice, field) {
            Some(hold) => hold.finish(&guard.scanner),
            None => Released::default(),
        };
        self.judge(released, host)
    }

    fn judge(&mut self, released: Released, host: &mut dyn Host) -> Result<String, ApiError> {
        if released.hits == 0 {
            return Ok(released.text);
        }
        match self.guard.action {
            RegexAction::Reject => Err(self.guard.info.block(host)),
            RegexAction::Mask => {
                if !self.counted {
                    self.counted = true;
                    self.guard.info.masked(host);
                }
                Ok(released.text)
            }
        }
    }

    fn held_fields(&self, choice: u64) -> Vec<Field> {
        self.channels
            .iter()
            .filter(|c| c.choice == choice && !c.hold.is_empty())
            .map(|c| c.field)
            .collect()
    }

    /// Releases every channel into one added chunk, before `[DONE]` or the stream's end.
    fn flush_all(&mut self, out: &mut Vec<SseEvent>, host: &mut dyn Host) -> Result<(), ApiError> {
        let held: Vec<(u64, Field)> = self
            .channels
            .iter()
            .filter(|c| !c.hold.is_empty())
            .map(|c| (c.choice, c.field))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let legacy = self.last.get("object").and_then(Value::as_str) == Some("text_completion");
        let mut choices: Vec<Value> = Vec::new();
        for (choice, field) in held {
            let rest = self.flush(choice, field, host)?;
            if rest.is_empty() {
                continue;
            }
            let position = match choices
                .iter()
                .position(|c| c.get("index").and_then(Value::as_u64) == Some(choice))
            {
                Some(position) => position,
                None => {
                    choices.push(if legacy {
                        json!({"index": choice, "text": "", "logprobs": null, "finish_reason": null})
                    } else {
                        json!({"index": choice, "delta": {}, "finish_reason": null})
                    });
                    choices.len() - 1
                }
            };
            if let Some(slot) = choices
                .get_mut(position)
                .and_then(|c| slot_mut(c, field, true))
            {
                slot.push_str(&rest);
            }
        }
        if choices.is_empty() {
            return Ok(());
        }
        let mut chunk = self.last.clone();
        chunk
            .entry("object")
            .or_insert_with(|| Value::String("chat.completion.chunk".into()));
        chunk.insert("choices".into(), Value::Array(choices));
        out.push(SseEvent::data(Value::Object(chunk).to_string()));
        Ok(())
    }
}

/// The text fields a streamed choice carries in this event.
fn fields_present(choice: &Value) -> Vec<Field> {
    let mut fields = Vec::new();
    let delta = choice.get("delta");
    if delta
        .and_then(|d| d.get("content"))
        .is_some_and(Value::is_string)
    {
        fields.push(Field::Content);
    }
    if delta
        .and_then(|d| d.get("refusal"))
        .is_some_and(Value::is_string)
    {
        fields.push(Field::Refusal);
    }
    if choice.get("text").is_some_and(Value::is_string) {
        fields.push(Field::Text);
    }
    if let Some(calls) = delta
        .and_then(|d| d.get("tool_calls"))
        .and_then(Value::as_array)
    {
        for (position, call) in calls.iter().enumerate() {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            if call
                .get("function")
                .and_then(|f| f.get("arguments"))
                .is_some_and(Value::is_string)
            {
                fields.push(Field::Tool(index));
            }
        }
    }
    fields
}

/// The string of `field` in a streamed choice; with `create`, made (empty) when missing.
fn slot_mut(choice: &mut Value, field: Field, create: bool) -> Option<&mut String> {
    let object = choice.as_object_mut()?;
    let (container, key) = match field {
        Field::Text => (object, "text"),
        Field::Content | Field::Refusal | Field::Tool(_) => {
            let delta = object.entry("delta").or_insert_with(|| json!({}));
            if !delta.is_object() {
                if !create {
                    return None;
                }
                *delta = json!({});
            }
            let delta = delta.as_object_mut()?;
            match field {
                Field::Tool(index) => {
                    let calls = delta.entry("tool_calls").or_insert_with(|| json!([]));
                    let calls = calls.as_array_mut()?;
                    let position = calls.iter().enumerate().position(|(position, call)| {
                        call.get("index")
                            .and_then(Value::as_u64)
                            .unwrap_or(position as u64)
                            == index
                    });
                    let position = match position {
                        Some(position) => position,
                        None if create => {
                            calls.push(json!({"index": index, "function": {"arguments": ""}}));
                            calls.len() - 1
                        }
                        None => return None,
                    };
                    let call = calls.get_mut(position)?.as_object_mut()?;
                    let function = call.entry("function").or_insert_with(|| json!({}));
                    (function.as_object_mut()?, "arguments")
                }
                Field::Refusal => (delta, "refusal"),
                _ => (delta, "content"),
            }
        }
    };
    let value = container.entry(key).or_insert(Value::Null);
    if !value.is_string() {
        if !create {
            return None;
        }
        *value = Value::String(String::new());
    }
    match value {
        Value::String(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
#[path = "stream_mask_tests.rs"]
mod tests;
