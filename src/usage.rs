//! Token usage as OpenAI reports it (`usage.prompt_tokens` ...), read from a JSON answer or
//! from the events of a stream. Other providers' answers are translated to this shape first.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }

    /// Some providers leave `total_tokens` out; derive it then.
    pub fn normalised(mut self) -> Self {
        if self.total_tokens == 0 {
            self.total_tokens = self.prompt_tokens.saturating_add(self.completion_tokens);
        }
        self
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        })
    }
}

/// Only the `usage` member is materialised; serde skips the rest of the document cheaply.
#[derive(Deserialize)]
struct UsageCarrier {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Reads `usage` from a whole JSON answer (or one stream event's JSON). None when absent,
/// null, or the text is not JSON.
pub fn from_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageCarrier>(body)
        .ok()
        .and_then(|carrier| carrier.usage)
        .map(Usage::normalised)
}

/// Cheap pre-check for stream events: most chunks carry no usage, and skipping them avoids
/// a JSON parse per event.
pub fn from_stream_event(data: &str) -> Option<Usage> {
    if !data.contains("\"usage\"") {
        return None;
    }
    from_json(data.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_from_answer() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
        assert_eq!(from_json(body), Some(Usage::new(11, 7)));
    }

    #[test]
    fn derives_missing_total() {
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(from_json(body).unwrap().total_tokens, 7);
    }

    #[test]
    fn null_or_missing_usage_is_none() {
        assert_eq!(from_json(br#"{"usage":null}"#), None);
        assert_eq!(from_json(br#"{"choices":[]}"#), None);
        assert_eq!(from_json(b"not json"), None);
        assert_eq!(
            from_stream_event(r#"{"choices":[{"delta":{"content":"usage"}}]}"#),
            None
        );
    }

    #[test]
    fn reads_stream_usage_chunk() {
        let data = r#"{"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        assert_eq!(from_stream_event(data), Some(Usage::new(5, 2)));
    }
}
