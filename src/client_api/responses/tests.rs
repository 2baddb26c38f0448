use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::config::model::RegexAction;
use crate::guards::outcome::{GuardInfo, RejectPolicy};
use crate::guards::regex_guard::tests::scanner;
use crate::guards::regex_guard::Scanner;
use crate::host::RecordingHost;
use crate::pipeline::stage::Side;
use crate::sse::SseParser;

fn full_scanner() -> Scanner {
    scanner(
        &["ssn", "credit_card", "email", "phone_number", "ipv4"],
        &[("codename", r"(?i)project\s+falcon")],
    )
}

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
        scanner: full_scanner(),
        action,
    })
}

fn mask_whole(text: &str) -> String {
    let mut text = text.to_string();
    full_scanner().mask(&mut text);
    text
}

fn texts(body: &mut Value, request: bool) -> Vec<String> {
    if request {
        Responses.request_texts(body)
    } else {
        Responses.answer_texts(body)
    }
}

// ------------------------------------------------------------------ validation

#[test]
fn validation_names_the_field() {
    let ok = json!({
        "model": "m", "instructions": "be brief", "stream": true,
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}, {"type": "input_image", "image_url": "data:..."}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "r"}]},
            {"type": "local_shell_call", "call_id": "s", "action": {"type": "exec", "command": ["ls", "-l"], "env": {"A": "b"}}},
            {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "gAAA"},
            {"type": "some_future_item", "payload": {"x": "y"}}
        ],
    });
    assert!(Responses.validate(&ok).is_ok());
    assert!(Responses.validate(&json!({"input": "hi"})).is_ok());
    assert!(Responses
        .validate(&json!({"previous_response_id": "r"}))
        .is_ok());
    for (body, needle) in [
        (json!({"input": 5}), "'input'"),
        (json!({"input": {"role": "user"}}), "'input'"),
        (json!({"input": [5]}), "'input[0]'"),
        (json!({"input": [{"content": "x"}]}), "'input[0].type'"),
        (json!({"input": [{"type": 7}]}), "'input[0].type'"),
        (
            json!({"input": [{"role": "wizard", "content": "x"}]}),
            "'input[0].role'",
        ),
        (
            json!({"input": [{"type": "message", "content": "x"}]}),
            "'input[0].role'",
        ),
        (json!({"input": [{"role": "user"}]}), "'input[0].content'"),
        (
            json!({"input": [{"role": "user", "content": 5}]}),
            "'input[0].content'",
        ),
        (
            json!({"input": [{"role": "user", "content": {"text": "x"}}]}),
            "'input[0].content'",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"text": "x"}]}]}),
            "'input[0].content[0]'",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": ["x"]}]}]}),
            "'input[0].content[0].text'",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
            "'input[0].content[0].text'",
        ),
        (
            json!({"input": [{"type": "function_call", "arguments": {"a": 1}}]}),
            "'input[0].arguments'",
        ),
        (
            json!({"input": [{"type": "function_call_output", "output": {"x": "y"}}]}),
            "'input[0].output'",
        ),
        (
            json!({"input": [{"type": "custom_tool_call", "input": ["x"]}]}),
            "'input[0].input'",
        ),
        (
            json!({"input": [{"type": "custom_tool_call_output", "output": 3}]}),
            "'input[0].output'",
        ),
        (
            json!({"input": [{"type": "local_shell_call", "action": {"command": "rm -rf /"}}]}),
            "'input[0].action.command'",
        ),
        (
            json!({"input": [{"type": "local_shell_call", "action": {"command": ["ls", 5]}}]}),
            "'input[0].action.command[1]'",
        ),
        (
            json!({"input": [{"type": "local_shell_call", "action": {"env": {"K": 1}}}]}),
            "'input[0].action.env.K'",
        ),
        (
            json!({"input": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": 1}]}]}),
            "'input[0].summary[0].text'",
        ),
        (
            json!({"input": [{"type": "shell_call_output", "output": [{"stdout": ["x"]}]}]}),
            "'input[0].output[0].stdout'",
        ),
        (
            json!({"instructions": ["x"], "input": "hi"}),
            "'instructions'",
        ),
        (json!({"input": "hi", "stream": "yes"}), "'stream'"),
        (json!({"input": "hi", "model": 5}), "'model'"),
        (
            json!({"prompt": {"id": "p", "variables": {"name": 5}}}),
            "'prompt.variables.name'",
        ),
        (json!({"prompt": "p"}), "'prompt'"),
    ] {
        let Err(err) = Responses.validate(&body) else {
            panic!("{body} was accepted");
        };
        assert_eq!(err.status, 400, "{body}");
        assert!(
            err.message.contains(needle),
            "{} should name {needle}",
            err.message
        );
        // OpenAI's error shape.
        let shape: Value = serde_json::from_slice(&Responses.error_body(&err)).unwrap();
        assert_eq!(shape["error"]["type"], "invalid_request_error");
        assert!(shape["error"]["message"].as_str().unwrap().contains(needle));
    }
}

// ------------------------------------------------------------------ visitors

#[test]
fn every_item_type_has_its_texts_read() {
    let mut body = json!({
        "instructions": "I0",
        "prompt": {"id": "p", "variables": {"a": "P1", "b": {"type": "input_text", "text": "P2"}, "c": {"type": "input_image", "image_url": "data:x"}}},
        "input": [
            {"role": "user", "content": "T1"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "T2"}, {"type": "input_image", "image_url": "NOT"}, {"type": "input_file", "file_data": "NOT"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "T3", "annotations": []}, {"type": "refusal", "refusal": "T4"}]},
            {"type": "function_call", "call_id": "NOT", "name": "NOT", "arguments": "T5"},
            {"type": "function_call_output", "call_id": "NOT", "output": "T6"},
            {"type": "function_call_output", "call_id": "NOT", "output": [{"type": "input_text", "text": "T7"}]},
            {"type": "custom_tool_call", "call_id": "NOT", "name": "NOT", "input": "T8"},
            {"type": "custom_tool_call_output", "call_id": "NOT", "output": "T9"},
            {"type": "local_shell_call", "call_id": "NOT", "action": {"type": "exec", "command": ["T10", "T11"], "env": {"K": "T12"}, "working_directory": "T13", "user": "T14"}},
            {"type": "local_shell_call_output", "call_id": "NOT", "output": "T15"},
            {"type": "shell_call", "call_id": "NOT", "action": {"commands": ["T16"]}},
            {"type": "shell_call_output", "call_id": "NOT", "output": [{"stdout": "T17", "stderr": "T18"}]},
            {"type": "apply_patch_call", "call_id": "NOT", "operation": {"type": "update_file", "path": "T19", "diff": "T20"}},
            {"type": "apply_patch_call_output", "call_id": "NOT", "output": "T21"},
            {"type": "reasoning", "id": "NOT", "summary": [{"type": "summary_text", "text": "T22"}], "content": [{"type": "reasoning_text", "text": "T23"}], "encrypted_content": "NOT"},
            {"type": "file_search_call", "id": "NOT", "queries": ["T24"], "results": [{"text": "T25", "file_id": "NOT"}]},
            {"type": "web_search_call", "id": "NOT", "action": {"type": "search", "query": "T26"}},
            {"type": "computer_call", "id": "NOT", "action": {"type": "type", "text": "T27"}},
            {"type": "computer_call_output", "call_id": "NOT", "output": {"type": "computer_screenshot", "image_url": "NOT"}},
            {"type": "code_interpreter_call", "id": "NOT", "code": "T28", "outputs": [{"type": "logs", "logs": "T29"}]},
            {"type": "image_generation_call", "id": "NOT", "result": "NOT"},
            {"type": "mcp_list_tools", "id": "NOT", "server_label": "NOT", "tools": [{"name": "NOT", "description": "T30"}]},
            {"type": "mcp_approval_request", "id": "NOT", "name": "NOT", "arguments": "T31"},
            {"type": "mcp_approval_response", "approval_request_id": "NOT", "approve": false, "reason": "T32"},
            {"type": "mcp_call", "id": "NOT", "name": "NOT", "arguments": "T33", "output": "T34", "error": "T35"},
            {"type": "item_reference", "id": "NOT"},
            {"type": "compaction", "id": "NOT", "encrypted_content": "NOT"},
            {"type": "brand_new_item", "id": "NOT", "nested": {"deep": ["T36"]}, "encrypted_content": "NOT"}
        ]
    });
    let found = texts(&mut body, true);
    let mut expected = vec!["I0".to_string()];
    expected.extend((1..=36).map(|n| format!("T{n}")));
    expected.extend(["P1".to_string(), "P2".to_string()]);
    assert_eq!(found, expected);
    // Editing reaches every one of them, and nothing else.
    let before = body.clone();
    assert!(
        Responses.visit_request_texts(&mut body, &mut |text: &mut String| {
            *text = text.to_lowercase();
            true
        })
    );
    let after = body.to_string();
    assert!(!after.contains("\"T1\""));
    assert!(after.contains("\"t36\""));
    assert_eq!(
        after.matches("NOT").count(),
        before.to_string().matches("NOT").count()
    );
}

#[test]
fn answer_texts_and_logprobs() {
    let mut answer = json!({
        "id": "resp_1", "object": "response", "status": "completed", "instructions": "NOT",
        "output": [
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "S"}], "encrypted_content": "NOT"},
            {"type": "message", "id": "m", "role": "assistant", "content": [
                {"type": "output_text", "text": "mail bob@example.com", "annotations": [], "logprobs": [{"token": "bob"}]},
                {"type": "refusal", "refusal": "call (555) 123-4567"}
            ]},
            {"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": "{\"ssn\":\"123-45-6789\"}"}
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    });
    assert_eq!(
        texts(&mut answer, false),
        vec![
            "S",
            "mail bob@example.com",
            "call (555) 123-4567",
            "{\"ssn\":\"123-45-6789\"}"
        ]
    );
    let scanner = full_scanner();
    assert!(Responses.visit_answer_texts(&mut answer, &mut |text: &mut String| scanner.mask(text)));
    let text = answer.to_string();
    for secret in ["bob@example.com", "123-4567", "123-45-6789", "\"token\""] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(answer["output"][1]["content"][0]["logprobs"], json!([]));
    assert_eq!(answer["output"][0]["encrypted_content"], "NOT");
}

// ------------------------------------------------------------------ usage and errors

#[test]
fn usage_from_answers_and_events() {
    let usage = json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60}, "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 130});
    let expected = Usage {
        prompt_tokens: 100,
        completion_tokens: 30,
        total_tokens: 130,
        cache_read_tokens: 60,
        cache_write_tokens: 0,
        reasoning_tokens: 20,
    };
    let answer = json!({"id": "r", "object": "response", "output": [], "usage": usage});
    assert_eq!(
        Responses.usage_from_json(answer.to_string().as_bytes()),
        Some(expected)
    );
    let text = answer.to_string();
    assert_eq!(
        Responses.usage_from_json_tail(&text.as_bytes()[text.len() - 200..]),
        Some(expected)
    );
    for kind in [
        "response.completed",
        "response.incomplete",
        "response.failed",
    ] {
        let event = json!({"type": kind, "sequence_number": 9, "response": answer});
        assert_eq!(
            Responses.usage_from_event(&event.to_string()),
            Some(expected),
            "{kind}"
        );
    }
    let created = json!({"type": "response.created", "sequence_number": 0, "response": {"output": [], "usage": null}});
    assert_eq!(Responses.usage_from_event(&created.to_string()), None);
    let delta =
        json!({"type": "response.output_text.delta", "delta": "\"usage\":{\"input_tokens\":5}"});
    assert_eq!(Responses.usage_from_event(&delta.to_string()), None);
    // total_tokens left out is derived.
    assert_eq!(
        Responses
            .usage_from_json(br#"{"usage":{"input_tokens":2,"output_tokens":3}}"#)
            .map(|u| u.total_tokens),
        Some(5)
    );
}

#[test]
fn in_band_errors_are_responses_error_events() {
    let mut out = Vec::new();
    Responses.write_error_event(
        &ApiError::new(403, "invalid_request_error", "guard_blocked", "no"),
        &mut out,
    );
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(&out, &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("error"));
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["code"], "guard_blocked");
    assert_eq!(data["message"], "no");
    // The OpenAI SDKs raise on an event whose data has an `error` object.
    assert_eq!(data["error"]["message"], "no");
}

#[test]
fn translation_native_where_the_provider_serves_it() {
    use crate::config::model::ProviderKind;
    for kind in [
        ProviderKind::Openai,
        ProviderKind::AzureOpenai,
        ProviderKind::OpenaiCompatible,
    ] {
        let codec = crate::providers::codec_for_kind(kind);
        assert_eq!(
            Responses.translation(codec),
            Some(Translation::Native),
            "{kind:?}"
        );
    }
    let expected = Responses.chat_bridge().map(|_| Translation::ViaChat);
    for kind in [ProviderKind::Anthropic, ProviderKind::Gemini] {
        assert_eq!(
            Responses.translation(crate::providers::codec_for_kind(kind)),
            expected
        );
    }
    assert_eq!(
        Responses.translation(crate::providers::chat_only_openai_codec()),
        expected
    );
    // Compaction is the provider's own: native or refused, never bridged.
    assert_eq!(
        ResponsesCompact.translation(crate::providers::codec_for_kind(ProviderKind::Openai)),
        Some(Translation::Native)
    );
    assert_eq!(
        ResponsesCompact.translation(crate::providers::codec_for_kind(ProviderKind::Anthropic)),
        None
    );
    assert_eq!(
        ResponsesCompact.translation(crate::providers::chat_only_openai_codec()),
        None
    );
    assert!(!ResponsesCompact.is_stream(&json!({"stream": true})));
}

// ------------------------------------------------------------------ streams

fn ev(data: Value) -> SseEvent {
    SseEvent {
        event: data["type"].as_str().map(str::to_string),
        data: data.to_string(),
    }
}

/// A streamed message whose text arrives in `pieces`, then a function call, as OpenAI sends
/// them (sequence numbers from 0).
fn message_stream(pieces: &[&str], arguments: &[&str]) -> Vec<SseEvent> {
    let text: String = pieces.concat();
    let args: String = arguments.concat();
    let mut seq = 0;
    let mut out = Vec::new();
    let mut push = |mut value: Value| {
        value["sequence_number"] = json!(seq);
        seq += 1;
        out.push(ev(value));
    };
    let item = json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]});
    let call = json!({"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c1", "name": "f", "arguments": args});
    let response = json!({"id": "resp_1", "object": "response", "status": "completed", "output": [item, call],
        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}});
    push(
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
    );
    push(
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
    );
    push(
        json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
    );
    for piece in pieces {
        push(
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": piece, "logprobs": [{"token": piece}]}),
        );
    }
    push(
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
    );
    push(
        json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
    );
    push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    push(
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "c1", "name": "f", "arguments": ""}}),
    );
    for piece in arguments {
        push(
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": piece}),
        );
    }
    push(
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": args}),
    );
    push(json!({"type": "response.output_item.done", "output_index": 1, "item": call}));
    push(json!({"type": "response.completed", "response": response}));
    out
}

fn run(
    events: Vec<SseEvent>,
    action: RegexAction,
    host: &mut RecordingHost,
) -> Result<Vec<SseEvent>, ApiError> {
    let mut masker = Responses.stream_masker(guard(action));
    let mut out = Vec::new();
    for event in events {
        masker.on_event(event, &mut out, host)?;
    }
    masker.finish(&mut out, host)?;
    Ok(out)
}

/// What a client accumulates: deltas per type, and the texts of every event that repeats them.
fn deltas(out: &[SseEvent], kind: &str) -> String {
    out.iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter(|v| v["type"] == kind)
        .map(|v| v["delta"].as_str().unwrap().to_string())
        .collect()
}

fn assert_sequence_increasing(out: &[SseEvent]) {
    let numbers: Vec<u64> = out
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
}

fn char_offsets(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}

#[test]
fn masker_masks_split_deltas_and_every_repeat_the_same_way() {
    let text =
        "Card 4111 1111 1111 1111, mail jörg.doe@example.com. Project Falcon at 192.168.100.200 🙂";
    let args = r#"{"ssn":"123-45-6789","phone":"(555) 123-4567"}"#;
    let expected = mask_whole(text);
    let expected_args = mask_whole(args);
    assert_ne!(expected, text);
    for at in char_offsets(text) {
        let (a, b) = text.split_at(at);
        let args_at = args
            .char_indices()
            .map(|(i, _)| i)
            .nth(at % args.len())
            .unwrap_or(0);
        let (c, d) = args.split_at(args_at);
        let mut host = RecordingHost::new();
        let input = message_stream(&[a, b], &[c, d]);
        let count = input.len();
        let out = run(input, RegexAction::Mask, &mut host).unwrap();
        assert_eq!(
            deltas(&out, "response.output_text.delta"),
            expected,
            "split at {at}"
        );
        assert_eq!(
            deltas(&out, "response.function_call_arguments.delta"),
            expected_args
        );
        // Held tails went into the last delta: no event added, numbers unchanged.
        assert_eq!(out.len(), count);
        assert_sequence_increasing(&out);
        let all: Vec<Value> = out
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        for value in &all {
            let data = value.to_string();
            for secret in [
                "4111",
                "example.com",
                "Falcon",
                "192.168",
                "123-45",
                "123-4567",
            ] {
                assert!(!data.contains(secret), "{secret} leaked in {data}");
            }
        }
        let done = all
            .iter()
            .find(|v| v["type"] == "response.output_text.done")
            .unwrap();
        assert_eq!(done["text"], expected);
        let part = all
            .iter()
            .find(|v| v["type"] == "response.content_part.done")
            .unwrap();
        assert_eq!(part["part"]["text"], expected);
        let completed = all
            .iter()
            .find(|v| v["type"] == "response.completed")
            .unwrap();
        assert_eq!(
            completed["response"]["output"][0]["content"][0]["text"],
            expected
        );
        assert_eq!(
            completed["response"]["output"][1]["arguments"],
            expected_args
        );
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=r;guard=pii;side=response;outcome=masked"
            ),
            1
        );
    }
}

#[test]
fn masker_passes_clean_streams_unchanged_but_for_where_deltas_split() {
    let input = message_stream(&["Hello. ", "there"], &["{\"a\":", "1}"]);
    let before: Vec<String> = input.iter().map(|e| e.data.clone()).collect();
    let out = run(input, RegexAction::Mask, &mut RecordingHost::new()).unwrap();
    let after: Vec<String> = out.iter().map(|e| e.data.clone()).collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(deltas(&out, "response.output_text.delta"), "Hello. there");
    assert_eq!(
        deltas(&out, "response.function_call_arguments.delta"),
        "{\"a\":1}"
    );
    // Events that carry no delta pass byte for byte.
    for (before, after) in before.iter().zip(&after) {
        if !before.contains(".delta") {
            assert_eq!(before, after);
        }
    }
}

#[test]
fn masker_adds_a_delta_when_another_event_came_between_and_renumbers() {
    // The upstream ends the item without a `.done` for the text after an unrelated event.
    let events = vec![
        ev(
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "item_id": "m", "delta": "mail bob@example.com", "sequence_number": 3}),
        ),
        ev(
            json!({"type": "response.output_text.annotation.added", "output_index": 0, "content_index": 0, "item_id": "m", "annotation": {}, "sequence_number": 4}),
        ),
        ev(
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "mail bob@example.com"}]}, "sequence_number": 5}),
        ),
        ev(json!({"type": "response.completed", "response": {"output": []}, "sequence_number": 6})),
    ];
    let out = run(events, RegexAction::Mask, &mut RecordingHost::new()).unwrap();
    assert_eq!(out.len(), 5);
    assert_sequence_increasing(&out);
    let text = deltas(&out, "response.output_text.delta");
    assert_eq!(text, mask_whole("mail bob@example.com"));
    assert!(!out.iter().any(|e| e.data.contains("bob@")));
    let numbers: Vec<u64> = out
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, vec![3, 4, 5, 6, 7]);
}

#[test]
fn masker_rejects_and_fails_closed() {
    let out = run(
        message_stream(&["my ssn is 123-45-", "6789"], &[]),
        RegexAction::Reject,
        &mut RecordingHost::new(),
    );
    assert_eq!(out.unwrap_err().status, 403);
    let garbage = vec![SseEvent::data("{not json")];
    let err = run(garbage, RegexAction::Mask, &mut RecordingHost::new()).unwrap_err();
    assert_eq!(err.code, "invalid_upstream_response");
    let odd = vec![ev(
        json!({"type": "response.output_text.delta", "delta": {"x": "4111 1111 1111 1111"}}),
    )];
    assert!(run(odd, RegexAction::Mask, &mut RecordingHost::new()).is_err());
}

#[test]
fn masker_keeps_reasoning_encrypted_content() {
    let events = vec![ev(
        json!({"type": "response.output_item.done", "output_index": 0, "sequence_number": 1,
        "item": {"type": "reasoning", "id": "rs", "encrypted_content": "bob@example.com", "summary": [{"type": "summary_text", "text": "bob@example.com"}]}}),
    )];
    let out = run(events, RegexAction::Mask, &mut RecordingHost::new()).unwrap();
    let value: Value = serde_json::from_str(&out[0].data).unwrap();
    assert_eq!(value["item"]["encrypted_content"], "bob@example.com");
    assert_ne!(value["item"]["summary"][0]["text"], "bob@example.com");
}

#[test]
fn synthesized_stream_folds_back_to_the_answer() {
    let answer = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
        "output": [
            {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]},
            {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c", "name": "f", "arguments": "{\"a\":1}"}
        ],
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}});
    let bytes = Responses.synthesize_stream(&answer, false);
    let mut events = Vec::new();
    SseParser::new().push(&bytes, &mut events);
    assert_sequence_increasing(&events);
    let types: Vec<String> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(types.first().map(String::as_str), Some("response.created"));
    assert_eq!(types.last().map(String::as_str), Some("response.completed"));
    assert_eq!(deltas(&events, "response.output_text.delta"), "Hello");
    assert_eq!(
        deltas(&events, "response.function_call_arguments.delta"),
        "{\"a\":1}"
    );
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["response"], answer);
    assert_eq!(
        Responses
            .usage_from_event(&events.last().unwrap().data)
            .map(|u| u.total_tokens),
        Some(3)
    );
    // Masking the synthesized stream masks like the whole answer.
    let mut secret = answer.clone();
    secret["output"][0]["content"][0]["text"] = json!("mail bob@example.com now");
    let mut events = Vec::new();
    SseParser::new().push(&Responses.synthesize_stream(&secret, false), &mut events);
    let out = run(events, RegexAction::Mask, &mut RecordingHost::new()).unwrap();
    assert!(!out.iter().any(|e| e.data.contains("bob@")));
}
