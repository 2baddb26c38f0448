//! The one module that knows which regex engine is built in. Everything else asks for
//! matches through `Regex` and `PatternSet`.
//!
//! Features: `regex-full` (default) uses the `regex` crate with its lazy DFA and literal
//! prefilters (Perl classes and case folding for Unicode; no Unicode scripts/categories);
//! `regex-lite` uses `regex-lite` (smaller, much slower on long texts, ASCII-only classes).
//! If both are enabled, `regex-lite` wins. The regex guard's `PatternSet` searches inside a
//! bounded range (with `regex-full` through `regex_automata::meta`, the engine `regex` wraps)
//! so that its work stays linear in the text's length (see `regex_guard::Scanner`).

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

/// One pattern of a `PatternSet`, searched inside a bounded part of a text.
#[cfg(all(feature = "regex-full", not(feature = "regex-lite")))]
#[derive(Debug, Clone)]
struct Bounded(regex_automata::meta::Regex);

#[cfg(all(feature = "regex-full", not(feature = "regex-lite")))]
impl Bounded {
    fn new(pattern: &str) -> Result<Bounded, String> {
        // `meta::Regex` is what `regex::Regex` wraps, with the same syntax defaults and limits.
        regex_automata::meta::Regex::new(pattern)
            .map(Bounded)
            .map_err(|err| one_line(&err.to_string()))
    }

    /// The leftmost match inside `text[start..end]`; assertions (`\b`, `$`) see the whole
    /// text, so a match is a match of the whole text, and the search reads nothing past `end`.
    fn find_within(&self, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
        if start > end || end > text.len() {
            return None;
        }
        let input = regex_automata::Input::new(text).range(start..end);
        self.0.search(&input).map(|m| (m.start(), m.end()))
    }
}

#[cfg(feature = "regex-lite")]
#[derive(Debug, Clone)]
struct Bounded(regex_lite::Regex);

#[cfg(feature = "regex-lite")]
impl Bounded {
    fn new(pattern: &str) -> Result<Bounded, String> {
        regex_lite::Regex::new(pattern)
            .map(Bounded)
            .map_err(|err| one_line(&err.to_string()))
    }

    /// The leftmost match inside `text[start..end]`. regex-lite has no bounded search, so it
    /// searches the prefix `text[..end]`: there, `$` and `\b` also hold at `end` (the
    /// scanner checks a match ending at `end` again in a longer window).
    fn find_within(&self, text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
        let prefix = text.get(..end)?;
        if start > end {
            return None;
        }
        self.0.find_at(prefix, start).map(|m| (m.start(), m.end()))
    }
}

/// Several patterns, each searched on its own: with `regex-full` each has its own literal
/// prefilter (memchr / Teddy), which made a 32 KB prompt with six patterns about 50 times
/// faster natively than one `RegexSet` pass, which cannot use prefilters.
#[derive(Debug, Clone)]
pub struct PatternSet {
    regexes: Vec<Bounded>,
}

impl PatternSet {
    /// Compiles every pattern; an error names the index of the faulty one.
    pub fn new(patterns: &[String]) -> Result<PatternSet, (usize, String)> {
        let mut regexes = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            regexes.push(Bounded::new(pattern).map_err(|err| (index, err))?);
        }
        Ok(PatternSet { regexes })
    }

    pub fn len(&self) -> usize {
        self.regexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    /// The leftmost match of pattern `index` that starts at or after `start` and ends at or
    /// before `end` (both char boundaries). The search reads no text past `end`, which is
    /// what bounds its cost (see `regex_guard::SEARCH_WINDOW_BYTES`). With `regex-full`,
    /// assertions see the text on both sides; with `regex-lite`, `$` and `\b` hold at `end`.
    pub fn find_within(
        &self,
        index: usize,
        text: &str,
        start: usize,
        end: usize,
    ) -> Option<(usize, usize)> {
        self.regexes.get(index)?.find_within(text, start, end)
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
        assert_eq!(set.find_within(1, "x abc 12", 0, 8), Some((6, 8)));
        assert_eq!(set.find_within(2, "x abc 12", 0, 8), None);
        assert_eq!(set.find_within(3, "x abc 12", 0, 8), None);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn bounded_search_reads_only_its_range() {
        let patterns = ["[0-9]+".to_string(), r"\bab\b".to_string()];
        let set = PatternSet::new(&patterns).unwrap();
        assert_eq!(set.find_within(0, "x 12345", 0, 5), Some((2, 5)));
        assert_eq!(set.find_within(0, "x 12345", 3, 7), Some((3, 7)));
        assert_eq!(set.find_within(0, "x 12345", 0, 2), None);
        assert_eq!(set.find_within(0, "x 12345", 5, 4), None);
        assert_eq!(set.find_within(0, "x 12345", 0, 9), None);
        // With regex-full, `\b` sees past the end of the range: "ab" in "abc" is no word.
        #[cfg(all(feature = "regex-full", not(feature = "regex-lite")))]
        assert_eq!(set.find_within(1, "abc ab", 0, 2), None);
        assert_eq!(set.find_within(1, "abc ab", 0, 6), Some((4, 6)));
    }

    #[test]
    fn unicode_text_is_safe() {
        let re = Regex::new("(?i)caf").unwrap();
        assert_eq!(re.find_at("ünï CAFÉ", 0).map(|(s, _)| s), Some(6));
    }
}
