//! The one module that knows which regex engine is built in. Everything else asks for
//! matches through `Regex` and `PatternSet`.
//!
//! Features: `regex-full` (default) uses the `regex` crate with its lazy DFA and literal
//! prefilters (Perl classes and case folding for Unicode; no Unicode scripts/categories);
//! `regex-lite` uses `regex-lite` (smaller, much slower on long texts, ASCII-only classes).
//! If both are enabled, `regex-lite` wins.

#[cfg(not(any(feature = "regex-full", feature = "regex-lite")))]
compile_error!("enable one regex engine: feature \"regex-full\" (default) or \"regex-lite\"");

#[cfg(feature = "regex-lite")]
use regex_lite as imp;

#[cfg(all(feature = "regex-full", not(feature = "regex-lite")))]
use regex as imp;

/// The engine's name, for logs and benchmarks.
#[cfg(feature = "regex-lite")]
pub const ENGINE: &str = "regex-lite";
#[cfg(all(feature = "regex-full", not(feature = "regex-lite")))]
pub const ENGINE: &str = "regex";

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Regex(imp::Regex);

impl Regex {
    /// Compiles `pattern`; the error is one line, fit for a config error.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        imp::Regex::new(pattern)
            .map(Regex)
            .map_err(|err| one_line(&err.to_string()))
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The first match: its first capture group if that took part in the match, else the
    /// whole match (transformers' `extract_pattern`).
    pub fn first_group_or_match<'t>(&self, text: &'t str) -> Option<&'t str> {
        let captures = self.0.captures(text)?;
        captures
            .get(1)
            .or_else(|| captures.get(0))
            .map(|found| found.as_str())
    }

    /// The leftmost match starting at or after byte `start` (a char boundary), as byte offsets.
    /// Assertions such as `\b` see the text before `start`.
    pub fn find_at(&self, text: &str, start: usize) -> Option<(usize, usize)> {
        if start > text.len() {
            return None;
        }
        self.0.find_at(text, start).map(|m| (m.start(), m.end()))
    }
}

/// Several patterns, each searched on its own: with `regex-full` each has its own literal
/// prefilter (memchr / Teddy), which made a 32 KB prompt with six patterns about 50 times
/// faster natively than one `RegexSet` pass, which cannot use prefilters.
#[derive(Debug, Clone)]
pub struct PatternSet {
    regexes: Vec<Regex>,
}

impl PatternSet {
    /// Compiles every pattern; an error names the index of the faulty one.
    pub fn new(patterns: &[String]) -> Result<PatternSet, (usize, String)> {
        let mut regexes = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            regexes.push(Regex::new(pattern).map_err(|err| (index, err))?);
        }
        Ok(PatternSet { regexes })
    }

    pub fn len(&self) -> usize {
        self.regexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    pub fn find_at(&self, index: usize, text: &str, start: usize) -> Option<(usize, usize)> {
        self.regexes.get(index)?.find_at(text, start)
    }
}

/// Regex errors span several lines (pattern, caret, message); config errors are one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_with_context_and_offsets() {
        let re = Regex::new(r"\bfalcon\b").unwrap();
        assert_eq!(re.find_at("a falcon", 0), Some((2, 8)));
        // `\b` sees the text before `start`.
        assert_eq!(re.find_at("xfalcon falcon", 1), Some((8, 14)));
        assert_eq!(re.find_at("falcon", 7), None);
        assert!(re.is_match("the falcon"));
    }

    #[test]
    fn first_group_or_whole_match() {
        let re = Regex::new("a(b)?").unwrap();
        assert_eq!(re.first_group_or_match("xab"), Some("b"));
        assert_eq!(re.first_group_or_match("xa"), Some("a"));
        assert_eq!(re.first_group_or_match("x"), None);
    }

    #[test]
    fn errors_are_one_line() {
        let err = Regex::new("(unclosed").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        let (index, _) = PatternSet::new(&["a".to_string(), "(".to_string()]).unwrap_err();
        assert_eq!(index, 1);
    }

    #[test]
    fn set_finds_per_pattern() {
        let patterns = ["abc".to_string(), "[0-9]+".to_string(), "zzz".to_string()];
        let set = PatternSet::new(&patterns).unwrap();
        assert_eq!(set.find_at(1, "x abc 12", 0), Some((6, 8)));
        assert_eq!(set.find_at(2, "x abc 12", 0), None);
        assert_eq!(set.find_at(3, "x abc 12", 0), None);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn unicode_text_is_safe() {
        let re = Regex::new("(?i)caf").unwrap();
        assert_eq!(re.find_at("ünï CAFÉ", 0).map(|(s, _)| s), Some(6));
    }
}
