//! Anthropic Messages clients on chat-completions routes, through the whole `Flow`: the
//! request is bridged to chat completions after the stages saw it in the Messages form, and
//! the answer (JSON or stream) is bridged back before the response stages see it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::limits::ledger::Table;
use aigate_core::limits::local::shard_name;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;

const EMAIL: &str = "alice@example.com";

fn plan(kind: &str) -> Rc<Plan> {
    let mut provider = json!({"kind": kind, "auth": {"key": {"value": "sk-gateway-key-1234"}}});
    if kind == "gemini" {
        provider["model"] = json!("gemini-2.5-flash");
    }
    let mask =
        |name: &str| json!({"regex": {"name": name, "builtins": ["email"], "action": "mask"}});
    support::compile(
        &json!({"routes": [{
            "name": "llm", "match": {"route_name": "llm"}, "provider": provider,
            "guards": {"request": [mask("prompt-pii")], "response": [mask("answer-pii")]},
        }]}),
        &support::no_env,
    )
}

fn send(plan: &Rc<Plan>, body: &Value) -> (Flow, RecordingHost) {
    let body = body.to_string().into_bytes();
    let length = body.len().to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/messages?beta=true"),
            (":authority", "gateway.local"),
            ("content-type", "application/json"),
            ("content-length", &length),
            ("x-api-key", "sk-ant-client-9999"),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    );
    host.set_property_value(&["xds", "route_name"], b"llm");
    let mut flow = Flow::new(Rc::clone(plan));
    support::send_whole(&mut flow, &mut host);
    (flow, host)
}

fn header<'a>(host: &'a RecordingHost, name: &str) -> Option<&'a str> {
    host.request_headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o", "max_tokens": 50, "stream": stream,
        "system": [{"type": "text", "text": format!("Operator: {EMAIL}")}],
        "tools": [{"name": "mail", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": format!("write to {EMAIL}")}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "mail", "input": {"to": EMAIL}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": format!("sent to {EMAIL}")}]},
            ]},
        ],
    })
}

#[test]
fn the_request_is_guarded_in_the_messages_form_then_sent_as_chat() {
    let (_flow, host) = send(&plan("openai"), &request(false));
    assert!(host.local_response.is_none(), "{:?}", host.local_response);
    assert_eq!(header(&host, ":path"), Some("/v1/chat/completions"));
    assert_eq!(
        header(&host, "authorization"),
        Some("Bearer sk-gateway-key-1234")
    );
    assert_eq!(header(&host, "x-api-key"), None);
    let sent = support::json_of(&host.request_body);
    assert!(!sent.to_string().contains(EMAIL), "{sent}");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "Operator: <EMAIL>"},
            {"role": "user", "content": [{"type": "text", "text": "write to <EMAIL>"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "mail", "arguments": "{\"to\":\"<EMAIL>\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sent to <EMAIL>"},
        ])
    );
    assert_eq!(sent["max_completion_tokens"], 50);
    assert_eq!(sent["model"], "gpt-4o");
}

#[test]
fn a_json_answer_comes_back_as_a_message_and_is_guarded() {
    let (mut flow, mut host) = send(&plan("openai"), &request(false));
    let answer = json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o-2024",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("Mailed {EMAIL}.")}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34},
    })
    .to_string();
    let out = support::respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[answer.as_bytes()],
    );
    let message = support::json_of(&out);
    assert_eq!(message["type"], "message");
    assert_eq!(message["id"], "msg_abc");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Mailed <EMAIL>."}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 30);
    assert_eq!(message["usage"]["output_tokens"], 4);
}

#[test]
fn a_stream_comes_back_as_messages_events_and_a_split_hit_is_masked() {
    let (mut flow, mut host) = send(&plan("openai"), &request(true));
    let sent = support::json_of(&host.request_body);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    let chunk = |delta: Value, finish: Value| {
        support::sse(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let stream = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Mailed alice@exa"}), Value::Null),
        chunk(json!({"content": "mple.com today."}), Value::Null),
        chunk(json!({}), json!("stop")),
        support::sse(&json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o",
                             "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let bytes = stream.as_bytes();
    // Cut at every event's middle: the masker and the framing work across chunks.
    let pieces: Vec<&[u8]> = bytes.chunks(37).collect();
    let out = support::respond(&mut flow, &mut host, 200, "text/event-stream", &pieces);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("alice@"), "{text}");
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["type"], name);
        events.push(data);
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(&kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    let said: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(said, "Mailed <EMAIL> today.");
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["input_tokens"], 9);
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
}

/// A chat server that ignores `include_usage` sends no usage chunk; the bridge still writes
/// the usage Anthropic clients require (zeros), but that is not the answer's usage: no zero
/// token counts are recorded, and the budget is charged by estimate, never zero tokens (which
/// would let such traffic past every token budget).
#[test]
fn a_bridged_stream_without_a_usage_chunk_is_charged_by_estimate_not_zero() {
    let plan = support::compile(
        &json!({"routes": [{
            "name": "llm", "match": {"route_name": "llm"},
            "provider": {"kind": "openai", "auth": {"key": {"value": "sk-gateway-key-1234"}}},
            "limits": {"tokens": [{"name": "budget", "key": {"header": "anthropic-version"},
                                   "limit": 100000, "window_ms": 60000}]},
        }]}),
        &support::no_env,
    );
    let (mut flow, mut host) = send(&plan, &request(true));
    let chunk = |delta: Value, finish: Value| {
        support::sse(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let stream = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(
            json!({"content": "A forty-byte answer with no usage at all."}),
            Value::Null,
        ),
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let out = support::respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[stream.as_bytes()],
    );
    flow.on_log(&mut host);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("message_stop"), "{text}");
    assert_eq!(host.filter_state.get("aigate.total_tokens"), None);
    let shard = shard_name("llm", "budget", "2023-06-01");
    let table = Table::decode(&host.shared[&shard].0).unwrap();
    let used = table.entries.get("2023-06-01").map(|e| e.used).unwrap_or(0);
    // The request's bytes and the 41 bytes of text, 4 bytes a token.
    assert!(used > 10, "charged {used} tokens");
}

#[test]
fn a_chat_providers_error_is_worded_as_anthropic_words_it() {
    let (mut flow, mut host) = send(&plan("openai"), &request(false));
    let error = json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}).to_string();
    let out = support::respond(
        &mut flow,
        &mut host,
        429,
        "application/json",
        &[error.as_bytes()],
    );
    assert_eq!(
        support::json_of(&out),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
    );
}

#[test]
fn what_chat_cannot_carry_is_a_400_in_anthropics_shape() {
    let mut body = request(false);
    body["messages"][0]["content"] = json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}]);
    let (_flow, host) = send(&plan("openai"), &body);
    let (status, error) = support::local_error(&host);
    assert_eq!(status, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content[0]"),
        "{error}"
    );
}

#[test]
fn gemini_routes_get_the_chat_form_through_the_gemini_codec() {
    let (_flow, host) = send(&plan("gemini"), &request(false));
    assert!(host.local_response.is_none(), "{:?}", host.local_response);
    assert_eq!(header(&host, "x-goog-api-key"), Some("sk-gateway-key-1234"));
    let sent = support::json_of(&host.request_body);
    assert_eq!(
        sent["systemInstruction"]["parts"][0]["text"],
        "Operator: <EMAIL>"
    );
    assert!(!sent.to_string().contains(EMAIL), "{sent}");
}

#[test]
fn a_gemini_stream_cut_short_ends_with_an_anthropic_error_event() {
    let (mut flow, mut host) = send(&plan("gemini"), &request(true));
    let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "half"}]}, "index": 0}]});
    let stream = support::sse(&chunk);
    let out = support::respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[stream.as_bytes()],
    );
    let text = String::from_utf8(out).unwrap();
    let blocks: Vec<&str> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    assert!(
        blocks.first().unwrap().starts_with("event: message_start"),
        "{text}"
    );
    assert!(text.contains("\"text\":\"half\""), "{text}");
    let last = blocks.last().unwrap();
    assert!(last.starts_with("event: error"), "{text}");
    assert!(last.contains("\"type\":\"api_error\""), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
}

/// Timing, not a check: `cargo test --release --test messages_bridge -- --ignored --nocapture`.
/// A Claude Code-sized request (50 KB: long system text, 12 tools) bridged through the whole
/// Flow on an openai route with request and answer masks, and a 2,000-delta stream back.
#[test]
#[ignore]
fn measure_bridged_request_and_stream() {
    let plan = plan("openai");
    let tool = |n: usize| {
        json!({"name": format!("Tool{n}"), "description": "x".repeat(2000),
               "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}})
    };
    let mut body = request(true);
    body["system"] = json!([{"type": "text", "text": "You are an agent. ".repeat(1200)}]);
    body["tools"] = json!((0..12).map(tool).collect::<Vec<_>>());
    let size = body.to_string().len();
    let rounds = 200;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let (_flow, host) = send(&plan, &body);
        assert!(host.local_response.is_none());
    }
    let per_request = started.elapsed() / rounds;
    let chunk = |text: &str| {
        support::sse(
            &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o",
                             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
        )
    };
    let mut stream: String = (0..2000).map(|i| chunk(&format!("word{i} "))).collect();
    stream.push_str(&support::sse(
        &json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ));
    stream.push_str("data: [DONE]\n\n");
    let pieces: Vec<&[u8]> = stream.as_bytes().chunks(1024).collect();
    let rounds = 20;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let (mut flow, mut host) = send(&plan, &body);
        let out = support::respond(&mut flow, &mut host, 200, "text/event-stream", &pieces);
        assert!(!out.is_empty());
    }
    let per_stream = started.elapsed() / rounds;
    // The same stream to a chat client on the same route (the masker and guards without the
    // bridge), and the bridge's decoder alone.
    let chat_body = json!({"model": "gpt-4o", "stream": true,
                           "messages": [{"role": "user", "content": "write to me"}]})
    .to_string()
    .into_bytes();
    let length = chat_body.len().to_string();
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let mut host = support::request_host(
            &[
                (":method", "POST"),
                (":path", "/v1/chat/completions"),
                (":authority", "g"),
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
            chat_body.clone(),
        );
        host.set_property_value(&["xds", "route_name"], b"llm");
        let mut flow = Flow::new(Rc::clone(&plan));
        support::send_whole(&mut flow, &mut host);
        let out = support::respond(&mut flow, &mut host, 200, "text/event-stream", &pieces);
        assert!(!out.is_empty());
    }
    let per_chat_stream = started.elapsed() / rounds;
    let mut events = Vec::new();
    aigate_core::sse::SseParser::new().push(stream.as_bytes(), &mut events);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let exchange = aigate_core::providers::Exchange::default();
        let mut decoder = aigate_core::client_api::messages_bridge::MessagesStream::new(&exchange);
        let mut out = Vec::new();
        for event in &events {
            aigate_core::providers::StreamDecoder::on_event(&mut decoder, event, &mut out).unwrap();
        }
        assert!(out.len() > 2000);
    }
    let per_decode = started.elapsed() / rounds;
    println!(
        "the same stream to a chat client on that route: {per_chat_stream:?}; the bridge's \
         decoder alone over its 2002 events: {per_decode:?}"
    );
    println!(
        "bridged request of {size} bytes (2 regex guards): {per_request:?} per request; \
         stream of 2000 deltas ({} bytes) in 1 KiB chunks: {per_stream:?} per stream, request included",
        stream.len()
    );
}
