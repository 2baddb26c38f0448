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
