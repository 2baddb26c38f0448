//! Property tests: hostile and arbitrary input through config parsing, request parsing, SSE
//! framing, usage extraction, stream processing and the whole `Flow`. Nothing may panic, and
//! the round-trip invariants hold whatever the input or its chunking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::api::{self, Operation};
use aigate_core::host::RecordingHost;
use aigate_core::pipeline::stream::StreamProcessor;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use aigate_core::sse::{SseEvent, SseParser};
use aigate_core::usage::{self, Usage};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

// ------------------------------------------------------------------------------ generators

const KEYS: &[&str] = &[
    "routes",
    "name",
    "match",
    "route_name",
    "hosts",
    "path_prefix",
    "headers",
    "provider",
    "kind",
    "authority",
    "path",
    "auth",
    "key",
    "env",
    "value",
    "passthrough",
    "none",
    "model",
    "models",
    "azure",
    "deployment",
    "api_version",
    "anthropic",
    "request",
    "max_body_bytes",
    "guards",
    "transform",
    "limits",
    "allow_on_headers_stop_iteration",
    "messages",
    "role",
    "content",
    "stream",
    "stream_options",
    "include_usage",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "choices",
    "delta",
    "prompt",
    "input",
    "type",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        select(KEYS).prop_map(str::to_string),
        "[a-z_]{1,8}",
        ".{0,6}"
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        select(
            &[
                "openai",
                "azure_openai",
                "anthropic",
                "gemini",
                "openai_compatible",
                "user",
                "system",
                "OPENAI_API_KEY",
                "/v1/",
                ""
            ][..]
        )
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Replaces the subtree reached by following `path` (indexes taken modulo the child count).
fn mutate(value: &mut Value, path: &[usize], replacement: Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    let child = match value {
        Value::Object(map) if !map.is_empty() => {
            let index = first % map.len();
            map.values_mut().nth(index)
        }
        Value::Array(items) if !items.is_empty() => {
            let index = first % items.len();
            items.get_mut(index)
        }
        _ => None,
    };
    match child {
        Some(child) if !rest.is_empty() => mutate(child, rest, replacement),
        Some(child) => *child = replacement,
        None => *value = replacement,
    }
}

fn valid_config() -> Value {
    json!({"routes": [
        {"name": "a", "match": {"route_name": "llm", "hosts": ["llm.example.com", "*.corp"], "path_prefix": "/v1/",
                                "headers": {"x-tier": "free"}},
         "provider": {"kind": "openai", "auth": {"key": {"env": "OPENAI_API_KEY"}}, "models": {"fast": "gpt-4o-mini"}},
         "request": {"max_body_bytes": 4096}},
        {"name": "b", "provider": {"kind": "azure_openai", "authority": "r.openai.azure.com", "auth": {"key": {"value": "az-secret"}},
                                   "azure": {"deployment": "d", "api_version": "2024-10-21"}}},
        {"name": "c", "provider": {"kind": "openai_compatible", "authority": "vllm:8000", "auth": {"none": true}, "model": "llama"}}
    ]})
}

fn env(name: &str) -> Option<String> {
    (name == "OPENAI_API_KEY").then(|| "sk-prop-secret".to_string())
}

fn chat_request() -> impl Strategy<Value = Value> {
    let message = (
        select(&["system", "user", "assistant", "tool", "wizard"][..]),
        ".{0,40}",
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}));
    (
        prop::collection::vec(message, 0..8),
        prop::option::of(select(&["fast", "gpt-4o", "unknown"][..])),
        prop::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(|(messages, model, stream, usage)| {
            let mut body = json!({"messages": messages});
            if let Some(model) = model {
                body["model"] = json!(model);
            }
            if let Some(stream) = stream {
                body["stream"] = json!(stream);
            }
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            body
        })
}

/// Arbitrary split points for a byte string: the chunk lengths.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..64, 0..12)
}

fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for cut in cuts {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((*cut).min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

// ------------------------------------------------------------------------------ config

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_from_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_and_compile(&bytes, &env);
    }

    #[test]
    fn config_from_arbitrary_json_never_panics(value in json_value()) {
        let _ = parse_and_compile(value.to_string().as_bytes(), &env);
        let _ = parse_and_compile(json!({"routes": [value]}).to_string().as_bytes(), &env);
    }

    #[test]
    fn mutated_configs_fail_with_a_path_or_compile(path in prop::collection::vec(any::<usize>(), 0..6), replacement in json_value()) {
        let mut config = valid_config();
        mutate(&mut config, &path, replacement);
        let text = config.to_string();
        match parse_and_compile(text.as_bytes(), &env) {
            Ok(plan) => {
                // Compiling is deterministic.
                let again = parse_and_compile(text.as_bytes(), &env).unwrap();
                prop_assert_eq!(plan.routes.len(), again.routes.len());
            }
            Err(error) => {
                prop_assert!(!error.message.is_empty());
                prop_assert!(!error.to_string().contains("sk-prop-secret"), "secret in {}", error);
            }
        }
    }
}

// ------------------------------------------------------------------------------ requests

proptest! {
    #[test]
    fn request_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(value) = api::parse_body(&bytes) {
            prop_assert!(value.is_object());
        }
    }

    #[test]
    fn validation_never_panics_and_valid_means_usable(value in json_value(), request in chat_request()) {
        for operation in [Operation::ChatCompletions, Operation::Completions, Operation::Embeddings, Operation::ListModels] {
            let _ = aigate_core::client_api::validate(operation, &value);
        }
        if aigate_core::client_api::validate(Operation::ChatCompletions, &request).is_ok() {
            let messages = request["messages"].as_array().unwrap();
            prop_assert!(!messages.is_empty());
            prop_assert!(messages.iter().all(|m| m["role"].is_string()));
        }
    }
}

// ------------------------------------------------------------------------------ SSE framing

fn sse_events() -> impl Strategy<Value = Vec<SseEvent>> {
    let event = (
        prop::option::of("[a-zA-Z_]{1,12}"),
        prop::collection::vec("[^\r\n]{0,24}", 1..4),
    )
        .prop_map(|(event, lines)| SseEvent {
            event,
            data: lines.join("\n"),
        });
    prop::collection::vec(event, 0..10)
}

fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut events);
    }
    parser.finish(&mut events);
    events
}

proptest! {
    #[test]
    fn sse_round_trips_under_any_chunking_and_line_ending(events in sse_events(), cuts in chunking(), ending in 0..3u8) {
        let mut bytes = Vec::new();
        for event in &events {
            event.write_to(&mut bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        let text = match ending {
            0 => text,
            1 => text.replace('\n', "\r\n"),
            _ => text.replace('\n', "\r"),
        };
        let parsed = parse_chunks(&split(text.as_bytes(), &cuts));
        prop_assert_eq!(parsed, events);
    }

    #[test]
    fn sse_arbitrary_bytes_give_the_same_events_whatever_the_chunking(bytes in prop::collection::vec(any::<u8>(), 0..512), cuts in chunking()) {
        let whole = parse_chunks(&[&bytes]);
        let pieces = parse_chunks(&split(&bytes, &cuts));
        prop_assert_eq!(pieces, whole);
    }
}

// ------------------------------------------------------------------------------ usage

proptest! {
    #[test]
    fn usage_round_trips(prompt in 0u64..(1 << 53), completion in 0u64..(1 << 53), noise in json_value()) {
        let expected = Usage::new(prompt, completion);
        let body = json!({"id": "x", "noise": noise, "usage": expected.to_json()});
        prop_assert_eq!(usage::from_json(body.to_string().as_bytes()), Some(expected));
        prop_assert_eq!(usage::from_stream_event(&body.to_string()), Some(expected));
    }

    #[test]
    fn usage_from_arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), value in json_value()) {
        let _ = usage::from_json(&bytes);
        let _ = usage::from_json(value.to_string().as_bytes());
        let _ = usage::from_stream_event(&String::from_utf8_lossy(&bytes));
    }
}

// ------------------------------------------------------------------------------ stream processing

fn openai_stream_events() -> impl Strategy<Value = Vec<SseEvent>> {
    let chunk = prop_oneof![
        ".{0,12}".prop_map(|text| SseEvent::data(
            json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}}]})
            .to_string()
        )),
        (0u64..1000, 0u64..1000).prop_map(|(p, c)| SseEvent::data(
            json!({"object": "chat.completion.chunk",
            "choices": [], "usage": Usage::new(p, c).to_json()})
            .to_string()
        )),
        "[^\r\n]{0,16}".prop_map(SseEvent::data),
    ];
    (prop::collection::vec(chunk, 0..8), any::<bool>()).prop_map(|(mut events, done)| {
        if done {
            events.push(SseEvent::data("[DONE]"));
        }
        events
    })
}

/// What the client receives (a chunk for which `push` returns None passes unchanged, as the
/// glue does it), whether any chunk was rewritten, and the usage read.
fn run_processor(strip_usage: bool, chunks: &[&[u8]]) -> (Vec<u8>, bool, Option<Usage>) {
    let mut processor = StreamProcessor::new(None, Vec::new(), strip_usage);
    let mut host = RecordingHost::new();
    let mut out = Vec::new();
    let mut rewritten = false;
    for (index, chunk) in chunks.iter().enumerate() {
        let end = index + 1 == chunks.len();
        match processor.push(chunk, end, &mut host) {
            Some(bytes) => {
                rewritten = true;
                out.extend_from_slice(&bytes);
            }
            None => out.extend_from_slice(chunk),
        }
    }
    (out, rewritten, processor.usage())
}

proptest! {
    #[test]
    fn stream_output_does_not_depend_on_chunking(events in openai_stream_events(), cuts in chunking(), strip in any::<bool>()) {
        let mut bytes = Vec::new();
        for event in &events {
            event.write_to(&mut bytes);
        }
        let (whole, whole_rewritten, whole_usage) = run_processor(strip, &[&bytes]);
        let (pieces, pieces_rewritten, pieces_usage) = run_processor(strip, &split(&bytes, &cuts));
        prop_assert_eq!(&whole, &pieces);
        prop_assert_eq!(whole_usage, pieces_usage);
        let last_usage = events.iter().rev().find_map(|e| usage::from_stream_event(&e.data));
        prop_assert_eq!(whole_usage, last_usage);
        if strip {
            // The client gets the same events but the usage-only chunks.
            let expected: Vec<SseEvent> = events.iter()
                .filter(|e| !(e.data.contains("\"usage\"") && e.data.contains("\"choices\":[]")))
                .cloned().collect();
            prop_assert_eq!(parse_chunks(&[&whole]), expected);
        } else {
            // Passthrough: bytes go on unchanged.
            prop_assert!(!whole_rewritten && !pieces_rewritten);
            prop_assert_eq!(&whole, &bytes);
        }
    }

    #[test]
    fn stream_processing_of_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), cuts in chunking(), strip in any::<bool>()) {
        let _ = run_processor(strip, &split(&bytes, &cuts));
    }
}

// ------------------------------------------------------------------------------ the whole Flow

fn flow_plan(mode_a: bool) -> Rc<Plan> {
    let config = json!({
        "allow_on_headers_stop_iteration": mode_a,
        "routes": [{
            "name": "chat", "match": {"route_name": "llm"},
            "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"key": {"env": "OPENAI_API_KEY"}},
                         "models": {"fast": "gpt-4o-mini", "gpt-4o": "gpt-4o"}},
            "request": {"max_body_bytes": 2048}
        }]
    });
    Rc::new(parse_and_compile(config.to_string().as_bytes(), &env).unwrap())
}

fn header() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            select(
                &[
                    "authorization",
                    "x-api-key",
                    "content-type",
                    "content-length",
                    "accept-encoding",
                    "x-user"
                ][..]
            )
            .prop_map(str::to_string),
            "[a-z-]{1,12}"
        ],
        "[ -~]{0,40}",
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        chat_request().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..300),
        (chat_request(), 0usize..4000).prop_map(|(v, pad)| {
            let mut v = v;
            v["padding"] = json!("x".repeat(pad));
            v.to_string().into_bytes()
        }),
    ]
}

fn upstream_answer() -> impl Strategy<Value = (u16, &'static str, Vec<u8>)> {
    (
        prop_oneof![Just(200u16), Just(429), Just(500), Just(503), 100u16..600],
        select(&["application/json", "text/event-stream", "text/plain", ""][..]),
        prop_oneof![
            openai_stream_events().prop_map(|events| {
                let mut out = Vec::new();
                for event in events {
                    event.write_to(&mut out);
                }
                out
            }),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            Just(json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..300),
        ],
    )
}

/// Feeds body chunks as Envoy does: cumulative sizes while paused, the chunk when continued.
fn send_request(flow: &mut Flow, host: &mut RecordingHost, body: &[u8], cuts: &[usize]) {
    let chunks = split(body, cuts);
    let headers_action = flow.on_request_headers(host, body.is_empty());
    if host.local_response.is_some() || body.is_empty() {
        return;
    }
    let mut seen = 0;
    let mut action = headers_action;
    for (index, chunk) in chunks.iter().enumerate() {
        let end = index + 1 == chunks.len();
        seen += chunk.len();
        action = flow.on_request_body(host, seen, end);
        if host.local_response.is_some() || (action == Action::Continue && !end) {
            break;
        }
    }
    let _ = action;
}

fn respond(
    flow: &mut Flow,
    host: &mut RecordingHost,
    status: u16,
    content_type: &str,
    body: &[u8],
    cuts: &[usize],
) -> Vec<u8> {
    host.response_headers = vec![(":status".into(), status.to_string())];
    if !content_type.is_empty() {
        host.response_headers
            .push(("content-type".into(), content_type.into()));
    }
    flow.on_response_headers(host, body.is_empty());
    let mut client = Vec::new();
    let mut buffered = Vec::new();
    let chunks = split(body, cuts);
    for (index, chunk) in chunks.iter().enumerate() {
        let end = index + 1 == chunks.len();
        buffered.extend_from_slice(chunk);
        host.response_body = buffered.clone();
        if flow.on_response_body(host, buffered.len(), end) == Action::Continue {
            client.extend_from_slice(&host.response_body);
            buffered.clear();
        }
    }
    flow.on_log(host);
    client
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flow_survives_arbitrary_requests_and_answers(
        mode_a in any::<bool>(),
        method in prop_oneof![Just("POST".to_string()), Just("GET".to_string()), "[A-Z]{1,7}"],
        path in prop_oneof![
            select(&["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/chat/completions?x=1"][..]).prop_map(str::to_string),
            "/[ -~]{0,30}",
        ],
        extra in prop::collection::vec(header(), 0..6),
        body in body(),
        body_cuts in chunking(),
        (status, content_type, answer) in upstream_answer(),
        answer_cuts in chunking(),
    ) {
        let mut host = RecordingHost::new();
        host.request_headers = vec![
            (":method".into(), method),
            (":path".into(), path),
            (":authority".into(), "gw.local".into()),
        ];
        host.request_headers.extend(extra);
        host.request_body = body.clone();
        host.set_property_value(&["xds", "route_name"], b"llm");
        let mut flow = Flow::new(flow_plan(mode_a));
        send_request(&mut flow, &mut host, &body, &body_cuts);

        if let Some(local) = &host.local_response {
            let value: Value = serde_json::from_slice(&local.body).expect("local replies are JSON");
            if local.status != 200 {
                prop_assert!((400..600).contains(&local.status));
                prop_assert!(value["error"]["message"].is_string() && value["error"]["type"].is_string());
            }
            prop_assert!(!String::from_utf8_lossy(&local.body).contains("sk-prop-secret"));
            return Ok(());
        }
        if host.request_header(":authority") == Some("upstream.local") && host.resumed_request == 0 {
            // Forwarded: the server's key replaced any client credential.
            prop_assert_eq!(host.request_header("authorization"), Some("Bearer sk-prop-secret"));
            prop_assert_eq!(host.request_header("x-api-key"), None);
            if host.request_body != body {
                let upstream: Value = serde_json::from_slice(&host.request_body).expect("upstream body is JSON");
                prop_assert!(upstream.is_object());
            }
        }
        let client = respond(&mut flow, &mut host, status, content_type, &answer, &answer_cuts);
        if !(200..300).contains(&status) && host.request_header(":authority") == Some("upstream.local") {
            let value: Value = serde_json::from_slice(&client).expect("upstream errors become JSON");
            prop_assert!(value["error"]["message"].is_string());
        }
    }
}
