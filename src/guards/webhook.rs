//! The webhook guard: the operator's own service decides.
//!
//! Request side: `POST {"body":{"messages":[...]}}` (legacy completions send `prompt`,
//! embeddings `input`, Anthropic Messages `messages` and `system`); the reply is `{"action":"pass"}`, `{"action":"mask","body":{...}}`
//! with the same keys and as many messages, or `{"action":"reject","status_code":403,
//! "reason":"..."}`. Response side: `POST {"body":{"choices":[...]}}` (an Anthropic Message:
//! `{"body":{"content":[...]}}`); the reply is `pass`, or `mask` with as many choices (blocks). Anything else is a failed callout (`failure_mode`).

use serde_json::{json, Map, Value};

use super::callout::{self, bounded, failed, forwarded, json_reply};
use super::outcome::GuardInfo;
use crate::config::model::FailureMode;
use crate::config::Endpoint;
use crate::host::{CalloutReply, Host};
use crate::pipeline::stage::{RequestCtx, RequestStage, ResponseCtx, ResponseStage, Step};

/// The request keys a webhook sees and may mask.
const REQUEST_KEYS: [&str; 4] = ["messages", "prompt", "input", "system"];
/// The answer keys a webhook sees and may mask (`content`: an Anthropic Message's blocks).
const RESPONSE_KEYS: [&str; 2] = ["choices", "content"];

#[derive(Debug)]
pub struct WebhookGuard {
    pub info: GuardInfo,
    pub endpoint: Endpoint,
    /// Lower-cased header names.
    pub forward_headers: Vec<String>,
    pub failure_mode: FailureMode,
}

impl WebhookGuard {
    fn call(&self, payload: Map<String, Value>, request_headers: &[(String, String)]) -> Step {
        let headers = forwarded(&self.forward_headers, request_headers);
        Step::Call(callout::post_json(
            &self.endpoint,
            &json!({ "body": payload }),
            headers,
        ))
    }

    fn fail(&self, host: &mut dyn Host, why: &str) -> Step {
        failed(&self.info, host, self.failure_mode, why)
    }

    /// The reply's action and body, or why the reply is unusable.
    fn decide(reply: &CalloutReply) -> Result<(String, Value), String> {
        let value = json_reply(reply)?;
        let action = value
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| "the reply has no \"action\"".to_string())?
            .to_string();
        Ok((action, value))
    }
}

/// Replaces each key of `body` with the webhook's version, which must have the same shape
/// (a string for a string, an array of as many items for an array).
fn apply_mask(body: &mut Value, masked: Option<&Value>, keys: &[&str]) -> Result<(), String> {
    let masked = masked
        .and_then(Value::as_object)
        .ok_or_else(|| "a mask reply needs a \"body\" object".to_string())?;
    let mut replacements = Vec::new();
    for key in keys {
        let Some(original) = body.get(*key) else {
            continue;
        };
        let Some(replacement) = masked.get(*key) else {
            return Err(format!("the mask reply lacks \"{key}\""));
        };
        let same_shape = match (original, replacement) {
            (Value::Array(a), Value::Array(b)) => {
                let needs_objects = matches!(*key, "messages" | "choices" | "content");
                a.len() == b.len() && (!needs_objects || b.iter().all(Value::is_object))
            }
            (Value::String(_), Value::String(_)) => true,
            _ => false,
        };
        if !same_shape {
            return Err(format!(
                "the mask reply changed the shape or count of \"{key}\""
            ));
        }
        replacements.push((*key, replacement.clone()));
    }
    if let Some(object) = body.as_object_mut() {
        for (key, value) in replacements {
            object.insert(key.to_string(), value);
        }
    }
    Ok(())
}

fn payload(body: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|key| body.get(*key).map(|value| (key.to_string(), value.clone())))
        .collect()
}

impl RequestStage for WebhookGuard {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        let payload = payload(ctx.body, &REQUEST_KEYS);
        if payload.is_empty() {
            return Step::Next;
        }
        self.call(payload, ctx.request_headers)
    }

    fn on_reply(&self, ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
        let (action, value) = match Self::decide(reply) {
            Ok(decided) => decided,
            Err(why) => return self.fail(ctx.host, &why),
        };
        match action.as_str() {
            "pass" => Step::Next,
            "mask" => match apply_mask(ctx.body, value.get("body"), &REQUEST_KEYS) {
                Ok(()) => {
                    self.info.masked(ctx.host);
                    Step::Next
                }
                Err(why) => self.fail(ctx.host, &why),
            },
            "reject" => {
                let status = value
                    .get("status_code")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (400..=599).contains(s))
                    .unwrap_or(self.info.reject.status);
                let message = value
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(bounded)
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or_else(|| self.info.reject.message.clone());
                Step::Reject(self.info.block_with(ctx.host, status, message))
            }
            _ => self.fail(ctx.host, "the reply's action is not pass, mask or reject"),
        }
    }
}

/// The same webhook on the answer (`/response`).
#[derive(Debug)]
pub struct WebhookResponseGuard(pub WebhookGuard);

impl ResponseStage for WebhookResponseGuard {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step {
        let payload = payload(ctx.body, &RESPONSE_KEYS);
        if payload.is_empty() {
            return Step::Next;
        }
        self.0.call(payload, ctx.request_headers)
    }

    fn on_reply(&self, ctx: &mut ResponseCtx<'_>, reply: &CalloutReply) -> Step {
        let (action, value) = match WebhookGuard::decide(reply) {
            Ok(decided) => decided,
            Err(why) => return self.0.fail(ctx.host, &why),
        };
        match action.as_str() {
            "pass" => Step::Next,
            "mask" => match apply_mask(ctx.body, value.get("body"), &RESPONSE_KEYS) {
                Ok(()) => {
                    self.0.info.masked(ctx.host);
                    Step::Next
                }
                Err(why) => self.0.fail(ctx.host, &why),
            },
            _ => self
                .0
                .fail(ctx.host, "the reply's action is not pass or mask"),
        }
    }

    fn needs_whole_answer(&self) -> bool {
        true
    }

    /// Only a failure can reject on this side, and only when failing closed.
    fn sets_status(&self) -> bool {
        self.0.failure_mode == FailureMode::Closed
    }
}
