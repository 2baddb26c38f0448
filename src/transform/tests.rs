//! Transformers through the whole pipeline (`Flow` + `RecordingHost`).

use std::rc::Rc;

use serde_json::{json, Value};

use crate::host::{Callout, CalloutReply, RecordingHost};
use crate::pipeline::{Action, Flow};
use crate::plan::parse_and_compile;
use crate::sse::{SseEvent, SseParser};

fn env(name: &str) -> Option<String> {
    (name == "XFORM_KEY").then(|| "sk-xform".to_string())
}

fn transformer(extra: Value) -> Value {
    let mut config = json!({
        "endpoint": {"cluster":"xform","authority":"xform.internal","timeout_ms":800,"auth":{"key":{"env":"XFORM_KEY"}}},
        "model": "rewriter",
        "prompt": "Rewrite it."
    });
    if let (Some(object), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    config
}

fn config(transform: Value, mode_a: bool) -> Value {
    json!({
        "allow_on_headers_stop_iteration": mode_a,
        "routes":[{
            "name": "chat",
            "provider": {"kind":"openai","auth":{"key":{"value":"sk-up"}},"models":{"fast":"gpt-4o-mini"}},
            "request": {"prepend":[{"role":"system","content":"Be terse."}]},
            "transform": transform,
        }]
    })
}

struct Harness {
    flow: Flow,
    host: RecordingHost,
}

impl Harness {
    fn new(config: &Value) -> Harness {
        let plan = parse_and_compile(config.to_string().as_bytes(), &env).unwrap();
        Harness {
            flow: Flow::new(Rc::new(plan)),
            host: RecordingHost::new(),
        }
    }

    /// Sends the request; returns what the request body phase answered.
    fn request(&mut self, body: &Value) -> Action {
        let bytes = body.to_string().into_bytes();
        self.host.request_headers = vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/v1/chat/completions".into()),
            (":authority".into(), "gw".into()),
            ("authorization".into(), "Bearer client".into()),
        ];
        self.host.request_body = bytes;
        self.flow.on_request_headers(&mut self.host, false);
        let size = self.host.request_body.len();
        self.flow.on_request_body(&mut self.host, size, true)
    }

    fn last_callout(&self) -> (u32, Callout) {
        self.host.callouts.last().cloned().expect("a callout")
    }

    fn reply(&mut self, status: u16, body: &[u8]) {
        let (token, _) = self.last_callout();
        let reply = CalloutReply {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
            grpc_status: None,
        };
        self.flow.on_callout_reply(&mut self.host, token, reply);
    }

    fn model_says(&mut self, content: &str) {
        let reply = json!({"model":"rewriter-1","choices":[{"index":0,"message":{"role":"assistant","content":content}}],
                           "usage":{"prompt_tokens":40,"completion_tokens":10,"total_tokens":50}});
        self.reply(200, reply.to_string().as_bytes());
    }

    /// The provider answers; returns the response body phase's action.
    fn answer(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Action {
        self.host.response_headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.host.response_body = body.to_vec();
        self.flow.on_response_headers(&mut self.host, false);
        let size = body.len();
        self.flow.on_response_body(&mut self.host, size, true)
    }

    fn upstream_body(&self) -> Value {
        assert!(
            self.host.local_response.is_none(),
            "rejected: {:?}",
            self.host.local_response
        );
        serde_json::from_slice(&self.host.request_body).unwrap()
    }

    fn local(&self) -> (u16, Value) {
        let local = self.host.local_response.as_ref().expect("a local response");
        (local.status, serde_json::from_slice(&local.body).unwrap())
    }

    fn client_body(&self) -> Value {
        serde_json::from_slice(&self.host.response_body).unwrap()
    }
}

fn chat(content: &str) -> Value {
    json!({"model":"fast","messages":[{"role":"user","content":content}]})
}

const JSON_ANSWER: [(&str, &str); 2] = [(":status", "200"), ("content-type", "application/json")];

fn provider_answer(content: &str) -> Vec<u8> {
    json!({"id":"chatcmpl-up","object":"chat.completion","created":1,"model":"gpt-4o-mini",
           "choices":[{"index":0,"message":{"role":"assistant","content":content},"finish_reason":"stop"}],
           "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})
    .to_string()
    .into_bytes()
}

fn counter(host: &RecordingHost, side: &str, outcome: &str) -> u64 {
    host.counter(&format!(
        "aigate.transformer.outcomes_total;route=chat;transformer={side};outcome={outcome}"
    ))
}

// ------------------------------------------------------------------ request side

#[test]
fn request_callout_carries_the_shaped_mapped_request() {
    let mut h = Harness::new(&config(json!({"request": transformer(json!({}))}), false));
    assert_eq!(h.request(&chat("card 4111 1111 1111 1111")), Action::Pause);
    let (_, callout) = h.last_callout();
    assert_eq!(callout.cluster, "xform");
    assert_eq!(callout.timeout_ms, 800);
    let header = |name: &str| {
        callout
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(header(":authority").as_deref(), Some("xform.internal"));
    assert_eq!(header("authorization").as_deref(), Some("Bearer sk-xform"));
    let body: Value = serde_json::from_slice(&callout.body).unwrap();
    assert_eq!(body["model"], "rewriter");
    assert_eq!(body["stream"], false);
    assert_eq!(
        body["messages"][0],
        json!({"role":"system","content":"Rewrite it."})
    );
    // The user message is the request as shaped (prepend) and mapped (model), in JSON.
    let sent: Value =
        serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["messages"][0]["content"], "Be terse.");
    assert_eq!(sent["messages"][1]["content"], "card 4111 1111 1111 1111");
}

#[test]
fn request_reply_replaces_the_upstream_body() {
    let mut h = Harness::new(&config(json!({"request": transformer(json!({}))}), false));
    h.request(&chat("card 4111 1111 1111 1111"));
    h.model_says(r#"{"model":"sneaky","messages":[{"role":"user","content":"card <CARD>"}],"temperature":0}"#);
    assert_eq!(h.host.resumed_request, 1);
    let body = h.upstream_body();
    assert_eq!(
        body["messages"],
        json!([{"role":"user","content":"card <CARD>"}])
    );
    assert_eq!(
        body["model"], "gpt-4o-mini",
        "the transformer can not change the model"
    );
    assert_eq!(body["temperature"], 0);
    assert_eq!(counter(&h.host, "request", "applied"), 1);
    let usage = |t: &str| {
        h.host.histograms.get(&format!(
            "gen_ai.client.token.usage;route=chat;transformer=request;gen_ai.operation.name=chat;gen_ai.request.model=rewriter;gen_ai.token.type={t}"
        )).cloned()
    };
    assert_eq!(usage("input"), Some(vec![40]));
    assert_eq!(usage("output"), Some(vec![10]));
    assert_eq!(usage("total"), None, "not a GenAI token type");
}

#[test]
fn request_extract_pattern_takes_the_first_group() {
    let extra = json!({"extract_pattern": "(?s)```(?:json)?\\s*(\\{.*?\\})\\s*```"});
    let mut h = Harness::new(&config(json!({"request": transformer(extra)}), false));
    h.request(&chat("x"));
    h.model_says("Here you go:\n```json\n{\"messages\":[{\"role\":\"user\",\"content\":\"clean\"}]}\n```\nAnything else?");
    assert_eq!(h.upstream_body()["messages"][0]["content"], "clean");
}

#[test]
fn request_output_that_is_no_request_is_a_502() {
    for (content, needle) in [
        ("Sorry, I can not do that.", "not valid JSON"),
        (r#"{"messages":"nope"}"#, "messages"),
    ] {
        let mut h = Harness::new(&config(
            json!({"request": transformer(json!({"failure_mode":"open"}))}),
            false,
        ));
        h.request(&chat("x"));
        h.model_says(content);
        let (status, error) = h.local();
        assert_eq!(status, 502);
        assert_eq!(error["error"]["code"], "transformer_invalid_output");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(!message.contains("Sorry"), "the model's text is not echoed");
        assert_eq!(counter(&h.host, "request", "invalid_output"), 1);
    }
    let mut h = Harness::new(&config(
        json!({"request": transformer(json!({"extract_pattern":"\\{.*\\}"}))}),
        false,
    ));
    h.request(&chat("x"));
    h.model_says("no braces here");
    assert_eq!(h.local().1["error"]["code"], "transformer_invalid_output");
}

#[test]
fn request_reply_that_is_no_chat_completion_is_a_502() {
    let mut h = Harness::new(&config(json!({"request": transformer(json!({}))}), false));
    h.request(&chat("x"));
    h.reply(200, b"<html>busy</html>");
    let (status, error) = h.local();
    assert_eq!(status, 502);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("chat completion"));
}

#[test]
fn request_failure_closed_is_a_503() {
    let mut h = Harness::new(&config(json!({"request": transformer(json!({}))}), false));
    h.request(&chat("x"));
    h.reply(504, b"upstream request timeout");
    let (status, error) = h.local();
    assert_eq!(status, 503);
    assert_eq!(error["error"]["code"], "transformer_unavailable");
    assert!(error["error"]["message"].as_str().unwrap().contains("504"));
    assert_eq!(counter(&h.host, "request", "failed_closed"), 1);
    assert_eq!(h.host.resumed_request, 0);
}

#[test]
fn request_failure_open_sends_the_request_unchanged() {
    let mut h = Harness::new(&config(
        json!({"request": transformer(json!({"failure_mode":"open"}))}),
        false,
    ));
    h.request(&chat("original"));
    h.reply(500, b"{}");
    assert_eq!(h.host.resumed_request, 1);
    assert_eq!(h.upstream_body()["messages"][1]["content"], "original");
    assert_eq!(counter(&h.host, "request", "failed_open"), 1);
}

#[test]
fn request_transformer_on_an_unknown_cluster_fails_at_once() {
    let mut h = Harness::new(&config(json!({"request": transformer(json!({}))}), false));
    h.host.unknown_clusters.push("xform".into());
    assert_eq!(h.request(&chat("x")), Action::Pause);
    assert_eq!(h.local().0, 503);
}

// ------------------------------------------------------------------ response side

#[test]
fn response_reply_replaces_the_answer() {
    let mut h = Harness::new(&config(json!({"response": transformer(json!({}))}), false));
    assert_eq!(h.request(&chat("hi")), Action::Continue);
    assert_eq!(
        h.answer(&JSON_ANSWER, &provider_answer("secret 4111")),
        Action::Pause
    );
    let (_, callout) = h.last_callout();
    let body: Value = serde_json::from_slice(&callout.body).unwrap();
    let sent: Value =
        serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["choices"][0]["message"]["content"], "secret 4111");
    let rewritten = String::from_utf8(provider_answer("secret <CARD>")).unwrap();
    h.model_says(&rewritten);
    assert_eq!(h.host.resumed_response, 1);
    assert_eq!(
        h.client_body()["choices"][0]["message"]["content"],
        "secret <CARD>"
    );
    // The provider's usage is still what counts for the route; the transformer's apart.
    let provider = h.host.histograms.iter().find(|(name, _)| {
        name.starts_with("gen_ai.client.token.usage;route=chat;gen_ai.operation.name=chat;gen_ai.provider.name=openai;gen_ai.request.model=gpt-4o-mini;")
            && name.ends_with(";gen_ai.token.type=output")
    });
    assert_eq!(
        provider.map(|(_, v)| v.clone()),
        Some(vec![2]),
        "{:?}",
        h.host.histograms.keys()
    );
    assert_eq!(
        h.host.histograms.get("gen_ai.client.token.usage;route=chat;transformer=response;gen_ai.operation.name=chat;gen_ai.request.model=rewriter;gen_ai.token.type=output"),
        Some(&vec![10])
    );
}

#[test]
fn response_instructions_set_status_headers_and_body_in_mode_a() {
    let mut h = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    h.request(&chat("hi"));
    assert_eq!(
        h.answer(&JSON_ANSWER, &provider_answer("hello")),
        Action::Pause
    );
    h.model_says(r#"{"status":201,"headers":{"x-reviewed":"yes","content-type":"text/plain"},"body":"reviewed: hello"}"#);
    assert_eq!(h.host.response_header_value(":status"), Some("201"));
    assert_eq!(h.host.response_header_value("x-reviewed"), Some("yes"));
    assert_eq!(
        h.host.response_header_value("content-type"),
        Some("text/plain")
    );
    assert_eq!(h.host.response_body, b"reviewed: hello");
}

#[test]
fn response_instructions_without_body_keep_the_answer() {
    let mut h = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    h.request(&chat("hi"));
    h.answer(&JSON_ANSWER, &provider_answer("hello"));
    h.model_says(r#"{"headers":{"x-checked":"1"}}"#);
    assert_eq!(h.host.response_header_value("x-checked"), Some("1"));
    assert_eq!(h.client_body()["choices"][0]["message"]["content"], "hello");
}

#[test]
fn bad_instructions_are_a_502() {
    let mut h = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    h.request(&chat("hi"));
    h.answer(&JSON_ANSWER, &provider_answer("hello"));
    h.model_says(r#"{"status":"ok"}"#);
    assert_eq!(h.host.response_header_value(":status"), Some("502"));
    assert_eq!(
        h.client_body()["error"]["code"],
        "transformer_invalid_output"
    );
}

#[test]
fn response_failure_modes() {
    let mut closed = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    closed.request(&chat("hi"));
    closed.answer(&JSON_ANSWER, &provider_answer("hello"));
    closed.reply(504, b"");
    assert_eq!(closed.host.response_header_value(":status"), Some("503"));
    assert_eq!(
        closed.client_body()["error"]["code"],
        "transformer_unavailable"
    );
    assert_eq!(counter(&closed.host, "response", "failed_closed"), 1);

    let open_config = transformer(json!({"parse_instructions":true,"failure_mode":"open"}));
    let mut open = Harness::new(&config(json!({"response": open_config}), true));
    open.request(&chat("hi"));
    open.answer(&JSON_ANSWER, &provider_answer("hello"));
    open.reply(503, b"");
    assert_eq!(open.host.response_header_value(":status"), Some("200"));
    assert_eq!(
        open.client_body()["choices"][0]["message"]["content"],
        "hello"
    );
    assert_eq!(counter(&open.host, "response", "failed_open"), 1);
}

fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(bytes, &mut events);
    parser.finish(&mut events);
    events
}

fn streamed_text(bytes: &[u8]) -> String {
    sse_events(bytes)
        .iter()
        .filter(|event| !event.is_done_marker())
        .filter_map(|event| serde_json::from_str::<Value>(&event.data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn streaming_client_gets_the_transformed_answer_as_sse() {
    let mut h = Harness::new(&config(json!({"response": transformer(json!({}))}), false));
    let mut request = chat("hi");
    request["stream"] = json!(true);
    h.request(&request);
    assert_eq!(
        h.upstream_body()["stream"],
        false,
        "upstream is asked without streaming"
    );
    h.answer(&JSON_ANSWER, &provider_answer("hello"));
    h.model_says(&String::from_utf8(provider_answer("HELLO")).unwrap());
    assert_eq!(
        h.host.response_header_value("content-type"),
        Some("text/event-stream")
    );
    assert_eq!(streamed_text(&h.host.response_body), "HELLO");
    assert!(sse_events(&h.host.response_body)
        .last()
        .unwrap()
        .is_done_marker());
}

#[test]
fn streaming_client_gets_plain_text_output_as_the_assistant_message() {
    let mut h = Harness::new(&config(json!({"response": transformer(json!({}))}), false));
    let mut request = chat("hi");
    request["stream"] = json!(true);
    h.request(&request);
    h.answer(&JSON_ANSWER, &provider_answer("hello"));
    h.model_says("Just the text, not JSON.");
    assert_eq!(
        streamed_text(&h.host.response_body),
        "Just the text, not JSON."
    );
}

#[test]
fn streaming_client_refused_by_instructions_gets_json() {
    let mut h = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    let mut request = chat("hi");
    request["stream"] = json!(true);
    h.request(&request);
    h.answer(&JSON_ANSWER, &provider_answer("hello"));
    h.model_says(
        r#"{"status":403,"body":{"error":{"message":"blocked","type":"policy","code":"blocked"}}}"#,
    );
    assert_eq!(h.host.response_header_value(":status"), Some("403"));
    assert_eq!(
        h.host.response_header_value("content-type"),
        Some("application/json")
    );
    assert_eq!(h.client_body()["error"]["code"], "blocked");
}

#[test]
fn gzipped_provider_answer_is_decoded_before_the_transformer() {
    let mut h = Harness::new(&config(json!({"response": transformer(json!({}))}), false));
    h.request(&chat("hi"));
    assert_eq!(h.host.request_header("accept-encoding"), Some("identity"));
    let zipped = crate::encoding::gzip_for_tests(&provider_answer("zipped hello"));
    let headers = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    assert_eq!(h.answer(&headers, &zipped), Action::Pause);
    assert_eq!(
        h.host.response_header_value("content-encoding"),
        None,
        "the client gets it decoded"
    );
    let (_, callout) = h.last_callout();
    let body: Value = serde_json::from_slice(&callout.body).unwrap();
    assert!(body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("zipped hello"));
    h.model_says("rewritten");
    assert_eq!(h.host.response_body, b"rewritten");
}

#[test]
fn undecodable_answer_is_a_clear_502() {
    let mut h = Harness::new(&config(
        json!({"response": transformer(json!({"parse_instructions":true}))}),
        true,
    ));
    h.request(&chat("hi"));
    let headers = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "br"),
    ];
    h.answer(&headers, b"\x0b\x02\x80{}\x03");
    assert!(
        h.host.callouts.is_empty(),
        "no transformer call on an unreadable answer"
    );
    assert_eq!(h.host.response_header_value(":status"), Some("502"));
    let message = h.client_body()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("\"br\""), "{message}");
}

// ------------------------------------------------------------------ config

#[test]
fn config_errors_name_their_paths() {
    let cases = [
        (
            json!({"request": transformer(json!({"parse_instructions":true}))}),
            true,
            "routes[0].transform.request.parse_instructions",
        ),
        (
            json!({"response": transformer(json!({"parse_instructions":true}))}),
            false,
            "routes[0]",
        ),
        (
            json!({"request": transformer(json!({"extract_pattern":"("}))}),
            false,
            "routes[0].transform.request.extract_pattern",
        ),
        (
            json!({"response": transformer(json!({"prompt":" "}))}),
            false,
            "routes[0].transform.response.prompt",
        ),
        (
            json!({"response": transformer(json!({"model":""}))}),
            false,
            "routes[0].transform.response.model",
        ),
        (
            json!({"request": transformer(json!({"endpoint":{"cluster":"x","auth":{"key":{"env":"NOPE"}}}}))}),
            false,
            "routes[0].transform.request.endpoint.auth.key.env",
        ),
    ];
    for (transform, mode_a, path) in cases {
        let err =
            parse_and_compile(config(transform, mode_a).to_string().as_bytes(), &env).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert!(!err.message.contains("sk-xform"));
    }
    // Without parse_instructions the response transformer works in mode B.
    assert!(parse_and_compile(
        config(json!({"response": transformer(json!({}))}), false)
            .to_string()
            .as_bytes(),
        &env
    )
    .is_ok());
}
