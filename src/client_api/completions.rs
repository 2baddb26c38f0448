//! OpenAI legacy completions (`POST .../completions`): `prompt` in, a `text_completion`
//! out. Only providers that serve it natively take it.

use serde_json::Value;

use super::openai::{self, invalid_param, missing_param};
use super::{ClientApi, Translation};
use crate::api::Operation;
use crate::error::ApiError;
use crate::guards::text::Visitor;
use crate::pipeline::in_place;
use crate::providers::Codec;
use crate::usage::Usage;

pub struct Completions;

impl ClientApi for Completions {
    fn operation(&self) -> Operation {
        Operation::Completions
    }

    /// After chat in `REGISTERED`: `/chat/completions` ends the same way.
    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/completions")
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        match body.get("prompt") {
            Some(Value::String(_)) => Ok(()),
            Some(Value::Array(items))
                if items.iter().all(Value::is_string) && !items.is_empty() =>
            {
                Ok(())
            }
            Some(_) => Err(invalid_param(
                "prompt",
                "must be a string or a non-empty array of strings",
            )),
            None => Err(missing_param("prompt")),
        }
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        openai::visit_request_texts(body, visit)
    }

    fn read_request<'a>(&self, body: &'a str) -> Option<in_place::Request<'a>> {
        in_place::read_request(body, |view, _| in_place::is_text_prompt(view).then_some(()))
    }

    fn visit_answer_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        openai::visit_answer_texts(body, visit)
    }

    fn read_answer<'a>(&self, body: &'a str) -> Option<in_place::Answer<'a>> {
        openai::read_answer(body)
    }

    fn usage_from_json(&self, body: &[u8]) -> Option<Usage> {
        openai::usage_from_json(body)
    }

    fn usage_from_json_tail(&self, tail: &[u8]) -> Option<Usage> {
        openai::usage_from_json_tail(tail)
    }

    fn usage_from_event(&self, data: &str) -> Option<Usage> {
        openai::usage_from_event(data)
    }

    fn translation(&self, codec: &dyn Codec) -> Option<Translation> {
        openai::openai_kinds_only(codec, self.operation())
    }
}
