//! Token budgets per key, local or through a rate limit service (CONFIG.md Limits).

use crate::config::model::LimitsConfig;
use crate::config::ConfigError;
use crate::host::{Callout, Host};
use crate::pipeline::stage::{Notes, RequestStage};
use crate::usage::Usage;

#[derive(Debug)]
pub struct LimitPlan {
    pub check: Box<dyn RequestStage>,
}

impl LimitPlan {
    pub fn compile(_config: &LimitsConfig, path: &str) -> Result<LimitPlan, ConfigError> {
        Err(ConfigError::new(
            path,
            "limits are not supported by this build yet",
        ))
    }

    /// Charges the answer's tokens to the keys the check recorded. A callout returned here is
    /// sent without waiting for its reply (rate limit service reports).
    pub fn charge(&self, _notes: &Notes, _usage: Usage, _host: &mut dyn Host) -> Vec<Callout> {
        Vec::new()
    }
}
