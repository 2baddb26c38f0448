//! The in-place path (`pipeline::in_place`) against the general `Value` path: for generated
//! requests and answers, both must give the client and the provider the same JSON, and
//! leave the same metrics and filter state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::manual_is_multiple_of
)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::{parse_and_compile, Plan};
use proptest::prelude::*;
use serde_json::{json, Value};

const TEXTS: [&str; 8] = [
    "hello there",
    "call 555-123-4567 now",
    "mail bob@example.com please",
    "SSN 123-45-6789",
    "a \"quote\", a \\ and a\nnewline",
    "日本語 🙂 project falcon",
    "",
    "card 4111 1111 1111 1111.",
];

fn plan(variant: u8, mode_a: bool) -> Rc<Plan> {
    let mask = json!({"regex": {"builtins": ["ssn", "credit_card", "email", "phone_number", "ipv4"], "patterns": [{"name": "codename", "pattern": "(?i)project\\s+falcon"}], "action": "mask"}});
    let reject = json!({"regex": {"builtins": ["email"], "action": "reject"}});
    let mut provider = json!({"kind": "openai", "authority": "upstream.local", "auth": {"key": {"value": "sk-test"}}});
    let mut route = json!({"name": "chat", "match": {"path_prefix": "/"}});
    match variant {
        0 => {}
        1 => route["guards"] = json!({"request": [mask], "response": [mask]}),
        2 => route["guards"] = json!({"request": [reject]}),
        3 => {
            route["guards"] = json!({"request": [mask]});
            provider["models"] = json!({"alias": "gpt-4o", "gpt-4o": "gpt-4o"});
        }
        4 => {
            route["guards"] = json!({"response": [mask]});
            provider["model"] = json!("gpt-4o-mini");
        }
        _ => route["guards"] = json!({"request": [mask, reject]}),
    }
    if variant == 2 && mode_a {
        route["guards"]["response"] = json!([reject]);
    }
    route["provider"] = provider;
    let config = json!({"allow_on_headers_stop_iteration": mode_a, "routes": [route]});
    Rc::new(parse_and_compile(config.to_string().as_bytes(), &|_: &str| None).unwrap())
}

fn pick<T: Clone>(items: &[T], at: usize) -> T {
    items[at % items.len()].clone()
}

fn message(seed: &[usize]) -> Value {
    let role = pick(&["user", "system", "assistant", "tool", "bogus"], seed[0]);
    let text = pick(&TEXTS, seed[1]);
    let mut message = json!({"role": role});
    match seed[2] % 9 {
        0 | 1 => message["content"] = json!(text),
        // Shapes that are not the API's: refused by both paths, never forwarded unguarded.
        6 => message["content"] = json!([{"type": "text", "text": [text]}]),
        7 => message["content"] = json!([["text", text]]),
        8 => message["content"] = json!([{"type": "refusal", "refusal": {"text": text}}]),
        2 => {
            message["content"] = json!([{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "http://x"}}])
        }
        3 => message["content"] = json!([{"text": text}]),
        4 => message["content"] = Value::Null,
        _ => message["content"] = json!(5),
    }
    if seed[3] % 3 == 0 {
        message["tool_calls"] = json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": pick(&TEXTS, seed[4])}}]);
    }
    match seed[3] % 14 {
        2 => {
            message["tool_calls"] = json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": pick(&TEXTS, seed[4])}})
        }
        5 => {
            message["tool_calls"] = json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": pick(&TEXTS, seed[4])}}}])
        }
        8 => message["tool_calls"] = json!([["c1", {"arguments": pick(&TEXTS, seed[4])}]]),
        11 => message["function_call"] = json!({"name": "g", "arguments": pick(&TEXTS, seed[4])}),
        13 => message["function_call"] = json!(["g", pick(&TEXTS, seed[4])]),
        _ => {}
    }
    if seed[3] % 5 == 1 {
        message["refusal"] = json!(pick(&TEXTS, seed[4]));
    }
    message
}

fn request(seed: &[usize]) -> (String, Vec<u8>) {
    let (path, mut body) = match seed[0] % 8 {
        0 => (
            "/v1/completions",
            json!({"prompt": pick(&[json!(pick(&TEXTS, seed[1])), json!([pick(&TEXTS, seed[1]), pick(&TEXTS, seed[2])]), json!([]), json!(3)], seed[3])}),
        ),
        1 => (
            "/v1/embeddings",
            json!({"input": pick(&[json!(pick(&TEXTS, seed[1])), json!([pick(&TEXTS, seed[2]), [1, 2]]), json!(3),
                json!([[pick(&TEXTS, seed[2])]]), json!([[1, 2], [3]]), json!([1, 2]), json!([pick(&TEXTS, seed[1]), pick(&TEXTS, seed[2])])], seed[3])}),
        ),
        _ => {
            let count = 1 + seed[1] % 3;
            let messages: Vec<Value> = (0..count).map(|i| message(&seed[2 + i * 5..])).collect();
            ("/v1/chat/completions", json!({"messages": messages}))
        }
    };
    let model = [
        json!("gpt-4o"),
        json!("alias"),
        json!("unknown"),
        Value::Null,
        json!(5),
    ];
    if seed[17] % 6 != 5 {
        body["model"] = pick(&model, seed[17]);
    }
    let stream = [json!(true), json!(false), Value::Null, json!("yes")];
    if seed[18] % 5 != 4 {
        body["stream"] = pick(&stream, seed[18]);
    }
    let options = [
        json!({"include_usage": true}),
        json!({"include_usage": false}),
        Value::Null,
        json!({}),
    ];
    if seed[19] % 5 != 4 {
        body["stream_options"] = pick(&options, seed[19]);
    }
    if seed[20] % 4 == 0 {
        body["suffix"] = json!(pick(&TEXTS, seed[21]));
    }
    body["temperature"] = json!(0.5);
    let mut text = if seed[22] % 2 == 0 {
        serde_json::to_string(&body).unwrap()
    } else {
        serde_json::to_string_pretty(&body).unwrap()
    };
    if seed[22] % 7 == 3 {
        text = text.replacen('{', "{\"model\": \"dup\", ", 1); // a repeated key
    }
    if seed[22] % 11 == 5 {
        text = format!("  {text}\n");
    }
    if seed[22] % 13 == 4 {
        let depth = [50, 99, 100, 101, 127, 128, 129, 300][seed[23] % 8];
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        text = text.replacen('{', &format!("{{\"deep\": {deep}, "), 1);
    }
    (path.to_string(), text.into_bytes())
}

fn answer(seed: &[usize]) -> Vec<u8> {
    let content = pick(&TEXTS, seed[0]);
    let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"});
    if seed[1] % 2 == 0 {
        choice["logprobs"] = json!({"content": [{"token": content}]});
    }
    if seed[1] % 3 == 0 {
        choice["message"]["tool_calls"] = json!([{"id": "t", "type": "function", "function": {"name": "f", "arguments": pick(&TEXTS, seed[2])}}]);
    }
    let mut body = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [choice, {"index": 1, "text": pick(&TEXTS, seed[2])}]});
    match seed[3] % 3 {
        0 => {
            body["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12})
        }
        1 => body["usage"] = json!({"prompt_tokens": "x"}),
        _ => {}
    }
    if seed[4] % 9 == 0 {
        return b"not json".to_vec();
    }
    serde_json::to_vec(&body).unwrap()
}

/// Everything a run leaves behind that a client, the provider or an operator sees.
#[derive(Debug, PartialEq)]
struct Seen {
    local: Option<(u16, Value)>,
    upstream: Option<Value>,
    request_headers: Vec<(String, String)>,
    client: Option<Result<Value, Vec<u8>>>,
    response_headers: Vec<(String, String)>,
    counters: Vec<(String, u64)>,
    filter_state: Vec<(String, String)>,
}

fn run(plan: &Rc<Plan>, in_place: bool, path: &str, body: &[u8], answer: &[u8]) -> Seen {
    let mut host = RecordingHost::new();
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), path.into()),
        (":authority".into(), "gateway".into()),
        ("content-type".into(), "application/json".into()),
    ];
    host.request_body = body.to_vec();
    let mut flow = Flow::new(Rc::clone(plan));
    flow.set_in_place(in_place);
    flow.on_request_headers(&mut host, false);
    if host.local_response.is_none() {
        flow.on_request_body(&mut host, body.len(), true);
    }
    let local = host.local_response.as_ref().map(|r| {
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    });
    let mut upstream = None;
    let mut client = None;
    if local.is_none() {
        upstream = Some(serde_json::from_slice(&host.request_body).unwrap());
        host.response_headers = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ];
        flow.on_response_headers(&mut host, false);
        host.response_body = answer.to_vec();
        flow.on_response_body(&mut host, answer.len(), true);
        flow.on_log(&mut host);
        client = Some(
            serde_json::from_slice(&host.response_body).map_err(|_| host.response_body.clone()),
        );
    }
    let mut request_headers = host.request_headers.clone();
    request_headers.sort();
    let mut response_headers = host.response_headers.clone();
    response_headers.sort();
    Seen {
        local,
        upstream,
        request_headers,
        client,
        response_headers,
        counters: host.counters.into_iter().collect(),
        filter_state: host.filter_state.into_iter().collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn in_place_and_general_paths_agree(
        seed in proptest::collection::vec(0usize..1000, 30),
        variant in 0u8..6,
        mode_a in any::<bool>(),
    ) {
        let plan = plan(variant, mode_a);
        let (path, body) = request(&seed);
        let answer = answer(&seed[23..]);
        let general = run(&plan, false, &path, &body, &answer);
        let in_place = run(&plan, true, &path, &body, &answer);
        prop_assert_eq!(in_place, general, "body {}", String::from_utf8_lossy(&body));
    }
}

/// The in-place path is taken (the general one would re-serialise and reorder keys), and a
/// body nothing changes is left as it is.
#[test]
fn unchanged_bodies_are_not_rewritten() {
    let plan = plan(1, false);
    let body =
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    let answer = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let mut host = RecordingHost::new();
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
    ];
    host.request_body = body.to_vec();
    let mut flow = Flow::new(Rc::clone(&plan));
    flow.on_request_headers(&mut host, false);
    flow.on_request_body(&mut host, body.len(), true);
    assert_eq!(host.request_body, body);
    host.response_headers = vec![(":status".into(), "200".into())];
    flow.on_response_headers(&mut host, false);
    host.response_body = answer.to_vec();
    flow.on_response_body(&mut host, answer.len(), true);
    assert_eq!(host.response_body, answer);
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("2")
    );

    // Masking rewrites only the string, in place: key order and spacing stay.
    let body =
        br#"{"model":"gpt-4o", "messages":[{"role":"user","content":"mail bob@example.com"}]}"#;
    let mut host = RecordingHost::new();
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
    ];
    host.request_body = body.to_vec();
    let mut flow = Flow::new(plan);
    flow.on_request_headers(&mut host, false);
    flow.on_request_body(&mut host, body.len(), true);
    assert_eq!(
        String::from_utf8(host.request_body.clone()).unwrap(),
        r#"{"model":"gpt-4o", "messages":[{"role":"user","content":"mail <EMAIL>"}]}"#
    );
}

/// Text in shapes that are not the API's is refused with a 400 that names the field, by
/// both paths, instead of being forwarded past the guards.
#[test]
fn malformed_text_shapes_are_refused_by_both_paths() {
    let plan = plan(1, false);
    let ssn = "SSN 123-45-6789";
    for (path, body, field) in [
        (
            "/v1/embeddings",
            json!({"model": "m", "input": [[ssn]]}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": "m", "input": [ssn, 5]}),
            "input",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": [ssn]}]}]}),
            "messages[0].content[0].text",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": {"t": ssn}}]}]}),
            "messages[0].content[0].text",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": {"id": "c", "type": "function", "function": {"name": "f", "arguments": ssn}}}]}),
            "messages[0].tool_calls",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": ssn}}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "assistant", "content": "x", "refusal": [ssn]}]}),
            "messages[0].refusal",
        ),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        for in_place in [true, false] {
            let seen = run(&plan, in_place, path, &bytes, b"{}");
            let (status, error) = seen
                .local
                .clone()
                .unwrap_or_else(|| panic!("forwarded: {body}"));
            assert_eq!(status, 400, "{body}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("'{field}'")),
                "{message} should name {field}"
            );
            assert_eq!(error["error"]["type"], "invalid_request_error");
        }
    }
    // Token arrays are not text, and are the API's.
    for input in [json!([1, 2]), json!([[1, 2], [3]])] {
        let bytes = serde_json::to_vec(&json!({"model": "m", "input": input})).unwrap();
        let seen = run(&plan, true, "/v1/embeddings", &bytes, b"{}");
        assert_eq!(seen.local, None);
        assert_eq!(seen.upstream.unwrap()["input"], input);
    }
}
