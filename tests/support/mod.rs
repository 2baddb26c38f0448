//! Builders shared by the native tests (each `tests/*.rs` file is its own crate and takes this
//! in with `mod support;`): compiled plans, requests on a `RecordingHost`, the answer fed to a
//! `Flow` as Envoy would, and readers of what the client or the upstream got.
#![allow(dead_code)] // each test file uses a part

use std::rc::Rc;

use aigate_core::config::EnvLookup;
use aigate_core::host::{CalloutReply, RecordingHost};
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{parse_and_compile, Plan};
use serde_json::Value;

/// The plan of `config`, with secrets read from `env`; a config fault fails the test.
pub fn compile(config: &Value, env: &dyn EnvLookup) -> Rc<Plan> {
    Rc::new(parse_and_compile(config.to_string().as_bytes(), env).unwrap())
}

/// An environment without variables.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// Header pairs as the host holds them.
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A fresh host whose request has `headers` and `body`.
pub fn request_host(headers_: &[(&str, &str)], body: Vec<u8>) -> RecordingHost {
    let mut host = RecordingHost::new();
    host.request_headers = headers(headers_);
    host.request_body = body;
    host
}

/// The request headers (not the end of the stream), then the whole body in one callback;
/// returns the body phase's action.
pub fn send_whole(flow: &mut Flow, host: &mut RecordingHost) -> Action {
    flow.on_request_headers(host, false);
    let size = host.request_body.len();
    flow.on_request_body(host, size, true)
}

/// The answer's `:status` and `content-type`, through the response headers phase.
pub fn answer_headers(flow: &mut Flow, host: &mut RecordingHost, status: u16, content_type: &str) {
    host.response_headers = vec![
        (":status".into(), status.to_string()),
        ("content-type".into(), content_type.into()),
    ];
    flow.on_response_headers(host, false);
}

/// Answers with `chunks` (the last ends the stream) as Envoy would: what a paused body
/// callback leaves is buffered and offered again with the next chunk. Returns what the client
/// receives.
pub fn respond(
    flow: &mut Flow,
    host: &mut RecordingHost,
    status: u16,
    content_type: &str,
    chunks: &[&[u8]],
) -> Vec<u8> {
    answer_headers(flow, host, status, content_type);
    let mut client = Vec::new();
    let mut buffered = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let end = index + 1 == chunks.len();
        buffered.extend_from_slice(chunk);
        host.response_body = buffered.clone();
        if flow.on_response_body(host, buffered.len(), end) == Action::Continue {
            client.extend_from_slice(&host.response_body);
            buffered.clear();
        }
    }
    client
}

/// `bytes` as JSON; not JSON fails the test and shows them.
pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The status and JSON body of the filter's local response (there must be one).
pub fn local_error(host: &RecordingHost) -> (u16, Value) {
    let reply = host.local_response.as_ref().expect("a local response");
    (reply.status, json_of(&reply.body))
}

/// A callout's reply with `status` and a JSON `body`.
pub fn reply(status: u16, body: Value) -> CalloutReply {
    CalloutReply {
        status,
        headers: vec![(":status".into(), status.to_string())],
        body: body.to_string().into_bytes(),
        grpc_status: None,
    }
}

/// One SSE event carrying `data`.
pub fn sse(data: &Value) -> String {
    format!("data: {data}\n\n")
}
