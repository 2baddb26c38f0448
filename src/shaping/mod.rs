//! Prompt shaping: templates, prepend/append, defaults and overrides (CONFIG.md RequestShaping).

use serde_json::Value;

use crate::config::model::RequestConfig;
use crate::config::ConfigError;
use crate::error::ApiError;

#[derive(Debug)]
pub struct Shaping {
    pub max_body_bytes: u64,
}

impl Shaping {
    pub fn compile(config: &RequestConfig, path: &str) -> Result<Shaping, ConfigError> {
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new(
                format!("{path}.max_body_bytes"),
                "must be greater than 0",
            ));
        }
        let unsupported = [
            ("prepend", !config.prepend.is_empty()),
            ("append", !config.append.is_empty()),
            ("templates", !config.templates.is_empty()),
            ("allow_untemplated", !config.allow_untemplated),
            ("defaults", !config.defaults.is_empty()),
            ("overrides", !config.overrides.is_empty()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, given)| *given) {
            return Err(ConfigError::new(
                format!("{path}.{key}"),
                "is not supported by this build yet",
            ));
        }
        Ok(Shaping {
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Applies the shaping stages to a request body, in the documented order.
    pub fn apply(&self, _body: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }
}
