//! What the callout guards share: the HTTP request to an endpoint, reading its JSON reply,
//! and turning a failed callout into the step `failure_mode` asks for.

use serde_json::Value;

use super::outcome::GuardInfo;
use crate::client_api;
use crate::config::model::FailureMode;
use crate::config::{Auth, Endpoint};
use crate::host::{Callout, CalloutKind, CalloutReply, Host};
use crate::pipeline::stage::{RequestCtx, RequestStage, ResponseCtx, ResponseStage, Step};

/// A JSON `POST` to the endpoint's cluster, with its own credential when it has one.
pub fn post_json(
    endpoint: &Endpoint,
    body: &Value,
    extra_headers: Vec<(String, String)>,
) -> Callout {
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), endpoint.path.clone()),
        (":authority".to_string(), endpoint.authority.clone()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Auth::Key(secret) = &endpoint.auth {
        headers.push((
            "authorization".to_string(),
            format!("Bearer {}", secret.expose()),
        ));
    }
    headers.extend(extra_headers);
    Callout {
        cluster: endpoint.cluster.clone(),
        kind: CalloutKind::Http,
        headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
        timeout_ms: endpoint.timeout_ms,
    }
}

/// The reply's JSON body, or why it is unusable (never quoting the body).
pub fn json_reply(reply: &CalloutReply) -> Result<Value, String> {
    if !reply.is_success() {
        return Err(match reply.status {
            504 => "status 504: timed out".to_string(),
            0 => "no status".to_string(),
            status => format!("status {status}"),
        });
    }
    serde_json::from_slice(&reply.body)
        .map_err(|_| format!("status {}: the reply is not JSON", reply.status))
}

/// A failed callout: closed rejects with 503, open goes on.
pub fn failed(info: &GuardInfo, host: &mut dyn Host, mode: FailureMode, why: &str) -> Step {
    match info.callout_failed(host, mode, why) {
        Some(error) => Step::Reject(error),
        None => Step::Next,
    }
}

/// Copies the client's request headers named in `forward_headers` (names lower-cased).
pub fn forwarded(names: &[String], request_headers: &[(String, String)]) -> Vec<(String, String)> {
    request_headers
        .iter()
        .filter(|(name, _)| names.iter().any(|wanted| wanted == name))
        .cloned()
        .collect()
}

/// A string a service chose to show the client, bounded.
pub fn bounded(text: &str) -> String {
    crate::error::truncate_chars(text.trim(), 512)
}

/// A callout guard that sends the texts the model sees (or wrote) and judges the reply the
/// same way on both sides: moderation and llm_check.
pub trait TextVerdict: std::fmt::Debug {
    /// The callout for these texts, or `Step::Next` when there is nothing to check.
    fn call(&self, texts: Vec<String>) -> Step;
    fn judge(&self, host: &mut dyn Host, reply: &CalloutReply) -> Step;
}

/// A `TextVerdict` on the prompt.
#[derive(Debug)]
pub struct OnRequest<G>(pub G);

impl<G: TextVerdict> RequestStage for OnRequest<G> {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        self.0
            .call(client_api::of_or_chat(ctx.exchange.client_operation).request_texts(ctx.body))
    }

    fn on_reply(&self, ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
        self.0.judge(ctx.host, reply)
    }
}

/// A `TextVerdict` on the whole answer; it may reject, so it needs the status held (mode A).
#[derive(Debug)]
pub struct OnAnswer<G>(pub G);

impl<G: TextVerdict> ResponseStage for OnAnswer<G> {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step {
        self.0
            .call(client_api::of_or_chat(ctx.exchange.client_operation).answer_texts(ctx.body))
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
