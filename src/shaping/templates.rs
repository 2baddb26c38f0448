//! Request templates: a JSON body with `{{name}}` placeholders in its string values, filled
//! from the client's `properties`.
//!
//! Substitution works on the parsed JSON tree, never on JSON text: a property value becomes
//! (part of) a JSON string value, or a whole JSON value, so a client can not break out of the
//! string it is put in. Placeholders are parsed once, at configure time.

use serde_json::{Map, Value};

use crate::config::model::TemplateConfig;
use crate::config::ConfigError;
use crate::error::ApiError;

/// A piece of a string value: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(String),
}

/// A template body, compiled: only the parts that hold placeholders are more than literals.
#[derive(Debug, Clone)]
enum Node {
    /// No placeholder anywhere below: copied as it is.
    Literal(Value),
    /// A string that is exactly one placeholder: replaced by the property's JSON value,
    /// whatever its type (so `"max_tokens": "{{limit}}"` can become a number).
    Whole(String),
    /// A string with text around its placeholders: the properties are written into the text.
    Text(Vec<Segment>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug)]
pub struct Template {
    pub name: String,
    body: Node,
    /// Every placeholder name, in order of first appearance, without repeats.
    properties: Vec<String>,
}

impl Template {
    pub fn compile(config: &TemplateConfig, path: &str) -> Result<Template, ConfigError> {
        if config.name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        }
        let body_path = format!("{path}.body");
        let Some(object) = config.body.as_object() else {
            return Err(ConfigError::new(
                body_path,
                "must be a JSON object (a request body)",
            ));
        };
        for reserved in [TEMPLATE_FIELD, PROPERTIES_FIELD] {
            if object.contains_key(reserved) {
                return Err(ConfigError::new(
                    format!("{body_path}.{reserved}"),
                    "is the client's way to pick a template and can not be part of one",
                ));
            }
        }
        let mut properties = Vec::new();
        let body = compile_node(&config.body, &body_path, &mut properties)?;
        Ok(Template {
            name: config.name.clone(),
            body,
            properties,
        })
    }

    /// Fills the template. Every missing property is named in one error.
    pub fn render(&self, properties: &Map<String, Value>) -> Result<Value, ApiError> {
        let missing: Vec<&str> = self
            .properties
            .iter()
            .filter(|name| properties.get(name.as_str()).is_none_or(Value::is_null))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|name| format!("{name:?}")).collect();
            return Err(ApiError::invalid_request(
                "missing_template_property",
                format!(
                    "Template {:?} needs {} the request did not give: {}.",
                    self.name,
                    if missing.len() == 1 {
                        "a property"
                    } else {
                        "properties"
                    },
                    names.join(", ")
                ),
            ));
        }
        render_node(&self.body, properties, &self.name)
    }
}

/// The client's top-level field naming the template, and the one carrying its properties.
pub const TEMPLATE_FIELD: &str = "template";
pub const PROPERTIES_FIELD: &str = "properties";

fn compile_node(
    value: &Value,
    path: &str,
    properties: &mut Vec<String>,
) -> Result<Node, ConfigError> {
    match value {
        Value::String(text) => {
            let segments = parse_placeholders(text).map_err(|why| ConfigError::new(path, why))?;
            for segment in &segments {
                if let Segment::Var(name) = segment {
                    if !properties.contains(name) {
                        properties.push(name.clone());
                    }
                }
            }
            Ok(match segments.as_slice() {
                [] | [Segment::Text(_)] => Node::Literal(value.clone()),
                [Segment::Var(name)] => Node::Whole(name.clone()),
                _ => Node::Text(segments),
            })
        }
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                nodes.push(compile_node(item, &format!("{path}[{index}]"), properties)?);
            }
            if nodes.iter().all(|node| matches!(node, Node::Literal(_))) {
                return Ok(Node::Literal(value.clone()));
            }
            Ok(Node::Array(nodes))
        }
        Value::Object(object) => {
            let mut members = Vec::with_capacity(object.len());
            for (key, item) in object {
                let item_path = format!("{path}.{key}");
                if key.contains("{{") {
                    return Err(ConfigError::new(
                        item_path,
                        "placeholders are only filled in string values, not in keys",
                    ));
                }
                members.push((key.clone(), compile_node(item, &item_path, properties)?));
            }
            if members
                .iter()
                .all(|(_, node)| matches!(node, Node::Literal(_)))
            {
                return Ok(Node::Literal(value.clone()));
            }
            Ok(Node::Object(members))
        }
        _ => Ok(Node::Literal(value.clone())),
    }
}

/// Splits text into literal text and `{{name}}` placeholders (spaces inside the braces are
/// allowed). Every `{{` must open a well-formed placeholder: a typo is a configure-time error,
/// not literal braces sent to the model.
fn parse_placeholders(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let (before, after_open) = rest.split_at(open);
        let after_open = after_open.get(2..).unwrap_or_default();
        let Some(close) = after_open.find("}}") else {
            return Err("has a \"{{\" without a closing \"}}\"".to_string());
        };
        let (inside, after_close) = after_open.split_at(close);
        let name = inside.trim();
        if !is_property_name(name) {
            return Err(format!(
                "placeholder {{{{{inside}}}}} must name a property with letters, digits, '_', '-' or '.'"
            ));
        }
        if !before.is_empty() {
            segments.push(Segment::Text(before.to_string()));
        }
        segments.push(Segment::Var(name.to_string()));
        rest = after_close.get(2..).unwrap_or_default();
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_string()));
    }
    Ok(segments)
}

fn is_property_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn render_node(
    node: &Node,
    properties: &Map<String, Value>,
    template: &str,
) -> Result<Value, ApiError> {
    match node {
        Node::Literal(value) => Ok(value.clone()),
        Node::Whole(name) => Ok(properties.get(name).cloned().unwrap_or(Value::Null)),
        Node::Text(segments) => {
            let mut out = String::new();
            for segment in segments {
                match segment {
                    Segment::Text(text) => out.push_str(text),
                    Segment::Var(name) => match properties.get(name) {
                        Some(Value::String(text)) => out.push_str(text),
                        Some(value @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&value.to_string()),
                        _ => {
                            return Err(ApiError::invalid_request(
                                "invalid_template_property",
                                format!(
                                    "Property {name:?} must be a string, a number or a boolean: template {template:?} \
                                     writes it into text."
                                ),
                            ))
                        }
                    },
                }
            }
            Ok(Value::String(out))
        }
        Node::Array(items) => items
            .iter()
            .map(|item| render_node(item, properties, template))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Node::Object(members) => {
            let mut object = Map::with_capacity(members.len());
            for (key, item) in members {
                object.insert(key.clone(), render_node(item, properties, template)?);
            }
            Ok(Value::Object(object))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(body: Value) -> Result<Template, ConfigError> {
        Template::compile(
            &TemplateConfig {
                name: "t".into(),
                body,
            },
            "tpl",
        )
    }

    fn props(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_placeholders() {
        assert_eq!(
            parse_placeholders("Summarize {{ text }} in {{lang}}.").unwrap(),
            vec![
                Segment::Text("Summarize ".into()),
                Segment::Var("text".into()),
                Segment::Text(" in ".into()),
                Segment::Var("lang".into()),
                Segment::Text(".".into()),
            ]
        );
        assert_eq!(parse_placeholders("{{a}}{{b}}").unwrap().len(), 2);
        assert_eq!(
            parse_placeholders("plain } }} text").unwrap(),
            vec![Segment::Text("plain } }} text".into())]
        );
        assert!(parse_placeholders("{{unclosed").is_err());
        assert!(parse_placeholders("{{two words}}").is_err());
        assert!(parse_placeholders("{{}}").is_err());
    }

    #[test]
    fn substitution_is_json_safe() {
        let t = template(json!({"messages":[{"role":"user","content":"Summarize: {{text}}"}]}))
            .unwrap();
        let hostile = "\"}],\"model\":\"evil\",\"x\":[{\"a\":\"";
        let out = t.render(&props(json!({ "text": hostile }))).unwrap();
        assert_eq!(
            out["messages"][0]["content"],
            format!("Summarize: {hostile}")
        );
        assert_eq!(out.as_object().unwrap().len(), 1, "no field was injected");
        assert!(out.get("model").is_none());
    }

    #[test]
    fn whole_placeholder_keeps_json_type() {
        let t = template(json!({"max_tokens":"{{limit}}","messages":[{"role":"user","content":"{{text}}"}],"n":1})).unwrap();
        let out = t
            .render(&props(json!({"limit": 64, "text": "hi"})))
            .unwrap();
        assert_eq!(out["max_tokens"], 64);
        assert_eq!(out["messages"][0]["content"], "hi");
        assert_eq!(out["n"], 1);
    }

    #[test]
    fn embedded_scalars_become_text_and_structures_are_refused() {
        let t =
            template(json!({"messages":[{"role":"user","content":"n={{n}} ok={{ok}}"}]})).unwrap();
        let out = t.render(&props(json!({"n": 2.5, "ok": true}))).unwrap();
        assert_eq!(out["messages"][0]["content"], "n=2.5 ok=true");
        let err = t.render(&props(json!({"n": [1], "ok": true}))).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.code, "invalid_template_property");
        assert!(err.message.contains("\"n\""));
    }

    #[test]
    fn names_every_missing_property_once() {
        let t = template(json!({"messages":[{"role":"user","content":"{{a}} {{b}} {{a}} {{c}}"}]}))
            .unwrap();
        assert_eq!(t.properties, ["a", "b", "c"]);
        let err = t.render(&props(json!({"b": "x", "c": null}))).unwrap_err();
        assert_eq!(err.code, "missing_template_property");
        assert!(err.message.contains("\"a\", \"c\""), "{}", err.message);
        assert!(!err.message.contains("\"b\""));
    }

    #[test]
    fn config_errors_name_the_path() {
        let err = template(json!({"messages":[{"role":"user","content":"{{oops"}]})).unwrap_err();
        assert_eq!(err.path, "tpl.body.messages[0].content");
        let err = template(json!("text")).unwrap_err();
        assert_eq!(err.path, "tpl.body");
        let err = template(json!({"template":"x"})).unwrap_err();
        assert_eq!(err.path, "tpl.body.template");
        let err = template(json!({"{{k}}":"x"})).unwrap_err();
        assert_eq!(err.path, "tpl.body.{{k}}");
        let err = Template::compile(
            &TemplateConfig {
                name: " ".into(),
                body: json!({}),
            },
            "tpl",
        )
        .unwrap_err();
        assert_eq!(err.path, "tpl.name");
    }
}
