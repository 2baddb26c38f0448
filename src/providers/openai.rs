//! OpenAI, Azure OpenAI and OpenAI-compatible servers: the body is already in the right
//! shape. Streams get `stream_options.include_usage` so the usage chunk arrives.

use serde_json::{json, Value};

use super::codec::{Codec, Exchange, StreamDecoder};
use super::Provider;
use crate::api::Operation;
use crate::error::ApiError;

pub struct OpenAiCodec {
    /// The server serves `/v1/responses` (the Responses API) itself.
    pub responses: bool,
}

impl Codec for OpenAiCodec {
    fn supports(&self, operation: Operation) -> bool {
        !matches!(
            operation,
            Operation::Responses | Operation::ResponsesCompact
        ) || self.responses
    }

    fn translates_responses(&self) -> bool {
        false
    }

    fn takes_openai_body(&self) -> bool {
        true
    }

    fn encode_request(
        &self,
        request: &Value,
        _provider: &Provider,
        exchange: &Exchange,
    ) -> Result<Value, ApiError> {
        let mut body = request.clone();
        let Some(object) = body.as_object_mut() else {
            return Err(ApiError::invalid_request(
                "invalid_body",
                "The request body must be a JSON object.",
            ));
        };
        // Azure takes the deployment from the path and ignores the model field.
        object.insert("model".into(), Value::String(exchange.model.clone()));
        if exchange.operation == Operation::Embeddings {
            return Ok(body);
        }
        if exchange.upstream_stream {
            object.insert("stream".into(), Value::Bool(true));
            let options = object.entry("stream_options").or_insert_with(|| json!({}));
            match options.as_object_mut() {
                Some(options) => {
                    options.insert("include_usage".into(), Value::Bool(true));
                }
                None => *options = json!({ "include_usage": true }),
            }
        } else if exchange.client_stream {
            // The filter needs the whole answer first; it streams it to the client itself.
            object.insert("stream".into(), Value::Bool(false));
            object.remove("stream_options");
        }
        Ok(body)
    }

    fn decode_response(
        &self,
        _body: &[u8],
        _exchange: &Exchange,
    ) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }

    fn stream_decoder(&self, _exchange: &Exchange) -> Option<Box<dyn StreamDecoder>> {
        None
    }
}
