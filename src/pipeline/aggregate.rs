//! The inverse of `client_api::openai::synthesize_stream`: folds a whole upstream SSE answer into one
//! OpenAI `chat.completion`, for a client (or a response stage) that needs the answer whole
//! when the provider streamed anyway (Gemini in mode B, whose path is chosen before the
//! body says whether the client streams).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::providers::StreamDecoder;
use crate::sse::{SseEvent, SseParser};

/// True when the buffered answer is a JSON document rather than an event stream.
pub fn looks_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Parses the SSE `body`, translates it with `decoder` (None: it already is OpenAI SSE)
/// and merges the chunks. An error event in the stream becomes the error.
pub fn aggregate(body: &[u8], decoder: Option<Box<dyn StreamDecoder>>) -> Result<Value, ApiError> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(body, &mut events);
    parser.finish(&mut events);
    let chunks = match decoder {
        None => events,
        Some(mut decoder) => {
            let mut chunks: Vec<SseEvent> = Vec::with_capacity(events.len());
            for event in &events {
                decoder.on_event(event, &mut chunks)?;
            }
            decoder.finish(&mut chunks);
            chunks
        }
    };
    let mut completion = Completion::default();
    for chunk in chunks.iter().filter(|c| !c.is_done_marker()) {
        let Ok(chunk) = serde_json::from_str::<Value>(&chunk.data) else {
            continue;
        };
        if chunk.get("error").is_some() {
            // The stream broke off or carried an error after a 200: a bad gateway answer.
            return Err(crate::error::upstream_error(
                502,
                chunk.to_string().as_bytes(),
                "upstream",
            ));
        }
        completion.add(&chunk);
    }
    Ok(completion.into_json())
}

#[derive(Default)]
struct Choice {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    /// By tool-call index: id, name, arguments.
    tool_calls: BTreeMap<u64, (Value, String, String)>,
    finish_reason: Option<Value>,
}

#[derive(Default)]
struct Completion {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
}

impl Completion {
    fn add(&mut self, chunk: &Value) {
        for (slot, key) in [
            (&mut self.id, "id"),
            (&mut self.created, "created"),
            (&mut self.model, "model"),
        ] {
            if slot.is_none() {
                *slot = chunk.get(key).cloned();
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for choice in choices {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let entry = self.choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                entry.finish_reason = Some(reason.clone());
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
                entry.role = Some(role.clone());
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                entry.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                entry.refusal.get_or_insert_with(String::new).push_str(text);
            }
            let calls = delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for call in calls {
                let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let slot = entry
                    .tool_calls
                    .entry(call_index)
                    .or_insert_with(|| (Value::Null, String::new(), String::new()));
                if let Some(id) = call.get("id").filter(|id| !id.is_null()) {
                    slot.0 = id.clone();
                }
                let function = call.get("function");
                if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
                    slot.1.push_str(name);
                }
                if let Some(arguments) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                {
                    slot.2.push_str(arguments);
                }
            }
        }
    }

    fn into_json(self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, choice)| {
                let mut message = Map::new();
                message.insert(
                    "role".into(),
                    choice.role.unwrap_or_else(|| json!("assistant")),
                );
                message.insert("content".into(), json!(choice.content));
                message.insert("refusal".into(), json!(choice.refusal));
                if !choice.tool_calls.is_empty() {
                    let calls: Vec<Value> = choice
                        .tool_calls
                        .into_values()
                        .map(|(id, name, arguments)| {
                            json!({"id": id, "type": "function",
                                   "function": {"name": name, "arguments": arguments}})
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": choice.finish_reason.unwrap_or(Value::Null),
                })
            })
            .collect();
        let mut completion = json!({
            "id": self.id.unwrap_or(Value::Null),
            "object": "chat.completion",
            "created": self.created.unwrap_or(Value::Null),
            "model": self.model.unwrap_or(Value::Null),
            "choices": choices,
        });
        if let (Some(object), Some(usage)) = (completion.as_object_mut(), self.usage) {
            object.insert("usage".into(), usage);
        }
        completion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_openai_chunks_with_tool_calls_and_usage() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        let completion = aggregate(stream.as_bytes(), None).unwrap();
        assert_eq!(
            completion,
            json!({
                "id": "c1", "object": "chat.completion", "created": 5, "model": "m",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": "Hello", "refusal": null,
                        "tool_calls": [{"id": "call_1", "type": "function",
                                        "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })
        );
    }

    #[test]
    fn an_error_event_is_the_answer() {
        let stream = "data: {\"error\":{\"message\":\"boom\",\"type\":\"api_error\",\"code\":\"x\"}}\n\ndata: [DONE]\n\n";
        let error = aggregate(stream.as_bytes(), None).unwrap_err();
        assert_eq!((error.status, error.message.as_str()), (502, "boom"));
    }

    #[test]
    fn json_or_stream() {
        assert!(looks_like_json(b"  {\"a\":1}"));
        assert!(looks_like_json(b"[{}]"));
        assert!(!looks_like_json(b"data: {}\n\n"));
        assert!(!looks_like_json(b""));
    }
}
