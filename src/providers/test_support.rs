//! Helpers for the codec tests: recorded-style fixtures and running a stream through the
//! pipeline's `StreamProcessor` in arbitrary chunks.

use serde_json::Value;

use super::StreamDecoder;
use crate::host::RecordingHost;
use crate::pipeline::stream::StreamProcessor;
use crate::sse::SseParser;

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/providers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Feeds `chunks` (the last one ends the stream) and returns everything written.
pub fn process_stream(
    decoder: Option<Box<dyn StreamDecoder>>,
    chunks: &[&[u8]],
    strip_usage_chunk: bool,
) -> Vec<u8> {
    let mut host = RecordingHost::new();
    let mut processor = StreamProcessor::new(decoder, Vec::new(), strip_usage_chunk);
    let mut out = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let end = index + 1 == chunks.len();
        match processor.push(chunk, end, &mut host) {
            Some(bytes) => out.extend_from_slice(&bytes),
            None => out.extend_from_slice(chunk),
        }
    }
    out
}

pub fn chunks_of(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    bytes.chunks(size).collect()
}

/// The events' data as JSON (`[DONE]` as the string "[DONE]").
pub fn events_json(stream: &[u8]) -> Vec<Value> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(stream, &mut events);
    parser.finish(&mut events);
    events
        .iter()
        .map(|event| {
            serde_json::from_str(&event.data).unwrap_or_else(|_| Value::String(event.data.clone()))
        })
        .collect()
}
