//! Usage of Messages answers: `usage.input_tokens`, `output_tokens`,
//! `cache_creation_input_tokens` and `cache_read_input_tokens`. Anthropic's `input_tokens`
//! leaves cached input out, so `Usage::prompt_tokens` adds both cache counts in
//! (`usage.rs`). In a stream, `message_start` carries the first counts and each
//! `message_delta` cumulative ones: a count a delta gives replaces the earlier one, a count
//! it leaves out keeps its value.

use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

/// The four counters as Anthropic reports them; None when left out (or not a count).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_write: Option<u64>,
    cache_read: Option<u64>,
}

impl Counts {
    fn read(usage: &Value) -> Option<Counts> {
        let usage = usage.as_object()?;
        let count = |name: &str| usage.get(name).and_then(Value::as_u64);
        Some(Counts {
            input: count("input_tokens"),
            output: count("output_tokens"),
            cache_write: count("cache_creation_input_tokens"),
            cache_read: count("cache_read_input_tokens"),
        })
    }

    /// These counts over `previous` (whose missing ones they keep).
    fn over(self, previous: Option<Usage>) -> Usage {
        let previous = previous.unwrap_or_default();
        let previous_input = previous
            .prompt_tokens
            .saturating_sub(previous.cache_read_tokens)
            .saturating_sub(previous.cache_write_tokens);
        let input = self.input.unwrap_or(previous_input);
        let cache_write = self.cache_write.unwrap_or(previous.cache_write_tokens);
        let cache_read = self.cache_read.unwrap_or(previous.cache_read_tokens);
        let output = self.output.unwrap_or(previous.completion_tokens);
        let mut usage = Usage::new(
            input.saturating_add(cache_write).saturating_add(cache_read),
            output,
        );
        usage.cache_write_tokens = cache_write;
        usage.cache_read_tokens = cache_read;
        usage
    }
}

#[derive(Deserialize)]
struct Carrier {
    #[serde(default)]
    usage: Option<Value>,
}

/// Usage of a whole Message answer.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    let usage = serde_json::from_slice::<Carrier>(body).ok()?.usage?;
    Some(Counts::read(&usage)?.over(None))
}

/// Usage from the last bytes of an answer too large to keep whole: the last `"usage":`
/// object in `tail` (a Message ends with it).
pub fn usage_from_json_tail(tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = tail.windows(KEY.len()).rposition(|window| window == KEY)?;
    let rest = tail.get(at + KEY.len()..)?;
    let rest = rest.get(rest.iter().position(|b| !b.is_ascii_whitespace())?..)?;
    let value = rest.strip_prefix(b":")?;
    let usage = serde_json::Deserializer::from_slice(value)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    Some(Counts::read(&usage)?.over(None))
}

/// Usage carried by one stream event (`message_start`'s `message.usage`, `message_delta`'s
/// `usage`), over what earlier events reported.
pub fn usage_from_event(data: &str, previous: Option<Usage>) -> Option<Usage> {
    if !crate::find::contains(data, "\"usage\"") {
        return None;
    }
    let event: Value = serde_json::from_str(data).ok()?;
    let usage = match event.get("type").and_then(Value::as_str) {
        Some("message_start") => event.get("message")?.get("usage")?,
        Some("message_delta") => event.get("usage")?,
        _ => return None,
    };
    Some(Counts::read(usage)?.over(previous))
}

/// Bytes of generated text in one Messages stream event (`text`, `partial_json` and
/// `thinking` deltas): what an estimate counts when usage never arrives.
pub fn generated_text_len(data: &str) -> usize {
    const TEXT_KEYS: [&[u8]; 3] = [b"\"text\"", b"\"partial_json\"", b"\"thinking\""];
    crate::usage::generated_text_len_of(data, &TEXT_KEYS)
}
