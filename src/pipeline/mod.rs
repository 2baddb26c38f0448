//! The per-request state machine over Envoy's phases and the callouts stages ask for.
//!
//! Request: headers (route, method, size, upstream headers) → body (parse, shape, model,
//! stages: limits, guards, transformer) → provider translation. Response: headers (mode) →
//! body (JSON: translate, usage, response stages; stream: event by event) → accounting.
//! Every host interaction goes through `Host`, so all of it runs natively in tests.

pub mod aggregate;
pub mod attempt;
pub mod in_place;
pub mod matching;
pub mod stage;
pub mod stream;

use std::rc::Rc;

use serde_json::{json, Value};

use crate::api::{self, Operation};
use crate::client_api::{self, ClientApi, Translation};
use crate::config::Auth;
use crate::error::ApiError;
use crate::host::{CalloutReply, Host};
use crate::plan::{Plan, Route};
use crate::providers::{Exchange, CLIENT_CREDENTIAL_HEADERS};
use crate::usage::Usage;
use stage::{Notes, RequestCtx, ResponseCtx, ResponseOverride, Side, Step};
use stream::StreamProcessor;

/// What the glue returns to Envoy from a phase callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Filter-state keys (`%FILTER_STATE(wasm.aigate.<key>:PLAIN)%`).
pub mod filter_state {
    pub const ROUTE: &str = "aigate.route";
    pub const PROVIDER: &str = "aigate.provider";
    pub const MODEL: &str = "aigate.model";
    pub const PROMPT_TOKENS: &str = "aigate.prompt_tokens";
    pub const COMPLETION_TOKENS: &str = "aigate.completion_tokens";
    pub const TOTAL_TOKENS: &str = "aigate.total_tokens";
    /// The answer's cost in US dollars, six places (`0.000123`), when `pricing` is set.
    pub const COST_USD: &str = "aigate.cost_usd";
    pub const OUTCOME: &str = "aigate.outcome";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No route matched, or the filter has nothing more to do: stay out of the way.
    Passthrough,
    /// A matched request whose body is being read.
    ReadingRequest,
    /// Waiting for the reply of a request stage's callout.
    RequestCallout,
    /// The request went upstream; the answer has not started.
    Upstream,
    /// Reading the answer.
    Responding,
    /// Waiting for the reply of a response stage's callout.
    ResponseCallout,
    /// The filter answered locally; ignore everything that follows.
    Answered,
}

enum ResponseMode {
    /// Bytes pass unchanged; a copy is kept to read usage at the end.
    ObserveJson(response::Observed),
    /// The whole answer is buffered and rewritten (translation, stages, synthesised stream).
    BufferJson,
    /// An upstream error, rewritten into the OpenAI error shape.
    Error(u16),
    Stream(Box<StreamProcessor>),
}

pub struct Flow {
    plan: Rc<Plan>,
    route: usize,
    state: State,
    operation: Operation,
    /// The client API of the request (`client_api`): everything API-specific goes through it.
    api: &'static dyn ClientApi,
    /// How the request reaches the route's provider (passthrough, codec, or bridged).
    translation: Translation,
    /// The request as the client sent it, kept on passthrough (`Translation::Native`) routes
    /// so that a body no stage changed goes upstream byte for byte.
    request_as_sent: Option<Value>,
    request_headers: Vec<(String, String)>,
    started_ms: u64,
    request_body_size: usize,
    /// The buffered request body's size at its last body callback: a request that ends with
    /// trailers is read from the trailers callback with it.
    request_seen: usize,
    body: Value,
    exchange: Exchange,
    notes: Notes,
    next_stage: usize,
    /// How many request stages already ran in the headers phase (`runs_on_headers`).
    first_body_stage: usize,
    pending_token: Option<u32>,
    response: Option<ResponseMode>,
    response_body_size: usize,
    /// The size Envoy reported at the last response body callback (cumulative while the
    /// answer is buffered): an answer that ends with trailers is finished from there.
    response_seen: usize,
    /// True while the answer's trailers callback finishes it (nothing can be added to a
    /// relayed body then).
    at_trailers: bool,
    response_override: ResponseOverride,
    /// A response stage's verbatim replacement of the answer (a transformer's reply).
    raw_response: Option<Vec<u8>>,
    /// The answer's `content-encoding` when not identity: decoded wherever the filter reads it.
    response_encoding: Option<String>,
    /// Decodes a compressed event stream as it flows; the client gets it decoded.
    stream_inflater: Option<crate::encoding::Inflater>,
    /// A stream that could not be read or decoded was ended with an error event (or an
    /// observed JSON answer the host would not give, with the error body): the rest of it is
    /// dropped.
    stream_broken: bool,
    exchange_usage: Option<Usage>,
    /// The model the last usage of the answer names (`json_view::answer_model`), read only
    /// when `pricing` is set: it is priced under that name when the table has it.
    answer_model: Option<String>,
    /// The model the answer names, as the provider wrote it (`gen_ai.response.model` of the
    /// usage and duration metrics).
    response_model: Option<String>,
    /// What an answer whose usage never arrived is charged instead (`usage::estimate`).
    usage_estimate: Option<Usage>,
    headers_held: bool,
    first_byte_recorded: bool,
    first_byte_ms: u64,
    first_token_recorded: bool,
    accounted: bool,
    /// Bodies of the common route are rewritten in place (`in_place`); off, every body
    /// takes the general `Value` path (tests compare the two).
    in_place: bool,
    /// Redacts configured secrets from the answer body as it is relayed (`secrets`).
    redactor: crate::secrets::Redactor,
    /// `error.type` of the exchange's metrics once it failed (the error code).
    error_type: Option<String>,
    /// Set when this flow is one attempt of a route with fallbacks (`attempt`).
    attempt: Option<attempt::Attempt>,
    /// On a route with fallbacks: the index of the provider whose attempt answered.
    answered_by: Option<usize>,
}

impl Flow {
    pub fn new(plan: Rc<Plan>) -> Flow {
        Flow {
            plan,
            route: 0,
            state: State::Passthrough,
            operation: Operation::ChatCompletions,
            api: &client_api::chat::Chat,
            translation: Translation::Codec,
            request_as_sent: None,
            request_headers: Vec::new(),
            started_ms: 0,
            request_body_size: 0,
            request_seen: 0,
            body: Value::Null,
            exchange: Exchange::default(),
            notes: Notes::default(),
            next_stage: 0,
            first_body_stage: 0,
            pending_token: None,
            response: None,
            response_body_size: 0,
            response_seen: 0,
            at_trailers: false,
            response_override: ResponseOverride::default(),
            raw_response: None,
            response_encoding: None,
            stream_inflater: None,
            stream_broken: false,
            exchange_usage: None,
            answer_model: None,
            response_model: None,
            usage_estimate: None,
            headers_held: false,
            first_byte_recorded: false,
            first_byte_ms: 0,
            first_token_recorded: false,
            accounted: false,
            in_place: true,
            redactor: crate::secrets::Redactor::default(),
            error_type: None,
            attempt: None,
            answered_by: None,
        }
    }

    /// Turns the in-place path off (or on again) for this request.
    pub fn set_in_place(&mut self, on: bool) {
        self.in_place = on;
    }

    fn route(&self) -> Option<&Route> {
        self.plan.routes.get(self.route)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    // ---------------------------------------------------------------- request headers

    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let mut headers = host.request_headers();
        for (name, _) in &mut headers {
            name.make_ascii_lowercase();
        }
        self.request_headers = headers;
        if self.plan.has_fallbacks() {
            match self.enter_attempt(host) {
                Ok(true) => {}
                Ok(false) => {
                    self.state = State::Passthrough;
                    return Action::Continue;
                }
                Err(error) => return self.reject(host, error),
            }
        }
        let route_name = if self.plan.matches_route_names() {
            host.property(&["xds", "route_name"])
                .and_then(|bytes| String::from_utf8(bytes).ok())
        } else {
            None
        };
        let selected = {
            let input = matching::MatchInput {
                route_name: route_name.as_deref(),
                authority: self.header(":authority").unwrap_or_default(),
                path: self.header(":path").unwrap_or_default(),
                headers: &self.request_headers,
            };
            matching::select_route(&self.plan, &input)
        };
        let Some(route_index) = selected else {
            self.state = State::Passthrough;
            return Action::Continue;
        };
        self.route = route_index;
        self.started_ms = host.now_ms();
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(route_index) else {
            return Action::Continue;
        };
        self.mark_fallback_route(host, route);
        host.set_filter_state(filter_state::ROUTE, &route.name);
        host.set_filter_state(
            filter_state::PROVIDER,
            self.answering_provider(route).kind.as_str(),
        );

        let path = self.header(":path").unwrap_or_default().to_string();
        let method = self.header(":method").unwrap_or_default().to_string();
        let Some(operation) = client_api::operation_for_path(&path) else {
            if self.header("anthropic-version").is_some() {
                // An Anthropic client: the error in its shape.
                self.api = &client_api::messages::Messages;
            }
            return self.reject(
                host,
                ApiError::new(
                    404,
                    "invalid_request_error",
                    "unknown_endpoint",
                    format!(
                        "The gateway does not serve {} on this route.",
                        path.split('?').next().unwrap_or_default()
                    ),
                ),
            );
        };
        self.operation = operation;
        if let Some(api) = client_api::of(operation) {
            // Errors from here on take the client API's shape.
            self.api = api;
        }
        if method != operation.method() {
            return self.reject(
                host,
                ApiError::invalid_request(
                    "method_not_allowed",
                    format!(
                        "{} {} is not supported; use {}.",
                        method,
                        operation.path_suffix(),
                        operation.method()
                    ),
                )
                .with_header("allow", operation.method()),
            );
        }
        let Some(api) = client_api::of(operation) else {
            // The model list: answered by the filter from the route's config, in Anthropic's
            // shape for an Anthropic client (it sends `anthropic-version`).
            let body = list_models(
                self.answering_provider(route),
                self.header("anthropic-version").is_some(),
            );
            host.send_response(
                200,
                &[("content-type".into(), "application/json".into())],
                &body,
            );
            self.state = State::Answered;
            return Action::Pause;
        };
        self.api = api;
        let Some(translation) = api.translation(route.provider.codec()) else {
            return self.reject(
                host,
                ApiError::invalid_request(
                    "unsupported_operation",
                    format!(
                        "Provider {} on route {} does not support {}.",
                        route.provider.kind.as_str(),
                        route.name,
                        operation.path_suffix()
                    ),
                ),
            );
        };
        // On a route with fallbacks each attempt translates for its provider (`attempt`):
        // here the request stays in the client's API.
        self.translation = match translation {
            Translation::ViaChat if route.attempts.is_some() => Translation::Native,
            translation => translation,
        };
        let max = route.shaping.max_body_bytes;
        if let Some(length) = self
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if length > max {
                return self.reject(host, body_too_large(max));
            }
        }
        if end_of_stream {
            return self.reject(
                host,
                ApiError::invalid_request(
                    "invalid_json",
                    "The request body is empty; expected a JSON object.",
                ),
            );
        }
        self.state = State::ReadingRequest;
        // The leading stages that need no body (a local budget check) run now: a client
        // over budget then never causes an upstream request.
        while let Some(stage) = route
            .request_stage(self.first_body_stage)
            .filter(|stage| stage.runs_on_headers())
        {
            let step = self.with_request_ctx(host, route, |ctx| stage.start(ctx));
            match step {
                Step::Next => self.first_body_stage += 1,
                Step::Reject(error) => return self.reject(host, error),
                Step::Call(_) => break, // not synchronous after all: it runs with the body
            }
        }
        if self.plan.allow_on_headers_stop_iteration {
            // Headers are held until the body is read, so they may depend on it.
            Action::Pause
        } else {
            self.write_upstream_headers(host, None, None);
            Action::Continue
        }
    }

    /// Authority, path, credential and provider headers for the upstream request.
    fn write_upstream_headers(
        &self,
        host: &mut dyn Host,
        model: Option<&str>,
        stream: Option<bool>,
    ) {
        let Some(route) = self.route() else { return };
        if route.attempts.is_some() {
            // Each attempt writes its provider's headers (`attempt`); the body may change.
            if self.header("content-length").is_some() {
                host.set_request_header("content-length", None);
            }
            return;
        }
        let provider = &route.provider;
        // Each header call is a round trip out of the VM: change only what differs from the
        // headers read in the headers phase (the filter is the only one changing them since).
        let set = |host: &mut dyn Host, name: &str, value: &str| {
            let mut sent = self.request_headers.iter().filter(|(key, _)| key == name);
            let already = sent.next().is_some_and(|(_, v)| v == value) && sent.next().is_none();
            if !already {
                host.set_request_header(name, Some(value));
            }
        };
        let remove = |host: &mut dyn Host, name: &str| {
            if self.header(name).is_some() {
                host.set_request_header(name, None);
            }
        };
        set(host, ":authority", &provider.authority);
        let mut path = provider.upstream_path(self.upstream_operation(), model, stream);
        if self.translation == Translation::Native && self.api.forwards_query() {
            // The client's query goes on to a provider that speaks its API (Claude Code's
            // `?beta=true`); a translated request never carries it.
            if let Some((_, query)) = self.header(":path").unwrap_or_default().split_once('?') {
                if !query.is_empty() {
                    let separator = if path.contains('?') { '&' } else { '?' };
                    path = format!("{path}{separator}{query}");
                }
            }
        }
        set(host, ":path", &path);
        let credential = provider.credential_header();
        if provider.auth != Auth::Passthrough {
            for name in CLIENT_CREDENTIAL_HEADERS {
                // Setting the provider's own header replaces what the client sent in it.
                if credential.as_ref().map(|(header, _)| *header) != Some(name) {
                    remove(host, name);
                }
            }
        }
        if let Some((name, value)) = &credential {
            host.set_request_header(name, Some(value));
        }
        for (name, value) in provider.extra_headers() {
            // On passthrough the client's own protocol headers (`anthropic-version`) win;
            // the provider's default fills in when the client sent none.
            if self.translation == Translation::Native && self.header(name).is_some() {
                continue;
            }
            host.set_request_header(name, Some(&value));
        }
        // The body is rewritten, and the answer must be readable (not compressed). Without
        // the header a server may pick any encoding (RFC 9110 12.5.3), so ask for identity;
        // an answer compressed anyway is decoded where the filter reads it (`encoding`).
        remove(host, "content-length");
        set(host, "accept-encoding", "identity");
        set(host, "content-type", "application/json");
    }

    // ---------------------------------------------------------------- request body

    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        match self.state {
            State::ReadingRequest => {}
            State::Passthrough => return Action::Continue,
            _ => return Action::Pause,
        }
        let Some(max) = self.route().map(|r| r.shaping.max_body_bytes) else {
            return Action::Continue;
        };
        if body_size as u64 > max {
            return self.reject(host, body_too_large(max));
        }
        self.request_seen = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        self.request_body_size = body_size;
        let bytes = match host.request_body(body_size) {
            Some(bytes) if bytes.len() == body_size => bytes,
            None if body_size == 0 => Vec::new(),
            // Never forward a body the guards could not read (or read only part of).
            _ => return self.reject(host, unreadable_body()),
        };
        if let Some(progress) = self.request_in_place(&bytes, host) {
            return match progress {
                Progress::Done => Action::Continue,
                Progress::Waiting | Progress::Rejected => Action::Pause,
            };
        }
        match self.prepare_request(&bytes, host) {
            Ok(()) => {}
            Err(error) => return self.reject(host, error),
        }
        self.next_stage = self.first_body_stage;
        match self.run_request_stages(host) {
            Progress::Done => Action::Continue,
            Progress::Waiting | Progress::Rejected => Action::Pause,
        }
    }

    /// A request that ends with trailers (HTTP/2 HEADERS after the last DATA frame) ends
    /// here instead of at a body callback with end of stream: it is read and guarded exactly
    /// as if its last body callback had ended it. Returning `Pause` holds the trailers (and so
    /// the request) until the body stages finish.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        match self.state {
            State::ReadingRequest => self.on_request_body(host, self.request_seen, true),
            State::RequestCallout => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// Parse, shape, validate and resolve the model: the synchronous part of the request.
    fn prepare_request(&mut self, bytes: &[u8], host: &mut dyn Host) -> Result<(), ApiError> {
        let plan = Rc::clone(&self.plan);
        let route = plan.routes.get(self.route).ok_or_else(internal_error)?;
        let mut body = api::parse_body(bytes)?;
        // A body with a repeated key is re-serialised (parsers differ on which one wins):
        // the provider then reads exactly what the guards read.
        if self.translation == Translation::Native && !crate::json_view::has_duplicate_keys(bytes) {
            self.request_as_sent = Some(body.clone());
        }
        route.shaping.apply_as(&mut body, self.api.shaping_form())?;
        self.api.validate(&body)?;
        let requested = body.get("model").and_then(Value::as_str);
        let model = route.provider.resolve_model(requested)?.unwrap_or_default();
        route.provider.check_model_name(&model)?;
        if let Some(object) = body.as_object_mut() {
            object.insert("model".into(), Value::String(model.clone()));
        }
        let client_stream = self.api.is_stream(&body);
        let upstream_stream = self.upstream_stream(route, client_stream);
        let wants_usage = self.api.wants_stream_usage(&body);
        self.start_exchange(host, model, client_stream, upstream_stream, wants_usage);
        self.body = body;
        Ok(())
    }

    fn upstream_stream(&self, route: &Route, client_stream: bool) -> bool {
        route.provider.upstream_stream(
            client_stream,
            route.needs_whole_answer(),
            !self.plan.allow_on_headers_stop_iteration,
        )
    }

    fn start_exchange(
        &mut self,
        host: &mut dyn Host,
        model: String,
        client_stream: bool,
        upstream_stream: bool,
        client_wants_usage: bool,
    ) {
        host.set_filter_state(filter_state::MODEL, &model);
        self.exchange = Exchange {
            model,
            client_stream,
            upstream_stream,
            client_wants_usage,
            created: self.started_ms / 1000, // read in the headers phase: one clock read fewer
            id: format!("chatcmpl-{}", random_hex(12)),
            operation: self.upstream_operation(),
            client_operation: self.operation,
        };
    }

    /// The common route's request (an OpenAI-shaped provider, no shaping, only regex guards
    /// as body stages) without a `Value`: read in place, guarded, and written back only
    /// where it changed (`in_place`). None when the general path must handle it; nothing
    /// has happened then.
    fn request_in_place(&mut self, bytes: &[u8], host: &mut dyn Host) -> Option<Progress> {
        let plan = Rc::clone(&self.plan);
        let route = plan.routes.get(self.route)?;
        if !self.in_place || !route.shaping.is_identity() || !self.body_read_in_place(route) {
            return None;
        }
        let guards = (self.first_body_stage..)
            .map_while(|index| route.request_stage(index))
            .map(|stage| stage.text_stage())
            .collect::<Option<Vec<_>>>()?;
        let body = std::str::from_utf8(bytes).ok()?;
        let mut request = self.api.read_request(body)?;
        let client_stream = self.api.streams() && request.stream;
        let upstream_stream = self.upstream_stream(route, client_stream);
        let model = route
            .provider
            .resolve_model(request.requested_model.as_deref())
            .map(Option::unwrap_or_default)
            .and_then(|model| route.provider.check_model_name(&model).map(|()| model));
        let (model, mut edits) = match model {
            Err(error) => {
                self.reject(host, error);
                return Some(Progress::Rejected);
            }
            Ok(model) => {
                let edits = request.field_edits(
                    &model,
                    self.api.streams(),
                    client_stream,
                    upstream_stream,
                )?;
                (model, edits)
            }
        };
        self.start_exchange(
            host,
            model,
            client_stream,
            upstream_stream,
            request.wants_usage,
        );
        for guard in guards {
            if let Step::Reject(error) = guard.apply_in_place(&mut request.texts, host) {
                self.reject(host, error);
                return Some(Progress::Rejected);
            }
        }
        edits.append(in_place::text_edits(&request.texts));
        if !edits.is_empty() {
            let Some(rewritten) = edits.apply(bytes) else {
                self.reject(host, internal_error());
                return Some(Progress::Rejected);
            };
            host.replace_request_body(self.request_body_size, &rewritten);
        }
        self.request_written(host);
        Some(Progress::Done)
    }

    /// Runs one call of a request stage with this request's context.
    fn with_request_ctx(
        &mut self,
        host: &mut dyn Host,
        route: &Route,
        call: impl FnOnce(&mut RequestCtx<'_>) -> Step,
    ) -> Step {
        let mut ctx = RequestCtx {
            route_name: &route.name,
            request_headers: &self.request_headers,
            body: &mut self.body,
            exchange: &mut self.exchange,
            notes: &mut self.notes,
            host,
        };
        call(&mut ctx)
    }

    /// Runs one call of a response stage with this answer's context; keeps a verbatim
    /// replacement body the stage set.
    fn with_response_ctx(
        &mut self,
        host: &mut dyn Host,
        route: &Route,
        call: impl FnOnce(&mut ResponseCtx<'_>) -> Step,
    ) -> Step {
        let mut raw = None;
        let step = {
            let mut ctx = ResponseCtx {
                route_name: &route.name,
                request_headers: &self.request_headers,
                body: &mut self.body,
                raw_body: &mut raw,
                exchange: &self.exchange,
                notes: &mut self.notes,
                overrides: &mut self.response_override,
                host,
            };
            call(&mut ctx)
        };
        if raw.is_some() {
            self.raw_response = raw;
        }
        step
    }

    fn run_request_stages(&mut self, host: &mut dyn Host) -> Progress {
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return Progress::Done;
        };
        while let Some(stage) = route.request_stage(self.next_stage) {
            // Each stage reads what the translation will send (JSON-in-string fields
            // decoded), also after a transformer rewrote the request.
            if self.translation == Translation::Codec {
                route.provider.codec().normalize_request(&mut self.body);
            }
            let step = self.with_request_ctx(host, route, |ctx| stage.start(ctx));
            match self.follow_step(host, route, Side::Request, step) {
                Some(progress) => return progress,
                None => self.next_stage += 1,
            }
        }
        self.finish_request(host, route)
    }

    /// Carries out a stage's step; None means "go on with the next stage". A callout Envoy
    /// refuses to start is answered to the stage at once as a failure.
    fn follow_step(
        &mut self,
        host: &mut dyn Host,
        route: &Route,
        side: Side,
        mut step: Step,
    ) -> Option<Progress> {
        loop {
            match step {
                Step::Next => return None,
                Step::Reject(error) => {
                    match side {
                        Side::Request => {
                            self.reject(host, error);
                        }
                        Side::Response => self.replace_with_error(host, error),
                    }
                    return Some(Progress::Rejected);
                }
                Step::Call(callout) => match host.dispatch(&callout) {
                    Ok(token) => {
                        self.pending_token = Some(token);
                        self.state = match side {
                            Side::Request => State::RequestCallout,
                            Side::Response => State::ResponseCallout,
                        };
                        return Some(Progress::Waiting);
                    }
                    Err(reason) => {
                        log::warn!(
                            "aigate: route {}: callout to cluster {} failed: {reason}",
                            route.name,
                            callout.cluster
                        );
                        step = self.stage_reply(host, route, side, &dispatch_failure_reply())?;
                    }
                },
            }
        }
    }

    /// Gives a callout's reply to the stage that asked for it.
    fn stage_reply(
        &mut self,
        host: &mut dyn Host,
        route: &Route,
        side: Side,
        reply: &CalloutReply,
    ) -> Option<Step> {
        Some(match side {
            Side::Request => {
                let stage = route.request_stage(self.next_stage)?;
                self.with_request_ctx(host, route, |ctx| stage.on_reply(ctx, reply))
            }
            Side::Response => {
                let stage = route.response_stage(self.next_stage)?;
                self.with_response_ctx(host, route, |ctx| stage.on_reply(ctx, reply))
            }
        })
    }

    fn finish_request(&mut self, host: &mut dyn Host, route: &Route) -> Progress {
        let encoded = match self.translation {
            Translation::Native => {
                if self.native_request_changed() {
                    let bytes = crate::json::to_vec(&self.body, self.request_body_size + 64);
                    host.replace_request_body(self.request_body_size, &bytes);
                }
                // Unchanged: the client's bytes go upstream untouched.
                Ok(())
            }
            Translation::Codec => route
                .provider
                .encode_request(&self.body, &self.exchange)
                .map(|encoded| self.write_request(host, &encoded)),
            Translation::ViaChat => self
                .bridged_request(route)
                .map(|encoded| self.write_request(host, &encoded)),
        };
        if let Err(error) = encoded {
            self.reject(host, error);
            return Progress::Rejected;
        }
        self.request_written(host);
        Progress::Done
    }

    fn write_request(&self, host: &mut dyn Host, encoded: &Value) {
        let bytes = crate::json::to_vec(encoded, self.request_body_size + 64);
        host.replace_request_body(self.request_body_size, &bytes);
    }

    /// The operation the provider is asked for: the client's, unless the request is bridged
    /// to chat completions.
    fn upstream_operation(&self) -> Operation {
        match self.translation {
            Translation::ViaChat => Operation::ChatCompletions,
            Translation::Native | Translation::Codec => self.operation,
        }
    }

    /// Whether the body (request, or answer) may be read and edited in place: the client's
    /// own form on a passthrough route, or an OpenAI body the provider takes as it is.
    fn body_read_in_place(&self, route: &Route) -> bool {
        match self.translation {
            Translation::Native => true,
            Translation::Codec => route.provider.codec().takes_openai_body(),
            Translation::ViaChat => false,
        }
    }

    /// Whether a passthrough request must be rewritten: a stage changed it, or the filter
    /// turned its stream off upstream (a response stage needs the whole answer).
    fn native_request_changed(&mut self) -> bool {
        if self.api.streams() && self.exchange.upstream_stream != self.exchange.client_stream {
            if let Some(object) = self.body.as_object_mut() {
                object.insert("stream".into(), Value::Bool(self.exchange.upstream_stream));
            }
        }
        self.request_as_sent.take().as_ref() != Some(&self.body)
    }

    /// A bridged request: the client's form (stages done) as chat completions, then the
    /// provider's codec.
    fn bridged_request(&self, route: &Route) -> Result<Value, ApiError> {
        let bridge = self.api.chat_bridge().ok_or_else(internal_error)?;
        let mut chat = bridge.request_to_chat(&self.body, &self.exchange)?;
        route.provider.codec().normalize_request(&mut chat);
        route.provider.encode_request(&chat, &self.exchange)
    }

    /// The body is final: headers held until now follow it upstream.
    fn request_written(&mut self, host: &mut dyn Host) {
        if self.plan.allow_on_headers_stop_iteration {
            let model = self.exchange.model.clone();
            self.write_upstream_headers(host, Some(&model), Some(self.exchange.upstream_stream));
        }
        // The provider now has the prompt: a client that leaves before any answer byte or
        // usage reaches the filter is still charged its input (the answer refines this).
        self.usage_estimate = Some(crate::usage::estimate(self.request_body_size, 0));
        self.state = State::Upstream;
    }

    // ---------------------------------------------------------------- callouts

    pub fn on_callout_reply(&mut self, host: &mut dyn Host, token: u32, reply: CalloutReply) {
        if self.pending_token != Some(token) {
            return; // a fire-and-forget call (limit report), or one for an ended request
        }
        self.pending_token = None;
        let plan = Rc::clone(&self.plan);
        let Some(route) = plan.routes.get(self.route) else {
            return;
        };
        let side = match self.state {
            State::RequestCallout => Side::Request,
            State::ResponseCallout => Side::Response,
            _ => return,
        };
        let Some(step) = self.stage_reply(host, route, side, &reply) else {
            return;
        };
        self.state = match side {
            Side::Request => State::ReadingRequest,
            Side::Response => State::Responding,
        };
        let progress = match self.follow_step(host, route, side, step) {
            Some(progress) => progress,
            None => {
                self.next_stage += 1;
                match side {
                    Side::Request => self.run_request_stages(host),
                    Side::Response => self.run_response_stages(host),
                }
            }
        };
        match side {
            Side::Request if progress == Progress::Done => host.resume_request(),
            Side::Response if progress != Progress::Waiting => host.resume_response(),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Done,
    Waiting,
    Rejected,
}

fn body_too_large(max: u64) -> ApiError {
    ApiError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("The request body exceeds the limit of {max} bytes."),
    )
}

fn unreadable_body() -> ApiError {
    ApiError::new(
        500,
        "api_error",
        "unreadable_request_body",
        "The gateway could not read the request body, so it was not forwarded.",
    )
}

fn internal_error() -> ApiError {
    ApiError::new(
        500,
        "api_error",
        "internal_error",
        "The gateway failed to process the request.",
    )
}

/// What a stage sees when Envoy refused to start its callout (for example an unknown cluster).
fn dispatch_failure_reply() -> CalloutReply {
    CalloutReply {
        status: 503,
        headers: Vec::new(),
        body: b"callout could not be dispatched".to_vec(),
        grpc_status: None,
    }
}

fn list_models(provider: &crate::providers::Provider, anthropic: bool) -> Vec<u8> {
    let owner = provider.kind.as_str();
    let names: Vec<&str> = match (&provider.models, &provider.model) {
        (Some(models), _) => models.keys().map(String::as_str).collect(),
        (None, Some(model)) => vec![model.as_str()],
        (None, None) => Vec::new(),
    };
    if anthropic {
        return client_api::messages::model_list(&names)
            .to_string()
            .into_bytes();
    }
    let data: Vec<Value> = names
        .iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

/// Random hex for response ids. Ids must be unique, not secret: a per-VM splitmix64 seeded
/// once from the host's entropy spares every request a host call (and `format!` per byte).
fn random_hex(bytes: usize) -> String {
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    STATE.with(|state| {
        if state.get() == 0 {
            let mut seed = [0u8; 8];
            let _ = getrandom::getrandom(&mut seed);
            state.set(u64::from_le_bytes(seed) | 1);
        }
        let mut out = String::with_capacity(bytes * 2);
        while out.len() < bytes * 2 {
            let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(next);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            for byte in z.to_le_bytes().into_iter().take(bytes - out.len() / 2) {
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
        out
    })
}

mod response;

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_distinct() {
        let a = super::random_hex(12);
        let b = super::random_hex(12);
        assert_eq!(a.len(), 24);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(super::random_hex(3).len(), 6);
        assert_eq!(super::random_hex(0), "");
    }
}
