//! Borrowed views of JSON text, for the hot paths that read a few fields of a body and
//! change a few of its strings: instead of building a `serde_json::Value` and serialising
//! all of it again, read typed views whose leaves are slices of the original text
//! (`&RawValue`), and write the text back with only those slices replaced (`Edits`).
//!
//! serde_json parses and validates; a view type is a serde struct with borrowed fields.
//! A view that does not fit the text (a field of another type, a repeated field) fails to
//! parse, and the caller takes the general `Value` path instead.

use std::borrow::Cow;
use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// An object member that may be absent. Unlike `Option<&RawValue>`, which reads a JSON
/// `null` as absent, it keeps a present `null` (as the raw text `null`): a rewrite must not
/// add a member the text already has. Use with `#[serde(borrow, default)]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Member<'a>(pub Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|raw| Member(Some(raw)))
    }
}

/// The JSON type of a raw value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

pub fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|raw| kind(raw) == Kind::Null)
}

/// The text of a JSON string, borrowed when it has no escapes.
pub fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

pub fn as_bool(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// True when no array or object in `text` is nested deeper than `limit`. Views skip members
/// they do not name without serde_json's depth limit (128) on `Value`s, so callers that must
/// refuse what a `Value` parse refuses check this first.
pub fn nesting_within(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => match string_end(text, at + 1) {
                Some(end) => at = end,
                None => return true, // an unterminated string: the parse refuses it anyway
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    true
}

/// The index of the quote that ends a JSON string whose text starts at `from`. Strings are
/// most of a body: their text is skipped eight bytes at a time up to each quote, and a quote
/// after an odd run of backslashes is escaped.
fn string_end(text: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let quote = from + crate::find::byte(text.get(from..)?, b'"')?;
        let backslashes = text
            .get(..quote)?
            .iter()
            .rev()
            .take_while(|byte| **byte == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(quote);
        }
        from = quote + 1;
    }
}

/// Where `part`, a slice of `whole` (a raw value borrowed from it), sits in `whole`.
pub fn range_in(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// Replacements of byte ranges of one text, applied in one pass.
#[derive(Debug, Default)]
pub struct Edits {
    edits: Vec<(Range<usize>, Vec<u8>)>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Adds all of `other`'s edits.
    pub fn append(&mut self, other: Edits) {
        self.edits.extend(other.edits);
    }

    /// Replaces `range` with `bytes` (an empty range inserts).
    pub fn replace(&mut self, range: Range<usize>, bytes: Vec<u8>) {
        self.edits.push((range, bytes));
    }

    /// Replaces `range` with `text` as a JSON string.
    pub fn replace_with_str(&mut self, range: Range<usize>, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 2);
        crate::json::write_str(text, &mut bytes);
        self.replace(range, bytes);
    }

    /// Replaces the raw value `part` of `whole` with `text` as a JSON string.
    pub fn replace_with_string(&mut self, whole: &str, part: &RawValue, text: &str) -> bool {
        let Some(range) = range_in(whole, part.get()) else {
            return false;
        };
        self.replace_with_str(range, text);
        true
    }

    /// `whole` with every edit made; None when two edits overlap or one is out of range.
    pub fn apply(mut self, whole: &[u8]) -> Option<Vec<u8>> {
        self.edits
            .sort_by_key(|(range, _)| (range.start, range.end));
        let grows: usize = self.edits.iter().map(|(_, bytes)| bytes.len()).sum();
        let mut out = Vec::with_capacity(whole.len() + grows);
        let mut at = 0;
        for (range, bytes) in &self.edits {
            if range.start < at || range.end < range.start {
                return None;
            }
            out.extend_from_slice(whole.get(at..range.start)?);
            out.extend_from_slice(bytes);
            at = range.end;
        }
        out.extend_from_slice(whole.get(at..)?);
        Some(out)
    }
}

/// True when an object anywhere in `text` has a key twice (compared decoded: `"a"` and
/// `"\u0061"` are the same key). Parsers differ on which one wins, so a body with one is
/// never forwarded as it was sent: what the guards read must be what the provider reads.
/// Linear in the text; false for text that is not JSON.
pub fn has_duplicate_keys(text: &[u8]) -> bool {
    match serde_json::from_slice::<NoDuplicates>(text) {
        Ok(NoDuplicates) => false,
        Err(error) => error.to_string().starts_with(DUPLICATE),
    }
}

const DUPLICATE: &str = "duplicate key";

struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom(DUPLICATE));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// The model an answer (or one stream event) names, read as the provider wrote it: the
/// top-level `model` (OpenAI, Anthropic, Responses), `message.model` (Anthropic's
/// `message_start`), `response.model` (Responses' `response.created`) or `modelVersion`
/// (Gemini). Each is found by `string_at`, which stops at the member.
pub fn answer_model(text: &[u8]) -> Option<String> {
    // Every place is a member whose name starts `"model`: a text without one is not walked.
    if !crate::find::contains_bytes(text, b"\"model") {
        return None;
    }
    string_at(text, &["model"])
        .or_else(|| string_at(text, &["message", "model"]))
        .or_else(|| string_at(text, &["response", "model"]))
        .or_else(|| string_at(text, &["modelVersion"]))
}

/// The string at `path` (member names, outermost first) of the JSON object `text`: members
/// are read in order and reading stops at the one named (serde skips those before it, in
/// linear time; those after it are never read). None when `text` is not an object, the path
/// is not there before a malformed member, or its value is not a string. Names are compared
/// as written (an escaped name does not match).
pub fn string_at(text: &[u8], path: &[&str]) -> Option<String> {
    let (first, rest_of_path) = path.split_first()?;
    let mut at = skip_whitespace(text, 0);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_whitespace(text, at);
        if text.get(at) != Some(&b'"') {
            return None; // `}` (no such member) or not JSON
        }
        let name_end = after_string(text, at)?;
        // Compared as written: a name with escapes never matches.
        let name_matches = text.get(at + 1..name_end - 1)? == first.as_bytes();
        at = skip_whitespace(text, name_end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(text, at + 1);
        if name_matches {
            let value = text.get(at..)?;
            if !rest_of_path.is_empty() {
                return string_at(value, rest_of_path);
            }
            if value.first() != Some(&b'"') {
                return None;
            }
            let end = after_string(value, 0)?;
            let inner = value.get(1..end - 1)?;
            if !inner.contains(&b'\\') && !inner.iter().any(|b| *b < 0x20) {
                return String::from_utf8(inner.to_vec()).ok();
            }
            return serde_json::from_slice::<String>(value.get(..end)?).ok();
        }
        at = skip_whitespace(text, skip_value(text, at)?);
        match text.get(at) {
            Some(b',') => at += 1,
            _ => return None, // `}`: no such member; anything else: not JSON
        }
    }
}

/// The index after the string that opens at `at` (a `"`).
fn after_string(text: &[u8], at: usize) -> Option<usize> {
    string_end(text, at + 1).map(|quote| quote + 1)
}

/// The index after the JSON value at `at`: strings, numbers and literals by hand (the
/// members before an answer's `model` are such), objects and arrays by serde.
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    match rest.first()? {
        b'"' => after_string(text, at),
        b'{' | b'[' => {
            let mut values =
                serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
            values.next()?.ok()?;
            Some(at + values.byte_offset())
        }
        b't' => rest.starts_with(b"true").then_some(at + 4),
        b'f' => rest.starts_with(b"false").then_some(at + 5),
        b'n' => rest.starts_with(b"null").then_some(at + 4),
        b'-' | b'0'..=b'9' => {
            let len = rest
                .iter()
                .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .count();
            Some(at + len)
        }
        _ => None,
    }
}

fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {

    #[test]
    fn answer_model_reads_each_provider_s_place() {
        let cases: [(&[u8], Option<&str>); 12] = [
            (
                br#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-2024"}"#,
                Some("gpt-4o-2024"),
            ),
            (
                br#"{"type":"message_start","message":{"id":"m","model":"claude-x","content":[]}}"#,
                Some("claude-x"),
            ),
            (
                br#"{"type":"response.created","response":{"id":"r","model":"gpt-5"}}"#,
                Some("gpt-5"),
            ),
            (
                br#"{"candidates":[],"usageMetadata":{},"modelVersion":"gemini-2.5-flash"}"#,
                Some("gemini-2.5-flash"),
            ),
            (
                br#"{"type":"content_block_delta","delta":{"text":"\"model\":\"x\""}}"#,
                None,
            ),
            (br#"{"message":"model","model":{"name":"x"}}"#, None),
            (br#"{"choices":[]}"#, None),
            (br#"{"model":7,"response":null}"#, None),
            (br#"{"choices":[{"message":{"model":"inner"}}]}"#, None),
            (b"[1,2]", None),
            (b"not json \"model", None),
            // Empty as written: pricing takes an empty name as none (`pipeline::response`).
            (br#"{"model":"","message":"text"}"#, Some("")),
        ];
        for (text, want) in cases {
            assert_eq!(
                answer_model(text).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn string_at_reads_the_member_and_stops() {
        let string_at_model = |text: &[u8], _: &str| string_at(text, &["model"]);
        let answer = br#"{"id":"x","object":"chat.completion","created":1,"model":"gpt-4o-2024","choices":[{"message":{"model":"inner"}}]}"#;
        assert_eq!(
            string_at_model(answer, "model").as_deref(),
            Some("gpt-4o-2024")
        );
        // Nested members and strings that hold the key are not the top-level member.
        let nested = br#"{"a":{"model":"inner"},"b":"\"model\":\"fake\"","model" : "real"}"#;
        assert_eq!(string_at_model(nested, "model").as_deref(), Some("real"));
        // Escaped keys are skipped whole (an escaped quote must not end them early).
        let escaped = br#"{"mo\"del":"no","m\u006fdel":"no","model":"yes"}"#;
        assert_eq!(string_at_model(escaped, "model").as_deref(), Some("yes"));
        // The member after a malformed one is never found; the text after it is never read.
        assert_eq!(
            string_at_model(br#"{"model":"ok", garbage"#, "model").as_deref(),
            Some("ok")
        );
        for text in [
            &br#"{"id":1,"choices":[]}"#[..],
            br#"{"model":5}"#,
            br#"["model","x"]"#,
            br#"{"id":tru,"model":"x"}"#,
            br#"{"id" 1,"model":"x"}"#,
            b"",
            b"{",
            br#"{"model""#,
            br#"{"model":"unterminated"#,
        ] {
            assert_eq!(
                string_at_model(text, "model"),
                None,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct View<'a> {
        #[serde(borrow)]
        name: Option<&'a RawValue>,
        #[serde(borrow, default)]
        items: Vec<&'a RawValue>,
    }

    #[test]
    fn views_borrow_and_edits_splice() {
        let text = r#"{"items": [1, "two", null, {"a": [true]}], "name" : "caf\u00e9", "x": {}}"#;
        let view: View<'_> = serde_json::from_str(text).unwrap();
        let kinds: Vec<Kind> = view.items.iter().map(|raw| kind(raw)).collect();
        assert_eq!(
            kinds,
            [Kind::Number, Kind::String, Kind::Null, Kind::Object]
        );
        let name = view.name.unwrap();
        assert_eq!(as_str(name).unwrap(), "café");
        assert!(matches!(
            as_str(view.items[1]).unwrap(),
            Cow::Borrowed("two")
        ));
        assert_eq!(as_str(view.items[0]), None);
        let mut edits = Edits::default();
        assert!(edits.replace_with_string(text, name, "a \"b\"\n"));
        assert!(edits.replace_with_string(text, view.items[1], "2"));
        let range = range_in(text, view.items[2].get()).unwrap();
        edits.replace(range.end..range.end, b", 3".to_vec());
        let out = String::from_utf8(edits.apply(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"items": [1, "2", null, 3, {"a": [true]}], "name" : "a \"b\"\n", "x": {}}"#
        );
    }

    #[test]
    fn repeated_fields_and_wrong_types_refuse_the_view() {
        assert!(serde_json::from_str::<View<'_>>(r#"{"name": 1, "name": 2}"#).is_err());
        assert!(serde_json::from_str::<View<'_>>(r#"{"items": {}}"#).is_err());
        assert!(serde_json::from_str::<View<'_>>(r#"[]"#).is_err());
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(nesting_within(deep(5).as_bytes(), 5));
        assert!(!nesting_within(deep(6).as_bytes(), 5));
        let text = format!(r#"{{"a": "{}", "b": [[1]]}}"#, "[{".repeat(10));
        assert!(nesting_within(text.as_bytes(), 3));
        assert!(!nesting_within(text.as_bytes(), 2));
        assert!(nesting_within(br#"["\"[[[[", []]"#, 2));
        assert!(nesting_within(br#"["\\", [[]]]"#, 3));
        assert!(!nesting_within(br#"["\\", [[]]]"#, 2));
        assert!(nesting_within(br#"["unterminated [[[[["#, 1));
    }

    #[test]
    fn overlapping_edits_are_refused() {
        let mut edits = Edits::default();
        edits.replace(0..3, b"x".to_vec());
        edits.replace(2..4, b"y".to_vec());
        assert_eq!(edits.apply(b"abcdef"), None);
        let mut edits = Edits::default();
        edits.replace(4..9, Vec::new());
        assert_eq!(edits.apply(b"abc"), None);
        assert_eq!(Edits::default().apply(b"abc").unwrap(), b"abc");
        assert_eq!(range_in("abc", "xyz"), None);
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_and_in_any_spelling() {
        assert!(!has_duplicate_keys(
            br#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#
        ));
        assert!(has_duplicate_keys(br#"{"input":"x","input":"y"}"#));
        assert!(has_duplicate_keys(
            br#"{"input":[{"type":"message","content":"a","content":"b"}]}"#
        ));
        assert!(has_duplicate_keys(br#"{"a":1,"\u0061":2}"#));
        assert!(!has_duplicate_keys(b"not json"));
    }
}
