//! The request transformer: the shaped, guarded request is rewritten by a model before it
//! is translated for the provider.

use serde_json::Value;

use super::{Failure, Transformer};
use crate::api;
use crate::error::ApiError;
use crate::host::CalloutReply;
use crate::pipeline::stage::{RequestCtx, RequestStage, Step};

/// Fields the model can not change: the model was mapped and checked, and whether to stream
/// was decided, before this stage ran.
const KEPT_FIELDS: [&str; 3] = ["model", "stream", "stream_options"];

#[derive(Debug)]
pub struct RequestTransformer(pub Transformer);

impl RequestStage for RequestTransformer {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        match serde_json::to_string(&*ctx.body) {
            Ok(user) => Step::Call(self.0.callout(&user)),
            Err(_) => Step::Reject(ApiError::new(
                500,
                "api_error",
                "internal_error",
                "The gateway failed to process the request.",
            )),
        }
    }

    fn on_reply(&self, ctx: &mut RequestCtx<'_>, reply: &CalloutReply) -> Step {
        let transformer = &self.0;
        let result = transformer
            .output(reply, ctx.route_name, ctx.host)
            .and_then(|text| new_request(&text, ctx.exchange.client_operation, ctx.body));
        match result {
            Ok(body) => {
                *ctx.body = body;
                transformer.count_outcome("applied", ctx.route_name, ctx.host);
                Step::Next
            }
            Err(failure) => match transformer.on_failure(failure, ctx.route_name, ctx.host) {
                Some(error) => Step::Reject(error),
                None => Step::Next,
            },
        }
    }
}

/// Parses the model's text as the new request and checks it like a client's.
fn new_request(text: &str, operation: api::Operation, original: &Value) -> Result<Value, Failure> {
    let mut body: Value = serde_json::from_str(text)
        .map_err(|_| Failure::Invalid("it is not valid JSON".to_string()))?;
    let Some(object) = body.as_object_mut() else {
        return Err(Failure::Invalid("it is not a JSON object".to_string()));
    };
    for field in KEPT_FIELDS {
        match original.get(field) {
            Some(value) => object.insert(field.to_string(), value.clone()),
            None => object.remove(field),
        };
    }
    crate::client_api::validate(operation, &body).map_err(|error| {
        Failure::Invalid(format!(
            "it is not a valid request ({})",
            error.message.trim_end_matches('.')
        ))
    })?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_model_and_stream_and_validates() {
        let original =
            json!({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"a"}]});
        let body = new_request(
            r#"{"model":"other","stream":false,"messages":[{"role":"user","content":"b"}],"temperature":0}"#,
            api::Operation::ChatCompletions,
            &original,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"b"}],"temperature":0})
        );
        let dropped = new_request(
            r#"{"stream":true,"stream_options":{},"messages":[{"role":"user","content":"b"}]}"#,
            api::Operation::ChatCompletions,
            &json!({"model":"m","messages":[]}),
        )
        .unwrap();
        assert_eq!(
            dropped,
            json!({"model":"m","messages":[{"role":"user","content":"b"}]})
        );
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        let original = json!({"model":"m"});
        for (text, why) in [
            ("Sure! Here it is", "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"messages":[]}"#, "messages"),
        ] {
            match new_request(text, api::Operation::ChatCompletions, &original) {
                Err(Failure::Invalid(message)) => assert!(message.contains(why), "{message}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
