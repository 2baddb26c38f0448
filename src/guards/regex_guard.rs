//! The in-process regex guard: built-in PII detectors and named operator patterns, compiled
//! once at configure time, that reject or mask (`<NAME>`) text on requests and answers.

use std::rc::Rc;

use serde_json::Value;

use super::builtins::{self, next_char, Needs, Reach, Validator, Verdict};
use super::engine::PatternSet;
use super::outcome::GuardInfo;
use super::text;
use crate::client_api;
use crate::config::model::{RegexAction, RegexGuardConfig};
use crate::config::ConfigError;
use crate::pipeline::in_place::Text;
use crate::pipeline::stage::{
    RequestCtx, RequestStage, ResponseCtx, ResponseStage, Step, TextStage,
};

/// Texts up to this long skip the detectors whose required byte they lack.
const SHORT_TEXT_BYTES: usize = 512;

/// The most text one regex search reads (see `Scanner::next_valid`): it bounds the work per
/// candidate, and matches up to half of it are found whole.
pub const SEARCH_WINDOW_BYTES: usize = 16 * 1024;

/// The largest char boundary at or before `at` (or the text's length).
fn char_floor(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let mut at = at;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One thing the guard looks for.
#[derive(Debug)]
pub struct Detector {
    /// `credit_card`, or the operator's pattern name.
    pub name: String,
    /// `<CREDIT_CARD>`.
    pub placeholder: String,
    pub reach: Reach,
    validate: Option<Validator>,
    needs: Needs,
}

/// A hit at byte offsets `start..end` of detector `detector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub detector: usize,
}

/// All detectors of one guard, searched together.
#[derive(Debug)]
pub struct Scanner {
    set: PatternSet,
    detectors: Vec<Detector>,
}

impl Scanner {
    pub fn compile(config: &RegexGuardConfig, path: &str) -> Result<Scanner, ConfigError> {
        if config.builtins.is_empty() && config.patterns.is_empty() {
            return Err(ConfigError::new(
                path,
                "give at least one of \"builtins\" or \"patterns\"",
            ));
        }
        let mut patterns = Vec::new();
        let mut detectors = Vec::new();
        for (index, name) in config.builtins.iter().enumerate() {
            let at = format!("{path}.builtins[{index}]");
            let Some(builtin) = builtins::find(name) else {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "unknown builtin {name:?}; known: {}",
                        builtins::NAMES.join(", ")
                    ),
                ));
            };
            if config
                .builtins
                .get(..index)
                .is_some_and(|seen| seen.contains(name))
            {
                return Err(ConfigError::new(at, format!("{name:?} is listed twice")));
            }
            patterns.push(builtin.pattern.to_string());
            detectors.push(Detector {
                name: builtin.name.to_string(),
                placeholder: placeholder(builtin.name),
                reach: builtin.reach,
                validate: Some(builtin.validate),
                needs: builtin.needs,
            });
        }
        for (index, pattern) in config.patterns.iter().enumerate() {
            let at = format!("{path}.patterns[{index}]");
            if pattern.name.is_empty()
                || !pattern
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    "must be non-empty ASCII letters, digits, '_' or '-' (it becomes the <NAME> placeholder)",
                ));
            }
            patterns.push(pattern.pattern.clone());
            detectors.push(Detector {
                name: pattern.name.clone(),
                placeholder: placeholder(&pattern.name),
                reach: Reach::Sentence,
                validate: None,
                needs: Needs::Anything,
            });
        }
        let builtin_count = config.builtins.len();
        let set = PatternSet::new(&patterns).map_err(|(index, err)| {
            let at = match index.checked_sub(builtin_count) {
                Some(custom) => format!("{path}.patterns[{custom}].pattern"),
                None => format!("{path}.builtins[{index}]"),
            };
            ConfigError::new(at, err)
        })?;
        Ok(Scanner { set, detectors })
    }

    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Appends the hits whose start is at or after `from`, leftmost first, without overlap:
    /// after each hit every detector searches again from its end. Text before `from` is
    /// context only (for validators and assertions such as `\b`).
    pub fn scan(&self, text: &str, from: usize, hits: &mut Vec<Hit>) {
        self.scan_up_to(text, from, hits, usize::MAX);
    }

    fn scan_up_to(&self, text: &str, from: usize, hits: &mut Vec<Hit>, limit: usize) {
        let candidates: Vec<usize> = (0..self.set.len()).collect();
        let tail = text.as_bytes().get(from..).unwrap_or_default();
        // Each search has a fixed cost that dominates on the short texts of stream events;
        // on long texts the engine's own literal prefilters are faster than this byte scan.
        let prefilter = tail.len() <= SHORT_TEXT_BYTES;
        let mut found: Vec<(Needs, bool)> = Vec::with_capacity(2);
        let mut next: Vec<Option<Hit>> = candidates
            .iter()
            .map(|&i| {
                let needs = match self.detectors.get(i) {
                    Some(detector) if prefilter => detector.needs,
                    _ => Needs::Anything,
                };
                let possible = match found.iter().find(|(n, _)| *n == needs) {
                    Some(&(_, possible)) => possible,
                    None => {
                        let possible = needs.found_in(tail);
                        found.push((needs, possible));
                        possible
                    }
                };
                possible.then(|| self.next_valid(i, text, from)).flatten()
            })
            .collect();
        while let Some(best) = next
            .iter()
            .flatten()
            .min_by_key(|hit| (hit.start, hit.detector))
            .copied()
        {
            hits.push(best);
            if hits.len() >= limit {
                return;
            }
            for (slot, &index) in next.iter_mut().zip(&candidates) {
                if slot.is_some_and(|hit| hit.start < best.end) {
                    *slot = self.next_valid(index, text, best.end);
                }
            }
        }
    }

    /// The first validated hit of one detector at or after `from`.
    ///
    /// Each search reads at most `SEARCH_WINDOW_BYTES` of text: a regex search finds where
    /// its leftmost match ends only after reading on until no longer match is possible, so
    /// searching from every candidate to the end of a long text takes time quadratic in its
    /// length. A match found in the first half of a window (or in the last window) is the
    /// match the whole text gives, as long as it is at most half a window long; one found
    /// later is searched again from its start; with none, the next window starts half a
    /// window on. The work is thus at most a window per candidate and two per window
    /// skipped, whatever the text; a match that fills its window to the end is followed to
    /// its real end (`extend`). An operator pattern's match longer than half a window with
    /// no shorter match at its start (`BEGIN[\s\S]*END` around more than 8 KiB) may be
    /// missed.
    fn next_valid(&self, index: usize, text: &str, from: usize) -> Option<Hit> {
        let validate = self.detectors.get(index)?.validate;
        let mut at = from;
        while at <= text.len() {
            let window_end = char_floor(text, at.saturating_add(SEARCH_WINDOW_BYTES));
            let trusted_before = char_floor(text, at.saturating_add(SEARCH_WINDOW_BYTES / 2));
            let Some((start, end)) = self.set.find_within(index, text, at, window_end) else {
                if window_end >= text.len() {
                    return None;
                }
                at = trusted_before.max(next_char(text, at));
                continue;
            };
            if window_end < text.len() && start >= trusted_before && start > at {
                at = start;
                continue;
            }
            let end = self.extend(index, text, start, end, window_end);
            let verdict = match (validate, end) {
                (_, None) => Verdict::Miss(next_char(text, start)),
                (_, Some(end)) if end == start => Verdict::Miss(next_char(text, start)),
                (Some(validate), Some(end)) => validate(text, start, end),
                (None, Some(end)) => Verdict::Hit(end),
            };
            match verdict {
                Verdict::Hit(end) if end > start => {
                    return Some(Hit {
                        start,
                        end,
                        detector: index,
                    })
                }
                Verdict::Hit(_) => at = next_char(text, start),
                Verdict::Miss(resume) => at = resume.max(next_char(text, start)),
            }
        }
        None
    }

    /// A match that reaches the end of its window may go on past it (`TCK-[0-9]+` over a
    /// long run of digits): it is searched again from its start in windows twice as long
    /// until it ends inside one. A match that reaches a window's end ends no earlier in the
    /// whole text, so the work stays within four times the match's length. None when the
    /// longer window has no match at `start` (only with `regex-lite`, whose `$` and `\b`
    /// hold at a window's end: the match was an artefact of the cut).
    fn extend(
        &self,
        index: usize,
        text: &str,
        start: usize,
        mut end: usize,
        mut window_end: usize,
    ) -> Option<usize> {
        while end == window_end && window_end < text.len() {
            let span = window_end.saturating_sub(start).max(SEARCH_WINDOW_BYTES);
            window_end = char_floor(text, start.saturating_add(span.saturating_mul(2)));
            match self.set.find_within(index, text, start, window_end) {
                Some((again, longer)) if again == start => end = longer,
                _ => return None,
            }
        }
        Some(end)
    }

    pub fn has_hit(&self, text: &str) -> bool {
        let mut hits = Vec::new();
        self.scan_up_to(text, 0, &mut hits, 1);
        !hits.is_empty()
    }

    /// `text[from..to]` with each hit (all inside that range) replaced by its placeholder.
    pub fn replace(&self, text: &str, from: usize, to: usize, hits: &[Hit]) -> String {
        let mut out = String::with_capacity(to.saturating_sub(from));
        let mut at = from;
        for hit in hits {
            out.push_str(text.get(at..hit.start).unwrap_or_default());
            if let Some(detector) = self.detectors.get(hit.detector) {
                out.push_str(&detector.placeholder);
            }
            at = hit.end;
        }
        out.push_str(text.get(at..to).unwrap_or_default());
        out
    }

    /// Masks every hit in place; true when something was masked.
    pub fn mask(&self, text: &mut String) -> bool {
        let mut hits = Vec::new();
        self.scan(text, 0, &mut hits);
        if hits.is_empty() {
            return false;
        }
        *text = self.replace(text, 0, text.len(), &hits);
        true
    }
}

/// `credit_card` → `<CREDIT_CARD>`.
fn placeholder(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("<{upper}>")
}

#[derive(Debug)]
pub struct RegexGuard {
    pub info: GuardInfo,
    pub scanner: Scanner,
    pub action: RegexAction,
}

impl RegexGuard {
    /// Applies the guard to every text `visit_all` walks: masks, or rejects on the first hit.
    fn apply(
        &self,
        body: &mut Value,
        host: &mut dyn crate::host::Host,
        visit_all: &dyn Fn(&mut Value, &mut text::Visitor<'_>) -> bool,
    ) -> Step {
        match self.action {
            RegexAction::Reject => {
                let mut found = false;
                visit_all(body, &mut |text: &mut String| {
                    found = found || self.scanner.has_hit(text);
                    false
                });
                if found {
                    Step::Reject(self.info.block(host))
                } else {
                    Step::Next
                }
            }
            RegexAction::Mask => {
                if visit_all(body, &mut |text: &mut String| self.scanner.mask(text)) {
                    self.info.masked(host);
                }
                Step::Next
            }
        }
    }
}

impl TextStage for RegexGuard {
    /// The guard on texts read in place (`pipeline::in_place`): the verdict, masks and
    /// metrics of `apply` on the same texts.
    fn apply_in_place(&self, texts: &mut [Text<'_>], host: &mut dyn crate::host::Host) -> Step {
        match self.action {
            RegexAction::Reject => {
                if texts.iter().any(|text| self.scanner.has_hit(&text.text)) {
                    Step::Reject(self.info.block(host))
                } else {
                    Step::Next
                }
            }
            RegexAction::Mask => {
                let mut masked = false;
                let mut hits = Vec::new();
                for text in texts.iter_mut() {
                    hits.clear();
                    self.scanner.scan(&text.text, 0, &mut hits);
                    if !hits.is_empty() {
                        let replaced = self.scanner.replace(&text.text, 0, text.text.len(), &hits);
                        text.text = std::borrow::Cow::Owned(replaced);
                        text.changed = true;
                        masked = true;
                    }
                }
                if masked {
                    self.info.masked(host);
                }
                Step::Next
            }
        }
    }
}

/// The guard on the request's texts.
#[derive(Debug)]
pub struct RegexRequestStage(pub Rc<RegexGuard>);

impl RequestStage for RegexRequestStage {
    fn start(&self, ctx: &mut RequestCtx<'_>) -> Step {
        let api = client_api::of_or_chat(ctx.exchange.client_operation);
        self.0.apply(ctx.body, ctx.host, &|body, visit| {
            api.visit_request_texts(body, visit)
        })
    }

    fn text_stage(&self) -> Option<&dyn TextStage> {
        Some(&*self.0)
    }
}

/// The guard on a whole answer (JSON, or one the filter re-streams). Streams go through
/// `stream_mask::StreamMasker` instead.
#[derive(Debug)]
pub struct RegexResponseStage(pub Rc<RegexGuard>);

impl ResponseStage for RegexResponseStage {
    fn start(&self, ctx: &mut ResponseCtx<'_>) -> Step {
        let api = client_api::of_or_chat(ctx.exchange.client_operation);
        self.0.apply(ctx.body, ctx.host, &|body, visit| {
            api.visit_answer_texts(body, visit)
        })
    }

    fn needs_whole_answer(&self) -> bool {
        false
    }

    fn sets_status(&self) -> bool {
        self.0.action == RegexAction::Reject
    }

    fn text_stage(&self) -> Option<&dyn TextStage> {
        Some(&*self.0)
    }
}

#[cfg(test)]
#[path = "regex_guard_tests.rs"]
pub(crate) mod tests;
