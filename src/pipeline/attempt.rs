//! Fallbacks (`Route::attempts`): one request, several providers tried in order, the client
//! sees one answer.
//!
//! aigate runs twice on such a route, as Envoy wires it (docs/DEPLOY.md "Fallbacks"):
//!
//! - **Downstream** (the HTTP filter of the listener): the route's stages run once (budgets,
//!   guards, shaping, response stages, usage, metrics); the request stays in the client's
//!   form (the route's `provider` is the client-form provider `plan::compile` made: no
//!   credential, no translation) and goes to Envoy's router, whose retry policy sends each
//!   attempt to the next provider's cluster (an aggregate cluster with
//!   `previous_priorities`).
//! - **Attempt** (the same filter as an upstream HTTP filter of the aggregate cluster, once
//!   per attempt): it finds the provider of the host Envoy picked (the endpoint metadata
//!   `aigate.cluster`, see [`Attempts::index_for`]) and runs the ordinary flow on that
//!   provider's stage-free plan: model, path, authority, credential and translation for that
//!   provider, and the answer translated back to the client's form. It counts the attempt
//!   (`aigate.attempts_total`) and tells the downstream instance who answered (response
//!   headers [`ATTEMPT_HEADER`], [`MODEL_HEADER`], removed before the client sees them).
//!
//! Which instance a flow is: an upstream filter runs once an attempt has started, so Envoy's
//! `upstream.request_attempt_count` is 1 or more there and 0 in the listener's filter.

use std::rc::Rc;

use super::{filter_state, Flow};
use crate::error::ApiError;
use crate::host::Host;
use crate::metrics;
use crate::plan::{Attempts, RetryCondition, Route};
use crate::providers::Provider;

/// Response header from the attempt to the downstream instance: the index of the provider
/// that answered (0 = the route's provider, 1 = its first fallback, ...).
pub const ATTEMPT_HEADER: &str = "x-aigate-attempt";
/// Response header from the attempt to the downstream instance: the model it asked for.
pub const MODEL_HEADER: &str = "x-aigate-attempt-model";
/// The endpoint metadata (`filter_metadata.aigate.cluster`) naming the `Provider.cluster`
/// a host serves.
pub const HOST_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigate",
    "cluster",
];

/// Filter state the listener's instance sets on a route with fallbacks: the route's name.
pub const FALLBACK_ROUTE: &str = "aigate.fallback_route";
/// Filter state the listener's instance sets on a route with fallbacks: the client's `:path`.
pub const FALLBACK_PATH: &str = "aigate.fallback_path";

/// This flow is one attempt of a route with fallbacks (the upstream instance).
#[derive(Debug)]
pub(super) struct Attempt {
    /// The provider's index in the route's `Attempts`.
    index: usize,
    providers: usize,
    retry_on: Vec<RetryCondition>,
    per_try_timeout_ms: u64,
    route_name: String,
    provider_name: &'static str,
    started_ms: u64,
    /// The attempt was counted (at its answer's headers, or when it ended without one).
    counted: bool,
}

/// How one attempt ended, for `aigate.attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The provider answered and the answer is the client's (a 4xx other than 429 too).
    Ok,
    /// It failed with a condition in `retry.on` and a later provider is tried.
    FailedOver(RetryCondition),
    /// It failed and no provider is left (or the condition is not in `retry.on`): the
    /// client gets this failure.
    Failed(RetryCondition),
}

impl AttemptOutcome {
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::FailedOver(_) => "failed_over",
            AttemptOutcome::Failed(_) => "failed",
        }
    }

    pub fn condition(self) -> Option<RetryCondition> {
        match self {
            AttemptOutcome::Ok => None,
            AttemptOutcome::FailedOver(condition) | AttemptOutcome::Failed(condition) => {
                Some(condition)
            }
        }
    }
}

/// The outcome of attempt `index` of `providers` that failed with `condition` (None: it
/// answered).
pub fn outcome(
    condition: Option<RetryCondition>,
    index: usize,
    providers: usize,
    retry_on: &[RetryCondition],
) -> AttemptOutcome {
    match condition {
        None => AttemptOutcome::Ok,
        Some(condition) if retry_on.contains(&condition) && index + 1 < providers => {
            AttemptOutcome::FailedOver(condition)
        }
        Some(condition) => AttemptOutcome::Failed(condition),
    }
}

/// Why an attempt ended without an answer: Envoy names a failed connection
/// (`upstream.transport_failure_reason`); otherwise the per-try timeout when the attempt
/// lasted that long, else a reset.
pub fn condition_without_answer(
    transport_failure: bool,
    elapsed_ms: u64,
    per_try_timeout_ms: u64,
) -> RetryCondition {
    if transport_failure {
        RetryCondition::ConnectFailure
    } else if elapsed_ms >= per_try_timeout_ms {
        RetryCondition::Timeout
    } else {
        RetryCondition::Reset
    }
}

/// True when this filter runs as an upstream filter for an attempt.
fn in_attempt(host: &dyn Host) -> bool {
    host.property(&["upstream", "request_attempt_count"])
        .map(|bytes| match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(raw) => u64::from_le_bytes(raw) > 0,
            Err(_) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .is_some_and(|count| count > 0),
        })
        .unwrap_or(false)
}

fn no_provider_for_host() -> ApiError {
    ApiError::new(
        502,
        "api_error",
        "fallback_misconfigured",
        "The gateway cannot tell which provider serves the upstream host Envoy picked \
         (its endpoint metadata aigate.cluster names no provider of this route).",
    )
}

impl Flow {
    /// Called first on every request of a plan with fallbacks. In an upstream filter (an
    /// attempt has started): Ok(true) after switching this flow to the plan of the provider
    /// Envoy sent the attempt to, Ok(false) for a request that is no attempt of a route with
    /// fallbacks (it passes untouched: the listener's instance did all there was to do), Err
    /// for a host that serves no provider of the route (never credential a request for an
    /// unknown host). In the listener's filter: Ok(true), nothing done.
    ///
    /// The route and the client's path come from the filter state the listener's instance
    /// set ([`FALLBACK_ROUTE`], [`FALLBACK_PATH`]), not from the request headers: Envoy gives
    /// every attempt the same header map, so an attempt sees what earlier attempts wrote
    /// (their `:authority`, `:path`, credential); and a client cannot set filter state.
    pub(super) fn enter_attempt(&mut self, host: &mut dyn Host) -> Result<bool, ApiError> {
        if !in_attempt(host) {
            return Ok(true);
        }
        let Some(route_name) = host
            .property(&[FALLBACK_ROUTE])
            .and_then(|bytes| String::from_utf8(bytes).ok())
        else {
            return Ok(false);
        };
        let plan = Rc::clone(&self.plan);
        let Some((route_index, attempts)) = plan
            .routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.name == route_name)
            .and_then(|(index, route)| Some((index, route.attempts.as_ref()?)))
        else {
            return Ok(false);
        };
        self.route = route_index;
        let cluster = host
            .property(&HOST_METADATA)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|name| !name.is_empty());
        let Some((index, attempt_plan)) = attempts
            .index_for(cluster.as_deref())
            .and_then(|index| Some((index, attempts.plans.get(index)?)))
        else {
            log::warn!(
                "aigate: route {route_name}: the upstream host's metadata aigate.cluster ({}) names no provider of the route",
                cluster.as_deref().unwrap_or("<none>")
            );
            return Err(no_provider_for_host());
        };
        if let Some(path) = host
            .property(&[FALLBACK_PATH])
            .and_then(|bytes| String::from_utf8(bytes).ok())
        {
            // The client's path (an earlier attempt may have rewritten `:path`): the header
            // and the flow's copy agree again, so this attempt writes its own.
            if self.header(":path") != Some(path.as_str()) {
                host.set_request_header(":path", Some(&path));
                for (name, value) in &mut self.request_headers {
                    if name == ":path" {
                        value.clone_from(&path);
                    }
                }
            }
        }
        // What an earlier attempt's provider set and this one does not: gone.
        let own: Vec<&str> = first_provider(attempts, index)
            .map(|provider| {
                provider
                    .extra_headers()
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect()
            })
            .unwrap_or_default();
        for other in attempts.plans.iter().filter_map(|plan| plan.routes.first()) {
            for (name, _) in other.provider.extra_headers() {
                if !own.contains(&name) && self.header(name).is_some() {
                    host.set_request_header(name, None);
                }
            }
        }
        let provider_name = attempt_plan
            .routes
            .first()
            .map(|route| route.provider.kind.gen_ai_name())
            .unwrap_or_default();
        self.attempt = Some(Attempt {
            index,
            providers: attempts.plans.len(),
            retry_on: attempts.retry_on.clone(),
            per_try_timeout_ms: attempts.per_try_timeout_ms,
            route_name,
            provider_name,
            started_ms: host.now_ms(),
            counted: false,
        });
        self.plan = Rc::clone(attempt_plan);
        self.route = 0;
        Ok(true)
    }

    /// The listener's instance on a route with fallbacks: tells the attempts which route and
    /// path this is (filter state, read by [`Flow::enter_attempt`]).
    pub(super) fn mark_fallback_route(&mut self, host: &mut dyn Host, route: &Route) {
        if route.attempts.is_none() || self.attempt.is_some() {
            return;
        }
        host.set_filter_state(FALLBACK_ROUTE, &route.name);
        let path = self.header(":path").unwrap_or_default().to_string();
        host.set_filter_state(FALLBACK_PATH, &path);
    }

    /// True when this flow is an attempt (metrics and budgets belong to the downstream
    /// instance).
    pub(super) fn is_attempt(&self) -> bool {
        self.attempt.is_some()
    }

    /// The answer's headers, before the flow treats them. An attempt counts itself and tells
    /// the downstream instance who answered; the downstream instance reads (and removes) that.
    pub(super) fn attempt_answer_headers(&mut self, host: &mut dyn Host, status: u16) {
        if let Some(attempt) = &self.attempt {
            let index = attempt.index;
            self.count_attempt(host, RetryCondition::of_status(status), status);
            host.set_response_header(ATTEMPT_HEADER, Some(&index.to_string()));
            let model = self.exchange.model.clone();
            host.set_response_header(MODEL_HEADER, (!model.is_empty()).then_some(model.as_str()));
            return;
        }
        let plan = Rc::clone(&self.plan);
        let Some(attempts) = plan
            .routes
            .get(self.route)
            .and_then(|route| route.attempts.as_ref())
        else {
            return;
        };
        let index = host
            .response_header(ATTEMPT_HEADER)
            .and_then(|value| value.trim().parse::<usize>().ok())
            .filter(|index| *index < attempts.plans.len());
        let model = host.response_header(MODEL_HEADER);
        host.set_response_header(ATTEMPT_HEADER, None);
        host.set_response_header(MODEL_HEADER, None);
        if let Some(index) = index {
            self.answered_by = Some(index);
            if let Some(provider) = first_provider(attempts, index) {
                host.set_filter_state(filter_state::PROVIDER, provider.kind.as_str());
            }
            if let Some(model) = model.filter(|m| !m.is_empty()) {
                host.set_filter_state(filter_state::MODEL, &model);
                // The model sent upstream, as on any route (metrics' `gen_ai.request.model`).
                self.exchange.model = model;
            }
        }
    }

    /// Envoy's last call for an attempt's stream: an attempt that ended without an answer
    /// (connection refused, reset, per-try timeout) is counted here.
    pub fn on_done(&mut self, host: &mut dyn Host) {
        let Some(attempt) = &self.attempt else { return };
        if attempt.counted {
            return;
        }
        let transport_failure = host
            .property(&["upstream", "transport_failure_reason"])
            .is_some_and(|reason| !reason.is_empty());
        let elapsed = host.now_ms().saturating_sub(attempt.started_ms);
        let condition =
            condition_without_answer(transport_failure, elapsed, attempt.per_try_timeout_ms);
        self.count_attempt(host, Some(condition), 0);
    }

    fn count_attempt(
        &mut self,
        host: &mut dyn Host,
        condition: Option<RetryCondition>,
        status: u16,
    ) {
        let Some(attempt) = &mut self.attempt else {
            return;
        };
        if attempt.counted {
            return;
        }
        attempt.counted = true;
        let result = outcome(
            condition,
            attempt.index,
            attempt.providers,
            &attempt.retry_on,
        );
        let status = status.to_string();
        let mut labels = vec![
            ("route", attempt.route_name.as_str()),
            (metrics::PROVIDER_NAME, attempt.provider_name),
            ("outcome", result.label()),
            ("code", status.as_str()),
        ];
        if let Some(condition) = result.condition() {
            labels.push((metrics::ERROR_TYPE, condition.as_str()));
        }
        host.counter_add(&metrics::name(metrics::ATTEMPTS, &labels), 1);
    }

    /// The provider whose answer this is: on a route with fallbacks, the attempt's that
    /// answered (the route's own provider is the client-form one); else the route's.
    pub(super) fn answering_provider<'a>(&self, route: &'a Route) -> &'a Provider {
        route
            .attempts
            .as_ref()
            .and_then(|attempts| first_provider(attempts, self.answered_by.unwrap_or(0)))
            .unwrap_or(&route.provider)
    }
}

fn first_provider(attempts: &Attempts, index: usize) -> Option<&Provider> {
    attempts
        .plans
        .get(index)
        .and_then(|plan| plan.routes.first())
        .map(|route| &route.provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_ok_and_a_failure_fails_over_while_a_provider_is_left() {
        let all = RetryCondition::ALL;
        assert_eq!(outcome(None, 0, 2, &all), AttemptOutcome::Ok);
        assert_eq!(
            outcome(Some(RetryCondition::Status5xx), 0, 2, &all),
            AttemptOutcome::FailedOver(RetryCondition::Status5xx)
        );
        assert_eq!(
            outcome(Some(RetryCondition::Status5xx), 1, 2, &all),
            AttemptOutcome::Failed(RetryCondition::Status5xx)
        );
        let only_5xx = [RetryCondition::Status5xx];
        assert_eq!(
            outcome(Some(RetryCondition::Status429), 0, 3, &only_5xx),
            AttemptOutcome::Failed(RetryCondition::Status429)
        );
        assert_eq!(AttemptOutcome::Ok.label(), "ok");
        assert_eq!(
            AttemptOutcome::FailedOver(RetryCondition::Timeout).label(),
            "failed_over"
        );
    }

    #[test]
    fn an_attempt_without_answer_is_a_connect_failure_a_timeout_or_a_reset() {
        assert_eq!(
            condition_without_answer(true, 5, 1000),
            RetryCondition::ConnectFailure
        );
        assert_eq!(
            condition_without_answer(false, 1000, 1000),
            RetryCondition::Timeout
        );
        assert_eq!(
            condition_without_answer(false, 10, 1000),
            RetryCondition::Reset
        );
    }

    #[test]
    fn statuses_name_their_condition() {
        assert_eq!(
            RetryCondition::of_status(429),
            Some(RetryCondition::Status429)
        );
        assert_eq!(
            RetryCondition::of_status(503),
            Some(RetryCondition::Status5xx)
        );
        assert_eq!(RetryCondition::of_status(400), None);
        assert_eq!(RetryCondition::of_status(200), None);
    }
}
