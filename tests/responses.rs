//! The Responses API through the whole `Flow` (natively): passthrough on an OpenAI route
//! (path, key, the body untouched), usage and budgets from `response.completed`, a masked
//! stream, upstream in-band errors counted, bad input refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use serde_json::{json, Value};

fn plan(route: Value) -> Rc<Plan> {
    let mut base = json!({
        "name": "resp",
        "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"key": {"value": "sk-server-key"}}},
        "limits": {"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 1000000, "window_ms": 60000}]}
    });
    for (key, value) in route.as_object().unwrap() {
        base[key] = value.clone();
    }
    support::compile(&json!({"routes": [base]}), &support::no_env)
}

fn host_for(body: &[u8]) -> RecordingHost {
    support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/responses"),
            (":authority", "gw.local"),
            ("authorization", "Bearer client-key"),
            ("openai-beta", "responses=v1"),
            ("content-type", "application/json"),
            ("x-user-id", "u1"),
        ],
        body.to_vec(),
    )
}

fn header<'a>(host: &'a RecordingHost, name: &str) -> Option<&'a str> {
    host.request_headers
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

fn completed(text: &str) -> Value {
    json!({"type": "response.completed", "sequence_number": 4, "response": {
        "id": "resp_1", "object": "response", "status": "completed",
        "output": [{"id": "m", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 30}, "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 49}}})
}

fn stream_of(pieces: &[&str]) -> String {
    let text: String = pieces.concat();
    let mut out = event(
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "output": [], "usage": null}}),
    );
    for (n, piece) in pieces.iter().enumerate() {
        out += &event(
            json!({"type": "response.output_text.delta", "sequence_number": n + 1, "output_index": 0, "content_index": 0, "item_id": "m", "delta": piece}),
        );
    }
    out += &event(
        json!({"type": "response.output_text.done", "sequence_number": pieces.len() + 1, "output_index": 0, "content_index": 0, "item_id": "m", "text": text}),
    );
    let mut done = completed(&text);
    done["sequence_number"] = json!(pieces.len() + 2);
    out += &event(done);
    out
}

#[test]
fn a_passthrough_request_keeps_its_bytes_and_gets_the_servers_key() {
    let plan = plan(json!({}));
    let mut flow = Flow::new(plan);
    let body = br#"{"model":"gpt-5", "input" : "caf\u00e9", "instructions":"be brief"}"#;
    let mut host = host_for(body);
    support::send_whole(&mut flow, &mut host);
    assert!(host.local_response.is_none());
    assert_eq!(
        host.request_body,
        body.to_vec(),
        "an unchanged body is not rewritten"
    );
    assert_eq!(header(&host, ":path"), Some("/v1/responses"));
    assert_eq!(header(&host, "authorization"), Some("Bearer sk-server-key"));
    assert_eq!(header(&host, "openai-beta"), Some("responses=v1"));
    let answer = completed("Hello")["response"].to_string();
    let client = support::respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[answer.as_bytes()],
    );
    assert_eq!(client, answer.as_bytes());
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.prompt_tokens")
            .map(String::as_str),
        Some("40")
    );
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("49")
    );
}

#[test]
fn a_stream_is_masked_and_its_usage_counted() {
    let plan = plan(json!({"guards": {"response": [{"regex": {"builtins": ["email"]}}]}}));
    let mut flow = Flow::new(plan);
    let mut host = host_for(br#"{"model":"gpt-5","input":"x","stream":true}"#);
    support::send_whole(&mut flow, &mut host);
    let stream = stream_of(&["mail bob@exa", "mple.com now"]);
    let bytes = stream.as_bytes();
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let client = support::respond(&mut flow, &mut host, 200, "text/event-stream", &[a, b]);
    let client = String::from_utf8(client).unwrap();
    assert!(!client.contains("bob@"), "{client}");
    assert!(client.contains("mail <EMAIL> now"), "{client}");
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.completion_tokens")
            .map(String::as_str),
        Some("9")
    );
}

#[test]
fn an_upstream_response_failed_event_is_a_failure() {
    for failure in [
        json!({"type": "error", "sequence_number": 1, "code": "server_error", "message": "boom", "param": null}),
        json!({"type": "response.failed", "sequence_number": 1, "response": {"id": "r", "status": "failed", "error": {"code": "server_error", "message": "boom"}, "output": [], "usage": null}}),
    ] {
        let mut flow = Flow::new(plan(json!({})));
        let mut host = host_for(br#"{"model":"gpt-5","input":"x","stream":true}"#);
        support::send_whole(&mut flow, &mut host);
        let body = event(
            json!({"type": "response.created", "sequence_number": 0, "response": {"id": "r", "output": []}}),
        ) + &event(failure.clone());
        let client = support::respond(
            &mut flow,
            &mut host,
            200,
            "text/event-stream",
            &[body.as_bytes()],
        );
        assert_eq!(
            client,
            body.as_bytes(),
            "the upstream's events pass as they are"
        );
        flow.on_log(&mut host);
        assert_eq!(
            host.filter_state.get("aigate.outcome").map(String::as_str),
            Some("upstream_stream_error"),
            "{failure}"
        );
    }
}

#[test]
fn bad_input_is_refused_in_openais_shape() {
    let mut flow = Flow::new(plan(json!({})));
    let mut host = host_for(br#"{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":{"x":"y"}}]}]}"#);
    support::send_whole(&mut flow, &mut host);
    let (status, error) = support::local_error(&host);
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'input[0].content[0].text'"));
}
