#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const KEY: &str = "sk-proj-AbCdEf0123456789xyz";

fn secrets() -> Secrets {
    Secrets::new([KEY.to_string(), "gk-webhook-secret".to_string()])
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

fn chunked(secrets: &Secrets, chunks: &[&[u8]]) -> Vec<u8> {
    let mut redactor = secrets.redactor();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(redactor.push(secrets, chunk, i + 1 == chunks.len()));
    }
    out
}

#[test]
fn echoed_key_is_redacted_in_place() {
    let body = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: Bearer {KEY}.","type":"invalid_request_error"}}}}"#
    );
    let out = String::from_utf8(secrets().redact(body.as_bytes()).unwrap()).unwrap();
    assert!(!out.contains(KEY));
    assert_eq!(
        out.len(),
        body.len(),
        "same length: content-length stays right"
    );
    assert!(
        out.contains(&format!("Bearer {}", stars(KEY.len()))),
        "{out}"
    );
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    // Plain text too, and nothing else changes.
    let text = format!("forbidden: {KEY}\n");
    assert_eq!(
        secrets().redact_str(&text),
        format!("forbidden: {}\n", stars(KEY.len()))
    );
    assert!(secrets().redact(b"no secret here, sk-proj-AbC").is_none());
}

#[test]
fn json_escaped_forms_are_redacted() {
    // `s` as \u0073, `-` as \u002D, `/`-style escapes: what JSON decodes to the key.
    let escaped = KEY
        .replacen('s', "\\u0073", 1)
        .replace('-', "\\u002D")
        .replacen('x', "\\u0078", 1);
    let body = format!(r#"{{"message":"key {escaped} bad"}}"#);
    let out = String::from_utf8(secrets().redact(body.as_bytes()).unwrap()).unwrap();
    let decoded: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!decoded["message"].as_str().unwrap().contains(KEY), "{out}");
    assert_eq!(
        decoded["message"],
        format!("key {} bad", stars(escaped.len()))
    );
    // A secret holding characters JSON escapes: `"` `\` `/`.
    let odd = r#"k3y/with"quote\and"#;
    let odd_secrets = Secrets::new([odd.to_string()]);
    let encoded = serde_json::to_string(&serde_json::json!({ "m": odd })).unwrap();
    let out = odd_secrets.redact(encoded.as_bytes()).unwrap();
    let decoded: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(!decoded["m"].as_str().unwrap().contains(odd));
    let slash_escaped = r#"{"m":"k3y\/with\"quote\\and"}"#;
    assert!(odd_secrets.redact(slash_escaped.as_bytes()).is_some());
}

#[test]
fn a_secret_split_across_chunks_is_redacted_at_every_split() {
    let body = format!(
        "data: {{\"text\":\"echo Bearer {KEY} and \\u0073k-proj-AbCdEf0123456789xyz\"}}\n\n"
    );
    let whole = secrets().redact(body.as_bytes()).unwrap();
    let bytes = body.as_bytes();
    for i in 0..=bytes.len() {
        let out = chunked(&secrets(), &[&bytes[..i], &bytes[i..]]);
        assert_eq!(out, whole, "split at {i}");
        for j in i..=bytes.len() {
            let out = chunked(&secrets(), &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
            assert_eq!(out, whole, "split at {i}, {j}");
        }
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(chunked(&secrets(), &singles), whole);
}

#[test]
fn only_a_possible_beginning_is_held_back() {
    let secrets = secrets();
    let mut redactor = secrets.redactor();
    assert_eq!(
        redactor.push(&secrets, b"hello world", false),
        b"hello world"
    );
    // "sk-pr" could begin the key: held until the next chunk says otherwise.
    assert_eq!(redactor.push(&secrets, b"token sk-pr", false), b"token ");
    assert_eq!(redactor.push(&secrets, b"ose", false), b"sk-prose");
    // An escape cut in half is held too.
    assert_eq!(redactor.push(&secrets, b"a \\u00", false), b"a ");
    assert_eq!(redactor.push(&secrets, b"41!", false), b"\\u0041!");
    assert_eq!(redactor.push(&secrets, b"sk-", true), b"sk-");
    assert!(!redactor.changed());
}

#[test]
fn overlapping_and_repeated_secrets() {
    let secrets = Secrets::new(["abcabcab".to_string()]);
    let out = secrets.redact_str("xabcabcabcabx");
    // Both overlapping occurrences (at 1 and 4) are hidden.
    assert_eq!(out, "x***********x");
    let out = chunked(&secrets, &[b"abcab", b"cabcab", b"x"]);
    assert_eq!(out, b"***********x");
}

#[test]
fn short_secrets_are_not_patterns() {
    let secrets = Secrets::new(["abc".to_string(), String::new()]);
    assert!(secrets.is_empty());
    assert_eq!(secrets.too_short(), 1);
    assert_eq!(secrets.redact_str("abc abc"), "abc abc");
}

#[test]
fn from_config_finds_every_auth_key() {
    let config = serde_json::json!({"routes":[{"provider":{"auth":{"key":{"env":"K"}}},
        "guards":{"request":[{"webhook":{"endpoint":{"cluster":"c","auth":{"key":{"value":"hook-secret-1"}}}}}]}}]});
    let env = |name: &str| (name == "K").then(|| KEY.to_string());
    let secrets = Secrets::from_config(&config, &env);
    assert_eq!(
        secrets.redact_str(&format!("{KEY} hook-secret-1")),
        format!("{} {}", stars(KEY.len()), stars(13))
    );
}

/// Linear time: 1 MiB of near-misses (every byte extends a partial match) within a budget.
#[test]
fn adversarial_input_is_linear() {
    let secrets = Secrets::new([
        "aaaaaaaaaaaaaaab".to_string(),
        "\\u0061\\u0061zzzzzz".to_string(),
    ]);
    let input = "a".repeat(1 << 20);
    let started = std::time::Instant::now();
    let mut redactor = secrets.redactor();
    let mut total = 0;
    for chunk in input.as_bytes().chunks(16 * 1024) {
        total += redactor.push(&secrets, chunk, false).len();
    }
    total += redactor.push(&secrets, b"", true).len();
    assert_eq!(total, input.len());
    let escapes = "\\u0061".repeat(1 << 17);
    assert!(secrets.redact(escapes.as_bytes()).is_none());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
