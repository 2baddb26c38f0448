//! `aigate explain`: one request through the filter's real `Flow`, with a `TracingHost`
//! standing in for Envoy. It prints which route matched (and why earlier ones did not), the
//! stages of that route, what they recorded (outcome metrics, filter state, callouts), the
//! body changes, and the request that would go upstream, with credentials redacted.
//!
//! Callouts cannot be answered by a dry run: each `--callout-reply FILE` answers the next
//! one; without one the run stops at the first callout and says so.

use std::io::Write;
use std::rc::Rc;

use serde_json::Value;

use super::args::{Options, RequestOptions};
use super::check::{compile_all, describe_matcher, describe_route, display_name, CliEnv};
use super::json_diff::{self, Change};
use super::redact::Redactor;
use super::trace::{split_metric, Event, TracingHost};
use super::{read_input, EXIT_INVALID, EXIT_OK};
use aigate_core::host::{Callout, CalloutKind, CalloutReply, RecordingHost};
use aigate_core::metrics;
use aigate_core::pipeline::{filter_state, matching, Action, Flow};
use aigate_core::plan::{Plan, Route, RouteMatcher};

/// Longest body or value shown in full; the rest is elided.
const MAX_SHOWN_BYTES: usize = 64 * 1024;
const MAX_VALUE_CHARS: usize = 200;

pub fn run(
    options: &Options,
    request: &RequestOptions,
    process_env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let config_text = read_input(&options.config)?;
    let env = CliEnv::new(options, process_env);
    let plan = match compile_all(&config_text, &env) {
        Ok(plan) => plan,
        Err(errors) => {
            let _ = writeln!(
                out,
                "{}: invalid, {} error(s)",
                display_name(&options.config),
                errors.len()
            );
            for error in &errors {
                let _ = writeln!(out, "  {error}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    let raw_config: Value = serde_json::from_slice(&config_text).unwrap_or(Value::Null);
    let redactor = Redactor::from_config(&raw_config, &|name| env.var(name));
    let body = read_input(&request.request)?;
    let mut replies = Vec::with_capacity(request.callout_replies.len());
    for path in &request.callout_replies {
        replies.push((
            path.clone(),
            load_reply(&read_input(path)?).map_err(|e| format!("{path}: {e}"))?,
        ));
    }
    let upstream = match &request.upstream_response {
        Some(path) => Some(read_input(path)?),
        None => None,
    };
    let dry_run = DryRun {
        plan: Rc::new(plan),
        raw_config,
        redactor,
        request,
        replies,
        out: Vec::new(),
    };
    let lines = dry_run.explain(&body, upstream.as_deref());
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(EXIT_OK)
}

/// `{"status":200,"headers":{"k":"v"} or [["k","v"]],"body":<JSON or string>,"grpc_status":0}`
pub fn load_reply(bytes: &[u8]) -> Result<CalloutReply, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("a callout reply must be a JSON object".into());
    };
    for key in object.keys() {
        if !["status", "headers", "body", "grpc_status"].contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?} (expected status, headers, body, grpc_status)"
            ));
        }
    }
    let status = match object.get("status") {
        None => 200,
        Some(value) => value
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .ok_or("\"status\" must be an HTTP status")?,
    };
    let mut headers = Vec::new();
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                headers.push((
                    name.to_ascii_lowercase(),
                    value
                        .as_str()
                        .ok_or("header values must be strings")?
                        .to_string(),
                ));
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), Value::String(value)]) => {
                        headers.push((name.to_ascii_lowercase(), value.clone()))
                    }
                    _ => return Err("\"headers\" pairs must be [name, value] strings".into()),
                }
            }
        }
        Some(_) => return Err("\"headers\" must be an object or a list of pairs".into()),
    }
    if !headers.iter().any(|(name, _)| name == ":status") {
        headers.insert(0, (":status".into(), status.to_string()));
    }
    let body = match object.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => serde_json::to_vec(other).map_err(|e| e.to_string())?,
    };
    let grpc_status = match object.get("grpc_status") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .ok_or("\"grpc_status\" must be a number")?,
        ),
    };
    Ok(CalloutReply {
        status,
        headers,
        body,
        grpc_status,
    })
}

struct DryRun<'a> {
    plan: Rc<Plan>,
    raw_config: Value,
    redactor: Redactor,
    request: &'a RequestOptions,
    replies: Vec<(String, CalloutReply)>,
    out: Vec<String>,
}

/// Where a phase ended.
enum Phase {
    /// The filter let the message go on.
    Continued,
    /// The filter answered the client itself.
    Answered,
    /// A stage waits for a callout nobody can answer in a dry run.
    Waiting,
}

impl DryRun<'_> {
    fn say(&mut self, line: impl Into<String>) {
        self.out.push(line.into());
    }

    fn explain(mut self, body: &[u8], upstream: Option<&[u8]>) -> Vec<String> {
        let mut host = TracingHost::new(self.initial_host(body));
        let mut flow = Flow::new(Rc::clone(&self.plan));
        self.say_match(&host.inner.request_headers);
        let plan = Rc::clone(&self.plan);
        let Some(route) = self
            .selected_route(&host.inner.request_headers)
            .and_then(|index| plan.routes.get(index))
        else {
            self.say("");
            self.say("Result: no route matched: the filter passes the request through untouched.");
            return self.out;
        };
        self.say_route(route);

        self.say("");
        self.say("Request:");
        let mut seen = 0;
        let end_of_stream = body.is_empty();
        let mut action = flow.on_request_headers(&mut host, end_of_stream);
        if host.inner.local_response.is_none() && !end_of_stream {
            seen = self.say_events(&host, seen);
            action = flow.on_request_body(&mut host, body.len(), true);
        }
        let (phase, _) = self.follow_callouts(&mut flow, &mut host, action, seen, |h| {
            h.inner.resumed_request
        });
        self.say("");
        match phase {
            Phase::Answered => {
                self.say_local_response(&host.inner);
                return self.out;
            }
            Phase::Waiting => {
                self.say("Result: stopped at a callout the dry run cannot answer (give --callout-reply FILE).");
                return self.out;
            }
            Phase::Continued => {}
        }
        self.say_upstream_request(body, &host.inner);

        let Some(answer) = upstream else {
            return self.out;
        };
        self.say("");
        self.say(format!(
            "Response (upstream answered {}):",
            self.request.upstream_status
        ));
        host.inner.response_headers = self.upstream_headers(answer);
        host.inner.response_body = answer.to_vec();
        let seen = host.events.len();
        let mut action = flow.on_response_headers(&mut host, answer.is_empty());
        if !answer.is_empty() {
            action = flow.on_response_body(&mut host, answer.len(), true);
        }
        let (phase, _) = self.follow_callouts(&mut flow, &mut host, action, seen, |h| {
            h.inner.resumed_response
        });
        self.say("");
        match phase {
            Phase::Waiting => {
                self.say("Result: stopped at a callout the dry run cannot answer (give --callout-reply FILE).");
            }
            Phase::Answered | Phase::Continued => self.say_client_response(&host.inner),
        }
        self.out
    }

    fn initial_host(&self, body: &[u8]) -> RecordingHost {
        let mut host = RecordingHost::new();
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), self.request.method.clone()),
            (":path".into(), self.request.path.clone()),
            (":authority".into(), self.request.host.clone()),
            (":scheme".into(), "http".into()),
            ("content-type".into(), "application/json".into()),
        ];
        if !body.is_empty() {
            headers.push(("content-length".into(), body.len().to_string()));
        }
        for (name, value) in &self.request.headers {
            headers.retain(|(key, _)| key != name);
            headers.push((name.clone(), value.clone()));
        }
        host.request_headers = headers;
        host.request_body = body.to_vec();
        if let Some(route_name) = &self.request.route_name {
            host.set_property_value(&["xds", "route_name"], route_name.as_bytes());
        }
        // Envoy always knows the client's address (budgets keyed by `client_address` need
        // it): the dry run's client is the loopback one.
        host.set_property_value(&["source", "address"], b"127.0.0.1:50000");
        host
    }

    fn match_input<'h>(&'h self, headers: &'h [(String, String)]) -> matching::MatchInput<'h> {
        let find = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
                .unwrap_or_default()
        };
        matching::MatchInput {
            route_name: self.request.route_name.as_deref(),
            authority: find(":authority"),
            path: find(":path"),
            headers,
        }
    }

    fn selected_route(&self, headers: &[(String, String)]) -> Option<usize> {
        matching::select_route(&self.plan, &self.match_input(headers))
    }

    fn say_match(&mut self, headers: &[(String, String)]) {
        let plan = Rc::clone(&self.plan);
        let input = self.match_input(headers);
        let mut lines = vec![format!(
            "Request: {} {} on host {}{}",
            self.request.method,
            self.request.path,
            self.request.host,
            self.request
                .route_name
                .as_ref()
                .map(|name| format!(", Envoy route {name}"))
                .unwrap_or_default()
        )];
        for (index, route) in plan.routes.iter().enumerate() {
            if matching::matches(&route.matcher, &input) {
                lines.push(format!(
                    "Route: {} (routes[{index}]) matched: {}",
                    route.name,
                    describe_matcher(&route.matcher)
                ));
                break;
            }
            lines.push(format!(
                "  skipped routes[{index}] {}: {}",
                route.name,
                why_not(&route.matcher, &input).join("; ")
            ));
        }
        for line in lines {
            self.say(line);
        }
    }

    fn say_route(&mut self, route: &Route) {
        self.say(format!("  {}", describe_route(route)));
        let mode = if self.plan.allow_on_headers_stop_iteration {
            "A (headers held until the body is read)"
        } else {
            "B (upstream headers written in the headers phase)"
        };
        self.say(format!(
            "  mode: {mode}; max_body_bytes {}",
            route.shaping.max_body_bytes
        ));
        let shaping = self.configured_shaping(route);
        if !shaping.is_empty() {
            self.say(format!("  shaping: {}", shaping.join(", ")));
        }
        let mut request_stages = Vec::new();
        let mut index = 0;
        while let Some(stage) = route.request_stage(index) {
            request_stages.push(type_name(&format!("{stage:?}")));
            index += 1;
        }
        let mut response_stages = Vec::new();
        index = 0;
        while let Some(stage) = route.response_stage(index) {
            response_stages.push(type_name(&format!("{stage:?}")));
            index += 1;
        }
        let stream: Vec<String> = route
            .stream_filters
            .iter()
            .map(|f| type_name(&format!("{f:?}")))
            .collect();
        self.say(format!(
            "  request stages: {}",
            list_or_none(&request_stages)
        ));
        self.say(format!(
            "  response stages: {}",
            list_or_none(&response_stages)
        ));
        self.say(format!("  stream filters: {}", list_or_none(&stream)));
    }

    /// The shaping keys the operator set on this route, from the config as written.
    fn configured_shaping(&self, route: &Route) -> Vec<String> {
        let Some(routes) = self.raw_config.get("routes").and_then(Value::as_array) else {
            return Vec::new();
        };
        let Some(request) = routes
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(route.name.as_str()))
            .and_then(|r| r.get("request"))
            .and_then(Value::as_object)
        else {
            return Vec::new();
        };
        request
            .iter()
            .filter(|(key, _)| key.as_str() != "max_body_bytes")
            .map(|(key, value)| match value {
                Value::Array(items) => format!("{key} ({})", items.len()),
                Value::Object(map) => format!(
                    "{key} ({})",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                other => format!("{key}={other}"),
            })
            .collect()
    }

    /// Prints the events recorded since `seen`; returns the new mark.
    fn say_events(&mut self, host: &TracingHost, seen: usize) -> usize {
        for event in host.events.iter().skip(seen) {
            if let Some(line) = self.event_line(event) {
                self.say(line);
            }
            if let Event::Callout { callout, .. } = event {
                let detail = self.callout_detail(callout);
                for line in detail {
                    self.say(line);
                }
            }
        }
        host.events.len()
    }

    fn event_line(&self, event: &Event) -> Option<String> {
        match event {
            Event::Counter { name, delta } => {
                let Some((labels, base)) = split_metric(name) else {
                    return Some(format!("  metric {name} +{delta}"));
                };
                let labels = labels
                    .iter()
                    .filter(|(key, _)| {
                        !matches!(
                            key.as_str(),
                            "route" | metrics::OPERATION_NAME | metrics::SERVER_ADDRESS
                        )
                    })
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                match base {
                    metrics::REQUESTS
                    | metrics::TOKENS
                    | metrics::OPERATION_DURATION
                    | metrics::TIME_TO_FIRST_CHUNK => None,
                    metrics::TOKEN_USAGE => Some(format!("  usage: {labels} {delta}")),
                    metrics::COST => Some(format!(
                        "  cost: {labels} {delta} micro-dollars (USD {})",
                        aigate_core::cost::usd_string(*delta)
                    )),
                    metrics::UNPRICED => Some(format!(
                        "  cost: {labels} has no price in \"pricing\": counted as 0"
                    )),
                    metrics::ERRORS => Some(format!("  error: {labels}")),
                    other => Some(format!("  outcome ({other}): {labels}")),
                }
            }
            Event::FilterState { name, value } => {
                if name == filter_state::ROUTE || name == filter_state::PROVIDER {
                    return None;
                }
                Some(format!(
                    "  filter state {name} = {}",
                    self.redactor.text(value)
                ))
            }
            Event::Callout { token, callout } => Some(format!(
                "  callout #{token} to cluster {} ({}, timeout {} ms)",
                callout.cluster,
                match &callout.kind {
                    CalloutKind::Http => "HTTP".to_string(),
                    CalloutKind::Grpc { service, method } => format!("gRPC {service}/{method}"),
                },
                callout.timeout_ms
            )),
            Event::CalloutRefused { cluster } => Some(format!(
                "  callout to cluster {cluster} refused by the host: the stage sees status 503"
            )),
            Event::LocalResponse { .. } => None,
        }
    }

    fn callout_detail(&self, callout: &Callout) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, value) in &callout.headers {
            lines.push(format!(
                "      {name}: {}",
                self.redactor.header_value(name, value)
            ));
        }
        if !callout.body.is_empty() {
            lines.push(format!(
                "      body: {}",
                self.shown_body(&callout.body, false)
            ));
        }
        lines
    }

    /// Answers callouts from `--callout-reply` files until the phase ends or none is left.
    fn follow_callouts(
        &mut self,
        flow: &mut Flow,
        host: &mut TracingHost,
        mut action: Action,
        mut seen: usize,
        resumed: fn(&TracingHost) -> u32,
    ) -> (Phase, usize) {
        loop {
            seen = self.say_events(host, seen);
            if host.inner.local_response.is_some() {
                return (Phase::Answered, seen);
            }
            if action == Action::Continue {
                return (Phase::Continued, seen);
            }
            let Some((token, callout)) = host.inner.callouts.last().cloned() else {
                // Paused with nothing outstanding: Envoy would buffer; nothing more happens.
                return (Phase::Continued, seen);
            };
            if self.replies.is_empty() {
                self.say(format!(
                    "  waiting for callout #{token} to {}: a dry run cannot answer it",
                    callout.cluster
                ));
                return (Phase::Waiting, seen);
            }
            let (path, reply) = self.replies.remove(0);
            self.say(format!(
                "  callout #{token} answered from {path}: status {}",
                reply.status
            ));
            let before = resumed(host);
            flow.on_callout_reply(host, token, reply);
            let still_waiting = host.inner.callouts.last().map(|(t, _)| *t) != Some(token)
                && resumed(host) == before
                && host.inner.local_response.is_none();
            action = if still_waiting {
                Action::Pause
            } else {
                Action::Continue
            };
        }
    }

    fn say_local_response(&mut self, host: &RecordingHost) {
        let Some(response) = &host.local_response else {
            return;
        };
        self.say(format!(
            "Result: the filter answers the client itself with {}",
            response.status
        ));
        for (name, value) in &response.headers {
            self.say(format!(
                "  {name}: {}",
                self.redactor.header_value(name, value)
            ));
        }
        self.say(format!(
            "  body: {}",
            self.shown_body(&response.body, false)
        ));
    }

    fn say_upstream_request(&mut self, client_body: &[u8], host: &RecordingHost) {
        self.say("Result: the request goes upstream as:");
        let mut headers = host.request_headers.clone();
        headers.sort_by_key(|(name, _)| !name.starts_with(':'));
        for (name, value) in &headers {
            self.say(format!(
                "  {name}: {}",
                self.redactor.header_value(name, value)
            ));
        }
        self.say("  body:");
        for line in self.shown_body(&host.request_body, true).lines() {
            self.say(format!("    {line}"));
        }
        let before = serde_json::from_slice::<Value>(client_body);
        let after = serde_json::from_slice::<Value>(&host.request_body);
        if let (Ok(before), Ok(after)) = (before, after) {
            let changes = json_diff::diff(&before, &after);
            self.say(format!("Changes to the client's body ({}):", changes.len()));
            for change in changes {
                let line = match change {
                    Change::Added(path, value) => format!("  + {path} = {}", self.short(&value)),
                    Change::Removed(path, value) => {
                        format!("  - {path} (was {})", self.short(&value))
                    }
                    Change::Changed(path, old, new) => {
                        format!("  ~ {path}: {} -> {}", self.short(&old), self.short(&new))
                    }
                };
                self.say(line);
            }
        }
    }

    fn upstream_headers(&self, answer: &[u8]) -> Vec<(String, String)> {
        let mut headers = vec![(
            ":status".to_string(),
            self.request.upstream_status.to_string(),
        )];
        let trimmed =
            String::from_utf8_lossy(answer.get(..64.min(answer.len())).unwrap_or_default())
                .trim_start()
                .to_string();
        let sse = trimmed.starts_with("data:")
            || trimmed.starts_with("event:")
            || trimmed.starts_with(':');
        headers.push((
            "content-type".into(),
            if sse {
                "text/event-stream"
            } else {
                "application/json"
            }
            .into(),
        ));
        for (name, value) in &self.request.upstream_headers {
            headers.retain(|(key, _)| key != name);
            headers.push((name.clone(), value.clone()));
        }
        headers
    }

    fn say_client_response(&mut self, host: &RecordingHost) {
        let status = host
            .response_header_value(":status")
            .unwrap_or("?")
            .to_string();
        self.say(format!("Result: the client receives {status}:"));
        for (name, value) in &host.response_headers {
            if name != ":status" {
                self.say(format!(
                    "  {name}: {}",
                    self.redactor.header_value(name, value)
                ));
            }
        }
        self.say("  body:");
        for line in self.shown_body(&host.response_body, true).lines() {
            self.say(format!("    {line}"));
        }
    }

    /// A body as text: pretty JSON when asked and it parses, secrets redacted, long ones cut.
    fn shown_body(&self, body: &[u8], pretty: bool) -> String {
        let text = match serde_json::from_slice::<Value>(body) {
            Ok(value) if pretty => serde_json::to_string_pretty(&value).unwrap_or_default(),
            _ => String::from_utf8_lossy(body).into_owned(),
        };
        let text = self.redactor.text(&text);
        if text.len() > MAX_SHOWN_BYTES {
            let cut = (0..=MAX_SHOWN_BYTES)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            format!(
                "{}... ({} bytes in all)",
                text.get(..cut).unwrap_or_default(),
                text.len()
            )
        } else {
            text
        }
    }

    fn short(&self, value: &Value) -> String {
        let text = self.redactor.text(&value.to_string());
        aigate_core::error::truncate_chars(&text, MAX_VALUE_CHARS)
    }
}

/// Which of a route's match conditions fail, each tested through the real matcher.
fn why_not(matcher: &RouteMatcher, input: &matching::MatchInput<'_>) -> Vec<String> {
    let only = |m: RouteMatcher| matching::matches(&m, input);
    let mut reasons = Vec::new();
    if let Some(name) = &matcher.route_name {
        if !only(RouteMatcher {
            route_name: Some(name.clone()),
            ..RouteMatcher::default()
        }) {
            reasons.push(format!("route_name is not {name}"));
        }
    }
    if !matcher.hosts.is_empty()
        && !only(RouteMatcher {
            hosts: matcher.hosts.clone(),
            ..RouteMatcher::default()
        })
    {
        reasons.push(format!("host is not one of {}", matcher.hosts.join(",")));
    }
    if let Some(prefix) = &matcher.path_prefix {
        if !only(RouteMatcher {
            path_prefix: Some(prefix.clone()),
            ..RouteMatcher::default()
        }) {
            reasons.push(format!("path does not start with {prefix}"));
        }
    }
    for (name, value) in &matcher.headers {
        if !only(RouteMatcher {
            headers: vec![(name.clone(), value.clone())],
            ..RouteMatcher::default()
        }) {
            reasons.push(format!("header {name} is not {value:?}"));
        }
    }
    reasons
}

/// `RegexGuard { ... }` → `RegexGuard`: the Debug form starts with the type's name.
fn type_name(debug: &str) -> String {
    debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aigate_core::error::ApiError;
    use aigate_core::pipeline::stage::{RequestCtx, RequestStage, Step};
    use aigate_core::plan::parse_and_compile;

    /// A stage that asks a service before letting the request go on.
    #[derive(Debug)]
    struct AskFirst;

    impl RequestStage for AskFirst {
        fn start(&self, _ctx: &mut RequestCtx<'_>) -> Step {
            Step::Call(Callout {
                cluster: "guard".into(),
                kind: CalloutKind::Http,
                headers: vec![
                    (":method".into(), "POST".into()),
                    (":path".into(), "/check".into()),
                    (":authority".into(), "guard".into()),
                    ("authorization".into(), "Bearer hook-secret-xyz".into()),
                ],
                body: b"{}".to_vec(),
                timeout_ms: 100,
            })
        }
        fn on_reply(&self, _ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
            if reply.status == 200 {
                Step::Next
            } else {
                Step::Reject(ApiError::new(403, "invalid_request_error", "blocked", "no"))
            }
        }
    }

    fn dry_run(replies: Vec<CalloutReply>) -> String {
        let config = serde_json::json!({"routes":[{"name":"r","provider":{"kind":"openai","auth":{"key":{"value":"sk-abcdef"}}}}]});
        let mut plan = parse_and_compile(config.to_string().as_bytes(), &|_: &str| None).unwrap();
        plan.routes[0].request_stages.push(Box::new(AskFirst));
        let request = RequestOptions::default();
        let run = DryRun {
            plan: Rc::new(plan),
            redactor: Redactor::from_config(&config, &|_| None),
            raw_config: config,
            request: &request,
            replies: replies
                .into_iter()
                .map(|r| ("reply.json".to_string(), r))
                .collect(),
            out: Vec::new(),
        };
        run.explain(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            None,
        )
        .join("\n")
    }

    fn reply(status: u16) -> CalloutReply {
        CalloutReply {
            status,
            ..CalloutReply::default()
        }
    }

    #[test]
    fn stops_at_an_unanswered_callout() {
        let out = dry_run(Vec::new());
        assert!(out.contains("request stages: AskFirst"), "{out}");
        assert!(
            out.contains("callout #1 to cluster guard (HTTP, timeout 100 ms)"),
            "{out}"
        );
        assert!(out.contains("authorization: <redacted>"), "{out}");
        assert!(out.contains("waiting for callout #1 to guard"), "{out}");
        assert!(out.contains("Result: stopped at a callout"), "{out}");
        assert!(
            !out.contains("hook-secret-xyz") && !out.contains("sk-abcdef"),
            "{out}"
        );
    }

    #[test]
    fn callout_replies_drive_the_flow_on() {
        let out = dry_run(vec![reply(200)]);
        assert!(
            out.contains("callout #1 answered from reply.json: status 200"),
            "{out}"
        );
        assert!(
            out.contains("Result: the request goes upstream as:"),
            "{out}"
        );
        let out = dry_run(vec![reply(500)]);
        assert!(out.contains("answers the client itself with 403"), "{out}");
    }

    #[test]
    fn replies_load_in_both_header_forms() {
        let reply = load_reply(br#"{"status":403,"headers":{"X-A":"1"},"body":{"action":"pass"}}"#)
            .unwrap();
        assert_eq!(reply.status, 403);
        assert_eq!(
            reply.headers,
            vec![(":status".into(), "403".into()), ("x-a".into(), "1".into())]
        );
        assert_eq!(reply.body, br#"{"action":"pass"}"#);
        let reply = load_reply(br#"{"headers":[["k","v"]],"body":"raw text"}"#).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"raw text");
        assert!(load_reply(br#"{"stauts":200}"#).is_err());
        assert!(load_reply(b"[]").is_err());
    }

    #[test]
    fn type_names_from_debug() {
        assert_eq!(type_name("RegexGuard { patterns: [] }"), "RegexGuard");
        assert_eq!(type_name("Budget"), "Budget");
    }
}
