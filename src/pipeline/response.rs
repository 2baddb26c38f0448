//! The response half of `Flow`: choosing how to treat the answer, translating it, running
//! response stages, accounting usage, and local rejections.

use std::rc::Rc;

use serde_json::Value;

use super::aggregate;
use super::stage::Step;
use super::stream::{self, StreamProcessor};
use super::{filter_state, Action, Flow, Progress, ResponseMode, Side, State};
use crate::client_api::{ClientApi, Translation};
use crate::encoding;
use crate::error::ApiError;
use crate::host::Host;
use crate::metrics;
use crate::plan::Route;
use crate::providers::StreamDecoder;
use crate::usage::{self, Usage};

impl Flow {
    /// Ends the request with an OpenAI-shaped error. Always returns `Pause`: Envoy must not
    /// forward anything of the original request after a local reply.
    pub(super) fn reject(&mut self, host: &mut dyn Host, error: ApiError) -> Action {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(error.headers.iter().cloned());
        headers.extend(self.notes.response_headers.iter().cloned());
        host.send_response(
            error.status,
            &headers,
            &self.redacted(self.api.error_body(&error)),
        );
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
        let out = if plan.secrets.is_empty() {
            match changed {
                Some(out) => out,
                None => return,
            }
        } else {
            let input = changed.as_deref().unwrap_or(original);
            let out = self.redactor.push(&plan.secrets, input, end_of_stream);
            if changed.is_none() && out == original {
                return;
            }
            out
        };
        if self.at_trailers && !out.is_empty() {
            // Envoy cannot add body from the trailers callback: fail clearly, never cut short.
            self.end_undeliverable(host);
        } else if body_size > 0 || !out.is_empty() {
            // Nothing in, nothing owed: no write (there may be no body to write to).
            host.replace_response_body(0, body_size, &out);
        }
    }

    /// Ends a stream that can not go on (its bytes can not be read or decoded) with the
    /// client API's in-band error in place of this chunk; later chunks are dropped.
    fn break_stream(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        processor: Box<StreamProcessor>,
        error: ApiError,
    ) -> Action {
        self.stream_broken = true;
        self.stream_inflater = None;
        let mut out = Vec::new();
        self.api.write_error_event(&error, &mut out);
        host.replace_response_body(0, body_size, &out);
        host.set_filter_state(filter_state::OUTCOME, &error.code);
        self.count_error(host, &error.code);
        self.account(host);
        self.response = Some(ResponseMode::Stream(processor));
        Action::Continue
    }

    /// Ends an observed (relayed as it comes) JSON answer whose bytes the host would not
    /// give: the chunk is replaced by the API's error body (the status already went to the
    /// client), the rest is dropped, and the failure is counted and accounted.
    fn break_observed(&mut self, host: &mut dyn Host, body_size: usize) {
        let error = unreadable_answer_body();
        self.stream_broken = true;
        host.replace_response_body(0, body_size, &self.api.error_body(&error));
        host.set_filter_state(filter_state::OUTCOME, &error.code);
        self.count_error(host, &error.code);
        self.account(host);
    }

    fn count_error(&mut self, host: &mut dyn Host, code: &str) {
        self.error_type = Some(code.to_string());
        if self.is_attempt() {
            return; // the downstream instance counts the request
        }
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
        self.attempt_answer_headers(host, status);
        self.response_encoding = host
            .response_header("content-encoding")
            .filter(|value| !encoding::is_identity(Some(value)));
        if (200..300).contains(&status) {
            // Replaced by an error code if the answer is rejected or cut short later.
            host.set_filter_state(filter_state::OUTCOME, "ok");
        } else {
            // An upstream error charges nothing (not even the prompt's estimate).
            self.usage_estimate = None;
            self.response = Some(ResponseMode::Error(status));
            host.set_response_header("content-length", None);
            host.set_response_header("content-encoding", None);
            host.set_response_header("content-type", Some("application/json"));
            if end_of_stream {
                // No body follows, so there is none to replace: answer with the error object.
                return self.answer_bodiless_error(host, status);
            }
            return Action::Continue;
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
            if let Some(name) = self.response_encoding.clone() {
                // Read event by event, so decoded as it flows; the client gets it decoded.
                match encoding::Inflater::new(&name) {
                    Ok(inflater) => self.stream_inflater = Some(inflater),
                    Err(reason) => {
                        let error = unreadable_answer(&reason);
                        return self.answer_locally(host, error.status, &error, &error.code);
                    }
                }
                host.set_response_header("content-encoding", None);
                host.set_response_header("content-length", None);
            }
            let filters = route
                .stream_filters
                .iter()
                .map(|factory| factory.create(self.api))
                .collect();
            // Only a chat client's own usage chunk may have to go: other APIs' streams carry
            // their usage in events the client expects (or the bridge consumes the chunk).
            let strip_usage_chunk =
                self.translation == Translation::Codec && !self.exchange.client_wants_usage;
            let processor =
                StreamProcessor::new(self.stream_decoder(route), filters, strip_usage_chunk)
                    .for_api(self.api)
                    .record_answer_model(!self.plan.pricing.is_empty());
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
            || match self.translation {
                Translation::Native => false,
                Translation::Codec => route.provider.codec().translates_responses(),
                Translation::ViaChat => true,
            };
        if !changes_body {
            self.response = Some(ResponseMode::ObserveJson(Observed::default()));
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
        self.response_seen = body_size;
        match self.response.take() {
            Some(ResponseMode::ObserveJson(mut copy)) => {
                if self.stream_broken {
                    // The answer was already ended with an error: drop what follows.
                    if body_size > 0 {
                        host.replace_response_body(0, body_size, &[]);
                    }
                    self.response = Some(ResponseMode::ObserveJson(copy));
                    return Action::Continue;
                }
                // An empty end-of-stream call has nothing to read: spare the host call.
                let chunk = if body_size > 0 {
                    match self.read_answer(host, body_size) {
                        Some(chunk) => Some(chunk),
                        None => {
                            // A host failure, never an empty chunk: bytes the redactor could
                            // not read are not relayed, and the answer ends with the error.
                            self.break_observed(host, body_size);
                            self.response = Some(ResponseMode::ObserveJson(copy));
                            return Action::Continue;
                        }
                    }
                } else {
                    None
                };
                if let Some(chunk) = &chunk {
                    copy.push(chunk);
                }
                if chunk.is_some() || end_of_stream {
                    let chunk = chunk.unwrap_or_default();
                    self.relay_chunk(host, body_size, &chunk, None, end_of_stream);
                }
                if end_of_stream {
                    self.exchange_usage = copy.usage(self.api, self.response_encoding.as_deref());
                    self.response_model = copy.model(self.response_encoding.as_deref());
                    if !self.plan.pricing.is_empty() {
                        self.answer_model = copy.answer_model(self.response_encoding.as_deref());
                    }
                    if self.exchange_usage.is_none() {
                        self.usage_estimate =
                            Some(usage::estimate(self.request_body_size, copy.total));
                    }
                    self.account(host);
                }
                self.response = Some(ResponseMode::ObserveJson(copy));
                Action::Continue
            }
            Some(ResponseMode::Stream(mut processor)) => {
                // A broken stream's bytes are dropped below: no need to read them.
                let read = if self.stream_broken {
                    Some(Vec::new())
                } else {
                    self.read_answer(host, body_size)
                };
                let Some(mut chunk) = read else {
                    // Never relay bytes the stream's guards could not read.
                    return self.break_stream(host, body_size, processor, unreadable_answer_body());
                };
                let mut decoded = None;
                if let Some(inflater) = &mut self.stream_inflater {
                    let mut out = Vec::with_capacity(chunk.len() * 4);
                    let result = inflater.push(&chunk, &mut out).and_then(|()| {
                        if end_of_stream && !inflater.is_complete() {
                            Err(encoding::DecodeError::Corrupt(
                                "the compressed data is truncated",
                            ))
                        } else {
                            Ok(())
                        }
                    });
                    match result {
                        Ok(()) => decoded = Some(out),
                        Err(reason) => {
                            let error = unreadable_answer(&reason);
                            return self.break_stream(host, body_size, processor, error);
                        }
                    }
                }
                if self.stream_broken {
                    if body_size > 0 {
                        host.replace_response_body(0, body_size, &[]);
                    }
                    self.response = Some(ResponseMode::Stream(processor));
                    return Action::Continue;
                }
                if let Some(out) = &decoded {
                    chunk.clone_from(out);
                }
                let out = match processor.push(&chunk, end_of_stream, host) {
                    Some(out) => Some(out),
                    // A decoded chunk is sent decoded even when it passes unchanged.
                    None => decoded,
                };
                self.relay_chunk(host, body_size, &chunk, out, end_of_stream);
                if self.response_model.is_none() {
                    self.response_model = processor.response_model().map(str::to_string);
                }
                if let Some(found) = processor.usage() {
                    self.exchange_usage = Some(found);
                    if let Some(model) = processor.answer_model() {
                        self.answer_model = Some(model.to_string());
                    }
                }
                // Charged if the usage event never comes (the client hangs up first).
                self.usage_estimate = Some(usage::estimate(
                    self.request_body_size,
                    processor.generated_bytes(),
                ));
                if processor.saw_content() {
                    self.record_first_token(host);
                }
                if let Some(code) = processor.take_error() {
                    // An in-band error ended the stream: a failure like any other.
                    host.set_filter_state(filter_state::OUTCOME, &code);
                    self.count_error(host, &code);
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
                self.response_body_size = body_size;
                let Some(body) = self.read_answer(host, body_size) else {
                    // The upstream already failed; its status still reaches the client.
                    self.finish_error_response(host, status, &[]);
                    return Action::Continue;
                };
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
                let Some(body) = self.read_answer(host, body_size) else {
                    self.replace_with_error(host, unreadable_answer_body());
                    return Action::Continue;
                };
                // Charged if the answer turns out to carry no usage.
                self.usage_estimate = Some(usage::estimate(self.request_body_size, body.len()));
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
                if !self.plan.pricing.is_empty() {
                    // The provider's own answer (before any translation) names its model.
                    self.answer_model =
                        crate::json_view::answer_model(&body).filter(|model| !model.is_empty());
                }
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

    /// An answer that ends with trailers ends here instead of at a body callback with end of
    /// stream: it is finished exactly as there. A buffered answer (JSON, errors) is still in
    /// Envoy's buffer and is read and replaced from here; a relayed one (streams, observed
    /// JSON) has passed already, so only what the filter still owes is written.
    pub fn on_response_trailers(&mut self, host: &mut dyn Host) -> Action {
        match self.state {
            State::Responding => {}
            State::ResponseCallout => return Action::Pause,
            _ => return Action::Continue,
        }
        let buffered = match self.response {
            Some(ResponseMode::BufferJson | ResponseMode::Error(_)) => self.response_seen,
            _ => 0,
        };
        self.at_trailers = true;
        let action = self.on_response_body(host, buffered, true);
        self.at_trailers = false;
        action
    }

    /// A relayed stream ended with trailers while the filter still owed the client events
    /// (text a response guard held back, a translated stream's closing events): Envoy lets
    /// nothing be added to a body it already passed on, so the stream is ended with an error
    /// (Envoy resets it) rather than silently cut short.
    fn end_undeliverable(&mut self, host: &mut dyn Host) {
        let error = ApiError::new(
            502,
            "api_error",
            "stream_end_undeliverable",
            "The provider's stream ended with trailers before the gateway could send its end.",
        );
        log::warn!(
            "aigate: route {}: a stream ended with trailers while events were still owed; ending it with an error",
            self.route().map(|r| r.name.as_str()).unwrap_or_default()
        );
        host.send_response(
            error.status,
            &[("content-type".to_string(), "application/json".to_string())],
            &self.api.error_body(&error),
        );
        host.set_filter_state(filter_state::OUTCOME, &error.code);
        self.count_error(host, &error.code);
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
            || !self.body_read_in_place(route)
        {
            return None;
        }
        let guards = (0..)
            .map_while(|index| route.response_stage(index))
            .map(|stage| stage.text_stage())
            .collect::<Option<Vec<_>>>()?;
        let text = std::str::from_utf8(body).ok()?;
        let mut answer = self.api.read_answer(text)?;
        self.exchange_usage = answer.usage;
        self.response_model = crate::json_view::answer_model(body);
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

    /// The answer's first `body_size` bytes from the host (none to read when 0). None, with a
    /// log line, when the host could not give them all: a host failure, which the caller
    /// turns into the gateway's own error, never the client's or the provider's.
    fn read_answer(&self, host: &mut dyn Host, body_size: usize) -> Option<Vec<u8>> {
        if body_size == 0 {
            return Some(Vec::new());
        }
        match host.response_body(0, body_size) {
            Some(bytes) if bytes.len() == body_size => Some(bytes),
            read => {
                log::warn!(
                    "aigate: route {}: the host returned {} of the answer's {} bytes",
                    self.route().map(|r| r.name.as_str()).unwrap_or_default(),
                    read.map_or(0, |bytes| bytes.len()),
                    body_size
                );
                None
            }
        }
    }

    /// Brings the buffered answer into the client API's form and reads its usage: as it is
    /// on a passthrough route; else through the provider's codec into a `chat.completion`
    /// (usage read there), and on a bridged route on into the client's form.
    fn prepare_answer(&mut self, body: &[u8]) -> Result<(), ApiError> {
        let plan = Rc::clone(&self.plan);
        let route = plan
            .routes
            .get(self.route)
            .ok_or_else(super::internal_error)?;
        if self.translation == Translation::Native {
            let answer = serde_json::from_slice::<Value>(body).map_err(|_| not_json_answer())?;
            self.exchange_usage = self.api.usage_from_json(body);
            self.body = answer;
            return Ok(());
        }
        let codec = route.provider.codec();
        // As the provider wrote it: a translation writes the model asked for.
        self.response_model = crate::json_view::answer_model(body);
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
            None => serde_json::from_slice::<Value>(body).map_err(|_| not_json_answer())?,
        };
        self.exchange_usage = answer
            .get("usage")
            .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            .map(Usage::normalised);
        self.body = match (self.translation, self.api.chat_bridge()) {
            (Translation::ViaChat, Some(bridge)) => {
                bridge.answer_from_chat_for(&answer, &self.body, &self.exchange)?
            }
            (Translation::ViaChat, None) => return Err(super::internal_error()),
            _ => answer,
        };
        Ok(())
    }

    /// The translator of the upstream's events into the client API's: none on a passthrough
    /// route; the provider's decoder (none for an OpenAI stream); on a bridged route that,
    /// then the bridge from chat chunks to the client's events.
    fn stream_decoder(&self, route: &Route) -> Option<Box<dyn StreamDecoder>> {
        let codec = route.provider.codec();
        match (self.translation, self.api.chat_bridge()) {
            (Translation::Native, _) => None,
            (Translation::ViaChat, Some(bridge)) => Some(Box::new(stream::Chained::new(
                codec.stream_decoder(&self.exchange),
                bridge.stream_from_chat_for(&self.body, &self.exchange),
            ))),
            _ => codec.stream_decoder(&self.exchange),
        }
    }

    /// An upstream error in the client API's shape: a passthrough route's as the provider
    /// sent it; otherwise the provider's error read by its codec and worded as the client
    /// API words errors.
    fn upstream_error_body(&self, route: &Route, status: u16, body: &[u8]) -> Vec<u8> {
        if self.translation == Translation::Native && !body.is_empty() {
            return body.to_vec();
        }
        self.api
            .error_body(&route.provider.codec().decode_error(status, body))
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
            None if self.exchange.client_stream => self
                .api
                .synthesize_stream(&self.body, self.exchange.client_wants_usage),
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
            self.api.write_error_event(&error, &mut out);
            out
        } else {
            if self.headers_held {
                host.set_response_header(":status", Some(&error.status.to_string()));
                host.set_response_header("content-type", Some("application/json"));
            }
            self.api.error_body(&error)
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
        // The buffered size, not `body.len()`: the body may have been decoded.
        let bytes = self.redacted(self.upstream_error_body(route, status, body));
        host.replace_response_body(0, self.response_body_size, &bytes);
        host.set_filter_state(filter_state::OUTCOME, &format!("upstream_{status}"));
        self.count_error(host, &format!("upstream_{status}"));
        self.account(host);
    }

    /// An upstream error whose headers end the answer (no body at all): Envoy has no body to
    /// replace, so the error object goes out as a local reply with the upstream's status.
    fn answer_bodiless_error(&mut self, host: &mut dyn Host, status: u16) -> Action {
        let Some(route) = self.route() else {
            return Action::Continue;
        };
        let status = if (400..600).contains(&status) {
            status
        } else {
            502
        };
        let error = route.provider.codec().decode_error(status, &[]);
        self.answer_locally(host, status, &error, &format!("upstream_{status}"))
    }

    /// Replaces the answer, from its headers phase, with a local reply carrying `error`.
    fn answer_locally(
        &mut self,
        host: &mut dyn Host,
        status: u16,
        error: &ApiError,
        outcome: &str,
    ) -> Action {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(error.headers.iter().cloned());
        headers.extend(self.notes.response_headers.iter().cloned());
        host.send_response(status, &headers, &self.api.error_body(error));
        self.response = None;
        host.set_filter_state(filter_state::OUTCOME, outcome);
        self.count_error(host, outcome);
        self.account(host);
        self.state = State::Answered;
        Action::Pause
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
        if self.first_token_recorded || self.is_attempt() {
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
        let provider = self.answering_provider(route);
        let server = provider.authority.rsplit_once(':').map_or(
            provider.authority.as_str(),
            |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') {
                    host
                } else {
                    provider.authority.as_str()
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
                provider.kind.gen_ai_name().to_string(),
            ),
            (
                metrics::REQUEST_MODEL,
                metrics::model_label(
                    &route.name,
                    route.provider.model.is_some() || route.provider.models.is_some(),
                    &self.exchange.model,
                ),
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
        let usage = self
            .exchange_usage
            .or(self.usage_estimate)
            .unwrap_or_default();
        let cost_micros = if route.request_stages.iter().any(|stage| stage.counts_cost()) {
            self.priced(&usage).micros
        } else {
            0
        };
        let callouts = route
            .request_stages
            .iter()
            .flat_map(|stage| stage.settle(&mut self.notes, usage, cost_micros, host))
            .collect::<Vec<_>>();
        for callout in callouts {
            if let Err(reason) = host.dispatch_detached(&callout) {
                log::warn!(
                    "aigate: route {}: usage report to {} failed: {reason}",
                    route.name,
                    callout.cluster
                );
            }
        }
    }

    /// The cost of `usage` on this exchange: priced under the model the answer named, else
    /// the model sent upstream (`cost::PriceTable::price`).
    fn priced(&self, usage: &Usage) -> crate::cost::Priced {
        self.plan
            .pricing
            .price(usage, self.answer_model.as_deref(), &self.exchange.model)
    }

    /// The cost counters and `aigate.cost_usd` of an answer with this usage (with `pricing`
    /// set). The `gen_ai.response.model` label is the price table's key that priced it (a
    /// configured name, so the label stays bounded whatever the upstream names), or for an
    /// unpriced answer the request's model label.
    fn account_cost(&self, route: &Route, usage: &Usage, host: &mut dyn Host) {
        if self.plan.pricing.is_empty() {
            return;
        }
        let priced = self.priced(usage);
        // On a route with fallbacks, the provider whose attempt answered.
        let provider = self.answering_provider(route);
        let (base, model) = match &priced.model {
            Some(model) => (metrics::COST, model.clone()),
            None => (
                metrics::UNPRICED,
                metrics::model_label(
                    &route.name,
                    provider.model.is_some() || provider.models.is_some(),
                    &self.exchange.model,
                ),
            ),
        };
        let labels = [
            ("route", route.name.as_str()),
            (metrics::PROVIDER_NAME, provider.kind.gen_ai_name()),
            (metrics::RESPONSE_MODEL, model.as_str()),
        ];
        let amount = if priced.model.is_some() {
            priced.micros
        } else {
            1
        };
        host.counter_add(&metrics::name(base, &labels), amount);
        host.set_filter_state(
            filter_state::COST_USD,
            &crate::cost::usd_string(priced.micros),
        );
    }

    /// Once per answer: metrics, filter state, and budget charges.
    pub(super) fn account(&mut self, host: &mut dyn Host) {
        if self.accounted {
            return;
        }
        self.accounted = true;
        if self.is_attempt() {
            return; // metrics and budgets belong to the downstream instance
        }
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return;
        };
        let labels = self.model_labels(route, host);
        host.counter_add(&metrics::name(metrics::REQUESTS, &labels.as_refs()), 1);
        let response_model = self
            .response_model
            .as_deref()
            .map(|model| metrics::response_model_label(&route.name, model))
            .unwrap_or_default();
        let elapsed = host.now_ms().saturating_sub(self.started_ms);
        let mut with_model = labels.as_refs();
        with_model.push((metrics::RESPONSE_MODEL, &response_model));
        host.histogram_record(
            &metrics::name(metrics::OPERATION_DURATION, &with_model),
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
            host.counter_add(&metrics::name(metrics::TOKENS, &with_type), count);
            with_type.insert(
                with_type.len() - 1,
                (metrics::RESPONSE_MODEL, &response_model),
            );
            host.histogram_record(&metrics::name(metrics::TOKEN_USAGE, &with_type), count);
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
        self.account_cost(route, &found, host);
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

/// The provider's answer is not the JSON it must be.
fn not_json_answer() -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "invalid_upstream_response",
        "The provider's answer is not valid JSON.",
    )
}

/// The provider's answer could not be decoded (`content-encoding`).
fn unreadable_answer(reason: &encoding::DecodeError) -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "invalid_upstream_response",
        format!("The provider's answer can not be read: {reason}."),
    )
}

/// An observed answer up to this size is kept whole and its usage parsed from the whole;
/// past it only its last `OBSERVE_TAIL` bytes are kept, where the usage of an OpenAI answer
/// is (`usage::from_json_tail`).
const OBSERVE_LIMIT: usize = 8 * 1024 * 1024;
const OBSERVE_TAIL: usize = 64 * 1024;

/// The copy of an answer that passes unchanged: whole up to `OBSERVE_LIMIT`, then its tail.
#[derive(Default)]
pub(super) struct Observed {
    kept: Vec<u8>,
    /// True once the answer outgrew `OBSERVE_LIMIT`: `kept` is its tail since.
    tail_only: bool,
    /// Bytes of the whole answer.
    pub(super) total: usize,
}

impl Observed {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len();
        self.kept.extend_from_slice(chunk);
        if !self.tail_only && self.kept.len() <= OBSERVE_LIMIT {
            return;
        }
        self.tail_only = true;
        if self.kept.len() > 2 * OBSERVE_TAIL {
            let cut = self.kept.len() - OBSERVE_TAIL;
            self.kept.drain(..cut);
            self.kept.shrink_to(2 * OBSERVE_TAIL);
        }
    }

    /// The model the answer names (`json_view::answer_model`, empty taken as none); None
    /// for an answer too large to keep whole. Decodes an encoded answer (pricing needs it).
    fn answer_model(&self, content_encoding: Option<&str>) -> Option<String> {
        if self.tail_only {
            return None;
        }
        let decoded = encoding::decode(content_encoding, &self.kept).ok()?;
        crate::json_view::answer_model(&decoded).filter(|model| !model.is_empty())
    }

    /// The model the answer names (its top-level `model`); None for an answer too large to
    /// keep whole or one not in identity encoding (read only where it is cheap).
    fn model(&self, content_encoding: Option<&str>) -> Option<String> {
        if self.tail_only || !encoding::is_identity(content_encoding) {
            return None;
        }
        crate::json_view::answer_model(&self.kept)
    }

    /// The answer's usage: parsed from the whole answer, or found in the tail of one too
    /// large to keep (an encoded one is decoded first; its tail alone can not be).
    fn usage(&self, api: &dyn ClientApi, content_encoding: Option<&str>) -> Option<Usage> {
        if self.tail_only {
            return encoding::is_identity(content_encoding)
                .then(|| api.usage_from_json_tail(&self.kept))
                .flatten();
        }
        let decoded = encoding::decode(content_encoding, &self.kept).ok()?;
        api.usage_from_json(&decoded)
    }
}

struct Labels(Vec<(&'static str, String)>);

impl Labels {
    fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// The host could not give the filter the answer's bytes: the gateway's failure.
fn unreadable_answer_body() -> ApiError {
    ApiError::new(
        500,
        "api_error",
        "unreadable_response_body",
        "The gateway could not read the provider's answer, so it was not relayed.",
    )
}
