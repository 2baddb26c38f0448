//! What the client is told: `x-ratelimit-*-tokens` headers (token budgets) and
//! `x-ratelimit-*-usd` headers (cost budgets, in dollars with six places) on every answer of
//! a limited route (in the style of OpenAI's), and the 429 / 503 errors.

use super::window::seconds_ceil;
use crate::error::{kind_for_status, ApiError};

pub const LIMIT: &str = "x-ratelimit-limit-tokens";
pub const REMAINING: &str = "x-ratelimit-remaining-tokens";
pub const RESET: &str = "x-ratelimit-reset-tokens";

pub const LIMIT_USD: &str = "x-ratelimit-limit-usd";
pub const REMAINING_USD: &str = "x-ratelimit-remaining-usd";
pub const RESET_USD: &str = "x-ratelimit-reset-usd";

pub const CODE_EXCEEDED: &str = "token_budget_exceeded";
pub const CODE_IN_FLIGHT: &str = "token_budget_in_flight";
pub const CODE_COST_EXCEEDED: &str = "cost_budget_exceeded";
pub const CODE_COST_IN_FLIGHT: &str = "cost_budget_in_flight";

/// What a budget counts: tokens, or micro-dollars (reported to clients in dollars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Tokens,
    Micros,
}

impl Unit {
    /// An amount as the headers and messages show it.
    fn show(self, amount: u64) -> String {
        match self {
            Unit::Tokens => amount.to_string(),
            Unit::Micros => crate::cost::usd_string(amount),
        }
    }
}
pub const CODE_UNAVAILABLE: &str = "limit_backend_unavailable";

/// One budget as the request found it: its size, what is left, and when it is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// The budget closest to running out: the one reported in the headers.
pub fn tightest(standings: impl IntoIterator<Item = Standing>) -> Option<Standing> {
    standings.into_iter().min_by(|a, b| {
        a.remaining
            .cmp(&b.remaining)
            .then(b.reset_ms.cmp(&a.reset_ms))
    })
}

pub fn headers(standing: Standing) -> Vec<(String, String)> {
    headers_in(Unit::Tokens, standing)
}

/// The three headers of a budget counted in `unit`.
pub fn headers_in(unit: Unit, standing: Standing) -> Vec<(String, String)> {
    let [limit, remaining, reset] = match unit {
        Unit::Tokens => [LIMIT, REMAINING, RESET],
        Unit::Micros => [LIMIT_USD, REMAINING_USD, RESET_USD],
    };
    vec![
        (limit.to_string(), unit.show(standing.limit)),
        (remaining.to_string(), unit.show(standing.remaining)),
        (
            reset.to_string(),
            format!("{}s", seconds_ceil(standing.reset_ms)),
        ),
    ]
}

/// The headers of the tightest token budget and of the tightest cost budget (amounts of
/// different units are never compared).
pub fn for_standings(
    standings: impl IntoIterator<Item = (Unit, Standing)>,
) -> Vec<(String, String)> {
    let (tokens, micros): (Vec<_>, Vec<_>) = standings
        .into_iter()
        .partition(|(unit, _)| *unit == Unit::Tokens);
    let mut out = Vec::new();
    for (unit, group) in [(Unit::Tokens, tokens), (Unit::Micros, micros)] {
        if let Some(standing) = tightest(group.into_iter().map(|(_, standing)| standing)) {
            out.extend(headers_in(unit, standing));
        }
    }
    out
}

/// 429 for a used-up budget; retry when its window ends.
pub fn exceeded(name: &str, standing: Standing) -> ApiError {
    exceeded_in(Unit::Tokens, name, standing)
}

/// 429 for a used-up budget counted in `unit`.
pub fn exceeded_in(unit: Unit, name: &str, standing: Standing) -> ApiError {
    let seconds = seconds_ceil(standing.reset_ms);
    let (code, message) = match unit {
        Unit::Tokens => (
            CODE_EXCEEDED,
            format!(
                "The token budget '{name}' of {} tokens is used up; it is restored in {seconds} s.",
                standing.limit
            ),
        ),
        Unit::Micros => (
            CODE_COST_EXCEEDED,
            format!(
                "The cost budget '{name}' of {} USD is used up; it is restored in {seconds} s.",
                unit.show(standing.limit)
            ),
        ),
    };
    ApiError::new(429, kind_for_status(429), code, message)
        .with_header("retry-after", seconds.to_string())
}

/// 429 when what is left of the budget is reserved by requests still running.
pub fn in_flight(name: &str) -> ApiError {
    in_flight_in(Unit::Tokens, name)
}

/// 429 when what is left of a budget counted in `unit` is reserved by requests in flight.
pub fn in_flight_in(unit: Unit, name: &str) -> ApiError {
    let (code, what) = match unit {
        Unit::Tokens => (CODE_IN_FLIGHT, "token"),
        Unit::Micros => (CODE_COST_IN_FLIGHT, "cost"),
    };
    ApiError::new(
        429,
        kind_for_status(429),
        code,
        format!("The rest of the {what} budget '{name}' is reserved by requests in flight; retry shortly."),
    )
    .with_header("retry-after", "1")
}

/// 503 when budgets cannot be checked and the failure mode is closed.
pub fn unavailable() -> ApiError {
    ApiError::new(
        503,
        kind_for_status(503),
        CODE_UNAVAILABLE,
        "Budgets cannot be checked right now; the request was not sent.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_report_the_tightest_budget() {
        let a = Standing {
            limit: 1000,
            remaining: 900,
            reset_ms: 30_000,
        };
        let b = Standing {
            limit: 100,
            remaining: 40,
            reset_ms: 1_500,
        };
        let t = tightest([a, b]).unwrap_or(a);
        assert_eq!(
            headers(t),
            vec![
                (LIMIT.to_string(), "100".to_string()),
                (REMAINING.to_string(), "40".to_string()),
                (RESET.to_string(), "2s".to_string()),
            ]
        );
        assert_eq!(tightest(Vec::new()), None);
    }

    #[test]
    fn exceeded_is_an_openai_rate_limit_error_with_retry_after() {
        let error = exceeded(
            "per-user",
            Standing {
                limit: 100,
                remaining: 0,
                reset_ms: 12_001,
            },
        );
        assert_eq!(
            (error.status, error.kind, error.code.as_str()),
            (429, "rate_limit_error", CODE_EXCEEDED)
        );
        assert_eq!(
            error.headers,
            vec![("retry-after".to_string(), "13".to_string())]
        );
        assert!(error.message.contains("per-user") && error.message.contains("100"));
        let busy = in_flight("per-user");
        assert_eq!((busy.status, busy.code.as_str()), (429, CODE_IN_FLIGHT));
        assert_eq!(unavailable().status, 503);
    }

    #[test]
    fn cost_budgets_are_reported_in_dollars_apart_from_token_budgets() {
        let tokens = Standing {
            limit: 1000,
            remaining: 5,
            reset_ms: 30_000,
        };
        let dollars = Standing {
            limit: 25_000_000,
            remaining: 1_234_567,
            reset_ms: 60_000,
        };
        let dearer = Standing {
            remaining: 20_000_000,
            ..dollars
        };
        assert_eq!(
            for_standings([
                (Unit::Micros, dearer),
                (Unit::Tokens, tokens),
                (Unit::Micros, dollars)
            ]),
            vec![
                (LIMIT.to_string(), "1000".to_string()),
                (REMAINING.to_string(), "5".to_string()),
                (RESET.to_string(), "30s".to_string()),
                (LIMIT_USD.to_string(), "25.000000".to_string()),
                (REMAINING_USD.to_string(), "1.234567".to_string()),
                (RESET_USD.to_string(), "60s".to_string()),
            ]
        );
        assert!(for_standings([]).is_empty());
        let error = exceeded_in(Unit::Micros, "team", dollars);
        assert_eq!(
            (error.status, error.code.as_str()),
            (429, CODE_COST_EXCEEDED)
        );
        assert!(
            error.message.contains("'team' of 25.000000 USD"),
            "{}",
            error.message
        );
        assert_eq!(
            error.headers,
            vec![("retry-after".to_string(), "60".to_string())]
        );
        let busy = in_flight_in(Unit::Micros, "team");
        assert_eq!(
            (busy.status, busy.code.as_str()),
            (429, CODE_COST_IN_FLIGHT)
        );
    }
}
