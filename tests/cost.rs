#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pricing and cost budgets through the whole pipeline (`Flow` over `RecordingHost`): the
//! cost counters and `aigate.cost_usd` after JSON and streamed answers, which model prices
//! an answer, cache tokens, cost budgets (local and rate limit service), and token budgets
//! that count input or output only. The arithmetic itself is tested in `src/cost.rs`.

use std::rc::Rc;

use aigate_core::host::{CalloutReply, RecordingHost};
use aigate_core::limits::ledger::Table;
use aigate_core::limits::local::shard_name;
use aigate_core::limits::proto;
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use serde_json::{json, Value};

mod support;

/// 1000 prompt tokens (400 of them cached), 500 completion tokens, named snapshot model.
const ANSWER: &[u8] = br#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"yo"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":400}}}"#;

const STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":2000,\"completion_tokens\":100,\"total_tokens\":2100,\"completion_tokens_details\":{\"reasoning_tokens\":60}}}\n\n",
    "data: [DONE]\n\n"
);

fn pricing() -> Value {
    json!({
        "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
        "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.30, "cache_write": 3.75}
    })
}

fn plan_with(provider: Value, limits: Option<Value>) -> Rc<Plan> {
    let mut route = json!({"name": "chat", "provider": provider});
    if let Some(limits) = limits {
        route["limits"] = limits;
    }
    support::compile(
        &json!({"pricing": pricing(), "routes": [route]}),
        &support::no_env,
    )
}

fn openai() -> Value {
    json!({"kind": "openai", "authority": "upstream.local", "auth": {"none": true}})
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// A request of `user` on a host that shares `shared`'s data (another worker of one Envoy).
fn request(user: &str, body: &Value, shared: &RecordingHost) -> RecordingHost {
    let bytes = body.to_string().into_bytes();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("content-length", &bytes.len().to_string()),
            ("x-user-id", user),
        ],
        bytes,
    );
    host.shared = shared.shared.clone();
    host.now_ms = shared.now_ms;
    host
}

/// One request and its answer (or the local refusal); `shared` takes the shared data after.
fn exchange(
    plan: &Rc<Plan>,
    shared: &mut RecordingHost,
    user: &str,
    body: &Value,
    answer: (&str, &[u8]),
) -> RecordingHost {
    let mut flow = Flow::new(Rc::clone(plan));
    let mut host = request(user, body, shared);
    if support::send_whole(&mut flow, &mut host) == Action::Continue
        && host.local_response.is_none()
    {
        support::respond(&mut flow, &mut host, 200, answer.0, &[answer.1]);
    }
    flow.on_log(&mut host);
    shared.shared = host.shared.clone();
    host
}

fn cost_counter(host: &RecordingHost, model: &str) -> u64 {
    host.counter(&format!(
        "aigate.cost.usd_micros_total;route=chat;gen_ai.provider.name=openai;gen_ai.response.model={model}"
    ))
}

fn state<'a>(host: &'a RecordingHost, key: &str) -> Option<&'a str> {
    host.filter_state.get(key).map(String::as_str)
}

#[test]
fn a_json_answer_is_priced_from_its_usage_under_the_model_sent_when_its_own_has_no_price() {
    let plan = plan_with(openai(), None);
    let mut shared = RecordingHost::new();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("gpt-4o-mini", false),
        ("application/json", ANSWER),
    );
    // 600 × 0.15 + 400 × 0.075 + 500 × 0.60 = 90 + 30 + 300 = 420 µ$.
    assert_eq!(cost_counter(&host, "gpt-4o-mini"), 420);
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.000420"));
    assert_eq!(
        host.counter_total("aigate.cost.unpriced_total", &[]),
        0,
        "priced"
    );
}

#[test]
fn the_answer_s_own_model_wins_when_it_has_a_price() {
    let config = json!({
        "pricing": {"gpt-4o-mini": {"input": 0.15, "output": 0.60},
                    "gpt-4o-mini-2024-07-18": {"input": 1.0, "output": 2.0}},
        "routes": [{"name": "chat", "provider": openai()}]
    });
    let plan = support::compile(&config, &support::no_env);
    let mut shared = RecordingHost::new();
    // JSON: 1000 × 1 + 500 × 2 = 2000 µ$ (no cached price: cached tokens are input).
    let host = exchange(
        &plan,
        &mut shared,
        "a",
        &chat("gpt-4o-mini", false),
        ("application/json", ANSWER),
    );
    assert_eq!(cost_counter(&host, "gpt-4o-mini-2024-07-18"), 2000);
    assert_eq!(cost_counter(&host, "gpt-4o-mini"), 0);
    // Streamed: the usage chunk names the model too. 2000 × 1 + 100 × 2 = 2200 µ$.
    let host = exchange(
        &plan,
        &mut shared,
        "a",
        &chat("gpt-4o-mini", true),
        ("text/event-stream", STREAM.as_bytes()),
    );
    assert_eq!(cost_counter(&host, "gpt-4o-mini-2024-07-18"), 2200);
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.002200"));
}

#[test]
fn a_streamed_answer_is_priced_from_its_usage_event() {
    let plan = plan_with(openai(), None);
    let mut shared = RecordingHost::new();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("gpt-4o-mini", true),
        ("text/event-stream", STREAM.as_bytes()),
    );
    // 2000 × 0.15 + 100 × 0.60 (reasoning is output) = 300 + 60.
    assert_eq!(cost_counter(&host, "gpt-4o-mini"), 360);
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.000360"));
}

#[test]
fn a_model_without_a_price_costs_nothing_and_is_counted() {
    let plan = plan_with(openai(), None);
    let mut shared = RecordingHost::new();
    let answer = br#"{"id":"x","model":"o9","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#;
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("o9", false),
        ("application/json", answer),
    );
    assert_eq!(
        host.counter(
            "aigate.cost.unpriced_total;route=chat;gen_ai.provider.name=openai;gen_ai.response.model=o9"
        ),
        1
    );
    assert_eq!(host.counter_total("aigate.cost.usd_micros_total", &[]), 0);
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.000000"));
}

#[test]
fn without_pricing_nothing_is_priced_or_counted() {
    let config = json!({"routes": [{"name": "chat", "provider": openai()}]});
    let plan = support::compile(&config, &support::no_env);
    let mut shared = RecordingHost::new();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("gpt-4o-mini", false),
        ("application/json", ANSWER),
    );
    assert_eq!(state(&host, "aigate.total_tokens"), Some("1500"));
    assert_eq!(state(&host, "aigate.cost_usd"), None);
    assert_eq!(host.counter_total("aigate.cost.unpriced_total", &[]), 0);
}

#[test]
fn anthropic_cache_reads_and_writes_are_priced_at_their_own_rates() {
    let provider =
        json!({"kind": "anthropic", "authority": "upstream.local", "auth": {"none": true}});
    let plan = plan_with(provider, None);
    let mut shared = RecordingHost::new();
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 2000, "cache_read_input_tokens": 6000, "cache_creation_input_tokens": 2000, "output_tokens": 1000}});
    let bytes = answer.to_string().into_bytes();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("claude-sonnet-4-5", false),
        ("application/json", &bytes),
    );
    // 2000 × 3 + 6000 × 0.30 + 2000 × 3.75 + 1000 × 15 = 6000 + 1800 + 7500 + 15000.
    assert_eq!(
        host.counter(
            "aigate.cost.usd_micros_total;route=chat;gen_ai.provider.name=anthropic;gen_ai.response.model=claude-sonnet-4-5"
        ),
        30_300
    );
    assert_eq!(state(&host, "aigate.prompt_tokens"), Some("10000"));
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.030300"));
}

fn cost_budget(limit_usd: f64, backend: Value) -> Value {
    json!({
        "cost": [{"name": "team", "key": {"header": "x-user-id"}, "limit_usd": limit_usd, "window_ms": 60000}],
        "backend": backend
    })
}

fn used(shared: &RecordingHost, limit: &str, user: &str) -> u64 {
    let shard = shard_name("chat", limit, user);
    let table = Table::decode(&shared.shared[&shard].0).unwrap();
    table.entries.get(user).map(|e| e.used).unwrap_or(0)
}

#[test]
fn a_dollar_budget_is_charged_the_cost_and_refuses_once_spent() {
    // $0.001 = 1000 µ$; each answer costs 420 µ$.
    let plan = plan_with(openai(), Some(cost_budget(0.001, json!("local"))));
    let mut shared = RecordingHost::new();
    let ok = ("application/json", ANSWER);
    let host = exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    assert_eq!(
        host.response_header_value("x-ratelimit-limit-usd"),
        Some("0.001000")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-usd"),
        Some("0.001000")
    );
    assert!(host
        .response_header_value("x-ratelimit-reset-usd")
        .unwrap()
        .ends_with('s'));
    assert_eq!(host.response_header_value("x-ratelimit-limit-tokens"), None);
    assert_eq!(used(&shared, "team", "alice"), 420);
    let host = exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-usd"),
        Some("0.000580")
    );
    // 840 < 1000: admitted, and over by less than one answer afterwards.
    exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    assert_eq!(used(&shared, "team", "alice"), 1260);
    let host = exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    let (status, body) = support::local_error(&host);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "cost_budget_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let reply = host.local_response.as_ref().unwrap();
    let header = |name: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert!(header("retry-after").is_some());
    assert_eq!(header("x-ratelimit-remaining-usd"), Some("0.000000"));
    assert_eq!(state(&host, "aigate.outcome"), Some("cost_budget_exceeded"));
    // Another key has its own budget.
    let host = exchange(&plan, &mut shared, "bob", &chat("gpt-4o-mini", false), ok);
    assert!(host.local_response.is_none());
}

#[test]
fn a_dollar_budget_holds_under_concurrency_like_a_token_budget() {
    let plan = plan_with(openai(), Some(cost_budget(1.0, json!("local"))));
    let shared = RecordingHost::new();
    let mut first = Flow::new(Rc::clone(&plan));
    let mut first_host = request("alice", &chat("gpt-4o-mini", false), &shared);
    assert_eq!(
        support::send_whole(&mut first, &mut first_host),
        Action::Continue
    );
    // While the first answer is unmeasured it holds the whole budget.
    let mut second = Flow::new(Rc::clone(&plan));
    let mut second_host = request("alice", &chat("gpt-4o-mini", false), &first_host);
    support::send_whole(&mut second, &mut second_host);
    let (status, body) = support::local_error(&second_host);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("cost_budget_in_flight"))
    );
    // Once the first answer is charged (420 µ$), the next requests each hold 420 µ$.
    first_host.shared = second_host.shared.clone();
    support::respond(
        &mut first,
        &mut first_host,
        200,
        "application/json",
        &[ANSWER],
    );
    first.on_log(&mut first_host);
    assert_eq!(used(&first_host, "team", "alice"), 420);
    let mut third = Flow::new(Rc::clone(&plan));
    let mut third_host = request("alice", &chat("gpt-4o-mini", false), &first_host);
    assert_eq!(
        support::send_whole(&mut third, &mut third_host),
        Action::Continue
    );
    assert!(third_host.local_response.is_none());
}

#[test]
fn token_budgets_can_count_input_or_output_only() {
    let limits = json!({"tokens": [
        {"name": "in", "key": {"header": "x-user-id"}, "limit": 2500, "window_ms": 60000, "count": "input"},
        {"name": "out", "key": {"header": "x-user-id"}, "limit": 100000, "window_ms": 60000, "count": "output"},
        {"name": "all", "key": {"header": "x-user-id"}, "limit": 100000, "window_ms": 60000}
    ]});
    let plan = plan_with(openai(), Some(limits));
    let mut shared = RecordingHost::new();
    let ok = ("application/json", ANSWER);
    exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    assert_eq!(used(&shared, "in", "alice"), 1000);
    assert_eq!(used(&shared, "out", "alice"), 500);
    assert_eq!(used(&shared, "all", "alice"), 1500);
    exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    let host = exchange(&plan, &mut shared, "alice", &chat("gpt-4o-mini", false), ok);
    let (status, body) = support::local_error(&host);
    assert_eq!(status, 429);
    assert!(body["error"]["message"].as_str().unwrap().contains("'in'"));
    assert_eq!(used(&shared, "out", "alice"), 1500);

    let limits = json!({"tokens": [
        {"name": "out", "key": {"header": "x-user-id"}, "limit": 900, "window_ms": 60000, "count": "output"}
    ]});
    let plan = plan_with(openai(), Some(limits));
    let mut shared = RecordingHost::new();
    exchange(&plan, &mut shared, "bob", &chat("gpt-4o-mini", false), ok);
    exchange(&plan, &mut shared, "bob", &chat("gpt-4o-mini", false), ok);
    assert_eq!(used(&shared, "out", "bob"), 1000);
    let host = exchange(&plan, &mut shared, "bob", &chat("gpt-4o-mini", false), ok);
    assert_eq!(support::local_error(&host).0, 429);
}

#[test]
fn the_rate_limit_service_is_reported_micro_dollars_and_tokens_apart() {
    let limits = json!({
        "tokens": [{"name": "tok", "key": {"header": "x-user-id"}, "limit": 100000, "window_ms": 60000}],
        "cost": [{"name": "usd", "key": {"header": "x-user-id"}, "limit_usd": 5.0, "window_ms": 60000}],
        "backend": {"rls": {"cluster": "ratelimit", "timeout_ms": 50}}
    });
    let plan = plan_with(openai(), Some(limits));
    let mut flow = Flow::new(Rc::clone(&plan));
    let mut host = request("alice", &chat("gpt-4o-mini", false), &RecordingHost::new());
    assert_eq!(support::send_whole(&mut flow, &mut host), Action::Pause);
    let descriptor = |limit: &str| -> Vec<(String, String)> {
        vec![
            ("route".into(), "chat".into()),
            ("limit".into(), limit.into()),
            ("key".into(), "alice".into()),
        ]
    };
    let (token, check) = host.callouts[0].clone();
    assert_eq!(
        check.body,
        proto::encode_request("aigate", &[descriptor("tok"), descriptor("usd")], 0)
    );
    // The service counts micro-dollars: limit 5 000 000, 4 000 000 left.
    let status = |limit: u32, remaining: u32| {
        let mut out = vec![0x08, 1, 0x12];
        let mut inner = vec![0x08];
        inner.extend(varint(u64::from(limit)));
        inner.extend([0x10, 2]);
        out.push(inner.len() as u8);
        out.extend(inner);
        out.push(0x18);
        out.extend(varint(u64::from(remaining)));
        out
    };
    let mut body = vec![0x08, 1];
    for s in [status(100_000, 99_000), status(5_000_000, 4_000_000)] {
        body.push(0x12);
        body.push(s.len() as u8);
        body.extend(s);
    }
    flow.on_callout_reply(
        &mut host,
        token,
        CalloutReply {
            status: 200,
            headers: Vec::new(),
            body,
            grpc_status: Some(0),
        },
    );
    support::respond(&mut flow, &mut host, 200, "application/json", &[ANSWER]);
    flow.on_log(&mut host);
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("99000")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-limit-usd"),
        Some("5.000000")
    );
    assert_eq!(
        host.response_header_value("x-ratelimit-remaining-usd"),
        Some("4.000000")
    );
    // Two reports: 1500 tokens for one descriptor, 420 µ$ for the other.
    let reports: Vec<Vec<u8>> = host.callouts[1..]
        .iter()
        .map(|(_, c)| c.body.clone())
        .collect();
    assert_eq!(
        reports,
        vec![
            proto::encode_request("aigate", &[descriptor("tok")], 1500),
            proto::encode_request("aigate", &[descriptor("usd")], 420),
        ]
    );
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn pricing_and_cost_budget_faults_name_their_path() {
    let bad = |config: Value| {
        parse_and_compile(config.to_string().as_bytes(), &|_: &str| None).unwrap_err()
    };
    let route = |limits: Value| json!([{"name": "chat", "provider": openai(), "limits": limits}]);
    let priced = |price: Value| json!({"pricing": {"m": price}, "routes": []});
    let e = bad(priced(json!({"input": -1.0, "output": 1.0})));
    assert_eq!(e.path, "pricing.m.input");
    assert!(e.message.contains("negative"), "{e:?}");
    let e = bad(priced(json!({"input": 1.0, "output": 1e7})));
    assert_eq!(e.path, "pricing.m.output");
    let e = bad(priced(
        json!({"input": 1.0, "output": 1.0, "cache_write": -0.5}),
    ));
    assert_eq!(e.path, "pricing.m.cache_write");
    let e = bad(priced(json!({"input": 1.0, "output": 1.0, "cached": 0.5})));
    assert!(e.path.starts_with("pricing.m"), "{e:?}");
    assert!(e.message.contains("unknown field"), "{e:?}");
    let e = bad(priced(json!({"input": 1.0})));
    assert!(e.message.contains("output"), "{e:?}");
    let e = bad(priced(json!({"input": "1", "output": 1.0})));
    assert_eq!(e.path, "pricing.m.input");
    let e = bad(json!({"pricing": {"": {"input": 1.0, "output": 1.0}}, "routes": []}));
    assert_eq!(e.path, "pricing");

    let cost = |usd: Value| json!({"cost": [{"name": "c", "key": {"fixed": "x"}, "limit_usd": usd, "window_ms": 1000}]});
    let e = bad(json!({"routes": route(cost(json!(1.0)))}));
    assert_eq!(e.path, "routes[0].limits.cost[0]");
    assert!(e.message.contains("pricing"), "{e:?}");
    let with_prices = |limits: Value| json!({"pricing": pricing(), "routes": route(limits)});
    for usd in [json!(0.0), json!(-2.0), json!(0.0000004)] {
        let e = bad(with_prices(cost(usd)));
        assert_eq!(e.path, "routes[0].limits.cost[0].limit_usd");
    }
    let e = bad(with_prices(json!({
        "tokens": [{"name": "c", "key": {"fixed": "x"}, "limit": 5, "window_ms": 1000}],
        "cost": [{"name": "c", "key": {"fixed": "x"}, "limit_usd": 1.0, "window_ms": 1000}]
    })));
    assert_eq!(e.path, "routes[0].limits.cost[0].name");
    let e = bad(with_prices(json!({
        "cost": [{"name": "c", "key": {"fixed": "x"}, "limit": 1, "window_ms": 1000}]
    })));
    assert!(e.message.contains("unknown field"), "{e:?}");
    let e = bad(with_prices(json!({
        "tokens": [{"name": "t", "key": {"fixed": "x"}, "limit": 5, "window_ms": 1000, "count": "cached"}]
    })));
    assert_eq!(e.path, "routes[0].limits.tokens[0].count");
    // A good config compiles.
    parse_and_compile(
        with_prices(cost(json!(25.0))).to_string().as_bytes(),
        &|_: &str| None,
    )
    .unwrap();
}

#[test]
fn gemini_cached_and_thinking_tokens_are_priced_under_its_model_version() {
    let config = json!({
        "pricing": {"gemini-2.5-flash": {"input": 0.30, "output": 2.50, "cached_input": 0.075}},
        "routes": [{"name": "chat", "provider": {"kind": "gemini", "authority": "upstream.local", "model": "gemini-flash-latest", "auth": {"none": true}}}]
    });
    let plan = support::compile(&config, &support::no_env);
    let mut shared = RecordingHost::new();
    let answer = json!({
        "candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 300,
                          "cachedContentTokenCount": 600, "totalTokenCount": 1500},
        "modelVersion": "gemini-2.5-flash"
    });
    let bytes = answer.to_string().into_bytes();
    let host = exchange(
        &plan,
        &mut shared,
        "alice",
        &chat("gemini-flash-latest", false),
        ("application/json", &bytes),
    );
    // Thinking tokens are output: 400 × 0.30 + 600 × 0.075 + (200 + 300) × 2.50.
    assert_eq!(
        host.counter(
            "aigate.cost.usd_micros_total;route=chat;gen_ai.provider.name=gcp.gemini;gen_ai.response.model=gemini-2.5-flash"
        ),
        120 + 45 + 1250
    );
    assert_eq!(state(&host, "aigate.completion_tokens"), Some("500"));
    assert_eq!(state(&host, "aigate.cost_usd"), Some("0.001415"));
}

#[test]
fn only_a_dollar_budget_asks_the_flow_for_the_answer_s_cost() {
    // The plan's stage contract: the flow prices an answer for `settle` only when a stage
    // says it counts cost; the local check still runs in the headers phase either way.
    let stages = |limits: Value| {
        let plan = plan_with(openai(), Some(limits));
        let route = &plan.routes[0];
        (
            route.request_stages.iter().any(|s| s.counts_cost()),
            route.request_stages.iter().any(|s| s.runs_on_headers()),
        )
    };
    assert_eq!(stages(cost_budget(1.0, json!("local"))), (true, true));
    let tokens = json!({
        "tokens": [{"name": "t", "key": {"header": "x-user-id"}, "limit": 10, "window_ms": 60000}],
        "backend": "local"
    });
    assert_eq!(stages(tokens), (false, true));
}
