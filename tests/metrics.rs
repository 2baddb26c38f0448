//! Metric labels stay bounded (issue 12 item 15).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::rc::Rc;

use aigate_core::config::Plan;
use aigate_core::metrics;
use aigate_core::pipeline::Flow;
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
