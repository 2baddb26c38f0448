use serde_json::{json, Value};

use super::*;
use crate::pipeline::stream::StreamProcessor;
use crate::providers::test_support::{chunks_of, fixture, process_stream};

fn exchange(stream: bool) -> Exchange {
    Exchange {
        model: "claude-sonnet-4-5".into(),
        client_stream: stream,
        upstream_stream: stream,
        client_wants_usage: false,
        created: 1_700_000_000,
        id: "chatcmpl-test".into(),
        ..Default::default()
    }
}

fn encode_ok(request: Value) -> Value {
    encode(&request, 4096, &exchange(false)).unwrap()
}

fn encode_err(request: Value) -> ApiError {
    encode(&request, 4096, &exchange(false)).unwrap_err()
}

#[test]
fn lifts_system_and_fills_max_tokens() {
    let body = encode_ok(json!({
        "model": "alias",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Hi"}
        ],
        "temperature": 0.3, "top_p": 0.9, "stop": "END", "user": "u-42",
        "n": 1, "logprobs": false, "stream_options": null
    }));
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": "Be terse.\n\nUse metric units.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 4096,
            "temperature": 0.3, "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"}
        })
    );
    let body = encode_ok(
        json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 77}),
    );
    assert_eq!(body["max_tokens"], 77);
    let body = encode_ok(json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 12}));
    assert_eq!(body["max_tokens"], 12);
    assert!(body.get("stream").is_none());
    let streamed = encode(
        &json!({"messages": [{"role": "user", "content": "x"}], "stream": true}),
        1,
        &exchange(true),
    )
    .unwrap();
    assert_eq!(streamed["stream"], true);
}

#[test]
fn content_parts_become_blocks() {
    let body = encode_ok(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
    ]}]}));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ])
    );
}

#[test]
fn tool_calls_and_results_round_trip() {
    let body = encode_ok(json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "noop"}}],
        "tool_choice": "required",
        "parallel_tool_calls": false
    }));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
                {"type": "text", "text": "Thanks"}
            ]}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([
            {"name": "get_weather", "description": "Weather by city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn tool_choice_variants() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, expected) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "tool", "name": "f"}),
        ),
    ] {
        let body = encode_ok(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}),
        );
        assert_eq!(body["tool_choice"], expected);
    }
    let body = encode_ok(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools}));
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn what_cannot_be_translated_is_a_clear_400() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": user, "n": 2}), "'n'"),
        (json!({"messages": user, "logprobs": true}), "'logprobs'"),
        (
            json!({"messages": user, "response_format": {"type": "json_object"}}),
            "'response_format'",
        ),
        (
            json!({"messages": user, "presence_penalty": 0.5}),
            "'presence_penalty'",
        ),
        (json!({"messages": user, "seed": 7}), "'seed'"),
        (
            json!({"messages": user, "some_future_field": 1}),
            "'some_future_field'",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]}),
            "audio",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}),
            "\"file\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "image_url.url",
        ),
        (
            json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, {"role": "user", "content": "x"}]}),
            "messages[0]",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "role \"function\"",
        ),
        (
            json!({"messages": user, "tools": [{"type": "web_search"}]}),
            "tools[0]",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]}),
            "arguments",
        ),
    ];
    for (request, needle) in cases {
        let error = encode_err(request.clone());
        assert_eq!(error.status, 400, "{request}");
        assert!(
            error.message.contains(needle),
            "{:?} should name {needle}",
            error.message
        );
    }
}

#[test]
fn text_answer() {
    let body = fixture("anthropic/answer_text.json");
    let answer = AnthropicCodec
        .decode_response(body.as_bytes(), &exchange(false))
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": null}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23}
        })
    );
}

#[test]
fn tool_use_answer_with_cache_usage() {
    let body = fixture("anthropic/answer_tool_use.json");
    let answer = AnthropicCodec
        .decode_response(body.as_bytes(), &exchange(false))
        .unwrap()
        .unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"],
        "I'll check the weather in San Francisco."
    );
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}])
    );
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 504, "completion_tokens": 58, "total_tokens": 562,
               "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
    );
}

#[test]
fn stop_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        assert_eq!(finish_reason(Some(stop)), Some(finish));
    }
    assert_eq!(finish_reason(None), None);
    let invalid = AnthropicCodec
        .decode_response(b"<html>", &exchange(false))
        .unwrap_err();
    assert_eq!(
        (invalid.status, invalid.code.as_str()),
        (502, "invalid_upstream_response")
    );
}

#[test]
fn errors_keep_status_and_type() {
    let error =
        AnthropicCodec.decode_error(529, fixture("anthropic/error_overloaded.json").as_bytes());
    assert_eq!(
        (error.status, error.code.as_str(), error.message.as_str()),
        (529, "overloaded_error", "Overloaded")
    );
    let error =
        AnthropicCodec.decode_error(429, fixture("anthropic/error_rate_limit.json").as_bytes());
    assert_eq!(
        (error.status, error.kind, error.code.as_str()),
        (429, "rate_limit_error", "rate_limit_error")
    );
    assert!(error.message.starts_with("This request would exceed"));
}

#[test]
fn version_header() {
    let config: crate::config::model::ProviderConfig = serde_json::from_value(
        json!({"kind": "anthropic", "auth": {"key": {"value": "sk-ant"}}, "anthropic": {"version": "2024-01-01"}}),
    )
    .unwrap();
    let provider = Provider::compile(&config, "p", false, &|_: &str| None).unwrap();
    assert_eq!(
        provider.extra_headers(),
        vec![("anthropic-version", "2024-01-01".to_string())]
    );
    assert_eq!(
        provider.credential_header(),
        Some(("x-api-key", "sk-ant".to_string()))
    );
    assert_eq!(
        provider.upstream_path(
            crate::api::Operation::ChatCompletions,
            Some("m"),
            Some(true)
        ),
        "/v1/messages"
    );
}

fn stream_events(name: &str, exchange: &Exchange) -> Vec<Value> {
    let bytes = fixture(name);
    let out = process_stream(
        AnthropicCodec.stream_decoder(exchange),
        &[bytes.as_bytes()],
        false,
    );
    crate::providers::test_support::events_json(&out)
}

#[test]
fn text_stream_becomes_chunks() {
    let events = stream_events("anthropic/stream_text.sse", &exchange(true));
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
               "model": "claude-sonnet-4-5",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    assert_eq!(
        events,
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Grüße"}), Value::Null),
            chunk(json!({"content": " aus Zürich 👋"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": "claude-sonnet-4-5", "choices": [],
                   "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn tool_stream_becomes_tool_call_deltas() {
    let events = stream_events("anthropic/stream_tool_use.sse", &exchange(true));
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["delta"])
        .collect();
    assert_eq!(deltas[1], &json!({"content": "Okay"}));
    assert_eq!(
        deltas[3],
        &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]})
    );
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        arguments,
        "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}"
    );
    let finish: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")]);
    assert_eq!(events[events.len() - 2]["usage"]["total_tokens"], 561);
}

#[test]
fn stream_cut_at_every_byte_gives_the_same_output() {
    for name in ["anthropic/stream_text.sse", "anthropic/stream_tool_use.sse"] {
        let bytes = fixture(name);
        let bytes = bytes.as_bytes();
        let whole = process_stream(
            AnthropicCodec.stream_decoder(&exchange(true)),
            &[bytes],
            true,
        );
        assert!(whole.ends_with(b"data: [DONE]\n\n"));
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let split = process_stream(
                AnthropicCodec.stream_decoder(&exchange(true)),
                &[a, b],
                true,
            );
            assert_eq!(split, whole, "{name} cut at {cut}");
        }
        let single = process_stream(
            AnthropicCodec.stream_decoder(&exchange(true)),
            &chunks_of(bytes, 1),
            true,
        );
        assert_eq!(single, whole, "{name} byte by byte");
    }
}

#[test]
fn stream_error_event_ends_the_stream_in_band() {
    let bytes = fixture("anthropic/stream_error.sse");
    let out = process_stream(
        AnthropicCodec.stream_decoder(&exchange(true)),
        &[bytes.as_bytes()],
        true,
    );
    let events = crate::providers::test_support::events_json(&out);
    assert_eq!(events[1]["error"]["code"], "overloaded_error");
    assert_eq!(events[1]["error"]["message"], "Overloaded");
    assert_eq!(events.last(), Some(&json!("[DONE]")));
}

#[test]
fn truncated_stream_ends_with_an_error_not_a_clean_done() {
    let bytes = fixture("anthropic/stream_text.sse");
    let cut = bytes.find("event: message_delta").unwrap();
    let out = process_stream(
        AnthropicCodec.stream_decoder(&exchange(true)),
        &[&bytes.as_bytes()[..cut]],
        true,
    );
    let events = crate::providers::test_support::events_json(&out);
    assert_eq!(
        events[events.len() - 2]["error"]["code"],
        "incomplete_upstream_stream"
    );
    assert_eq!(events.last(), Some(&json!("[DONE]")));
}

#[test]
fn usage_chunk_is_dropped_unless_asked_for() {
    let bytes = fixture("anthropic/stream_text.sse");
    let mut host = crate::host::RecordingHost::new();
    let mut processor = StreamProcessor::new(
        AnthropicCodec.stream_decoder(&exchange(true)),
        Vec::new(),
        true,
    );
    let out = processor.push(bytes.as_bytes(), true, &mut host).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("\"usage\""));
    assert_eq!(processor.usage(), Some(crate::usage::Usage::new(25, 15)));
}

/// `message_delta` usage is cumulative; a field it leaves out keeps its `message_start` value.
#[test]
fn stream_usage_fields_left_out_keep_their_start_value() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":8,\"output_tokens\":1}}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5,\"cache_read_input_tokens\":8}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let out = process_stream(
        AnthropicCodec.stream_decoder(&exchange(true)),
        &[stream.as_bytes()],
        false,
    );
    let events = crate::providers::test_support::events_json(&out);
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(
        *usage,
        json!({"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18,
               "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 2}})
    );
    // What the flow reads back from the translated chunk: both cache parts of the prompt.
    let read = crate::usage::from_json(
        serde_json::to_vec(&json!({ "usage": usage }))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        (
            read.prompt_tokens,
            read.cache_read_tokens,
            read.cache_write_tokens
        ),
        (13, 8, 2)
    );
}

#[test]
fn system_only_is_sent_as_the_turn_and_legacy_function_call_refused() {
    // Instructions alone (OpenAI answers them): they become the user turn.
    let body = encode_ok(json!({"messages": [
        {"role": "system", "content": "Be terse."}, {"role": "developer", "content": "Really."}
    ]}));
    assert_eq!(body.get("system"), None);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Really."}]}])
    );
    let err = encode_err(json!({"messages": [{"role": "system", "content": ""}]}));
    assert_eq!((err.status, err.code.as_str()), (400, "invalid_value"));
    assert!(err.message.contains("'messages'"), "{}", err.message);
    let err = encode_err(json!({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "function_call": {"name": "w", "arguments": "{}"}},
        {"role": "user", "content": "And?"}
    ]}));
    assert_eq!(
        (err.status, err.code.as_str()),
        (400, "unsupported_parameter")
    );
    assert!(
        err.message.contains("messages[1].function_call"),
        "{}",
        err.message
    );
}

#[test]
fn cache_control_parts_become_anthropic_cache_breakpoints() {
    let ephemeral = json!({"type": "ephemeral"});
    let body = encode_ok(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Long rules.", "cache_control": ephemeral}]},
        {"role": "user", "content": [{"type": "text", "text": "Doc", "cache_control": ephemeral}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "42", "cache_control": ephemeral}]}
    ]}));
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Long rules.", "cache_control": ephemeral}])
    );
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "text", "text": "Doc", "cache_control": ephemeral}, {"type": "text", "text": "Q?"}])
    );
    assert_eq!(
        body["messages"][2]["content"][0]["content"],
        json!([{"type": "text", "text": "42", "cache_control": ephemeral}])
    );
}

#[test]
fn normalize_gives_guards_the_decoded_arguments_and_joined_system() {
    let mut request = json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "pro"}, {"type": "text", "text": "ject"}]},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": "falcon"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "t", "type": "function",
            "function": {"name": "f", "arguments": "{ \"a\" : \"\\u0031\\u0032\" }"}}]}
    ]});
    let sent = encode_ok(request.clone());
    normalize(&mut request);
    assert_eq!(request["messages"][0]["content"], "project\n\nfalcon");
    assert_eq!(request["messages"][2]["content"], "");
    assert_eq!(
        request["messages"][3]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":\"12\"}"
    );
    // What the guards read is what is sent, and the translation does not change.
    assert_eq!(sent["system"], request["messages"][0]["content"]);
    assert_eq!(encode_ok(request), sent);
}

/// Arguments are always valid JSON: `{}` for a call streamed without pieces, the input
/// itself when the start event carries it whole, and never doubled.
#[test]
fn streamed_tool_arguments_are_always_json() {
    let event = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    };
    let stream: String = [
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "a", "name": "f", "input": {}}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "b", "name": "g", "input": {"x": 1}}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "c", "name": "h", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"y\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "2}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
        json!({"type": "message_stop"}),
    ]
    .into_iter()
    .map(event)
    .collect();
    let out = process_stream(
        AnthropicCodec.stream_decoder(&exchange(true)),
        &[stream.as_bytes()],
        false,
    );
    let mut arguments = [String::new(), String::new(), String::new()];
    for event in crate::providers::test_support::events_json(&out) {
        for call in event["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            arguments[index].push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(arguments, ["{}", "{\"x\":1}", "{\"y\":2}"]);
}
