//! Token usage as OpenAI reports it (`usage.prompt_tokens` ...), read from a JSON answer or
//! from the events of a stream. Other providers' answers are translated to this shape first.

use serde::Deserialize;

/// Tokens of one answer, in every API's terms: `prompt_tokens` counts every input token,
/// including those read from or written to a prompt cache (`cache_read_tokens` and
/// `cache_write_tokens` are parts of it, not additions: Anthropic's `input_tokens` excludes
/// them, so its parsers add them in); `reasoning_tokens` are part of `completion_tokens`.
///
/// Read from OpenAI's `usage` object: `prompt_tokens_details.cached_tokens` and
/// `completion_tokens_details.reasoning_tokens` fill the details, and
/// `prompt_tokens_details.cache_write_tokens` (the name OpenRouter uses, and what the
/// Anthropic codec writes into the chat answers it translates) `cache_write_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "RawUsage")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens served from a prompt cache (OpenAI `prompt_tokens_details.cached_tokens`,
    /// Anthropic `cache_read_input_tokens`, Responses `input_tokens_details.cached_tokens`).
    pub cache_read_tokens: u64,
    /// Input tokens written to a prompt cache (Anthropic `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning (`completion_tokens_details.reasoning_tokens`,
    /// Responses `output_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u64,
}

/// OpenAI's `usage` as sent. A detail that is absent, null or not a count reads as 0 (some
/// servers send `"prompt_tokens_details": null`); the top-level counts keep their strictness.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default, deserialize_with = "lenient_details")]
    prompt_tokens_details: Details,
    #[serde(default, deserialize_with = "lenient_details")]
    completion_tokens_details: Details,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default, deserialize_with = "lenient_count")]
    cached_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    cache_write_tokens: u64,
    #[serde(default, deserialize_with = "lenient_count")]
    reasoning_tokens: u64,
}

/// The details object, or none for anything else (null, a string, an array).
fn lenient_details<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Details, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Ok(Details::default()); // serde would read an array as the fields in order
    }
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// A count, or 0 for anything else (null, a string, a negative or fractional number).
fn lenient_count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value.as_u64().unwrap_or_default())
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        let prompt = raw.prompt_tokens_details;
        let completion = raw.completion_tokens_details;
        // Parts never exceed their whole: a hostile or confused upstream cannot make the
        // cached share larger than the prompt (pricing relies on it).
        let cache_read_tokens = prompt.cached_tokens.min(raw.prompt_tokens);
        let cache_write_tokens = prompt
            .cache_write_tokens
            .min(raw.prompt_tokens - cache_read_tokens);
        Usage {
            prompt_tokens: raw.prompt_tokens,
            completion_tokens: raw.completion_tokens,
            total_tokens: raw.total_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens: completion.reasoning_tokens.min(raw.completion_tokens),
        }
    }
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Usage::default()
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
    if !crate::find::contains(data, "\"usage\"") {
        return None;
    }
    from_json(data.as_bytes())
}

/// Reads `usage` from the last bytes of a JSON answer too large to keep whole: the value
/// of the last `"usage":` key in `tail` (OpenAI-shaped answers end with it). None when the
/// tail holds no complete usage object.
pub fn from_json_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = tail.windows(KEY.len()).rposition(|window| window == KEY)?;
    let rest = tail.get(at + KEY.len()..)?;
    let rest = rest.get(rest.iter().position(|b| !b.is_ascii_whitespace())?..)?;
    let value = rest.strip_prefix(b":")?;
    serde_json::Deserializer::from_slice(value)
        .into_iter::<Option<Usage>>()
        .next()?
        .ok()
        .flatten()
        .map(Usage::normalised)
}

/// Bytes of text per token assumed by estimates (OpenAI's rule of thumb for English).
pub const BYTES_PER_TOKEN: usize = 4;

/// The usage charged when the provider's own never arrived (the client hung up before the
/// usage event, an answer too large to read): the request's bytes as prompt tokens and the
/// generated bytes relayed as completion tokens, `BYTES_PER_TOKEN` bytes a token, rounded up.
pub fn estimate(request_bytes: usize, generated_bytes: usize) -> Usage {
    let tokens = |bytes: usize| bytes.div_ceil(BYTES_PER_TOKEN) as u64;
    Usage::new(tokens(request_bytes), tokens(generated_bytes))
}

/// Bytes of generated text in one OpenAI answer or chunk (its `content`, `reasoning_content`,
/// `refusal` and tool-call `arguments` strings, and a Responses event's `delta` string, as
/// escaped JSON): what an estimate counts.
/// One pass over `data`: every match of `":"` is a key followed by a string value (a quote
/// inside a string is always escaped), whose value is skipped over.
pub fn generated_text_len(data: &str) -> usize {
    const TEXT_KEYS: [&[u8]; 4] = [b"content\"", b"arguments\"", b"refusal\"", b"\"delta\""];
    generated_text_len_of(data, &TEXT_KEYS)
}

/// Bytes of the string values of the keys whose text ends with one of `text_keys` (with its
/// closing quote: `content"` also counts `reasoning_content`), as `generated_text_len`.
pub fn generated_text_len_of(data: &str, text_keys: &[&[u8]]) -> usize {
    let bytes = data.as_bytes();
    let mut total = 0;
    let mut at = 0;
    while let Some(key_end) = key_value_colon(bytes, at) {
        let start = key_end + 2;
        let mut end = start;
        while let Some(byte) = bytes.get(end) {
            match byte {
                b'\\' => end += 2,
                b'"' => break,
                _ => end += 1,
            }
        }
        let end = end.min(bytes.len());
        let key = bytes.get(..key_end).unwrap_or_default();
        if text_keys.iter().any(|name| key.ends_with(name)) {
            total += end.saturating_sub(start);
        }
        at = end + 1;
    }
    total
}

/// Index of the colon of the first `":"` whose opening quote is at or after `from`. The
/// colon is searched for a word at a time (`find::byte`): a window compare at every byte
/// was a tenth of a stream's cost per event.
fn key_value_colon(bytes: &[u8], from: usize) -> Option<usize> {
    let mut next = from + 1;
    loop {
        let colon = next + crate::find::byte(bytes.get(next..)?, b':')?;
        if bytes.get(colon - 1) == Some(&b'"') && bytes.get(colon + 1) == Some(&b'"') {
            return Some(colon);
        }
        next = colon + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_found_in_the_tail_of_a_large_answer() {
        let tail = br#"logprob":-0.1}]}}],"usage":{"prompt_tokens":12,"completion_tokens":3000000},"system_fingerprint":"fp"}"#;
        assert_eq!(from_json_tail(tail), Some(Usage::new(12, 3_000_000)));
        let spaced =
            br#"...] , "usage" : {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}"#;
        assert_eq!(from_json_tail(spaced), Some(Usage::new(1, 2)));
        // The last key wins: usage quoted in the text earlier is escaped, so never matches.
        let text = br#"{"content":"say \"usage\":{\"prompt_tokens\":9}"}],"usage":{"prompt_tokens":4,"completion_tokens":5}}"#;
        assert_eq!(from_json_tail(text), Some(Usage::new(4, 5)));
        assert_eq!(from_json_tail(br#"..."usage":{"prompt_tok"#), None);
        assert_eq!(from_json_tail(br#""usage":null}"#), None);
        assert_eq!(from_json_tail(b"no usage here"), None);
    }

    #[test]
    fn estimates_count_generated_text_only() {
        let chunk = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello \"you\""},"finish_reason":null}]}"#;
        assert_eq!(generated_text_len(chunk), r#"Hello \"you\""#.len());
        let tool = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(generated_text_len(tool), r#"{\"a\":1}"#.len());
        let reasoning = r#"{"choices":[{"delta":{"reasoning_content":"hmm","content":null}}]}"#;
        assert_eq!(generated_text_len(reasoning), 3);
        assert_eq!(generated_text_len(r#"{"content":"unterminated"#), 12);
        // Responses deltas (text, arguments, refusals); a chat chunk's `delta` is an object.
        let delta = r#"{"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"Hi \"x\"","sequence_number":4}"#;
        assert_eq!(generated_text_len(delta), r#"Hi \"x\""#.len());
        let args = r#"{"type":"response.function_call_arguments.delta","delta":"{\"a\":","output_index":1}"#;
        assert_eq!(generated_text_len(args), r#"{\"a\":"#.len());
        assert_eq!(estimate(10, 9), Usage::new(3, 3));
        assert_eq!(estimate(0, 0), Usage::new(0, 0));
    }

    #[test]
    fn key_value_colon_finds_what_a_window_search_finds() {
        let window = |bytes: &[u8], from: usize| {
            bytes
                .get(from..)
                .and_then(|rest| rest.windows(3).position(|w| w == b"\":\""))
                .map(|found| from + found + 1)
        };
        let texts: [&[u8]; 8] = [
            b"",
            b"\":\"",
            b":\":\"::\"\":\"x",
            br#"{"a":1,"content":"x:y","refusal":"\":\""}"#,
            br#"{"id":"c","choices":[{"delta":{"content":"hi"}}]}"#,
            b"\"\":\"\":\"",
            b"x\":",
            b"\"::\"",
        ];
        for text in texts {
            for from in 0..=text.len() + 1 {
                assert_eq!(
                    key_value_colon(text, from),
                    window(text, from),
                    "{text:?} {from}"
                );
            }
        }
    }

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

    #[test]
    fn details_fill_cache_and_reasoning_tokens() {
        let body = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
            "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0}}}"#;
        let usage = from_json(body).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens
            ),
            (2006, 1920, 0)
        );
        assert_eq!(
            (usage.completion_tokens, usage.reasoning_tokens),
            (300, 192)
        );
        // The stream's usage chunk carries the same object.
        let chunk = r#"{"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":6,"cache_write_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let usage = from_stream_event(chunk).unwrap();
        assert_eq!(
            (
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens
            ),
            (6, 3, 1)
        );
        assert_eq!(usage.total_tokens, 14);
        // And the tail of a large answer.
        let tail = br#"x"}}],"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":5}}}"#;
        assert_eq!(from_json_tail(tail).unwrap().cache_read_tokens, 5);
    }

    #[test]
    fn odd_details_never_lose_the_usage_nor_exceed_their_whole() {
        for details in [
            r#"null"#,
            r#""many""#,
            r#"[1]"#,
            r#"{"cached_tokens":null}"#,
            r#"{"cached_tokens":-3}"#,
            r#"{"cached_tokens":"7"}"#,
            r#"{"cached_tokens":1.5}"#,
        ] {
            let body = format!(
                r#"{{"usage":{{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{details},"completion_tokens_details":{details}}}}}"#
            );
            let usage = from_json(body.as_bytes()).unwrap();
            assert_eq!(usage, Usage::new(9, 2), "{details}");
        }
        // Parts larger than their whole are cut to it: read first, then write.
        let body = br#"{"usage":{"prompt_tokens":9,"completion_tokens":2,
            "prompt_tokens_details":{"cached_tokens":7,"cache_write_tokens":50},
            "completion_tokens_details":{"reasoning_tokens":40}}}"#;
        let usage = from_json(body).unwrap();
        assert_eq!(
            (
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens
            ),
            (7, 2, 2)
        );
    }
}
