//! The regex guard on streamed answers. Text arrives in pieces (`delta.content`, tool call
//! arguments, legacy `function_call` arguments, legacy `text`), one piece per event; a hit
//! may be split across any number of them, of any size. Each text channel (choice × field) holds back only the tail that a hit could still
//! be part of, masks what is final and releases it in the event that brought the new piece.
//! The rest is released when the choice finishes, at `[DONE]`, or when the stream ends.
//!
//! How much is held: a built-in detector's hit consists of a known alphabet and has a
//! maximum length, so at most the trailing run of that alphabet (capped at that length) is
//! held: usually nothing or one word. Operator patterns are opaque: their text is held back
//! to the last sentence end (`.`, `!`, `?` before whitespace, a line break), at most
//! `MAX_SENTENCE_HOLD_CHARS` characters.
//!
//! The hold is thus a few KiB at most, except while an operator pattern's match that began
//! before it goes on growing; past `MAX_PENDING_BYTES` the stream ends with an error rather
//! than release part of a match unmasked. An event that is not JSON ends the stream with an
//! error too: its text could not be checked.

use std::borrow::Cow;
use std::ops::Range;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::builtins::Reach;
use super::outcome::Outcome;
use super::regex_guard::{Hit, RegexGuard, Scanner};
use super::EventFilterFactory;
use crate::client_api::ClientApi;
use crate::config::model::RegexAction;
use crate::error::ApiError;
use crate::host::Host;
use crate::json_view::{self, Edits, Kind};
use crate::pipeline::in_place::{FunctionView, ToolCallView};
use crate::pipeline::stage::EventFilter;
use crate::sse::SseEvent;

/// Operator patterns: text after the last sentence end is held, up to this many characters.
pub const MAX_SENTENCE_HOLD_CHARS: usize = 1024;
/// Characters of released text kept as context for the next search (validators and `\b`
/// look at the character before a hit).
const CONTEXT_CHARS: usize = 8;
/// A channel never holds more than this: an operator pattern's match still open past it
/// ends the stream (see `Overflow`). It also bounds the text each event searches again.
pub const MAX_PENDING_BYTES: usize = 16 * 1024;

/// A channel would have to hold more than `MAX_PENDING_BYTES` to keep a match whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

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
    /// Adds a piece and releases what became final. However large the piece, the tail a
    /// hit could still be part of stays held, so a hit split after it is masked whole.
    pub fn push(&mut self, scanner: &Scanner, piece: &str) -> Result<Released, Overflow> {
        self.buf.push_str(piece);
        let released = self.release(scanner, false);
        if self.buf.len() - self.off > MAX_PENDING_BYTES {
            return Err(Overflow);
        }
        Ok(released)
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
    /// Legacy `delta.function_call.arguments`.
    Function,
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
    fn create(&self, api: &'static dyn ClientApi) -> Box<dyn EventFilter> {
        api.stream_masker(Rc::clone(&self.0))
    }
}

/// The members of the last chunk a chunk the masker adds copies.
const LAST_KEYS: [&str; 4] = ["id", "object", "created", "model"];

pub struct StreamMasker {
    verdict: StreamGuard,
    channels: Vec<Channel>,
    /// The JSON text of `LAST_KEYS` in the last chunk that had them. Streams repeat the same
    /// values, so they are copied only when they change.
    last: [Option<String>; 4],
    /// Off only in tests, which check the in-place path against the `Value` path.
    in_place: bool,
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
        if let Some(done) = self
            .in_place
            .then(|| self.on_event_in_place(&mut event, host))
            .flatten()
        {
            done?;
            out.push(event);
            return Ok(());
        }
        let mut value = match serde_json::from_str::<Value>(&event.data) {
            Ok(value) => value,
            // Nothing to read, nothing to mask.
            Err(_) if event.data.trim().is_empty() => {
                out.push(event);
                return Ok(());
            }
            // A lone surrogate escape, `NaN`, a cut event: its text cannot be checked, and
            // the same answer as JSON gets 502.
            Err(_) => return Err(self.verdict.fail_closed(host, unreadable_event())),
        };
        for (slot, key) in self.last.iter_mut().zip(LAST_KEYS) {
            if let Some(field) = value.get(key) {
                *slot = Some(field.to_string());
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
    /// The masker over chat-completions chunks (and the legacy completions' `text`).
    pub fn new(guard: Rc<RegexGuard>) -> Self {
        StreamMasker {
            verdict: StreamGuard::new(guard),
            channels: Vec::new(),
            last: Default::default(),
            in_place: true,
        }
    }

    /// The usual chunk, masked without building a `Value`: its texts are read from a borrowed
    /// view and only the strings that change are rewritten in the event's text. None when the
    /// chunk does not fit the view, or when flushing would add a field the chunk lacks: the
    /// `Value` path handles those (nothing was changed yet).
    fn on_event_in_place(
        &mut self,
        event: &mut SseEvent,
        host: &mut dyn Host,
    ) -> Option<Result<(), ApiError>> {
        let data = event.data.as_str();
        let chunk: ChunkView<'_> = serde_json::from_str(data).ok()?;
        let choices = chunk.choices.unwrap_or_default();
        let texts: Vec<Vec<(Field, &RawValue)>> = choices.iter().map(ChoiceView::texts).collect();
        for ((position, choice), present) in choices.iter().enumerate().zip(&texts) {
            if !json_view::is_null(choice.finish_reason) {
                let index = choice.index_or(position);
                let held = self.held_fields(index);
                if held
                    .iter()
                    .any(|field| !present.iter().any(|(f, _)| f == field))
                {
                    return None;
                }
            }
        }
        for (slot, raw) in
            self.last
                .iter_mut()
                .zip([chunk.id, chunk.object, chunk.created, chunk.model])
        {
            if let Some(raw) = raw {
                if slot.as_deref() != Some(raw.get()) {
                    *slot = Some(raw.get().to_string());
                }
            }
        }
        // Everything that can fail is read before the holds change.
        let mut work = Vec::with_capacity(choices.len());
        for ((position, choice), present) in choices.iter().enumerate().zip(texts) {
            let logprobs = match choice
                .logprobs
                .filter(|raw| json_view::kind(raw) != Kind::Null)
            {
                Some(raw) => Some(json_view::range_in(data, raw.get())?),
                None => None,
            };
            let mut pieces = Vec::with_capacity(present.len());
            for (field, raw) in present {
                pieces.push((
                    field,
                    json_view::range_in(data, raw.get())?,
                    json_view::as_str(raw)?,
                ));
            }
            let finished = !json_view::is_null(choice.finish_reason);
            work.push((choice.index_or(position), logprobs, pieces, finished));
        }
        let rewritten = self.mask_in_place(data, work, host);
        Some(rewritten.map(|rewritten| {
            if let Some(data) = rewritten {
                event.data = data;
            }
        }))
    }

    /// Feeds the chunk's texts (read by `on_event_in_place`) to their holds and rewrites the
    /// strings whose released text differs. Returns the new text of the event, if it changed.
    fn mask_in_place(
        &mut self,
        data: &str,
        work: Vec<ChoiceTexts<'_>>,
        host: &mut dyn Host,
    ) -> Result<Option<String>, ApiError> {
        let mut edits = Edits::default();
        for (index, logprobs, pieces, finished) in work {
            if let Some(range) = logprobs {
                edits.replace(range, b"null".to_vec());
            }
            let mut outputs = Vec::with_capacity(pieces.len());
            for (field, range, piece) in pieces {
                let released = self.feed(index, field, &piece, host)?;
                outputs.push((field, range, piece, released));
            }
            if finished {
                for field in self.held_fields(index) {
                    let rest = self.flush(index, field, host)?;
                    if let Some(output) = outputs.iter_mut().find(|(f, ..)| *f == field) {
                        output.3.push_str(&rest);
                    }
                }
            }
            for (_, range, piece, released) in outputs {
                if released != piece {
                    edits.replace_with_str(range, &released);
                }
            }
        }
        if edits.is_empty() {
            return Ok(None);
        }
        // Ranges come from one parse of this text and never overlap; should the rewrite fail
        // anyway, the stream ends rather than pass unmasked text.
        let rewritten = edits
            .apply(data.as_bytes())
            .and_then(|bytes| String::from_utf8(bytes).ok());
        match rewritten {
            Some(data) => Ok(Some(data)),
            None => Err(self.verdict.fail_closed(host, guard_failed())),
        }
    }

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
        let guard = Rc::clone(&self.verdict.guard);
        let released = match self.hold(choice, field) {
            Some(hold) => hold.push(&guard.scanner, piece),
            None => Ok(Released::default()),
        };
        match released {
            Ok(released) => self.verdict.judge(released, host),
            Err(Overflow) => Err(self.verdict.fail_closed(host, guard_failed())),
        }
    }

    fn flush(
        &mut self,
        choice: u64,
        field: Field,
        host: &mut dyn Host,
    ) -> Result<String, ApiError> {
        let guard = Rc::clone(&self.verdict.guard);
        let released = match self.hold(choice, field) {
            Some(hold) => hold.finish(&guard.scanner),
            None => Released::default(),
        };
        self.verdict.judge(released, host)
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
        let last: Map<String, Value> = LAST_KEYS
            .iter()
            .zip(&self.last)
            .filter_map(|(key, raw)| {
                let value = serde_json::from_str(raw.as_deref()?).ok()?;
                Some((key.to_string(), value))
            })
            .collect();
        let legacy = last.get("object").and_then(Value::as_str) == Some("text_completion");
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
        let mut chunk = last;
        chunk
            .entry("object")
            .or_insert_with(|| Value::String("chat.completion.chunk".into()));
        chunk.insert("choices".into(), Value::Array(choices));
        out.push(SseEvent::data(Value::Object(chunk).to_string()));
        Ok(())
    }
}

/// The regex guard as every stream masker (chat, Messages, Responses) applies it to what its
/// holdbacks release: text with a hit is masked (counted once per stream) or, under
/// `reject`, ends the stream; a stream it cannot check fails closed.
#[derive(Debug)]
pub struct StreamGuard {
    pub guard: Rc<RegexGuard>,
    counted: bool,
}

impl StreamGuard {
    pub fn new(guard: Rc<RegexGuard>) -> Self {
        StreamGuard {
            guard,
            counted: false,
        }
    }

    /// The released text to send, or the guard's block when it had a hit under `reject`.
    pub fn judge(&mut self, released: Released, host: &mut dyn Host) -> Result<String, ApiError> {
        if released.hits == 0 {
            return Ok(released.text);
        }
        match self.guard.action {
            RegexAction::Reject => Err(self.guard.info.block(host)),
            RegexAction::Mask => {
                self.count_mask(host);
                Ok(released.text)
            }
        }
    }

    /// Counts the guard's mask, once per stream.
    pub fn count_mask(&mut self, host: &mut dyn Host) {
        if !self.counted {
            self.counted = true;
            self.guard.info.masked(host);
        }
    }

    /// Masks (or, rejecting, checks) every text `walk` visits, each as a whole (texts that
    /// arrive whole in one event); true when one changed.
    pub fn whole(
        &mut self,
        host: &mut dyn Host,
        walk: impl FnOnce(&mut super::text::Visitor<'_>) -> bool,
    ) -> Result<bool, ApiError> {
        let guard = Rc::clone(&self.guard);
        match guard.action {
            RegexAction::Reject => {
                let mut found = false;
                walk(&mut |text: &mut String| {
                    found = found || guard.scanner.has_hit(text);
                    false
                });
                if found {
                    return Err(guard.info.block(host));
                }
                Ok(false)
            }
            RegexAction::Mask => {
                let changed = walk(&mut |text: &mut String| guard.scanner.mask(text));
                if changed {
                    self.count_mask(host);
                }
                Ok(changed)
            }
        }
    }

    /// The guard could not check the stream: counted as `failed_closed`, and the stream ends
    /// with `error` in band.
    pub fn fail_closed(&self, host: &mut dyn Host, error: ApiError) -> ApiError {
        self.guard.info.count(host, Outcome::FailedClosed);
        error
    }
}

/// A stream grew past what a masker may hold (`Overflow`).
pub fn guard_failed() -> ApiError {
    ApiError::new(
        500,
        "api_error",
        "guard_failed",
        "The gateway could not apply the response guard to the stream.",
    )
}

/// What an event that cannot be read gets, in band.
pub fn unreadable_event() -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "invalid_upstream_response",
        "The provider's stream could not be read.",
    )
}

/// Per choice of a chunk: its index, the range of non-null `logprobs`, its text fields
/// (field, range of the JSON string, text), and whether it finished.
type ChoiceTexts<'a> = (
    u64,
    Option<Range<usize>>,
    Vec<(Field, Range<usize>, Cow<'a, str>)>,
    bool,
);

/// The parts of a streamed chunk the masker reads, borrowed from the event's text.
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow)]
    index: Option<&'a RawValue>,
    #[serde(borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
    #[serde(borrow)]
    function_call: Option<FunctionView<'a>>,
}

fn raw_u64(raw: Option<&RawValue>) -> Option<u64> {
    raw.and_then(|raw| raw.get().parse::<u64>().ok())
}

impl<'a> ChoiceView<'a> {
    fn index_or(&self, position: usize) -> u64 {
        raw_u64(self.index).unwrap_or(position as u64)
    }

    /// The text fields this chunk carries, in the order `fields_present` lists them.
    fn texts(&self) -> Vec<(Field, &'a RawValue)> {
        let string =
            |raw: Option<&'a RawValue>| raw.filter(|raw| json_view::kind(raw) == Kind::String);
        let mut texts = Vec::new();
        if let Some(delta) = &self.delta {
            if let Some(raw) = string(delta.content) {
                texts.push((Field::Content, raw));
            }
            if let Some(raw) = string(delta.refusal) {
                texts.push((Field::Refusal, raw));
            }
        }
        if let Some(raw) = string(self.text) {
            texts.push((Field::Text, raw));
        }
        if let Some(calls) = self.delta.as_ref().and_then(|d| d.tool_calls.as_ref()) {
            for (position, call) in calls.iter().enumerate() {
                let index = raw_u64(call.index).unwrap_or(position as u64);
                if let Some(raw) = string(call.function.as_ref().and_then(|f| f.arguments)) {
                    texts.push((Field::Tool(index), raw));
                }
            }
        }
        let legacy = self.delta.as_ref().and_then(|d| d.function_call.as_ref());
        if let Some(raw) = string(legacy.and_then(|f| f.arguments)) {
            texts.push((Field::Function, raw));
        }
        texts
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
    if delta
        .and_then(|d| d.get("function_call"))
        .and_then(|f| f.get("arguments"))
        .is_some_and(Value::is_string)
    {
        fields.push(Field::Function);
    }
    fields
}

/// The string of `field` in a streamed choice; with `create`, made (empty) when missing.
fn slot_mut(choice: &mut Value, field: Field, create: bool) -> Option<&mut String> {
    let object = choice.as_object_mut()?;
    let (container, key) = match field {
        Field::Text => (object, "text"),
        Field::Content | Field::Refusal | Field::Tool(_) | Field::Function => {
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
                Field::Function => {
                    let function = delta.entry("function_call").or_insert_with(|| json!({}));
                    if !function.is_object() {
                        if !create {
                            return None;
                        }
                        *function = json!({});
                    }
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
