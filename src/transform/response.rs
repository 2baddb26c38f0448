//! The response transformer: the provider's answer (as an OpenAI `chat.completion`) is
//! rewritten by a model before it reaches the client.
//!
//! A JSON client gets the model's output verbatim as the body. A streaming client (the
//! upstream was asked without streaming) gets an SSE stream made from the output when it is
//! a chat completion, else from a chat completion whose assistant message is the output text,
//! so a streaming SDK always reads the transformed text. A non-2xx status from instructions
//! sends the body as plain JSON instead, as error answers are.

use serde_json::{json, Value};

use super::instructions;
use super::{Failure, Transformer};
use crate::error::ApiError;
use crate::host::CalloutReply;
use crate::pipeline::stage::{ResponseCtx, ResponseStage, Step};

#[derive(Debug)]
pub struct ResponseTransformer(pub Transformer);

impl ResponseStage for ResponseTransformer {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step {
        match serde_json::to_string(&*ctx.body) {
            Ok(user) => Step::Call(self.0.callout(&user)),
            Err(_) => Step::Reject(ApiError::new(
                500,
                "api_error",
                "internal_error",
                "The gateway failed to process the answer.",
            )),
        }
    }

    fn on_reply(&self, ctx: &mut ResponseCtx<'_>, reply: &CalloutReply) -> Step {
        let transformer = &self.0;
        let result = transformer
            .output(reply, ctx.route_name, ctx.host)
            .and_then(|text| {
                if transformer.parse_instructions {
                    apply_instructions(ctx, &text)
                } else {
                    apply_body(ctx, text.into_bytes(), None);
                    Ok(())
                }
            });
        match result {
            Ok(()) => {
                transformer.count_outcome("applied", ctx.route_name, ctx.host);
                Step::Next
            }
            Err(failure) => match transformer.on_failure(failure, ctx.route_name, ctx.host) {
                Some(error) => Step::Reject(error),
                None => Step::Next,
            },
        }
    }

    fn needs_whole_answer(&self) -> bool {
        true
    }

    fn sets_status(&self) -> bool {
        self.0.parse_instructions
    }
}

fn apply_instructions(ctx: &mut ResponseCtx<'_>, text: &str) -> Result<(), Failure> {
    let parsed = instructions::parse(text).map_err(Failure::Invalid)?;
    if let Some(status) = parsed.status {
        ctx.overrides.status = Some(status);
    }
    ctx.overrides.headers.extend(parsed.headers);
    let status = parsed.status;
    match parsed.body {
        Some(body) => apply_body(ctx, body, status),
        // Keep the answer; only a streaming client refused by status needs it as plain JSON.
        None if ctx.exchange.client_stream && !is_success(status) => {
            let body = serde_json::to_vec(&*ctx.body).unwrap_or_default();
            apply_body(ctx, body, status);
        }
        None => {}
    }
    Ok(())
}

fn is_success(status: Option<u16>) -> bool {
    status.is_none_or(|status| (200..300).contains(&status))
}

/// Puts the new body in place: verbatim for a JSON client, as a chat completion to be
/// re-streamed for a streaming one.
fn apply_body(ctx: &mut ResponseCtx<'_>, body: Vec<u8>, status: Option<u16>) {
    if !ctx.exchange.client_stream {
        *ctx.raw_body = Some(body);
        return;
    }
    if !is_success(status) {
        if !ctx
            .overrides
            .headers
            .iter()
            .any(|(name, _)| name == "content-type")
        {
            ctx.overrides
                .headers
                .push(("content-type".into(), "application/json".into()));
        }
        *ctx.raw_body = Some(body);
        return;
    }
    *ctx.body = as_completion(&body, ctx.body);
}

/// The output itself when it is a chat completion, else the original answer with the output
/// text as its one assistant message (id, model and usage kept).
fn as_completion(body: &[u8], original: &Value) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if value.get("choices").is_some_and(Value::is_array) {
            return value;
        }
    }
    let text = String::from_utf8_lossy(body).into_owned();
    let mut completion = original.clone();
    if let Some(object) = completion.as_object_mut() {
        object.insert(
            "choices".into(),
            json!([{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]),
        );
        return completion;
    }
    json!({
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_pass_and_text_is_wrapped() {
        let original = json!({"id":"c1","model":"m","choices":[{"message":{"content":"old"}}],"usage":{"total_tokens":3}});
        let completion = br#"{"choices":[{"message":{"role":"assistant","content":"new"}}]}"#;
        assert_eq!(
            as_completion(completion, &original)["choices"][0]["message"]["content"],
            "new"
        );
        let wrapped = as_completion(b"just text", &original);
        assert_eq!(wrapped["choices"][0]["message"]["content"], "just text");
        assert_eq!(wrapped["id"], "c1");
        assert_eq!(wrapped["usage"]["total_tokens"], 3);
        let other_json = as_completion(br#"{"summary":"x"}"#, &original);
        assert_eq!(
            other_json["choices"][0]["message"]["content"],
            r#"{"summary":"x"}"#
        );
    }
}
