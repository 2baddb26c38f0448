//! Fallbacks (`routes[].fallbacks`, `retry`): the config checks, the downstream instance (the
//! stages once, the request left in the client's form) and the attempt instance (one
//! provider's translation and credential, the attempt counted), through a `RecordingHost`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use serde_json::{json, Value};
use support::*;

const OPENAI_KEY: &str = "sk-openai-primary-0001";
const ANTHROPIC_KEY: &str = "sk-ant-fallback-0002";

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some(OPENAI_KEY.into()),
        "ANTHROPIC_API_KEY" => Some(ANTHROPIC_KEY.into()),
        _ => None,
    }
}

fn route() -> Value {
    json!({
        "name": "chat",
        "provider": {"kind": "openai", "cluster": "openai", "model": "gpt-4o-mini",
                     "auth": {"key": {"env": "OPENAI_API_KEY"}}},
        "fallbacks": [
            {"kind": "anthropic", "cluster": "anthropic", "model": "claude-sonnet-4-5",
             "auth": {"key": {"env": "ANTHROPIC_API_KEY"}}}
        ],
        "retry": {"on": ["connect-failure", "reset", "timeout", "429", "5xx"], "per_try_timeout_ms": 1000},
        "request": {"prepend": [{"role": "system", "content": "Be terse."}]},
        "guards": {"request": [{"regex": {"builtins": ["email"], "action": "mask"}}]}
    })
}

fn plan() -> Rc<Plan> {
    compile(&json!({"routes": [route()]}), &env)
}

fn refused(route: Value) -> String {
    parse_and_compile(json!({"routes": [route]}).to_string().as_bytes(), &env)
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default()
}

fn chat_request(stream: bool) -> RecordingHost {
    let body = json!({"model": "my-model", "stream": stream,
                      "messages": [{"role": "user", "content": "mail me at a@b.example"}]});
    request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw.example"),
            ("authorization", "Bearer client-key"),
            ("content-length", &body.to_string().len().to_string()),
        ],
        body.to_string().into_bytes(),
    )
}

/// The request as an attempt's upstream filter sees it: the downstream instance's output
/// (body and filter state), Envoy's attempt count and the picked host's metadata.
fn attempt_host(body: Vec<u8>, attempt: u64, cluster: Option<&str>) -> RecordingHost {
    attempt_host_with(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw.example"),
            ("authorization", "Bearer client-key"),
        ],
        body,
        attempt,
        cluster,
    )
}

fn attempt_host_with(
    headers: &[(&str, &str)],
    body: Vec<u8>,
    attempt: u64,
    cluster: Option<&str>,
) -> RecordingHost {
    let mut host = request_host(headers, body);
    host.set_property_value(&["aigate.fallback_route"], b"chat");
    host.set_property_value(&["aigate.fallback_path"], b"/v1/chat/completions");
    host.set_property_value(
        &["upstream", "request_attempt_count"],
        &attempt.to_le_bytes(),
    );
    if let Some(cluster) = cluster {
        host.set_property_value(
            &[
                "xds",
                "upstream_host_metadata",
                "filter_metadata",
                "aigate",
                "cluster",
            ],
            cluster.as_bytes(),
        );
    }
    host
}

/// The downstream instance's request: what the router sends (and re-sends) to each attempt.
fn downstream_request(stream: bool) -> (Flow, RecordingHost) {
    let mut flow = Flow::new(plan());
    let mut host = chat_request(stream);
    host.set_property_value(&["upstream", "request_attempt_count"], &0u64.to_le_bytes());
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    // What the attempts read.
    assert_eq!(
        host.filter_state
            .get("aigate.fallback_route")
            .map(String::as_str),
        Some("chat")
    );
    assert_eq!(
        host.filter_state
            .get("aigate.fallback_path")
            .map(String::as_str),
        Some("/v1/chat/completions")
    );
    (flow, host)
}

#[test]
fn a_fallback_needs_its_cluster_and_retry_names_known_conditions() {
    let mut no_cluster = route();
    no_cluster["fallbacks"][0]
        .as_object_mut()
        .unwrap()
        .remove("cluster");
    assert!(
        refused(no_cluster).starts_with("routes[0].fallbacks[0].cluster: is required"),
        "{}",
        refused(route())
    );
    let mut bad_on = route();
    bad_on["retry"]["on"] = json!(["5xx", "502"]);
    assert!(refused(bad_on).starts_with("routes[0].retry.on[1]: unknown condition \"502\""));
    let mut empty_on = route();
    empty_on["retry"]["on"] = json!([]);
    assert!(refused(empty_on).starts_with("routes[0].retry.on: must name"));
    let mut zero = route();
    zero["retry"]["per_try_timeout_ms"] = json!(0);
    assert!(refused(zero).starts_with("routes[0].retry.per_try_timeout_ms"));
    let mut same_cluster = route();
    same_cluster["fallbacks"][0]["cluster"] = json!("openai");
    assert!(refused(same_cluster).starts_with("routes[0].fallbacks[0].cluster: names the cluster"));
    let mut no_fallbacks = route();
    no_fallbacks.as_object_mut().unwrap().remove("fallbacks");
    assert!(refused(no_fallbacks).starts_with("routes[0].retry: applies to fallbacks"));
    let mut bad_fallback = route();
    bad_fallback["fallbacks"][0]["auth"] = json!({"key": {"env": "MISSING"}});
    assert!(refused(bad_fallback).starts_with("routes[0].fallbacks[0].auth.key.env"));
    let mut unknown_key = route();
    unknown_key["retry"]["attempts"] = json!(3);
    assert!(refused(unknown_key).contains("retry.attempts"));
    assert!(refused(route()).is_empty());
}

#[test]
fn the_downstream_instance_runs_the_stages_and_leaves_the_request_in_the_clients_form() {
    let (_flow, host) = downstream_request(false);
    // No provider's authority, path or credential: each attempt writes its own.
    assert_eq!(host.request_header(":authority"), Some("gw.example"));
    assert_eq!(host.request_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(
        host.request_header("authorization"),
        Some("Bearer client-key")
    );
    assert_eq!(host.request_header("content-length"), None);
    let body = json_of(&host.request_body);
    // Shaped and guarded once, still chat completions, the model as the client asked.
    assert_eq!(body["model"], "my-model");
    assert_eq!(body["messages"][0]["content"], "Be terse.");
    assert_eq!(body["messages"][1]["content"], "mail me at <EMAIL>");
    assert_eq!(
        host.filter_state.get("aigate.provider").map(String::as_str),
        Some("openai")
    );
}

#[test]
fn an_attempt_on_the_fallback_cluster_is_translated_and_credentialed_for_that_provider() {
    let (_down, downstream) = downstream_request(false);
    let mut flow = Flow::new(plan());
    let mut host = attempt_host(downstream.request_body.clone(), 2, Some("anthropic"));
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    assert_eq!(host.request_header(":authority"), Some("api.anthropic.com"));
    assert_eq!(host.request_header(":path"), Some("/v1/messages"));
    assert_eq!(host.request_header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(host.request_header("authorization"), None);
    let sent = json_of(&host.request_body);
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], "Be terse.");
    assert_eq!(
        sent["messages"][0]["content"][0]["text"],
        "mail me at <EMAIL>"
    );

    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hi."}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 7, "output_tokens": 2}});
    let out = respond(
        &mut flow,
        &mut host,
        200,
        "application/json",
        &[answer.to_string().as_bytes()],
    );
    let chat = json_of(&out);
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["content"], "Hi.");
    assert_eq!(host.response_header_value("x-aigate-attempt"), Some("1"));
    assert_eq!(
        host.response_header_value("x-aigate-attempt-model"),
        Some("claude-sonnet-4-5")
    );
    // The attempt is counted; the request and its tokens are the downstream instance's.
    assert_eq!(
        host.counter_total(
            "aigate.attempts_total",
            &[
                ("gen_ai.provider.name", "anthropic"),
                ("outcome", "ok"),
                ("code", "200")
            ]
        ),
        1
    );
    assert_eq!(host.counter_total("aigate.requests_total", &[]), 0);
    assert_eq!(host.counter_total("aigate.tokens_total", &[]), 0);
}

#[test]
fn an_attempt_on_the_primary_cluster_uses_the_primary_provider() {
    let (_down, downstream) = downstream_request(true);
    let mut flow = Flow::new(plan());
    let mut host = attempt_host(downstream.request_body.clone(), 1, Some("openai"));
    send_whole(&mut flow, &mut host);
    assert_eq!(host.request_header(":authority"), Some("api.openai.com"));
    assert_eq!(
        host.request_header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    let sent = json_of(&host.request_body);
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["stream"], true);
    // The downstream instance asked for usage (it charges budgets): the attempt keeps it.
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[test]
fn a_failing_attempt_is_failed_over_and_the_last_one_failed() {
    let (_down, downstream) = downstream_request(false);
    for (cluster, attempt, outcome) in [("openai", 1, "failed_over"), ("anthropic", 2, "failed")] {
        let mut flow = Flow::new(plan());
        let mut host = attempt_host(downstream.request_body.clone(), attempt, Some(cluster));
        send_whole(&mut flow, &mut host);
        let body = json!({"error": {"message": "overloaded", "type": "server_error"}});
        let out = respond(
            &mut flow,
            &mut host,
            503,
            "application/json",
            &[body.to_string().as_bytes()],
        );
        // The status stays (Envoy's router decides on it); the body is OpenAI-shaped.
        assert_eq!(host.response_header_value(":status"), Some("503"));
        assert!(json_of(&out)["error"]["message"].is_string());
        assert_eq!(
            host.counter_total(
                "aigate.attempts_total",
                &[("outcome", outcome), ("error.type", "5xx"), ("code", "503")]
            ),
            1,
            "{:?}",
            host.counters
        );
        assert_eq!(host.counter_total("aigate.errors_total", &[]), 0);
    }
}

#[test]
fn an_attempt_without_an_answer_is_counted_when_it_ends() {
    let (_down, downstream) = downstream_request(false);
    let mut flow = Flow::new(plan());
    let mut host = attempt_host(downstream.request_body.clone(), 1, Some("openai"));
    send_whole(&mut flow, &mut host);
    host.set_property_value(
        &["upstream", "transport_failure_reason"],
        b"delayed connect error: Connection refused",
    );
    flow.on_done(&mut host);
    flow.on_done(&mut host); // counted once
    assert_eq!(
        host.counter_total(
            "aigate.attempts_total",
            &[
                ("outcome", "failed_over"),
                ("error.type", "connect-failure"),
                ("code", "0")
            ]
        ),
        1
    );

    let mut flow = Flow::new(plan());
    let mut host = attempt_host(downstream.request_body.clone(), 1, Some("openai"));
    send_whole(&mut flow, &mut host);
    host.now_ms += 1000; // the per-try timeout
    flow.on_done(&mut host);
    assert_eq!(
        host.counter_total("aigate.attempts_total", &[("error.type", "timeout")]),
        1
    );
}

#[test]
fn an_attempt_after_another_rewrites_what_that_one_wrote() {
    // Envoy hands every attempt the same header map: the second sees the first's writes.
    let (_down, downstream) = downstream_request(false);
    let mut flow = Flow::new(plan());
    let mut host = attempt_host_with(
        &[
            (":method", "POST"),
            (":path", "/v1/messages"),
            (":authority", "api.anthropic.com"),
            ("x-api-key", ANTHROPIC_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
        downstream.request_body.clone(),
        2,
        Some("openai"),
    );
    send_whole(&mut flow, &mut host);
    assert_eq!(host.request_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(host.request_header(":authority"), Some("api.openai.com"));
    assert_eq!(
        host.request_header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(host.request_header("x-api-key"), None);
    assert_eq!(host.request_header("anthropic-version"), None);
    assert_eq!(json_of(&host.request_body)["model"], "gpt-4o-mini");
}

#[test]
fn an_upstream_filter_leaves_requests_of_other_routes_alone() {
    // No filter state from the listener's instance: not an attempt of a route with fallbacks.
    let mut flow = Flow::new(plan());
    let mut host = request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("authorization", "Bearer client-key"),
        ],
        b"{}".to_vec(),
    );
    host.set_property_value(&["upstream", "request_attempt_count"], &1u64.to_le_bytes());
    host.set_property_value(
        &[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "aigate",
            "cluster",
        ],
        b"openai",
    );
    let before = host.clone();
    assert_eq!(send_whole(&mut flow, &mut host), Action::Continue);
    assert_eq!(host.request_headers, before.request_headers);
    assert_eq!(host.request_body, before.request_body);
    assert!(host.local_response.is_none());
}

#[test]
fn passthrough_auth_is_all_or_none_on_a_route_with_fallbacks() {
    let mut mixed = route();
    mixed["fallbacks"][0]["auth"] = json!({"passthrough": true});
    assert!(refused(mixed).starts_with("routes[0].fallbacks: auth passthrough"));
    let mut all = route();
    all["provider"]["auth"] = json!({"passthrough": true});
    all["fallbacks"][0]["auth"] = json!({"passthrough": true});
    assert!(refused(all).is_empty());
}

#[test]
fn a_host_that_serves_no_provider_of_the_route_gets_no_credential() {
    let (_down, downstream) = downstream_request(false);
    for cluster in [None, Some("elsewhere")] {
        let mut flow = Flow::new(plan());
        let mut host = attempt_host(downstream.request_body.clone(), 1, cluster);
        assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
        let (status, body) = local_error(&host);
        assert_eq!(status, 502);
        assert_eq!(body["error"]["code"], "fallback_misconfigured");
        assert_eq!(
            host.request_header("authorization"),
            Some("Bearer client-key")
        );
        assert_eq!(host.request_header("x-api-key"), None);
    }
}

#[test]
fn the_downstream_instance_names_the_provider_that_answered() {
    let (mut flow, mut host) = downstream_request(false);
    host.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
        ("x-aigate-attempt".into(), "1".into()),
        ("x-aigate-attempt-model".into(), "claude-sonnet-4-5".into()),
    ];
    flow.on_response_headers(&mut host, false);
    assert_eq!(host.response_header_value("x-aigate-attempt"), None);
    assert_eq!(host.response_header_value("x-aigate-attempt-model"), None);
    let answer = json!({"id": "c1", "object": "chat.completion", "model": "claude-sonnet-4-5",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}});
    host.response_body = answer.to_string().into_bytes();
    let size = host.response_body.len();
    flow.on_response_body(&mut host, size, true);
    flow.on_log(&mut host);
    assert_eq!(
        host.filter_state.get("aigate.provider").map(String::as_str),
        Some("anthropic")
    );
    assert_eq!(
        host.filter_state.get("aigate.model").map(String::as_str),
        Some("claude-sonnet-4-5")
    );
    assert_eq!(
        host.counter_total(
            "aigate.tokens_total",
            &[
                ("gen_ai.provider.name", "anthropic"),
                ("gen_ai.request.model", "claude-sonnet-4-5"),
                ("server.address", "api.anthropic.com"),
                ("gen_ai.token.type", "input")
            ]
        ),
        7
    );
    assert_eq!(
        host.counter_total("aigate.requests_total", &[("route", "chat")]),
        1
    );
}
