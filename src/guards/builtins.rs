//! Built-in PII detectors: a pattern that finds candidates, a validator that checks what a
//! regex cannot (Luhn, number ranges, the characters around a hit), and the reach a hit can
//! have, which tells the stream masker how much text it must hold back.
//!
//! The patterns use no `\b`, `\d` or other classes whose meaning differs between engines;
//! the validators look at the neighbouring characters instead.

/// How far a match can reach; the stream masker holds back text accordingly.
#[derive(Debug, Clone, Copy)]
pub enum Reach {
    /// A match only contains characters for which `alphabet` holds and is at most `max_chars`
    /// long; its validator looks at most one character past its end, or two when the first
    /// is in the alphabet.
    Run {
        alphabet: fn(char) -> bool,
        max_chars: usize,
    },
    /// Unknown (operator patterns): assume a match does not cross a sentence end.
    Sentence,
}

/// What a validator says about a candidate `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A hit, ending at this byte offset (at most the candidate's end).
    Hit(usize),
    /// No hit; search again from this byte offset (after the candidate's start).
    Miss(usize),
}

pub type Validator = fn(&str, usize, usize) -> Verdict;

/// A byte every hit of a detector contains: text without one cannot hold a hit, and the
/// regex search is skipped (most stream events and much prose have no digit or `@`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    AsciiDigit,
    Byte(u8),
    /// Operator patterns: nothing is known.
    Anything,
}

impl Needs {
    pub fn found_in(self, text: &[u8]) -> bool {
        match self {
            Needs::AsciiDigit => text.iter().any(u8::is_ascii_digit),
            Needs::Byte(byte) => crate::find::byte(text, byte).is_some(),
            Needs::Anything => true,
        }
    }
}

#[derive(Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub pattern: &'static str,
    pub reach: Reach,
    pub validate: Validator,
    pub needs: Needs,
}

pub const NAMES: [&str; 5] = ["ssn", "credit_card", "email", "phone_number", "ipv4"];

const BUILTINS: [Builtin; 5] = [
    Builtin {
        name: "ssn",
        pattern: "[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}",
        reach: Reach::Run { alphabet: is_ssn_char, max_chars: 11 },
        validate: validate_ssn,
        needs: Needs::AsciiDigit,
    },
    Builtin {
        name: "credit_card",
        pattern: "[0-9](?:[ -]?[0-9]){12,18}",
        // 19 digits and 18 separators.
        reach: Reach::Run { alphabet: is_card_char, max_chars: 37 },
        validate: validate_card,
        needs: Needs::AsciiDigit,
    },
    Builtin {
        name: "email",
        // Letters of Latin, Greek and Cyrillic scripts may appear in names ("jörg@müller.de");
        // the ranges are plain code points, so no Unicode tables are needed.
        pattern: "[A-Za-z0-9._%+\\x{C0}-\\x{24F}\\x{370}-\\x{52F}-]+@[A-Za-z0-9\\x{C0}-\\x{24F}\\x{370}-\\x{52F}-]+\
                  (?:\\.[A-Za-z0-9\\x{C0}-\\x{24F}\\x{370}-\\x{52F}-]+)*\\.[A-Za-z]{2,}",
        reach: Reach::Run { alphabet: is_email_char, max_chars: MAX_EMAIL_CHARS },
        validate: validate_email,
        needs: Needs::Byte(b'@'),
    },
    Builtin {
        name: "phone_number",
        // North American numbers, with or without +1 and an area code in parentheses; or
        // international numbers that start with + and a country code.
        pattern: "(?:(?:\\+?1[ .-]?)?(?:\\([2-9][0-9]{2}\\)|[2-9][0-9]{2})[ .-]?[0-9]{3}[ .-]?[0-9]{4})\
                  |(?:\\+[1-9][0-9]{0,3}(?:[ .-]?(?:\\([0-9]{1,4}\\)|[0-9]{1,4})){2,6})",
        // "+" and 4 digits, then 6 groups of a separator and "(1234)".
        reach: Reach::Run { alphabet: is_phone_char, max_chars: 47 },
        validate: validate_phone,
        needs: Needs::AsciiDigit,
    },
    Builtin {
        name: "ipv4",
        pattern: "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
        reach: Reach::Run { alphabet: is_ipv4_char, max_chars: 15 },
        validate: validate_ipv4,
        needs: Needs::AsciiDigit,
    },
];

/// RFC 5321 limits a path to 256 octets including the angle brackets.
const MAX_EMAIL_CHARS: usize = 254;

pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|builtin| builtin.name == name)
}

fn is_ssn_char(c: char) -> bool {
    c.is_ascii_digit() || c == '-' || c == ' '
}

fn is_card_char(c: char) -> bool {
    c.is_ascii_digit() || c == '-' || c == ' '
}

fn is_email_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '%' | '+' | '-' | '@' | '\u{C0}'..='\u{24F}' | '\u{370}'..='\u{52F}')
}

fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '.' | '-' | '(' | ')' | '+')
}

fn is_ipv4_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.'
}

fn before(text: &str, at: usize) -> Option<char> {
    text.get(..at)?.chars().next_back()
}

fn after(text: &str, at: usize) -> Option<char> {
    text.get(at..)?.chars().next()
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// The byte offset just past the character at `at`.
pub fn next_char(text: &str, at: usize) -> usize {
    at + after(text, at).map_or(1, char::len_utf8)
}

/// Where a run of `keep` characters starting at `at` ends: candidates starting inside a run
/// of digits that began before them are all refused, so the search skips the run.
fn run_end(text: &str, at: usize, keep: fn(char) -> bool) -> usize {
    let rest = text.get(at..).unwrap_or_default();
    let skipped = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
    (at + skipped).max(next_char(text, at))
}

fn ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn validate_ssn(text: &str, start: usize, end: usize) -> Verdict {
    if is_digit(before(text, start)) {
        return Verdict::Miss(run_end(text, start, ascii_digit));
    }
    let bytes = text.as_bytes();
    let same_separators = bytes.get(start + 3) == bytes.get(start + 6);
    let number = |from: usize, to: usize| {
        text.get(start + from..start + to)
            .and_then(|s| s.parse::<u32>().ok())
    };
    let (Some(area), Some(group), Some(serial)) = (number(0, 3), number(4, 6), number(7, 11))
    else {
        return Verdict::Miss(next_char(text, start));
    };
    // Numbers never issued: area 000, 666 or 9xx, group 00, serial 0000.
    let issued = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    if same_separators && issued && !is_digit(after(text, end)) {
        Verdict::Hit(end)
    } else {
        Verdict::Miss(next_char(text, start))
    }
}

/// The Luhn checksum over digits given most significant first.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A candidate may run on into digits that are not part of the card ("4111 1111 1111 1111
/// 2024"): try the longest prefix of 13 to 19 digits that ends a digit group and passes Luhn.
/// Digits are kept on the stack: a text of digit groups has a candidate every few bytes.
fn validate_card(text: &str, start: usize, end: usize) -> Verdict {
    if is_digit(before(text, start)) {
        return Verdict::Miss(run_end(text, start, ascii_digit));
    }
    let mut values = [0u8; 19];
    let mut ends = [0usize; 19];
    let mut count = 0;
    let candidate = text.as_bytes().get(start..end).unwrap_or_default();
    for (offset, byte) in candidate.iter().enumerate() {
        if !byte.is_ascii_digit() {
            continue;
        }
        let (Some(value), Some(digit_end)) = (values.get_mut(count), ends.get_mut(count)) else {
            break;
        };
        *value = byte - b'0';
        *digit_end = start + offset + 1;
        count += 1;
    }
    for count in (13..=count).rev() {
        let Some(&hit_end) = ends.get(count - 1) else {
            continue;
        };
        if is_digit(after(text, hit_end)) {
            continue;
        }
        if values.get(..count).is_some_and(luhn) {
            return Verdict::Hit(hit_end);
        }
    }
    Verdict::Miss(next_char(text, start))
}

/// A match longer than an address can be comes from a long run of address characters. All
/// matches through its `@` end where it ends (the domain part is greedy), so the leftmost
/// one short enough starts `MAX_EMAIL_CHARS` characters before that end; with a domain too
/// long for any, the search goes on past the `@`. Either way a long run costs two searches,
/// not one per character (which made a 24 KB token take seconds).
fn validate_email(text: &str, start: usize, end: usize) -> Verdict {
    let Some(candidate) = text.get(start..end) else {
        return Verdict::Miss(next_char(text, start));
    };
    if candidate.chars().count() <= MAX_EMAIL_CHARS {
        return Verdict::Hit(end);
    }
    let Some(at_sign) = crate::find::byte(candidate.as_bytes(), b'@').map(|at| start + at) else {
        return Verdict::Miss(next_char(text, start));
    };
    // The shortest match through this `@` has one character before it.
    let domain_chars = text.get(at_sign..end).map_or(0, |d| d.chars().count());
    if domain_chars + 1 > MAX_EMAIL_CHARS {
        return Verdict::Miss(at_sign + 1);
    }
    let from_end = text
        .get(..end)
        .unwrap_or_default()
        .char_indices()
        .rev()
        .nth(MAX_EMAIL_CHARS - 1)
        .map_or(start, |(index, _)| index);
    Verdict::Miss(from_end.max(next_char(text, start)))
}

fn validate_phone(text: &str, start: usize, end: usize) -> Verdict {
    if is_digit(before(text, start)) {
        return Verdict::Miss(run_end(text, start, ascii_digit));
    }
    if is_digit(after(text, end)) {
        return Verdict::Miss(next_char(text, start));
    }
    let count = text
        .get(start..end)
        .map_or(0, |s| s.bytes().filter(u8::is_ascii_digit).count());
    let international = text.get(start..).is_some_and(|s| s.starts_with('+'));
    let plausible = if international {
        (8..=15).contains(&count)
    } else {
        (10..=11).contains(&count)
    };
    if plausible {
        Verdict::Hit(end)
    } else {
        Verdict::Miss(next_char(text, start))
    }
}

fn validate_ipv4(text: &str, start: usize, end: usize) -> Verdict {
    let previous = before(text, start);
    if is_digit(previous) || previous == Some('.') {
        return Verdict::Miss(run_end(text, start, is_ipv4_char));
    }
    let next = after(text, end);
    // "1.2.3.4.5" is a version or an OID, not an address.
    let runs_on = is_digit(next) || (next == Some('.') && is_digit(after(text, end + 1)));
    if runs_on {
        Verdict::Miss(next_char(text, start))
    } else {
        Verdict::Hit(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_checks() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("5555555555554444")));
        assert!(luhn(&digits("378282246310005")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(!luhn(&digits("1234567812345678")));
    }

    #[test]
    fn every_name_is_defined_once() {
        for name in NAMES {
            assert_eq!(
                BUILTINS.iter().filter(|b| b.name == name).count(),
                1,
                "{name}"
            );
        }
        assert!(find("passport").is_none());
    }

    #[test]
    fn card_prefix_that_passes_luhn_is_kept() {
        let text = "4111 1111 1111 1111 2024";
        assert_eq!(validate_card(text, 0, text.len()), Verdict::Hit(19));
    }

    #[test]
    fn digits_before_refuse_and_skip_the_run() {
        let text = "94111111111111111";
        assert_eq!(
            validate_card(text, 1, text.len()),
            Verdict::Miss(text.len())
        );
    }
}
