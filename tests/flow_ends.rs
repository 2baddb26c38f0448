//! However an exchange ends, the filter finishes it: a request or answer ending with
//! trailers, an upstream error without a body, a stream ending in an in-band error, a
//! client gone before the usage event, an answer too large to keep, a compressed stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::limits::ledger::Table;
use aigate_core::limits::local::shard_name;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;
use support::{send_whole, sse};

fn plan(route: Value, mode_a: bool) -> Rc<Plan> {
    let mut base = json!({
        "name": "chat",
        "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"key": {"value": "sk-server"}}},
        "limits": {"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 1000000, "window_ms": 60000}]}
    });
    for (key, value) in route.as_object().unwrap() {
        base[key] = value.clone();
    }
    let config = json!({"allow_on_headers_stop_iteration": mode_a, "routes": [base]});
    support::compile(&config, &support::no_env)
}

fn host_for(body: &Value) -> RecordingHost {
    support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw.local"),
            ("authorization", "Bearer client"),
            ("content-type", "application/json"),
            ("x-user-id", "u1"),
        ],
        body.to_string().into_bytes(),
    )
}

/// Request headers, then the body in two DATA callbacks without end of stream, then the
/// trailers: what Envoy does for an HTTP/2 request whose END_STREAM is on a trailers frame.
fn send_with_trailers(flow: &mut Flow, host: &mut RecordingHost) -> Action {
    flow.on_request_headers(host, false);
    let size = host.request_body.len();
    assert_eq!(flow.on_request_body(host, size / 2, false), Action::Pause);
    assert_eq!(flow.on_request_body(host, size, false), Action::Pause);
    flow.on_request_trailers(host)
}

fn used(host: &RecordingHost, user: &str) -> u64 {
    let shard = shard_name("chat", "per-user", user);
    let Some((bytes, _)) = host.shared.get(&shard) else {
        return 0;
    };
    let table = Table::decode(bytes).unwrap();
    table.entries.get(user).map(|e| e.used).unwrap_or(0)
}

fn errors(host: &RecordingHost, code: &str) -> u64 {
    host.counter(&format!("aigate.errors_total;route=chat;code={code}"))
}

fn outcome(host: &RecordingHost) -> Option<&str> {
    host.filter_state.get("aigate.outcome").map(String::as_str)
}

fn chat(content: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": content}]})
}

fn chunk(content: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

use support::answer_headers as start_answer;

// ------------------------------------------------------------------ item 1: trailers

#[test]
fn a_request_ending_with_trailers_is_guarded_rewritten_and_budgeted() {
    for mode_a in [false, true] {
        let plan = plan(
            json!({"guards": {"request": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}}),
            mode_a,
        );
        let mut flow = Flow::new(plan);
        let mut host = host_for(&chat("my ssn is 123-45-6789", false));
        assert_eq!(
            send_with_trailers(&mut flow, &mut host),
            Action::Continue,
            "mode_a {mode_a}"
        );
        let upstream: Value = serde_json::from_slice(&host.request_body).unwrap();
        let text = upstream["messages"][0]["content"].as_str().unwrap();
        assert!(!text.contains("123-45-6789"), "mode_a {mode_a}: {text}");
        assert_eq!(
            host.request_header("authorization"),
            Some("Bearer sk-server")
        );
        // Admitted against the budget: the answer's usage is charged.
        let answer = json!({"id": "x", "object": "chat.completion", "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}});
        start_answer(&mut flow, &mut host, 200, "application/json");
        host.response_body = answer.to_string().into_bytes();
        let size = host.response_body.len();
        flow.on_response_body(&mut host, size, true);
        flow.on_log(&mut host);
        assert_eq!(used(&host, "u1"), 42, "mode_a {mode_a}");
    }
}

#[test]
fn a_request_ending_with_trailers_is_rejected_like_any_other() {
    let plan = plan(
        json!({"guards": {"request": [{"regex": {"builtins": ["ssn"], "action": "reject"}}]}}),
        false,
    );
    let mut flow = Flow::new(plan);
    let mut host = host_for(&chat("my ssn is 123-45-6789", false));
    assert_eq!(send_with_trailers(&mut flow, &mut host), Action::Pause);
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(403));
    // Nothing but trailers (no DATA at all) is an empty body, refused.
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", false));
    flow.on_request_headers(&mut host, false);
    assert_eq!(flow.on_request_trailers(&mut host), Action::Pause);
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(400));
}

fn plan_plain() -> Rc<Plan> {
    plan(json!({}), false)
}

#[test]
fn an_unreadable_body_is_never_forwarded() {
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", false));
    flow.on_request_headers(&mut host, false);
    let size = host.request_body.len();
    // The host can not give the body (Envoy has none buffered): refuse, do not forward.
    assert_eq!(
        flow.on_request_body(&mut host, size + 1_000_000, true),
        Action::Pause
    );
    let reply = host.local_response.as_ref().expect("a local reply");
    assert_eq!(reply.status, 500);
    assert!(String::from_utf8_lossy(&reply.body).contains("unreadable_request_body"));
}

/// Issue 13 item 6: a host that can not give the answer's bytes is the gateway's failure
/// (500, counted, logged), never the provider's error or, for a stream, bytes relayed past
/// the guards.
#[test]
fn an_unreadable_answer_is_an_internal_error_never_relayed() {
    let guarded =
        json!({"guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}});
    // A buffered JSON answer.
    let mut flow = Flow::new(plan(guarded.clone(), false));
    let mut host = host_for(&chat("hi", false));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "application/json");
    host.response_body =
        br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"123-45-6789"}}]}"#
            .to_vec();
    host.response_body_unreadable = true;
    let size = host.response_body.len();
    assert_eq!(
        flow.on_response_body(&mut host, size, true),
        Action::Continue
    );
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(client.contains("unreadable_response_body"), "{client}");
    assert!(!client.contains("123-45-6789"), "{client}");
    assert_eq!(outcome(&host), Some("unreadable_response_body"));
    // A guarded stream: the chunk the guard could not read is replaced by an error event.
    let mut flow = Flow::new(plan(guarded, false));
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let body = sse(&chunk("my ssn is 123-45-6789"));
    host.response_body = body.clone().into_bytes();
    host.response_body_unreadable = true;
    assert_eq!(
        flow.on_response_body(&mut host, body.len(), false),
        Action::Continue
    );
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(!client.contains("123-45-6789"), "{client}");
    assert!(client.contains("unreadable_response_body"), "{client}");
    assert!(client.ends_with("data: [DONE]\n\n"), "{client}");
    // What follows is dropped, even once the host can read it again.
    host.response_body_unreadable = false;
    host.response_body = body.clone().into_bytes();
    assert_eq!(
        flow.on_response_body(&mut host, body.len(), true),
        Action::Continue
    );
    assert!(host.response_body.is_empty());
    assert_eq!(outcome(&host), Some("unreadable_response_body"));
}

#[test]
fn an_observed_answer_the_host_will_not_give_is_an_internal_error() {
    // No response stage and an OpenAI provider: the JSON answer is relayed as it comes and
    // only observed (usage, redaction of the configured key). A chunk the host does not give
    // was relayed as an empty chunk before; now the answer ends with the API's error body,
    // counted, with the outcome set, and nothing that follows is relayed.
    let mut flow = Flow::new(plan(json!({}), false));
    let mut host = host_for(&chat("hi", false));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "application/json");
    let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"key sk-server"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    host.response_body = answer[..40].to_vec();
    host.response_body_unreadable = true;
    assert_eq!(
        flow.on_response_body(&mut host, 40, false),
        Action::Continue
    );
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(client.contains("unreadable_response_body"), "{client}");
    assert_eq!(errors(&host, "unreadable_response_body"), 1);
    assert_eq!(outcome(&host), Some("unreadable_response_body"));
    // The rest, readable again, is dropped: the client never gets the key or a JSON tail.
    host.response_body_unreadable = false;
    host.response_body = answer[40..].to_vec();
    let rest = host.response_body.len();
    assert_eq!(
        flow.on_response_body(&mut host, rest, true),
        Action::Continue
    );
    assert!(host.response_body.is_empty());
    assert_eq!(errors(&host, "unreadable_response_body"), 1);
    // Accounted once, as an error: the request is counted with its error type.
    let requests: u64 = host
        .counters
        .iter()
        .filter(|(name, _)| name.starts_with("aigate.requests_total;"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(requests, 1);
    assert!(host
        .counters
        .keys()
        .any(|name| name.starts_with("aigate.requests_total;")
            && name.contains("error.type=unreadable_response_body")));
}

#[test]
fn an_answer_ending_with_trailers_is_masked_and_accounted() {
    // Buffered JSON answer (a response guard): read and replaced from the trailers callback.
    let plan = plan(
        json!({"guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}}),
        false,
    );
    let mut flow = Flow::new(plan);
    let mut host = host_for(&chat("hi", false));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "application/json");
    let answer = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "it is 123-45-6789"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}});
    host.response_body = answer.to_string().into_bytes();
    let size = host.response_body.len();
    assert_eq!(flow.on_response_body(&mut host, size, false), Action::Pause);
    assert_eq!(flow.on_response_trailers(&mut host), Action::Continue);
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(!client.contains("123-45-6789"), "{client}");
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("11")
    );
    flow.on_log(&mut host);
    assert_eq!(used(&host, "u1"), 11);
}

fn guarded_stream(body: &str) -> (Flow, RecordingHost, String) {
    let plan = plan(
        json!({"guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}}),
        false,
    );
    let mut flow = Flow::new(plan);
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    host.response_body = body.as_bytes().to_vec();
    flow.on_response_body(&mut host, body.len(), false);
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    host.response_body.clear();
    assert_eq!(flow.on_response_trailers(&mut host), Action::Continue);
    (flow, host, client)
}

fn usage_chunk() -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})
}

#[test]
fn a_stream_ending_with_trailers_is_accounted() {
    let body = format!(
        "{}{}data: [DONE]\n\n",
        sse(&chunk("ssn 123-45-6789 ok")),
        sse(&usage_chunk())
    );
    let (_, host, client) = guarded_stream(&body);
    assert!(!client.contains("6789"), "{client}");
    assert!(
        client.contains("ssn <SSN> ok") || client.contains("<SSN>"),
        "{client}"
    );
    assert!(host.local_response.is_none());
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("11")
    );
}

/// Envoy can not add to a relayed body from the trailers callback: text the masker still
/// holds there can not be sent, so the stream ends with an error, never silently short.
#[test]
fn a_stream_ended_by_trailers_while_text_is_held_fails_clearly() {
    let body = format!(
        "{}{}",
        sse(&chunk("ssn 123-45-6789 ok 12")),
        sse(&usage_chunk())
    );
    let (_, host, client) = guarded_stream(&body);
    assert!(!client.contains("6789"), "{client}");
    let reply = host
        .local_response
        .as_ref()
        .expect("the stream is ended with an error");
    assert_eq!(reply.status, 502);
    assert!(String::from_utf8_lossy(&reply.body).contains("stream_end_undeliverable"));
    assert_eq!(outcome(&host), Some("stream_end_undeliverable"));
    assert_eq!(errors(&host, "stream_end_undeliverable"), 1);
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("11")
    );
}

// ------------------------------------------------------------------ item 16: bodiless errors

#[test]
fn an_upstream_error_without_a_body_becomes_an_error_object() {
    for status in [401u16, 429, 500, 503] {
        let mut flow = Flow::new(plan_plain());
        let mut host = host_for(&chat("hi", false));
        send_whole(&mut flow, &mut host);
        host.response_headers = vec![(":status".into(), status.to_string())];
        assert_eq!(flow.on_response_headers(&mut host, true), Action::Pause);
        let reply = host.local_response.as_ref().expect("a local reply");
        assert_eq!(reply.status, status);
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], format!("upstream_{status}"));
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/json"));
        assert_eq!(outcome(&host), Some(format!("upstream_{status}").as_str()));
        assert_eq!(errors(&host, &format!("upstream_{status}")), 1);
    }
}

#[test]
fn an_upstream_error_with_an_empty_or_text_body_becomes_an_error_object() {
    for (content_type, body) in [
        ("application/json", ""),
        ("text/plain", "upstream connect error"),
    ] {
        let mut flow = Flow::new(plan_plain());
        let mut host = host_for(&chat("hi", false));
        send_whole(&mut flow, &mut host);
        start_answer(&mut flow, &mut host, 503, content_type);
        host.response_body = body.as_bytes().to_vec();
        flow.on_response_body(&mut host, body.len(), true);
        let answer: Value = serde_json::from_slice(&host.response_body).unwrap();
        assert_eq!(answer["error"]["code"], "upstream_503", "{content_type}");
    }
}

// ------------------------------------------------------------------ item 17: in-band errors

fn anthropic_stream(events: &[(&str, Value)]) -> (RecordingHost, String) {
    let plan = plan(
        json!({"provider": {"kind": "anthropic", "authority": "a.local", "auth": {"key": {"value": "sk-ant"}}}}),
        false,
    );
    let mut flow = Flow::new(plan);
    let mut host = host_for(
        &json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    host.response_body = body.clone().into_bytes();
    flow.on_response_body(&mut host, body.len(), true);
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    flow.on_log(&mut host);
    (host, client)
}

#[test]
fn a_stream_ending_in_an_upstream_error_event_is_a_failure() {
    let (host, client) = anthropic_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    assert!(client.contains("Overloaded"), "{client}");
    assert_eq!(outcome(&host), Some("upstream_529"));
    assert_eq!(errors(&host, "upstream_529"), 1);
}

#[test]
fn a_stream_cut_before_its_end_is_a_failure() {
    let (host, client) = anthropic_stream(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        ),
    ]);
    assert!(client.contains("incomplete_upstream_stream"), "{client}");
    assert_eq!(outcome(&host), Some("incomplete_upstream_stream"));
    assert_eq!(errors(&host, "incomplete_upstream_stream"), 1);
}

#[test]
fn a_gemini_stream_cut_before_its_finish_reason_is_a_failure() {
    let plan = plan(
        json!({"provider": {"kind": "gemini", "auth": {"key": {"value": "g-key"}}, "model": "gemini-2.5-flash"}}),
        false,
    );
    let mut flow = Flow::new(plan);
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let body = sse(
        &json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "Hel"}]}}]}),
    );
    host.response_body = body.clone().into_bytes();
    flow.on_response_body(&mut host, body.len(), true);
    let client = String::from_utf8(host.response_body.clone()).unwrap();
    assert!(client.contains("incomplete_upstream_stream"), "{client}");
    assert_eq!(outcome(&host), Some("incomplete_upstream_stream"));
    assert_eq!(errors(&host, "incomplete_upstream_stream"), 1);
}

#[test]
fn an_openai_stream_with_an_error_event_is_a_failure() {
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let body = format!(
        "{}{}",
        sse(&chunk("Hel")),
        sse(
            &json!({"error": {"message": "server had an error", "type": "server_error", "code": "weird-code-123"}})
        )
    );
    host.response_body = body.clone().into_bytes();
    flow.on_response_body(&mut host, body.len(), true);
    assert_eq!(outcome(&host), Some("upstream_stream_error"));
    assert_eq!(errors(&host, "upstream_stream_error"), 1);
}

// ------------------------------------------------------------------ item 11: hang-up

#[test]
fn a_client_gone_before_the_usage_event_is_charged_an_estimate() {
    let mut flow = Flow::new(plan_plain());
    let request = chat("tell me a story", true);
    let request_bytes = request.to_string().len() as u64;
    let mut host = host_for(&request);
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let text = "Once upon a time there was a gateway. ".repeat(20);
    let body = sse(&chunk(&text));
    host.response_body = body.clone().into_bytes();
    flow.on_response_body(&mut host, body.len(), false);
    // The client hangs up: Envoy logs the stream without any more body callbacks.
    flow.on_log(&mut host);
    let expected = request_bytes.div_ceil(4) + (text.len() as u64).div_ceil(4);
    assert_eq!(used(&host, "u1"), expected);
    // Reported usage is not invented: the tokens metrics and filter state stay unset.
    assert_eq!(host.filter_state.get("aigate.total_tokens"), None);
}

#[test]
fn a_client_gone_before_any_answer_is_charged_its_request() {
    for answer_started in [false, true] {
        let mut flow = Flow::new(plan_plain());
        let request = chat("tell me a story", true);
        let request_bytes = request.to_string().len() as u64;
        let mut host = host_for(&request);
        send_whole(&mut flow, &mut host);
        if answer_started {
            // The answer's headers reached the client, its first body bytes did not.
            start_answer(&mut flow, &mut host, 200, "text/event-stream");
        }
        // The provider has the prompt: the hang-up still costs its input tokens.
        flow.on_log(&mut host);
        assert_eq!(
            used(&host, "u1"),
            request_bytes.div_ceil(4),
            "{answer_started}"
        );
    }
}

#[test]
fn a_stream_with_its_usage_is_charged_the_usage_not_the_estimate() {
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "text/event-stream");
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}});
    let body = format!(
        "{}{}data: [DONE]\n\n",
        sse(&chunk(&"x".repeat(400))),
        sse(&usage)
    );
    host.response_body = body.clone().into_bytes();
    flow.on_response_body(&mut host, body.len(), false);
    flow.on_log(&mut host);
    assert_eq!(used(&host, "u1"), 3);
}

// ------------------------------------------------------------------ item 12: large answers

#[test]
fn usage_is_found_at_the_end_of_an_answer_over_the_observe_limit() {
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", false));
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "application/json");
    // ~10 MB of logprobs, then the usage, sent in 64 KiB pieces that pass unchanged.
    let logprob = r#"{"token":"abc","logprob":-0.25,"bytes":[97,98,99],"top_logprobs":[]},"#;
    let mut answer = String::from(
        r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":{"content":["#,
    );
    while answer.len() < 10 * 1024 * 1024 {
        answer.push_str(logprob);
    }
    answer.pop();
    answer.push_str(r#"]},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":140000,"total_tokens":140009}}"#);
    let bytes = answer.as_bytes();
    let pieces: Vec<&[u8]> = bytes.chunks(64 * 1024).collect();
    // Relayed as it comes (the secret redactor may hold back a few bytes at a piece's end,
    // which could begin the route's key), and nothing of it changed.
    let mut relayed = Vec::with_capacity(bytes.len());
    for (index, piece) in pieces.iter().enumerate() {
        host.response_body = piece.to_vec();
        let end = index + 1 == pieces.len();
        assert_eq!(
            flow.on_response_body(&mut host, piece.len(), end),
            Action::Continue
        );
        assert!(
            host.response_body.len() + 64 >= piece.len(),
            "not held back"
        );
        relayed.extend_from_slice(&host.response_body);
    }
    assert!(relayed == bytes, "passes unchanged");
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("140009")
    );
    flow.on_log(&mut host);
    assert_eq!(used(&host, "u1"), 140_009);
}

#[test]
fn an_answer_without_usage_is_charged_by_its_size() {
    let mut flow = Flow::new(plan_plain());
    let request = chat("hi", false);
    let request_bytes = request.to_string().len() as u64;
    let mut host = host_for(&request);
    send_whole(&mut flow, &mut host);
    start_answer(&mut flow, &mut host, 200, "application/json");
    let answer = json!({"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "y".repeat(1000)}, "finish_reason": "stop"}]})
    .to_string();
    host.response_body = answer.clone().into_bytes();
    flow.on_response_body(&mut host, answer.len(), true);
    flow.on_log(&mut host);
    let expected = request_bytes.div_ceil(4) + (answer.len() as u64).div_ceil(4);
    assert_eq!(used(&host, "u1"), expected);
}

// ------------------------------------------------------------------ item 7: gzip streams

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn gzip_stream(route: Value, encoding: &str) -> (RecordingHost, String) {
    let mut flow = Flow::new(plan(route, false));
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    host.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
        ("content-encoding".into(), encoding.into()),
    ];
    flow.on_response_headers(&mut host, false);
    if host.local_response.is_some() {
        return (host, String::new());
    }
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}});
    let plain = format!(
        "{}{}{}data: [DONE]\n\n",
        sse(&chunk("Hello ")),
        sse(&chunk("123-45-6789")),
        sse(&usage)
    );
    let zipped = gzip(plain.as_bytes());
    let mut client = Vec::new();
    let pieces: Vec<&[u8]> = zipped.chunks(9).collect();
    for (index, piece) in pieces.iter().enumerate() {
        host.response_body = piece.to_vec();
        flow.on_response_body(&mut host, piece.len(), index + 1 == pieces.len());
        client.extend_from_slice(&host.response_body);
    }
    (host, String::from_utf8(client).unwrap())
}

#[test]
fn a_gzip_stream_is_decoded_for_the_client_and_its_usage_read() {
    for route in [
        json!({}),
        json!({"guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}}),
    ] {
        let guarded = route.get("guards").is_some();
        let (host, client) = gzip_stream(route, "gzip");
        assert!(client.contains("Hello"), "{client}");
        assert!(client.ends_with("data: [DONE]\n\n"), "{client}");
        assert_eq!(client.contains("123-45-6789"), !guarded, "{client}");
        assert_eq!(host.response_header_value("content-encoding"), None);
        assert_eq!(
            host.filter_state
                .get("aigate.total_tokens")
                .map(String::as_str),
            Some("7")
        );
    }
}

#[test]
fn a_truncated_gzip_stream_ends_with_an_error_event() {
    let mut flow = Flow::new(plan_plain());
    let mut host = host_for(&chat("hi", true));
    send_whole(&mut flow, &mut host);
    host.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "text/event-stream".into()),
        ("content-encoding".into(), "gzip".into()),
    ];
    flow.on_response_headers(&mut host, false);
    let plain = format!(
        "{}data: [DONE]\n\n",
        sse(&chunk(&"long answer ".repeat(50)))
    );
    let zipped = gzip(plain.as_bytes());
    host.response_body = zipped[..zipped.len() / 2].to_vec();
    flow.on_response_body(&mut host, zipped.len() / 2, true);
    let client = String::from_utf8_lossy(&host.response_body).into_owned();
    assert!(client.contains("invalid_upstream_response"), "{client}");
    assert!(client.ends_with("data: [DONE]\n\n"), "{client}");
    assert_eq!(outcome(&host), Some("invalid_upstream_response"));
}

#[test]
fn a_stream_in_an_unknown_encoding_is_refused_clearly() {
    let (host, _) = gzip_stream(json!({}), "br");
    let reply = host.local_response.as_ref().expect("a local reply");
    assert_eq!(reply.status, 502);
    assert!(String::from_utf8_lossy(&reply.body).contains("content-encoding"));
    assert_eq!(outcome(&host), Some("invalid_upstream_response"));
}
