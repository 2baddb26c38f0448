//! Responses clients on providers without the Responses API, through the whole `Flow`
//! (natively): the request goes upstream as chat completions (or Anthropic Messages), the
//! answer comes back as a Responses `response` (or its events) echoing the request, usage is
//! accounted, and what needs server state is refused before anything is sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use aigate_core::sse::SseParser;
use serde_json::{json, Value};

fn plan(provider: Value) -> Rc<Plan> {
    support::compile(
        &json!({"routes": [{"name": "bridged", "provider": provider}]}),
        &support::no_env,
    )
}

fn chat_only() -> Rc<Plan> {
    plan(
        json!({"kind": "openai_compatible", "authority": "vllm.local", "responses": false,
                "auth": {"key": {"value": "sk-server-key"}}}),
    )
}

fn send(plan: &Rc<Plan>, body: &Value) -> (Flow, RecordingHost) {
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/responses"),
            (":authority", "gw.local"),
            ("authorization", "Bearer client-key"),
            ("content-type", "application/json"),
        ],
        body.to_string().into_bytes(),
    );
    let mut flow = Flow::new(Rc::clone(plan));
    support::send_whole(&mut flow, &mut host);
    (flow, host)
}

fn header<'a>(host: &'a RecordingHost, name: &str) -> Option<&'a str> {
    host.request_headers
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn events(bytes: &[u8]) -> Vec<Value> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(bytes, &mut events);
    parser.finish(&mut events);
    events
        .iter()
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect()
}

#[test]
fn a_json_request_goes_upstream_as_chat_and_comes_back_as_a_response() {
    let plan = chat_only();
    let request = json!({"model": "m", "instructions": "Be brief.", "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "store": true});
    let (mut flow, mut host) = send(&plan, &request);
    assert!(host.local_response.is_none());
    assert_eq!(header(&host, ":path"), Some("/v1/chat/completions"));
    assert_eq!(header(&host, "authorization"), Some("Bearer sk-server-key"));
    let upstream: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(
        upstream["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(upstream["tools"][0]["function"]["name"], "f");
    assert!(upstream.get("store").is_none() && upstream.get("input").is_none());

    let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
    let bytes = chat.to_string();
    let client = support::respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[bytes.as_bytes()],
    );
    let response = support::json_of(&client);
    assert_eq!(response["object"], "response");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(response["usage"]["input_tokens"], 12);
    assert_eq!(
        response["instructions"], "Be brief.",
        "the response echoes the request"
    );
    assert_eq!(response["tools"], request["tools"]);
    assert_eq!(response["store"], false);
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("15")
    );
}

#[test]
fn an_anthropic_stream_comes_back_as_responses_events() {
    let plan = plan(json!({"kind": "anthropic", "auth": {"key": {"value": "sk-ant"}}}));
    let (mut flow, mut host) = send(
        &plan,
        &json!({"model": "claude", "input": "hi", "stream": true}),
    );
    assert!(host.local_response.is_none());
    assert_eq!(header(&host, ":path"), Some("/v1/messages"));
    assert_eq!(header(&host, "x-api-key"), Some("sk-ant"));
    let upstream: Value = serde_json::from_slice(&host.request_body).unwrap();
    assert_eq!(upstream["stream"], true);
    let sse = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
        json!({"type": "message_stop"}),
    ]
    .iter()
    .map(|data| format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap()))
    .collect::<String>();
    // Cut in the middle of an event: the framing is the pipeline's.
    let (a, b) = sse.as_bytes().split_at(sse.len() / 2);
    let client = support::respond(&mut flow, &mut host, 200, "text/event-stream", &[a, b]);
    let events = events(&client);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello");
    let last = events.last().unwrap();
    assert_eq!(last["response"]["usage"]["input_tokens"], 9);
    assert_eq!(last["response"]["usage"]["output_tokens"], 4);
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state
            .get("aigate.prompt_tokens")
            .map(String::as_str),
        Some("9")
    );
}

#[test]
fn server_state_is_refused_before_anything_is_sent() {
    let plan = chat_only();
    let (_, host) = send(
        &plan,
        &json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
    );
    let (status, body) = support::local_error(&host);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unsupported_operation");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("previous_response_id"));
}
