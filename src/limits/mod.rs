//! Token and cost budgets per key, local or through a rate limit service (CONFIG.md Limits).
//!
//! The check runs as the first request stage: it finds each limit's key, asks the backend,
//! records a `Ticket` per budget in `Notes` and the `x-ratelimit-*` headers for the answer,
//! or rejects. Once the answer's usage (and its cost) is known the flow calls the stage's
//! `settle` (and on stream end, `settle` again with nothing: that only releases what an
//! unanswered request held).
//!
//! Every budget is counted in one `Measure` of an answer: its total, input or output tokens
//! (`tokens[].count`), or its cost in micro-dollars (`cost[]`). The ledger and the rate limit
//! service only see amounts, so cost budgets use exactly the machinery of token budgets.

pub mod headers;
pub mod keys;
pub mod ledger;
pub mod local;
pub mod proto;
pub mod rls;
pub mod window;

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::config::model::{BackendConfig, FailureMode, LimitKeyConfig, LimitsConfig, TokenCount};
use crate::config::ConfigError;
use crate::host::{Callout, CalloutReply, Host};
use crate::metrics;
/// A budget the check admitted a request against (defined with the stage contract, whose
/// `Notes` carry them to `RequestStage::settle`).
pub use crate::pipeline::stage::Ticket;
use crate::pipeline::stage::{Notes, RequestCtx, RequestStage, Step};
use crate::usage::Usage;
use headers::{Standing, Unit};
use keys::KeySource;
use ledger::{Admission, Budget};
use rls::{RlsBackend, Verdict};
use window::Window;

/// `limit.outcomes` values.
pub mod outcome {
    pub const ALLOWED: &str = "allowed";
    pub const OVER_LIMIT: &str = "over_limit";
    pub const IN_FLIGHT: &str = "over_limit_in_flight";
    pub const BACKEND_FAILED_OPEN: &str = "backend_failed_open";
    pub const BACKEND_FAILED_CLOSED: &str = "backend_failed_closed";
    pub const CAPACITY_EXCEEDED: &str = "capacity_exceeded";
    pub const CHARGE_FAILED: &str = "charge_failed";
}

/// What of an answer a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Tokens(TokenCount),
    /// The answer's cost in micro-dollars.
    CostMicros,
}

impl Measure {
    /// The amount of an answer with this usage and cost that the budget is charged.
    pub fn of(self, usage: &Usage, cost_micros: u64) -> u64 {
        match self {
            Measure::Tokens(TokenCount::Total) => usage.total_tokens,
            Measure::Tokens(TokenCount::Input) => usage.prompt_tokens,
            Measure::Tokens(TokenCount::Output) => usage.completion_tokens,
            Measure::CostMicros => cost_micros,
        }
    }

    fn unit(self) -> Unit {
        match self {
            Measure::Tokens(_) => Unit::Tokens,
            Measure::CostMicros => Unit::Micros,
        }
    }
}

#[derive(Debug)]
struct TokenLimit {
    name: String,
    key: KeySource,
    budget: Budget,
    measure: Measure,
}

#[derive(Debug)]
enum Backend {
    Local,
    Rls(RlsBackend),
}

#[derive(Debug)]
struct Limits {
    route: String,
    limits: Vec<TokenLimit>,
    backend: Backend,
}

/// A route's budgets: the check, a request stage the plan puts first. It also settles the
/// budgets once usage is known (`RequestStage::settle`) and prepares the local backend's
/// shared data (`RequestStage::prepare`).
#[derive(Debug)]
pub struct LimitPlan {
    pub check: Box<dyn RequestStage>,
}

impl LimitPlan {
    /// `priced`: the config has a `pricing` table (cost budgets need one).
    pub fn compile(
        config: &LimitsConfig,
        route: &str,
        path: &str,
        priced: bool,
    ) -> Result<LimitPlan, ConfigError> {
        let mut names = BTreeSet::new();
        let mut limits = Vec::with_capacity(config.tokens.len() + config.cost.len());
        // One budget of either kind: names are shared (they name shared data and descriptors).
        let mut add = |at: &str,
                       name: &str,
                       key: &LimitKeyConfig,
                       budget: Budget,
                       measure: Measure|
         -> Result<(), ConfigError> {
            if name.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(name.to_string()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate limit name '{name}'"),
                ));
            }
            if budget.window_ms == 0 {
                return Err(ConfigError::new(
                    format!("{at}.window_ms"),
                    "must be at least 1",
                ));
            }
            limits.push(TokenLimit {
                name: name.to_string(),
                key: KeySource::compile(key, &format!("{at}.key"))?,
                budget,
                measure,
            });
            Ok(())
        };
        for (index, token) in config.tokens.iter().enumerate() {
            let at = format!("{path}.tokens[{index}]");
            if token.limit == 0 {
                return Err(ConfigError::new(
                    format!("{at}.limit"),
                    "must be at least 1",
                ));
            }
            let budget = Budget {
                limit: token.limit,
                window_ms: token.window_ms,
            };
            add(
                &at,
                &token.name,
                &token.key,
                budget,
                Measure::Tokens(token.count),
            )?;
        }
        for (index, cost) in config.cost.iter().enumerate() {
            let at = format!("{path}.cost[{index}]");
            if !priced {
                return Err(ConfigError::new(
                    at,
                    "a cost budget needs prices: add a top-level \"pricing\" table",
                ));
            }
            let limit = crate::cost::budget_micros(cost.limit_usd)
                .map_err(|error| ConfigError::new(format!("{at}.limit_usd"), error.to_string()))?;
            if limit == 0 {
                return Err(ConfigError::new(
                    format!("{at}.limit_usd"),
                    "must be at least 0.000001 (one micro-dollar)",
                ));
            }
            let budget = Budget {
                limit,
                window_ms: cost.window_ms,
            };
            add(&at, &cost.name, &cost.key, budget, Measure::CostMicros)?;
        }
        let backend = match &config.backend {
            BackendConfig::Local => Backend::Local,
            BackendConfig::Rls(rls) => {
                let at = format!("{path}.backend.rls");
                if rls.cluster.trim().is_empty() {
                    return Err(ConfigError::new(
                        format!("{at}.cluster"),
                        "must name an Envoy cluster",
                    ));
                }
                if rls.domain.is_empty() {
                    return Err(ConfigError::new(
                        format!("{at}.domain"),
                        "must not be empty",
                    ));
                }
                if rls.timeout_ms == 0 {
                    return Err(ConfigError::new(
                        format!("{at}.timeout_ms"),
                        "must be at least 1",
                    ));
                }
                Backend::Rls(RlsBackend {
                    cluster: rls.cluster.clone(),
                    domain: rls.domain.clone(),
                    timeout_ms: rls.timeout_ms,
                    failure_mode: rls.failure_mode,
                })
            }
        };
        let limits = Rc::new(Limits {
            route: route.to_string(),
            limits,
            backend,
        });
        Ok(LimitPlan {
            check: Box::new(Check(limits)),
        })
    }
}

impl Limits {
    /// Creates the local backend's shared data before traffic (see `local::prepare`).
    fn prepare(&self, host: &mut dyn Host) {
        if let Backend::Local = self.backend {
            for limit in &self.limits {
                local::prepare(host, &self.route, &limit.name);
            }
        }
    }

    /// True when some budget counts dollars (the flow then prices every answer).
    fn counts_cost(&self) -> bool {
        self.limits
            .iter()
            .any(|limit| limit.measure == Measure::CostMicros)
    }

    /// Charges the answer to the budgets the check admitted the request against (each its
    /// `Measure` of `usage` and `cost_micros`), releasing what it held. Takes the tickets out
    /// of `notes`, so a second call is a no-op. A callout returned here is sent without
    /// waiting for its reply (rate limit service reports: one per distinct amount, since a
    /// request's `hits_addend` applies to all its descriptors).
    fn charge(
        &self,
        notes: &mut Notes,
        usage: Usage,
        cost_micros: u64,
        host: &mut dyn Host,
    ) -> Vec<Callout> {
        let tickets = std::mem::take(&mut notes.limit_tickets);
        if tickets.is_empty() {
            return Vec::new();
        }
        let limits = self;
        let amount = |ticket: &Ticket| {
            limits
                .limits
                .get(ticket.limit)
                .map(|limit| limit.measure.of(&usage, cost_micros))
        };
        match &limits.backend {
            Backend::Local => {
                let now_ms = host.now_ms();
                for ticket in &tickets {
                    let (Some(limit), Some(amount)) =
                        (limits.limits.get(ticket.limit), amount(ticket))
                    else {
                        continue;
                    };
                    let shard = local::shard_name(&limits.route, &limit.name, &ticket.key);
                    let result = local::update(host, &shard, |table| {
                        table.settle(&ticket.key, limit.budget, now_ms, ticket.hold, amount)
                    });
                    if let Err(error) = result {
                        log::warn!(
                            "aigate: route {}: limit {}: the answer's {amount} ({:?}) was not recorded: {error:?}",
                            limits.route,
                            limit.name,
                            limit.measure
                        );
                        limits.count(host, &limit.name, outcome::CHARGE_FAILED);
                    }
                }
                Vec::new()
            }
            Backend::Rls(backend) => {
                let mut groups: Vec<(u64, Vec<Ticket>)> = Vec::new();
                for ticket in tickets {
                    let Some(amount) = amount(&ticket).filter(|amount| *amount > 0) else {
                        continue;
                    };
                    match groups.iter_mut().find(|(of, _)| *of == amount) {
                        Some((_, group)) => group.push(ticket),
                        None => groups.push((amount, vec![ticket])),
                    }
                }
                groups
                    .into_iter()
                    .map(|(amount, group)| {
                        let hits = u32::try_from(amount).unwrap_or(u32::MAX);
                        backend.callout(&limits.descriptors(&group), hits)
                    })
                    .collect()
            }
        }
    }
}

impl Limits {
    fn count(&self, host: &mut dyn Host, limit: &str, outcome: &str) {
        let name = metrics::name(
            metrics::LIMIT_OUTCOMES,
            &[
                ("route", &self.route),
                ("limit", limit),
                ("outcome", outcome),
            ],
        );
        host.counter_add(&name, 1);
    }

    fn descriptors(&self, tickets: &[Ticket]) -> Vec<Vec<(String, String)>> {
        tickets
            .iter()
            .filter_map(|ticket| {
                let limit = self.limits.get(ticket.limit)?;
                Some(rls::descriptor(&self.route, &limit.name, &ticket.key))
            })
            .collect()
    }

    /// The service's standings (by limit index) with the unit of each limit.
    fn with_units(
        &self,
        standings: Vec<Option<Standing>>,
    ) -> impl Iterator<Item = (Unit, Standing)> + '_ {
        standings
            .into_iter()
            .enumerate()
            .filter_map(|(index, standing)| {
                let unit = self.limits.get(index)?.measure.unit();
                Some((unit, standing?))
            })
    }

    fn name_of(&self, index: usize) -> &str {
        self.limits
            .get(index)
            .map(|l| l.name.as_str())
            .unwrap_or_default()
    }

    /// Local backend: admit against every budget, or against none (holds taken for earlier
    /// budgets are given back when a later one refuses).
    fn check_local(&self, ctx: &mut RequestCtx<'_>) -> Step {
        let now_ms = ctx.host.now_ms();
        let mut tickets: Vec<Ticket> = Vec::with_capacity(self.limits.len());
        let mut standings = Vec::with_capacity(self.limits.len());
        for (index, limit) in self.limits.iter().enumerate() {
            let Some(key) = limit.key.value(ctx.request_headers, &*ctx.host) else {
                self.no_key(ctx.host, &limit.name);
                self.release(ctx.host, &tickets);
                return Step::Reject(headers::unavailable());
            };
            let shard = local::shard_name(&self.route, &limit.name, &key);
            let hold_id = hold_id(now_ms, index);
            let admission = local::update(ctx.host, &shard, |table| {
                table.admit(&key, limit.budget, now_ms, hold_id)
            });
            let reset_ms = Window::at(now_ms, limit.budget.window_ms).reset_after_ms(now_ms);
            let standing = |used: u64| Standing {
                limit: limit.budget.limit,
                remaining: limit.budget.limit.saturating_sub(used),
                reset_ms,
            };
            let unit = limit.measure.unit();
            let refusal = match admission {
                Ok(Admission::Allowed { used, hold }) => {
                    self.count(ctx.host, &limit.name, outcome::ALLOWED);
                    standings.push((unit, standing(used)));
                    tickets.push(Ticket {
                        limit: index,
                        key,
                        hold: Some(hold.id),
                    });
                    continue;
                }
                Ok(Admission::OverLimit { used }) => {
                    standings.push((unit, standing(used)));
                    (
                        outcome::OVER_LIMIT,
                        headers::exceeded_in(unit, &limit.name, standing(used)),
                    )
                }
                Ok(Admission::InFlight { used }) => {
                    standings.push((unit, standing(used)));
                    (outcome::IN_FLIGHT, headers::in_flight_in(unit, &limit.name))
                }
                Ok(Admission::Full) => (outcome::CAPACITY_EXCEEDED, headers::unavailable()),
                Err(error) => {
                    log::warn!(
                        "aigate: route {}: limit {}: shared data: {error:?}",
                        self.route,
                        limit.name
                    );
                    (outcome::BACKEND_FAILED_CLOSED, headers::unavailable())
                }
            };
            self.count(ctx.host, &limit.name, refusal.0);
            self.release(ctx.host, &tickets);
            ctx.notes.response_headers.extend(headers_for(standings));
            return Step::Reject(refusal.1);
        }
        ctx.notes.response_headers.extend(headers_for(standings));
        ctx.notes.limit_tickets.extend(tickets);
        Step::Next
    }

    /// The host gave no key for `limit` (the client's address): refused as the backend's
    /// failure (503, `backend_failed_closed`, logged), whatever the failure mode, since no
    /// budget can be asked for a client that cannot be told apart.
    fn no_key(&self, host: &mut dyn Host, limit: &str) {
        log::warn!(
            "aigate: route {}: limit {limit}: the host gave no client address (source.address) to key the budget by",
            self.route
        );
        self.count(host, limit, outcome::BACKEND_FAILED_CLOSED);
    }

    /// Gives back holds taken for a request that another budget refused. A failure only
    /// leaves a hold to expire.
    fn release(&self, host: &mut dyn Host, tickets: &[Ticket]) {
        for ticket in tickets {
            let (Some(limit), Some(hold)) = (self.limits.get(ticket.limit), ticket.hold) else {
                continue;
            };
            let shard = local::shard_name(&self.route, &limit.name, &ticket.key);
            let _ = local::update(host, &shard, |table| table.release(&ticket.key, hold));
        }
    }

    fn on_rls_reply(
        &self,
        backend: &RlsBackend,
        ctx: &mut RequestCtx<'_>,
        reply: &CalloutReply,
    ) -> Step {
        let now_ms = ctx.host.now_ms();
        let budgets: Vec<Budget> = self.limits.iter().map(|l| l.budget).collect();
        match rls::verdict(reply, &budgets, now_ms) {
            Verdict::Allowed(standings) => {
                for limit in &self.limits {
                    self.count(ctx.host, &limit.name, outcome::ALLOWED);
                }
                ctx.notes
                    .response_headers
                    .extend(headers_for(self.with_units(standings)));
                Step::Next
            }
            Verdict::Over { index, standings } => {
                let name = self.name_of(index).to_string();
                self.count(ctx.host, &name, outcome::OVER_LIMIT);
                ctx.notes.limit_tickets.clear();
                let fallback = self.limits.get(index).map(|limit| Standing {
                    limit: limit.budget.limit,
                    remaining: 0,
                    reset_ms: Window::at(now_ms, limit.budget.window_ms).reset_after_ms(now_ms),
                });
                let over = standings.get(index).copied().flatten().or(fallback);
                let over = over
                    .map(|s| Standing { remaining: 0, ..s })
                    .unwrap_or(Standing {
                        limit: 0,
                        remaining: 0,
                        reset_ms: 1_000,
                    });
                let unit = self
                    .limits
                    .get(index)
                    .map_or(Unit::Tokens, |limit| limit.measure.unit());
                ctx.notes.response_headers.extend(headers_for(
                    self.with_units(standings).chain([(unit, over)]),
                ));
                Step::Reject(headers::exceeded_in(unit, &name, over))
            }
            Verdict::Failed => {
                log::warn!(
                    "aigate: route {}: rate limit service on cluster {} failed (status {}, grpc {:?})",
                    self.route,
                    backend.cluster,
                    reply.status,
                    reply.grpc_status
                );
                match backend.failure_mode {
                    FailureMode::Open => {
                        for limit in &self.limits {
                            self.count(ctx.host, &limit.name, outcome::BACKEND_FAILED_OPEN);
                        }
                        Step::Next
                    }
                    FailureMode::Closed => {
                        for limit in &self.limits {
                            self.count(ctx.host, &limit.name, outcome::BACKEND_FAILED_CLOSED);
                        }
                        ctx.notes.limit_tickets.clear();
                        Step::Reject(headers::unavailable())
                    }
                }
            }
        }
    }
}

fn headers_for(standings: impl IntoIterator<Item = (Unit, Standing)>) -> Vec<(String, String)> {
    headers::for_standings(standings)
}

/// Tells this request's holds apart from other requests' on the same key. Random where the
/// host has entropy; otherwise derived from the time (collisions then only merge two holds).
fn hold_id(now_ms: u64, index: usize) -> u32 {
    let mut bytes = [0u8; 4];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u32::from_le_bytes(bytes);
    }
    (now_ms as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(index as u32)
}

/// The first request stage of a limited route.
#[derive(Debug)]
struct Check(Rc<Limits>);

impl RequestStage for Check {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        let limits = &self.0;
        if limits.limits.is_empty() {
            return Step::Next;
        }
        match &limits.backend {
            Backend::Local => limits.check_local(ctx),
            Backend::Rls(backend) => {
                let mut tickets: Vec<Ticket> = Vec::with_capacity(limits.limits.len());
                for (index, limit) in limits.limits.iter().enumerate() {
                    let Some(key) = limit.key.value(ctx.request_headers, &*ctx.host) else {
                        limits.no_key(ctx.host, &limit.name);
                        return Step::Reject(headers::unavailable());
                    };
                    tickets.push(Ticket {
                        limit: index,
                        key,
                        hold: None,
                    });
                }
                let callout = backend.callout(&limits.descriptors(&tickets), 0);
                ctx.notes.limit_tickets.extend(tickets);
                Step::Call(callout)
            }
        }
    }

    fn on_reply(&self, ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
        match &self.0.backend {
            Backend::Rls(backend) => self.0.on_rls_reply(backend, ctx, reply),
            Backend::Local => Step::Next,
        }
    }

    /// The local backend needs no callout, so the check runs as soon as the request headers
    /// arrive: a client over budget then never causes an upstream request, even in mode B.
    fn runs_on_headers(&self) -> bool {
        matches!(self.0.backend, Backend::Local)
    }

    fn settle(
        &self,
        notes: &mut Notes,
        usage: Usage,
        cost_micros: u64,
        host: &mut dyn Host,
    ) -> Vec<Callout> {
        self.0.charge(notes, usage, cost_micros, host)
    }

    fn counts_cost(&self) -> bool {
        self.0.counts_cost()
    }

    fn prepare(&self, host: &mut dyn Host) {
        self.0.prepare(host);
    }
}
