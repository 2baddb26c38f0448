//! Byte searches for the per-event work of streams, eight bytes at a time. Inside the Wasm
//! VM there is no SIMD, and `str::contains` sets up a Two-Way searcher on every call: on a
//! 200-event stream these scans were most of the filter's time.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Nonzero iff some byte of `word` is zero.
fn zero_byte(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The eight bytes at `index` as one word (a single unaligned load in Wasm; `copy_from_slice`
/// into an array compiles to a call per word at `opt-level = "s"`).
pub(crate) fn word_at(bytes: &[u8], index: usize) -> Option<u64> {
    let eight: [u8; 8] = bytes.get(index..index + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(eight))
}

/// Index of the first `\n` or `\r`.
pub fn line_end(bytes: &[u8]) -> Option<usize> {
    let mut index = 0;
    while let Some(word) = word_at(bytes, index) {
        if zero_byte(word ^ (ONES * u64::from(b'\n'))) | zero_byte(word ^ (ONES * u64::from(b'\r')))
            != 0
        {
            break;
        }
        index += 8;
    }
    bytes
        .get(index..)?
        .iter()
        .position(|b| *b == b'\n' || *b == b'\r')
        .map(|at| index + at)
}

/// Index of the first `byte`.
pub fn byte(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut index = 0;
    while let Some(word) = word_at(haystack, index) {
        if zero_byte(word ^ (ONES * u64::from(byte))) != 0 {
            break;
        }
        index += 8;
    }
    haystack
        .get(index..)?
        .iter()
        .position(|b| *b == byte)
        .map(|at| index + at)
}

/// `haystack.contains(needle)`, cheap for short haystacks: candidates are found by the
/// needle's rarest byte (a quote, the first byte of every JSON key, would stop the scan at
/// every key), then the needle is compared around them.
pub fn contains(haystack: &str, needle: &str) -> bool {
    contains_bytes(haystack.as_bytes(), needle.as_bytes())
}

/// `contains` over bytes.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((offset, &rare)) = needle.iter().enumerate().max_by_key(|(_, b)| rarity(**b)) else {
        return true;
    };
    let mut from = offset;
    while let Some(found) = haystack.get(from..).and_then(|tail| byte(tail, rare)) {
        let at = from + found - offset;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return true;
        }
        from += found + 1;
    }
    false
}

/// How rare a byte is in JSON text: punctuation and frequent letters first, unlisted last.
fn rarity(byte: u8) -> usize {
    const COMMON: &[u8] = b"\" :,{}etaoinsrhldcumfpgwybvkxjqz0123456789";
    COMMON
        .iter()
        .position(|c| *c == byte.to_ascii_lowercase())
        .unwrap_or(COMMON.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_at_every_position() {
        for length in 0..40 {
            for at in 0..length {
                for end in [b'\n', b'\r'] {
                    let mut bytes = vec![b'x'; length];
                    bytes[at] = end;
                    if at + 1 < length {
                        bytes[at + 1] = b'\n';
                    }
                    assert_eq!(line_end(&bytes), Some(at), "{length} {at}");
                }
            }
            assert_eq!(line_end(&vec![b'y'; length]), None);
        }
        assert_eq!(line_end("é\u{2028}😀\n".as_bytes()), Some(9));
    }

    #[test]
    fn contains_agrees_with_str_contains() {
        let haystacks = [
            "",
            "\"",
            "{\"usage\":{\"prompt_tokens\":1}}",
            "{\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}",
            "\"usag\"usage\" \"usage\"",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"usage\"",
            "日本語 \"usage\" 😀",
            "\"usage",
            "gg\"usage\" g",
            "ggg\"usag",
        ];
        for haystack in haystacks {
            for needle in ["\"usage\"", "\"delta\"", "\"", "", "😀", "x\"u"] {
                assert_eq!(
                    contains(haystack, needle),
                    haystack.contains(needle),
                    "{haystack:?} {needle:?}"
                );
            }
        }
        for length in 0..30 {
            let mut text = "a".repeat(length);
            assert!(!contains(&text, "\"usage\""));
            text.push_str("\"usage\"");
            assert!(contains(&text, "\"usage\""));
        }
    }
}
