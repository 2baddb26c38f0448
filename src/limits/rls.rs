//! The `rls` backend: Envoy's rate limit service protocol (served by envoyproxy/ratelimit,
//! Limitador, ...) with budgets counted in tokens through `hits_addend`.
//!
//! Every token limit of a route becomes one descriptor with three entries:
//! `("route", <route name>)`, `("limit", <limit name>)`, `("key", <budget key>)`. Before the
//! request is forwarded one `ShouldRateLimit` with all descriptors and `hits_addend` 0 asks
//! whether any budget is used up; after the answer one more with `hits_addend` = the answer's
//! total tokens reports the usage (its reply is not awaited). The service owns the limits and
//! windows; the route's `limit` and `window_ms` only fill the headers when it says nothing.

use super::headers::Standing;
use super::ledger::Budget;
use super::proto::{self, RateLimitResponse, CODE_OVER_LIMIT};
use super::window::Window;
use crate::config::model::FailureMode;
use crate::host::{Callout, CalloutKind, CalloutReply};

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsBackend {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    pub failure_mode: FailureMode,
}

pub fn descriptor(route: &str, limit: &str, key: &str) -> Vec<(String, String)> {
    vec![
        ("route".to_string(), route.to_string()),
        ("limit".to_string(), limit.to_string()),
        ("key".to_string(), key.to_string()),
    ]
}

/// Usage reports hold nothing up, so they get at least this long before Envoy gives up on
/// them (a report that times out may go uncounted).
pub const MIN_REPORT_TIMEOUT_MS: u64 = 2_000;

impl RlsBackend {
    /// The check before forwarding (`hits_addend` 0) or the usage report after the answer.
    pub fn callout(&self, descriptors: &[Vec<(String, String)>], hits_addend: u32) -> Callout {
        let timeout_ms = if hits_addend == 0 {
            self.timeout_ms
        } else {
            self.timeout_ms.max(MIN_REPORT_TIMEOUT_MS)
        };
        Callout {
            cluster: self.cluster.clone(),
            kind: CalloutKind::Grpc {
                service: SERVICE.to_string(),
                method: METHOD.to_string(),
            },
            headers: Vec::new(),
            body: proto::encode_request(&self.domain, descriptors, hits_addend),
            timeout_ms,
        }
    }
}

/// What the service said about each descriptor, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every budget has tokens left; the standing of each (None when the service gave none).
    Allowed(Vec<Option<Standing>>),
    /// The budget at `index` is used up.
    Over {
        index: usize,
        standings: Vec<Option<Standing>>,
    },
    /// No usable answer: transport failure, timeout, gRPC error, or bytes that do not decode.
    Failed,
}

/// Reads a `ShouldRateLimit` reply. A budget counts as used up when the service says
/// `OVER_LIMIT` for it, or reports its limit with nothing remaining: servers differ on
/// whether a zero-cost check of an exactly spent budget is over the limit.
pub fn verdict(reply: &CalloutReply, budgets: &[Budget], now_ms: u64) -> Verdict {
    if reply.grpc_status != Some(0) || !reply.is_success() {
        return Verdict::Failed;
    }
    let Ok(response) = proto::decode_response(&reply.body) else {
        return Verdict::Failed;
    };
    let standings = standings(&response, budgets, now_ms);
    let over = response.statuses.iter().position(|status| {
        status.code == CODE_OVER_LIMIT
            || (status.current_limit.is_some() && status.limit_remaining == 0)
    });
    match over {
        Some(index) => Verdict::Over { index, standings },
        None if response.overall_code == CODE_OVER_LIMIT => Verdict::Over {
            index: 0,
            standings,
        },
        None => Verdict::Allowed(standings),
    }
}

fn standings(
    response: &RateLimitResponse,
    budgets: &[Budget],
    now_ms: u64,
) -> Vec<Option<Standing>> {
    budgets
        .iter()
        .enumerate()
        .map(|(index, budget)| {
            let status = response.statuses.get(index)?;
            let limit = status.current_limit?;
            Some(Standing {
                limit: u64::from(limit.requests_per_unit),
                remaining: u64::from(status.limit_remaining),
                reset_ms: status
                    .duration_until_reset_ms
                    .unwrap_or_else(|| Window::at(now_ms, budget.window_ms).reset_after_ms(now_ms)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BUDGETS: [Budget; 2] = [
        Budget {
            limit: 100,
            window_ms: 60_000,
        },
        Budget {
            limit: 1_000,
            window_ms: 3_600_000,
        },
    ];

    /// DescriptorStatus bytes: code, optional current_limit, remaining, optional reset seconds.
    fn status(code: u8, limit: Option<u8>, remaining: u8, reset_s: Option<u8>) -> Vec<u8> {
        let mut out = vec![0x08, code];
        if let Some(limit) = limit {
            out.extend_from_slice(&[0x12, 4, 0x08, limit, 0x10, 2]);
        }
        out.extend_from_slice(&[0x18, remaining]);
        if let Some(seconds) = reset_s {
            out.extend_from_slice(&[0x22, 2, 0x08, seconds]);
        }
        out
    }

    fn reply(overall: u8, statuses: &[Vec<u8>]) -> CalloutReply {
        let mut body = vec![0x08, overall];
        for s in statuses {
            body.push(0x12);
            body.push(s.len() as u8);
            body.extend_from_slice(s);
        }
        CalloutReply {
            status: 200,
            headers: Vec::new(),
            body,
            grpc_status: Some(0),
        }
    }

    #[test]
    fn callout_is_a_grpc_should_rate_limit() {
        let backend = RlsBackend {
            cluster: "ratelimit".into(),
            domain: "aigate".into(),
            timeout_ms: 100,
            failure_mode: FailureMode::Closed,
        };
        let callout = backend.callout(&[descriptor("chat", "per-user", "alice")], 0);
        assert_eq!(callout.cluster, "ratelimit");
        assert_eq!(
            callout.kind,
            CalloutKind::Grpc {
                service: SERVICE.into(),
                method: METHOD.into()
            }
        );
        assert_eq!(callout.timeout_ms, 100);
        assert_eq!(backend.callout(&[], 18).timeout_ms, MIN_REPORT_TIMEOUT_MS);
        let body = String::from_utf8_lossy(&callout.body);
        for part in [
            "aigate", "route", "chat", "limit", "per-user", "key", "alice",
        ] {
            assert!(body.contains(part), "{part} in {body}");
        }
    }

    #[test]
    fn ok_reply_gives_standings() {
        let r = reply(
            1,
            &[status(1, Some(100), 60, Some(20)), status(1, None, 0, None)],
        );
        assert_eq!(
            verdict(&r, &BUDGETS, 1_700_000_000_000),
            Verdict::Allowed(vec![
                Some(Standing {
                    limit: 100,
                    remaining: 60,
                    reset_ms: 20_000
                }),
                None
            ])
        );
    }

    #[test]
    fn over_limit_names_the_budget() {
        let r = reply(
            2,
            &[
                status(1, Some(100), 60, Some(20)),
                status(2, Some(50), 0, None),
            ],
        );
        match verdict(&r, &BUDGETS, 1_700_000_000_000) {
            Verdict::Over { index, standings } => {
                assert_eq!(index, 1);
                // No reset from the service: the local window of that budget.
                assert_eq!(
                    standings[1].unwrap().reset_ms,
                    3_600_000 - 1_700_000_000_000 % 3_600_000
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ok_with_nothing_remaining_is_used_up() {
        let r = reply(1, &[status(1, Some(100), 0, Some(3))]);
        assert!(matches!(
            verdict(&r, &BUDGETS, 0),
            Verdict::Over { index: 0, .. }
        ));
        // Overall OVER_LIMIT without statuses.
        assert!(matches!(
            verdict(&reply(2, &[]), &BUDGETS, 0),
            Verdict::Over { index: 0, .. }
        ));
    }

    #[test]
    fn failures() {
        let mut r = reply(1, &[]);
        r.grpc_status = Some(14);
        r.status = 502;
        assert_eq!(verdict(&r, &BUDGETS, 0), Verdict::Failed);
        let dispatch_failed = CalloutReply {
            status: 503,
            ..Default::default()
        };
        assert_eq!(verdict(&dispatch_failed, &BUDGETS, 0), Verdict::Failed);
        let garbage = CalloutReply {
            status: 200,
            body: vec![0x12, 9, 1],
            grpc_status: Some(0),
            ..Default::default()
        };
        assert_eq!(verdict(&garbage, &BUDGETS, 0), Verdict::Failed);
    }
}
