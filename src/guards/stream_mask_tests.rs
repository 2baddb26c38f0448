use super::*;
use crate::guards::outcome::{GuardInfo, RejectPolicy};
use crate::guards::regex_guard::tests::scanner;
use crate::host::RecordingHost;
use crate::pipeline::stage::Side;

const ALL: [&str; 5] = ["ssn", "credit_card", "email", "phone_number", "ipv4"];

fn full_scanner() -> Scanner {
    scanner(&ALL, &[("codename", r"(?i)project\s+falcon")])
}

fn mask_whole(scanner: &Scanner, text: &str) -> String {
    let mut text = text.to_string();
    scanner.mask(&mut text);
    text
}

/// Feeds `pieces` one by one and returns what was released, piece by piece, then the rest.
fn stream(scanner: &Scanner, pieces: &[&str]) -> Vec<String> {
    let mut hold = Holdback::default();
    let mut out: Vec<String> = pieces
        .iter()
        .map(|piece| hold.push(scanner, piece).unwrap().text)
        .collect();
    out.push(hold.finish(scanner).text);
    out
}

fn char_offsets(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}

const SECRETS: [&str; 7] = [
    "4111 1111 1111 1111",
    "123-45-6789",
    "jörg.doe@example.com",
    "(555) 123-4567",
    "192.168.100.200",
    "Project Falcon",
    "+44 20 7946 0958",
];

fn sample() -> String {
    "Hi 🙂! Card 4111 1111 1111 1111, SSN 123-45-6789; mail jörg.doe@example.com or call (555) 123-4567.\n\
     Server 192.168.100.200 runs Project Falcon. Ring +44 20 7946 0958 — 日本語 ok."
        .to_string()
}

#[test]
fn every_split_point_masks_like_the_whole_text() {
    let scanner = full_scanner();
    let text = sample();
    let expected = mask_whole(&scanner, &text);
    for secret in SECRETS {
        assert!(
            !expected.contains(secret),
            "whole-text masking missed {secret}"
        );
    }
    for at in char_offsets(&text) {
        let (a, b) = text.split_at(at);
        let out = stream(&scanner, &[a, b]).concat();
        assert_eq!(out, expected, "split at byte {at}");
    }
}

#[test]
fn every_pair_of_split_points_around_each_secret() {
    let scanner = full_scanner();
    let text = sample();
    let expected = mask_whole(&scanner, &text);
    for secret in SECRETS {
        let start = text.find(secret).unwrap();
        let end = start + secret.len();
        // Every way to cut the secret (and a little around it) into three pieces.
        let offsets: Vec<usize> = char_offsets(&text)
            .into_iter()
            .filter(|&i| i + 3 >= start && i <= end + 3)
            .collect();
        for (n, &i) in offsets.iter().enumerate() {
            for &j in offsets.iter().skip(n) {
                let pieces = [&text[..i], &text[i..j], &text[j..]];
                let released = stream(&scanner, &pieces);
                assert_eq!(released.concat(), expected, "cuts at {i} and {j}");
                for piece in &released {
                    for secret in SECRETS {
                        assert!(!piece.contains(secret));
                    }
                }
            }
        }
    }
}

#[test]
fn character_by_character_stream() {
    let scanner = full_scanner();
    let text = sample();
    let mut chars = [0u8; 4];
    let pieces: Vec<String> = text
        .chars()
        .map(|c| c.encode_utf8(&mut chars).to_string())
        .collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    assert_eq!(
        stream(&scanner, &pieces).concat(),
        mask_whole(&scanner, &text)
    );
}

#[test]
fn prose_flows_with_little_held_back() {
    let scanner = scanner(&ALL, &[]);
    let mut hold = Holdback::default();
    let released = hold
        .push(&scanner, "The quick brown fox jumps over the lazy dog")
        .unwrap();
    // Only the last word could still become an e-mail address.
    assert_eq!(released.text, "The quick brown fox jumps over the lazy ");
    let released = hold.push(&scanner, ". Next").unwrap();
    assert_eq!(released.text, "dog. ");
    assert_eq!(hold.finish(&scanner).text, "Next");
}

#[test]
fn operator_patterns_hold_to_the_sentence_end() {
    let scanner = scanner(&[], &[("codename", r"(?i)project\s+falcon")]);
    let mut hold = Holdback::default();
    assert_eq!(
        hold.push(&scanner, "Done. About project").unwrap().text,
        "Done. "
    );
    assert_eq!(hold.push(&scanner, " falcon: it").unwrap().text, "");
    assert_eq!(
        hold.push(&scanner, " flies.\nNext").unwrap().text,
        "About <CODENAME>: it flies.\n"
    );
    assert_eq!(hold.finish(&scanner).text, "Next");
}

#[test]
fn long_text_without_sentence_end_is_released_past_the_cap() {
    let scanner = scanner(&[], &[("codename", "falcon")]);
    let mut hold = Holdback::default();
    let released = hold.push(&scanner, &"word ".repeat(400)).unwrap();
    assert_eq!(
        released.text.chars().count(),
        2000 - MAX_SENTENCE_HOLD_CHARS
    );
}

// ------------------------------------------------------------------ the event filter

fn guard(action: RegexAction) -> Rc<RegexGuard> {
    Rc::new(RegexGuard {
        info: GuardInfo {
            name: "pii".into(),
            route: "chat".into(),
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

fn chunk(choice: serde_json::Value) -> SseEvent {
    SseEvent::data(
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}).to_string(),
    )
}

fn content_chunk(piece: &str) -> SseEvent {
    chunk(
        json!({"index": 0, "delta": {"content": piece}, "finish_reason": null, "logprobs": {"content": [{"token": piece}]}}),
    )
}

fn run(
    filter: &mut dyn EventFilter,
    events: Vec<SseEvent>,
    host: &mut RecordingHost,
) -> Result<Vec<SseEvent>, ApiError> {
    let mut out = Vec::new();
    for event in events {
        filter.on_event(event, &mut out, host)?;
    }
    filter.finish(&mut out, host)?;
    Ok(out)
}

fn contents(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .flat_map(|v| v["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn filter_masks_content_split_across_events_at_every_offset() {
    let text = sample();
    let expected = mask_whole(&full_scanner(), &text);
    let factory = StreamMaskFactory(guard(RegexAction::Mask));
    for at in char_offsets(&text) {
        let (a, b) = text.split_at(at);
        let mut host = RecordingHost::new();
        let mut filter = factory.create(&crate::client_api::chat::Chat);
        let events = vec![
            content_chunk(a),
            content_chunk(b),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})),
            SseEvent::data("[DONE]"),
        ];
        let out = run(filter.as_mut(), events, &mut host).unwrap();
        assert_eq!(contents(&out), expected, "split at {at}");
        for event in &out {
            assert!(
                !event.data.contains("4111"),
                "a raw secret or logprob leaked: {}",
                event.data
            );
        }
        assert_eq!(out.last().unwrap().data, "[DONE]");
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=chat;guard=pii;side=response;outcome=masked"
            ),
            1
        );
    }
}

#[test]
fn held_text_is_released_with_the_finish_reason() {
    let factory = StreamMaskFactory(guard(RegexAction::Mask));
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let mut host = RecordingHost::new();
    let events = vec![
        content_chunk("mail bob@example."),
        chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})),
    ];
    let out = run(filter.as_mut(), events, &mut host).unwrap();
    let last: Value = serde_json::from_str(&out.last().unwrap().data).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(contents(&out), "mail bob@example.");
    // Without a finish_reason the rest comes in an added chunk before [DONE].
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let out = run(
        filter.as_mut(),
        vec![
            content_chunk("mail bob@example.com"),
            SseEvent::data("[DONE]"),
        ],
        &mut host,
    )
    .unwrap();
    assert_eq!(contents(&out), "mail <EMAIL>");
    assert_eq!(out.len(), 3);
    let added: Value = serde_json::from_str(&out[1].data).unwrap();
    assert_eq!(added["id"], "c1");
    assert_eq!(added["object"], "chat.completion.chunk");
    // And at the end of a stream that had no [DONE].
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let out = run(
        filter.as_mut(),
        vec![content_chunk("ip 10.0.0.1")],
        &mut host,
    )
    .unwrap();
    assert_eq!(contents(&out), "ip <IPV4>");
}

#[test]
fn tool_call_arguments_and_legacy_text_and_several_choices() {
    let factory = StreamMaskFactory(guard(RegexAction::Mask));
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let mut host = RecordingHost::new();
    let events = vec![
        chunk(
            json!({"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"card\":\"4111 1111"}}]}, "finish_reason": null}),
        ),
        chunk(json!({"index": 1, "delta": {"content": "ssn 123-45"}, "finish_reason": null})),
        chunk(
            json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": " 1111 1111\"}"}}]}, "finish_reason": null}),
        ),
        chunk(json!({"index": 1, "delta": {"content": "-6789 ok"}, "finish_reason": "stop"})),
        chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
        SseEvent::data("[DONE]"),
    ];
    let out = run(filter.as_mut(), events, &mut host).unwrap();
    let mut arguments = String::new();
    let mut content = String::new();
    for event in &out {
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        for choice in value["choices"].as_array().unwrap() {
            if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
                for call in calls {
                    arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
                }
            }
            content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(arguments, "{\"card\":\"<CREDIT_CARD>\"}");
    assert_eq!(content, "ssn <SSN> ok");
    assert!(
        out[0].data.contains("\"name\":\"f\""),
        "tool call name and id pass through"
    );

    // Legacy completions stream `text`.
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let legacy = |text: &str, finish: Value| {
        SseEvent::data(json!({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}).to_string())
    };
    let out = run(
        filter.as_mut(),
        vec![
            legacy("call 555-12", Value::Null),
            legacy("3-4567", Value::Null),
            SseEvent::data("[DONE]"),
        ],
        &mut host,
    )
    .unwrap();
    let text: String = out
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .map(|v| {
            v["choices"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(text, "call <PHONE_NUMBER>");
}

#[test]
fn reject_ends_the_stream_before_any_part_of_the_hit_is_sent() {
    let factory = StreamMaskFactory(guard(RegexAction::Reject));
    let mut host = RecordingHost::new();
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let mut out = Vec::new();
    filter
        .on_event(content_chunk("Your card is 4111 "), &mut out, &mut host)
        .unwrap();
    filter
        .on_event(content_chunk("1111 1111 "), &mut out, &mut host)
        .unwrap();
    let error = filter
        .on_event(content_chunk("1111. Bye"), &mut out, &mut host)
        .unwrap_err();
    assert_eq!(
        (error.status, error.code.as_str(), error.kind),
        (403, "pii", "guardrail_violation")
    );
    assert!(!contents(&out).contains("4111"));
    assert_eq!(
        host.counter(
            "aigate.guard.outcomes_total;route=chat;guard=pii;side=response;outcome=blocked"
        ),
        1
    );
    // A clean stream passes.
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let out = run(
        filter.as_mut(),
        vec![content_chunk("all good"), SseEvent::data("[DONE]")],
        &mut host,
    )
    .unwrap();
    assert_eq!(contents(&out), "all good");
}

#[test]
fn usage_and_empty_events_pass() {
    let factory = StreamMaskFactory(guard(RegexAction::Mask));
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let mut host = RecordingHost::new();
    let usage = SseEvent::data(
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 1}}).to_string(),
    );
    let out = run(
        filter.as_mut(),
        vec![SseEvent::data(""), usage.clone()],
        &mut host,
    )
    .unwrap();
    assert_eq!(out, vec![SseEvent::data(""), usage]);
}

/// Issue 12 item 5: an event the masker cannot read was relayed as it came, unmasked.
#[test]
fn unreadable_events_end_the_stream_and_are_counted() {
    let unreadable = [
        "not json",
        // A lone surrogate escape before the SSN.
        r#"{"choices":[{"index":0,"delta":{"content":"\ud800 ssn 123-45-6789"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"ssn 123-45-6789"},"finish_reason":null}],"x":NaN}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"ssn 123-45-6789"#,
    ];
    for action in [RegexAction::Mask, RegexAction::Reject] {
        let factory = StreamMaskFactory(guard(action));
        for data in unreadable {
            let mut filter = factory.create(&crate::client_api::chat::Chat);
            let mut host = RecordingHost::new();
            let mut out = Vec::new();
            filter
                .on_event(content_chunk("Hello "), &mut out, &mut host)
                .unwrap();
            let error = filter
                .on_event(SseEvent::data(data), &mut out, &mut host)
                .unwrap_err();
            assert_eq!(
                (error.status, error.code.as_str()),
                (502, "invalid_upstream_response"),
                "{data}"
            );
            assert!(out.iter().all(|e| !e.data.contains("6789")), "{data}");
            assert_eq!(
                host.counter(
                    "aigate.guard.outcomes_total;route=chat;guard=pii;side=response;outcome=failed_closed"
                ),
                1,
                "{data}"
            );
        }
    }
}

/// Issue 12 item 4: streamed legacy `function_call` arguments were never masked.
#[test]
fn legacy_function_call_arguments_are_masked_across_events() {
    let factory = StreamMaskFactory(guard(RegexAction::Mask));
    let call = |arguments: &str, finish: Value| {
        chunk(
            json!({"index": 0, "delta": {"function_call": {"arguments": arguments}}, "finish_reason": finish}),
        )
    };
    for in_place in [true, false] {
        let mut filter = masker(Rc::clone(&factory.0), in_place);
        let mut host = RecordingHost::new();
        let events = vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": ""}}, "finish_reason": null}),
            ),
            call("{\"ssn\":\"123-4", Value::Null),
            call("5-6789\", \"mail\": \"jane@example", Value::Null),
            call(".com", Value::Null),
            call("\"}", Value::Null),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "function_call"})),
            SseEvent::data("[DONE]"),
        ];
        let out = run(&mut filter, events, &mut host).unwrap();
        let arguments: String = out
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .flat_map(|v| v["choices"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| {
                c["delta"]["function_call"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(
            arguments, "{\"ssn\":\"<SSN>\", \"mail\": \"<EMAIL>\"}",
            "in place: {in_place}"
        );
        assert!(out[0].data.contains("\"name\":\"f\""));
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=chat;guard=pii;side=response;outcome=masked"
            ),
            1
        );
    }
}

/// Issue 12 item 6: a piece over the old pending limit was released whole, so a hit split
/// after it leaked. Now the tail it could be part of stays held, however large the piece.
#[test]
fn a_hit_split_after_a_very_large_piece_is_masked() {
    let scanner = full_scanner();
    for size in [
        70 * 1024,
        MAX_PENDING_BYTES,
        MAX_PENDING_BYTES + 1,
        300 * 1024,
    ] {
        for secret in SECRETS {
            for at in char_offsets(secret) {
                let (a, b) = secret.split_at(at);
                let first = format!("{} {a}", "word ".repeat(size / 5));
                let second = format!("{b} end.");
                let out = stream(&scanner, &[&first, &second]).concat();
                assert_eq!(
                    out,
                    mask_whole(&scanner, &format!("{first}{second}")),
                    "{size} {secret:?} split at {at}"
                );
                assert!(!out.contains(secret));
            }
        }
    }
    // Through the filter, in both modes.
    for action in [RegexAction::Mask, RegexAction::Reject] {
        let factory = StreamMaskFactory(guard(action));
        let mut filter = factory.create(&crate::client_api::chat::Chat);
        let mut host = RecordingHost::new();
        let big = format!("{}ssn 123-45-", "a".repeat(70 * 1024));
        let out = run(
            filter.as_mut(),
            vec![
                content_chunk(&big),
                content_chunk("6789 ok"),
                SseEvent::data("[DONE]"),
            ],
            &mut host,
        );
        match action {
            RegexAction::Mask => assert!(contents(&out.unwrap()).ends_with("ssn <SSN> ok")),
            RegexAction::Reject => assert_eq!(out.unwrap_err().status, 403),
        }
    }
}

/// An operator pattern's match that keeps growing cannot be held without bound: past the
/// pending limit the stream ends with an error, and nothing of the match was released.
#[test]
fn an_operator_match_over_the_pending_limit_ends_the_stream() {
    let scanner = scanner(&[], &[("ticket", "TCK-[0-9]+")]);
    let mut hold = Holdback::default();
    assert_eq!(hold.push(&scanner, "Ticket: TCK-").unwrap().text, "");
    let mut released = String::new();
    let mut result = Ok(());
    for _ in 0..(2 * MAX_PENDING_BYTES / 1000) {
        match hold.push(&scanner, &"7".repeat(1000)) {
            Ok(piece) => released.push_str(&piece.text),
            Err(overflow) => {
                result = Err(overflow);
                break;
            }
        }
    }
    assert_eq!(result, Err(Overflow));
    assert!(!released.contains('7'), "{released}");

    let factory = StreamMaskFactory(Rc::new(RegexGuard {
        info: guard(RegexAction::Mask).info.clone(),
        scanner,
        action: RegexAction::Mask,
    }));
    let mut filter = factory.create(&crate::client_api::chat::Chat);
    let mut host = RecordingHost::new();
    let mut events = vec![content_chunk("Ticket: TCK-")];
    events.extend((0..20).map(|_| content_chunk(&"7".repeat(1000))));
    let error = run(filter.as_mut(), events, &mut host).unwrap_err();
    assert_eq!((error.status, error.code.as_str()), (500, "guard_failed"));
    assert_eq!(
        host.counter(
            "aigate.guard.outcomes_total;route=chat;guard=pii;side=response;outcome=failed_closed"
        ),
        1
    );
}

/// The stream masker's work is linear too, on the inputs of `regex_guard`'s linearity test
/// cut into 61-byte events (whatever is held is searched again with each event).
#[test]
fn streaming_is_linear() {
    use crate::guards::regex_guard::tests::linear_time::{assert_linear, text, CASES};
    for case in &CASES {
        let scanner = scanner(case.0, case.1);
        assert_linear(
            &format!("stream {:?} {:?} on {:?}", case.0, case.1, case.3),
            |bytes| {
                let text = text(case, bytes);
                let mut hold = Holdback::default();
                let mut at = 0;
                while at < text.len() {
                    let mut end = (at + 61).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    // A growing operator match may end the stream; that is linear too.
                    if hold.push(&scanner, &text[at..end]).is_err() {
                        return;
                    }
                    at = end;
                }
                hold.finish(&scanner);
            },
        );
    }
}

/// What a client would read: each event's JSON (or its raw text when it is not JSON).
fn parsed(events: &[SseEvent]) -> Vec<Result<Value, String>> {
    events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).map_err(|_| e.data.clone()))
        .collect()
}

fn masker(guard: Rc<RegexGuard>, in_place: bool) -> StreamMasker {
    StreamMasker {
        in_place,
        ..StreamMasker::new(guard)
    }
}

mod in_place_matches_value_path {
    use super::*;
    use proptest::prelude::*;

    /// One choice's part of an event: which text field, the piece, logprobs, finish.
    fn choice_event(index: u64, field: u8, piece: &str, logprobs: bool, finish: bool) -> Value {
        let mut choice = match field {
            0 => json!({"index": index, "delta": {"content": piece}}),
            1 => json!({"index": index, "delta": {"refusal": piece}}),
            2 => json!({"index": index, "text": piece}),
            3 => {
                json!({"index": index, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}})
            }
            4 => json!({"index": index, "delta": {"function_call": {"arguments": piece}}}),
            _ => json!({"index": index, "delta": {}}),
        };
        choice["logprobs"] = if logprobs {
            json!({"content": [{"token": piece}]})
        } else {
            Value::Null
        };
        choice["finish_reason"] = if finish { json!("stop") } else { Value::Null };
        choice
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn same_output_and_metrics(
            cuts in proptest::collection::vec(0usize..400, 0..8),
            fields in proptest::collection::vec(0u8..6, 9),
            logprobs in proptest::collection::vec(any::<bool>(), 9),
            two_choices in any::<bool>(),
            finish_last in any::<bool>(),
            done in any::<bool>(),
            reject in any::<bool>(),
        ) {
            let text = sample();
            let mut offsets: Vec<usize> = cuts
                .iter()
                .map(|cut| {
                    let mut at = cut % (text.len() + 1);
                    while !text.is_char_boundary(at) {
                        at -= 1;
                    }
                    at
                })
                .collect();
            offsets.push(0);
            offsets.push(text.len());
            offsets.sort_unstable();
            offsets.dedup();
            let pieces: Vec<&str> = offsets.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let mut events = Vec::new();
            for (n, piece) in pieces.iter().enumerate() {
                let last = n + 1 == pieces.len();
                let mut choices = vec![choice_event(0, fields[n % 9], piece, logprobs[n % 9], last && finish_last)];
                if two_choices {
                    choices.push(choice_event(1, fields[(n + 3) % 9], piece, false, last && finish_last));
                }
                events.push(SseEvent::data(
                    json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m", "choices": choices}).to_string(),
                ));
            }
            if done {
                events.push(SseEvent::data("[DONE]"));
            }
            let action = if reject { RegexAction::Reject } else { RegexAction::Mask };
            let mut results = Vec::new();
            for in_place in [true, false] {
                let mut host = RecordingHost::new();
                let mut filter = masker(guard(action), in_place);
                let out = run(&mut filter, events.clone(), &mut host);
                let out = out.map(|events| parsed(&events)).map_err(|e| e.code);
                results.push((out, host.counters.clone()));
            }
            prop_assert_eq!(&results[0], &results[1]);
        }
    }
}
