//! Compact JSON output of a `serde_json::Value`, byte for byte what `serde_json::to_vec`
//! writes, but with strings scanned eight bytes at a time for characters that need
//! escaping. Prompts are mostly long runs of plain text, and serde_json's byte-by-byte escape
//! loop was the largest single cost of re-serialising a 32 KB prompt in the VM.

use serde_json::Value;

/// `serde_json::to_vec(value)`, faster. `capacity` is a size hint (the input's size).
pub fn to_vec(value: &Value, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity.max(64));
    write_value(value, &mut out);
    out
}

pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa/ryu); writing to a Vec cannot fail.
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_value(item, out);
            }
            out.push(b'}');
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True if any of the eight bytes is a control character, `"` or `\`.
fn needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_quote = quote.wrapping_sub(ONES) & !quote & HIGHS;
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash & HIGHS;
    (below_space | has_quote | has_backslash) != 0
}

pub fn write_str(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if let Some(word) = crate::find::word_at(bytes, index) {
            if !needs_escape(word) {
                index += 8;
                continue;
            }
        }
        let byte = bytes.get(index).copied().unwrap_or(0);
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                index += 1;
                continue;
            }
        };
        out.extend_from_slice(bytes.get(start..index).unwrap_or_default());
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        index += 1;
        start = index;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same(value: &Value) {
        assert_eq!(
            String::from_utf8(to_vec(value, 0)).unwrap(),
            serde_json::to_string(value).unwrap(),
            "{value:?}"
        );
    }

    #[test]
    fn every_ascii_character_at_every_alignment() {
        for byte in 0u8..=0x7f {
            let c = char::from(byte);
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9, 16] {
                    let text = format!("{}{c}{}", "a".repeat(before), "b".repeat(after));
                    same(&Value::String(text));
                }
            }
        }
    }

    #[test]
    fn unicode_and_mixed_escapes() {
        for text in [
            "",
            "é",
            "日本語のテキスト with ascii",
            "emoji 😀 and \u{7f} del and \u{1b}[0m escape",
            "tab\there\nnew \"quoted\" back\\slash \u{0}\u{1f}\u{8}\u{c}\r",
            "\"\"\"\"\"\"\"\"\"\\\\\\\\\\\\\\\\\\",
            "\u{2028}\u{2029} line separators pass as they are",
        ] {
            same(&Value::String(text.to_string()));
        }
    }

    #[test]
    fn whole_documents() {
        same(&json!(null));
        same(&json!([]));
        same(&json!({}));
        same(&json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi \"there\"\n"}, {"role": "assistant", "content": null}],
            "numbers": [0, -1, 1.5, -0.0, 1e300, 0.1, i64::MIN, u64::MAX, 2.5e-8],
            "flags": [true, false],
            "nested": {"a\tkey": {"b": [[], {}, [1, [2, [3]]]]}},
            "stream_options": {"include_usage": true}
        }));
    }

    #[test]
    fn pseudo_random_strings() {
        let alphabet: Vec<char> = "ab \"\\\n\t\u{1}é😀0123456789xyz".chars().collect();
        let mut seed = 0x1234_5678_u64;
        for length in 0..200 {
            let text: String = (0..length)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            same(&json!({ "k": text }));
        }
    }
}
