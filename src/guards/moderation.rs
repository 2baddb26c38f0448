//! The moderation guard: an OpenAI-compatible `/v1/moderations` gets every text (one input
//! item each); any result with `flagged: true` rejects.

use serde_json::{json, Map, Value};

use super::callout::{self, failed, json_reply};
use super::outcome::GuardInfo;
use super::text;
use crate::config::model::FailureMode;
use crate::config::Endpoint;
use crate::host::{CalloutReply, Host};
use crate::pipeline::stage::{RequestCtx, RequestStage, ResponseCtx, ResponseStage, Step};

#[derive(Debug)]
pub struct ModerationGuard {
    pub info: GuardInfo,
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub failure_mode: FailureMode,
}

impl ModerationGuard {
    fn call(&self, texts: Vec<String>) -> Step {
        if texts.is_empty() {
            return Step::Next;
        }
        let mut body = Map::new();
        if let Some(model) = &self.model {
            body.insert("model".into(), Value::String(model.clone()));
        }
        body.insert("input".into(), json!(texts));
        Step::Call(callout::post_json(
            &self.endpoint,
            &Value::Object(body),
            Vec::new(),
        ))
    }

    fn judge(&self, host: &mut dyn Host, reply: &CalloutReply) -> Step {
        let value = match json_reply(reply) {
            Ok(value) => value,
            Err(why) => return failed(&self.info, host, self.failure_mode, &why),
        };
        let Some(results) = value.get("results").and_then(Value::as_array) else {
            return failed(
                &self.info,
                host,
                self.failure_mode,
                "the reply has no \"results\" array",
            );
        };
        let flagged = results.iter().any(|result| {
            result
                .get("flagged")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        });
        if flagged {
            Step::Reject(self.info.block(host))
        } else {
            Step::Next
        }
    }
}

impl RequestStage for ModerationGuard {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        self.call(text::request_texts(ctx.body))
    }

    fn on_reply(&self, ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
        self.judge(ctx.host, reply)
    }
}

/// The same check on the answer's texts.
#[derive(Debug)]
pub struct ModerationResponseGuard(pub ModerationGuard);

impl ResponseStage for ModerationResponseGuard {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step {
        self.0.call(text::answer_texts(ctx.body))
    }

    fn on_reply(&self, ctx: &mut ResponseCtx<'_>, reply: &CalloutReply) -> Step {
        self.0.judge(ctx.host, reply)
    }

    fn needs_whole_answer(&self) -> bool {
        true
    }

    fn sets_status(&self) -> bool {
        true
    }
}
