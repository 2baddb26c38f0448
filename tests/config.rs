//! Invalid plugin configs are refused with the JSON path of the fault, as Envoy logs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigate_core::plan::parse_and_compile;
use serde_json::json;

fn error_of(config: serde_json::Value) -> String {
    let env = |_: &str| None;
    parse_and_compile(config.to_string().as_bytes(), &env)
        .unwrap_err()
        .to_string()
}

fn route(provider: serde_json::Value) -> serde_json::Value {
    json!({"name": "r", "provider": provider})
}

#[test]
fn faults_name_their_json_path() {
    let ok_provider = json!({"kind": "openai", "auth": {"none": true}});
    let cases = [
        (json!({}), "missing field `routes`"),
        (
            json!({"routes": [], "extra": 1}),
            "extra: unknown field `extra`",
        ),
        (
            json!({"routes": [{"name": "r", "provider": ok_provider, "bogus": true}]}),
            "routes[0].bogus: unknown field `bogus`",
        ),
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": {"none": true}, "modle": "x"}))]}),
            "routes[0].provider.modle: unknown field `modle`",
        ),
        (
            json!({"routes": [route(json!({"kind": "llama", "auth": {"none": true}}))]}),
            "routes[0].provider.kind: unknown variant `llama`",
        ),
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": {"key": {"env": "NOPE"}}}))]}),
            "routes[0].provider.auth.key.env: environment variable \"NOPE\" is not set",
        ),
        (
            json!({"routes": [route(ok_provider.clone()), route(ok_provider.clone())]}),
            "routes[1].name: duplicate route name",
        ),
        (
            json!({"routes": [{"name": "r", "provider": ok_provider, "match": {"hosts": ["a*b"]}}]}),
            "routes[0].match.hosts[0]",
        ),
        (
            json!({"routes": [{"name": "r", "provider": ok_provider, "request": {"max_body_bytes": "big"}}]}),
            "routes[0].request.max_body_bytes: invalid type",
        ),
    ];
    for (config, expected) in cases {
        let error = error_of(config.clone());
        assert!(
            error.starts_with(expected) || error.contains(expected),
            "{config}\n  got: {error}\n  want: {expected}"
        );
    }
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let config = json!({"routes": [route(json!({"kind": "openai", "auth": {"key": {"value": "sk-very-secret"}}, "path": "nope"}))]});
    let error = error_of(config.clone());
    assert!(!error.contains("sk-very-secret"), "{error}");
    let ok = json!({"routes": [route(json!({"kind": "openai", "auth": {"key": {"value": "sk-very-secret"}}}))]});
    let env = |_: &str| None;
    let plan = parse_and_compile(ok.to_string().as_bytes(), &env).unwrap();
    assert!(!format!("{plan:?}").contains("sk-very-secret"));
}

#[test]
fn not_json_is_refused() {
    let env = |_: &str| None;
    assert!(parse_and_compile(b"routes: []", &env).is_err());
    assert!(parse_and_compile(b"", &env).is_err());
}

#[test]
fn trailing_bytes_after_the_document_are_refused() {
    let env = |_: &str| None;
    let ok =
        r#"{"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"none": true}}}]}"#;
    // Whitespace after the document is fine (files end in a newline).
    assert!(parse_and_compile(format!(" {ok}\n\t \r\n").as_bytes(), &env).is_ok());
    for tail in [
        " xyz",
        "\n{\"routes\": []}",
        "}",
        "]",
        " 1",
        " null",
        ",",
        "\n\u{0}",
    ] {
        let text = format!("{ok}{tail}");
        let error = parse_and_compile(text.as_bytes(), &env)
            .expect_err(&format!("accepted {text:?}"))
            .to_string();
        assert!(
            error.contains("trailing characters after the config's JSON document"),
            "{text:?}: {error}"
        );
    }
}

/// Every complete plugin config shown in the README is one the filter accepts.
#[test]
fn readme_configs_are_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let placeholder = |_: &str| Some("placeholder".to_string());
    let mut checked = 0;
    for block in readme.split("```json\n").skip(1) {
        let json = block.split("```").next().unwrap();
        if json.trim_start().starts_with("{\"routes\"") {
            parse_and_compile(json.as_bytes(), &placeholder)
                .unwrap_or_else(|e| panic!("README config: {e}\n{json}"));
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "the README shows at least one complete config"
    );
}

/// Issue 12 item 10: a credential written where an object belongs (or as a key the auth
/// object does not define) must not come back inside the error, which Envoy logs.
#[test]
fn faults_under_auth_never_print_the_value() {
    const KEY: &str = "sk-proj-config-slip-0123456789";
    let cases = [
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": {"key": KEY}}))]}),
            "routes[0].provider.auth.key: invalid type: string \"<redacted>\", expected struct SecretConfig",
        ),
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": KEY}))]}),
            "routes[0].provider.auth: invalid type: string \"<redacted>\"",
        ),
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": {"key": {"value": [KEY]}}}))]}),
            "routes[0].provider.auth.key.value: invalid type: sequence",
        ),
        (
            json!({"routes": [route(json!({"kind": "openai", "auth": {KEY: true}}))]}),
            "unknown field `<redacted>`, expected one of `key`, `passthrough`, `none`",
        ),
        (
            json!({"routes": [{"name": "r", "provider": {"kind": "openai", "auth": {"none": true}},
                "guards": {"request": [{"webhook": {"endpoint": {"cluster": "c", "auth": {"key": KEY}}}}]}}]}),
            "auth.key: invalid type: string \"<redacted>\"",
        ),
    ];
    for (config, expected) in cases {
        let error = error_of(config);
        assert!(!error.contains(KEY), "{error}");
        assert!(!error.contains("sk-proj"), "{error}");
        assert!(error.contains(expected), "{error} lacks {expected}");
    }
    // Outside `auth` values still help the operator.
    let error =
        error_of(json!({"routes": [route(json!({"kind": "llama", "auth": {"none": true}}))]}));
    assert!(error.contains("unknown variant `llama`"), "{error}");
}
