use super::*;
use crate::config::model::ProviderConfig;
use serde_json::json;

fn env(name: &str) -> Option<String> {
    (name == "KEY").then(|| "sk-test".to_string())
}

fn provider(config: serde_json::Value, wait_for_body: bool) -> Result<Provider, ConfigError> {
    let config: ProviderConfig = serde_json::from_value(config).unwrap();
    Provider::compile(&config, "p", wait_for_body, &env)
}

#[test]
fn openai_defaults_and_bearer_key() {
    let p = provider(json!({"kind":"openai","auth":{"key":{"env":"KEY"}}}), false).unwrap();
    assert_eq!(p.authority, "api.openai.com");
    assert_eq!(
        p.upstream_path(Operation::ChatCompletions, Some("gpt-4o"), Some(true)),
        "/v1/chat/completions"
    );
    assert_eq!(
        p.upstream_path(Operation::Embeddings, None, None),
        "/v1/embeddings"
    );
    assert_eq!(
        p.credential_header(),
        Some(("authorization", "Bearer sk-test".to_string()))
    );
    assert!(
        !format!("{p:?}").contains("sk-test"),
        "Debug must not show the key"
    );
}

#[test]
fn azure_path_header_and_version() {
    let p = provider(
        json!({"kind":"azure_openai","authority":"r.openai.azure.com","auth":{"key":{"value":"az"}},
               "azure":{"deployment":"gpt4o","api_version":"2024-10-21"}}),
        false,
    )
    .unwrap();
    assert_eq!(
        p.upstream_path(Operation::ChatCompletions, Some("gpt-4o"), None),
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(p.credential_header(), Some(("api-key", "az".to_string())));
}

#[test]
fn azure_deployment_from_model_needs_body_or_fixed_model() {
    let config = json!({"kind":"azure_openai","authority":"r","auth":{"none":true}});
    let err = provider(config.clone(), false).unwrap_err();
    assert_eq!(err.path, "p");
    let p = provider(config, true).unwrap();
    assert_eq!(
        p.upstream_path(Operation::ChatCompletions, Some("dep1"), None),
        "/openai/deployments/dep1/chat/completions?api-version=2024-10-21"
    );
}

#[test]
fn config_errors_name_paths() {
    let cases = [
        (
            json!({"kind":"openai_compatible","auth":{"none":true}}),
            "p.authority",
        ),
        (json!({"kind":"openai","auth":{}}), "p.auth"),
        (
            json!({"kind":"openai","auth":{"none":true,"passthrough":true}}),
            "p.auth",
        ),
        (
            json!({"kind":"openai","auth":{"key":{"env":"MISSING"}}}),
            "p.auth.key.env",
        ),
        (json!({"kind":"openai","auth":{"key":{}}}), "p.auth.key"),
        (
            json!({"kind":"openai","auth":{"none":true},"path":"v1"}),
            "p.path",
        ),
        (
            json!({"kind":"openai","auth":{"none":true},"models":{}}),
            "p.models",
        ),
        (
            json!({"kind":"openai","auth":{"none":true},"azure":{}}),
            "p.azure",
        ),
        (
            json!({"kind":"openai","auth":{"none":true},"anthropic":{}}),
            "p.anthropic",
        ),
        (
            json!({"kind":"anthropic","auth":{"none":true},"anthropic":{"max_tokens":0}}),
            "p.anthropic.max_tokens",
        ),
        (
            json!({"kind":"anthropic","auth":{"none":true},"anthropic":{"version":" "}}),
            "p.anthropic.version",
        ),
    ];
    for (config, path) in cases {
        assert_eq!(
            provider(config.clone(), false).unwrap_err().path,
            path,
            "{config}"
        );
    }
}

#[test]
fn model_enforcement_and_mapping() {
    let fixed = provider(
        json!({"kind":"openai","auth":{"none":true},"model":"m1"}),
        false,
    )
    .unwrap();
    assert_eq!(
        fixed.resolve_model(Some("other")).unwrap().as_deref(),
        Some("m1")
    );
    assert_eq!(fixed.resolve_model(None).unwrap().as_deref(), Some("m1"));

    let mapped = provider(
        json!({"kind":"openai","auth":{"none":true},"models":{"fast":"gpt-4o-mini"}}),
        false,
    )
    .unwrap();
    assert_eq!(
        mapped.resolve_model(Some("fast")).unwrap().as_deref(),
        Some("gpt-4o-mini")
    );
    let err = mapped.resolve_model(Some("gpt-4o")).unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "model_not_found"));
    assert_eq!(mapped.resolve_model(None).unwrap_err().status, 400);

    let open = provider(json!({"kind":"openai","auth":{"none":true}}), false).unwrap();
    assert_eq!(open.resolve_model(Some("x")).unwrap().as_deref(), Some("x"));
    assert_eq!(open.resolve_model(None).unwrap_err().code, "missing_model");
}

#[test]
fn openai_codec_injects_stream_usage() {
    let p = provider(json!({"kind":"openai","auth":{"none":true}}), false).unwrap();
    let exchange = Exchange {
        model: "gpt-4o".into(),
        client_stream: true,
        upstream_stream: true,
        ..Default::default()
    };
    let body = p
        .encode_request(
            &json!({"model":"alias","stream":true,"messages":[]}),
            &exchange,
        )
        .unwrap();
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["stream_options"]["include_usage"], true);

    let rebuffered = Exchange {
        upstream_stream: false,
        ..exchange
    };
    let body = p
        .encode_request(
            &json!({"stream":true,"stream_options":{"include_usage":true},"messages":[]}),
            &rebuffered,
        )
        .unwrap();
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none());
}

#[test]
fn model_names_are_checked_before_use() {
    let by_model = provider(
        json!({"kind":"azure_openai","authority":"r","auth":{"none":true}}),
        true,
    )
    .unwrap();
    assert!(by_model.check_model_name("gpt-4o_2024-08.06").is_ok());
    for bad in ["../admin", "a/b", "x?y=1", "a b", ".hidden", "a\r\nx: y"] {
        assert_eq!(
            by_model.check_model_name(bad).unwrap_err().status,
            400,
            "{bad:?}"
        );
    }
    let plain = provider(json!({"kind":"openai","auth":{"none":true}}), false).unwrap();
    assert!(
        plain.check_model_name("org/model name").is_ok(),
        "only the body carries it"
    );
    assert!(
        plain.check_model_name("bad\nmodel").is_err(),
        "control characters never pass"
    );
}
