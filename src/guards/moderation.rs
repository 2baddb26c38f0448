//! The moderation guard: an OpenAI-compatible `/v1/moderations` gets every text (one input
//! item each); any result with `flagged: true` rejects.

use serde_json::{json, Map, Value};

use super::callout::{self, failed, json_reply, TextVerdict};
use super::outcome::GuardInfo;
use crate::config::model::FailureMode;
use crate::config::Endpoint;
use crate::host::{CalloutReply, Host};
use crate::pipeline::stage::Step;

#[derive(Debug)]
pub struct ModerationGuard {
    pub info: GuardInfo,
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub failure_mode: FailureMode,
}

impl TextVerdict for ModerationGuard {
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
