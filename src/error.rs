//! OpenAI-shaped errors: every rejection the filter makes, and every upstream error it
//! relays, reaches the client as `{"error":{"message","type","code","param"}}`.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub code: String,
    /// Extra response headers, such as `retry-after` on 429.
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            code: code.into(),
            headers: Vec::new(),
        }
    }

    pub fn invalid_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(400, "invalid_request_error", code, message)
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(&self) -> Vec<u8> {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "param": null,
            }
        })
        .to_string()
        .into_bytes()
    }
}

/// Turns whatever an upstream answered with a failure status into the OpenAI error shape.
/// A body that already is `{"error":{...}}` with a message keeps its message, type and code.
pub fn upstream_error(status: u16, body: &[u8], provider: &str) -> ApiError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
        })
        .map(str::to_string)
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("{provider} upstream answered with status {status}")
            } else {
                truncate_chars(text, 512)
            }
        });
    let kind_from_body = error
        .and_then(|e| e.get("type").or_else(|| e.get("status")))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(|c| match c {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .or(kind_from_body)
        .unwrap_or_else(|| format!("upstream_{status}"));
    ApiError::new(status, kind_for_status(status), code, message)
}

pub fn kind_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => format!("{}...", &text[..index]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let err = ApiError::invalid_request("invalid_json", "bad");
        let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_json");
    }

    #[test]
    fn upstream_openai_error_is_kept() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let err = upstream_error(429, body, "openai");
        assert_eq!(err.status, 429);
        assert_eq!(err.message, "Rate limit reached");
        assert_eq!(err.code, "rate_limit_exceeded");
        assert_eq!(err.kind, "rate_limit_error");
    }

    #[test]
    fn upstream_anthropic_error_is_reshaped() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let err = upstream_error(529, body, "anthropic");
        assert_eq!(err.message, "Overloaded");
        assert_eq!(err.code, "overloaded_error");
        assert_eq!(err.kind, "api_error");
    }

    #[test]
    fn upstream_text_error_is_wrapped_and_truncated() {
        let body = "x".repeat(2000);
        let err = upstream_error(502, body.as_bytes(), "openai");
        assert!(err.message.len() < 600);
        assert_eq!(err.code, "upstream_502");
        let empty = upstream_error(503, b"", "openai");
        assert!(empty.message.contains("503"));
    }
}
