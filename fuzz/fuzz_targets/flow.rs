//! The whole request pipeline with a hostile body and a hostile answer, on routes with
//! guards, shaping and an Anthropic codec: never a panic, errors always OpenAI-shaped.
#![no_main]

use std::rc::Rc;

use aigate_core::plan::parse_and_compile;
use aigate_core::host::RecordingHost;
use aigate_core::pipeline::{Action, Flow};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"routes": [
  {"name": "anthropic", "match": {"path_prefix": "/a/"},
   "provider": {"kind": "anthropic", "auth": {"key": {"value": "k"}}},
   "guards": {"request": [{"regex": {"builtins": ["ssn", "credit_card", "email"], "action": "mask"}}],
              "response": [{"regex": {"builtins": ["email"], "action": "mask"}}]}},
  {"name": "openai", "provider": {"kind": "openai", "auth": {"key": {"value": "k"}}},
   "request": {"prepend": [{"role": "system", "content": "be brief"}], "defaults": {"temperature": 0.1},
               "templates": [{"name": "t", "body": {"messages": [{"role": "user", "content": "say {{x}}"}]}}]},
   "guards": {"response": [{"regex": {"builtins": ["ssn"], "action": "mask"}}]}}
]}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() / 2;
    let (body, answer) = rest.split_at(split);
    let env = |_: &str| None;
    let Ok(plan) = parse_and_compile(CONFIG.as_bytes(), &env) else {
        return;
    };
    let mut flow = Flow::new(Rc::new(plan));
    let mut host = RecordingHost::new();
    let path = if selector & 1 == 0 {
        "/a/v1/chat/completions"
    } else {
        "/v1/chat/completions"
    };
    host.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), path.into()),
        (":authority".into(), "gw".into()),
    ];
    host.request_body = body.to_vec();
    if flow.on_request_headers(&mut host, false) == Action::Continue
        && flow.on_request_body(&mut host, body.len(), true) == Action::Continue
    {
        let content_type = if selector & 2 == 0 {
            "application/json"
        } else {
            "text/event-stream"
        };
        host.response_headers = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), content_type.into()),
        ];
        flow.on_response_headers(&mut host, false);
        let cut = usize::from(selector >> 2).min(answer.len());
        host.response_body = answer[..cut].to_vec();
        if flow.on_response_body(&mut host, cut, false) == Action::Continue {
            // Envoy let that chunk go: the next callback sees only the new bytes.
            host.response_body.clear();
        }
        host.response_body.extend_from_slice(&answer[cut..]);
        let size = host.response_body.len();
        flow.on_response_body(&mut host, size, true);
    }
    flow.on_log(&mut host);
    if let Some(reply) = &host.local_response {
        let error: serde_json::Value =
            serde_json::from_slice(&reply.body).expect("local replies are JSON");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
});
