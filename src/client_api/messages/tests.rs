use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::{json, Value};

use super::stream::JsonText;
use super::*;
use crate::client_api::{for_path, ClientApi};
use crate::config::model::RegexAction;
use crate::guards::outcome::{GuardInfo, RejectPolicy};
use crate::guards::regex_guard::tests::scanner;
use crate::host::RecordingHost;
use crate::pipeline::stage::Side;
use crate::sse::SseParser;

fn validate(body: Value) -> Result<(), ApiError> {
    Messages.validate(&body)
}

fn ok_body() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "r"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}
        ]
    })
}

#[test]
fn validation_table() {
    assert!(validate(ok_body()).is_ok());
    assert!(CountTokens
        .validate(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .is_ok());
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "JSON object"),
        (json!({"max_tokens": 5}), "messages: Field required"),
        (
            json!({"max_tokens": 5, "messages": "hi"}),
            "messages: Input should be a valid list",
        ),
        (
            json!({"max_tokens": 5, "messages": []}),
            "messages: at least one",
        ),
        (json!({"max_tokens": 5, "messages": [5]}), "messages.0:"),
        (
            json!({"max_tokens": 5, "messages": [{"content": "x"}]}),
            "messages.0.role: Field required",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "developer", "content": "x"}]}),
            "messages.0.role:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}),
            "messages.0.role:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user"}]}),
            "messages.0.content: Field required",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": 5}]}),
            "messages.0.content:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": {"text": "x"}}]}),
            "messages.0.content:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": ["x"]}]}),
            "messages.0.content.0:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages.0.content.0.type: Field required",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": 1, "text": "x"}]}]}),
            "messages.0.content.0.type:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]}),
            "messages.0.content.0.text:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages.0.content.0.text: Field required",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]}),
            "messages.0.content.0.content:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": 5}]}]}]}),
            "messages.0.content.0.content.0.text:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]}),
            "messages.0.content.0.input:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": 5}]}]}),
            "messages.0.content.0.thinking:",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "search_result", "content": [{"type": "text", "text": 1}]}]}]}),
            "messages.0.content.0.content.0.text:",
        ),
        (
            json!({"max_tokens": 5, "system": 5, "messages": [{"role": "user", "content": "x"}]}),
            "system:",
        ),
        (
            json!({"max_tokens": 5, "system": [{"type": "image"}], "messages": [{"role": "user", "content": "x"}]}),
            "system.0.type:",
        ),
        (
            json!({"max_tokens": 5, "system": [{"type": "text", "text": {}}], "messages": [{"role": "user", "content": "x"}]}),
            "system.0.text:",
        ),
        (
            json!({"max_tokens": 5, "system": ["x"], "messages": [{"role": "user", "content": "x"}]}),
            "system.0:",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "max_tokens: Field required",
        ),
        (
            json!({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens:",
        ),
        (
            json!({"max_tokens": -3, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens:",
        ),
        (
            json!({"max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens:",
        ),
        (
            json!({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens:",
        ),
        (
            json!({"max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            "stream:",
        ),
        (
            json!({"max_tokens": 5, "model": 7, "messages": [{"role": "user", "content": "x"}]}),
            "model:",
        ),
    ];
    for (body, needle) in cases {
        let error = validate(body.clone()).expect_err(&body.to_string());
        assert_eq!(error.status, 400, "{body}");
        assert!(
            error.message.contains(needle),
            "{body}: {} should name {needle}",
            error.message
        );
        let shaped: Value = serde_json::from_slice(&Messages.error_body(&error)).unwrap();
        assert_eq!(shaped["type"], "error");
        assert_eq!(shaped["error"]["type"], "invalid_request_error");
    }
    // count_tokens takes no max_tokens and no stream.
    let error = CountTokens
        .validate(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .unwrap_err();
    assert!(error.message.contains("stream"), "{}", error.message);
}

#[test]
fn paths_and_translation() {
    let op = |path: &str| for_path(path).map(|api| api.operation());
    assert_eq!(op("/v1/messages?beta=true"), Some(Operation::Messages));
    assert_eq!(
        op("/v1/messages/count_tokens?beta=true"),
        Some(Operation::CountTokens)
    );
    assert_eq!(op("/v1/messages/batches"), None);
    let anthropic =
        crate::providers::codec_for(crate::config::model::ProviderKind::Anthropic, false);
    let openai = crate::providers::codec_for(crate::config::model::ProviderKind::Openai, false);
    let compatible =
        crate::providers::codec_for(crate::config::model::ProviderKind::OpenaiCompatible, true);
    assert_eq!(Messages.translation(anthropic), Some(Translation::Native));
    assert_eq!(
        CountTokens.translation(anthropic),
        Some(Translation::Native)
    );
    assert_eq!(Messages.translation(compatible), Some(Translation::Native));
    // No bridge registered in this module: refused elsewhere (the flow's 400).
    assert_eq!(
        Messages.translation(openai),
        Messages.chat_bridge().map(|_| Translation::ViaChat)
    );
    assert_eq!(CountTokens.translation(openai), None);
}

#[test]
fn error_shape_follows_the_status() {
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ] {
        let error = ApiError::new(status, "whatever", "code", "why");
        let body: Value = serde_json::from_slice(&Messages.error_body(&error)).unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": "why"}})
        );
    }
    let mut out = Vec::new();
    Messages.write_error_event(&ApiError::new(429, "x", "y", "slow down"), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "event: error\ndata: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\"},\"type\":\"error\"}\n\n"
    );
}

fn texts(value: &mut Value, request: bool) -> Vec<String> {
    if request {
        Messages.request_texts(value)
    } else {
        Messages.answer_texts(value)
    }
}

#[test]
fn request_visitor_reads_every_text_field() {
    let mut body = json!({
        "system": [{"type": "text", "text": "S1", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "U1"},
            {"role": "user", "content": [
                {"type": "text", "text": "U2", "citations": [{"type": "char_location", "cited_text": "C1", "document_title": "DT"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "B64"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/U3"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "D1"}, "title": "D2", "context": "D3"},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "D4"}]}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "PDF"}},
                {"type": "search_result", "source": "https://S", "title": "R1", "content": [{"type": "text", "text": "R2"}]},
                {"type": "tool_result", "tool_use_id": "toolu_9", "content": "T1", "is_error": true},
                {"type": "tool_result", "tool_use_id": "toolu_8", "content": [{"type": "text", "text": "T2"}, {"type": "search_result", "source": "s", "title": "T3", "content": [{"type": "text", "text": "T4"}]}]},
                {"type": "brand_new_block", "id": "ID", "payload": {"note": "N1"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "TH", "signature": "SIG"},
                {"type": "redacted_thinking", "data": "RED"},
                {"type": "text", "text": "A1"},
                {"type": "tool_use", "id": "toolu_1", "name": "NAME", "input": {"K1": "V1", "n": [1, {"K2": "V2"}]}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "Q1"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "title": "W1", "url": "https://W2", "encrypted_content": "ENC"}]}
            ]}
        ]
    });
    let seen = texts(&mut body, true);
    for expected in [
        "S1",
        "U1",
        "U2",
        "C1",
        "DT",
        "https://x/U3",
        "D1",
        "D2",
        "D3",
        "D4",
        "https://S",
        "R1",
        "R2",
        "T1",
        "T2",
        "T3",
        "T4",
        "N1",
        "TH",
        "A1",
        "K1",
        "V1",
        "K2",
        "V2",
        "Q1",
        "W1",
        "https://W2",
    ] {
        assert!(
            seen.iter().any(|t| t == expected),
            "{expected} not in {seen:?}"
        );
    }
    for never in [
        "B64",
        "PDF",
        "RED",
        "SIG",
        "ENC",
        "toolu_1",
        "toolu_9",
        "NAME",
        "ID",
        "image/png",
        "ephemeral",
    ] {
        assert!(!seen.iter().any(|t| t == never), "{never} in {seen:?}");
    }
    // Masking everything changes every text but thinking, and keeps the shape.
    let before = body.clone();
    let changed = Messages.visit_request_texts(&mut body, &mut |text: &mut String| {
        *text = format!("<{text}>");
        true
    });
    assert!(changed);
    let message = &body["messages"][2]["content"];
    assert_eq!(
        message[0], before["messages"][2]["content"][0],
        "thinking edited"
    );
    assert_eq!(message[1], before["messages"][2]["content"][1]);
    assert_eq!(
        message[3]["input"],
        json!({"<K1>": "<V1>", "<n>": [1, {"<K2>": "<V2>"}]})
    );
    assert_eq!(message[3]["name"], "NAME");
    assert_eq!(body["system"][0]["text"], "<S1>");
    assert_eq!(body["messages"][1]["content"][1]["source"]["data"], "B64");
    assert_eq!(body["messages"][1]["content"][3]["source"]["data"], "<D1>");
    assert_eq!(body["messages"][1]["content"][7]["content"], "<T1>");
}

#[test]
fn answer_visitor_reads_blocks_and_leaves_thinking() {
    let mut answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [
            {"type": "thinking", "thinking": "TH", "signature": "SIG"},
            {"type": "text", "text": "A1"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "A2"}}
        ],
        "usage": {"input_tokens": 1, "output_tokens": 2}
    });
    assert_eq!(texts(&mut answer, false), ["TH", "A1", "q", "A2"]);
    Messages.visit_answer_texts(&mut answer, &mut |text: &mut String| {
        text.make_ascii_lowercase();
        true
    });
    assert_eq!(answer["content"][0]["thinking"], "TH");
    assert_eq!(answer["content"][1]["text"], "a1");
    assert_eq!(answer["content"][2]["input"]["q"], "a2");
    assert_eq!(answer["id"], "msg_1");
}

fn root() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    path.join("fixtures").is_dir().then_some(path)
}

fn usage_of(expect: &Value) -> (u64, u64, u64, u64) {
    let n = |key: &str| expect[key].as_u64().unwrap_or(0);
    (
        n("prompt_tokens"),
        n("completion_tokens"),
        n("total_tokens"),
        n("cached_tokens"),
    )
}

#[test]
fn usage_from_recorded_answers_and_streams() {
    let Some(root) = root() else {
        eprintln!("../shared/conformance is absent: skipped");
        return;
    };
    let mut checked = 0;
    for direction in ["response", "stream"] {
        let dir = root.join("fixtures/anthropic").join(direction);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let case: Value =
                serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            let Some(expect) = case["expect"].get("usage") else {
                continue;
            };
            let upstream = std::fs::read(root.join(case["upstream"].as_str().unwrap())).unwrap();
            let usage = if direction == "response" {
                Messages.usage_from_json(&upstream)
            } else {
                let mut parser = SseParser::new();
                let mut events = Vec::new();
                parser.push(&upstream, &mut events);
                parser.finish(&mut events);
                let mut usage = None;
                for event in &events {
                    Messages.update_stream_usage(&event.data, &mut usage);
                }
                usage
            }
            .unwrap_or_else(|| panic!("{}: no usage", case["upstream"]));
            assert_eq!(
                (
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.total_tokens,
                    usage.cache_read_tokens
                ),
                usage_of(expect),
                "{}",
                case["upstream"]
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
}

#[test]
fn usage_counts_caches_into_the_prompt() {
    let body = br#"{"type":"message","content":[],"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":3,"cache_read_input_tokens":7}}"#;
    let usage = Messages.usage_from_json(body).unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (20, 5, 25)
    );
    assert_eq!((usage.cache_write_tokens, usage.cache_read_tokens), (3, 7));
    let tail = &body[30..];
    assert_eq!(Messages.usage_from_json_tail(tail), Some(usage));
    // A delta's counts replace, what it leaves out keeps.
    let mut usage = None;
    Messages.update_stream_usage(
        r#"{"type":"message_start","message":{"usage":{"input_tokens":4,"cache_read_input_tokens":2,"output_tokens":1}}}"#,
        &mut usage,
    );
    Messages.update_stream_usage(
        r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
        &mut usage,
    );
    let usage = usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cache_read_tokens
        ),
        (6, 9, 2)
    );
    // A text that quotes usage is no usage.
    assert_eq!(
        Messages.usage_from_event(
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"\"usage\":{}"}}"#
        ),
        None
    );
    // count_tokens charges nothing.
    assert_eq!(
        CountTokens.usage_from_json(br#"{"input_tokens":42}"#),
        Some(crate::usage::Usage::default())
    );
}

#[test]
fn estimate_counts_anthropic_deltas() {
    assert_eq!(
        Messages.generated_text_len(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#),
        5
    );
    assert_eq!(
        Messages.generated_text_len(r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#),
        r#"{\"a\":"#.len()
    );
    assert_eq!(
        Messages.generated_text_len(r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#),
        3
    );
    assert_eq!(
        Messages.generated_text_len(r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}"#),
        0
    );
}

// ---------------------------------------------------------------- the stream masker

fn guard(action: RegexAction) -> Rc<RegexGuard> {
    Rc::new(RegexGuard {
        info: GuardInfo {
            name: "pii".into(),
            route: "r".into(),
            side: Side::Response,
            reject: Rc::new(RejectPolicy {
                status: 403,
                message: "no".into(),
            }),
        },
        scanner: scanner(
            &["email", "credit_card"],
            &[("codename", r"(?i)project\s+falcon")],
        ),
        action,
    })
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent {
        event: Some(name.into()),
        data: data.to_string(),
    }
}

fn delta(index: u64, delta: Value) -> SseEvent {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn run(guard: Rc<RegexGuard>, events: Vec<SseEvent>) -> Result<Vec<SseEvent>, ApiError> {
    let mut masker = Messages.stream_masker(guard);
    let mut host = RecordingHost::new();
    let mut out = Vec::new();
    for event in events {
        masker.on_event(event, &mut out, &mut host)?;
    }
    masker.finish(&mut out, &mut host)?;
    Ok(out)
}

/// The text of block `index` (its text deltas, or its partial JSON) as the client reads it.
fn block_text(events: &[SseEvent], index: u64) -> String {
    let mut text = String::new();
    for event in events {
        let value: Value = serde_json::from_str(&event.data).unwrap();
        if value["index"] != json!(index) {
            continue;
        }
        if let Some(piece) = value["delta"]["text"].as_str() {
            text.push_str(piece);
        }
        if let Some(piece) = value["delta"]["partial_json"].as_str() {
            text.push_str(piece);
        }
        if let Some(piece) = value["content_block"]["text"].as_str() {
            text.push_str(piece);
        }
    }
    text
}

fn stream_of(text_pieces: &[&str], json_pieces: &[&str]) -> Vec<SseEvent> {
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for piece in text_pieces {
        events.push(delta(0, json!({"type": "text_delta", "text": piece})));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}})));
    for piece in json_pieces {
        events.push(delta(
            1,
            json!({"type": "input_json_delta", "partial_json": piece}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 1}),
    ));
    events.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

fn char_splits(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect()
}

#[test]
fn every_split_point_masks_like_the_whole_stream() {
    let text = "Mail jane.doe@example.com about Project Falcon, card 4111 1111 1111 1111 ok.";
    let input = r#"{"to": "jane.doe@example.com", "note": "Project \u0046alcon", "n": 1}"#;
    let whole = run(guard(RegexAction::Mask), stream_of(&[text], &[input])).unwrap();
    let masked_text = block_text(&whole, 0);
    let masked_json = block_text(&whole, 1);
    assert!(
        !masked_text.contains("jane.doe")
            && !masked_text.contains("Falcon")
            && !masked_text.contains("4111")
    );
    let parsed: Value = serde_json::from_str(&masked_json).unwrap();
    assert_eq!(
        parsed["note"],
        "Project Falcon".replace("Project Falcon", "<CODENAME>")
    );
    assert_eq!(parsed["to"], "<EMAIL>");
    assert_eq!(parsed["n"], 1);
    for at in char_splits(text) {
        let (a, b) = text.split_at(at);
        let out = run(guard(RegexAction::Mask), stream_of(&[a, b], &[input])).unwrap();
        assert_eq!(block_text(&out, 0), masked_text, "text split at {at}");
        // Deltas of a block stay before its stop.
        let stop = out
            .iter()
            .position(|e| e.data.contains("content_block_stop"))
            .unwrap();
        assert!(out[stop + 1..]
            .iter()
            .all(|e| !e.data.contains("text_delta")));
    }
    for at in char_splits(input) {
        let (a, b) = input.split_at(at);
        let out = run(guard(RegexAction::Mask), stream_of(&[text], &[a, b])).unwrap();
        assert_eq!(block_text(&out, 1), masked_json, "json split at {at}");
    }
    // Three pieces too: every pair of split points of the JSON text.
    let splits = char_splits(input);
    for (i, &x) in splits.iter().enumerate() {
        for &y in &splits[i..] {
            let out = run(
                guard(RegexAction::Mask),
                stream_of(&[text], &[&input[..x], &input[x..y], &input[y..]]),
            )
            .unwrap();
            assert_eq!(block_text(&out, 1), masked_json, "json split at {x}, {y}");
        }
    }
}

#[test]
fn escaped_hits_in_tool_input_are_found() {
    // Every character of the address spelled as an escape, a surrogate pair nearby.
    let address = "jane.doe@example.com";
    let escaped: String = address
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let input = format!(r#"{{"to": "{escaped}", "smile": "\ud83d\ude00", "q": "\"\\"}}"#);
    let out = run(guard(RegexAction::Mask), stream_of(&["hi"], &[&input])).unwrap();
    let json_text = block_text(&out, 1);
    let parsed: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(parsed["to"], "<EMAIL>");
    assert_eq!(parsed["smile"], "😀");
    assert_eq!(parsed["q"], "\"\\");
    let error = run(guard(RegexAction::Reject), stream_of(&["hi"], &[&input])).unwrap_err();
    assert_eq!(error.status, 403);
}

#[test]
fn json_text_decodes_only_what_json_allows() {
    let mut json = JsonText::default();
    let whole = r#"{"a\u0062": "x\n\u0022\u005c\u0001\/\ud800z\u00e9", "k": 1}"#;
    let mut out = String::new();
    for c in whole.chars() {
        out.push_str(&json.push(&c.to_string()));
    }
    out.push_str(&json.finish());
    assert_eq!(out, r#"{"ab": "x\n\u0022\u005c\u0001/\ud800zé", "k": 1}"#);
}

#[test]
fn thinking_is_never_edited_but_a_reject_guard_reads_it() {
    let events = vec![
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "mail jane.doe@exa"}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "mple.com now"}),
        ),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "jane.doe@example.com"}),
        ),
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
    ];
    let out = run(guard(RegexAction::Mask), events.clone()).unwrap();
    assert_eq!(out, events);
    let error = run(guard(RegexAction::Reject), events).unwrap_err();
    assert_eq!(error.status, 403);
}

#[test]
fn held_text_is_released_before_the_block_stops_and_at_the_end() {
    let out = run(
        guard(RegexAction::Mask),
        vec![delta(
            0,
            json!({"type": "text_delta", "text": "write to jane.doe@example"}),
        )],
    )
    .unwrap();
    assert_eq!(block_text(&out, 0), "write to jane.doe@example");
    let events = vec![
        delta(
            0,
            json!({"type": "text_delta", "text": "write to jane.doe@exam"}),
        ),
        delta(0, json!({"type": "text_delta", "text": "ple.com"})),
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ];
    let out = run(guard(RegexAction::Mask), events).unwrap();
    assert_eq!(block_text(&out, 0), "write to <EMAIL>");
    assert!(out.last().unwrap().data.contains("message_stop"));
    assert!(out[out.len() - 2].data.contains("content_block_stop"));
}

#[test]
fn hostile_events_are_guarded() {
    // A block that starts with text, a tool_use that starts with input, citations.
    let events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"content": [{"type": "text", "text": "jane.doe@example.com"}]}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "to jane.doe@example.com"}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"to": "jane.doe@example.com"}}}),
        ),
        delta(
            0,
            json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "jane.doe@example.com"}}),
        ),
    ];
    let out = run(guard(RegexAction::Mask), events.clone()).unwrap();
    for event in &out {
        assert!(!event.data.contains("jane.doe"), "{}", event.data);
    }
    assert!(run(guard(RegexAction::Reject), events).is_err());
    // Not JSON: the stream ends rather than pass unchecked text.
    let error = run(
        guard(RegexAction::Mask),
        vec![SseEvent::data("{not json jane.doe@example.com")],
    )
    .unwrap_err();
    assert_eq!(error.status, 502);
}

#[test]
fn synthesized_stream_tells_the_whole_message() {
    let answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, "x"]}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 2}
    });
    let bytes = Messages.synthesize_stream(&answer, false);
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(&bytes, &mut events);
    parser.finish(&mut events);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    for event in &events {
        let value: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(value["type"].as_str(), event.event.as_deref());
    }
    assert_eq!(block_text(&events, 1), "Hello");
    let input: Value = serde_json::from_str(&block_text(&events, 2)).unwrap();
    assert_eq!(input, json!({"a": [1, "x"]}));
    let mut usage = None;
    for event in &events {
        Messages.update_stream_usage(&event.data, &mut usage);
    }
    assert_eq!(
        usage,
        Messages.usage_from_json(answer.to_string().as_bytes())
    );
    assert!(events
        .iter()
        .any(|e| e.data.contains("signature_delta") && e.data.contains("sig")));
}

#[test]
fn model_list_has_anthropics_shape() {
    let list = model_list(&["a", "b"]);
    assert_eq!(list["data"][0]["type"], "model");
    assert_eq!(list["data"][1]["id"], "b");
    assert_eq!(
        (list["first_id"].as_str(), list["last_id"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(list["has_more"], false);
}

#[test]
fn shaping_puts_system_text_into_system_blocks() {
    let config: crate::config::model::RequestConfig = serde_json::from_value(json!({
        "prepend": [{"role": "system", "content": "P"}, {"role": "user", "content": "PU"}],
        "append": [{"role": "developer", "content": "A"}]
    }))
    .unwrap();
    let shaping = crate::shaping::Shaping::compile(&config, "r").unwrap();
    let mut body =
        json!({"system": "C", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    shaping
        .apply_as(&mut body, Messages.shaping_form())
        .unwrap();
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "P"}, {"type": "text", "text": "C"}, {"type": "text", "text": "A"}])
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "PU"}, {"role": "user", "content": "hi"}])
    );
    assert!(Messages.validate(&body).is_ok());
}

#[test]
fn an_events_claimed_type_or_odd_shape_is_no_way_around_the_masker() {
    // A delta on an event that calls itself something else, and a text that is no string.
    let events = vec![
        event(
            "ping",
            json!({"type": "ping", "index": 0, "delta": {"type": "text_delta", "text": "to jane.doe@example.com"}}),
        ),
        delta(
            1,
            json!({"type": "text_delta", "text": ["jane.doe@example.com"]}),
        ),
        event(
            "content_block_delta",
            json!({"index": 2, "delta": {"type": "text_delta", "text": "jane.doe@example.com"}}),
        ),
    ];
    let out = run(guard(RegexAction::Mask), events.clone()).unwrap();
    for event in &out {
        assert!(!event.data.contains("jane.doe"), "{}", event.data);
    }
    assert!(run(guard(RegexAction::Reject), events).is_err());
    // Too many blocks open at once: the stream fails closed.
    let many: Vec<SseEvent> = (0..300)
        .map(|index| delta(index, json!({"type": "text_delta", "text": "x"})))
        .collect();
    let error = run(guard(RegexAction::Mask), many).unwrap_err();
    assert_eq!(error.code, "guard_failed");
}

#[test]
fn a_bridged_request_is_guarded_in_the_clients_form() {
    // Bridged to chat completions upstream, the stages still read the Messages form: the
    // system text and tool input are guarded (a chat walk would miss both).
    use crate::guards::regex_guard::RegexRequestStage;
    use crate::pipeline::stage::{Notes, RequestCtx, RequestStage};
    use crate::providers::Exchange;
    let stage = RegexRequestStage(guard(RegexAction::Mask));
    let mut body = json!({"system": "jane.doe@example.com", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"to": "jane.doe@example.com"}}]}]});
    let mut exchange = Exchange {
        operation: Operation::ChatCompletions,
        client_operation: Operation::Messages,
        ..Default::default()
    };
    let mut notes = Notes::default();
    let mut host = RecordingHost::new();
    let mut ctx = RequestCtx {
        route_name: "r",
        request_headers: &[],
        body: &mut body,
        exchange: &mut exchange,
        notes: &mut notes,
        host: &mut host,
    };
    stage.start(&mut ctx);
    assert_eq!(body["system"], "<EMAIL>");
    assert_eq!(body["messages"][0]["content"][0]["input"]["to"], "<EMAIL>");
}
