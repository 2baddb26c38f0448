//! Issue 12 item 9: configured credentials never reach the client, whatever the upstream (or a
//! callout) echoes: error bodies (JSON or text, however long), streamed answers, answers passed
//! through untouched, across any chunk split, and in JSON-escaped form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;
use support::respond;

const KEY: &str = "sk-proj-echoed-by-upstream-0123456789";

fn plan(kind: &str) -> Rc<Plan> {
    let env = |name: &str| (name == "PROVIDER_KEY").then(|| KEY.to_string());
    let config = json!({"routes": [{
        "name": "chat",
        "provider": {"kind": kind, "authority": "upstream.local", "model": "m-1",
                     "auth": {"key": {"env": "PROVIDER_KEY"}}}
    }]});
    support::compile(&config, &env)
}

fn start(kind: &str, stream: bool) -> (Flow, RecordingHost) {
    let body = json!({"model": "m-1", "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let length = body.len().to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost:10000"),
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        body.into_bytes(),
    );
    let mut flow = Flow::new(plan(kind));
    support::send_whole(&mut flow, &mut host);
    assert!(host.local_response.is_none());
    (flow, host)
}

fn assert_clean(client: &[u8]) {
    let text = String::from_utf8_lossy(client);
    assert!(!text.contains(KEY), "the key reached the client: {text}");
    assert!(
        !text.contains("echoed-by-upstream"),
        "part of the key reached the client: {text}"
    );
}

#[test]
fn upstream_401_echoing_the_key_is_redacted() {
    for kind in ["openai", "anthropic", "gemini"] {
        let (mut flow, mut host) = start(kind, false);
        let body =
            json!({"error": {"message": format!("Incorrect API key provided: Bearer {KEY}."),
                                    "type": "invalid_request_error", "code": "invalid_api_key"}})
            .to_string();
        let (a, b) = body.as_bytes().split_at(body.len() / 2);
        let client = respond(&mut flow, &mut host, 401, "application/json", &[a, b]);
        assert_clean(&client);
        let error: Value = serde_json::from_slice(&client).unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Incorrect API key provided: Bearer ***"),
            "{kind}: {error}"
        );
    }
}

#[test]
fn plain_text_403_and_escaped_forms_are_redacted() {
    let (mut flow, mut host) = start("openai", false);
    let client = respond(
        &mut flow,
        &mut host,
        403,
        "text/plain",
        &[format!("forbidden for key {KEY}").as_bytes()],
    );
    assert_clean(&client);
    // JSON escapes that decode to the key.
    let escaped = KEY.replacen('s', "\\u0073", 1).replace('-', "\\u002d");
    let (mut flow, mut host) = start("openai", false);
    let body = format!(r#"{{"error":{{"message":"bad key {escaped}","type":"x"}}}}"#);
    let client = respond(
        &mut flow,
        &mut host,
        401,
        "application/json",
        &[body.as_bytes()],
    );
    assert_clean(&client);
    let error: Value = serde_json::from_slice(&client).unwrap();
    assert!(!error["error"]["message"].as_str().unwrap().contains(KEY));
}

#[test]
fn a_long_text_error_is_not_cut_inside_the_key() {
    // Error messages are cut at 512 characters: the key must not be cut in half and leak.
    let (mut flow, mut host) = start("openai", false);
    let body = format!("{}{KEY} and more", "x".repeat(500));
    let client = respond(&mut flow, &mut host, 500, "text/plain", &[body.as_bytes()]);
    assert_clean(&client);
    let text = String::from_utf8_lossy(&client);
    assert!(!text.contains("sk-proj-echo"), "{text}");
}

#[test]
fn passed_through_json_answer_split_anywhere_is_redacted() {
    let answer = json!({"id": "c1", "object": "chat.completion", "model": "m-1",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("your key is {KEY}")}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    .to_string();
    let bytes = answer.as_bytes();
    let at = answer.find(KEY).unwrap();
    for split in [at + 1, at + 5, at + KEY.len() - 1, 3] {
        let (mut flow, mut host) = start("openai", false);
        let client = respond(
            &mut flow,
            &mut host,
            200,
            "application/json",
            &[&bytes[..split], &bytes[split..]],
        );
        assert_clean(&client);
        assert_eq!(
            client.len(),
            bytes.len(),
            "same length (content-length stays right)"
        );
        let value: Value = serde_json::from_slice(&client).unwrap();
        assert_eq!(value["usage"]["total_tokens"], 3);
    }
}

#[test]
fn streamed_answer_with_the_key_split_across_chunks_is_redacted() {
    let half = KEY.len() / 2;
    let events = [
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"key ".to_string(),
        KEY[..half].to_string(),
        format!("{}\"}},\"finish_reason\":null}}]}}\n\n", &KEY[half..]),
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".to_string(),
    ];
    {
        let (mut flow, mut host) = start("openai", true);
        let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        let client = respond(&mut flow, &mut host, 200, "text/event-stream", &chunks);
        assert_clean(&client);
        let text = String::from_utf8_lossy(&client);
        assert!(text.contains("data: [DONE]"), "{text}");
        assert!(
            text.contains(&format!("key {}", "*".repeat(KEY.len()))),
            "{text}"
        );
    }
}

#[test]
fn translated_stream_with_the_key_is_redacted() {
    // An Anthropic stream translated to OpenAI chunks: the key inside a text delta.
    let (mut flow, mut host) = start("anthropic", true);
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"m-1\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n".to_string(),
        format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}", &KEY[..10]),
        format!("{}\"}}}}\n\n", &KEY[10..]),
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string(),
    ];
    let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    let client = respond(&mut flow, &mut host, 200, "text/event-stream", &chunks);
    assert_clean(&client);
}
