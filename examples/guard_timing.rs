//! Native timing of the regex guard: 5 builtins + 1 operator pattern over 1 KB and 32 KB
//! prompts, with and without PII, for whichever engine the build selected.
//!
//!   cargo run --release --example guard_timing
//!   cargo run --release --example guard_timing --no-default-features --features regex-lite
//!
//! Native numbers only rank the engines; the cost inside Envoy (V8) is what `make bench` measures.
#![allow(clippy::expect_used)]

use std::time::Instant;

use aigate_core::config::model::{NamedPatternConfig, RegexAction, RegexGuardConfig};
use aigate_core::guards::engine::ENGINE;
use aigate_core::guards::regex_guard::Scanner;

const WORDS: [&str; 24] = [
    "the",
    "gateway",
    "routes",
    "each",
    "request",
    "to",
    "a",
    "model",
    "and",
    "checks",
    "its",
    "answer",
    "for",
    "personal",
    "data",
    "before",
    "returning",
    "it",
    "quickly",
    "with",
    "budgets",
    "per",
    "user",
    "tokens",
];

/// Deterministic English-like prose of about `bytes` bytes.
fn prose(bytes: usize, with_pii: bool) -> String {
    let mut out = String::with_capacity(bytes + 64);
    let mut seed: u32 = 7;
    let mut n = 0;
    while out.len() < bytes {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let word = WORDS[(seed >> 16) as usize % WORDS.len()];
        out.push_str(word);
        n += 1;
        if n % 11 == 0 {
            out.push_str(". ");
        } else {
            out.push(' ');
        }
        if with_pii && n % 150 == 75 {
            out.push_str("reach jane.doe@example.com or 555-123-4567, card 4111 1111 1111 1111. ");
        }
    }
    out.truncate(bytes);
    out
}

fn time_us(iterations: u32, mut run: impl FnMut()) -> f64 {
    run();
    let mut samples = Vec::with_capacity(7);
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..iterations {
            run();
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let config = RegexGuardConfig {
        name: None,
        builtins: ["ssn", "credit_card", "email", "phone_number", "ipv4"]
            .map(String::from)
            .to_vec(),
        patterns: vec![NamedPatternConfig {
            name: "codename".into(),
            pattern: r"(?i)project\s+falcon".into(),
        }],
        action: RegexAction::Mask,
    };
    let start = Instant::now();
    let scanner = Scanner::compile(&config, "bench").expect("the guard compiles");
    println!(
        "engine: {ENGINE}; compile: {:.0} us",
        start.elapsed().as_secs_f64() * 1e6
    );
    for size in [1024, 32 * 1024] {
        for with_pii in [false, true] {
            let text = prose(size, with_pii);
            let iterations = if size > 4096 { 200 } else { 5000 };
            let mask = time_us(iterations, || {
                let mut copy = text.clone();
                std::hint::black_box(scanner.mask(&mut copy));
            });
            let check = time_us(iterations, || {
                std::hint::black_box(scanner.has_hit(&text));
            });
            println!(
                "{:>6} B {:<8} mask {:>9.1} us   reject-check {:>9.1} us",
                size,
                if with_pii { "with PII" } else { "clean" },
                mask,
                check
            );
        }
    }
}
