#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Token budgets through the whole pipeline (`Flow` over `RecordingHost`): admission, 429
//! with headers, charging after JSON and streamed answers, releasing on stream end, and the
//! rate limit service protocol.

use std::rc::Rc;

use aigate_core::host::{CalloutKind, CalloutReply, RecordingHost};
use aigate_core::limits::ledger::Table;
use aigate_core::limits::local::shard_name;
use aigate_core::limits::proto;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use serde_json::{json, Value};

mod support;

const ANSWER: &[u8] = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;

const STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
    "data: [DONE]\n\n"
);

fn plan(limits: Value) -> Rc<Plan> {
    let config = json!({"routes": [{
        "name": "chat",
        "match": {"route_name": "llm"},
        "provider": {"kind": "openai", "authority": "upstream.local", "auth": {"none": true}},
        "limits": limits,
    }]});
    support::compile(&config, &support::no_env)
}

fn local(limit: u64) -> Rc<Plan> {
    plan(json!({
        "tokens": [{"name": "per-user", "key": {"header": "x-user-id"}, "limit": limit, "window_ms": 60000}],
        "backend": "local"
    }))
}

fn rls(failure_mode: &str) -> Rc<Plan> {
    plan(json!({
        "tokens": [
            {"name": "per-user", "key": {"header": "x-user-id"}, "limit": 100, "window_ms": 60000},
            {"name": "per-ip", "key": {"client_address": true}, "limit": 1000, "window_ms": 3600000}
        ],
        "backend": {"rls": {"cluster": "ratelimit", "domain": "aigate", "timeout_ms": 50, "failure_mode": failure_mode}}
    }))
}

/// A request of `user`, on a host whose shared data (all workers of one Envoy) is `shared`.
fn request(user: &str, body: &Value, shared: &RecordingHost) -> RecordingHost {
    let bytes = body.to_string().into_bytes();
    let mut host = RecordingHost::new();
    host.shared = shared.shared.clone();
    host.now_ms = shared.now_ms;
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
        (":authority".into(), "gw".into()),
        ("content-length".into(), bytes.len().to_string()),
        ("x-user-id".into(), user.into()),
    ];
    host.request_body = bytes;
    host.set_property_value(&["xds", "route_name"], b"llm");
    host.set_property_value(&["source", "address"], b"10.0.0.9:43210");
    host
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn send(flow: &mut Flow, host: &mut RecordingHost) -> Action {
    flow.on_request_headers(host, false);
    if host.local_response.is_some() {
        return Action::Pause;
    }
    let size = host.request_body.len();
    flow.on_request_body(host, size, true)
}

fn respond(flow: &mut Flow, host: &mut RecordingHost, content_type: &str, body: &[u8]) {
    support::answer_headers(flow, host, 200, content_type);
    host.response_body = body.to_vec();
    flow.on_response_body(host, body.len(), true);
    flow.on_log(host);
}

fn used(shared: &RecordingHost, user: &str) -> u64 {
    let shard = shard_name("chat", "per-user", user);
    let table = Table::decode(&shared.shared[&shard].0).unwrap();
    table.entries.get(user).map(|e| e.used).unwrap_or(0)
}

fn outcome(host: &RecordingHost, limit: &str, outcome: &str) -> u64 {
    host.counter(&format!(
        "aigate.limit.outcomes_total;route=chat;limit={limit};outcome={outcome}"
    ))
}

/// One whole request/answer on a fresh stream that shares `shared`'s data; returns its host.
fn exchange(
    plan: &Rc<Plan>,
    shared: &mut RecordingHost,
    user: &str,
    body: &Value,
    answer: (&str, &[u8]),
) -> RecordingHost {
    let mut flow = Flow::new(Rc::clone(plan));
    let mut host = request(user, body, shared);
    if send(&mut flow, &mut host) == Action::Continue {
        respond(&mut flow, &mut host, answer.0, answer.1);
    } else {
        flow.on_log(&mut host);
    }
    shared.shared = host.shared.clone();
    host
}

#[test]
fn limits_config_faults_name_their_path() {
    let bad = |limits: Value| {
        let config = json!({"routes": [{"name": "chat", "provider": {"kind": "openai", "auth": {"none": true}}, "limits": limits}]});
        parse_and_compile(config.to_string().as_bytes(), &|_: &str| None).unwrap_err()
    };
    let token = |key: Value, limit: u64, window: u64| json!({"name": "a", "key": key, "limit": limit, "window_ms": window});
    let e = bad(json!({"tokens": [token(json!({}), 1, 1)]}));
    assert_eq!(e.path, "routes[0].limits.tokens[0].key");
    let e = bad(json!({"tokens": [token(json!({"fixed": "x"}), 0, 1)]}));
    assert_eq!(e.path, "routes[0].limits.tokens[0].limit");
    let e = bad(json!({"tokens": [token(json!({"fixed": "x"}), 1, 0)]}));
    assert_eq!(e.path, "routes[0].limits.tokens[0].window_ms");
    let e = bad(
        json!({"tokens": [token(json!({"fixed": "x"}), 1, 1), token(json!({"fixed": "y"}), 1, 1)]}),
    );
    assert_eq!(e.path, "routes[0].limits.tokens[1].name");
    let e = bad(json!({"tokens": [], "backend": {"rls": {"cluster": "", "domain": "d"}}}));
    assert_eq!(e.path, "routes[0].limits.backend.rls.cluster");
    let e = bad(json!({"tokens": [], "backend": "remote"}));
    assert!(e.path.starts_with("routes[0].limits"), "{e:?}");
}

#[test]
fn local_budget_admits_charges_and_refuses_with_429_and_headers() {
    let plan = local(40);
    let mut shared = RecordingHost::new();

    // First answer: the budget is whole, 18 tokens are charged afterwards.
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-limit-tokens"),
        Some("40")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("40")
    );
    assert!(host
        .response_header_value("x-ratelimit-reset-tokens")
        .unwrap()
        .ends_with('s'));
    assert_eq!(used(&shared, "alice"), 18);
    assert_eq!(outcome(&host, "per-user", "allowed"), 1);

    // A streamed answer counts its usage chunk.
    let stream =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &stream,
        ("text/event-stream", STREAM.as_bytes()),
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("22")
    );
    assert_eq!(used(&shared, "alice"), 25);

    // 25 < 40: admitted; 43 afterwards: over by less than one answer.
    exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    assert_eq!(used(&shared, "alice"), 43);

    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    let reply = host.local_response.as_ref().expect("a 429");
    assert_eq!(reply.status, 429);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "token_budget_exceeded");
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let retry: u64 = header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header("x-ratelimit-limit-tokens"), Some("40"));
    assert_eq!(header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(
        host.filter_state.get("aigate.outcome").map(String::as_str),
        Some("token_budget_exceeded")
    );
    assert_eq!(
        host.counter("aigate.errors_total;route=chat;code=token_budget_exceeded"),
        1
    );
    assert_eq!(outcome(&host, "per-user", "over_limit"), 1);
    assert!(host.callouts.is_empty());

    // Bob has his own budget; a new window gives Alice hers back.
    let host = exchange(
        &plan,
        &mut shared,
        "bob",
        &chat(),
        ("application/json", ANSWER),
    );
    assert!(host.local_response.is_none());
    shared.now_ms += 60_000;
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    assert!(host.local_response.is_none());
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("40")
    );
}

#[test]
fn concurrent_requests_are_held_back_until_the_first_answer_is_measured() {
    let plan = local(100);
    let shared = RecordingHost::new();
    let mut first = Flow::new(Rc::clone(&plan));
    let mut first_host = request("alice", &chat(), &shared);
    assert_eq!(send(&mut first, &mut first_host), Action::Continue);

    // A second request while the first runs (another worker: same shared data).
    let mut second = Flow::new(Rc::clone(&plan));
    let mut second_host = request("alice", &chat(), &first_host);
    send(&mut second, &mut second_host);
    let reply = second_host.local_response.as_ref().expect("held back");
    assert_eq!(reply.status, 429);
    assert!(String::from_utf8_lossy(&reply.body).contains("token_budget_in_flight"));
    assert!(reply
        .headers
        .contains(&("retry-after".to_string(), "1".to_string())));

    // Once the first answer is charged, requests run side by side again.
    first_host.shared = second_host.shared.clone();
    respond(&mut first, &mut first_host, "application/json", ANSWER);
    let mut third = Flow::new(Rc::clone(&plan));
    let mut third_host = request("alice", &chat(), &first_host);
    assert_eq!(send(&mut third, &mut third_host), Action::Continue);
    let mut fourth = Flow::new(Rc::clone(&plan));
    let mut fourth_host = request("alice", &chat(), &third_host);
    assert_eq!(send(&mut fourth, &mut fourth_host), Action::Continue);
}

#[test]
fn a_request_that_ends_unanswered_releases_its_hold_and_is_charged_its_prompt() {
    let plan = local(100);
    let shared = RecordingHost::new();
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &shared);
    assert_eq!(send(&mut flow, &mut host), Action::Continue);
    // The client goes away before any answer: only the log phase runs. The provider got the
    // prompt, so its bytes are charged by estimate (4 a token, CONFIG.md "Counting"), and
    // the hold is released: the next request is admitted.
    flow.on_log(&mut host);
    let mut next = Flow::new(Rc::clone(&plan));
    let mut next_host = request("alice", &chat(), &host);
    assert_eq!(send(&mut next, &mut next_host), Action::Continue);
    let prompt_bytes = chat().to_string().len() as u64;
    assert_eq!(used(&next_host, "alice"), prompt_bytes.div_ceil(4));
}

#[test]
fn an_upstream_error_charges_nothing_and_releases() {
    let plan = local(100);
    let mut shared = RecordingHost::new();
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &shared);
    send(&mut flow, &mut host);
    host.response_headers = vec![
        (":status".into(), "500".into()),
        ("content-type".into(), "application/json".into()),
    ];
    flow.on_response_headers(&mut host, false);
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("100")
    );
    let body = br#"{"error":{"message":"boom"}}"#;
    host.response_body = body.to_vec();
    flow.on_response_body(&mut host, body.len(), true);
    flow.on_log(&mut host);
    assert_eq!(used(&host, "alice"), 0, "an upstream error charges nothing");
    shared.shared = host.shared.clone();
    let next = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    assert!(next.local_response.is_none());
}

#[test]
fn every_limit_must_admit_and_refusal_gives_earlier_holds_back() {
    let plan = plan(json!({
        "tokens": [
            {"name": "per-user", "key": {"header": "x-user-id"}, "limit": 1000, "window_ms": 60000},
            {"name": "everyone", "key": {"fixed": "all"}, "limit": 20, "window_ms": 60000}
        ]
    }));
    let mut shared = RecordingHost::new();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat(),
        ("application/json", ANSWER),
    );
    // The tightest budget is the one reported.
    assert_eq!(
        host.response_header_value("x-ratelimit-limit-tokens"),
        Some("20")
    );
    exchange(
        &plan,
        &mut shared,
        "bob",
        &chat(),
        ("application/json", ANSWER),
    );
    let host = exchange(
        &plan,
        &mut shared,
        "carol",
        &chat(),
        ("application/json", ANSWER),
    );
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(429));
    assert_eq!(outcome(&host, "per-user", "allowed"), 1);
    assert_eq!(outcome(&host, "everyone", "over_limit"), 1);
    // Carol's per-user hold was given back: nothing of hers is held or used.
    let shard = shard_name("chat", "per-user", "carol");
    let table = Table::decode(&host.shared[&shard].0).unwrap();
    assert!(table
        .entries
        .get("carol")
        .is_none_or(|e| e.holds.is_empty() && e.used == 0));
}

fn rls_reply(body: Vec<u8>) -> CalloutReply {
    CalloutReply {
        status: 200,
        headers: Vec::new(),
        body,
        grpc_status: Some(0),
    }
}

/// A RateLimitResponse: overall code, then per descriptor (code, limit, remaining, reset s).
fn rls_body(overall: u8, statuses: &[(u8, u8, u8, u8)]) -> Vec<u8> {
    let mut body = vec![0x08, overall];
    for (code, limit, remaining, reset) in statuses {
        let status = [
            0x08, *code, 0x12, 4, 0x08, *limit, 0x10, 2, 0x18, *remaining, 0x22, 2, 0x08, *reset,
        ];
        body.push(0x12);
        body.push(status.len() as u8);
        body.extend_from_slice(&status);
    }
    body
}

#[test]
fn rls_checks_with_zero_hits_then_reports_the_answer_s_tokens() {
    let plan = rls("closed");
    let shared = RecordingHost::new();
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &shared);
    assert_eq!(send(&mut flow, &mut host), Action::Pause);
    let (token, check) = host.callouts.last().cloned().unwrap();
    assert_eq!(check.cluster, "ratelimit");
    assert_eq!(
        check.kind,
        CalloutKind::Grpc {
            service: "envoy.service.ratelimit.v3.RateLimitService".into(),
            method: "ShouldRateLimit".into()
        }
    );
    assert_eq!(check.timeout_ms, 50);
    let descriptors = vec![
        vec![
            ("route".into(), "chat".into()),
            ("limit".into(), "per-user".into()),
            ("key".into(), "alice".into()),
        ],
        vec![
            ("route".into(), "chat".into()),
            ("limit".into(), "per-ip".into()),
            ("key".into(), "10.0.0.9".into()),
        ],
    ];
    assert_eq!(check.body, proto::encode_request("aigate", &descriptors, 0));

    flow.on_callout_reply(
        &mut host,
        token,
        rls_reply(rls_body(1, &[(1, 100, 60, 30), (1, 120, 110, 90)])),
    );
    assert_eq!(host.resumed_request, 1);
    assert!(host.local_response.is_none());
    respond(&mut flow, &mut host, "application/json", ANSWER);
    assert_eq!(
        host.response_header_value("x-ratelimit-limit-tokens"),
        Some("100")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("60")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-reset-tokens"),
        Some("30s")
    );
    assert_eq!(outcome(&host, "per-user", "allowed"), 1);
    assert_eq!(outcome(&host, "per-ip", "allowed"), 1);

    // The usage report: same descriptors, hits_addend = total tokens, sent once.
    assert_eq!(host.callouts.len(), 2);
    let report = &host.callouts[1].1;
    assert_eq!(
        report.body,
        proto::encode_request("aigate", &descriptors, 18)
    );
    flow.on_log(&mut host);
    assert_eq!(host.callouts.len(), 2);
}

#[test]
fn rls_over_limit_is_a_429_and_charges_nothing() {
    let plan = rls("closed");
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &RecordingHost::new());
    send(&mut flow, &mut host);
    let token = host.callouts[0].0;
    flow.on_callout_reply(
        &mut host,
        token,
        rls_reply(rls_body(2, &[(2, 100, 0, 12), (1, 120, 110, 90)])),
    );
    let reply = host.local_response.clone().expect("429");
    assert_eq!(reply.status, 429);
    assert!(reply
        .headers
        .contains(&("retry-after".to_string(), "12".to_string())));
    assert!(reply
        .headers
        .contains(&("x-ratelimit-remaining-tokens".to_string(), "0".to_string())));
    assert!(String::from_utf8_lossy(&reply.body).contains("per-user"));
    assert_eq!(outcome(&host, "per-user", "over_limit"), 1);
    flow.on_log(&mut host);
    assert_eq!(
        host.callouts.len(),
        1,
        "no usage report for a refused request"
    );
}

#[test]
fn rls_failure_follows_the_failure_mode() {
    let failed = CalloutReply {
        status: 502,
        headers: Vec::new(),
        body: Vec::new(),
        grpc_status: Some(14),
    };
    // closed: 503, nothing forwarded.
    let plan = rls("closed");
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &RecordingHost::new());
    send(&mut flow, &mut host);
    let token = host.callouts[0].0;
    flow.on_callout_reply(&mut host, token, failed.clone());
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(503));
    assert_eq!(outcome(&host, "per-user", "backend_failed_closed"), 1);

    // open: forwarded without headers, counted, and usage still reported.
    let plan = rls("open");
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &RecordingHost::new());
    send(&mut flow, &mut host);
    let token = host.callouts[0].0;
    flow.on_callout_reply(&mut host, token, failed);
    assert!(host.local_response.is_none());
    assert_eq!(host.resumed_request, 1);
    assert_eq!(outcome(&host, "per-ip", "backend_failed_open"), 1);
    respond(&mut flow, &mut host, "application/json", ANSWER);
    assert_eq!(host.response_header_value("x-ratelimit-limit-tokens"), None);
    assert_eq!(host.callouts.len(), 2);

    // A cluster Envoy does not know: the dispatch itself fails.
    let plan = rls("closed");
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat(), &RecordingHost::new());
    host.unknown_clusters = vec!["ratelimit".into()];
    send(&mut flow, &mut host);
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(503));
}

#[test]
fn local_budget_is_checked_before_the_body_is_read() {
    let plan = local(18);
    let mut shared = RecordingHost::new();
    let answer =
        br#"{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    exchange(
        &plan,
        &mut shared,
        "ann",
        &chat(),
        ("application/json", answer),
    );
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("ann", &chat(), &shared);
    // The 429 comes from the headers phase: Envoy never opens an upstream request for it.
    assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
    let reply = host.local_response.clone().expect("a local 429");
    assert_eq!(reply.status, 429);
    assert!(reply.headers.iter().any(|(name, _)| name == "retry-after"));
    assert_eq!(
        host.request_header(":authority"),
        Some("gw"),
        "upstream headers were never written"
    );
}

#[test]
fn a_ledger_the_host_cannot_read_refuses_and_is_never_overwritten() {
    let plan = local(1_000);
    let mut shared = RecordingHost::new();
    exchange(
        &plan,
        &mut shared,
        "ann",
        &chat(),
        ("application/json", ANSWER),
    );
    assert_eq!(used(&shared, "ann"), 18);
    // The host fails the read: a 503, counted and refused before anything went upstream,
    // and the shard keeps what it held (it was taken for empty and rewritten before).
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("ann", &chat(), &shared);
    host.shared_unreadable = true;
    assert_eq!(flow.on_request_headers(&mut host, false), Action::Pause);
    let reply = host.local_response.clone().expect("a local 503");
    assert_eq!(reply.status, 503);
    assert_eq!(outcome(&host, "per-user", "backend_failed_closed"), 1);
    flow.on_log(&mut host);
    assert_eq!(host.shared, shared.shared);
    // An answered request whose charge cannot be read is counted, and not recorded as 0.
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("ann", &chat(), &shared);
    assert_eq!(send(&mut flow, &mut host), Action::Continue);
    host.shared_unreadable = true;
    respond(&mut flow, &mut host, "application/json", ANSWER);
    assert_eq!(outcome(&host, "per-user", "charge_failed"), 1);
    host.shared_unreadable = false;
    let table = Table::decode(&host.shared[&shard_name("chat", "per-user", "ann")].0).unwrap();
    assert_eq!(table.entries["ann"].used, 18, "the old ledger is intact");
}

#[test]
fn a_ledger_that_is_no_table_refuses_until_the_next_configuration_restarts_it() {
    let plan = local(1_000);
    let mut shared = RecordingHost::new();
    exchange(
        &plan,
        &mut shared,
        "ann",
        &chat(),
        ("application/json", ANSWER),
    );
    let shard = shard_name("chat", "per-user", "ann");
    let garbage = b"\x01\xff\xff\xff\xffnot a table".to_vec();
    shared.shared.get_mut(&shard).unwrap().0 = garbage.clone();
    let host = exchange(
        &plan,
        &mut shared,
        "ann",
        &chat(),
        ("application/json", ANSWER),
    );
    assert_eq!(host.local_response.as_ref().map(|r| r.status), Some(503));
    assert_eq!(outcome(&host, "per-user", "backend_failed_closed"), 1);
    assert_eq!(
        shared.shared[&shard].0, garbage,
        "never taken for an empty table"
    );
    // The next configuration (`Plan::prepare`, once per VM) starts it afresh.
    plan.prepare(&mut shared);
    assert!(Table::decode(&shared.shared[&shard].0).is_some());
    let host = exchange(
        &plan,
        &mut shared,
        "ann",
        &chat(),
        ("application/json", ANSWER),
    );
    assert!(host.local_response.is_none());
    assert_eq!(used(&shared, "ann"), 18);
}
