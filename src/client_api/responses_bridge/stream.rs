//! `chat.completion.chunk` events → the Responses event stream.
//!
//! The first chunk opens the response (`response.created`, `response.in_progress`). Text
//! deltas open the `message` item and its `output_text` part on first use
//! (`response.output_item.added`, `response.content_part.added`) and become
//! `response.output_text.delta`; refusal deltas a `refusal` part and `response.refusal.delta`;
//! each new tool call (by its chat `index`) a `function_call` item whose argument pieces
//! become `response.function_call_arguments.delta`. Items stay open until the answer ends:
//! `[DONE]` (or the end of a stream that carried a `finish_reason`) closes every part and item
//! in output order (`.done` events with the whole text) and ends with `response.completed`,
//! or `response.incomplete` when the chat answer stopped on `length` or `content_filter`.
//! The usage chunk's usage is in that last event's response.
//!
//! An error event (`{"error":{...}}`, as the codecs write an upstream failure and a stream
//! cut short) ends the stream with the Responses `error` event (on which the OpenAI SDKs
//! raise, and which the gateway's error metric counts) and `response.failed` (the end Codex
//! reads; it retries), both carrying its code and message; so does a stream that ends before
//! any `finish_reason` (`incomplete_upstream_stream`). Nothing
//! follows the last event: the Responses stream has no `[DONE]`. Every event carries a
//! `sequence_number`, from 0 and increasing by one.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{
    function_call_item, message_item, refusal_part, response_object, status_of, text_part,
    usage_of, Echo, Ids,
};
use crate::error::ApiError;
use crate::providers::{Exchange, StreamDecoder};
use crate::sse::SseEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

#[derive(Debug)]
struct Part {
    kind: PartKind,
    text: String,
}

#[derive(Debug)]
enum Item {
    Message {
        id: String,
        parts: Vec<Part>,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        namespace: Option<String>,
    },
}

pub struct ResponsesStream {
    ids: Ids,
    /// What the response objects echo from the request.
    echo: Echo,
    model: String,
    created: u64,
    sequence: u64,
    started: bool,
    finished: bool,
    items: Vec<Item>,
    /// Output index of the message item, once text or a refusal arrived.
    message: Option<usize>,
    /// Chat tool-call index → output index of its `function_call` item (a lookup per
    /// argument piece stays logarithmic however many calls a hostile upstream opens).
    calls: BTreeMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl ResponsesStream {
    pub(crate) fn new(exchange: &Exchange, echo: Echo) -> Self {
        ResponsesStream {
            ids: Ids::new(exchange),
            echo,
            model: exchange.model.clone(),
            created: exchange.created,
            sequence: 0,
            started: false,
            finished: false,
            items: Vec::new(),
            message: None,
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// One event: `type` and `sequence_number` first, then `fields`.
    fn emit(&mut self, out: &mut Vec<SseEvent>, kind: &str, fields: Value) {
        let mut data = Map::new();
        data.insert("type".into(), Value::String(kind.to_string()));
        data.insert("sequence_number".into(), json!(self.sequence));
        if let Value::Object(fields) = fields {
            data.extend(fields);
        }
        self.sequence += 1;
        out.push(SseEvent {
            event: Some(kind.to_string()),
            data: Value::Object(data).to_string(),
        });
    }

    fn response(&self, status: &str, reason: Option<&str>, item_status: &str) -> Value {
        let output = self
            .items
            .iter()
            .map(|item| item_json(item, item_status))
            .collect();
        let mut response = response_object(
            &self.ids.response(),
            self.created,
            &self.model,
            status,
            reason,
            output,
            usage_of(self.usage.as_ref()),
        );
        self.echo.apply(&mut response);
        response
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.response("in_progress", None, "in_progress");
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.response("in_progress", None, "in_progress");
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// The message item's output index, opening it first if needed.
    fn message_index(&mut self, out: &mut Vec<SseEvent>) -> usize {
        if let Some(index) = self.message {
            return index;
        }
        let index = self.items.len();
        let id = self.ids.message();
        self.items.push(Item::Message {
            id: id.clone(),
            parts: Vec::new(),
        });
        self.message = Some(index);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(&id, "in_progress", Vec::new())}),
        );
        index
    }

    /// A text or refusal delta: appended to the message's last part of that kind, or to a
    /// new part when the last one is of the other kind.
    fn message_delta(&mut self, kind: PartKind, delta: &str, out: &mut Vec<SseEvent>) {
        let output_index = self.message_index(out);
        let Some(Item::Message { id, parts }) = self.items.get_mut(output_index) else {
            return;
        };
        let item_id = id.clone();
        let new_part = parts.last().is_none_or(|part| part.kind != kind);
        if new_part {
            parts.push(Part {
                kind,
                text: String::new(),
            });
        }
        let content_index = parts.len().saturating_sub(1);
        if let Some(part) = parts.last_mut() {
            part.text.push_str(delta);
        }
        if new_part {
            let part = match kind {
                PartKind::Text => text_part(""),
                PartKind::Refusal => refusal_part(""),
            };
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": output_index,
                       "content_index": content_index, "part": part}),
            );
        }
        match kind {
            PartKind::Text => self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": output_index,
                       "content_index": content_index, "delta": delta, "logprobs": []}),
            ),
            PartKind::Refusal => self.emit(
                out,
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": output_index,
                       "content_index": content_index, "delta": delta}),
            ),
        }
    }

    fn tool_call_delta(&mut self, call: &Value, out: &mut Vec<SseEvent>) {
        let chat_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let piece = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let output_index = match self.calls.get(&chat_index) {
            Some(index) => *index,
            None => {
                let index = self.items.len();
                let number = self.calls.len();
                let id = self.ids.function_call(number);
                let call_id = match call.get("id").and_then(Value::as_str) {
                    Some(call_id) if !call_id.is_empty() => call_id.to_string(),
                    _ => format!("call_{}_{number}", self.ids.suffix),
                };
                self.calls.insert(chat_index, index);
                let namespace = self.echo.namespace(name).map(str::to_string);
                let item = function_call_item(
                    &id,
                    "in_progress",
                    &call_id,
                    name,
                    "",
                    namespace.as_deref(),
                );
                self.items.push(Item::Call {
                    id,
                    call_id,
                    name: name.to_string(),
                    arguments: String::new(),
                    namespace,
                });
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                index
            }
        };
        let Some(Item::Call {
            id,
            name: call_name,
            arguments,
            ..
        }) = self.items.get_mut(output_index)
        else {
            return;
        };
        // A server that names the call only in a later piece: the done item has the name.
        if call_name.is_empty() && !name.is_empty() {
            *call_name = name.to_string();
        }
        if piece.is_empty() {
            return;
        }
        arguments.push_str(piece);
        let item_id = id.clone();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": piece}),
        );
    }

    /// Closes every part and item, in output order, then the response.
    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.finished = true;
        let (status, reason) = status_of(self.finish_reason.as_deref());
        let item_status = if status == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        let mut events = Vec::new();
        for (output_index, item) in self.items.iter().enumerate() {
            match item {
                Item::Message { id, parts } => {
                    for (content_index, part) in parts.iter().enumerate() {
                        let (kind, text_key, whole) = match part.kind {
                            PartKind::Text => {
                                ("response.output_text.done", "text", text_part(&part.text))
                            }
                            PartKind::Refusal => {
                                ("response.refusal.done", "refusal", refusal_part(&part.text))
                            }
                        };
                        let mut done = json!({"item_id": id, "output_index": output_index,
                                              "content_index": content_index});
                        if let Some(done) = done.as_object_mut() {
                            done.insert(text_key.into(), Value::String(part.text.clone()));
                            if part.kind == PartKind::Text {
                                done.insert("logprobs".into(), json!([]));
                            }
                        }
                        events.push((kind, done));
                        events.push((
                            "response.content_part.done",
                            json!({"item_id": id, "output_index": output_index,
                                   "content_index": content_index, "part": whole}),
                        ));
                    }
                }
                Item::Call { id, arguments, .. } => {
                    events.push((
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": output_index,
                               "arguments": arguments}),
                    ));
                }
            }
            events.push((
                "response.output_item.done",
                json!({"output_index": output_index, "item": item_json(item, item_status)}),
            ));
        }
        for (kind, fields) in events {
            self.emit(out, kind, fields);
        }
        let response = self.response(status, reason, item_status);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": response}));
    }

    /// Ends the stream with an `error` event (the Responses API's in-band error, as
    /// `ClientApi::write_error_event` writes it: the OpenAI SDKs raise on it) and then
    /// `response.failed` (the response's end, which Codex reads).
    fn fail(&mut self, error: &ApiError, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.finished = true;
        self.emit(out, "error", super::super::responses::error_event(error));
        let mut response = self.response("failed", None, "incomplete");
        if let Some(object) = response.as_object_mut() {
            object.insert(
                "error".into(),
                json!({"code": error.code, "message": error.message}),
            );
        }
        self.emit(out, "response.failed", json!({"response": response}));
    }
}

fn item_json(item: &Item, status: &str) -> Value {
    match item {
        Item::Message { id, parts } => {
            let content = parts
                .iter()
                .map(|part| match part.kind {
                    PartKind::Text => text_part(&part.text),
                    PartKind::Refusal => refusal_part(&part.text),
                })
                .collect();
            message_item(id, status, content)
        }
        Item::Call {
            id,
            call_id,
            name,
            arguments,
            namespace,
        } => function_call_item(id, status, call_id, name, arguments, namespace.as_deref()),
    }
}

impl StreamDecoder for ResponsesStream {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if self.finished {
            return Ok(());
        }
        if event.is_done_marker() {
            self.complete(out);
            return Ok(());
        }
        if event.data.trim().is_empty() {
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(&event.data).map_err(|_| {
            self.finished = true;
            ApiError::new(
                502,
                "api_error",
                "invalid_upstream_response",
                "The upstream stream could not be read.",
            )
        })?;
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            let field = |key: &str| error.get(key).and_then(Value::as_str);
            let error = ApiError::new(
                502,
                "api_error",
                field("code")
                    .or(field("type"))
                    .unwrap_or("upstream_stream_error"),
                field("message").unwrap_or("The upstream stream failed."),
            );
            self.fail(&error, out);
            return Ok(());
        }
        if !self.started {
            if let Some(model) = chunk
                .get("model")
                .and_then(Value::as_str)
                .filter(|model| !model.is_empty())
            {
                self.model = model.to_string();
            }
        }
        self.start(out);
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(usage.clone());
        }
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // One choice: the Responses request has no `n`.
        for choice in choices
            .iter()
            .filter(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        {
            let delta = choice.get("delta");
            let text = |key: &str| {
                delta
                    .and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .filter(|text| !text.is_empty())
                    .map(str::to_string)
            };
            if let Some(content) = text("content") {
                self.message_delta(PartKind::Text, &content, out);
            }
            if let Some(refusal) = text("refusal") {
                self.message_delta(PartKind::Refusal, &refusal, out);
            }
            if let Some(calls) = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
            {
                for call in calls {
                    self.tool_call_delta(call, out);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.finished {
            return;
        }
        if self.finish_reason.is_some() {
            // The answer ended; only the server's `[DONE]` is missing.
            self.complete(out);
        } else {
            let error = ApiError::new(
                502,
                "api_error",
                "incomplete_upstream_stream",
                "The upstream stream ended before the answer was complete.",
            );
            self.fail(&error, out);
        }
    }
}
