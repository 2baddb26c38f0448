//! The upstream of `make bench`: HTTP/1.1 keep-alive, one thread per connection, fixed
//! answers, so every side of the benchmark talks to the same cheap server.
//!
//! - default: a `chat.completion` JSON answer with usage (content-length).
//! - a path starting with `/v1/messages`: the same as an Anthropic Message (JSON, or the
//!   Messages event stream: `message_start`, n `text_delta` events, `message_delta` with
//!   usage, `message_stop`).
//! - `x-bench-stream: <n>`: an SSE answer of n content events (one chunked-encoding chunk
//!   and one write each), a usage-only event, and `[DONE]`.
//! - `x-bench-gap-ms: <ms>` (streams): sleep after the first event, so a filter that holds
//!   the stream back shows up as a time to first byte of at least the gap.
//!
//! Usage: `bench-upstream [port]` (0 or absent = any free port); prints `port <n>` once
//! listening, and exits when its standard input closes (so it never outlives the benchmark
//! that started it). Request bodies (content-length or chunked) are read and discarded.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"#,
    r#""model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","#,
    r#""content":"Hello! The quick brown fox jumps over the lazy dog. Write to bench.user@example.com if needed."},"#,
    r#""finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":21,"total_tokens":271}}"#
);

const MESSAGE: &str = concat!(
    r#"{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5","#,
    r#""content":[{"type":"text","text":"Hello! The quick brown fox jumps over the lazy dog. Write to bench.user@example.com if needed."}],"#,
    r#""stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":250,"output_tokens":21}}"#
);

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("port {}", listener.local_addr()?.port());
    io::stdout().flush()?;
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let _ = serve(stream);
        });
    }
    Ok(())
}

struct Request {
    stream_events: usize,
    gap_ms: u64,
    /// Anthropic Messages (`/v1/messages...`) rather than chat completions.
    messages: bool,
}

fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    let mut out = Vec::with_capacity(64 * 1024);
    while let Some(request) = read_request(&mut reader)? {
        if request.stream_events == 0 {
            let answer = if request.messages { MESSAGE } else { COMPLETION };
            out.clear();
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                answer.len(),
                answer
            )?;
            writer.write_all(&out)?;
        } else if request.messages {
            write_messages_stream(&mut writer, &mut out, &request)?;
        } else {
            write_stream(&mut writer, &mut out, &request)?;
        }
    }
    Ok(())
}

/// Reads one request (head and body); None at a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut request = Request {
        stream_events: 0,
        gap_ms: 0,
        messages: false,
    };
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end();
        if first {
            first = false;
            // Request line: chat completions everywhere but the Messages paths.
            request.messages = trimmed
                .split(' ')
                .nth(1)
                .is_some_and(|path| path.starts_with("/v1/messages"));
            continue;
        }
        if trimmed.is_empty() {
            break;
        }
        let Some((name, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "x-bench-stream" => request.stream_events = value.parse().unwrap_or(0),
            "x-bench-gap-ms" => request.gap_ms = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            discard(reader, size)?;
            line.clear();
            reader.read_line(&mut line)?; // CRLF after the chunk (or after the trailers)
            if size == 0 {
                break;
            }
        }
    } else {
        discard(reader, content_length)?;
    }
    Ok(Some(request))
}

fn discard(reader: &mut BufReader<TcpStream>, size: usize) -> io::Result<()> {
    let copied = io::copy(&mut reader.by_ref().take(size as u64), &mut io::sink())?;
    if copied as usize == size {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

fn write_chunk(writer: &mut TcpStream, out: &mut Vec<u8>, event: &str) -> io::Result<()> {
    out.clear();
    write!(out, "{:x}\r\n{}\r\n", event.len(), event)?;
    writer.write_all(out)
}

fn write_stream(writer: &mut TcpStream, out: &mut Vec<u8>, request: &Request) -> io::Result<()> {
    writer.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    let head = r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"#;
    let mut event = String::with_capacity(256);
    for index in 0..request.stream_events {
        event.clear();
        event.push_str(head);
        if index == 0 {
            event.push_str(r#""role":"assistant","content":""}"#);
        } else {
            event.push_str(&format!(r#""content":"tok{index} "}}"#));
        }
        if index + 1 == request.stream_events {
            event.push_str(r#","finish_reason":"stop"}]}"#);
        } else {
            event.push_str(r#","finish_reason":null}]}"#);
        }
        event.push_str("\n\n");
        write_chunk(writer, out, &event)?;
        if index == 0 && request.gap_ms > 0 {
            thread::sleep(Duration::from_millis(request.gap_ms));
        }
    }
    let usage = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":250,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
        request.stream_events,
        250 + request.stream_events
    );
    write_chunk(writer, out, &usage)?;
    write_chunk(writer, out, "data: [DONE]\n\n")?;
    writer.write_all(b"0\r\n\r\n")
}

fn write_messages_stream(
    writer: &mut TcpStream,
    out: &mut Vec<u8>,
    request: &Request,
) -> io::Result<()> {
    writer.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    write_chunk(
        writer,
        out,
        concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":250,"output_tokens":1}}}"#,
            "\n\nevent: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "\n\n"
        ),
    )?;
    let mut event = String::with_capacity(160);
    for index in 0..request.stream_events {
        event.clear();
        event.push_str("event: content_block_delta\n");
        event.push_str(&format!(
            r#"data: {{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"tok{index} "}}}}"#
        ));
        event.push_str("\n\n");
        write_chunk(writer, out, &event)?;
        if index == 0 && request.gap_ms > 0 {
            thread::sleep(Duration::from_millis(request.gap_ms));
        }
    }
    let end = format!(
        concat!(
            "event: content_block_stop\n",
            r#"data: {{"type":"content_block_stop","index":0}}"#,
            "\n\nevent: message_delta\n",
            r#"data: {{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
            "\n\nevent: message_stop\n",
            r#"data: {{"type":"message_stop"}}"#,
            "\n\n"
        ),
        request.stream_events
    );
    write_chunk(writer, out, &end)?;
    writer.write_all(b"0\r\n\r\n")
}
