//! The chat-completion callout a transformer makes, and reading its reply. Pure: no host calls.

use serde_json::{json, Value};

use crate::config::{Auth, Endpoint};
use crate::encoding;
use crate::host::{Callout, CalloutKind, CalloutReply};
use crate::usage::Usage;

/// Builds `POST <endpoint.path>` with `{"model", "messages":[system, user], "stream": false}`.
pub fn chat_callout(endpoint: &Endpoint, model: Option<&str>, system: &str, user: &str) -> Callout {
    let mut body = json!({
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "stream": false,
    });
    if let (Some(model), Some(object)) = (model, body.as_object_mut()) {
        object.insert("model".into(), Value::String(model.to_string()));
    }
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), endpoint.path.clone()),
        (":authority".to_string(), endpoint.authority.clone()),
        ("content-type".to_string(), "application/json".to_string()),
        ("accept".to_string(), "application/json".to_string()),
        ("accept-encoding".to_string(), "identity".to_string()),
    ];
    if let Auth::Key(secret) = &endpoint.auth {
        headers.push((
            "authorization".to_string(),
            format!("Bearer {}", secret.expose()),
        ));
    }
    Callout {
        cluster: endpoint.cluster.clone(),
        kind: CalloutKind::Http,
        headers,
        body: body.to_string().into_bytes(),
        timeout_ms: endpoint.timeout_ms,
    }
}

/// What a transformer model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub content: String,
    /// The reply's `model`, for the usage metric when the config names none.
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The call failed: a non-2xx status, including Envoy's own 503 (no connection, unknown
    /// cluster) and 504 (timeout).
    Failed(u16),
    /// A 2xx reply that is not a chat completion with a text message.
    Invalid(&'static str),
}

/// Reads `choices[0].message.content` (and usage) from a chat-completion reply.
pub fn read_reply(reply: &CalloutReply) -> Result<ModelReply, ReplyError> {
    if !reply.is_success() {
        return Err(ReplyError::Failed(reply.status));
    }
    let content_encoding = reply
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
        .map(|(_, value)| value.as_str());
    let body = encoding::decode(content_encoding, &reply.body)
        .map_err(|_| ReplyError::Invalid("its compressed body could not be decoded"))?;
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|_| ReplyError::Invalid("it is not a JSON chat completion"))?;
    let content = parsed
        .get("choices")
        .and_then(|choices| choices.get(0))
        .and_then(|choice| choice.get("message"))
        .and_then(|message| message.get("content"))
        .and_then(Value::as_str)
        .ok_or(ReplyError::Invalid(
            "it has no choices[0].message.content text",
        ))?;
    Ok(ModelReply {
        content: content.to_string(),
        model: parsed
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: parsed
            .get("usage")
            .and_then(|usage| serde_json::from_value::<Usage>(usage.clone()).ok())
            .map(Usage::normalised),
    })
}

/// The first match of the pattern: its first capture group if it has one that took part in
/// the match, else the whole match. Without a pattern, the whole text.
pub fn extract<'a>(
    pattern: Option<&crate::guards::engine::Regex>,
    text: &'a str,
) -> Option<&'a str> {
    match pattern {
        Some(pattern) => pattern.first_group_or_match(text),
        None => Some(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn endpoint(auth: Auth) -> Endpoint {
        Endpoint {
            cluster: "xform".into(),
            authority: "xform.internal".into(),
            path: "/v1/chat/completions".into(),
            timeout_ms: 700,
            auth,
        }
    }

    fn header<'a>(callout: &'a Callout, name: &str) -> Option<&'a str> {
        callout
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn builds_a_non_streamed_chat_completion() {
        let callout = chat_callout(
            &endpoint(Auth::Key(Secret::new("sk-x"))),
            Some("m1"),
            "be brief",
            "{\"a\":1}",
        );
        assert_eq!(callout.cluster, "xform");
        assert_eq!(callout.timeout_ms, 700);
        assert_eq!(header(&callout, ":method"), Some("POST"));
        assert_eq!(header(&callout, ":path"), Some("/v1/chat/completions"));
        assert_eq!(header(&callout, ":authority"), Some("xform.internal"));
        assert_eq!(header(&callout, "authorization"), Some("Bearer sk-x"));
        let body: Value = serde_json::from_slice(&callout.body).unwrap();
        assert_eq!(
            body,
            json!({"model":"m1","stream":false,"messages":[
                {"role":"system","content":"be brief"},{"role":"user","content":"{\"a\":1}"}]})
        );
        let anonymous = chat_callout(&endpoint(Auth::None), None, "p", "u");
        assert_eq!(header(&anonymous, "authorization"), None);
        let body: Value = serde_json::from_slice(&anonymous.body).unwrap();
        assert!(body.get("model").is_none());
    }

    fn reply(status: u16, body: &str) -> CalloutReply {
        CalloutReply {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            grpc_status: None,
        }
    }

    #[test]
    fn reads_content_and_usage() {
        let got = read_reply(&reply(
            200,
            r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"out"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        ))
        .unwrap();
        assert_eq!(got.content, "out");
        assert_eq!(got.model.as_deref(), Some("m"));
        assert_eq!(got.usage, Some(Usage::new(3, 2)));
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(
            read_reply(&reply(504, "upstream request timeout")),
            Err(ReplyError::Failed(504))
        );
        assert_eq!(read_reply(&reply(503, "")), Err(ReplyError::Failed(503)));
        assert!(matches!(
            read_reply(&reply(200, "<html>")),
            Err(ReplyError::Invalid(_))
        ));
        assert!(matches!(
            read_reply(&reply(200, r#"{"choices":[]}"#)),
            Err(ReplyError::Invalid(_))
        ));
    }

    #[test]
    fn reads_gzipped_replies() {
        let text = r#"{"choices":[{"message":{"content":"zipped"}}]}"#;
        let mut zipped = reply(200, "");
        zipped.body = encoding::gzip_for_tests(text.as_bytes());
        zipped
            .headers
            .push(("Content-Encoding".into(), "gzip".into()));
        assert_eq!(read_reply(&zipped).unwrap().content, "zipped");
    }

    #[test]
    fn extracts_first_group_or_whole_match() {
        let fenced = crate::guards::engine::Regex::new(r"(?s)```(?:json)?\s*(.*?)```").unwrap();
        assert_eq!(
            extract(Some(&fenced), "Sure:\n```json\n{\"a\":1}\n```\nbye"),
            Some("{\"a\":1}\n")
        );
        let whole = crate::guards::engine::Regex::new(r"\{.*\}").unwrap();
        assert_eq!(extract(Some(&whole), "x {\"a\":1} y"), Some("{\"a\":1}"));
        assert_eq!(extract(Some(&whole), "no json"), None);
        let optional = crate::guards::engine::Regex::new(r"a(b)?").unwrap();
        assert_eq!(extract(Some(&optional), "xa"), Some("a"));
        assert_eq!(extract(None, "all"), Some("all"));
    }
}
