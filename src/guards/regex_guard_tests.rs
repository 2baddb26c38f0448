use super::*;
use crate::config::model::NamedPatternConfig;

pub(crate) fn scanner(builtins: &[&str], patterns: &[(&str, &str)]) -> Scanner {
    let config = RegexGuardConfig {
        name: None,
        builtins: builtins.iter().map(|s| s.to_string()).collect(),
        patterns: patterns
            .iter()
            .map(|(name, pattern)| NamedPatternConfig {
                name: name.to_string(),
                pattern: pattern.to_string(),
            })
            .collect(),
        action: RegexAction::Mask,
    };
    Scanner::compile(&config, "g").unwrap()
}

fn masked(scanner: &Scanner, text: &str) -> String {
    let mut text = text.to_string();
    scanner.mask(&mut text);
    text
}

fn assert_masks(builtin: &str, hits: &[&str], misses: &[&str]) {
    let scanner = scanner(&[builtin], &[]);
    let placeholder = placeholder(builtin);
    for hit in hits {
        let text = format!("before {hit} after");
        assert_eq!(
            masked(&scanner, &text),
            format!("before {placeholder} after"),
            "{builtin} should mask {hit:?}"
        );
        // At the very start and end of a text too.
        assert_eq!(
            masked(&scanner, hit),
            placeholder,
            "{builtin} alone: {hit:?}"
        );
    }
    for miss in misses {
        let text = format!("before {miss} after");
        assert_eq!(
            masked(&scanner, &text),
            text,
            "{builtin} should not mask {miss:?}"
        );
    }
}

#[test]
fn ssn() {
    assert_masks(
        "ssn",
        &["123-45-6789", "078-05-1120", "123 45 6789"],
        &[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "1234-56-7890",
            "123-45-67890",
            "123-45 6789",
            "12-345-6789",
        ],
    );
}

#[test]
fn credit_card_needs_luhn() {
    assert_masks(
        "credit_card",
        &[
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
        ],
        &[
            "4111111111111112",
            "1234 5678 9012 3456",
            "41111111111111111111",
            "411111111111",
            "4111 1111 1111 111",
        ],
    );
}

#[test]
fn credit_card_followed_by_more_digits_keeps_the_card() {
    let scanner = scanner(&["credit_card"], &[]);
    assert_eq!(
        masked(&scanner, "card 4111 1111 1111 1111 2024 ok"),
        "card <CREDIT_CARD> 2024 ok"
    );
}

#[test]
fn email() {
    assert_masks(
        "email",
        &[
            "john.doe@example.com",
            "a+tag@sub.example.co.uk",
            "x_y%z@my-host.io",
            "jörg@müller.de",
            "иван@пример.com",
        ],
        &[
            "john@localhost",
            "@example.com",
            "john.doe@",
            "a@b.c",
            "not an email",
        ],
    );
    let scanner = scanner(&["email"], &[]);
    assert_eq!(
        masked(&scanner, "Write to <bob@example.org>."),
        "Write to <<EMAIL>>."
    );
}

#[test]
fn phone_number() {
    assert_masks(
        "phone_number",
        &[
            "555-123-4567",
            "(555) 123-4567",
            "+1 555 123 4567",
            "555.123.4567",
            "5551234567",
            "+44 20 7946 0958",
            "+49 (30) 1234 5678",
        ],
        &[
            "123-4567",
            "155-123-4567",
            "12345",
            "+1 23",
            "5551234567890123",
        ],
    );
}

#[test]
fn ipv4() {
    assert_masks(
        "ipv4",
        &["192.168.1.1", "10.0.0.255", "8.8.8.8", "255.255.255.255"],
        &[
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "192.168.1.1000",
            "01.2.3.4.5",
        ],
    );
    let scanner = scanner(&["ipv4"], &[]);
    assert_eq!(masked(&scanner, "Host 10.0.0.1."), "Host <IPV4>.");
}

#[test]
fn custom_patterns_are_named() {
    let scanner = scanner(
        &[],
        &[
            ("codename", r"(?i)project\s+falcon"),
            ("ticket-id", "TCK-[0-9]+"),
        ],
    );
    assert_eq!(
        masked(&scanner, "About Project  Falcon and TCK-42."),
        "About <CODENAME> and <TICKET_ID>."
    );
    assert_eq!(masked(&scanner, "nothing here"), "nothing here");
}

#[test]
fn several_detectors_together_and_unicode() {
    let scanner = scanner(
        &["ssn", "credit_card", "email", "phone_number", "ipv4"],
        &[("codename", "(?i)falcon")],
    );
    let text = "Grüße 🙂 — mail jörg.x@example.com, card 4111 1111 1111 1111, ssn 123-45-6789, \
                call (555) 123-4567, host 10.1.2.3, FALCON ünd 日本語.";
    assert_eq!(
        masked(&scanner, text),
        "Grüße 🙂 — mail <EMAIL>, card <CREDIT_CARD>, ssn <SSN>, call <PHONE_NUMBER>, host <IPV4>, <CODENAME> ünd 日本語."
    );
}

#[test]
fn empty_matches_are_ignored() {
    let scanner = scanner(&[], &[("maybe", "x*")]);
    assert_eq!(masked(&scanner, "a xx b"), "a <MAYBE> b");
    assert_eq!(masked(&scanner, "ünï"), "ünï");
}

#[test]
fn config_errors_name_the_path() {
    let config = |builtins: Vec<&str>, patterns: Vec<(&str, &str)>| RegexGuardConfig {
        name: None,
        builtins: builtins.into_iter().map(String::from).collect(),
        patterns: patterns
            .into_iter()
            .map(|(n, p)| NamedPatternConfig {
                name: n.into(),
                pattern: p.into(),
            })
            .collect(),
        action: RegexAction::Mask,
    };
    let err = Scanner::compile(&config(vec!["ssn", "passport"], vec![]), "g").unwrap_err();
    assert_eq!(err.path, "g.builtins[1]");
    let err = Scanner::compile(&config(vec!["ssn", "ssn"], vec![]), "g").unwrap_err();
    assert_eq!(err.path, "g.builtins[1]");
    let err =
        Scanner::compile(&config(vec![], vec![("a", "ok"), ("b", "(broken")]), "g").unwrap_err();
    assert_eq!(err.path, "g.patterns[1].pattern");
    let err = Scanner::compile(&config(vec![], vec![("bad name", "x")]), "g").unwrap_err();
    assert_eq!(err.path, "g.patterns[0].name");
    let err = Scanner::compile(&config(vec![], vec![]), "g").unwrap_err();
    assert_eq!(err.path, "g");
}

mod prefilter {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Skipping detectors whose required byte is absent finds the same hits as searching
        /// with every detector, from any start offset.
        #[test]
        fn skipping_finds_the_same_hits(
            text in "[a-z0-9@. +()-]{0,60}",
            from in 0usize..61,
        ) {
            let with = scanner(&builtins::NAMES, &[("code", "x[a-z]y")]);
            let mut without = scanner(&builtins::NAMES, &[("code", "x[a-z]y")]);
            for detector in &mut without.detectors {
                detector.needs = Needs::Anything;
            }
            let from = from.min(text.len());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            with.scan(&text, from, &mut a);
            without.scan(&text, from, &mut b);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn needs_are_checked_after_the_start() {
        let s = scanner(&["email", "ssn"], &[]);
        let mut hits = Vec::new();
        s.scan("123-45-6789 and a@b.co", 12, &mut hits);
        assert_eq!(hits.len(), 1);
        assert_eq!(s.detectors()[hits[0].detector].name, "email");
    }
}

/// Detectors take time linear in the text's length, on the inputs that made them quadratic
/// (a search from every candidate start to the end of a long run) and on their kin.
pub(crate) mod linear_time {
    use super::*;
    use std::time::{Duration, Instant};

    /// `(builtins, operator patterns, prefix, repeated unit, suffix)`.
    pub(crate) type Case = (
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
        &'static str,
    );

    pub(crate) const CASES: [Case; 17] = [
        // One long e-mail-like token (issue 12), a long domain, many addresses.
        (&["email"], &[], "", "ab.c", "@example.com"),
        (&["email"], &[], "x@", "a-b.", "com"),
        (&["email"], &[], "", "a.b@c", ".com"),
        (&["email"], &[], "", "a@b.cc ", ""),
        (&["ssn"], &[], "", "123-45-678 ", ""),
        (&["ssn"], &[], "", "1-", ""),
        (&["ssn"], &[], "", "123-45-6789 ", ""),
        (&["credit_card"], &[], "", "1 2 ", ""),
        (&["credit_card"], &[], "", "4111-", ""),
        (&["credit_card"], &[], "", "1234567890", ""),
        (&["phone_number"], &[], "", "+1 2 ", ""),
        (&["phone_number"], &[], "", "(555) ", ""),
        (&["ipv4"], &[], "", "1.", ""),
        (&["ipv4"], &[], "", "255.255.255.255.", ""),
        (&[], &[("ticket", "TCK-[0-9]+")], "TCK-", "1", ""),
        (
            &[],
            &[("codename", r"(?i)project\s+falcon")],
            "",
            "project ",
            "",
        ),
        (
            &["ssn", "credit_card", "email", "phone_number", "ipv4"],
            &[("codename", r"(?i)project\s+falcon")],
            "",
            "1.2-3 4@a.b(5)+6 ",
            "",
        ),
    ];

    pub(crate) fn text(case: &Case, bytes: usize) -> String {
        let (_, _, prefix, unit, suffix) = case;
        let mut text = String::with_capacity(bytes + suffix.len() + unit.len());
        text.push_str(prefix);
        while text.len() + suffix.len() < bytes {
            text.push_str(unit);
        }
        text.push_str(suffix);
        text
    }

    /// The best of five runs (the least disturbed by other work on the machine).
    pub(crate) fn best_of_five(mut run: impl FnMut()) -> Duration {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    /// One run over 1 MiB takes about as long as 16 runs over 64 KiB: the same amount of
    /// text, timed at the same scale, so a loaded machine slows both alike. Quadratic work
    /// would take 16 times as long (and the old code took 33 s for 64 KiB of one case); the
    /// bound leaves room for a loaded machine and cache effects.
    pub(crate) fn assert_linear(what: &str, mut run: impl FnMut(usize)) {
        let first = Instant::now();
        run(64 * 1024);
        let first = first.elapsed();
        assert!(
            first < Duration::from_secs(5),
            "{what}: 64 KiB took {first:?}"
        );
        let small = best_of_five(|| (0..16).for_each(|_| run(64 * 1024)));
        let large = best_of_five(|| run(1024 * 1024));
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        eprintln!("{what}: 16 x 64 KiB {small:?}, 1 MiB {large:?}, ratio {ratio:.2}");
        assert!(
            ratio < 8.0,
            "{what}: 16 x 64 KiB took {small:?}, 1 MiB {large:?} ({ratio:.1}x)"
        );
    }

    #[test]
    fn scan_and_mask_are_linear() {
        for case in &CASES {
            let scanner = scanner(case.0, case.1);
            let what = format!("{:?} {:?} on {:?}", case.0, case.1, case.3);
            assert_linear(&format!("scan {what}"), |bytes| {
                let text = text(case, bytes);
                let mut hits = Vec::new();
                scanner.scan(&text, 0, &mut hits);
                assert_eq!(scanner.has_hit(&text), !hits.is_empty());
            });
            assert_linear(&format!("mask {what}"), |bytes| {
                let mut text = text(case, bytes);
                scanner.mask(&mut text);
            });
        }
    }

    #[test]
    fn the_long_token_of_issue_12_still_masks_an_address_at_its_end() {
        let scanner = scanner(&["email"], &[]);
        let original = text(&CASES[0], 24 * 1024);
        let mut text = original.clone();
        scanner.mask(&mut text);
        assert!(text.ends_with("<EMAIL>"), "{}", &text[text.len() - 40..]);
        assert!(!text.contains("@example.com"));
        // The address kept is as long as an address can be: 254 characters.
        let kept = text.len() - "<EMAIL>".len();
        assert_eq!(kept, original.len() - 254);
    }

    #[test]
    fn long_matches_of_operator_patterns_are_cut_at_windows() {
        // Matches up to half a window are found whole, wherever they start.
        let scanner = scanner(&[], &[("ticket", "TCK-[0-9]+")]);
        for at in [0, 100, SEARCH_WINDOW_BYTES / 2 - 3, SEARCH_WINDOW_BYTES - 5] {
            let ticket = format!("TCK-{}", "7".repeat(3000));
            let text = format!("{}{ticket} tail", "x".repeat(at));
            let mut masked = text.clone();
            scanner.mask(&mut masked);
            assert_eq!(
                masked,
                format!("{}<TICKET> tail", "x".repeat(at)),
                "at {at}"
            );
        }
        // A match over a window long is masked in pieces: nothing of it is left.
        let text = format!("TCK-{}", "7".repeat(3 * SEARCH_WINDOW_BYTES));
        let mut masked = text.clone();
        scanner.mask(&mut masked);
        assert_eq!(masked, "<TICKET>");
    }
}
