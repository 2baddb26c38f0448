//! Metric names. Envoy stat names carry no labels, so labels are encoded as `key.value`
//! segments (`aigate.route.chat.provider.openai.model.gpt-4o.token_type.input.<metric>`) and
//! turned back into Prometheus labels by the `stats_tags` rules in `envoy/envoy.yaml`.
//! Metric base names follow the OpenTelemetry GenAI conventions where they fit.

pub const REQUESTS: &str = "gen_ai.client.requests";
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const OPERATION_DURATION_MS: &str = "gen_ai.client.operation.duration_ms";
pub const TIME_TO_FIRST_TOKEN_MS: &str = "gen_ai.server.time_to_first_token_ms";
pub const ERRORS: &str = "errors";
pub const GUARD_OUTCOMES: &str = "guard.outcomes";
pub const TRANSFORMER_OUTCOMES: &str = "transformer.outcomes";
pub const LIMIT_OUTCOMES: &str = "limit.outcomes";

/// The `model` label of a route with neither `model` nor `models`, once this worker has seen
/// `MAX_SEEN_MODELS` other names on the route: client-invented names must not create stats
/// without bound (Envoy never frees a stat).
pub const OTHER_MODEL: &str = "other";
/// Distinct model names a route without `model`/`models` labels by name, per worker.
pub const MAX_SEEN_MODELS: usize = 16;

thread_local! {
    /// Route name -> model names labelled so far on this worker (Wasm: one thread per VM).
    static SEEN_MODELS: std::cell::RefCell<std::collections::HashMap<String, Vec<String>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The `model` label value for an answer of `route` from `model` (the upstream model). On a
/// route with `model` or `models` every name is configured, so it is used as is. Otherwise the
/// first `MAX_SEEN_MODELS` distinct names this worker sees get their own label, later ones
/// `other`.
pub fn model_label(route: &crate::config::Route, model: &str) -> String {
    if route.provider.model.is_some() || route.provider.models.is_some() {
        return model.to_string();
    }
    SEEN_MODELS.with(|seen| {
        let mut seen = seen.borrow_mut();
        let names = seen.entry(route.name.clone()).or_default();
        if names.iter().any(|name| name == model) {
            return model.to_string();
        }
        if names.len() < MAX_SEEN_MODELS {
            names.push(model.to_string());
            return model.to_string();
        }
        OTHER_MODEL.to_string()
    })
}

/// Builds `aigate.<k1>.<v1>...<base>`; values are sanitised so that they cannot add segments.
pub fn name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("aigate.");
    for (key, value) in labels {
        out.push_str(key);
        out.push('.');
        push_sanitised(&mut out, value);
        out.push('.');
    }
    out.push_str(base);
    out
}

/// Keeps `[A-Za-z0-9_-]`, replaces everything else (dots, colons, slashes) with `_`.
fn push_sanitised(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("none");
        return;
    }
    let clean = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if value.len() <= 96 && value.bytes().all(clean) {
        out.push_str(value); // the usual case, without a push per character
        return;
    }
    for c in value.chars().take(96) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_labels_safely() {
        assert_eq!(
            name(
                TOKEN_USAGE,
                &[
                    ("route", "chat"),
                    ("model", "gpt-4.1:mini/x"),
                    ("token_type", "input")
                ]
            ),
            "aigate.route.chat.model.gpt-4_1_mini_x.token_type.input.gen_ai.client.token.usage"
        );
        assert_eq!(
            name(REQUESTS, &[("model", "")]),
            "aigate.model.none.gen_ai.client.requests"
        );
    }
}
