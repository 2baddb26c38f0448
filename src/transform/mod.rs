//! LLM transformers: rewrite a request or response body through a model (CONFIG.md Transformer).

use crate::config::model::TransformConfig;
use crate::config::{ConfigError, EnvLookup};
use crate::pipeline::stage::{RequestStage, ResponseStage};

#[derive(Debug, Default)]
pub struct TransformPlan {
    pub request: Option<Box<dyn RequestStage>>,
    pub response: Option<Box<dyn ResponseStage>>,
}

impl TransformPlan {
    pub fn compile(
        config: &TransformConfig,
        path: &str,
        _env: &dyn EnvLookup,
    ) -> Result<TransformPlan, ConfigError> {
        if config.request.is_some() || config.response.is_some() {
            return Err(ConfigError::new(
                path,
                "transformers are not supported by this build yet",
            ));
        }
        Ok(TransformPlan::default())
    }
}
