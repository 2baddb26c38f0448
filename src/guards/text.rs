//! Finds every text the model sees in a request, and every text it wrote in an answer, so
//! guards can read or rewrite them in place.
//!
//! Request: every message of every role, `content` as a string or as an array of parts
//! (`text`, `refusal`), a message's `refusal`, tool call and legacy `function_call`
//! arguments; legacy completions' `prompt` (string or array of strings) and `suffix`;
//! embeddings' `input` strings. Answer: per choice the same fields of `message`, and the
//! legacy `text`.

use serde_json::Value;

/// Called on each text; returns true when it changed the text.
pub type Visitor<'a> = dyn FnMut(&mut String) -> bool + 'a;

/// Visits every text of a request body. Returns true when any was changed.
pub fn visit_request(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
        for message in messages {
            changed |= visit_message(message, visit);
        }
    }
    for key in ["prompt", "suffix", "input"] {
        if let Some(value) = body.get_mut(key) {
            changed |= visit_strings(value, visit);
        }
    }
    changed
}

/// Visits every text of a `chat.completion` (or legacy `text_completion`) answer. A choice
/// whose text changed loses its `logprobs`: they carry the original tokens.
pub fn visit_answer(body: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    if let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            changed |= visit_choice(choice, visit);
        }
    }
    changed
}

pub fn visit_choice(choice: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    if let Some(message) = choice.get_mut("message") {
        changed |= visit_message(message, visit);
    }
    if let Some(Value::String(text)) = choice.get_mut("text") {
        changed |= visit(text);
    }
    if changed {
        if let Some(logprobs) = choice.get_mut("logprobs") {
            *logprobs = Value::Null;
        }
    }
    changed
}

pub fn visit_message(message: &mut Value, visit: &mut Visitor<'_>) -> bool {
    let mut changed = false;
    match message.get_mut("content") {
        Some(Value::String(text)) => changed |= visit(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                for key in ["text", "refusal"] {
                    if let Some(Value::String(text)) = part.get_mut(key) {
                        changed |= visit(text);
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(Value::String(text)) = message.get_mut("refusal") {
        changed |= visit(text);
    }
    if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for call in calls {
            if let Some(Value::String(arguments)) = call
                .get_mut("function")
                .and_then(|f| f.get_mut("arguments"))
            {
                changed |= visit(arguments);
            }
        }
    }
    if let Some(Value::String(arguments)) = message
        .get_mut("function_call")
        .and_then(|f| f.get_mut("arguments"))
    {
        changed |= visit(arguments);
    }
    changed
}

/// A string, or an array of strings (token arrays are skipped: they are not text).
fn visit_strings(value: &mut Value, visit: &mut Visitor<'_>) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                if let Value::String(text) = item {
                    changed |= visit(text);
                }
            }
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collect(body: &mut Value, request: bool) -> Vec<String> {
        let mut texts = Vec::new();
        let mut visit = |text: &mut String| {
            if !text.is_empty() {
                texts.push(text.clone());
            }
            false
        };
        if request {
            visit_request(body, &mut visit);
        } else {
            visit_answer(body, &mut visit);
        }
        texts
    }

    fn request_texts(body: &mut Value) -> Vec<String> {
        collect(body, true)
    }

    fn answer_texts(body: &mut Value) -> Vec<String> {
        collect(body, false)
    }

    fn upper(body: &mut Value, request: bool) -> bool {
        let mut visit = |text: &mut String| {
            let before = text.clone();
            *text = text.to_uppercase();
            *text != before
        };
        if request {
            visit_request(body, &mut visit)
        } else {
            visit_answer(body, &mut visit)
        }
    }

    #[test]
    fn request_texts_of_every_kind() {
        let mut body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":\"args\"}"}}]},
                {"role": "assistant", "content": null, "function_call": {"name": "g", "arguments": "legacy"}},
                {"role": "assistant", "refusal": "no", "content": [{"type": "refusal", "refusal": "nope"}]},
                {"role": "tool", "tool_call_id": "c", "content": "result"}
            ]
        });
        assert_eq!(
            request_texts(&mut body),
            vec![
                "sys",
                "part",
                "{\"a\":\"args\"}",
                "legacy",
                "nope",
                "no",
                "result"
            ]
        );
        assert!(upper(&mut body, true));
        assert_eq!(body["messages"][1]["content"][0]["text"], "PART");
        assert_eq!(
            body["messages"][1]["content"][1]["image_url"]["url"],
            "http://x"
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(body["model"], "m");
    }

    #[test]
    fn legacy_prompt_and_embeddings() {
        let mut body = json!({"prompt": ["a", "b", [1, 2]], "suffix": "s"});
        assert_eq!(request_texts(&mut body), vec!["a", "b", "s"]);
        let mut body = json!({"input": "emb"});
        assert_eq!(request_texts(&mut body), vec!["emb"]);
    }

    #[test]
    fn answer_texts_and_logprobs() {
        let mut body = json!({"choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": [{"function": {"name": "f", "arguments": "x"}}]}, "logprobs": {"content": [{"token": "hi"}]}},
            {"index": 1, "text": "legacy", "logprobs": null},
            {"index": 2, "message": {"role": "assistant", "content": "SAME"}, "logprobs": {"content": []}}
        ]});
        assert_eq!(answer_texts(&mut body), vec!["hi", "x", "legacy", "SAME"]);
        assert!(upper(&mut body, false));
        assert_eq!(body["choices"][0]["message"]["content"], "HI");
        assert_eq!(body["choices"][0]["logprobs"], Value::Null);
        assert_eq!(body["choices"][1]["text"], "LEGACY");
        // Unchanged choices keep their logprobs.
        assert_eq!(body["choices"][2]["logprobs"], json!({"content": []}));
    }
}
