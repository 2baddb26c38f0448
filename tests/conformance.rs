//! Replays the recorded provider answers and peer cases in `../shared/conformance/` (read in
//! place, never copied: see its README) through the whole pipeline (`Flow` +
//! `RecordingHost`) on `anthropic` and `gemini` routes, and checks each case's expectation:
//! `expect_upstream` (path, headers, body, `body_subset`, JSON pointers, absent pointers),
//! `expect_refused` (status, code), and `expect` (the client's choices, usage, errors, in-band
//! stream errors). Every answer, chunk and error the filter produces is validated against the
//! official OpenAI schemas in `schemas/openai-chat.json` with a small validator for the
//! subset of JSON Schema they use (no dependency: the subset is small and fixed).
//!
//! Cases whose expectation aigate does not meet on purpose are in `SKIPPED`, with the reason.
//! Without the folder (a clone without `shared/` beside it) the test says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::Plan;
use serde_json::{json, Value};

mod support;

/// Fixtures (provider/direction/name) whose expectation aigate does not meet, and why.
const SKIPPED: &[(&str, &str)] = &[
    (
        "anthropic/request/aigw-messages-tool-text-result",
        "a string tool message goes out as a string tool_result content; the peer wraps it in \
         one text block (Anthropic takes both forms)",
    ),
    (
        "anthropic/request/aigw-messages-two-tool-results-one-turn",
        "as above: string tool_result content instead of one text block, both Anthropic's forms",
    ),
];

fn root() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    path.join("fixtures").is_dir().then_some(path)
}

// ---------------------------------------------------------------- the flow

fn plan(provider: &str, model: &str, mode_a: bool) -> Rc<Plan> {
    let mut config = match provider {
        "anthropic" => json!({"kind": "anthropic", "auth": {"key": {"value": "sk-ant-test"}}}),
        _ => json!({"kind": "gemini", "auth": {"key": {"value": "g-test"}}}),
    };
    if !mode_a {
        config["model"] = json!(model); // mode B needs the model in the config (Gemini path)
    }
    let config = json!({
        "allow_on_headers_stop_iteration": mode_a,
        "routes": [{"name": "llm", "match": {"route_name": "llm"}, "provider": config}],
    });
    support::compile(&config, &support::no_env)
}

fn send(plan: &Rc<Plan>, body: &Value) -> (Flow, RecordingHost) {
    let body = body.to_string().into_bytes();
    let length = body.len().to_string();
    let mut host = support::request_host(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        body,
    );
    host.set_property_value(&["xds", "route_name"], b"llm");
    let mut flow = Flow::new(Rc::clone(plan));
    support::send_whole(&mut flow, &mut host);
    (flow, host)
}

/// The upstream answer in two pieces (cut in the middle); what the client receives.
fn respond(
    flow: &mut Flow,
    host: &mut RecordingHost,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let half = body.len() / 2;
    support::respond(
        flow,
        host,
        status,
        content_type,
        &[&body[..half], &body[half..]],
    )
}

// ---------------------------------------------------------------- JSON Schema subset

struct Schemas(Value);

impl Schemas {
    fn check(&self, name: &str, value: &Value) -> Result<(), String> {
        let schema = json!({"$ref": format!("#/components/schemas/{name}")});
        let mut errors = Vec::new();
        self.validate(&schema, value, "", &mut errors);
        match errors.is_empty() {
            true => Ok(()),
            false => Err(format!("not a valid {name}: {}", errors.join("; "))),
        }
    }

    fn resolve<'a>(&'a self, reference: &str) -> &'a Value {
        let pointer = reference.strip_prefix('#').unwrap_or(reference);
        self.0
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {reference}"))
    }

    fn valid(&self, schema: &Value, value: &Value) -> bool {
        let mut errors = Vec::new();
        self.validate(schema, value, "", &mut errors);
        errors.is_empty()
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            return; // `true` / `{}`
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            self.validate(self.resolve(reference), value, at, errors);
        }
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(sub, value, at, errors);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|sub| self.valid(sub, value)) {
                errors.push(format!("{at}: matches none of anyOf"));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one.iter().filter(|sub| self.valid(sub, value)).count();
            if matching != 1 {
                errors.push(format!("{at}: matches {matching} of oneOf"));
            }
        }
        if let Some(kind) = schema.get("type") {
            let kinds: Vec<&str> = match kind {
                Value::String(kind) => vec![kind.as_str()],
                Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let fits = |kind: &str| match kind {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                "null" => value.is_null(),
                _ => true,
            };
            if !kinds.iter().any(|kind| fits(kind)) {
                errors.push(format!("{at}: {value} is not of type {kind}"));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                errors.push(format!("{at}: {value} is not one of {options:?}"));
            }
        }
        if let (Some(max), Some(text)) = (
            schema.get("maxLength").and_then(Value::as_u64),
            value.as_str(),
        ) {
            if text.chars().count() as u64 > max {
                errors.push(format!("{at}: longer than {max}"));
            }
        }
        if let Some(number) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if number < min {
                    errors.push(format!("{at}: {number} < {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if number > max {
                    errors.push(format!("{at}: {number} > {max}"));
                }
            }
        }
        if let Some(items) = value.as_array() {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    errors.push(format!("{at}: more than {max} items"));
                }
            }
            if let Some(item) = schema.get("items") {
                for (index, value) in items.iter().enumerate() {
                    self.validate(item, value, &format!("{at}/{index}"), errors);
                }
            }
        }
        if let Some(object) = value.as_object() {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: '{name}' is a required property"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, value) in object {
                let at = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => self.validate(property, value, &at, errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: additional property"))
                        }
                        Some(extra @ Value::Object(_)) => self.validate(extra, value, &at, errors),
                        _ => {}
                    },
                }
            }
        }
    }
}

#[test]
fn the_schema_validator_can_fail() {
    let Some(root) = root() else {
        eprintln!("SKIP: ../shared/conformance is absent");
        return;
    };
    let schemas = schemas(&root);
    let good = json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]});
    schemas
        .check("CreateChatCompletionStreamResponse", &good)
        .unwrap();
    for bad in [
        json!({"object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}),
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}),
        json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "done"}]}),
        json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistantassistant"}, "finish_reason": null}]}),
    ] {
        assert!(
            schemas
                .check("CreateChatCompletionStreamResponse", &bad)
                .is_err(),
            "{bad}"
        );
    }
}

fn schemas(root: &Path) -> Schemas {
    let text = std::fs::read_to_string(root.join("schemas/openai-chat.json")).unwrap();
    Schemas(serde_json::from_str(&text).unwrap())
}

// ---------------------------------------------------------------- expectations

/// `expected` is contained in `actual` (objects: every expected member; arrays: same length,
/// item by item; `{"$present": true}`: anything).
fn subset(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), _) if e.get("$present") == Some(&Value::Bool(true)) => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let actual = a.get(key).ok_or_else(|| format!("{at}/{key}: missing"))?;
                subset(value, actual, &format!("{at}/{key}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .try_for_each(|(i, (e, a))| subset(e, a, &format!("{at}/{i}"))),
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        _ if expected == actual => Ok(()),
        _ => Err(format!("{at}: expected {expected}, got {actual}")),
    }
}

/// The expected body in aigate's equivalent form (see `same_body`).
fn comparable(expected: &Value) -> Value {
    let mut expected = expected.clone();
    if let Some(blocks) = expected.get("system").and_then(Value::as_array) {
        let texts: Option<Vec<&str>> = blocks
            .iter()
            .map(|b| match b.as_object() {
                Some(o) if o.len() == 2 && o.get("type") == Some(&json!("text")) => {
                    o.get("text").and_then(Value::as_str)
                }
                _ => None,
            })
            .collect();
        if let Some(texts) = texts {
            expected["system"] = json!(texts.join("\n\n"));
        }
    }
    expected
}

/// Exactly equal, but for the Gemini tool schema field: the peers write `parameters`
/// (OpenAPI subset), aigate `parametersJsonSchema`; both are generateContent fields.
fn same_body(expected: &Value, actual: &Value) -> Result<(), String> {
    let mut expected = expected.clone();
    if let Some(tools) = expected.get_mut("tools").and_then(Value::as_array_mut) {
        for tool in tools {
            for declaration in tool
                .get_mut("functionDeclarations")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(object) = declaration.as_object_mut() {
                    if let Some(parameters) = object.remove("parameters") {
                        object.insert("parametersJsonSchema".into(), parameters);
                    }
                }
            }
        }
    }
    // Anthropic `system` as plain text blocks is the same text joined with a blank line
    // (the fixtures' notes: "compared as one text").
    let expected = comparable(&expected);
    subset(&expected, actual, "")?;
    subset(actual, &expected, "").map_err(|e| format!("unexpected: {e}"))
}

fn check_upstream(expect: &Value, host: &RecordingHost) -> Result<(), String> {
    if let Some(path) = expect.get("path").and_then(Value::as_str) {
        let actual = host.request_header(":path");
        if actual != Some(path) {
            return Err(format!("path {actual:?}, expected {path}"));
        }
    }
    for (name, value) in expect
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let actual = host.request_header(name);
        match (value.as_str(), actual) {
            (Some("<redacted>"), Some(_)) => {}
            (Some(value), Some(actual)) if value == actual => {}
            _ => return Err(format!("header {name}: {actual:?}, expected {value}")),
        }
    }
    let body: Value = serde_json::from_slice(&host.request_body)
        .map_err(|e| format!("upstream body is not JSON: {e}"))?;
    if let Some(expected) = expect.get("body") {
        same_body(expected, &body).map_err(|e| format!("body: {e}\n  sent {body}"))?;
    }
    if let Some(expected) = expect.get("body_subset") {
        let expected = &comparable(expected);
        subset(expected, &body, "").map_err(|e| format!("body: {e}\n  sent {body}"))?;
    }
    check_pointers(expect.get("pointers"), &body)?;
    for pointer in expect
        .get("absent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if body.pointer(pointer).is_some() {
            return Err(format!("{pointer} is present\n  sent {body}"));
        }
    }
    Ok(())
}

fn check_pointers(pointers: Option<&Value>, body: &Value) -> Result<(), String> {
    for (pointer, expected) in pointers.and_then(Value::as_object).into_iter().flatten() {
        let actual = body
            .pointer(pointer)
            .ok_or_else(|| format!("{pointer} is absent\n  sent {body}"))?;
        subset(expected, actual, pointer).map_err(|e| format!("{e}\n  sent {body}"))?;
    }
    Ok(())
}

/// What the client was answered, per choice, whether JSON or a stream.
#[derive(Debug, Default)]
struct Answer {
    choices: Vec<Choice>,
    usage: Option<Value>,
    stream_error: Option<Value>,
}

#[derive(Debug, Default)]
struct Choice {
    index: u64,
    content: Option<String>,
    finish_reason: Option<String>,
    /// id, name, arguments.
    tool_calls: Vec<(String, String, String)>,
}

fn choice(answer: &mut Answer, index: u64) -> &mut Choice {
    if let Some(position) = answer.choices.iter().position(|c| c.index == index) {
        return &mut answer.choices[position];
    }
    answer.choices.push(Choice {
        index,
        ..Default::default()
    });
    answer.choices.last_mut().unwrap()
}

fn read_json_answer(body: &Value, schemas: &Schemas) -> Result<Answer, String> {
    schemas.check("CreateChatCompletionResponse", body)?;
    let mut answer = Answer {
        usage: body.get("usage").cloned(),
        ..Default::default()
    };
    for item in body["choices"].as_array().into_iter().flatten() {
        let message = &item["message"];
        answer.choices.push(Choice {
            index: item["index"].as_u64().unwrap_or_default(),
            content: message["content"].as_str().map(str::to_string),
            finish_reason: item["finish_reason"].as_str().map(str::to_string),
            tool_calls: message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|call| {
                    let text =
                        |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or_default();
                    (
                        text("/id").to_string(),
                        text("/function/name").to_string(),
                        text("/function/arguments").to_string(),
                    )
                })
                .collect(),
        });
    }
    Ok(answer)
}

fn read_stream(bytes: &[u8], schemas: &Schemas) -> Result<Answer, String> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?;
    let mut answer = Answer::default();
    let mut done = false;
    for block in text.split("\n\n").filter(|block| !block.trim().is_empty()) {
        let data = block
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .ok_or_else(|| format!("an event without data: {block:?}"))?;
        if done {
            return Err(format!("an event after [DONE]: {data}"));
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if chunk.get("error").is_some() {
            schemas.check("ErrorResponse", &chunk)?;
            answer.stream_error = Some(chunk["error"].clone());
            continue;
        }
        schemas.check("CreateChatCompletionStreamResponse", &chunk)?;
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            answer.usage = Some(usage.clone());
        }
        for item in chunk["choices"].as_array().into_iter().flatten() {
            let index = item["index"].as_u64().unwrap_or_default();
            let delta = &item["delta"];
            let choice = choice(&mut answer, index);
            if let Some(role) = delta.get("role") {
                if role != "assistant" || choice.content.is_some() {
                    return Err(format!("a second or odd role chunk: {data}"));
                }
            }
            if let Some(piece) = delta["content"].as_str() {
                choice
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(piece);
            }
            if let Some(reason) = item["finish_reason"].as_str() {
                if choice.finish_reason.is_some() {
                    return Err(format!("a second finish_reason chunk: {data}"));
                }
                choice.finish_reason = Some(reason.to_string());
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let at = call["index"]
                    .as_u64()
                    .ok_or("a tool call delta without index")? as usize;
                if at == choice.tool_calls.len() {
                    choice.tool_calls.push(Default::default());
                }
                let entry = choice
                    .tool_calls
                    .get_mut(at)
                    .ok_or_else(|| format!("tool call index {at} out of order"))?;
                if let Some(id) = call["id"].as_str() {
                    entry.0 = id.to_string();
                }
                if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                    entry.1 = name.to_string();
                }
                if let Some(piece) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    entry.2.push_str(piece);
                }
            }
        }
    }
    if !done {
        return Err("the stream did not end with [DONE]".into());
    }
    // A role chunk's empty content is no content.
    for choice in &mut answer.choices {
        if choice.content.as_deref() == Some("") {
            choice.content = None;
        }
    }
    Ok(answer)
}

fn check_answer(expect: &Value, answer: &Answer) -> Result<(), String> {
    for (position, expected) in expect["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let index = expected["index"].as_u64().unwrap_or(position as u64);
        let actual = answer
            .choices
            .iter()
            .find(|c| c.index == index)
            .ok_or_else(|| format!("no choice {index}: {answer:?}"))?;
        if let Some(content) = expected.get("content") {
            let got = actual.content.as_deref().map_or(Value::Null, |c| json!(c));
            if *content != got {
                return Err(format!("choice {index} content {got}, expected {content}"));
            }
        }
        if let Some(reason) = expected.get("finish_reason") {
            let got = actual
                .finish_reason
                .as_deref()
                .map_or(Value::Null, |c| json!(c));
            if *reason != got {
                return Err(format!(
                    "choice {index} finish_reason {got}, expected {reason}"
                ));
            }
        }
        if let Some(calls) = expected.get("tool_calls").and_then(Value::as_array) {
            if calls.len() != actual.tool_calls.len() {
                return Err(format!(
                    "choice {index} tool calls {:?}, expected {calls:?}",
                    actual.tool_calls
                ));
            }
            for (call, (id, name, arguments)) in calls.iter().zip(&actual.tool_calls) {
                let parsed: Value = serde_json::from_str(arguments)
                    .map_err(|_| format!("arguments are not JSON: {arguments:?}"))?;
                if !parsed.is_object() {
                    return Err(format!("arguments are not an object: {arguments:?}"));
                }
                if call.get("name").is_some_and(|n| n != name) {
                    return Err(format!("tool name {name}, expected {}", call["name"]));
                }
                if let Some(expected) = call.get("arguments") {
                    if *expected != parsed {
                        return Err(format!("arguments {parsed}, expected {expected}"));
                    }
                }
                if call.get("id").is_some_and(|i| i != id) {
                    return Err(format!("tool id {id}, expected {}", call["id"]));
                }
                if let Some(part) = call.get("id_contains").and_then(Value::as_str) {
                    if !id.contains(part) {
                        return Err(format!("tool id {id} lacks {part}"));
                    }
                }
            }
        }
    }
    if let Some(expected) = expect.get("usage") {
        let usage = answer.usage.as_ref().ok_or("no usage")?;
        let got = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
        for (name, pointer) in [
            ("prompt_tokens", "/prompt_tokens"),
            ("completion_tokens", "/completion_tokens"),
            ("total_tokens", "/total_tokens"),
            ("cached_tokens", "/prompt_tokens_details/cached_tokens"),
            (
                "reasoning_tokens",
                "/completion_tokens_details/reasoning_tokens",
            ),
        ] {
            if let Some(value) = expected.get(name).and_then(Value::as_u64) {
                if got(pointer) != value {
                    return Err(format!(
                        "usage {name} {}, expected {value} (usage {usage})",
                        got(pointer)
                    ));
                }
            }
        }
    }
    if let Some(expected) = expect.get("stream_error") {
        let error = answer.stream_error.as_ref().ok_or("no in-band error")?;
        subset(expected, error, "stream_error")?;
    }
    Ok(())
}

fn check_error(
    expect: &Value,
    status: u16,
    client: &[u8],
    schemas: &Schemas,
) -> Result<(), String> {
    if let Some(expected) = expect.get("status").and_then(Value::as_u64) {
        if u64::from(status) != expected {
            return Err(format!(
                "status {status}, expected {expected}: {}",
                String::from_utf8_lossy(client)
            ));
        }
    }
    let body: Value = serde_json::from_slice(client)
        .map_err(|_| format!("the error is not JSON: {}", String::from_utf8_lossy(client)))?;
    schemas.check("ErrorResponse", &body)?;
    let mut expected = expect.get("error").cloned().unwrap_or(json!({}));
    let contains = expected
        .as_object_mut()
        .and_then(|e| e.remove("message_contains"));
    subset(&expected, &body["error"], "error")?;
    if let Some(part) = contains.as_ref().and_then(Value::as_str) {
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if !message.contains(part) {
            return Err(format!("error message {message:?} lacks {part:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- one case

fn run_case(root: &Path, case: &Value, schemas: &Schemas) -> Result<(), String> {
    let provider = case["provider"].as_str().unwrap_or_default();
    let direction = case["direction"].as_str().unwrap_or_default();
    let mut request = case["request"].clone();
    let model = request["model"].as_str().unwrap_or("model").to_string();
    let mode_a = case.get("mode").and_then(Value::as_str) != Some("B");
    let plan = plan(provider, &model, mode_a);
    let expect = case.get("expect").cloned().unwrap_or(Value::Null);
    let streams = request["stream"] == json!(true);
    if streams
        && direction == "stream"
        && expect.get("usage").is_some()
        && request.get("stream_options").is_none()
    {
        request["stream_options"] = json!({"include_usage": true});
    }
    let (mut flow, mut host) = send(&plan, &request);
    if let Some(refused) = case.get("expect_refused") {
        let reply = host.local_response.as_ref().ok_or_else(|| {
            format!(
                "sent, expected a refusal: {}",
                String::from_utf8_lossy(&host.request_body)
            )
        })?;
        return check_error(refused, reply.status, &reply.body, schemas).and_then(
            |()| match refused.get("code") {
                Some(code) => {
                    let body: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                    if body["error"]["code"] == *code {
                        Ok(())
                    } else {
                        Err(format!("code {}, expected {code}", body["error"]["code"]))
                    }
                }
                None => Ok(()),
            },
        );
    }
    if let Some(reply) = &host.local_response {
        return Err(format!(
            "refused {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    if let Some(expected) = case.get("expect_upstream") {
        check_upstream(expected, &host)?;
    }
    let Some(upstream) = case.get("upstream").and_then(Value::as_str) else {
        return Ok(());
    };
    let mut body = std::fs::read(root.join(upstream)).map_err(|e| format!("{upstream}: {e}"))?;
    if case.get("upstream_crlf") == Some(&json!(true)) && !body.windows(2).any(|w| w == b"\r\n") {
        body = String::from_utf8_lossy(&body)
            .replace('\n', "\r\n")
            .into_bytes();
    }
    let status = case["upstream_status"].as_u64().unwrap_or(200) as u16;
    let sse = upstream.ends_with(".sse");
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    let client = respond(&mut flow, &mut host, status, content_type, &body);
    let client_status = host
        .response_header_value(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .or_else(|| host.local_response.as_ref().map(|r| r.status))
        .unwrap_or(status);
    if direction == "error" {
        let client = match &host.local_response {
            Some(reply) => reply.body.clone(),
            None => client,
        };
        return check_error(&expect, client_status, &client, schemas);
    }
    let answer = if streams {
        read_stream(&client, schemas)?
    } else {
        let json: Value = serde_json::from_slice(&client)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&client)))?;
        read_json_answer(&json, schemas)?
    };
    check_answer(&expect, &answer)?;
    if let Some(roundtrip) = case.get("roundtrip") {
        let choice = answer.choices.first().ok_or("no choice to replay")?;
        let calls: Vec<Value> = choice
            .tool_calls
            .iter()
            .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
            .collect();
        let mut next = case["request"].clone();
        let messages = next["messages"].as_array_mut().ok_or("no messages")?;
        messages.push(json!({"role": "assistant", "content": choice.content, "tool_calls": calls}));
        for ((id, _, _), result) in choice
            .tool_calls
            .iter()
            .zip(roundtrip["tool_results"].as_array().into_iter().flatten())
        {
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
        }
        let (_, host) = send(&plan, &next);
        if let Some(reply) = &host.local_response {
            return Err(format!(
                "replay refused: {}",
                String::from_utf8_lossy(&reply.body)
            ));
        }
        let body: Value = serde_json::from_slice(&host.request_body).map_err(|e| e.to_string())?;
        check_pointers(roundtrip.get("expect_pointers"), &body)?;
    }
    Ok(())
}

#[test]
fn recorded_provider_cases_replay() {
    let Some(root) = root() else {
        eprintln!("SKIP: ../shared/conformance is absent (CI puts shared/ beside the clone)");
        return;
    };
    let schemas = schemas(&root);
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut skipped = 0;
    for provider in ["anthropic", "gemini"] {
        for direction in ["request", "response", "stream", "error"] {
            let folder = root.join("fixtures").join(provider).join(direction);
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for path in names
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
            {
                let name = format!(
                    "{provider}/{direction}/{}",
                    path.file_stem().unwrap().to_string_lossy()
                );
                if SKIPPED.iter().any(|(skip, _)| *skip == name) {
                    skipped += 1;
                    continue;
                }
                let case: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                match run_case(&root, &case, &schemas) {
                    Ok(()) => passed += 1,
                    Err(error) => failures.push(format!("{name}: {error}")),
                }
            }
        }
    }
    eprintln!(
        "conformance: {passed} passed, {skipped} skipped, {} failed",
        failures.len()
    );
    for (name, _) in SKIPPED {
        let path = root.join("fixtures").join(format!("{name}.json"));
        assert!(
            path.is_file(),
            "skip list names a case that does not exist: {name}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed > 100, "only {passed} cases ran");
}
