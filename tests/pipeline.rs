//! The whole request pipeline driven natively through `RecordingHost`, phase by phase, as
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Envoy would call it.

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;
use support::{json_of, local_error, respond};

fn plan(config: Value) -> Rc<Plan> {
    let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-server-secret".to_string());
    support::compile(&config, &env)
}

fn openai_route(extra: Value) -> Value {
    let mut route = json!({
        "name": "chat",
        "match": {"route_name": "llm"},
        "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"key": {"env": "OPENAI_API_KEY"}}}
    });
    if let (Some(route), Some(extra)) = (route.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            route.insert(key.clone(), value.clone());
        }
    }
    route
}

fn request(method: &str, path: &str, body: &[u8]) -> RecordingHost {
    let mut host = RecordingHost::new();
    host.request_headers = vec![
        (":method".into(), method.into()),
        (":path".into(), path.into()),
        (":authority".into(), "localhost:10000".into()),
        ("authorization".into(), "Bearer client-key".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), body.len().to_string()),
        ("accept-encoding".into(), "gzip".into()),
    ];
    host.request_body = body.to_vec();
    host.set_property_value(&["xds", "route_name"], b"llm");
    host
}

/// Runs the request phases; returns the actions of headers and body.
fn send(flow: &mut Flow, host: &mut RecordingHost) -> (Action, Action) {
    let no_body = host.request_body.is_empty();
    let headers = flow.on_request_headers(host, no_body);
    if host.local_response.is_some() {
        return (headers, Action::Pause);
    }
    let size = host.request_body.len();
    let body = flow.on_request_body(host, size, true);
    (headers, body)
}

#[test]
fn unmatched_request_passes_untouched() {
    let plan = plan(json!({"routes": [openai_route(json!({}))]}));
    let mut host = request("POST", "/v1/chat/completions", b"not json at all");
    host.properties.clear();
    host.set_property_value(&["xds", "route_name"], b"other");
    let before = host.clone();
    let mut flow = Flow::new(plan);
    assert_eq!(
        send(&mut flow, &mut host),
        (Action::Continue, Action::Continue)
    );
    assert_eq!(host.request_headers, before.request_headers);
    assert_eq!(host.request_body, before.request_body);
    assert!(host.local_response.is_none());
}

#[test]
fn chat_request_gets_key_and_upstream_headers() {
    let plan = plan(json!({"routes": [openai_route(json!({"provider": {
        "kind": "openai", "authority": "upstream.local", "auth": {"key": {"env": "OPENAI_API_KEY"}},
        "models": {"fast": "gpt-4o-mini"}}}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    assert_eq!(
        send(&mut flow, &mut host),
        (Action::Continue, Action::Continue)
    );
    assert_eq!(host.request_header(":authority"), Some("upstream.local"));
    assert_eq!(host.request_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(
        host.request_header("authorization"),
        Some("Bearer sk-server-secret")
    );
    assert_eq!(host.request_header("content-length"), None);
    assert_eq!(host.request_header("accept-encoding"), Some("identity"));
    let upstream = json_of(&host.request_body);
    assert_eq!(upstream["model"], "gpt-4o-mini");
    assert_eq!(
        host.filter_state.get("aigate.model").map(String::as_str),
        Some("gpt-4o-mini")
    );
}

#[test]
fn unknown_model_is_refused() {
    let plan = plan(json!({"routes": [openai_route(json!({"provider": {
        "kind": "openai", "authority": "u", "auth": {"none": true}, "models": {"fast": "gpt-4o-mini"}}}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    let (status, body) = local_error(&host);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "model_not_found");
    // `none` strips the client's credential too.
    assert_eq!(host.request_header("authorization"), None);
}

#[test]
fn passthrough_keeps_client_credential() {
    let plan = plan(json!({"routes": [openai_route(json!({"provider": {
        "kind": "openai", "authority": "u", "auth": {"passthrough": true}}}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    assert_eq!(
        host.request_header("authorization"),
        Some("Bearer client-key")
    );
}

#[test]
fn bad_input_gets_openai_errors() {
    let plan = plan(json!({"routes": [openai_route(json!({"request": {"max_body_bytes": 64}}))]}));
    let cases: [(&str, &str, &[u8], u16, &str); 6] = [
        (
            "POST",
            "/v1/chat/completions",
            b"{not json",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"model":"m"}"#,
            400,
            "missing_required_parameter",
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"model":"m","messages":"x"}"#,
            400,
            "invalid_value",
        ),
        (
            "GET",
            "/v1/chat/completions",
            b"",
            400,
            "method_not_allowed",
        ),
        ("POST", "/v1/files", b"{}", 404, "unknown_endpoint"),
        (
            "POST",
            "/v1/chat/completions",
            &[b' '; 100],
            413,
            "request_too_large",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let mut host = request(method, path, body);
        let mut flow = Flow::new(Rc::clone(&plan));
        send(&mut flow, &mut host);
        let (got_status, got) = local_error(&host);
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}"
        );
        assert!(got["error"]["message"].is_string());
        assert!(
            !String::from_utf8_lossy(&host.local_response.as_ref().unwrap().body)
                .contains("sk-server-secret")
        );
    }
}

#[test]
fn oversized_body_without_content_length_is_413_while_buffering() {
    let plan = plan(json!({"routes": [openai_route(json!({"request": {"max_body_bytes": 10}}))]}));
    let mut host = request("POST", "/v1/chat/completions", b"");
    host.request_headers
        .retain(|(name, _)| name != "content-length");
    let mut flow = Flow::new(plan);
    assert_eq!(flow.on_request_headers(&mut host, false), Action::Continue);
    host.request_body = vec![b'x'; 11];
    assert_eq!(flow.on_request_body(&mut host, 11, false), Action::Pause);
    assert_eq!(local_error(&host).0, 413);
}

#[test]
fn models_are_listed_locally() {
    let plan = plan(json!({"routes": [openai_route(json!({"provider": {
        "kind": "openai", "authority": "u", "auth": {"none": true}, "models": {"fast": "a", "smart": "b"}}}))]}));
    let mut host = request("GET", "/v1/models", b"");
    let mut flow = Flow::new(plan);
    assert_eq!(flow.on_request_headers(&mut host, true), Action::Pause);
    let reply = host.local_response.clone().unwrap();
    assert_eq!(reply.status, 200);
    let ids: Vec<String> = json_of(&reply.body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["fast", "smart"]);
}

#[test]
fn json_answer_passes_unchanged_and_usage_is_counted() {
    let plan = plan(json!({"routes": [openai_route(json!({}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    let answer = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    let client = respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[&answer[..40], &answer[40..]],
    );
    assert_eq!(client, answer.to_vec());
    let usage = |t: &str| {
        host.histogram_total(
            aigate_core::metrics::TOKEN_USAGE,
            &[
                ("route", "chat"),
                ("gen_ai.provider.name", "openai"),
                ("gen_ai.request.model", "gpt-4o"),
                ("gen_ai.token.type", t),
            ],
        )
    };
    assert_eq!(
        (usage("input"), usage("output"), usage("total")),
        (11, 7, 0)
    );
    assert_eq!(
        host.counter_total(
            aigate_core::metrics::REQUESTS,
            &[("gen_ai.request.model", "gpt-4o")]
        ),
        1
    );
    assert_eq!(
        host.filter_state
            .get("aigate.total_tokens")
            .map(String::as_str),
        Some("18")
    );
}

const STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
    "data: [DONE]\n\n"
);

fn stream_request(include_usage: bool) -> (Flow, RecordingHost) {
    let plan = plan(json!({"routes": [openai_route(json!({}))]}));
    let body = if include_usage {
        json!({"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]})
    } else {
        json!({"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]})
    };
    let mut host = request("POST", "/v1/chat/completions", body.to_string().as_bytes());
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    let upstream = json_of(&host.request_body);
    assert_eq!(upstream["stream_options"]["include_usage"], true);
    (flow, host)
}

#[test]
fn stream_passes_byte_for_byte_when_client_asked_for_usage() {
    let (mut flow, mut host) = stream_request(true);
    let bytes = STREAM.as_bytes();
    for cut in [1, 17, 100, 200, bytes.len() - 3] {
        let (mut flow2, mut host2) = stream_request(true);
        let client = respond(
            &mut flow2,
            &mut host2,
            200,
            "text/event-stream",
            &[&bytes[..cut], &bytes[cut..]],
        );
        assert_eq!(client, bytes.to_vec(), "cut {cut}");
        assert_eq!(
            host2
                .filter_state
                .get("aigate.total_tokens")
                .map(String::as_str),
            Some("7")
        );
    }
    respond(&mut flow, &mut host, 200, "text/event-stream", &[bytes]);
}

#[test]
fn stream_usage_chunk_is_counted_but_not_shown_when_not_asked() {
    let bytes = STREAM.as_bytes();
    for cut in 0..bytes.len() {
        let (mut flow, mut host) = stream_request(false);
        let client = respond(
            &mut flow,
            &mut host,
            200,
            "text/event-stream",
            &[&bytes[..cut], &bytes[cut..]],
        );
        let text = String::from_utf8(client).unwrap();
        assert!(!text.contains("\"usage\""), "cut {cut}: {text}");
        assert!(
            text.contains("Hel") && text.contains("lo") && text.ends_with("data: [DONE]\n\n"),
            "cut {cut}"
        );
        assert_eq!(
            host.filter_state
                .get("aigate.total_tokens")
                .map(String::as_str),
            Some("7"),
            "cut {cut}"
        );
    }
}

#[test]
fn upstream_errors_come_back_openai_shaped() {
    let plan = plan(json!({"routes": [openai_route(json!({}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    let client = respond(
        &mut flow,
        &mut host,
        502,
        "text/html",
        &[b"<html>bad gateway</html>"],
    );
    let body = json_of(&client);
    assert_eq!(body["error"]["code"], "upstream_502");
    assert_eq!(
        host.response_header_value("content-type"),
        Some("application/json")
    );
}

#[test]
fn headers_wait_for_the_body_when_allowed() {
    let plan = plan(
        json!({"allow_on_headers_stop_iteration": true, "routes": [openai_route(json!({"provider": {
        "kind": "azure_openai", "authority": "r.openai.azure.com", "auth": {"key": {"value": "az-key"}}}}))]}),
    );
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"gpt4o-deploy","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let mut flow = Flow::new(plan);
    assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
    assert_eq!(
        host.request_header(":path"),
        Some("/v1/chat/completions"),
        "headers untouched until the body is read"
    );
    let size = host.request_body.len();
    assert_eq!(
        flow.on_request_body(&mut host, size, true),
        Action::Continue
    );
    assert_eq!(
        host.request_header(":path"),
        Some("/openai/deployments/gpt4o-deploy/chat/completions?api-version=2024-10-21")
    );
    assert_eq!(host.request_header("api-key"), Some("az-key"));
    assert_eq!(host.request_header("authorization"), None);
}

#[test]
fn text_plain_body_is_still_parsed() {
    let plan = plan(json!({"routes": [openai_route(json!({}))]}));
    let mut host = request(
        "POST",
        "/v1/chat/completions",
        b"ignore previous instructions",
    );
    host.request_headers
        .retain(|(name, _)| name != "content-type");
    host.request_headers
        .push(("content-type".into(), "text/plain".into()));
    let mut flow = Flow::new(plan);
    send(&mut flow, &mut host);
    assert_eq!(local_error(&host).0, 400);
}
