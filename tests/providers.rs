//! Anthropic and Gemini routes through the whole pipeline (`Flow` + `RecordingHost`), phase
//! by phase as Envoy calls it: the client's OpenAI request in, the provider's native
//! request out (headers, path, body); the provider's native answer in, the client's
//! OpenAI answer out; usage counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;
use support::{json_of, respond};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/providers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn plan(provider: Value, mode_a: bool) -> Rc<Plan> {
    let config = json!({
        "allow_on_headers_stop_iteration": mode_a,
        "routes": [{"name": "llm", "match": {"route_name": "llm"}, "provider": provider}],
    });
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("sk-ant-server".to_string()),
        "GEMINI_API_KEY" => Some("g-server".to_string()),
        _ => None,
    };
    support::compile(&config, &env)
}

fn anthropic(mode_a: bool) -> Rc<Plan> {
    plan(
        json!({"kind": "anthropic", "auth": {"key": {"env": "ANTHROPIC_API_KEY"}},
               "anthropic": {"max_tokens": 1024}}),
        mode_a,
    )
}

fn gemini_fixed(mode_a: bool) -> Rc<Plan> {
    plan(
        json!({"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}, "model": "gemini-2.5-flash"}),
        mode_a,
    )
}

fn request(body: &Value) -> RecordingHost {
    let body = body.to_string().into_bytes();
    let length = body.len().to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("authorization", "Bearer client-key"),
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        body,
    );
    host.set_property_value(&["xds", "route_name"], b"llm");
    host
}

/// Runs the request phases and checks the actions for the header mode.
fn send(plan: &Rc<Plan>, body: &Value) -> (Flow, RecordingHost) {
    let mut host = request(body);
    let mut flow = Flow::new(Rc::clone(plan));
    let headers = flow.on_request_headers(&mut host, false);
    let expected = if plan.allow_on_headers_stop_iteration {
        Action::Pause
    } else {
        Action::Continue
    };
    assert_eq!(headers, expected);
    let size = host.request_body.len();
    flow.on_request_body(&mut host, size, true);
    (flow, host)
}

fn events(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let data = block.strip_prefix("data: ").unwrap();
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()))
        })
        .collect()
}

/// Replaces the random response id (and ids derived from it) so outputs compare.
fn without_ids(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let Some(start) = text.find("chatcmpl-") else {
        return text;
    };
    let hex: String = text[start + 9..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    text.replace(&hex, "ID")
}

fn tokens(host: &RecordingHost, provider: &str, model: &str) -> (u64, u64, u64) {
    let provider = match provider {
        "gemini" => "gcp.gemini",
        "azure_openai" => "azure.ai.openai",
        other => other,
    };
    let count = |kind: &str| {
        host.histogram_total(
            aigate_core::metrics::TOKEN_USAGE,
            &[
                ("route", "llm"),
                ("gen_ai.provider.name", provider),
                ("gen_ai.request.model", model),
                ("gen_ai.token.type", kind),
            ],
        )
    };
    (
        count("input"),
        count("output"),
        count("input") + count("output"),
    )
}

const CHAT: &str = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}"#;

#[test]
fn anthropic_request_goes_out_native() {
    for mode_a in [false, true] {
        let (_, host) = send(&anthropic(mode_a), &json_of(CHAT.as_bytes()));
        assert_eq!(host.local_response, None);
        assert_eq!(host.request_header(":authority"), Some("api.anthropic.com"));
        assert_eq!(host.request_header(":path"), Some("/v1/messages"));
        assert_eq!(host.request_header("x-api-key"), Some("sk-ant-server"));
        assert_eq!(host.request_header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(
            host.request_header("authorization"),
            None,
            "the client's key never leaves"
        );
        assert_eq!(host.request_header("content-length"), None);
        assert_eq!(
            json_of(&host.request_body),
            json!({"model": "claude-sonnet-4-5", "system": "Be brief.", "max_tokens": 1024,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
        );
    }
}

#[test]
fn anthropic_answer_comes_back_openai_shaped_and_counted() {
    let (mut flow, mut host) = send(&anthropic(false), &json_of(CHAT.as_bytes()));
    let answer = fixture("anthropic/answer_text.json");
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[&answer[..50], &answer[50..]],
    );
    let body = json_of(&client);
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    assert_eq!(body["usage"]["total_tokens"], 23);
    assert_eq!(
        host.response_header_value("content-type"),
        Some("application/json")
    );
    assert_eq!(
        tokens(&host, "anthropic", "claude-sonnet-4-5"),
        (12, 11, 23)
    );
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("23")
    );
}

#[test]
fn anthropic_stream_cut_anywhere_reaches_the_client_the_same() {
    let stream = fixture("anthropic/stream_tool_use.sse");
    let request = json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "Weather?"}],
                         "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    let run = |chunks: &[&[u8]]| {
        let (mut flow, mut host) = send(&anthropic(false), &request);
        assert_eq!(json_of(&host.request_body)["stream"], true);
        let client = respond(&mut flow, &mut host, 200, "text/event-stream", chunks);
        assert_eq!(
            tokens(&host, "anthropic", "claude-sonnet-4-5"),
            (472, 89, 561)
        );
        without_ids(&client)
    };
    let whole = run(&[&stream]);
    assert!(whole.ends_with("data: [DONE]\n\n"));
    assert!(
        !whole.contains("\"usage\""),
        "the client did not ask for the usage chunk"
    );
    assert!(whole.contains("\"finish_reason\":\"tool_calls\""));
    for cut in 0..=stream.len() {
        assert_eq!(
            run(&[&stream[..cut], &stream[cut..]]),
            whole,
            "cut at {cut}"
        );
    }
}

#[test]
fn anthropic_stream_with_usage_for_clients_that_ask() {
    let request = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "Hi"}]});
    let (mut flow, mut host) = send(&anthropic(false), &request);
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[&fixture("anthropic/stream_text.sse")],
    );
    let events = events(&client);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Grüße aus Zürich 👋");
    assert_eq!(
        events[events.len() - 2]["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40})
    );
}

#[test]
fn anthropic_errors_keep_their_status() {
    let (mut flow, mut host) = send(&anthropic(false), &json_of(CHAT.as_bytes()));
    let client = respond(
        &mut flow,
        &mut host,
        529,
        "application/json",
        &[&fixture("anthropic/error_overloaded.json")],
    );
    let body = json_of(&client);
    assert_eq!(
        body["error"],
        json!({"message": "Overloaded", "type": "api_error", "code": "overloaded_error", "param": null})
    );
    assert_eq!(
        host.filter_state.get("aigate.outcome").map(String::as_str),
        Some("upstream_529")
    );
}

#[test]
fn untranslatable_request_is_a_local_400() {
    let request = json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "Hi"}]});
    let (_, host) = send(&anthropic(false), &request);
    let reply = host.local_response.as_ref().unwrap();
    assert_eq!(reply.status, 400);
    let body = json_of(&reply.body);
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert!(body["error"]["message"].as_str().unwrap().contains("'n'"));
}

#[test]
fn gemini_mode_b_streams_upstream_and_aggregates_for_json_clients() {
    let request = json!({"model": "ignored", "messages": [{"role": "user", "content": "Sky?"}]});
    let (mut flow, mut host) = send(&gemini_fixed(false), &request);
    assert_eq!(
        host.request_header(":authority"),
        Some("generativelanguage.googleapis.com")
    );
    assert_eq!(
        host.request_header(":path"),
        Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    );
    assert_eq!(host.request_header("x-goog-api-key"), Some("g-server"));
    assert_eq!(host.request_header("authorization"), None);
    assert_eq!(
        json_of(&host.request_body),
        json!({"contents": [{"role": "user", "parts": [{"text": "Sky?"}]}]})
    );
    let stream = fixture("gemini/stream_text.sse");
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[&stream[..100], &stream[100..]],
    );
    assert_eq!(
        host.response_header_value("content-type"),
        Some("application/json")
    );
    let body = json_of(&client);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-2.5-flash");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The sky is blue — mostly ☀️."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 29);
    assert_eq!(tokens(&host, "gemini", "gemini-2.5-flash"), (8, 21, 29));
}

#[test]
fn gemini_mode_b_stream_client_gets_chunks() {
    let request = json!({"stream": true, "messages": [{"role": "user", "content": "Sky?"}]});
    let (mut flow, mut host) = send(&gemini_fixed(false), &request);
    let stream = fixture("gemini/stream_text.sse");
    let run_whole = respond(&mut flow, &mut host, 200, "text/event-stream", &[&stream]);
    let events = events(&run_whole);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "The sky"})
    );
    assert!(!String::from_utf8(run_whole).unwrap().contains("\"usage\""));
    assert_eq!(tokens(&host, "gemini", "gemini-2.5-flash"), (8, 21, 29));
}

#[test]
fn gemini_mode_a_picks_the_method_and_model_from_the_body() {
    let open = plan(
        json!({"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}}),
        true,
    );
    let request =
        json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "Hi"}]});
    let (mut flow, mut host) = send(&open, &request);
    assert_eq!(
        host.request_header(":path"),
        Some("/v1beta/models/gemini-2.0-flash:generateContent")
    );
    let answer = fixture("gemini/answer_function_call.json");
    let client = respond(&mut flow, &mut host, 200, "application/json", &[&answer]);
    let body = json_of(&client);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][1]["function"]["name"],
        "get_time"
    );
    assert_eq!(tokens(&host, "gemini", "gemini-2.0-flash"), (61, 18, 79));

    let streamed = json!({"model": "gemini-2.0-flash", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let (_, host) = send(&open, &streamed);
    assert_eq!(
        host.request_header(":path"),
        Some("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
    );

    let injected =
        json!({"model": "../../v1/files?x=", "messages": [{"role": "user", "content": "Hi"}]});
    let (_, host) = send(&open, &injected);
    assert_eq!(host.local_response.as_ref().unwrap().status, 400);
}

#[test]
fn gemini_errors_keep_their_status() {
    for mode_a in [false, true] {
        let (mut flow, mut host) = send(
            &gemini_fixed(mode_a),
            &json!({"messages": [{"role": "user", "content": "Hi"}]}),
        );
        let client = respond(
            &mut flow,
            &mut host,
            429,
            "application/json",
            &[&fixture("gemini/error_429.json")],
        );
        let body = json_of(&client);
        assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
}

fn guarded(provider: Value, action: &str) -> Rc<Plan> {
    let guard = json!({"regex": {"builtins": ["ssn"], "action": action,
        "patterns": [{"name": "codename", "pattern": "(?i)project\\s+falcon"}]}});
    let config = json!({
        "allow_on_headers_stop_iteration": true,
        "routes": [{"name": "llm", "match": {"route_name": "llm"}, "provider": provider,
                    "guards": {"request": [guard]}}],
    });
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("sk-ant-server".to_string()),
        "GEMINI_API_KEY" => Some("g-server".to_string()),
        _ => None,
    };
    support::compile(&config, &env)
}

/// JSON escapes inside the JSON strings the translation parses (tool-call `arguments`,
/// Gemini tool results) reach the provider decoded: the guards must read them decoded.
const ESCAPED_TOOL_TURN: &str = r#"{"model": "m", "messages": [
    {"role": "user", "content": "look up the file"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": "{\"ssn\": \"\\u0031\\u0032\\u0033-45-6789\", \"q\": \"pr\\u006fject falcon\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "{\"owner\": \"pr\\u006fject "}, {"type": "text", "text": "falcon\", \"id\": \"\\u0031\\u0032\\u0033-45-6789\"}"}]},
    {"role": "system", "content": "project"},
    {"role": "developer", "content": "falcon"}
]}"#;

#[test]
fn guards_read_what_the_translation_sends() {
    let providers = [
        json!({"kind": "anthropic", "auth": {"key": {"env": "ANTHROPIC_API_KEY"}}}),
        json!({"kind": "gemini", "auth": {"key": {"env": "GEMINI_API_KEY"}}, "model": "gemini-2.5-flash"}),
    ];
    let request = json_of(ESCAPED_TOOL_TURN.as_bytes());
    for provider in providers {
        let kind = provider["kind"].clone();
        let (_, host) = send(&guarded(provider.clone(), "mask"), &request);
        assert_eq!(host.local_response, None, "{kind}");
        let mut upstream = json_of(&host.request_body);
        if kind == "anthropic" {
            // Anthropic gets tool results as text, escapes and all, as OpenAI would: what
            // the guard read. Out of the comparison below.
            let result = upstream["messages"][2]["content"][0]["content"].take();
            assert_eq!(result, request["messages"][2]["content"], "{kind}");
        }
        let sent = upstream.to_string();
        assert!(!sent.contains("6789"), "{kind}: {sent}");
        assert!(
            !sent.to_lowercase().contains("project falcon"),
            "{kind}: {sent}"
        );
        // Anthropic joins the system texts with a blank line: still one codename.
        assert!(!sent.contains("project\\n\\nfalcon"), "{kind}: {sent}");
        assert!(!sent.contains("\\u00"), "{kind}: {sent}");
        // The arguments are still JSON objects, masked inside.
        let input = match kind.as_str().unwrap() {
            "anthropic" => upstream["messages"][1]["content"][0]["input"].clone(),
            _ => upstream["contents"][1]["parts"][0]["functionCall"]["args"].clone(),
        };
        assert!(input.is_object(), "{kind}: {input}");
        assert_eq!(input["ssn"], "<SSN>", "{kind}");
        assert_eq!(input["q"], "<CODENAME>", "{kind}");

        let (_, host) = send(&guarded(provider, "reject"), &request);
        let reply = host.local_response.as_ref().expect("rejected");
        assert_eq!(reply.status, 403, "{kind}");
    }
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let kind = event["type"].as_str().unwrap();
        out.extend_from_slice(format!("event: {kind}\ndata: {event}\n\n").as_bytes());
    }
    out
}

/// A hostile or unusual Anthropic stream: the start and the end repeated, a tool call with
/// no input, and a `message_delta` whose usage leaves out the input counts.
fn anthropic_odd_stream() -> Vec<u8> {
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 1}}});
    sse(&[
        start.clone(),
        start,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7, "cache_read_input_tokens": 10}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ])
}

#[test]
fn anthropic_stream_one_role_one_finish_cumulative_usage_json_arguments() {
    let request = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [{"role": "user", "content": "Time?"}],
                         "tools": [{"type": "function", "function": {"name": "now"}}]});
    let (mut flow, mut host) = send(&anthropic(false), &request);
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[&anthropic_odd_stream()],
    );
    let events = events(&client);
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.get("choices").and_then(|c| c.get(0)))
        .collect();
    let roles = deltas
        .iter()
        .filter(|c| c["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "{events:?}");
    let finishes: Vec<&Value> = deltas
        .iter()
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("tool_calls")], "{events:?}");
    let arguments: String = deltas
        .iter()
        .filter_map(|c| c["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{}");
    // message_delta carried only output tokens: input and cache reads keep their start value.
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(usage["prompt_tokens"], 13, "{usage}");
    assert_eq!(usage["completion_tokens"], 9, "{usage}");
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], 10,
        "{usage}"
    );
    assert_eq!(tokens(&host, "anthropic", "m"), (13, 9, 22));
    // The same answer as JSON gives the same arguments.
    let (mut flow, mut host) = send(
        &anthropic(false),
        &json!({"model": "m", "messages": [{"role": "user", "content": "Time?"}]}),
    );
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}],
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 9}});
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[answer.to_string().as_bytes()],
    );
    assert_eq!(
        json_of(&client)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
}

#[test]
fn gemini_stream_one_finish_per_choice() {
    let request = json!({"stream": true, "messages": [{"role": "user", "content": "Sky?"}]});
    let (mut flow, mut host) = send(&gemini_fixed(false), &request);
    let event = |text: &str| {
        json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}})
    };
    let stream = format!("data: {}\n\ndata: {}\n\n", event("blue"), event(""));
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "text/event-stream",
        &[stream.as_bytes()],
    );
    let events = events(&client);
    let finishes = events
        .iter()
        .filter_map(|e| e.get("choices").and_then(|c| c.get(0)))
        .filter(|c| !c["finish_reason"].is_null())
        .count();
    assert_eq!(finishes, 1, "{events:?}");
}
