//! Config compilation of guards: defaults, names, paths of faults.

use super::*;
use crate::config::model::GuardsConfig;
use serde_json::json;

fn env(name: &str) -> Option<String> {
    (name == "GUARD_KEY").then(|| "gk-secret".to_string())
}

fn compile(guards: serde_json::Value) -> Result<GuardPlan, ConfigError> {
    let config: GuardsConfig = serde_json::from_value(guards).unwrap();
    GuardPlan::compile(&config, "routes[0].guards", "chat", &env)
}

#[test]
fn empty_guards_compile_to_nothing() {
    let plan = compile(json!({})).unwrap();
    assert!(plan.request.is_empty() && plan.response.is_empty() && plan.stream.is_empty());
}

#[test]
fn response_regex_gives_a_stage_and_a_stream_filter() {
    let plan = compile(json!({
        "request": [{"regex": {"builtins": ["email"]}}],
        "response": [{"regex": {"builtins": ["email"], "action": "mask"}}, {"regex": {"builtins": ["ssn"], "action": "reject"}}]
    }))
    .unwrap();
    assert_eq!(
        (plan.request.len(), plan.response.len(), plan.stream.len()),
        (1, 2, 2)
    );
    assert!(!plan.response[0].sets_status() && !plan.response[0].needs_whole_answer());
    assert!(plan.response[1].sets_status());
}

#[test]
fn callout_guards_on_the_response_need_the_whole_answer() {
    let endpoint = json!({"cluster": "guard"});
    let plan = compile(json!({"response": [
        {"webhook": {"endpoint": endpoint, "failure_mode": "open"}},
        {"webhook": {"endpoint": endpoint}},
        {"moderation": {"endpoint": endpoint, "failure_mode": "open"}},
        {"llm_check": {"endpoint": endpoint, "model": "guardian", "failure_mode": "open"}}
    ]}))
    .unwrap();
    assert!(plan.stream.is_empty());
    let flags: Vec<(bool, bool)> = plan
        .response
        .iter()
        .map(|s| (s.needs_whole_answer(), s.sets_status()))
        .collect();
    assert_eq!(
        flags,
        vec![(true, false), (true, true), (true, true), (true, true)]
    );
}

#[test]
fn faults_name_their_path() {
    let cases = [
        (
            json!({"reject": {"status": 200}}),
            "routes[0].guards.reject.status",
        ),
        (
            json!({"reject": {"message": " "}}),
            "routes[0].guards.reject.message",
        ),
        (
            json!({"request": [{"regex": {}}]}),
            "routes[0].guards.request[0].regex",
        ),
        (
            json!({"request": [{"regex": {"builtins": ["ssn"]}}, {"regex": {"patterns": [{"name": "x", "pattern": "("}]}}]}),
            "routes[0].guards.request[1].regex.patterns[0].pattern",
        ),
        (
            json!({"request": [{"regex": {"name": "bad name", "builtins": ["ssn"]}}]}),
            "routes[0].guards.request[0].regex.name",
        ),
        (
            json!({"response": [{"webhook": {"endpoint": {"cluster": ""}}}]}),
            "routes[0].guards.response[0].webhook.endpoint.cluster",
        ),
        (
            json!({"request": [{"webhook": {"endpoint": {"cluster": "w"}, "forward_headers": [":path"]}}]}),
            "routes[0].guards.request[0].webhook.forward_headers[0]",
        ),
        (
            json!({"request": [{"webhook": {"endpoint": {"cluster": "w", "auth": {"key": {"env": "GUARD_KEY"}}}, "forward_headers": ["x-user", "Authorization"]}}]}),
            "routes[0].guards.request[0].webhook.forward_headers[1]",
        ),
        (
            json!({"request": [{"moderation": {"endpoint": {"cluster": "m", "auth": {"key": {"env": "NOPE"}}}}}]}),
            "routes[0].guards.request[0].moderation.endpoint.auth.key.env",
        ),
        (
            json!({"request": [{"moderation": {"endpoint": {"cluster": "m"}, "model": ""}}]}),
            "routes[0].guards.request[0].moderation.model",
        ),
        (
            json!({"request": [{"llm_check": {"endpoint": {"cluster": "g"}, "model": "m", "unsafe_when": "(yes"}}]}),
            "routes[0].guards.request[0].llm_check.unsafe_when",
        ),
        (
            json!({"request": [{"llm_check": {"endpoint": {"cluster": "g"}, "model": " "}}]}),
            "routes[0].guards.request[0].llm_check.model",
        ),
        (
            json!({"request": [{"llm_check": {"endpoint": {"cluster": "g"}, "model": "m", "prompt": ""}}]}),
            "routes[0].guards.request[0].llm_check.prompt",
        ),
    ];
    for (config, path) in cases {
        let err = compile(config.clone()).unwrap_err();
        assert_eq!(err.path, path, "{config}: {err}");
        assert!(!err.message.contains("gk-secret"));
    }
}

#[test]
fn unknown_keys_and_two_kinds_in_one_guard_are_refused() {
    let text = br#"{"routes":[{"name":"r","provider":{"kind":"openai","auth":{"none":true}},
        "guards":{"request":[{"regex":{"builtins":["ssn"],"actoin":"mask"}}]}}]}"#;
    let err = crate::plan::parse_and_compile(text, &env).unwrap_err();
    assert!(err.path.starts_with("routes[0].guards.request[0]"), "{err}");
    let text = br#"{"routes":[{"name":"r","provider":{"kind":"openai","auth":{"none":true}},
        "guards":{"request":[{"regex":{"builtins":["ssn"]},"webhook":{"endpoint":{"cluster":"w"}}}]}}]}"#;
    assert!(crate::plan::parse_and_compile(text, &env).is_err());
}

#[test]
fn mode_b_refuses_response_guards_that_can_reject() {
    let route = |guards: serde_json::Value, mode_a: bool| {
        let config = json!({"allow_on_headers_stop_iteration": mode_a, "routes": [{"name": "r",
            "provider": {"kind": "openai", "auth": {"none": true}}, "guards": guards}]});
        crate::plan::parse_and_compile(config.to_string().as_bytes(), &env)
    };
    let endpoint = json!({"cluster": "g"});
    for refused in [
        json!({"response": [{"regex": {"builtins": ["ssn"], "action": "reject"}}]}),
        json!({"response": [{"moderation": {"endpoint": endpoint}}]}),
        json!({"response": [{"llm_check": {"endpoint": endpoint, "model": "g"}}]}),
        json!({"response": [{"webhook": {"endpoint": endpoint}}]}),
    ] {
        let err = route(refused.clone(), false).unwrap_err();
        assert_eq!(err.path, "routes[0]", "{refused}");
        assert!(err.message.contains("allow_on_headers_stop_iteration"));
        assert!(route(refused, true).is_ok());
    }
    for accepted in [
        json!({"response": [{"regex": {"builtins": ["ssn"]}}]}),
        json!({"response": [{"webhook": {"endpoint": endpoint, "failure_mode": "open"}}]}),
        json!({"request": [{"moderation": {"endpoint": endpoint}}, {"regex": {"builtins": ["ssn"], "action": "reject"}}]}),
    ] {
        assert!(route(accepted.clone(), false).is_ok(), "{accepted}");
    }
}
