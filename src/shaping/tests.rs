//! Shaping through the whole request path (`Flow` + `RecordingHost`), and its config errors.

use std::rc::Rc;

use serde_json::{json, Value};

use crate::host::RecordingHost;
use crate::pipeline::{Action, Flow};
use crate::plan::parse_and_compile;

fn no_env(_: &str) -> Option<String> {
    None
}

fn route_config(request: Value) -> Value {
    json!({"routes":[{
        "name": "chat",
        "provider": {"kind":"openai","auth":{"key":{"value":"sk-up"}},"models":{"fast":"gpt-4o-mini","smart":"gpt-4o"}},
        "request": request,
    }]})
}

/// Sends one chat request through a fresh flow; returns the host to inspect.
fn send(config: &Value, body: &Value) -> RecordingHost {
    let plan = parse_and_compile(config.to_string().as_bytes(), &no_env).unwrap();
    let mut flow = Flow::new(Rc::new(plan));
    let mut host = RecordingHost::new();
    let bytes = body.to_string().into_bytes();
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
        (":authority".into(), "gw".into()),
        ("content-length".into(), bytes.len().to_string()),
    ];
    host.request_body = bytes;
    if flow.on_request_headers(&mut host, false) == Action::Continue {
        let size = host.request_body.len();
        flow.on_request_body(&mut host, size, true);
    }
    host
}

fn upstream_body(host: &RecordingHost) -> Value {
    assert!(
        host.local_response.is_none(),
        "rejected: {:?}",
        host.local_response
    );
    serde_json::from_slice(&host.request_body).unwrap()
}

fn rejection(host: &RecordingHost) -> (u16, Value) {
    let local = host.local_response.as_ref().expect("a local response");
    (local.status, serde_json::from_slice(&local.body).unwrap())
}

fn full_config() -> Value {
    route_config(json!({
        "prepend": [{"role":"system","content":"You are terse."}],
        "append": [{"role":"user","content":"Answer in English."}],
        "templates": [{"name":"summarize","body":{
            "model": "fast",
            "messages":[{"role":"user","content":"Summarize: {{text}}"}],
            "max_tokens": "{{limit}}"
        }}],
        "defaults": {"temperature": 0.2, "presence_penalty": 0.1},
        "overrides": {"max_tokens": 512, "user": "gateway"}
    }))
}

#[test]
fn stages_run_in_the_documented_order() {
    // template → decorate → defaults/overrides → model mapping, observed in the upstream body.
    let host = send(
        &full_config(),
        &json!({"template":"summarize","properties":{"text":"a \"quoted\" text","limit":64},
                "model":"smart","stream":false,"top_p":0.5,
                "messages":[{"role":"user","content":"ignored: the template sets messages"}]}),
    );
    let body = upstream_body(&host);
    assert_eq!(
        body["messages"],
        json!([
            {"role":"system","content":"You are terse."},
            {"role":"user","content":"Summarize: a \"quoted\" text"},
            {"role":"user","content":"Answer in English."}
        ])
    );
    // The template's "model": "fast" wins over the client's "smart"; mapping runs after.
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["max_tokens"], 512,
        "override beats the template's property"
    );
    assert_eq!(body["temperature"], 0.2, "default fills the gap");
    assert_eq!(body["presence_penalty"], 0.1);
    assert_eq!(body["top_p"], 0.5, "the client's other fields are kept");
    assert_eq!(body["stream"], false);
    assert_eq!(body["user"], "gateway");
    assert!(body.get("template").is_none() && body.get("properties").is_none());
}

#[test]
fn untemplated_requests_are_decorated_and_defaulted() {
    let host = send(
        &full_config(),
        &json!({"model":"fast","temperature":0.9,"messages":[{"role":"user","content":"hi"}]}),
    );
    let body = upstream_body(&host);
    let contents: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["You are terse.", "hi", "Answer in English."]);
    assert_eq!(
        body["temperature"], 0.9,
        "the client's value beats the default"
    );
    assert_eq!(body["max_tokens"], 512);
}

#[test]
fn template_errors_are_400s_that_name_the_problem() {
    let config = full_config();
    let (status, error) = rejection(&send(
        &config,
        &json!({"template":"summarise","model":"fast"}),
    ));
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "unknown_template");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("summarise"));

    let (status, error) = rejection(&send(
        &config,
        &json!({"template":"summarize","properties":{}}),
    ));
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "missing_template_property");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"text\"") && message.contains("\"limit\""),
        "{message}"
    );

    let (_, error) = rejection(&send(&config, &json!({"template":7})));
    assert_eq!(error["error"]["code"], "invalid_template_request");
    let (_, error) = rejection(&send(
        &config,
        &json!({"template":"summarize","properties":"text"}),
    ));
    assert_eq!(error["error"]["code"], "invalid_template_request");
    let (_, error) = rejection(&send(
        &config,
        &json!({"properties":{"text":"x"},"messages":[{"role":"user","content":"x"}]}),
    ));
    assert_eq!(error["error"]["code"], "invalid_template_request");
}

#[test]
fn allow_untemplated_false_refuses_plain_requests() {
    let config = route_config(json!({
        "templates": [{"name":"t","body":{"messages":[{"role":"user","content":"{{q}}"}]}}],
        "allow_untemplated": false
    }));
    let (status, error) = rejection(&send(
        &config,
        &json!({"model":"fast","messages":[{"role":"user","content":"hi"}]}),
    ));
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "template_required");
    let body = upstream_body(&send(
        &config,
        &json!({"model":"fast","template":"t","properties":{"q":"hi"}}),
    ));
    assert_eq!(body["messages"], json!([{"role":"user","content":"hi"}]));
}

#[test]
fn routes_without_templates_forward_template_fields() {
    let config = route_config(json!({}));
    let body = upstream_body(&send(
        &config,
        &json!({"model":"fast","template":"x","messages":[{"role":"user","content":"hi"}]}),
    ));
    assert_eq!(body["template"], "x");
}

#[test]
fn a_rendered_template_is_still_validated() {
    let config = route_config(json!({
        "templates": [{"name":"t","body":{"messages":[{"role":"{{role}}","content":"x"}]}}]
    }));
    let (status, error) = rejection(&send(
        &config,
        &json!({"model":"fast","template":"t","properties":{"role":"wizard"}}),
    ));
    assert_eq!(status, 400);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0].role"));
}

#[test]
fn config_errors_name_their_paths() {
    let cases = [
        (
            json!({"prepend":[{"role":"user"}]}),
            "routes[0].request.prepend[0].content",
        ),
        (
            json!({"append":[{"role":"nobody","content":"x"}]}),
            "routes[0].request.append[0].role",
        ),
        (
            json!({"templates":[{"name":"a","body":{}},{"name":"a","body":{}}]}),
            "routes[0].request.templates[1].name",
        ),
        (
            json!({"templates":[{"name":"a","body":{"messages":[{"role":"user","content":"{{x"}]}}]}),
            "routes[0].request.templates[0].body.messages[0].content",
        ),
        (
            json!({"allow_untemplated":false}),
            "routes[0].request.allow_untemplated",
        ),
        (
            json!({"overrides":{"stream":"no"}}),
            "routes[0].request.overrides.stream",
        ),
        (
            json!({"defaults":{"model":""}}),
            "routes[0].request.defaults.model",
        ),
    ];
    for (request, path) in cases {
        let err =
            parse_and_compile(route_config(request).to_string().as_bytes(), &no_env).unwrap_err();
        assert_eq!(err.path, path, "{err}");
    }
}
