//! Anthropic Messages clients through the whole pipeline (`Flow` over `RecordingHost`) on
//! passthrough routes: what goes upstream (path, query, credential, protocol headers, the
//! body byte for byte unless a stage changed it), what the client gets back (answers,
//! streams and upstream errors unchanged but for masking; the gateway's own errors in
//! Anthropic's shape), and what is charged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;
use support::{json_of, local_error, respond, send_whole};

fn plan(route: Value) -> Rc<Plan> {
    plan_with(route, false)
}

/// `mode_a`: `allow_on_headers_stop_iteration` (headers held until the body is read).
fn plan_with(route: Value, mode_a: bool) -> Rc<Plan> {
    let mut base = json!({
        "name": "claude",
        "provider": {"kind": "anthropic", "authority": "api.anthropic.local", "auth": {"key": {"value": "sk-ant-gateway"}}},
    });
    for (key, value) in route.as_object().unwrap() {
        base[key] = value.clone();
    }
    support::compile(
        &json!({"allow_on_headers_stop_iteration": mode_a, "routes": [base]}),
        &support::no_env,
    )
}

fn host_with(path: &str, extra: &[(&str, &str)], body: &[u8]) -> RecordingHost {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "gw.local"),
        ("x-api-key", "dummy-client-key"),
        ("content-type", "application/json"),
        ("x-user-id", "u1"),
    ];
    headers.extend_from_slice(extra);
    support::request_host(&headers, body.to_vec())
}

fn create(content: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": content}]})
}

fn mask_guard(side: &str) -> Value {
    json!({side: [{"regex": {"builtins": ["email"], "action": "mask"}}]})
}

fn reject_guard(side: &str) -> Value {
    json!({side: [{"regex": {"builtins": ["email"], "action": "reject"}}]})
}

#[test]
fn passthrough_sends_the_clients_bytes_with_the_gateways_key() {
    let plan = plan(json!({}));
    // Odd spacing and key order: what the client sent must go as it is.
    let body = br#"{ "max_tokens":100,"model":"claude-sonnet-4-5",  "messages":[{"role":"user","content":"hi"}], "metadata":{"user_id":"u"} }"#;
    let mut host = host_with(
        "/v1/messages?beta=true",
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
            ("authorization", "Bearer client-token"),
        ],
        body,
    );
    let mut flow = Flow::new(plan);
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    assert!(host.local_response.is_none());
    assert_eq!(host.request_body, body.to_vec(), "the body was rewritten");
    assert_eq!(host.request_header(":path"), Some("/v1/messages?beta=true"));
    assert_eq!(
        host.request_header(":authority"),
        Some("api.anthropic.local")
    );
    assert_eq!(host.request_header("x-api-key"), Some("sk-ant-gateway"));
    assert_eq!(host.request_header("authorization"), None);
    assert_eq!(host.request_header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        host.request_header("anthropic-beta"),
        Some("claude-code-20250219,oauth-2025-04-20")
    );
    // The answer passes unchanged and is charged from its usage.
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":3}}"#;
    let client = respond(&mut flow, &mut host, 200, "application/json", &[answer]);
    assert_eq!(client, answer.to_vec());
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.prompt_tokens")
            .map(String::as_str),
        Some("14")
    );
    assert_eq!(
        host.filter_state
            .get("aigate.completion_tokens")
            .map(String::as_str),
        Some("3")
    );
}

#[test]
fn anthropic_version_is_set_when_the_client_sent_none_and_count_tokens_has_its_path() {
    let plan = plan(json!({}));
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count me"}]});
    let mut host = host_with(
        "/v1/messages/count_tokens",
        &[],
        body.to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan);
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    assert_eq!(
        host.request_header(":path"),
        Some("/v1/messages/count_tokens")
    );
    assert_eq!(host.request_header("anthropic-version"), Some("2023-06-01"));
    let answer = br#"{"input_tokens":12}"#;
    assert_eq!(
        respond(&mut flow, &mut host, 200, "application/json", &[answer]),
        answer.to_vec()
    );
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("0")
    );
}

#[test]
fn a_masked_request_is_rewritten_everywhere_and_thinking_is_left() {
    let plan = plan(json!({"guards": mask_guard("request")}));
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
    "system": [{"type": "text", "text": "owner: a@example.com"}],
    "messages": [
        {"role": "user", "content": "mail b@example.com"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "c@example.com", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"to": "d@example.com"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sent to e@example.com"}]}
    ]});
    let mut host = host_with("/v1/messages", &[], body.to_string().as_bytes());
    let mut flow = Flow::new(plan);
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    let sent = json_of(&host.request_body);
    assert_eq!(sent["system"][0]["text"], "owner: <EMAIL>");
    assert_eq!(sent["messages"][0]["content"], "mail <EMAIL>");
    assert_eq!(
        sent["messages"][1]["content"][0]["thinking"],
        "c@example.com"
    );
    assert_eq!(sent["messages"][1]["content"][1]["input"]["to"], "<EMAIL>");
    assert_eq!(
        sent["messages"][2]["content"][0]["content"],
        "sent to <EMAIL>"
    );
}

#[test]
fn gateway_errors_take_anthropics_shape() {
    // A guard's reject.
    let plan_ = plan(json!({"guards": reject_guard("request")}));
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("x@example.com", false).to_string().as_bytes(),
    );
    send_whole(&mut Flow::new(plan_), &mut host);
    let (status, body) = local_error(&host);
    assert_eq!(status, 403);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    // A malformed body.
    let mut host = host_with(
        "/v1/messages",
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
    );
    send_whole(&mut Flow::new(plan(json!({}))), &mut host);
    let (status, body) = local_error(&host);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    // Not JSON.
    let mut host = host_with("/v1/messages", &[], b"{");
    send_whole(&mut Flow::new(plan(json!({}))), &mut host);
    assert_eq!(local_error(&host).1["type"], "error");
    // The wrong method, and an endpoint the gateway does not serve, for an Anthropic client.
    let mut host = host_with("/v1/messages", &[(":method", "GET")], b"");
    host.request_headers
        .retain(|(k, v)| k != ":method" || v == "GET");
    Flow::new(plan(json!({}))).on_request_headers(&mut host, true);
    assert_eq!(local_error(&host).1["type"], "error");
    let mut host = host_with(
        "/v1/messages/batches",
        &[("anthropic-version", "2023-06-01")],
        b"{}",
    );
    Flow::new(plan(json!({}))).on_request_headers(&mut host, false);
    let (status, body) = local_error(&host);
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    // Too large.
    let plan_ = plan(json!({"request": {"max_body_bytes": 10}}));
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hello there", false).to_string().as_bytes(),
    );
    send_whole(&mut Flow::new(plan_), &mut host);
    let (status, body) = local_error(&host);
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (413, Some("request_too_large"))
    );
    // A Messages client on a provider that cannot serve it (no bridge in this build).
    let plan_ = support::compile(
        &json!({"routes": [{"name": "claude", "provider": {"kind": "gemini", "auth": {"none": true}, "model": "gemini-2.0-flash"}}]}),
        &support::no_env,
    );
    let mut host = host_with("/v1/messages/count_tokens", &[], b"{}");
    Flow::new(plan_).on_request_headers(&mut host, false);
    let (status, body) = local_error(&host);
    assert_eq!((status, body["type"].as_str()), (400, Some("error")));
}

#[test]
fn upstream_errors_reach_the_client_unchanged() {
    let plan = plan(json!({}));
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", false).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan);
    send_whole(&mut flow, &mut host);
    let error = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
    let client = respond(&mut flow, &mut host, 529, "application/json", &[error]);
    assert_eq!(client, error.to_vec());
}

fn sse_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn stream_answer(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![
        sse_event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 1}}}),
        ),
        sse_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for piece in pieces {
        events.push(sse_event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
    }
    events.push(sse_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse_event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 7}})));
    events.push(sse_event("message_stop", json!({"type": "message_stop"})));
    events
}

fn text_of_stream(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(data).unwrap();
            if let Some(piece) = value["delta"]["text"].as_str() {
                out.push_str(piece);
            }
        }
    }
    out
}

#[test]
fn a_stream_passes_and_usage_is_merged() {
    let plan = plan(json!({}));
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", true).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan);
    send_whole(&mut flow, &mut host);
    let events = stream_answer(&["Hel", "lo"]);
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let client = respond(&mut flow, &mut host, 200, "text/event-stream", &chunks);
    assert_eq!(client, events.concat().into_bytes());
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.prompt_tokens")
            .map(String::as_str),
        Some("25")
    );
    assert_eq!(
        host.filter_state
            .get("aigate.completion_tokens")
            .map(String::as_str),
        Some("7")
    );
}

#[test]
fn a_stream_is_masked_across_events_and_rejects_in_band() {
    let events = stream_answer(&["write to jane.d", "oe@exam", "ple.com today"]);
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", true).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan(json!({"guards": mask_guard("response")})));
    send_whole(&mut flow, &mut host);
    let client = respond(&mut flow, &mut host, 200, "text/event-stream", &chunks);
    assert_eq!(text_of_stream(&client), "write to <EMAIL> today");
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", true).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan_with(json!({"guards": reject_guard("response")}), true));
    send_whole(&mut flow, &mut host);
    let client = String::from_utf8(respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &chunks,
    ))
    .unwrap();
    assert!(client.contains("event: error\ndata: {"), "{client}");
    assert!(!client.contains("jane"), "{client}");
    assert!(!client.contains("message_stop"), "{client}");
}

#[test]
fn a_json_answer_is_masked_and_a_whole_answer_is_restreamed() {
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "ask jane.doe@example.com"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"to": "jane.doe@example.com"}}],
        "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 4}});
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", false).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan(json!({"guards": mask_guard("response")})));
    send_whole(&mut flow, &mut host);
    let client = json_of(&respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[answer.to_string().as_bytes()],
    ));
    assert_eq!(client["content"][0]["text"], "ask <EMAIL>");
    assert_eq!(client["content"][1]["input"]["to"], "<EMAIL>");
    assert_eq!(client["usage"], answer["usage"]);
}

#[test]
fn shaping_and_model_mapping_apply_to_messages() {
    let plan = plan(json!({
        "provider": {"kind": "anthropic", "authority": "api.anthropic.local", "auth": {"key": {"value": "k"}}, "models": {"fast": "claude-haiku-4-5"}},
        "request": {"prepend": [{"role": "system", "content": "Policy first."}], "overrides": {"temperature": 0}}
    }));
    let mut body = create("hi", false);
    body["model"] = json!("fast");
    let mut host = host_with("/v1/messages", &[], body.to_string().as_bytes());
    send_whole(&mut Flow::new(plan.clone()), &mut host);
    let sent = json_of(&host.request_body);
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "Policy first."}, {"type": "text", "text": "You are terse."}])
    );
    assert_eq!(sent["temperature"], 0);
    assert_eq!(sent["messages"], body["messages"]);
    let mut body = create("hi", false);
    body["model"] = json!("slow");
    let mut host = host_with("/v1/messages", &[], body.to_string().as_bytes());
    send_whole(&mut Flow::new(plan), &mut host);
    let (status, error) = local_error(&host);
    assert_eq!(
        (status, error["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
}

#[test]
fn the_model_list_has_anthropics_shape_for_anthropic_clients() {
    let plan = plan(
        json!({"provider": {"kind": "anthropic", "auth": {"none": true}, "models": {"a": "claude-a", "b": "claude-b"}}}),
    );
    let mut host = host_with(
        "/v1/models",
        &[(":method", "GET"), ("anthropic-version", "2023-06-01")],
        b"",
    );
    host.request_headers
        .retain(|(k, v)| k != ":method" || v == "GET");
    Flow::new(plan).on_request_headers(&mut host, true);
    let reply = host.local_response.as_ref().unwrap();
    let list = json_of(&reply.body);
    assert_eq!(
        list["data"][0],
        json!({"type": "model", "id": "a", "display_name": "a", "created_at": "1970-01-01T00:00:00Z"})
    );
    assert_eq!(
        (
            list["first_id"].as_str(),
            list["last_id"].as_str(),
            list["has_more"].as_bool()
        ),
        (Some("a"), Some("b"), Some(false))
    );
}

#[test]
fn openai_compatible_serves_messages_only_when_configured() {
    let route = |messages: Option<bool>| {
        let mut provider =
            json!({"kind": "openai_compatible", "authority": "vllm.local", "auth": {"none": true}});
        if let Some(flag) = messages {
            provider["messages"] = json!(flag);
        }
        support::compile(
            &json!({"routes": [{"name": "claude", "provider": provider}]}),
            &support::no_env,
        )
    };
    let mut host = host_with(
        "/v1/messages?beta=true",
        &[],
        create("hi", false).to_string().as_bytes(),
    );
    send_whole(&mut Flow::new(route(Some(true))), &mut host);
    assert!(host.local_response.is_none());
    assert_eq!(host.request_header(":path"), Some("/v1/messages?beta=true"));
    for flag in [None, Some(false)] {
        let mut host = host_with(
            "/v1/messages",
            &[],
            create("hi", false).to_string().as_bytes(),
        );
        send_whole(&mut Flow::new(route(flag)), &mut host);
        // Without a bridge the request is refused clearly, in Anthropic's shape.
        if let Some(reply) = &host.local_response {
            assert_eq!(reply.status, 400);
            assert_eq!(json_of(&reply.body)["type"], "error");
        }
    }
    let error = aigate_core::plan::parse_and_compile(
        json!({"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"none": true}, "messages": true}}]}).to_string().as_bytes(),
        &support::no_env,
    )
    .unwrap_err();
    assert!(error.to_string().contains("messages"), "{error}");
}

#[test]
fn a_repeated_key_goes_upstream_as_the_guards_saw_it() {
    let plan = plan(json!({"guards": mask_guard("request")}));
    // The first `messages` would reach a first-wins parser unguarded if the bytes went as sent.
    let body = br#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"a@example.com"}],"messages":[{"role":"user","content":"hi"}]}"#;
    let mut host = host_with("/v1/messages", &[], body);
    send_whole(&mut Flow::new(plan), &mut host);
    let sent = String::from_utf8(host.request_body.clone()).unwrap();
    assert_eq!(sent.matches("\"messages\"").count(), 1, "{sent}");
    assert!(!sent.contains("a@example.com"), "{sent}");
    assert_eq!(json_of(&host.request_body)["messages"][0]["content"], "hi");
}

#[test]
fn a_stream_is_accounted_at_message_stop() {
    // Clients hang up right after `message_stop`: the answer is charged its real usage
    // there, not an estimate at the end of the exchange.
    let plan = plan(
        json!({"limits": {"tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": 1000, "window_ms": 60000}]}}),
    );
    let mut host = host_with(
        "/v1/messages",
        &[],
        create("hi", true).to_string().as_bytes(),
    );
    let mut flow = Flow::new(plan);
    send_whole(&mut flow, &mut host);
    support::answer_headers(&mut flow, &mut host, 200, "text/event-stream");
    let events = stream_answer(&["Hello"]).concat();
    host.response_body = events.clone().into_bytes();
    assert_eq!(
        flow.on_response_body(&mut host, events.len(), false),
        Action::Continue
    );
    assert_eq!(
        host.counter_total("aigate.tokens_total", &[("gen_ai.token.type", "input")]),
        25
    );
    assert_eq!(
        host.counter_total("aigate.tokens_total", &[("gen_ai.token.type", "output")]),
        7
    );
}

#[test]
fn every_byte_split_of_a_masked_stream_gives_the_same_text() {
    let plan = plan(json!({"guards": mask_guard("response")}));
    let events = stream_answer(&["write to jane.d", "oe@exam", "ple.com — ok"]).concat();
    let bytes = events.as_bytes();
    let whole = {
        let mut host = host_with(
            "/v1/messages",
            &[],
            create("hi", true).to_string().as_bytes(),
        );
        let mut flow = Flow::new(plan.clone());
        send_whole(&mut flow, &mut host);
        text_of_stream(&respond(
            &mut flow,
            &mut host,
            200,
            "text/event-stream",
            &[bytes],
        ))
    };
    assert_eq!(whole, "write to <EMAIL> — ok");
    for at in 1..bytes.len() {
        let mut host = host_with(
            "/v1/messages",
            &[],
            create("hi", true).to_string().as_bytes(),
        );
        let mut flow = Flow::new(plan.clone());
        send_whole(&mut flow, &mut host);
        let (a, b) = bytes.split_at(at);
        let client = respond(&mut flow, &mut host, 200, "text/event-stream", &[a, b]);
        assert_eq!(text_of_stream(&client), whole, "split at byte {at}");
    }
}
