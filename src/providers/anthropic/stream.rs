//! Anthropic's event stream → OpenAI `chat.completion.chunk` events.
//!
//! `message_start` → the role chunk (and input tokens); `content_block_start` of a
//! `tool_use` → a tool call's id and name; `text_delta` → content; `input_json_delta` →
//! argument pieces; `message_delta` → `finish_reason` (and output tokens); `message_stop`
//! → the usage chunk and `[DONE]`. `ping`, block stops and unknown events say nothing.

use serde_json::{json, Value};

use super::{finish_reason, usage_counts, NAME};
use crate::error::ApiError;
use crate::providers::codec::{Exchange, StreamDecoder};
use crate::providers::common::{self, ChunkWriter, TokenCounts};
use crate::sse::SseEvent;

pub struct AnthropicStream {
    chunks: ChunkWriter,
    /// Anthropic content-block index → OpenAI tool-call index, for tool_use blocks.
    tool_blocks: Vec<(u64, usize)>,
    counts: TokenCounts,
    finished: bool,
}

impl AnthropicStream {
    pub fn new(exchange: &Exchange) -> Self {
        AnthropicStream {
            chunks: ChunkWriter::new(exchange),
            tool_blocks: Vec::new(),
            counts: TokenCounts::default(),
            finished: false,
        }
    }

    fn tool_index(&self, block: u64) -> Option<usize> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, tool)| *tool)
    }
}

impl StreamDecoder for AnthropicStream {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        if self.finished {
            return Ok(());
        }
        let data: Value =
            serde_json::from_str(&event.data).map_err(|_| common::invalid_upstream(NAME))?;
        let kind = data.get("type").and_then(Value::as_str).unwrap_or_default();
        let block = data
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        match kind {
            "message_start" => {
                usage_counts(
                    data.get("message").and_then(|m| m.get("usage")),
                    &mut self.counts,
                );
                out.push(
                    self.chunks
                        .delta(0, json!({"role": "assistant", "content": ""}), None),
                );
            }
            "content_block_start" => {
                let content = data.get("content_block");
                match content.and_then(|c| c.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.tool_blocks.len();
                        self.tool_blocks.push((block, tool));
                        let field = |name: &str| {
                            content
                                .and_then(|c| c.get(name))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                        };
                        out.push(
                            self.chunks
                                .tool_call_start(0, tool, field("id"), field("name")),
                        );
                    }
                    Some("text") => {
                        let text = content
                            .and_then(|c| c.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !text.is_empty() {
                            out.push(self.chunks.delta(0, json!({"content": text}), None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                let field = |name: &str| {
                    delta
                        .and_then(|d| d.get(name))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                };
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push(
                            self.chunks
                                .delta(0, json!({"content": field("text")}), None),
                        );
                    }
                    Some("input_json_delta") => {
                        let piece = field("partial_json");
                        if let (Some(tool), false) = (self.tool_index(block), piece.is_empty()) {
                            out.push(self.chunks.tool_call_arguments(0, tool, piece));
                        }
                    }
                    _ => {} // thinking and signature deltas
                }
            }
            "message_delta" => {
                usage_counts(data.get("usage"), &mut self.counts);
                let stop = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(reason) = finish_reason(stop) {
                    out.push(self.chunks.delta(0, json!({}), Some(reason)));
                }
            }
            "message_stop" => {
                self.finished = true;
                out.push(self.chunks.usage(self.counts.to_json()));
                out.push(common::done());
            }
            "error" => {
                let body = data.to_string();
                let status = match data
                    .get("error")
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("overloaded_error") => 529,
                    Some("rate_limit_error") => 429,
                    Some("api_error") => 500,
                    _ => 502,
                };
                return Err(crate::error::upstream_error(status, body.as_bytes(), NAME));
            }
            _ => {} // ping, content_block_stop, and events added later
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.finished {
            self.finished = true;
            common::incomplete_stream(NAME, out);
        }
    }
}
