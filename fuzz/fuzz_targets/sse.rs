//! SSE framing: the same events whatever the chunking (the first byte picks the cut).
#![no_main]

use aigate_core::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut parser = SseParser::new();
    parser.push(stream, &mut whole);
    parser.finish(&mut whole);

    let cut = usize::from(cut).min(stream.len());
    let (a, b) = stream.split_at(cut);
    let mut split = Vec::new();
    let mut parser = SseParser::new();
    parser.push(a, &mut split);
    parser.push(b, &mut split);
    parser.finish(&mut split);
    assert_eq!(whole, split);
    for event in &whole {
        let _ = aigate_core::usage::from_stream_event(&event.data);
    }
});
