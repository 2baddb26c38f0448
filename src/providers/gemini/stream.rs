//! Gemini's `streamGenerateContent?alt=sse` → OpenAI `chat.completion.chunk` events.
//!
//! Every event is a partial `GenerateContentResponse`: text parts become content deltas,
//! a `functionCall` part arrives whole and becomes one tool-call delta, `finishReason`
//! becomes `finish_reason`, and the last `usageMetadata` seen becomes the usage chunk
//! written before `[DONE]` when the stream ends (Gemini sends no end marker of its own).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{finish_reason, is_thought, tool_call_id, usage_counts, NAME};
use crate::error::ApiError;
use crate::providers::codec::{Exchange, StreamDecoder};
use crate::providers::common::{self, ChunkWriter, TokenCounts};
use crate::sse::SseEvent;

#[derive(Default)]
struct Candidate {
    role_sent: bool,
    /// One `finish_reason` per choice, even if `finishReason` comes again.
    finish_sent: bool,
    tools: usize,
}

pub struct GeminiStream {
    chunks: ChunkWriter,
    exchange_id: String,
    /// By candidate index (`n` > 1 gives several).
    candidates: BTreeMap<u64, Candidate>,
    calls: usize,
    counts: TokenCounts,
    finished: bool,
    ended: bool,
}

impl GeminiStream {
    pub fn new(exchange: &Exchange) -> Self {
        GeminiStream {
            chunks: ChunkWriter::new(exchange),
            exchange_id: exchange.id.clone(),
            candidates: BTreeMap::new(),
            calls: 0,
            counts: TokenCounts::default(),
            finished: false,
            ended: false,
        }
    }

    fn candidate(&mut self, index: u64) -> &mut Candidate {
        self.candidates.entry(index).or_default()
    }

    /// A delta for candidate `index`, with the role on its first delta.
    fn delta(&mut self, index: u64, mut delta: Value, finish: Option<&str>) -> SseEvent {
        let candidate = self.candidate(index);
        if !candidate.role_sent {
            candidate.role_sent = true;
            if let Some(object) = delta.as_object_mut() {
                object.insert("role".into(), json!("assistant"));
            }
        }
        self.chunks.delta(index, delta, finish)
    }

    fn on_candidate(&mut self, position: usize, candidate: &Value, out: &mut Vec<SseEvent>) {
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts.iter().filter(|p| !is_thought(p)) {
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                if !text.is_empty() {
                    let event = self.delta(index, json!({"content": text}), None);
                    out.push(event);
                }
            } else if let Some(call) = part.get("functionCall") {
                self.calls += 1;
                let id = tool_call_id(&self.exchange_id, self.calls, part);
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                let tool = {
                    let candidate = self.candidate(index);
                    candidate.tools += 1;
                    candidate.tools - 1
                };
                let delta = json!({"tool_calls": [{"index": tool, "id": id, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]});
                let event = self.delta(index, delta, None);
                out.push(event);
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            if std::mem::replace(&mut self.candidate(index).finish_sent, true) {
                return;
            }
            let called_tools = self.candidate(index).tools > 0;
            let event = self.delta(index, json!({}), Some(finish_reason(reason, called_tools)));
            out.push(event);
            self.finished = true;
        }
    }
}

impl StreamDecoder for GeminiStream {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if self.ended {
            return Ok(());
        }
        let data: Value =
            serde_json::from_str(&event.data).map_err(|_| common::invalid_upstream(NAME))?;
        if let Some(error) = data.get("error") {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (400..600).contains(code))
                .unwrap_or(502);
            return Err(super::decode_error(status, event.data.as_bytes()));
        }
        usage_counts(&data, &mut self.counts);
        let candidates = data
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (position, candidate) in candidates.iter().enumerate() {
            self.on_candidate(position, candidate, out);
        }
        let blocked = data
            .get("promptFeedback")
            .and_then(|f| f.get("blockReason"))
            .is_some();
        if candidates.is_empty() && blocked {
            let event = self.delta(0, json!({"content": null}), Some("content_filter"));
            out.push(event);
            self.finished = true;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.finished {
            out.push(self.chunks.usage(self.counts.to_json()));
            out.push(common::done());
        } else {
            common::incomplete_stream(NAME, out);
        }
    }
}
