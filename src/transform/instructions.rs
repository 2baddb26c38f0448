//! `parse_instructions`: a response transformer's reply `{"headers":{...},"status":N,"body":...}`
//! that sets the client response's headers, status and body. Every member is optional.

use serde_json::Value;

/// Headers a reply may not set: Envoy owns framing and connection handling, and the filter
/// sends the body it holds uncompressed.
const FORBIDDEN_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Instructions {
    pub status: Option<u16>,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// A string body is sent as its text; any other JSON as JSON. None keeps the answer.
    pub body: Option<Vec<u8>>,
}

/// Parses the instructions; the error says what is wrong without echoing the reply.
pub fn parse(text: &str) -> Result<Instructions, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|_| "its instructions are not valid JSON".to_string())?;
    let Some(object) = value.as_object() else {
        return Err("its instructions are not a JSON object".to_string());
    };
    if let Some(key) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "headers" | "status" | "body"))
    {
        return Err(format!(
            "its instructions have an unknown member {key:?} (expected headers, status, body)"
        ));
    }
    let mut instructions = Instructions::default();
    match object.get("status") {
        None | Some(Value::Null) => {}
        Some(status) => {
            let status = status
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| {
                    "its instructions' status must be an integer from 200 to 599".to_string()
                })?;
            instructions.status = Some(status);
        }
    }
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                instructions.headers.push(header(name, value)?);
            }
        }
        Some(_) => return Err("its instructions' headers must be a JSON object".to_string()),
    }
    instructions.body = match object.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.as_bytes().to_vec()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    Ok(instructions)
}

fn header(name: &str, value: &Value) -> Result<(String, String), String> {
    let name = name.to_ascii_lowercase();
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        return Err(format!("its instructions name an invalid header {name:?}"));
    }
    if FORBIDDEN_HEADERS.contains(&name.as_str()) {
        return Err(format!("its instructions may not set the header {name:?}"));
    }
    let value = match value {
        Value::String(text) => text.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        _ => {
            return Err(format!(
                "its instructions' header {name:?} must be a string"
            ))
        }
    };
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!(
            "its instructions' header {name:?} has a line break"
        ));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_members() {
        let got = parse(
            r#"{"headers":{"X-Reviewed":"yes","x-score":3},"status":201,"body":"plain text"}"#,
        )
        .unwrap();
        assert_eq!(got.status, Some(201));
        assert_eq!(
            got.headers,
            vec![
                ("x-reviewed".into(), "yes".into()),
                ("x-score".into(), "3".into())
            ]
        );
        assert_eq!(got.body.as_deref(), Some(&b"plain text"[..]));
        let json_body = parse(r#"{"body":{"a":[1]}}"#).unwrap();
        assert_eq!(json_body.body.as_deref(), Some(&br#"{"a":[1]}"#[..]));
        assert_eq!(parse("{}").unwrap(), Instructions::default());
    }

    #[test]
    fn refuses_bad_instructions() {
        for (text, needle) in [
            ("not json", "not valid JSON"),
            ("[]", "not a JSON object"),
            (r#"{"header":{}}"#, "unknown member"),
            (r#"{"status":99}"#, "status"),
            (r#"{"status":"201"}"#, "status"),
            (r#"{"headers":[]}"#, "headers"),
            (r#"{"headers":{"content-length":"5"}}"#, "content-length"),
            (r#"{"headers":{":status":"200"}}"#, "invalid header"),
            (r#"{"headers":{"x":"a\r\nb: c"}}"#, "line break"),
            (r#"{"headers":{"x":{}}}"#, "must be a string"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
