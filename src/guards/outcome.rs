//! What a guard decided, as an error for the client and a metric for the operator:
//! `aigate.guard.outcomes_total;route=<route>;guard=<name>;side=<request|response>;outcome=<outcome>`.

use std::rc::Rc;

use crate::config::model::FailureMode;
use crate::error::ApiError;
use crate::host::Host;
use crate::metrics;
use crate::pipeline::stage::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guard rejected the request or answer.
    Blocked,
    /// The guard changed some text.
    Masked,
    /// A callout failed and `failure_mode: open` let the request go on.
    FailedOpen,
    /// A callout failed and `failure_mode: closed` rejected with 503.
    FailedClosed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Masked => "masked",
            Outcome::FailedOpen => "failed_open",
            Outcome::FailedClosed => "failed_closed",
        }
    }
}

/// `guards.reject`: how a rejection looks to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectPolicy {
    pub status: u16,
    pub message: String,
}

pub const GUARDRAIL_VIOLATION: &str = "guardrail_violation";

/// Who a guard is: its name (the error `code` and a metric label), route and side.
#[derive(Debug, Clone)]
pub struct GuardInfo {
    pub name: String,
    pub route: String,
    pub side: Side,
    pub reject: Rc<RejectPolicy>,
}

impl GuardInfo {
    pub fn count(&self, host: &mut dyn Host, outcome: Outcome) {
        let name = metrics::name(
            metrics::GUARD_OUTCOMES,
            &[
                ("route", &self.route),
                ("guard", &self.name),
                ("side", self.side.as_str()),
                ("outcome", outcome.as_str()),
            ],
        );
        host.counter_add(&name, 1);
    }

    /// The rejection from `guards.reject`, counted. Never carries the offending text.
    pub fn block(&self, host: &mut dyn Host) -> ApiError {
        self.count(host, Outcome::Blocked);
        self.violation(self.reject.status, self.reject.message.clone())
    }

    /// A rejection whose status and message a webhook chose.
    pub fn block_with(&self, host: &mut dyn Host, status: u16, message: String) -> ApiError {
        self.count(host, Outcome::Blocked);
        self.violation(status, message)
    }

    fn violation(&self, status: u16, message: String) -> ApiError {
        ApiError::new(status, GUARDRAIL_VIOLATION, self.name.clone(), message)
    }

    pub fn masked(&self, host: &mut dyn Host) {
        self.count(host, Outcome::Masked);
    }

    /// A callout failed (`why` names the status, never a body). Closed: the 503 to answer
    /// with. Open: None, and the request goes on.
    pub fn callout_failed(
        &self,
        host: &mut dyn Host,
        mode: FailureMode,
        why: &str,
    ) -> Option<ApiError> {
        match mode {
            FailureMode::Open => {
                log::warn!(
                    "aigate: route {}: {} guard {} failed ({why}); failure_mode open: going on",
                    self.route,
                    self.side.as_str(),
                    self.name
                );
                self.count(host, Outcome::FailedOpen);
                None
            }
            FailureMode::Closed => {
                log::warn!(
                    "aigate: route {}: {} guard {} failed ({why}); failure_mode closed: rejecting",
                    self.route,
                    self.side.as_str(),
                    self.name
                );
                self.count(host, Outcome::FailedClosed);
                Some(ApiError::new(
                    503,
                    "api_error",
                    self.name.clone(),
                    format!(
                        "The guard {:?} could not check this content; try again later.",
                        self.name
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RecordingHost;

    fn info() -> GuardInfo {
        GuardInfo {
            name: "pii".into(),
            route: "chat".into(),
            side: Side::Request,
            reject: Rc::new(RejectPolicy {
                status: 451,
                message: "no".into(),
            }),
        }
    }

    #[test]
    fn block_counts_and_shapes_the_error() {
        let mut host = RecordingHost::new();
        let error = info().block(&mut host);
        assert_eq!(
            (error.status, error.kind, error.code.as_str()),
            (451, GUARDRAIL_VIOLATION, "pii")
        );
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=chat;guard=pii;side=request;outcome=blocked"
            ),
            1
        );
    }

    #[test]
    fn failures_by_mode() {
        let mut host = RecordingHost::new();
        assert!(info()
            .callout_failed(&mut host, FailureMode::Open, "status 503")
            .is_none());
        let error = info()
            .callout_failed(&mut host, FailureMode::Closed, "status 504")
            .unwrap();
        assert_eq!(error.status, 503);
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=chat;guard=pii;side=request;outcome=failed_open"
            ),
            1
        );
        assert_eq!(
            host.counter(
                "aigate.guard.outcomes_total;route=chat;guard=pii;side=request;outcome=failed_closed"
            ),
            1
        );
    }
}
