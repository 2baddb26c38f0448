//! Anthropic's event stream → OpenAI `chat.completion.chunk` events.
//!
//! `message_start` → the role chunk (and input tokens); `content_block_start` of a
//! `tool_use` → a tool call's id and name; `text_delta` → content; `input_json_delta` →
//! argument pieces; `message_delta` → `finish_reason` (and output tokens); `message_stop`
//! → the usage chunk and `[DONE]`. `ping`, text block stops and unknown events say nothing.
//!
//! One role chunk and one `finish_reason` chunk per answer, however many `message_start` or
//! `message_delta` events come. Usage is cumulative: a `message_delta` field replaces the
//! one before, a field it leaves out keeps its `message_start` value. A tool call whose
//! block stops without argument pieces gets `"{}"`, as the JSON answer has it.

use serde_json::{json, Value};

use super::{finish_reason, Usage, NAME};
use crate::error::ApiError;
use crate::providers::codec::{Exchange, StreamDecoder};
use crate::providers::common::{self, ChunkWriter, TokenCounts};
use crate::sse::SseEvent;

pub struct AnthropicStream {
    chunks: ChunkWriter,
    /// Anthropic content-block index → OpenAI tool-call index, for tool_use blocks, and
    /// whether any argument piece was sent for it.
    tool_blocks: Vec<(u64, usize, bool)>,
    usage: Usage,
    role_sent: bool,
    finish_sent: bool,
    finished: bool,
}

impl AnthropicStream {
    pub fn new(exchange: &Exchange) -> Self {
        AnthropicStream {
            chunks: ChunkWriter::new(exchange),
            tool_blocks: Vec::new(),
            usage: Usage::default(),
            role_sent: false,
            finish_sent: false,
            finished: false,
        }
    }

    fn tool_block(&mut self, block: u64) -> Option<&mut (u64, usize, bool)> {
        self.tool_blocks.iter_mut().find(|(b, _, _)| *b == block)
    }

    /// `"{}"` for every tool call still without arguments (a call with no input streams
    /// none), so that arguments are always valid JSON.
    fn close_tools(&mut self, only_block: Option<u64>, out: &mut Vec<SseEvent>) {
        for (block, tool, sent) in &mut self.tool_blocks {
            if !*sent && only_block.is_none_or(|only| only == *block) {
                *sent = true;
                out.push(self.chunks.tool_call_arguments(0, *tool, "{}"));
            }
        }
    }

    fn counts(&self) -> TokenCounts {
        let mut counts = TokenCounts::default();
        self.usage.apply(&mut counts);
        counts
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
                self.usage
                    .merge(data.get("message").and_then(|m| m.get("usage")));
                if !self.role_sent {
                    self.role_sent = true;
                    out.push(self.chunks.delta(
                        0,
                        json!({"role": "assistant", "content": ""}),
                        None,
                    ));
                }
            }
            "content_block_start" => {
                let content = data.get("content_block");
                match content.and_then(|c| c.get("type")).and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.tool_blocks.len();
                        self.tool_blocks.push((block, tool, false));
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
                        // The input normally streams as pieces after an empty `{}` here;
                        // one given whole at the start is the arguments.
                        let input = content.and_then(|c| c.get("input"));
                        if let Some(input) =
                            input.filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            if let Some((_, _, sent)) = self.tool_block(block) {
                                *sent = true;
                            }
                            out.push(self.chunks.tool_call_arguments(0, tool, &input.to_string()));
                        }
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
                        if !piece.is_empty() {
                            if let Some((_, tool, sent)) = self.tool_block(block) {
                                *sent = true;
                                let tool = *tool;
                                out.push(self.chunks.tool_call_arguments(0, tool, piece));
                            }
                        }
                    }
                    _ => {} // thinking and signature deltas
                }
            }
            "content_block_stop" => self.close_tools(Some(block), out),
            "message_delta" => {
                self.usage.merge(data.get("usage"));
                let stop = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let (Some(reason), false) = (finish_reason(stop), self.finish_sent) {
                    self.close_tools(None, out);
                    self.finish_sent = true;
                    out.push(self.chunks.delta(0, json!({}), Some(reason)));
                }
            }
            "message_stop" => {
                self.finished = true;
                self.close_tools(None, out);
                out.push(self.chunks.usage(self.counts().to_json()));
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
            _ => {} // ping, and events added later
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
