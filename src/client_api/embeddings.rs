//! OpenAI embeddings (`POST .../embeddings`): `input` in, vectors out; never streamed.
//! Only providers that serve it natively take it.

use serde_json::Value;

use super::openai::{self, invalid_param, missing_param};
use super::{ClientApi, Translation};
use crate::api::{embeddings_input_shape, Operation};
use crate::error::ApiError;
use crate::guards::text::Visitor;
use crate::pipeline::in_place;
use crate::providers::Codec;
use crate::usage::Usage;

pub struct Embeddings;

impl ClientApi for Embeddings {
    fn operation(&self) -> Operation {
        Operation::Embeddings
    }

    fn matches_path(&self, path: &str) -> bool {
        path.ends_with("/embeddings")
    }

    fn validate_body(&self, body: &Value) -> Result<(), ApiError> {
        match body.get("input") {
            Some(input) if embeddings_input_shape(input).is_some() => Ok(()),
            Some(_) => Err(invalid_param(
                "input",
                "must be a string, an array of strings, an array of integers (tokens) or an \
                 array of arrays of integers",
            )),
            None => Err(missing_param("input")),
        }
    }

    fn streams(&self) -> bool {
        false
    }

    fn visit_request_texts(&self, body: &mut Value, visit: &mut Visitor<'_>) -> bool {
        openai::visit_request_texts(body, visit)
    }

    fn read_request<'a>(&self, body: &'a str) -> Option<in_place::Request<'a>> {
        in_place::read_request(body, |view, _| {
            in_place::is_embeddings_input(view).then_some(())
        })
    }

    /// Vectors carry no `choices`: the OpenAI walk finds no text in them.
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
