use serde_json::{json, Value};

use super::*;
use crate::api::Operation;
use crate::providers::test_support::{chunks_of, events_json, fixture, process_stream};

fn exchange(stream: bool) -> Exchange {
    Exchange {
        model: "gemini-2.5-flash".into(),
        client_stream: stream,
        upstream_stream: stream,
        created: 1_700_000_000,
        id: "chatcmpl-abc".into(),
        ..Default::default()
    }
}

fn provider(config: Value, wait_for_body: bool) -> Result<Provider, crate::config::ConfigError> {
    let config: crate::config::model::ProviderConfig = serde_json::from_value(config).unwrap();
    Provider::compile(&config, "p", wait_for_body, &|_: &str| None)
}

#[test]
fn roles_system_and_generation_config() {
    let body = encode(&json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Sky colour?"}]}
        ],
        "max_completion_tokens": 100, "temperature": 0.5, "top_p": 0.8, "top_k": 20,
        "stop": ["END", "STOP"], "n": 2, "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "seed": 42, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "user": "u-1", "stream": true, "stream_options": {"include_usage": true}
    }))
    .unwrap();
    assert_eq!(
        body,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello."}]},
                {"role": "user", "parts": [{"text": "Sky colour?"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "generationConfig": {
                "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.8, "topK": 20,
                "candidateCount": 2, "presencePenalty": 0.1, "frequencyPenalty": 0.2, "seed": 42,
                "stopSequences": ["END", "STOP"],
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
            }
        })
    );
    let plain = encode(&json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
    assert_eq!(
        plain,
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    );
}

#[test]
fn media_parts() {
    let body = encode(&json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.PNG?size=large"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    ]}]}))
    .unwrap();
    assert_eq!(
        body["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.PNG?size=large"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}
        ])
    );
    let error = encode(&json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/image"}}]}]}))
    .unwrap_err();
    assert_eq!(error.status, 400);
    assert!(error.message.contains("data: URL"), "{}", error.message);
}

#[test]
fn tools_calls_and_results() {
    let body = encode(&json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc_1~ts~SIG==", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_abc_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc_1~ts~SIG==", "content": "{\"temp\":18}"},
            {"role": "tool", "tool_call_id": "call_abc_2", "content": "noon"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}},
            {"type": "function", "function": {"name": "get_time"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": true
    }))
    .unwrap();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG=="},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}}
            ]}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather",
             "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}},
            {"name": "get_time"}
        ]}])
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        let body = encode(&json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}))
        .unwrap();
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"],
            json!({"mode": mode})
        );
    }
}

#[test]
fn what_cannot_be_translated_is_a_clear_400() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": user, "logprobs": true}), "'logprobs'"),
        (
            json!({"messages": user, "logit_bias": {"1": 2}}),
            "'logit_bias'",
        ),
        (
            json!({"messages": user, "parallel_tool_calls": false}),
            "parallel_tool_calls",
        ),
        (
            json!({"messages": user, "reasoning_effort": "high"}),
            "'reasoning_effort'",
        ),
        (
            json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}),
            "\"file\"",
        ),
        (
            json!({"messages": user, "response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"messages": user, "tool_choice": "required"}),
            "tool_choice",
        ),
    ];
    for (request, needle) in cases {
        let error = encode(&request).unwrap_err();
        assert_eq!(error.status, 400, "{request}");
        assert!(
            error.message.contains(needle),
            "{:?} should name {needle}",
            error.message
        );
    }
}

#[test]
fn text_answer_skips_thoughts_and_counts_them() {
    let answer = GeminiCodec
        .decode_response(
            fixture("gemini/answer_text.json").as_bytes(),
            &exchange(false),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        answer,
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering.", "refusal": null}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 32, "total_tokens": 41,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 22}}
        })
    );
}

#[test]
fn function_call_answer() {
    let answer = GeminiCodec
        .decode_response(
            fixture("gemini/answer_function_call.json").as_bytes(),
            &exchange(false),
        )
        .unwrap()
        .unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([
            {"id": "call_abc_1~ts~CiQB0e2Kb7xGq+sig/A==", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\",\"unit\":\"celsius\"}"}},
            {"id": "call_abc_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"zone\":\"CET\"}"}}
        ])
    );
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 61, "completion_tokens": 18, "total_tokens": 79})
    );
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    for (reason, tools, finish) in [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", true, "content_filter"),
        ("OTHER", false, "stop"),
    ] {
        assert_eq!(finish_reason(reason, tools), finish);
    }
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}});
    let answer = GeminiCodec
        .decode_response(blocked.to_string().as_bytes(), &exchange(false))
        .unwrap()
        .unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(answer["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn errors_keep_status_and_name() {
    let error = GeminiCodec.decode_error(429, fixture("gemini/error_429.json").as_bytes());
    assert_eq!(
        (
            error.status,
            error.kind,
            error.code.as_str(),
            error.message.as_str()
        ),
        (
            429,
            "rate_limit_error",
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota)."
        )
    );
    let error = GeminiCodec.decode_error(400, fixture("gemini/error_400_array.json").as_bytes());
    assert_eq!(
        (error.status, error.code.as_str()),
        (400, "INVALID_ARGUMENT")
    );
    assert!(error.message.starts_with("API key not valid"));
    let error = GeminiCodec.decode_error(503, b"upstream connect error");
    assert_eq!((error.status, error.code.as_str()), (503, "upstream_503"));
}

#[test]
fn paths_and_key_header() {
    let fixed = provider(
        json!({"kind": "gemini", "auth": {"key": {"value": "g-key"}}, "model": "gemini-2.5-flash"}),
        false,
    )
    .unwrap();
    assert_eq!(fixed.authority, "generativelanguage.googleapis.com");
    assert_eq!(
        fixed.credential_header(),
        Some(("x-goog-api-key", "g-key".to_string()))
    );
    assert_eq!(
        fixed.upstream_path(Operation::ChatCompletions, None, None),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        fixed.upstream_path(
            Operation::ChatCompletions,
            Some("gemini-2.5-flash"),
            Some(false)
        ),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        fixed.upstream_path(
            Operation::ChatCompletions,
            Some("gemini-2.5-flash"),
            Some(true)
        ),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    // Mode B writes the path before the body: the stream is forced, whatever the client asks.
    assert!(fixed.upstream_stream(false, false, true));
    assert!(!fixed.upstream_stream(false, false, false));
    assert!(fixed.upstream_stream(true, false, false));
    assert!(!fixed.upstream_stream(true, true, false));

    let open = provider(json!({"kind": "gemini", "auth": {"none": true}}), false).unwrap_err();
    assert_eq!(open.path, "p");
    let open = provider(json!({"kind": "gemini", "auth": {"none": true}}), true).unwrap();
    assert_eq!(
        open.upstream_path(
            Operation::ChatCompletions,
            Some("gemini-2.0-flash"),
            Some(false)
        ),
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    // The client's model goes into the path: it must not be able to change it.
    for bad in ["../x", "a/b", "m?alt=json", "..", "m#x", "m%2F"] {
        assert_eq!(open.check_model_name(bad).unwrap_err().status, 400, "{bad}");
    }
    assert!(open
        .check_model_name("gemini-2.5-pro-preview-06-05")
        .is_ok());

    let custom = provider(json!({"kind": "gemini", "auth": {"none": true}, "path": "/v1beta/models/gemini-pro:generateContent"}), false).unwrap();
    assert_eq!(
        custom.upstream_path(Operation::ChatCompletions, None, Some(true)),
        "/v1beta/models/gemini-pro:generateContent"
    );
    assert!(!custom.upstream_stream(false, false, true));
}

fn chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
           "model": "gemini-2.5-flash",
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
}

#[test]
fn text_stream_becomes_chunks() {
    let bytes = fixture("gemini/stream_text.sse");
    let out = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &[bytes.as_bytes()],
        false,
    );
    assert_eq!(
        events_json(&out),
        vec![
            chunk(
                json!({"role": "assistant", "content": "The sky"}),
                Value::Null
            ),
            chunk(json!({"content": " is blue — "}), Value::Null),
            chunk(json!({"content": "mostly ☀️."}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": "gemini-2.5-flash", "choices": [],
                   "usage": {"prompt_tokens": 8, "completion_tokens": 21, "total_tokens": 29,
                             "completion_tokens_details": {"reasoning_tokens": 12}}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn function_call_stream() {
    let bytes = fixture("gemini/stream_function_call.sse");
    let out = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &[bytes.as_bytes()],
        true,
    );
    assert_eq!(
        events_json(&out),
        vec![
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_abc_1~ts~CiQB0e2Kb7x", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]}),
                Value::Null
            ),
            chunk(json!({}), json!("tool_calls")),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn stream_cut_at_every_byte_gives_the_same_output() {
    let bytes = fixture("gemini/stream_text.sse");
    let bytes = bytes.as_bytes();
    let whole = process_stream(GeminiCodec.stream_decoder(&exchange(true)), &[bytes], false);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let split = process_stream(GeminiCodec.stream_decoder(&exchange(true)), &[a, b], false);
        assert_eq!(split, whole, "cut at {cut}");
    }
    let single = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &chunks_of(bytes, 1),
        false,
    );
    assert_eq!(single, whole);
}

#[test]
fn stream_errors_and_truncation() {
    let error = "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
    let out = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &[error.as_bytes()],
        true,
    );
    let events = events_json(&out);
    assert_eq!(events[0]["error"]["code"], "UNAVAILABLE");
    assert_eq!(events[1], json!("[DONE]"));

    let bytes = fixture("gemini/stream_text.sse");
    let cut = bytes.rfind("data:").unwrap();
    let out = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &[&bytes.as_bytes()[..cut]],
        true,
    );
    let events = events_json(&out);
    assert_eq!(
        events[events.len() - 2]["error"]["code"],
        "incomplete_upstream_stream"
    );
}

#[test]
fn several_candidates_stream_as_several_choices() {
    let stream = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"}],\"role\":\"model\"},\"index\":0},",
        "{\"content\":{\"parts\":[{\"text\":\"B\"}],\"role\":\"model\"},\"index\":1}]}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0},",
        "{\"content\":{\"parts\":[{\"text\":\"?\"}],\"role\":\"model\"},\"finishReason\":\"MAX_TOKENS\",\"index\":1}],",
        "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":4,\"totalTokenCount\":7}}\r\n\r\n",
    );
    let out = process_stream(
        GeminiCodec.stream_decoder(&exchange(true)),
        &[stream.as_bytes()],
        false,
    );
    let completion = crate::pipeline::aggregate::aggregate(&out, None).unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], "A!");
    assert_eq!(completion["choices"][1]["message"]["content"], "B?");
    assert_eq!(completion["choices"][1]["finish_reason"], "length");
    assert_eq!(completion["usage"]["total_tokens"], 7);
}

#[test]
fn replayed_calls_without_a_signature_get_the_placeholder_on_the_first() {
    let body = encode(&json!({"messages": [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            {"id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "{\"temp\": 18}"},
        {"role": "tool", "tool_call_id": "call_def", "content": "{\"time\": \"10:00\"}"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1~ts~c2lnbmVk", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1~ts~c2lnbmVk", "content": "later"}
    ]}))
    .unwrap();
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(parts[1].get("thoughtSignature").is_none());
    assert_eq!(
        body["contents"][3]["parts"][0]["thoughtSignature"],
        "c2lnbmVk"
    );
}

#[test]
fn system_only_is_sent_as_the_turn_and_legacy_function_call_refused() {
    let body = encode(&json!({"messages": [{"role": "system", "content": "Be terse."}]})).unwrap();
    assert_eq!(body.get("systemInstruction"), None);
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "Be terse."}]}])
    );
    let err = encode(&json!({"messages": [{"role": "developer", "content": []}]})).unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "invalid_value"));
    let err = encode(&json!({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "function_call": {"name": "w", "arguments": "{}"}}
    ]}))
    .unwrap_err();
    assert_eq!(
        (err.status, err.code.as_str()),
        (400, "unsupported_parameter")
    );
}

#[test]
fn normalize_gives_guards_the_tool_result_as_sent() {
    let mut request = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{\"q\": \"pr\\u006fject\"}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "{\"a\": \"\\u0031"}, {"type": "text", "text": "2\"}"}]},
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]});
    let sent = encode(&request).unwrap();
    normalize(&mut request);
    assert_eq!(
        request["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":\"project\"}"
    );
    assert_eq!(request["messages"][2]["content"], "{\"a\":\"12\"}");
    assert_eq!(request["messages"][3]["content"], "ab");
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"a": "12"})
    );
    assert_eq!(encode(&request).unwrap(), sent);
}
