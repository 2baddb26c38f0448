//! Guards on prompts and answers (CONFIG.md Guards).

use crate::config::model::GuardsConfig;
use crate::config::{ConfigError, EnvLookup};
use crate::pipeline::stage::{EventFilter, RequestStage, ResponseStage};

/// Makes a fresh per-stream filter for each streamed answer.
pub trait EventFilterFactory: std::fmt::Debug {
    fn create(&self) -> Box<dyn EventFilter>;
}

#[derive(Debug, Default)]
pub struct GuardPlan {
    pub request: Vec<Box<dyn RequestStage>>,
    pub response: Vec<Box<dyn ResponseStage>>,
    pub stream: Vec<Box<dyn EventFilterFactory>>,
}

impl GuardPlan {
    pub fn compile(
        config: &GuardsConfig,
        path: &str,
        _env: &dyn EnvLookup,
    ) -> Result<GuardPlan, ConfigError> {
        if !config.request.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.request"),
                "guards are not supported by this build yet",
            ));
        }
        if !config.response.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.response"),
                "guards are not supported by this build yet",
            ));
        }
        Ok(GuardPlan::default())
    }
}
