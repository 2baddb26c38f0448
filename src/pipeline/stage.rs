//! The stage contract: what a request or response stage is given and returns. A stage either
//! finishes at once or asks for one callout and finishes when its reply comes; the flow
//! (`pipeline::Flow`) drives a route's stages in the order the plan (`crate::plan`) lists them.
//! The contract names no concrete stage: what the flow must know about one (it runs in the
//! headers phase, it settles budgets once usage is known) the stage declares here.

use std::fmt::Debug;

use serde_json::Value;

use crate::api::Operation;
use crate::error::ApiError;
use crate::host::{Callout, CalloutReply, Host};
use crate::pipeline::in_place::Text;
use crate::sse::SseEvent;
use crate::usage::Usage;

/// What the filter knows about one request/answer exchange while translating (the providers'
/// codecs read it too: `providers::Exchange`).
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The model sent upstream (after mapping).
    pub model: String,
    /// The client asked for a stream.
    pub client_stream: bool,
    /// The upstream is asked for a stream (differs from `client_stream` when the filter
    /// needs the whole answer first, for example for a response transformer).
    pub upstream_stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// Seconds since the epoch, for `created` in synthesised answers.
    pub created: u64,
    /// A `chatcmpl-...` id for synthesised answers.
    pub id: String,
    /// The operation asked of the provider (chat completions for a bridged request).
    pub operation: Operation,
    /// The client's operation: the API whose form every stage sees (its texts, its
    /// validation), which differs from `operation` when the request is bridged.
    pub client_operation: Operation,
}

/// What a stage wants next.
#[derive(Debug)]
pub enum Step {
    /// Done: go on with the next stage.
    Next,
    /// Dispatch this callout and call the stage's `on_reply` with the answer.
    Call(Callout),
    /// End the request with this error.
    Reject(ApiError),
}

/// Per-request facts that stages record for later phases (response headers, logs, limits).
#[derive(Debug, Default)]
pub struct Notes {
    /// Headers to add to the client's response (for example `x-ratelimit-*`).
    pub response_headers: Vec<(String, String)>,
    /// Budgets the request was admitted against, to charge once usage is known (`settle`).
    pub limit_tickets: Vec<Ticket>,
}

/// One budget a request was admitted against, to charge when its usage is known (the budget
/// check, `limits`, writes and settles them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Index of the limit in the route's `tokens`.
    pub limit: usize,
    pub key: String,
    /// The local backend's hold for this request.
    pub hold: Option<u32>,
}

/// Everything a request stage may look at or change.
pub struct RequestCtx<'a> {
    pub route_name: &'a str,
    /// The client's request headers, names lower-cased, as they were in the headers phase.
    pub request_headers: &'a [(String, String)],
    /// The request body (an OpenAI request), as shaped so far.
    pub body: &'a mut Value,
    pub exchange: &'a mut Exchange,
    pub notes: &'a mut Notes,
    pub host: &'a mut dyn Host,
}

/// Which half of the exchange a stage works on (also a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

/// A stage that needs nothing but the body's texts (read in place, `in_place::Text`): it
/// decides and rewrites them as its `start` would on the parsed body.
pub trait TextStage {
    fn apply_in_place(&self, texts: &mut [Text<'_>], host: &mut dyn Host) -> Step;
}

pub trait RequestStage: Debug {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step;
    fn on_reply(&self, _ctx: &mut RequestCtx<'_>, _reply: &CalloutReply) -> Step {
        Step::Next
    }
    /// The stage as one that reads and rewrites only the body's texts, if it is one: the
    /// body can then be rewritten in place (`in_place`) when every stage is.
    fn text_stage(&self) -> Option<&dyn TextStage> {
        None
    }
    /// True when the stage needs no body and no callout (a local budget check): the flow
    /// runs it in the headers phase, before the body is read, when every stage before it
    /// does too. Its `ctx.body` is `null` then.
    fn runs_on_headers(&self) -> bool {
        false
    }
    /// Once usage is known (or the request ended without an answer): settles what the stage
    /// recorded in `notes` (budgets charged, holds released), taking it out of `notes` so a
    /// second call does nothing. `cost_micros` is the answer's cost (`pricing`), 0 when no
    /// stage `counts_cost`. Callouts returned are sent without waiting for replies.
    fn settle(
        &self,
        _notes: &mut Notes,
        _usage: Usage,
        _cost_micros: u64,
        _host: &mut dyn Host,
    ) -> Vec<Callout> {
        Vec::new()
    }
    /// True when `settle` needs the answer's cost (a budget in dollars): the flow then
    /// prices every answer of the route.
    fn counts_cost(&self) -> bool {
        false
    }
    /// Sets up what the stage shares across requests, once per VM before traffic.
    fn prepare(&self, _host: &mut dyn Host) {}
}

/// What a response stage may change beyond the body: status and headers, honoured where the
/// response headers are still held (see `Flow`).
#[derive(Debug, Default, Clone)]
pub struct ResponseOverride {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
}

/// Everything a response stage may look at or change, on a whole (non-streamed) answer.
pub struct ResponseCtx<'a> {
    pub route_name: &'a str,
    pub request_headers: &'a [(String, String)],
    /// The answer as an OpenAI `chat.completion` (already translated from the provider).
    pub body: &'a mut Value,
    /// When set, replaces the serialised body verbatim (a transformer's raw reply).
    pub raw_body: &'a mut Option<Vec<u8>>,
    pub exchange: &'a Exchange,
    pub notes: &'a mut Notes,
    pub overrides: &'a mut ResponseOverride,
    pub host: &'a mut dyn Host,
}

pub trait ResponseStage: Debug {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step;
    fn on_reply(&self, _ctx: &mut ResponseCtx<'_>, _reply: &CalloutReply) -> Step {
        Step::Next
    }
    /// True when this stage can only work on a whole answer (callouts); a streamed request
    /// is then sent upstream without streaming and re-streamed to the client.
    fn needs_whole_answer(&self) -> bool;
    /// True when the stage may change the status (a rejection, or a transformer's
    /// instructions). Needs the response headers held, which only
    /// `allow_on_headers_stop_iteration` allows; without it the config is refused.
    fn sets_status(&self) -> bool;
    /// As `RequestStage::text_stage`.
    fn text_stage(&self) -> Option<&dyn TextStage> {
        None
    }
}

/// Works on a stream event by event (OpenAI `chat.completion.chunk` events), for example a
/// response guard that masks text as it flows. An `Err` ends the stream with an error event.
pub trait EventFilter {
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Vec<SseEvent>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError>;
    fn finish(&mut self, out: &mut Vec<SseEvent>, host: &mut dyn Host) -> Result<(), ApiError>;
}
