//! `defaults` and `overrides`: top-level request fields the operator fills in or forces.

use serde_json::{Map, Value};

use super::decorate::check_messages;
use super::templates::{PROPERTIES_FIELD, TEMPLATE_FIELD};
use crate::config::ConfigError;

#[derive(Debug, Default)]
pub struct FieldRules {
    defaults: Map<String, Value>,
    overrides: Map<String, Value>,
}

impl FieldRules {
    pub fn compile(
        defaults: &Map<String, Value>,
        overrides: &Map<String, Value>,
        path: &str,
    ) -> Result<FieldRules, ConfigError> {
        for (key, fields) in [("defaults", defaults), ("overrides", overrides)] {
            for (name, value) in fields {
                check_field(
                    name,
                    value,
                    key == "overrides",
                    &format!("{path}.{key}.{name}"),
                )?;
            }
        }
        if let Some(name) = defaults.keys().find(|name| overrides.contains_key(*name)) {
            return Err(ConfigError::new(
                format!("{path}.defaults.{name}"),
                "is also in overrides, which always win: give it in one of them",
            ));
        }
        Ok(FieldRules {
            defaults: defaults.clone(),
            overrides: overrides.clone(),
        })
    }

    /// Defaults fill fields the client left out (absent or `null`); overrides always set
    /// theirs, and an override of `null` removes the field.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.overrides.is_empty()
    }

    pub fn apply(&self, body: &mut Value) {
        let Some(object) = body.as_object_mut() else {
            return;
        };
        for (name, value) in &self.defaults {
            if object.get(name).is_none_or(Value::is_null) {
                object.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.overrides {
            if value.is_null() {
                object.remove(name);
            } else {
                object.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Catches at configure time what would otherwise make every request fail validation.
fn check_field(
    name: &str,
    value: &Value,
    is_override: bool,
    path: &str,
) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(path, "field names must not be empty"));
    }
    if name == TEMPLATE_FIELD || name == PROPERTIES_FIELD {
        return Err(ConfigError::new(
            path,
            "is read by templating, which runs before defaults and overrides",
        ));
    }
    if value.is_null() && !is_override {
        return Err(ConfigError::new(
            path,
            "a default of null would never apply",
        ));
    }
    if value.is_null() {
        return Ok(());
    }
    match name {
        "model" if value.as_str().is_none_or(|model| model.trim().is_empty()) => {
            Err(ConfigError::new(path, "must be a non-empty string"))
        }
        "stream" if !value.is_boolean() => Err(ConfigError::new(path, "must be a boolean")),
        "messages" => match value.as_array() {
            Some(messages) if !messages.is_empty() => check_messages(messages, path),
            _ => Err(ConfigError::new(
                path,
                "must be a non-empty array of messages",
            )),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(defaults: Value, overrides: Value) -> Result<FieldRules, ConfigError> {
        FieldRules::compile(
            defaults.as_object().unwrap(),
            overrides.as_object().unwrap(),
            "r",
        )
    }

    #[test]
    fn defaults_fill_gaps_and_overrides_win() {
        let r = rules(
            json!({"temperature":0.2,"top_p":0.9}),
            json!({"max_tokens":512,"logit_bias":null}),
        )
        .unwrap();
        let mut body =
            json!({"temperature":0.7,"top_p":null,"max_tokens":4000,"logit_bias":{"1":2}});
        r.apply(&mut body);
        assert_eq!(
            body,
            json!({"temperature":0.7,"top_p":0.9,"max_tokens":512})
        );
    }

    #[test]
    fn refuses_fields_that_would_break_every_request() {
        let cases = [
            (json!({"model":5}), json!({}), "r.defaults.model"),
            (json!({}), json!({"stream":"yes"}), "r.overrides.stream"),
            (json!({}), json!({"messages":[]}), "r.overrides.messages"),
            (
                json!({}),
                json!({"messages":[{"role":"user"}]}),
                "r.overrides.messages[0].content",
            ),
            (
                json!({"temperature":null}),
                json!({}),
                "r.defaults.temperature",
            ),
            (json!({"n":1}), json!({"n":2}), "r.defaults.n"),
            (json!({}), json!({"template":"x"}), "r.overrides.template"),
            (json!({"":1}), json!({}), "r.defaults."),
        ];
        for (defaults, overrides, path) in cases {
            assert_eq!(rules(defaults, overrides).unwrap_err().path, path);
        }
        assert!(rules(
            json!({}),
            json!({"model":"gpt-4o","stream":false,"user":null})
        )
        .is_ok());
    }
}
