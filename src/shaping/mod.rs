//! Prompt shaping: templates, prepend/append, defaults and overrides (CONFIG.md RequestShaping).
//!
//! `Shaping::apply` runs on the parsed client body before validation and model mapping, in this
//! order: template → decorate (prepend/append) → defaults → overrides. The pipeline then
//! validates the result, maps the model, and runs guards, the transformer and the provider
//! translation on it, so every later stage sees the shaped prompt.

mod decorate;
mod fields;
mod templates;

use serde_json::{Map, Value};

use crate::api::Operation;
use crate::config::model::RequestConfig;
use crate::config::ConfigError;
use crate::error::ApiError;
use decorate::Decorations;
use fields::FieldRules;
use templates::{Template, PROPERTIES_FIELD, TEMPLATE_FIELD};

#[derive(Debug)]
pub struct Shaping {
    pub max_body_bytes: u64,
    templates: Vec<Template>,
    allow_untemplated: bool,
    decorations: Decorations,
    fields: FieldRules,
}

impl Shaping {
    pub fn compile(config: &RequestConfig, path: &str) -> Result<Shaping, ConfigError> {
        if config.max_body_bytes == 0 {
            return Err(ConfigError::new(
                format!("{path}.max_body_bytes"),
                "must be greater than 0",
            ));
        }
        let mut templates: Vec<Template> = Vec::with_capacity(config.templates.len());
        for (index, template) in config.templates.iter().enumerate() {
            let at = format!("{path}.templates[{index}]");
            if templates.iter().any(|known| known.name == template.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate template name {:?}", template.name),
                ));
            }
            templates.push(Template::compile(template, &at)?);
        }
        if !config.allow_untemplated && templates.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.allow_untemplated"),
                "false needs at least one entry in templates, or every request would be refused",
            ));
        }
        Ok(Shaping {
            max_body_bytes: config.max_body_bytes,
            templates,
            allow_untemplated: config.allow_untemplated,
            decorations: Decorations::compile(&config.prepend, &config.append, path)?,
            fields: FieldRules::compile(&config.defaults, &config.overrides, path)?,
        })
    }

    /// Applies the shaping stages to a request body, in the documented order.
    /// True when `apply` never changes a body (no templates, decorations or field rules).
    pub fn is_identity(&self) -> bool {
        self.templates.is_empty() && self.decorations.is_empty() && self.fields.is_empty()
    }

    /// `operation` says where the API keeps its prompt: chat `messages`, or the Responses
    /// API's `instructions` and `input`.
    pub fn apply(&self, body: &mut Value, operation: Operation) -> Result<(), ApiError> {
        self.apply_template(body)?;
        if operation == Operation::Responses {
            self.decorations.apply_responses(body);
        } else {
            self.decorations.apply(body);
        }
        self.fields.apply(body);
        Ok(())
    }

    /// Replaces a templated request by the filled template. The template's fields win; the
    /// client's other top-level fields (`model`, `stream`, `user`, ...) fill what it leaves
    /// out. Routes without templates leave `template`/`properties` to the provider.
    fn apply_template(&self, body: &mut Value) -> Result<(), ApiError> {
        if self.templates.is_empty() {
            return Ok(());
        }
        let Some(client) = body.as_object_mut() else {
            return Ok(());
        };
        let Some(name) = client.remove(TEMPLATE_FIELD) else {
            if client.contains_key(PROPERTIES_FIELD) {
                return Err(template_error(
                    "invalid_template_request",
                    "\"properties\" was given without \"template\".",
                ));
            }
            if !self.allow_untemplated {
                return Err(template_error(
                    "template_required",
                    "This route only accepts templated requests: send \"template\" and \"properties\".",
                ));
            }
            return Ok(());
        };
        let Some(name) = name.as_str() else {
            return Err(template_error(
                "invalid_template_request",
                "\"template\" must be a string.",
            ));
        };
        let Some(template) = self.templates.iter().find(|t| t.name == name) else {
            return Err(template_error(
                "unknown_template",
                format!("Unknown template {name:?}."),
            ));
        };
        let properties = match client.remove(PROPERTIES_FIELD) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(properties)) => properties,
            Some(_) => {
                return Err(template_error(
                    "invalid_template_request",
                    "\"properties\" must be a JSON object.",
                ));
            }
        };
        let mut rendered = template.render(&properties)?;
        if let Some(object) = rendered.as_object_mut() {
            for (key, value) in std::mem::take(client) {
                object.entry(key).or_insert(value);
            }
        }
        *body = rendered;
        Ok(())
    }
}

fn template_error(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(code, message)
}

#[cfg(test)]
mod tests;
