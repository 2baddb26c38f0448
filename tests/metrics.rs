//! Metric labels stay bounded (issue 12 item 15).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::rc::Rc;

use aigate_core::metrics;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;

fn plan(provider: Value) -> Rc<Plan> {
    let config = json!({"routes": [{"name": "chat", "provider": provider}]});
    support::compile(&config, &support::no_env)
}

/// One whole exchange; returns the counter names it created.
fn exchange(plan: &Rc<Plan>, model: &str) -> Vec<String> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost"),
            ("content-type", "application/json"),
        ],
        body.into_bytes(),
    );
    let mut flow = Flow::new(Rc::clone(plan));
    support::send_whole(&mut flow, &mut host);
    assert!(host.local_response.is_none(), "{:?}", host.local_response);
    support::answer_headers(&mut flow, &mut host, 200, "application/json");
    let answer = json!({"id": "c", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    .to_string();
    host.response_body = answer.into_bytes();
    let size = host.response_body.len();
    flow.on_response_body(&mut host, size, true);
    host.counters.keys().cloned().collect()
}

fn model_labels(names: &[String]) -> BTreeSet<String> {
    names
        .iter()
        .map(|name| metrics::split(name))
        .filter(|(base, _)| *base == metrics::REQUESTS)
        .flat_map(|(_, labels)| labels)
        .filter(|(key, _)| *key == metrics::REQUEST_MODEL)
        .map(|(_, value)| value.to_string())
        .collect()
}

#[test]
fn client_invented_models_do_not_create_labels_without_bound() {
    let plan = plan(
        json!({"kind": "openai_compatible", "authority": "vllm.local", "auth": {"none": true}}),
    );
    let mut labels = BTreeSet::new();
    for i in 0..200 {
        labels.extend(model_labels(&exchange(&plan, &format!("invented-{i}"))));
    }
    assert_eq!(labels.len(), metrics::MAX_SEEN_MODELS + 1, "{labels:?}");
    assert!(labels.contains(metrics::OTHER_MODEL));
    assert!(
        labels.contains("invented-0"),
        "the first names keep their label"
    );
    // A name already labelled keeps its label after the set is full.
    assert_eq!(
        model_labels(&exchange(&plan, "invented-3")),
        BTreeSet::from(["invented-3".to_string()])
    );
    assert_eq!(
        model_labels(&exchange(&plan, "invented-199")),
        BTreeSet::from([metrics::OTHER_MODEL.to_string()])
    );
}

#[test]
fn configured_models_are_always_labelled() {
    let plan = plan(
        json!({"kind": "openai", "authority": "api.local", "auth": {"none": true},
                           "models": {"fast": "gpt-4o-mini", "smart": "gpt-4o"}}),
    );
    for _ in 0..40 {
        assert_eq!(
            model_labels(&exchange(&plan, "fast")),
            BTreeSet::from(["gpt-4o-mini".to_string()])
        );
    }
    assert_eq!(
        model_labels(&exchange(&plan, "smart")),
        BTreeSet::from(["gpt-4o".to_string()])
    );
}

/// One exchange on a route with `extra` (guards, provider), the answer naming `answered`;
/// returns the host with its metrics.
fn answered_by(
    provider: Value,
    extra: Value,
    stream: bool,
    answer: &[u8],
    content_type: &str,
) -> aigate_core::host::RecordingHost {
    let mut route = json!({"name": "chat", "provider": provider});
    for (key, value) in extra.as_object().unwrap() {
        route[key] = value.clone();
    }
    let plan = support::compile(&json!({"routes": [route]}), &support::no_env);
    let body = json!({"model": "gpt-4o", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost"),
            ("content-type", "application/json"),
        ],
        body.into_bytes(),
    );
    let mut flow = Flow::new(plan);
    support::send_whole(&mut flow, &mut host);
    assert!(host.local_response.is_none(), "{:?}", host.local_response);
    support::answer_headers(&mut flow, &mut host, 200, content_type);
    host.response_body = answer.to_vec();
    flow.on_response_body(&mut host, answer.len(), true);
    flow.on_log(&mut host);
    host
}

/// The `gen_ai.response.model` values of every stat named `base`.
fn response_models(host: &aigate_core::host::RecordingHost, base: &str) -> BTreeSet<String> {
    host.histograms
        .keys()
        .chain(host.counters.keys())
        .map(|name| metrics::split(name))
        .filter(|(found, _)| *found == base)
        .map(|(_, labels)| {
            labels
                .iter()
                .find(|(key, _)| *key == metrics::RESPONSE_MODEL)
                .map(|(_, value)| value.to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn the_model_the_answer_names_labels_usage_and_duration() {
    let openai = json!({"kind": "openai", "authority": "api.openai.com", "auth": {"none": true}});
    let completion = |model: &str| {
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        .to_string()
        .into_bytes()
    };
    let guarded =
        json!({"guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}});
    let anthropic =
        json!({"kind": "anthropic", "authority": "api.anthropic.com", "auth": {"none": true}});
    let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-dated-1", "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}})
    .to_string()
    .into_bytes();
    let chunk = |model: &str, usage: bool| {
        let mut event = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": null}]});
        if usage {
            event["choices"] = json!([]);
            event["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
        }
        support::sse(&event)
    };
    let stream = format!(
        "{}{}data: [DONE]\n\n",
        chunk("gpt-4o-stream-1", false),
        chunk("gpt-4o-stream-1", true)
    );
    let cases = [
        // Observed as it is relayed (no response stage, OpenAI's own shape).
        (
            "observed",
            answered_by(
                openai.clone(),
                json!({}),
                false,
                &completion("gpt-4o-2024-08-06"),
                "application/json",
            ),
            "gpt-4o-2024-08-06",
        ),
        // Read in place (a regex response guard).
        (
            "in place",
            answered_by(
                openai.clone(),
                guarded,
                false,
                &completion("gpt-4o-2024-11-20"),
                "application/json",
            ),
            "gpt-4o-2024-11-20",
        ),
        // Translated (the Value path).
        (
            "translated",
            answered_by(anthropic, json!({}), false, &message, "application/json"),
            "claude-dated-1",
        ),
        // Streamed: the first event that names a model.
        (
            "stream",
            answered_by(
                openai,
                json!({}),
                true,
                stream.as_bytes(),
                "text/event-stream",
            ),
            "gpt-4o-stream-1",
        ),
    ];
    for (case, host, model) in cases {
        let want = BTreeSet::from([model.to_string()]);
        assert_eq!(response_models(&host, metrics::TOKEN_USAGE), want, "{case}");
        assert_eq!(
            response_models(&host, metrics::OPERATION_DURATION),
            want,
            "{case}"
        );
        // The exact counters keep the request's labels only (budgets and bills go by them).
        assert_eq!(
            response_models(&host, metrics::TOKENS),
            BTreeSet::from([String::new()]),
            "{case}"
        );
        assert_eq!(
            response_models(&host, metrics::REQUESTS),
            BTreeSet::from([String::new()]),
            "{case}"
        );
    }
}

#[test]
fn an_answer_naming_no_model_or_a_hostile_one_stays_bounded() {
    let openai = json!({"kind": "openai", "authority": "api.openai.com", "auth": {"none": true}});
    let answer = |model: Value| {
        json!({"id": "c", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        .to_string()
        .into_bytes()
    };
    // No model (or not a string): no label, not an empty one.
    for model in [Value::Null, json!(5)] {
        let host = answered_by(
            openai.clone(),
            json!({}),
            false,
            &answer(model),
            "application/json",
        );
        assert_eq!(
            response_models(&host, metrics::TOKEN_USAGE),
            BTreeSet::from([String::new()])
        );
    }
    // An upstream naming a new model in every answer labels MAX_SEEN_MODELS, then `other`.
    let mut seen = BTreeSet::new();
    for i in 0..(metrics::MAX_SEEN_MODELS + 10) {
        let host = answered_by(
            openai.clone(),
            json!({}),
            false,
            &answer(json!(format!("m-{i}"))),
            "application/json",
        );
        seen.extend(response_models(&host, metrics::TOKEN_USAGE));
    }
    assert_eq!(seen.len(), metrics::MAX_SEEN_MODELS + 1, "{seen:?}");
    assert!(seen.contains(metrics::OTHER_MODEL));
}
