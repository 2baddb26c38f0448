//! Guards on prompts and answers (CONFIG.md Guards).
//!
//! - `regex` runs in process: on the request's texts, on whole answers, and on streamed
//!   answers through `stream_mask` (an `EventFilter`).
//! - `webhook`, `moderation` and `llm_check` ask another service through an Envoy cluster
//!   (`Step::Call`); on the response side they need the whole answer, so a streamed request is
//!   sent upstream without streaming and re-streamed to the client.
//!
//! Every guard has a name (its error `code` and metric label; default: its kind).

pub mod builtins;
mod callout;
pub mod engine;
mod llm_check;
mod moderation;
pub mod outcome;
pub mod regex_guard;
pub mod stream_mask;
pub mod text;
mod webhook;

use std::rc::Rc;

use crate::config::compile_endpoint;
use crate::config::model::{GuardConfig, GuardsConfig, RejectConfig};
use crate::config::{Auth, ConfigError, EnvLookup};
use crate::pipeline::stage::Side;
use crate::pipeline::stage::{EventFilter, RequestStage, ResponseStage};
use outcome::{GuardInfo, RejectPolicy};
use regex_guard::{RegexGuard, RegexRequestStage, RegexResponseStage, Scanner};

/// Makes a fresh per-stream filter for each streamed answer.
pub trait EventFilterFactory: std::fmt::Debug {
    /// A filter over the events of `api`'s streamed answers.
    fn create(&self, api: &'static dyn crate::client_api::ClientApi) -> Box<dyn EventFilter>;
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
        route: &str,
        env: &dyn EnvLookup,
    ) -> Result<GuardPlan, ConfigError> {
        let reject = Rc::new(compile_reject(&config.reject, &format!("{path}.reject"))?);
        let mut plan = GuardPlan::default();
        for (index, guard) in config.request.iter().enumerate() {
            let at = format!("{path}.request[{index}]");
            let context = Context {
                route,
                side: Side::Request,
                reject: &reject,
                env,
            };
            plan.request.push(compile_request(guard, &at, &context)?);
        }
        for (index, guard) in config.response.iter().enumerate() {
            let at = format!("{path}.response[{index}]");
            let context = Context {
                route,
                side: Side::Response,
                reject: &reject,
                env,
            };
            compile_response(guard, &at, &context, &mut plan)?;
        }
        Ok(plan)
    }
}

struct Context<'a> {
    route: &'a str,
    side: Side,
    reject: &'a Rc<RejectPolicy>,
    env: &'a dyn EnvLookup,
}

impl Context<'_> {
    fn info(&self, name: &Option<String>, kind: &str, at: &str) -> Result<GuardInfo, ConfigError> {
        let name = match name {
            None => kind.to_string(),
            Some(name) => {
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(ConfigError::new(
                        format!("{at}.{kind}.name"),
                        "must be 1 to 64 ASCII letters, digits, '_' or '-' (it is the error code and a metric label)",
                    ));
                }
                name.clone()
            }
        };
        Ok(GuardInfo {
            name,
            route: self.route.to_string(),
            side: self.side,
            reject: Rc::clone(self.reject),
        })
    }
}

fn compile_reject(config: &RejectConfig, path: &str) -> Result<RejectPolicy, ConfigError> {
    if !(400..=599).contains(&config.status) {
        return Err(ConfigError::new(
            format!("{path}.status"),
            "must be an HTTP error status (400 to 599)",
        ));
    }
    if config.message.trim().is_empty() {
        return Err(ConfigError::new(
            format!("{path}.message"),
            "must not be empty",
        ));
    }
    Ok(RejectPolicy {
        status: config.status,
        message: config.message.clone(),
    })
}

fn compile_regex(
    config: &crate::config::model::RegexGuardConfig,
    at: &str,
    context: &Context<'_>,
) -> Result<Rc<RegexGuard>, ConfigError> {
    let info = context.info(&config.name, "regex", at)?;
    let scanner = Scanner::compile(config, &format!("{at}.regex"))?;
    Ok(Rc::new(RegexGuard {
        info,
        scanner,
        action: config.action,
    }))
}

fn compile_request(
    guard: &GuardConfig,
    at: &str,
    context: &Context<'_>,
) -> Result<Box<dyn RequestStage>, ConfigError> {
    Ok(match guard {
        GuardConfig::Regex(config) => {
            Box::new(RegexRequestStage(compile_regex(config, at, context)?))
        }
        GuardConfig::Webhook(config) => Box::new(compile_webhook(config, at, context)?),
        GuardConfig::Moderation(config) => {
            Box::new(callout::OnRequest(compile_moderation(config, at, context)?))
        }
        GuardConfig::LlmCheck(config) => {
            Box::new(callout::OnRequest(compile_llm_check(config, at, context)?))
        }
    })
}

fn compile_response(
    guard: &GuardConfig,
    at: &str,
    context: &Context<'_>,
    plan: &mut GuardPlan,
) -> Result<(), ConfigError> {
    let stage: Box<dyn ResponseStage> = match guard {
        GuardConfig::Regex(config) => {
            let guard = compile_regex(config, at, context)?;
            plan.stream
                .push(Box::new(stream_mask::StreamMaskFactory(Rc::clone(&guard))));
            Box::new(RegexResponseStage(guard))
        }
        GuardConfig::Webhook(config) => Box::new(webhook::WebhookResponseGuard(compile_webhook(
            config, at, context,
        )?)),
        GuardConfig::Moderation(config) => {
            Box::new(callout::OnAnswer(compile_moderation(config, at, context)?))
        }
        GuardConfig::LlmCheck(config) => {
            Box::new(callout::OnAnswer(compile_llm_check(config, at, context)?))
        }
    };
    plan.response.push(stage);
    Ok(())
}

fn compile_webhook(
    config: &crate::config::model::WebhookGuardConfig,
    at: &str,
    context: &Context<'_>,
) -> Result<webhook::WebhookGuard, ConfigError> {
    let info = context.info(&config.name, "webhook", at)?;
    let default_path = match context.side {
        Side::Request => "/request",
        Side::Response => "/response",
    };
    let endpoint = compile_endpoint(
        &config.endpoint,
        &format!("{at}.webhook.endpoint"),
        default_path,
        context.env,
    )?;
    let mut forward_headers = Vec::with_capacity(config.forward_headers.len());
    for (index, name) in config.forward_headers.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        let refused = name.is_empty()
            || name.starts_with(':')
            || matches!(
                name.as_str(),
                "content-length" | "content-type" | "host" | "transfer-encoding"
            )
            || (name == "authorization" && matches!(endpoint.auth, Auth::Key(_)));
        if refused {
            return Err(ConfigError::new(
                format!("{at}.webhook.forward_headers[{index}]"),
                "cannot forward this header (pseudo-headers, framing headers, or authorization when the endpoint has its own key)",
            ));
        }
        forward_headers.push(name);
    }
    Ok(webhook::WebhookGuard {
        info,
        endpoint,
        forward_headers,
        failure_mode: config.failure_mode,
    })
}

fn compile_moderation(
    config: &crate::config::model::ModerationGuardConfig,
    at: &str,
    context: &Context<'_>,
) -> Result<moderation::ModerationGuard, ConfigError> {
    let info = context.info(&config.name, "moderation", at)?;
    let endpoint = compile_endpoint(
        &config.endpoint,
        &format!("{at}.moderation.endpoint"),
        "/v1/moderations",
        context.env,
    )?;
    if config.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err(ConfigError::new(
            format!("{at}.moderation.model"),
            "must not be empty",
        ));
    }
    Ok(moderation::ModerationGuard {
        info,
        endpoint,
        model: config.model.clone(),
        failure_mode: config.failure_mode,
    })
}

fn compile_llm_check(
    config: &crate::config::model::LlmCheckGuardConfig,
    at: &str,
    context: &Context<'_>,
) -> Result<llm_check::LlmCheckGuard, ConfigError> {
    let info = context.info(&config.name, "llm_check", at)?;
    let endpoint = compile_endpoint(
        &config.endpoint,
        &format!("{at}.llm_check.endpoint"),
        "/v1/chat/completions",
        context.env,
    )?;
    if config.model.trim().is_empty() {
        return Err(ConfigError::new(
            format!("{at}.llm_check.model"),
            "must not be empty",
        ));
    }
    let prompt = match &config.prompt {
        Some(prompt) if prompt.trim().is_empty() => {
            return Err(ConfigError::new(
                format!("{at}.llm_check.prompt"),
                "must not be empty",
            ))
        }
        Some(prompt) => prompt.clone(),
        None => llm_check::DEFAULT_PROMPT.to_string(),
    };
    let unsafe_when = engine::Regex::new(
        config
            .unsafe_when
            .as_deref()
            .unwrap_or(llm_check::DEFAULT_UNSAFE_WHEN),
    )
    .map_err(|err| ConfigError::new(format!("{at}.llm_check.unsafe_when"), err))?;
    Ok(llm_check::LlmCheckGuard {
        info,
        endpoint,
        model: config.model.clone(),
        prompt,
        unsafe_when,
        failure_mode: config.failure_mode,
    })
}

#[cfg(test)]
mod tests;
