//! Keeps the configured credentials out of what leaves the filter. A provider (or a callout
//! service) may echo the key it received ("Incorrect API key provided: Bearer sk-..."); every
//! byte the filter relays or writes to the client passes through a `Redactor`, which replaces
//! each occurrence of a configured secret with `*` of the same length (so a `content-length`
//! stays right and JSON stays valid). The `Bearer ` form is covered by the secret itself.
//!
//! Matching works on the text as JSON would read it: `\uXXXX` and `\/`-style escapes count as
//! the character they stand for, so `\u0073k-...` is found too. A match split across body
//! chunks is found as well: the redactor holds back the shortest tail that could still begin a
//! secret and releases it with the next chunk (or at the end). Time is linear in the input:
//! every byte is read once, with one KMP step per secret.
//!
//! Secrets shorter than `MIN_SECRET_LEN` bytes are not redacted: replacing every "abc-1" in
//! answers would mangle them, and no provider issues keys that short (local mocks and tests use
//! such placeholders). The filter logs a warning at configure time when the config has one.

use std::collections::VecDeque;

use serde_json::Value;

/// The shortest secret the config accepts (and so the shortest that is redacted).
pub const MIN_SECRET_LEN: usize = 8;

/// The configured secrets of a plan, ready to match. Empty when none is configured.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    patterns: Vec<Pattern>,
    max_len: usize,
    /// Configured secrets shorter than `MIN_SECRET_LEN`: not redacted (see the module doc).
    too_short: usize,
    /// Bytes that can begin a match (a secret's first byte, or `\` of an escape): 256
    /// entries, or none without secrets. Other bytes are skipped while nothing is matching.
    starts: Vec<bool>,
}

#[derive(Clone)]
struct Pattern {
    bytes: Vec<u8>,
    /// KMP failure function: longest proper border of `bytes[..=i]`.
    border: Vec<usize>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pattern(<{} bytes>)", self.bytes.len())
    }
}

impl Pattern {
    fn new(bytes: Vec<u8>) -> Self {
        let mut border = vec![0; bytes.len()];
        let mut k = 0;
        for i in 1..bytes.len() {
            while k > 0 && bytes[i] != bytes[k] {
                k = border[k - 1];
            }
            if bytes[i] == bytes[k] {
                k += 1;
            }
            border[i] = k;
        }
        Pattern { bytes, border }
    }

    /// One KMP step from `state` (bytes matched so far) on `byte`.
    fn step(&self, mut state: usize, byte: u8) -> usize {
        if state == self.bytes.len() {
            state = self.border[state - 1];
        }
        while state > 0 && self.bytes[state] != byte {
            state = self.border[state - 1];
        }
        if self.bytes[state] == byte {
            state + 1
        } else {
            0
        }
    }
}

impl Secrets {
    /// Secrets shorter than `MIN_SECRET_LEN` are left out (the config refuses them anyway).
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort();
        values.dedup();
        let all = values.len();
        values.retain(|v| v.len() >= MIN_SECRET_LEN);
        let too_short = all - values.len();
        let max_len = values.iter().map(String::len).max().unwrap_or(0);
        let mut starts = Vec::new();
        if !values.is_empty() {
            starts = vec![false; 256];
            starts[usize::from(b'\\')] = true;
            for value in &values {
                if let Some(first) = value.bytes().next() {
                    starts[usize::from(first)] = true;
                }
            }
        }
        Secrets {
            patterns: values
                .into_iter()
                .map(|v| Pattern::new(v.into_bytes()))
                .collect(),
            max_len,
            too_short,
            starts,
        }
    }

    /// How many configured secrets are too short to be redacted.
    pub fn too_short(&self) -> usize {
        self.too_short
    }

    /// Every `auth.key` of a raw plugin config (providers, fallbacks, callout endpoints),
    /// resolved the way the filter resolves it.
    pub fn from_config(config: &Value, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut found = Vec::new();
        collect(config, env, &mut found);
        Secrets::new(found)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// A redactor for one stream of bytes (one answer body).
    pub fn redactor(&self) -> Redactor {
        Redactor {
            states: vec![0; self.patterns.len()],
            pending: Vec::new(),
            emitted: 0,
            scanned: 0,
            spans: VecDeque::with_capacity(self.max_len),
            marks: Vec::new(),
            redacted: false,
        }
    }

    /// The whole of `bytes` redacted; None when no secret occurs (the common case).
    pub fn redact(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let mut redactor = self.redactor();
        let out = redactor.push(self, bytes, true);
        redactor.changed().then_some(out)
    }

    /// `text` with every secret redacted.
    pub fn redact_str(&self, text: &str) -> String {
        match self.redact(text.as_bytes()) {
            Some(out) => String::from_utf8_lossy(&out).into_owned(),
            None => text.to_string(),
        }
    }
}

/// Every `auth.key` secret of a raw config (providers, fallbacks, callout endpoints), resolved
/// the way the filter resolves it; shared with the CLI's redaction of what it prints.
pub fn collect(value: &Value, env: &dyn Fn(&str) -> Option<String>, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(key) = object.get("auth").and_then(|auth| auth.get("key")) {
                if let Some(name) = key.get("env").and_then(Value::as_str) {
                    out.extend(env(name));
                }
                if let Some(literal) = key.get("value").and_then(Value::as_str) {
                    out.push(literal.to_string());
                }
            }
            for child in object.values() {
                collect(child, env, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect(child, env, out);
            }
        }
        _ => {}
    }
}

/// Redacts one byte stream fed in chunks, always with the `Secrets` that made it. Offsets
/// are absolute in the stream.
#[derive(Debug, Default)]
pub struct Redactor {
    /// Bytes matched so far per pattern.
    states: Vec<usize>,
    /// Bytes from `emitted` on, not yet returned.
    pending: Vec<u8>,
    emitted: usize,
    /// Bytes before this offset have been read.
    scanned: usize,
    /// The raw span of each of the last `max_len` decoded bytes.
    spans: VecDeque<(usize, usize)>,
    /// Raw ranges to redact (absolute, ends exclusive), not yet returned.
    marks: Vec<(usize, usize)>,
    redacted: bool,
}

impl Redactor {
    /// Feeds a chunk; returns the bytes that can be released now (redacted). At
    /// `end_of_stream` everything held back is released.
    pub fn push(&mut self, secrets: &Secrets, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.states.len() != secrets.patterns.len() {
            // A `Default` redactor starts matching on its first chunk.
            self.states = vec![0; secrets.patterns.len()];
        }
        if secrets.is_empty() {
            let mut out = std::mem::take(&mut self.pending);
            out.extend_from_slice(chunk);
            self.emitted += out.len();
            self.scanned = self.emitted;
            return out;
        }
        self.pending.extend_from_slice(chunk);
        let end = self.emitted + self.pending.len();
        while self.scanned < end {
            let at = self.scanned - self.emitted;
            if self.states.iter().all(|state| *state == 0) {
                // Nothing is matching: skip to the next byte that could begin a match.
                let skip = self.pending[at..]
                    .iter()
                    .position(|b| secrets.starts.get(usize::from(*b)).copied().unwrap_or(true))
                    .unwrap_or(end - self.scanned);
                if skip > 0 {
                    self.scanned += skip;
                    self.spans.clear();
                    continue;
                }
            }
            let Some((decoded, len)) = unit(&self.pending[at..], end_of_stream) else {
                break; // an escape cut by the chunk boundary: wait for the rest
            };
            let span = (self.scanned, self.scanned + len);
            self.scanned += len;
            for byte in decoded.bytes() {
                self.feed(secrets, byte, span);
            }
        }
        let mut boundary = if end_of_stream { end } else { self.scanned };
        if !end_of_stream {
            for (pattern, &state) in secrets.patterns.iter().zip(&self.states) {
                // The bytes that may still begin a secret: after a whole match, its border.
                let partial = if state == pattern.bytes.len() {
                    pattern.border[state - 1]
                } else {
                    state
                };
                if partial > 0 {
                    if let Some(&(start, _)) =
                        self.spans.get(self.spans.len().saturating_sub(partial))
                    {
                        boundary = boundary.min(start);
                    }
                }
            }
        }
        let take = boundary
            .saturating_sub(self.emitted)
            .min(self.pending.len());
        let mut out: Vec<u8> = self.pending.drain(..take).collect();
        for &(start, stop) in &self.marks {
            let from = start.max(self.emitted);
            let to = stop.min(boundary);
            for index in from..to {
                if let Some(byte) = out.get_mut(index - self.emitted) {
                    *byte = b'*';
                }
            }
        }
        self.emitted = boundary;
        let emitted = self.emitted;
        self.redacted |= !self.marks.is_empty();
        self.marks.retain(|&(_, stop)| stop > emitted);
        out
    }

    fn feed(&mut self, secrets: &Secrets, byte: u8, span: (usize, usize)) {
        if self.spans.len() == secrets.max_len {
            self.spans.pop_front();
        }
        self.spans.push_back(span);
        for (pattern, state) in secrets.patterns.iter().zip(self.states.iter_mut()) {
            *state = pattern.step(*state, byte);
            if *state == pattern.bytes.len() {
                let first = self.spans.len() - pattern.bytes.len();
                if let Some(&(start, _)) = self.spans.get(first) {
                    self.marks.push((start, span.1));
                }
            }
        }
    }

    /// True once some secret was found in what was released.
    pub fn changed(&self) -> bool {
        self.redacted
    }
}

/// One unit of raw text as JSON reads it: the decoded bytes and how many raw bytes it took.
/// None when `raw` ends inside an escape and more input may follow.
fn unit(raw: &[u8], end_of_stream: bool) -> Option<(Decoded, usize)> {
    let first = *raw.first()?;
    if first != b'\\' {
        return Some((Decoded::one(first), 1));
    }
    let Some(&next) = raw.get(1) else {
        return end_of_stream.then_some((Decoded::one(first), 1));
    };
    let simple = match next {
        b'"' | b'\\' | b'/' => Some(next),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    };
    if let Some(byte) = simple {
        return Some((Decoded::one(byte), 2));
    }
    if next != b'u' {
        return Some((Decoded::one(first), 1));
    }
    if raw.len() < 6 {
        // `\u` with fewer than four hex digits so far.
        let complete_so_far = raw[2..].iter().all(u8::is_ascii_hexdigit);
        return if complete_so_far && !end_of_stream {
            None
        } else {
            Some((Decoded::one(first), 1))
        };
    }
    let hex = std::str::from_utf8(&raw[2..6]).ok();
    let Some(code) = hex.and_then(|h| u32::from_str_radix(h, 16).ok()) else {
        return Some((Decoded::one(first), 1));
    };
    // A surrogate (half of a pair) never matches a secret's byte: 0xFF is not UTF-8.
    let decoded = char::from_u32(code).map_or(Decoded::one(0xff), Decoded::char);
    Some((decoded, 6))
}

/// Up to four decoded bytes (one UTF-8 character) without an allocation.
struct Decoded {
    bytes: [u8; 4],
    len: usize,
}

impl Decoded {
    fn one(byte: u8) -> Self {
        Decoded {
            bytes: [byte, 0, 0, 0],
            len: 1,
        }
    }

    fn char(c: char) -> Self {
        let mut bytes = [0; 4];
        let len = c.encode_utf8(&mut bytes).len();
        Decoded { bytes, len }
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.bytes.iter().copied().take(self.len)
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
