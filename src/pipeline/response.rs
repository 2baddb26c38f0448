//! The response half of `Flow`: choosing how to treat the answer, translating it, running
//! response stages, accounting usage, and local rejections.

use std::rc::Rc;

use serde_json::Value;

use super::aggregate;
use super::in_place;
use super::stage::Step;
use super::stream::{self, StreamProcessor};
use super::{filter_state, Action, Flow, Progress, ResponseMode, Side, State};
use crate::config::Route;
use crate::encoding;
use crate::error::ApiError;
use crate::host::Host;
use crate::metrics;
use crate::usage::{self, Usage};

impl Flow {
    /// Ends the request with an OpenAI-shaped error. Always returns `Pause`: Envoy must not
    /// forward anything of the original request after a local reply.
    pub(super) fn reject(&mut self, host: &mut dyn Host, error: ApiError) -> Action {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(error.headers.iter().cloned());
        headers.extend(self.notes.response_headers.iter().cloned());
        host.send_response(error.status, &headers, &self.redacted(error.body()));
        host.set_filter_state(filter_state::OUTCOME, &error.code);
        self.count_error(host, &error.code);
        self.state = State::Answered;
        Action::Pause
    }

    /// `bytes` with every configured secret redacted (a callout or provider may echo one).
    fn redacted(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.plan.secrets.redact(&bytes).unwrap_or(bytes)
    }

    /// Relays one chunk of a streamed or passed-through answer with configured secrets
    /// redacted, also when one is split across chunks (the redactor holds back a tail that
    /// could begin one). `changed` is what the filter made of `original`, if anything.
    fn relay_chunk(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        original: &[u8],
        changed: Option<Vec<u8>>,
        end_of_stream: bool,
    ) {
        let plan = Rc::clone(&self.plan);
        if plan.secrets.is_empty() {
            if let Some(out) = changed {
                host.replace_response_body(0, body_size, &out);
            }
            return;
        }
        let input = changed.as_deref().unwrap_or(original);
        let out = self.redactor.push(&plan.secrets, input, end_of_stream);
        if changed.is_some() || out != original {
            host.replace_response_body(0, body_size, &out);
        }
    }

    fn count_error(&mut self, host: &mut dyn Host, code: &str) {
        self.error_type = Some(code.to_string());
        if let Some(route) = self.route() {
            host.counter_add(
                &metrics::name(metrics::ERRORS, &[("route", &route.name), ("code", code)]),
                1,
            );
        }
    }

    // ---------------------------------------------------------------- response headers

    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        if self.state != State::Upstream {
            return Action::Continue;
        }
        self.state = State::Responding;
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return Action::Continue;
        };
        for (name, value) in &self.notes.response_headers {
            host.set_response_header(name, Some(value));
        }
        let status = host
            .response_header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        self.response_encoding = host
            .response_header("content-encoding")
            .filter(|value| !encoding::is_identity(Some(value)));
        if (200..300).contains(&status) {
            // Replaced by an error code if the answer is rejected or cut short later.
            host.set_filter_state(filter_state::OUTCOME, "ok");
        } else {
            self.response = Some(ResponseMode::Error(status));
            host.set_response_header("content-length", None);
            host.set_response_header("content-encoding", None);
            host.set_response_header("content-type", Some("application/json"));
            return if end_of_stream {
                self.finish_error_response(host, status, &[]);
                Action::Continue
            } else {
                Action::Continue
            };
        }
        // Only a stream the filter asked for is treated as one: skip the header read otherwise.
        let content_type = if self.exchange.upstream_stream {
            host.response_header("content-type")
        } else {
            None
        };
        let is_event_stream = content_type
            .as_deref()
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/event-stream"));
        // A stream relays to the client event by event; any other answer is read whole
        // (a stream the provider's path forced on a client that asked for JSON, or one a
        // response stage needs whole, is aggregated in `prepare_answer`).
        let relay = self.exchange.upstream_stream
            && self.exchange.client_stream
            && !route.needs_whole_answer();
        if relay && is_event_stream {
            let codec = route.provider.codec();
            let filters = route
                .guards
                .stream
                .iter()
                .map(|factory| factory.create())
                .collect();
            let processor = StreamProcessor::new(
                codec.stream_decoder(&self.exchange),
                filters,
                !self.exchange.client_wants_usage,
            );
            if !processor.is_passthrough() {
                host.set_response_header("content-length", None);
            }
            if content_type.as_deref() != Some("text/event-stream") {
                host.set_response_header("content-type", Some("text/event-stream"));
            }
            self.response = Some(ResponseMode::Stream(Box::new(processor)));
            if end_of_stream {
                self.account(host);
            }
            return Action::Continue;
        }
        let changes_body = self.exchange.client_stream
            || self.exchange.upstream_stream
            || route.response_stage(0).is_some()
            || route.provider.codec().translates_responses();
        if !changes_body {
            self.response = Some(ResponseMode::ObserveJson(Vec::new()));
            if end_of_stream {
                self.account(host);
            }
            return Action::Continue;
        }
        self.response = Some(ResponseMode::BufferJson);
        host.set_response_header("content-length", None);
        host.set_response_header("content-encoding", None);
        host.set_response_header(
            "content-type",
            Some(if self.exchange.client_stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if end_of_stream {
            return Action::Continue;
        }
        if self.plan.allow_on_headers_stop_iteration && route.response_stage(0).is_some() {
            // Response stages may still set status and headers: hold them until the body is done.
            self.headers_held = true;
            return Action::Pause;
        }
        Action::Continue
    }

    // ---------------------------------------------------------------- response body

    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.state != State::Responding {
            return if self.state == State::ResponseCallout {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        self.record_first_byte(host);
        match self.response.take() {
            Some(ResponseMode::ObserveJson(mut copy)) => {
                // An empty end-of-stream call has nothing to read: spare the host call.
                let chunk = (body_size > 0)
                    .then(|| host.response_body(0, body_size))
                    .flatten();
                if let Some(chunk) = &chunk {
                    // Bounded: usage is near the end of small answers; a huge answer is not parsed.
                    if copy.len() + chunk.len() <= OBSERVE_LIMIT {
                        copy.extend_from_slice(chunk);
                    }
                }
                if chunk.is_some() || end_of_stream {
                    let chunk = chunk.unwrap_or_default();
                    self.relay_chunk(host, body_size, &chunk, None, end_of_stream);
                }
                if end_of_stream {
                    let decoded = encoding::decode(self.response_encoding.as_deref(), &copy)
                        .unwrap_or_default();
                    if let Some(found) = usage::from_json(&decoded) {
                        self.exchange_usage = Some(found);
                    }
                    self.account(host);
                }
                self.response = Some(ResponseMode::ObserveJson(copy));
                Action::Continue
            }
            Some(ResponseMode::Stream(mut processor)) => {
                let chunk = (body_size > 0)
                    .then(|| host.response_body(0, body_size))
                    .flatten()
                    .unwrap_or_default();
                let out = processor.push(&chunk, end_of_stream, host);
                self.relay_chunk(host, body_size, &chunk, out, end_of_stream);
                if let Some(found) = processor.usage() {
                    self.exchange_usage = Some(found);
                }
                if processor.saw_content() {
                    self.record_first_token(host);
                }
                if end_of_stream || processor.saw_done() {
                    self.account(host);
                }
                self.response = Some(ResponseMode::Stream(processor));
                Action::Continue
            }
            Some(ResponseMode::Error(status)) => {
                self.response = Some(ResponseMode::Error(status));
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = host.response_body(0, body_size).unwrap_or_default();
                self.response_body_size = body_size;
                let decoded =
                    encoding::decode(self.response_encoding.as_deref(), &body).unwrap_or_default();
                self.finish_error_response(host, status, &decoded);
                Action::Continue
            }
            Some(ResponseMode::BufferJson) => {
                self.response = Some(ResponseMode::BufferJson);
                if !end_of_stream {
                    return Action::Pause;
                }
                self.response_body_size = body_size;
                let body = host.response_body(0, body_size).unwrap_or_default();
                let body = match encoding::decode(self.response_encoding.as_deref(), &body) {
                    Ok(decoded) => decoded.into_owned(),
                    Err(reason) => {
                        let error = ApiError::new(
                            502,
                            "api_error",
                            "invalid_upstream_response",
                            format!("The provider's answer can not be read: {reason}."),
                        );
                        self.replace_with_error(host, error);
                        return Action::Continue;
                    }
                };
                if let Some(progress) = self.answer_in_place(host, &body) {
                    return match progress {
                        Progress::Waiting => Action::Pause,
                        Progress::Done | Progress::Rejected => Action::Continue,
                    };
                }
                match self.prepare_answer(&body) {
                    Ok(()) => {}
                    Err(error) => {
                        self.replace_with_error(host, error);
                        return Action::Continue;
                    }
                }
                self.next_stage = 0;
                match self.run_response_stages(host) {
                    Progress::Waiting => Action::Pause,
                    Progress::Done | Progress::Rejected => Action::Continue,
                }
            }
            None => Action::Continue,
        }
    }

    /// The common route's answer (a JSON answer of an OpenAI-shaped provider, only regex
    /// guards as response stages) without a `Value`: usage read and texts guarded in place,
    /// written back only when they changed. None when the general path must handle it;
    /// nothing has happened then.
    fn answer_in_place(&mut self, host: &mut dyn Host, body: &[u8]) -> Option<Progress> {
        let plan = Rc::clone(&self.plan);
        let route = plan.routes.get(self.route)?;
        if !self.in_place
            || self.exchange.client_stream
            || self.exchange.upstream_stream
            || self.response_encoding.is_some()
            || !route.provider.codec().takes_openai_body()
        {
            return None;
        }
        let guards = (0..)
            .map_while(|index| route.response_stage(index))
            .map(|stage| stage.regex_guard())
            .collect::<Option<Vec<_>>>()?;
        let text = std::str::from_utf8(body).ok()?;
        let mut answer = in_place::read_answer(text)?;
        self.exchange_usage = answer.usage;
        for guard in guards {
            if let Step::Reject(error) = guard.apply_in_place(&mut answer.texts, host) {
                self.replace_with_error(host, error);
                return Some(Progress::Rejected);
            }
        }
        let edits = answer.edits();
        if !edits.is_empty() {
            let Some(rewritten) = edits.apply(body) else {
                self.replace_with_error(host, super::internal_error());
                return Some(Progress::Rejected);
            };
            let rewritten = self.redacted(rewritten);
            host.replace_response_body(0, self.response_body_size, &rewritten);
        } else if let Some(redacted) = self.plan.secrets.redact(body) {
            host.replace_response_body(0, self.response_body_size, &redacted);
        }
        self.account(host);
        Some(Progress::Done)
    }

    /// Translates the buffered answer to an OpenAI `chat.completion` and reads its usage.
    fn prepare_answer(&mut self, body: &[u8]) -> Result<(), ApiError> {
        let plan = Rc::clone(&self.plan);
        let route = plan
            .routes
            .get(self.route)
            .ok_or_else(super::internal_error)?;
        let codec = route.provider.codec();
        let decoded = if self.exchange.upstream_stream && !aggregate::looks_like_json(body) {
            Some(aggregate::aggregate(
                body,
                codec.stream_decoder(&self.exchange),
            )?)
        } else {
            codec.decode_response(body, &self.exchange)?
        };
        let answer = match decoded {
            Some(answer) => answer,
            None => serde_json::from_slice::<Value>(body).map_err(|_| {
                ApiError::new(
                    502,
                    "api_error",
                    "invalid_upstream_response",
                    "The provider's answer is not valid JSON.",
                )
            })?,
        };
        self.exchange_usage = answer
            .get("usage")
            .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            .map(Usage::normalised);
        self.body = answer;
        Ok(())
    }

    pub(super) fn run_response_stages(&mut self, host: &mut dyn Host) -> Progress {
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return Progress::Done;
        };
        while let Some(stage) = route.response_stage(self.next_stage) {
            let step = self.with_response_ctx(host, route, |ctx| stage.start(ctx));
            match self.follow_step(host, route, Side::Response, step) {
                Some(progress) => return progress,
                None => self.next_stage += 1,
            }
        }
        self.finish_answer(host);
        Progress::Done
    }

    /// Writes the final answer: as JSON, or as a synthesised stream for a streaming client.
    fn finish_answer(&mut self, host: &mut dyn Host) {
        let bytes = match self.raw_response.take() {
            Some(raw) => raw,
            None if self.exchange.client_stream => {
                stream::synthesize_stream(&self.body, self.exchange.client_wants_usage)
            }
            None => crate::json::to_vec(&self.body, self.response_body_size + 64),
        };
        let bytes = self.redacted(bytes);
        if self.headers_held {
            if let Some(status) = self.response_override.status {
                host.set_response_header(":status", Some(&status.to_string()));
            }
            for (name, value) in &self.response_override.headers {
                host.set_response_header(name, Some(value));
            }
        }
        host.replace_response_body(0, self.response_body_size, &bytes);
        self.account(host);
    }

    /// A rejection after the answer arrived: in-band for streams, else status and body replaced
    /// where headers are still held, else body replaced.
    pub(super) fn replace_with_error(&mut self, host: &mut dyn Host, error: ApiError) {
        // A streaming client whose answer has not started (headers still held) gets a plain
        // error status, which SDKs raise before reading any stream.
        let bytes = if self.exchange.client_stream && !self.headers_held {
            let mut out = Vec::new();
            stream::write_error_event(&error, &mut out);
            out
        } else {
            if self.headers_held {
                host.set_response_header(":status", Some(&error.status.to_string()));
                host.set_response_header("content-type", Some("application/json"));
            }
            error.body()
        };
        let bytes = self.redacted(bytes);
        host.replace_response_body(0, self.response_body_size, &bytes);
        host.set_filter_state(filter_state::OUTCOME, &error.code);
        self.count_error(host, &error.code);
        self.account(host);
    }

    fn finish_error_response(&mut self, host: &mut dyn Host, status: u16, body: &[u8]) {
        let Some(route) = self.route() else { return };
        // Redacted before it is read: the message is cut to a length that could split a key.
        let redacted = self.plan.secrets.redact(body);
        let body = redacted.as_deref().unwrap_or(body);
        let error = route.provider.codec().decode_error(status, body);
        // The buffered size, not `body.len()`: the body may have been decoded.
        let bytes = self.redacted(error.body());
        host.replace_response_body(0, self.response_body_size, &bytes);
        host.set_filter_state(filter_state::OUTCOME, &format!("upstream_{status}"));
        self.count_error(host, &format!("upstream_{status}"));
        self.account(host);
    }

    /// Envoy's last call for the stream: account an answer the client hung up on early, and
    /// charge budgets the request was admitted against but never charged (a later stage
    /// rejected it, or it ended before any answer) with the usage seen so far, which also
    /// releases what it held.
    pub fn on_log(&mut self, host: &mut dyn Host) {
        if matches!(self.state, State::Responding | State::ResponseCallout) {
            self.account(host);
        }
        if !self.notes.limit_tickets.is_empty() {
            self.charge_limits(host);
        }
    }

    fn record_first_byte(&mut self, host: &mut dyn Host) {
        if !self.first_byte_recorded {
            self.first_byte_recorded = true;
            self.first_byte_ms = host.now_ms();
        }
    }

    fn record_first_token(&mut self, host: &mut dyn Host) {
        if self.first_token_recorded {
            return;
        }
        self.first_token_recorded = true;
        let Some(route) = self.route() else { return };
        let elapsed = host.now_ms().saturating_sub(self.started_ms);
        let labels = self.model_labels(route, host);
        host.histogram_record(
            &metrics::name(metrics::TIME_TO_FIRST_CHUNK, &labels.as_refs()),
            metrics::seconds(elapsed),
        );
    }

    /// The GenAI attributes of this exchange (`error.type` once it failed).
    fn model_labels(&self, route: &Route, host: &dyn Host) -> Labels {
        let server = route.provider.authority.rsplit_once(':').map_or(
            route.provider.authority.as_str(),
            |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') {
                    host
                } else {
                    route.provider.authority.as_str()
                }
            },
        );
        let mut labels = vec![
            ("route", route.name.clone()),
            (
                metrics::OPERATION_NAME,
                metrics::operation_name(self.operation).to_string(),
            ),
            (
                metrics::PROVIDER_NAME,
                metrics::provider_name(route.provider.kind).to_string(),
            ),
            (
                metrics::REQUEST_MODEL,
                metrics::model_label(route, &self.exchange.model),
            ),
            (metrics::SERVER_ADDRESS, server.to_string()),
            (
                metrics::SERVER_PORT,
                upstream_port(host).unwrap_or_default(),
            ),
        ];
        if let Some(error) = &self.error_type {
            labels.push((metrics::ERROR_TYPE, error.clone()));
        }
        Labels(labels)
    }

    /// Charges the budgets the request was admitted against with the usage seen so far (none
    /// if the answer carried no usage): this also releases what the request held. Usage
    /// reports to a rate limit service are sent without waiting for their replies.
    pub(super) fn charge_limits(&mut self, host: &mut dyn Host) {
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return;
        };
        let Some(limits) = &route.limits else {
            return;
        };
        let usage = self.exchange_usage.unwrap_or_default();
        for callout in limits.charge(&mut self.notes, usage, host) {
            if let Err(reason) = host.dispatch_detached(&callout) {
                log::warn!(
                    "aigate: route {}: usage report to {} failed: {reason}",
                    route.name,
                    callout.cluster
                );
            }
        }
    }

    /// Once per answer: metrics, filter state, and budget charges.
    pub(super) fn account(&mut self, host: &mut dyn Host) {
        if self.accounted {
            return;
        }
        self.accounted = true;
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return;
        };
        let labels = self.model_labels(route, host);
        host.counter_add(&metrics::name(metrics::REQUESTS, &labels.as_refs()), 1);
        let elapsed = host.now_ms().saturating_sub(self.started_ms);
        host.histogram_record(
            &metrics::name(metrics::OPERATION_DURATION, &labels.as_refs()),
            metrics::seconds(elapsed),
        );
        self.charge_limits(host);
        let Some(found) = self.exchange_usage else {
            return;
        };
        // Without `error.type`: usage is reported for answers, failed or not.
        let labels = Labels(
            labels
                .0
                .into_iter()
                .filter(|(key, _)| *key != metrics::ERROR_TYPE)
                .collect(),
        );
        for (token_type, count) in [
            ("input", found.prompt_tokens),
            ("output", found.completion_tokens),
        ] {
            let mut with_type = labels.as_refs();
            with_type.push((metrics::TOKEN_TYPE, token_type));
            host.histogram_record(&metrics::name(metrics::TOKEN_USAGE, &with_type), count);
            host.counter_add(&metrics::name(metrics::TOKENS, &with_type), count);
        }
        host.set_filter_state(
            filter_state::PROMPT_TOKENS,
            &found.prompt_tokens.to_string(),
        );
        host.set_filter_state(
            filter_state::COMPLETION_TOKENS,
            &found.completion_tokens.to_string(),
        );
        host.set_filter_state(filter_state::TOTAL_TOKENS, &found.total_tokens.to_string());
    }
}

/// The port of the upstream connection (Envoy's `upstream.port`, an int64), for `server.port`.
fn upstream_port(host: &dyn Host) -> Option<String> {
    let bytes = host.property(&["upstream", "port"])?;
    match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(raw) => Some(i64::from_le_bytes(raw).to_string()),
        Err(_) => String::from_utf8(bytes)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// A non-streamed answer bigger than this is passed on without reading its usage.
const OBSERVE_LIMIT: usize = 8 * 1024 * 1024;

struct Labels(Vec<(&'static str, String)>);

impl Labels {
    fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}
