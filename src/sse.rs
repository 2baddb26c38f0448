//! Incremental Server-Sent Events framing. Bytes arrive in arbitrary chunks; events come
//! out only when complete (terminated by a blank line), whatever the chunk boundaries.

/// One complete event. `data` joins multiple `data:` lines with '\n' as the spec says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    /// Serialises the event in the canonical `event:`/`data:` form ending in a blank line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    pub fn is_done_marker(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Accumulates bytes and yields whole events. Handles LF, CRLF and CR line endings, and a
/// CRLF pair split across two chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended in '\r': a '\n' starting the next chunk belongs to it.
    skip_leading_lf: bool,
    /// Upper bound for one incomplete line, so a peer that never ends a line cannot grow memory.
    max_line_bytes: usize,
    overflowed: bool,
}

pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

impl SseParser {
    pub fn new() -> Self {
        SseParser {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            ..Default::default()
        }
    }

    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        SseParser {
            max_line_bytes,
            ..Default::default()
        }
    }

    /// True once a single line exceeded the bound; the rest of that line was dropped.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// True between events: no partial line or event is held, so the next byte starts a new
    /// event and the bytes fed so far were whole events.
    pub fn at_event_boundary(&self) -> bool {
        self.pending.is_empty()
            && self.event.is_none()
            && self.data.is_none()
            && !self.skip_leading_lf
    }

    /// Feeds a chunk and appends every event it completes to `events`.
    pub fn push(&mut self, mut chunk: &[u8], events: &mut Vec<SseEvent>) {
        if self.skip_leading_lf && !chunk.is_empty() {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            self.skip_leading_lf = false;
        }
        let mut start = 0;
        while let Some(found) = chunk.get(start..).and_then(crate::find::line_end) {
            let index = start + found;
            let line_part = chunk.get(start..index).unwrap_or_default();
            if self.pending.is_empty() {
                self.take_line(line_part, events);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(line_part);
                self.take_line(&line, events);
            }
            start = index + 1;
            if chunk.get(index) == Some(&b'\r') {
                match chunk.get(index + 1) {
                    Some(b'\n') => start += 1,
                    None => self.skip_leading_lf = true,
                    Some(_) => {}
                }
            }
        }
        let rest = chunk.get(start..).unwrap_or_default();
        if self.pending.len() + rest.len() > self.max_line_bytes {
            self.overflowed = true;
            self.pending.clear();
        } else {
            self.pending.extend_from_slice(rest);
        }
    }

    /// At end of stream: a final event without its blank line still counts.
    pub fn finish(&mut self, events: &mut Vec<SseEvent>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.take_line(&line, events);
        }
        self.dispatch(events);
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (field, value) = match crate::find::byte(line, b':') {
            Some(colon) => {
                let value = line.get(colon + 1..).unwrap_or_default();
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (line.get(..colon).unwrap_or_default(), value)
            }
            None => (line, &b""[..]),
        };
        // Valid UTF-8 (the normal case) is checked word by word; only invalid input pays
        // for the lossy conversion.
        let value = match std::str::from_utf8(value) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // id, retry and unknown fields do not matter to the filter
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            events.push(SseEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\r\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\n";

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut events);
        }
        parser.finish(&mut events);
        events
    }

    #[test]
    fn parses_whole_stream() {
        let events = parse_all(&[STREAM.as_bytes()]);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event.as_deref(), Some("message_start"));
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].data, "line1\nline2");
        assert!(events[2].is_done_marker());
    }

    #[test]
    fn same_events_at_every_split_point() {
        let expected = parse_all(&[STREAM.as_bytes()]);
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse_all(&[a, b]), expected, "cut at {cut}");
        }
        for cut1 in 0..bytes.len() {
            for cut2 in cut1..bytes.len() {
                let chunks = [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]];
                assert_eq!(parse_all(&chunks), expected, "cuts at {cut1},{cut2}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let expected = parse_all(&[STREAM.as_bytes()]);
        let chunks: Vec<&[u8]> = STREAM.as_bytes().chunks(1).collect();
        assert_eq!(parse_all(&chunks), expected);
    }

    #[test]
    fn cr_only_line_endings() {
        let events = parse_all(&[b"data: a\r\rdata: b\r\r"]);
        assert_eq!(events, vec![SseEvent::data("a"), SseEvent::data("b")]);
    }

    #[test]
    fn unterminated_final_event_is_flushed() {
        let events = parse_all(&[b"data: {\"x\":1}"]);
        assert_eq!(events, vec![SseEvent::data("{\"x\":1}")]);
    }

    #[test]
    fn overlong_line_is_bounded() {
        let mut parser = SseParser::with_max_line_bytes(16);
        let mut events = Vec::new();
        parser.push(&[b'x'; 64], &mut events);
        assert!(parser.overflowed());
        parser.push(b"\n\ndata: ok\n\n", &mut events);
        assert_eq!(events, vec![SseEvent::data("ok")]);
    }

    #[test]
    fn write_round_trips() {
        let event = SseEvent {
            event: Some("delta".into()),
            data: "a\nb".into(),
        };
        let mut out = Vec::new();
        event.write_to(&mut out);
        assert_eq!(parse_all(&[&out]), vec![event]);
    }
}
