//! What the client is told: `x-ratelimit-*-tokens` headers on every answer of a limited
//! route (in the style of OpenAI's), and the 429 / 503 errors.

use super::window::seconds_ceil;
use crate::error::{kind_for_status, ApiError};

pub const LIMIT: &str = "x-ratelimit-limit-tokens";
pub const REMAINING: &str = "x-ratelimit-remaining-tokens";
pub const RESET: &str = "x-ratelimit-reset-tokens";

pub const CODE_EXCEEDED: &str = "token_budget_exceeded";
pub const CODE_IN_FLIGHT: &str = "token_budget_in_flight";
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
    vec![
        (LIMIT.to_string(), standing.limit.to_string()),
        (REMAINING.to_string(), standing.remaining.to_string()),
        (
            RESET.to_string(),
            format!("{}s", seconds_ceil(standing.reset_ms)),
        ),
    ]
}

/// 429 for a used-up budget; retry when its window ends.
pub fn exceeded(name: &str, standing: Standing) -> ApiError {
    let seconds = seconds_ceil(standing.reset_ms);
    ApiError::new(
        429,
        kind_for_status(429),
        CODE_EXCEEDED,
        format!(
            "The token budget '{name}' of {} tokens is used up; it is restored in {seconds} s.",
            standing.limit
        ),
    )
    .with_header("retry-after", seconds.to_string())
}

/// 429 when what is left of the budget is reserved by requests still running.
pub fn in_flight(name: &str) -> ApiError {
    ApiError::new(
        429,
        kind_for_status(429),
        CODE_IN_FLIGHT,
        format!("The rest of the token budget '{name}' is reserved by requests in flight; retry shortly."),
    )
    .with_header("retry-after", "1")
}

/// 503 when budgets cannot be checked and the failure mode is closed.
pub fn unavailable() -> ApiError {
    ApiError::new(
        503,
        kind_for_status(503),
        CODE_UNAVAILABLE,
        "Token budgets cannot be checked right now; the request was not sent.",
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
}
