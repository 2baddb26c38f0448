//! The pipeline's promises about work it does not do (issue 7): no needless header round
//! trips, and a plain OpenAI stream passes chunk by chunk without being re-serialised. In
//! Envoy each host call leaves the Wasm VM, so these counts are costs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::counting_host::CountingHost;
use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use aigate_core::sse::{SseEvent, SseParser};
use serde_json::json;

const SECRET: &str = "sk-upstream-secret";

fn plan() -> Rc<Plan> {
    let config = json!({"routes": [{
        "name": "chat",
        "match": {"route_name": "llm"},
        "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"key": {"value": SECRET}}}
    }]});
    let env = |_: &str| None;
    Rc::new(parse_and_compile(config.to_string().as_bytes(), &env).unwrap())
}

fn host(headers: &[(&str, &str)], body: &[u8]) -> CountingHost {
    let mut inner = RecordingHost::new();
    inner.request_headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    inner.request_body = body.to_vec();
    inner.set_property_value(&["xds", "route_name"], b"llm");
    CountingHost::new(inner)
}

fn header_writes(host: &CountingHost) -> u32 {
    host.count_of("set_request_header") + host.count_of("remove_request_header")
}

fn send(flow: &mut Flow, host: &mut CountingHost) {
    assert_eq!(flow.on_request_headers(host, false), Action::Continue);
    let size = host.inner.request_body.len();
    assert_eq!(flow.on_request_body(host, size, true), Action::Continue);
    assert!(
        host.inner.local_response.is_none(),
        "{:?}",
        host.inner.local_response
    );
}

const CHAT: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn a_typical_request_writes_only_the_headers_that_change() {
    let mut host = host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost:10000"),
            ("authorization", "Bearer sk-client"),
            ("content-type", "application/json"),
            ("content-length", "68"),
            ("accept-encoding", "identity"),
        ],
        CHAT,
    );
    let mut flow = Flow::new(plan());
    send(&mut flow, &mut host);
    // :authority, the credential (replacing the client's), content-length: nothing else.
    assert_eq!(header_writes(&host), 3, "{:?}", host.calls());
    assert_eq!(
        host.inner.request_header("accept-encoding"),
        Some("identity")
    );
    let inner = &host.inner;
    assert_eq!(inner.request_header(":authority"), Some("upstream.local"));
    assert_eq!(inner.request_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(
        inner.request_header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(
        inner.request_header("content-type"),
        Some("application/json")
    );
    assert_eq!(inner.request_header("content-length"), None);
}

#[test]
fn headers_that_differ_are_still_written() {
    let mut host = host(
        &[
            (":method", "POST"),
            (":path", "/openai/v1/chat/completions?x=1"),
            (":authority", "localhost:10000"),
            ("x-api-key", "client-key"),
            ("api-key", "client-key"),
            ("accept-encoding", "gzip"),
            ("content-type", "text/plain"),
            ("content-type", "application/json"),
        ],
        CHAT,
    );
    let mut flow = Flow::new(plan());
    send(&mut flow, &mut host);
    let inner = &host.inner;
    assert_eq!(inner.request_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(inner.request_header("x-api-key"), None);
    assert_eq!(inner.request_header("api-key"), None);
    assert_eq!(inner.request_header("accept-encoding"), Some("identity"));
    let content_types: Vec<_> = inner
        .request_headers
        .iter()
        .filter(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(content_types, ["application/json"]);
    assert_eq!(
        inner.request_header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

fn stream_events() -> Vec<String> {
    let mut events: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}},\"finish_reason\":null}}]}}\n\n"
            )
        })
        .collect();
    events.push("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":20,\"total_tokens\":25}}\n\n".into());
    events.push("data: [DONE]\n\n".into());
    events
}

/// Streams `chunks` through a flow whose client did not ask for usage (so the filter asked
/// upstream for it and must drop it); returns what the client receives.
fn stream_through(chunks: &[&[u8]]) -> (Vec<u8>, CountingHost) {
    let mut host = host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost:10000"),
            ("content-type", "application/json"),
        ],
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan());
    send(&mut flow, &mut host);
    let upstream: serde_json::Value = serde_json::from_slice(&host.inner.request_body).unwrap();
    assert_eq!(upstream["stream_options"]["include_usage"], json!(true));
    host.inner.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
    ];
    flow.on_response_headers(&mut host, false);
    host.reset_counts();
    let mut client = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        host.inner.response_body = chunk.to_vec();
        let end = index + 1 == chunks.len();
        assert_eq!(
            flow.on_response_body(&mut host, chunk.len(), end),
            Action::Continue
        );
        client.extend_from_slice(&host.inner.response_body);
    }
    flow.on_log(&mut host);
    (client, host)
}

fn parse(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(bytes, &mut events);
    parser.finish(&mut events);
    events
}

#[test]
fn a_plain_openai_stream_passes_chunk_by_chunk() {
    let events = stream_events();
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let (client, host) = stream_through(&chunks);
    // Only the chunk holding the usage-only event is rewritten (to nothing).
    assert_eq!(host.count_of("set_response_body"), 1, "{:?}", host.calls());
    let mut expected: Vec<u8> = Vec::new();
    for event in events.iter().filter(|e| !e.contains("\"usage\"")) {
        expected.extend_from_slice(event.as_bytes());
    }
    assert_eq!(client, expected, "content chunks pass byte for byte");
    assert_eq!(
        host.inner
            .filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("25")
    );
}

#[test]
fn a_stream_split_anywhere_reaches_the_client_whole() {
    let whole: String = stream_events().concat();
    let bytes = whole.as_bytes();
    let expected: Vec<SseEvent> = parse(bytes)
        .into_iter()
        .filter(|e| !e.data.contains("\"usage\""))
        .collect();
    for cut in 1..bytes.len() {
        let (client, host) = stream_through(&[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(parse(&client), expected, "cut at {cut}");
        assert_eq!(
            host.inner
                .filter_state
                .get("aigate.total_tokens")
                .map(String::as_str),
            Some("25"),
            "cut at {cut}"
        );
    }
    for cut1 in (1..bytes.len()).step_by(101) {
        for cut2 in (cut1..bytes.len()).step_by(67) {
            let (client, _) = stream_through(&[&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]]);
            assert_eq!(parse(&client), expected, "cuts at {cut1},{cut2}");
        }
    }
}

#[test]
fn the_parser_knows_when_it_is_between_events() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    assert!(parser.at_event_boundary());
    parser.push(b"data: a", &mut events);
    assert!(!parser.at_event_boundary(), "partial line");
    parser.push(b"\n", &mut events);
    assert!(!parser.at_event_boundary(), "event not ended");
    parser.push(b"\n", &mut events);
    assert!(parser.at_event_boundary());
    parser.push(b"data: b\r\n\r", &mut events);
    assert!(!parser.at_event_boundary(), "a CR whose LF may follow");
    parser.push(b"\n: comment\n", &mut events);
    assert!(parser.at_event_boundary());
    assert_eq!(events, vec![SseEvent::data("a"), SseEvent::data("b")]);
}

#[test]
fn a_json_answer_reads_one_header_and_no_empty_chunk() {
    let mut host = host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost:10000"),
            ("content-type", "application/json"),
        ],
        CHAT,
    );
    let mut flow = Flow::new(plan());
    send(&mut flow, &mut host);
    host.inner.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ];
    host.reset_counts();
    flow.on_response_headers(&mut host, false);
    // The status and content-encoding only: content-type matters only for a stream the
    // filter asked for.
    assert_eq!(
        host.count_of("get_response_header"),
        2,
        "{:?}",
        host.calls()
    );
    let answer = br#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
    host.inner.response_body = answer.to_vec();
    flow.on_response_body(&mut host, answer.len(), false);
    host.inner.response_body.clear();
    flow.on_response_body(&mut host, 0, true);
    assert_eq!(host.count_of("get_response_body"), 1, "{:?}", host.calls());
    assert_eq!(
        host.inner
            .filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("7")
    );
}

#[test]
fn a_client_without_accept_encoding_gets_identity_asked_for() {
    let mut host = host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost:10000"),
            ("content-type", "application/json"),
        ],
        CHAT,
    );
    let mut flow = Flow::new(plan());
    send(&mut flow, &mut host);
    // :authority, the credential, accept-encoding.
    assert_eq!(header_writes(&host), 3, "{:?}", host.calls());
    assert_eq!(
        host.inner.request_header("accept-encoding"),
        Some("identity")
    );
}
