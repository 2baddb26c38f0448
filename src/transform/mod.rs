//! LLM transformers: rewrite a request or response body through a model (CONFIG.md Transformer).
//!
//! The body (JSON) becomes the `user` message and `prompt` the `system` message of a
//! non-streamed chat completion sent to `endpoint`; the reply's content, or the first match
//! of `extract_pattern`, replaces the body. `request` runs last among the request stages
//! (after limits and guards, before provider translation); `response` runs last among the
//! response stages, on the answer already translated to the OpenAI shape.

mod callout;
mod instructions;
mod request;
mod response;

use crate::guards::engine::Regex;

use crate::config::model::TransformConfig;
use crate::config::model::{FailureMode, TransformerConfig};
use crate::config::{compile_endpoint, ConfigError, Endpoint, EnvLookup};
use crate::error::ApiError;
use crate::host::{CalloutReply, Host};
use crate::metrics;
use crate::pipeline::stage::{RequestStage, ResponseStage, Side};
use callout::{ModelReply, ReplyError};

pub use request::RequestTransformer;
pub use response::ResponseTransformer;

pub const DEFAULT_PATH: &str = "/v1/chat/completions";

#[derive(Debug, Default)]
pub struct TransformPlan {
    pub request: Option<Box<dyn RequestStage>>,
    pub response: Option<Box<dyn ResponseStage>>,
}

impl TransformPlan {
    pub fn compile(
        config: &TransformConfig,
        path: &str,
        env: &dyn EnvLookup,
    ) -> Result<TransformPlan, ConfigError> {
        let request = match &config.request {
            Some(request) => {
                let at = format!("{path}.request");
                if request.parse_instructions {
                    return Err(ConfigError::new(
                        format!("{at}.parse_instructions"),
                        "only applies to the response transformer",
                    ));
                }
                let stage: Box<dyn RequestStage> = Box::new(RequestTransformer(
                    Transformer::compile(request, &at, Side::Request, env)?,
                ));
                Some(stage)
            }
            None => None,
        };
        let response = match &config.response {
            Some(response) => {
                let at = format!("{path}.response");
                let stage: Box<dyn ResponseStage> = Box::new(ResponseTransformer(
                    Transformer::compile(response, &at, Side::Response, env)?,
                ));
                Some(stage)
            }
            None => None,
        };
        Ok(TransformPlan { request, response })
    }
}

/// One compiled transformer; the request and response stages wrap it.
#[derive(Debug)]
pub struct Transformer {
    side: Side,
    endpoint: Endpoint,
    model: Option<String>,
    prompt: String,
    extract: Option<Regex>,
    parse_instructions: bool,
    failure_mode: FailureMode,
}

/// Why a transformer's rewrite did not happen.
#[derive(Debug)]
enum Failure {
    /// The callout failed or timed out: `failure_mode` decides.
    Unavailable(u16),
    /// The transformer answered, but with nothing usable: always 502.
    Invalid(String),
}

impl Transformer {
    pub fn compile(
        config: &TransformerConfig,
        path: &str,
        side: Side,
        env: &dyn EnvLookup,
    ) -> Result<Transformer, ConfigError> {
        let endpoint = compile_endpoint(
            &config.endpoint,
            &format!("{path}.endpoint"),
            DEFAULT_PATH,
            env,
        )?;
        if config.prompt.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.prompt"),
                "must not be empty",
            ));
        }
        if config
            .model
            .as_ref()
            .is_some_and(|model| model.trim().is_empty())
        {
            return Err(ConfigError::new(
                format!("{path}.model"),
                "must not be empty when given",
            ));
        }
        let extract = match &config.extract_pattern {
            Some(pattern) => Some(Regex::new(pattern).map_err(|err| {
                ConfigError::new(
                    format!("{path}.extract_pattern"),
                    format!("invalid regex: {err}"),
                )
            })?),
            None => None,
        };
        Ok(Transformer {
            side,
            endpoint,
            model: config.model.clone(),
            prompt: config.prompt.clone(),
            extract,
            parse_instructions: config.parse_instructions,
            failure_mode: config.failure_mode,
        })
    }

    fn callout(&self, user: &str) -> crate::host::Callout {
        callout::chat_callout(&self.endpoint, self.model.as_deref(), &self.prompt, user)
    }

    /// Reads the reply, counts the transformer's own tokens, and returns the text to use
    /// (after `extract_pattern`, trimmed).
    fn output(
        &self,
        reply: &CalloutReply,
        route: &str,
        host: &mut dyn Host,
    ) -> Result<String, Failure> {
        let answer = callout::read_reply(reply).map_err(|err| match err {
            ReplyError::Failed(status) => Failure::Unavailable(status),
            ReplyError::Invalid(why) => Failure::Invalid(why.to_string()),
        })?;
        self.count_usage(&answer, route, host);
        match callout::extract(self.extract.as_ref(), &answer.content) {
            Some(text) => Ok(text.trim().to_string()),
            None => Err(Failure::Invalid(
                "its reply does not match extract_pattern".to_string(),
            )),
        }
    }

    /// `gen_ai.client.token.usage;route=<r>;aigate.transformer=<side>;...`: the transformer's
    /// tokens, apart from the provider's (and not charged to limits).
    fn count_usage(&self, answer: &ModelReply, route: &str, host: &mut dyn Host) {
        let Some(usage) = answer.usage else { return };
        let model = self
            .model
            .as_deref()
            .or(answer.model.as_deref())
            .unwrap_or_default();
        for (token_type, count) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            let name = metrics::name(
                metrics::TOKEN_USAGE,
                &[
                    ("route", route),
                    ("transformer", self.side.as_str()),
                    (metrics::OPERATION_NAME, "chat"),
                    (metrics::REQUEST_MODEL, model),
                    (metrics::TOKEN_TYPE, token_type),
                ],
            );
            host.histogram_record(&name, count);
            let (_, labels) = metrics::split(&name);
            host.counter_add(&metrics::name(metrics::TOKENS, &labels), count);
        }
    }

    /// `aigate.transformer.outcomes_total;route=<r>;transformer=<side>;outcome=<o>`.
    fn count_outcome(&self, outcome: &str, route: &str, host: &mut dyn Host) {
        let name = metrics::name(
            metrics::TRANSFORMER_OUTCOMES,
            &[
                ("route", route),
                ("transformer", self.side.as_str()),
                ("outcome", outcome),
            ],
        );
        host.counter_add(&name, 1);
    }

    /// What a failure becomes: `None` to go on unchanged (failure_mode open), else the error.
    fn on_failure(&self, failure: Failure, route: &str, host: &mut dyn Host) -> Option<ApiError> {
        let side = self.side.as_str();
        match failure {
            Failure::Unavailable(status) => {
                log::warn!(
                    "aigate: route {route}: {side} transformer via cluster {} failed with status {status} (failure_mode {})",
                    self.endpoint.cluster,
                    if self.failure_mode == FailureMode::Open { "open" } else { "closed" },
                );
                if self.failure_mode == FailureMode::Open {
                    self.count_outcome("failed_open", route, host);
                    return None;
                }
                self.count_outcome("failed_closed", route, host);
                Some(ApiError::new(
                    503,
                    "api_error",
                    "transformer_unavailable",
                    format!("The {side} transformer is unavailable (its call ended with status {status})."),
                ))
            }
            Failure::Invalid(why) => {
                log::warn!("aigate: route {route}: {side} transformer output is unusable: {why}");
                self.count_outcome("invalid_output", route, host);
                Some(ApiError::new(
                    502,
                    "api_error",
                    "transformer_invalid_output",
                    format!("The {side} transformer's output can not be used: {why}."),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
