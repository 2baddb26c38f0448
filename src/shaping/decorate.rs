//! `prepend` / `append`: fixed messages put before and after the client's own. Checked at
//! configure time, so a bad message is a config error, never a 400 on every request.

use serde_json::Value;

use crate::config::ConfigError;

/// Roles an operator may add: `tool`/`function` answers need a call id they can not know.
const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

#[derive(Debug, Default)]
pub struct Decorations {
    prepend: Vec<Value>,
    append: Vec<Value>,
}

impl Decorations {
    pub fn compile(
        prepend: &[Value],
        append: &[Value],
        path: &str,
    ) -> Result<Decorations, ConfigError> {
        for (key, messages) in [("prepend", prepend), ("append", append)] {
            check_messages(messages, &format!("{path}.{key}"))?;
        }
        Ok(Decorations {
            prepend: prepend.to_vec(),
            append: append.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.prepend.is_empty() && self.append.is_empty()
    }

    /// Puts the messages around the client's. A body without a `messages` array (legacy
    /// completions, embeddings) is left alone; validation reports a chat body without one.
    pub fn apply(&self, body: &mut Value) {
        if self.is_empty() {
            return;
        }
        let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
            return;
        };
        let mut decorated =
            Vec::with_capacity(self.prepend.len() + messages.len() + self.append.len());
        decorated.extend(self.prepend.iter().cloned());
        decorated.append(messages);
        decorated.extend(self.append.iter().cloned());
        *messages = decorated;
    }

    /// The same on a Responses request (`input`, `instructions`): `system`/`developer`
    /// messages become text before (prepend) or after (append) the client's `instructions`,
    /// blank-line separated; `user`/`assistant` messages become input items around the
    /// client's (a string `input` turns into one user message first), their text parts in
    /// the Responses form (`input_text`, or `output_text` for the assistant).
    pub fn apply_responses(&self, body: &mut Value) {
        if self.is_empty() {
            return;
        }
        let Some(object) = body.as_object_mut() else {
            return;
        };
        let is_instruction = |m: &&Value| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("system" | "developer")
            )
        };
        let before: Vec<String> = self
            .prepend
            .iter()
            .filter(is_instruction)
            .map(text_of)
            .collect();
        let after: Vec<String> = self
            .append
            .iter()
            .filter(is_instruction)
            .map(text_of)
            .collect();
        if !before.is_empty() || !after.is_empty() {
            let mut parts = before;
            if let Some(Value::String(client)) = object.get("instructions") {
                parts.push(client.clone());
            }
            parts.extend(after);
            object.insert("instructions".into(), Value::String(parts.join("\n\n")));
        }
        let items = |messages: &[Value]| -> Vec<Value> {
            messages
                .iter()
                .filter(|m| !is_instruction(m))
                .map(responses_message)
                .collect()
        };
        let (first, last) = (items(&self.prepend), items(&self.append));
        if first.is_empty() && last.is_empty() {
            return;
        }
        let client = match object.remove("input") {
            Some(Value::Array(items)) => items,
            Some(Value::String(text)) => {
                vec![serde_json::json!({"role": "user", "content": text})]
            }
            Some(Value::Null) | None => Vec::new(),
            // Not the API's shape: left for validation to report.
            Some(other) => {
                object.insert("input".into(), other);
                return;
            }
        };
        let mut decorated = first;
        decorated.extend(client);
        decorated.extend(last);
        object.insert("input".into(), Value::Array(decorated));
    }
}

/// The text of an operator's chat message (string content, or its text parts joined).
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An operator's chat message as a Responses input message.
fn responses_message(message: &Value) -> Value {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let kind = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    let content = match message.get("content") {
        Some(Value::Array(parts)) => Value::Array(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|text| serde_json::json!({"type": kind, "text": text}))
                .collect(),
        ),
        Some(content) => content.clone(),
        None => Value::String(String::new()),
    };
    serde_json::json!({"type": "message", "role": role, "content": content})
}

/// Checks chat messages an operator wrote (also used for `messages` in defaults/overrides).
pub fn check_messages(messages: &[Value], path: &str) -> Result<(), ConfigError> {
    for (index, message) in messages.iter().enumerate() {
        let at = format!("{path}[{index}]");
        let Some(object) = message.as_object() else {
            return Err(ConfigError::new(
                at,
                "must be a message object with \"role\" and \"content\"",
            ));
        };
        match object.get("role").and_then(Value::as_str) {
            Some(role) if ROLES.contains(&role) => {}
            _ => {
                return Err(ConfigError::new(
                    format!("{at}.role"),
                    format!("must be one of {}", ROLES.join(", ")),
                ))
            }
        }
        match object.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(parts))
                if parts
                    .iter()
                    .all(|part| part.get("type").is_some_and(Value::is_string)) => {}
            _ => {
                return Err(ConfigError::new(
                    format!("{at}.content"),
                    "must be a string or an array of content parts (objects with a \"type\")",
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(value: Value) -> Vec<Value> {
        value.as_array().cloned().unwrap()
    }

    #[test]
    fn wraps_the_clients_messages() {
        let d = Decorations::compile(
            &messages(json!([{"role":"system","content":"terse"}])),
            &messages(json!([{"role":"user","content":"English"}])),
            "r",
        )
        .unwrap();
        let mut body = json!({"messages":[{"role":"user","content":"hi"}]});
        d.apply(&mut body);
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["terse", "hi", "English"]);
    }

    #[test]
    fn decorates_responses_instructions_and_input() {
        let d = Decorations::compile(
            &messages(json!([{"role":"system","content":"terse"},{"role":"user","content":[{"type":"text","text":"ctx"}]}])),
            &messages(json!([{"role":"developer","content":"last"},{"role":"user","content":"English"}])),
            "r",
        )
        .unwrap();
        let mut body = json!({"instructions":"client","input":"hi"});
        d.apply_responses(&mut body);
        assert_eq!(body["instructions"], "terse\n\nclient\n\nlast");
        assert_eq!(
            body["input"],
            json!([
                {"type":"message","role":"user","content":[{"type":"input_text","text":"ctx"}]},
                {"role":"user","content":"hi"},
                {"type":"message","role":"user","content":"English"}
            ])
        );
        // No client instructions; items kept as they are.
        let mut body =
            json!({"input":[{"type":"function_call_output","call_id":"c","output":"o"}]});
        d.apply_responses(&mut body);
        assert_eq!(body["instructions"], "terse\n\nlast");
        assert_eq!(body["input"][1]["type"], "function_call_output");
        assert_eq!(body["input"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn leaves_bodies_without_messages_alone() {
        let d = Decorations::compile(
            &messages(json!([{"role":"system","content":"x"}])),
            &[],
            "r",
        )
        .unwrap();
        let mut body = json!({"prompt":"legacy"});
        d.apply(&mut body);
        assert_eq!(body, json!({"prompt":"legacy"}));
    }

    #[test]
    fn bad_messages_are_config_errors_with_paths() {
        let cases = [
            (json!(["text"]), "r.prepend[0]"),
            (json!([{"content":"x"}]), "r.prepend[0].role"),
            (json!([{"role":"tool","content":"x"}]), "r.prepend[0].role"),
            (
                json!([{"role":"user","content":"x"},{"role":"user"}]),
                "r.prepend[1].content",
            ),
            (
                json!([{"role":"user","content":[{"text":"x"}]}]),
                "r.prepend[0].content",
            ),
        ];
        for (prepend, path) in cases {
            let err = Decorations::compile(&messages(prepend), &[], "r").unwrap_err();
            assert_eq!(err.path, path);
        }
        let err = Decorations::compile(&[], &messages(json!([5])), "r").unwrap_err();
        assert_eq!(err.path, "r.append[0]");
    }
}
