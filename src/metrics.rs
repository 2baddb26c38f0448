//! Metric names and labels, after the OpenTelemetry GenAI semantic conventions.
//!
//! Envoy stat names carry no labels, so labels are appended to the base name as
//! `;key=value` segments (`gen_ai.client.token.usage;route=chat;gen_ai.provider.name=openai;
//! gen_ai.request.model=gpt-4.1;gen_ai.token.type=input`). The `stats_tags` rules of
//! `envoy/envoy.yaml` remove each segment and make it a tag: a Prometheus label (dots become
//! `_`) and an OpenTelemetry attribute (the OTLP stats sink), while the name that remains is
//! the metric's (`gen_ai.client.token.usage`). Values may hold dots (`gpt-4.1`), since `;` ends
//! them; a value never holds `;`.
//!
//! Envoy's Wasm histograms record unitless integers: durations are recorded in whole seconds
//! (rounded to the nearest), so the spec's sub-second buckets only separate 0 from the rest.
//! Counters end in `_total`, which Prometheus expects and Envoy does not add.

/// Histogram, `{token}`: tokens of one answer, by `gen_ai.token.type` (`input`, `output`),
/// with `gen_ai.response.model` when the answer names its model.
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Histogram, `s`: from the request's headers to the end of the answer (with
/// `gen_ai.response.model` when the answer names its model).
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// Histogram, `s`, streams only: from the request's headers to the first chunk of content.
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";
/// Counters of aigate's own (no GenAI convention covers them).
pub const REQUESTS: &str = "aigate.requests_total";
/// Counter, exact: the tokens `TOKEN_USAGE` records, with its labels but the response model
/// (budgets and bills go by the model asked for). Envoy keeps a
/// histogram's sum only approximately (log-linear buckets), budgets and bills need exact sums.
pub const TOKENS: &str = "aigate.tokens_total";
pub const ERRORS: &str = "aigate.errors_total";
/// Counter: each attempt of a route with fallbacks, by provider, `outcome` (`ok`,
/// `failed_over`, `failed`), `code` (the answer's status, 0 for none) and `error.type` (the
/// failure condition: `connect-failure`, `reset`, `timeout`, `429`, `5xx`).
pub const ATTEMPTS: &str = "aigate.attempts_total";
pub const GUARD_OUTCOMES: &str = "aigate.guard.outcomes_total";
pub const TRANSFORMER_OUTCOMES: &str = "aigate.transformer.outcomes_total";
pub const LIMIT_OUTCOMES: &str = "aigate.limit.outcomes_total";
/// Counter, micro-dollars: what answers cost (`pricing`), by route, provider and the
/// `gen_ai.response.model` they were priced under.
pub const COST: &str = "aigate.cost.usd_micros_total";
/// Counter: answers whose model has no price (they cost 0), same labels.
pub const UNPRICED: &str = "aigate.cost.unpriced_total";

/// Attribute names of the GenAI conventions.
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
/// The model the answer names (`model` of the answer or of its first stream event), which
/// may be more precise than the one asked for (`gpt-4o` answered by `gpt-4o-2024-08-06`).
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const TOKEN_TYPE: &str = "gen_ai.token.type";
pub const ERROR_TYPE: &str = "error.type";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";

/// `gen_ai.operation.name` of a client operation.
pub fn operation_name(operation: crate::api::Operation) -> &'static str {
    use crate::api::Operation;
    match operation {
        Operation::ChatCompletions => "chat",
        Operation::Completions => "text_completion",
        Operation::Embeddings => "embeddings",
        // OpenTelemetry's GenAI conventions: a Responses call is a chat.
        Operation::Responses | Operation::ResponsesCompact => "chat",
        Operation::ListModels => "list_models",
        // OTel names a Messages exchange `chat`; token counting is its own operation.
        Operation::Messages => "chat",
        Operation::CountTokens => "count_tokens",
    }
}

/// Milliseconds to the whole seconds a Wasm histogram can hold, rounded to the nearest.
pub fn seconds(ms: u64) -> u64 {
    ms.saturating_add(500) / 1000
}

/// The `model` label of a route with neither `model` nor `models`, once this worker has seen
/// `MAX_SEEN_MODELS` other names on the route: client-invented names must not create stats
/// without bound (Envoy never frees a stat).
pub const OTHER_MODEL: &str = "other";
/// Distinct model names a route without `model`/`models` labels by name, per worker.
pub const MAX_SEEN_MODELS: usize = 16;

/// Route name -> model names labelled so far on this worker (Wasm: one thread per VM).
type SeenModels = std::cell::RefCell<std::collections::HashMap<String, Vec<String>>>;

thread_local! {
    /// The models clients asked for (`gen_ai.request.model`).
    static SEEN_MODELS: SeenModels = std::cell::RefCell::new(std::collections::HashMap::new());
    /// The models answers named (`gen_ai.response.model`).
    static SEEN_RESPONSE_MODELS: SeenModels =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The `model` label value for an answer of the route named `route` from `model`. On a route
/// with `model` or `models` (`configured`) every name is the operator's, so it is used as is.
/// Otherwise the first `MAX_SEEN_MODELS` distinct names this worker sees on the route get
/// their own label, later ones `other`.
pub fn model_label(route: &str, configured: bool, model: &str) -> String {
    if configured {
        return model.to_string();
    }
    bounded(&SEEN_MODELS, route, model)
}

/// `model` if it is one of the first `MAX_SEEN_MODELS` names `seen` holds for `route` (or
/// becomes one), else `other`.
fn bounded(seen: &'static std::thread::LocalKey<SeenModels>, route: &str, model: &str) -> String {
    seen.with(|seen| {
        let mut seen = seen.borrow_mut();
        // The route's entry exists after its first answer: one lookup, no key allocated.
        if let Some(names) = seen.get_mut(route) {
            return pick(names, model);
        }
        pick(seen.entry(route.to_string()).or_default(), model)
    })
}

fn pick(names: &mut Vec<String>, model: &str) -> String {
    if names.iter().any(|name| name == model) {
        return model.to_string();
    }
    if names.len() < MAX_SEEN_MODELS {
        names.push(model.to_string());
        return model.to_string();
    }
    OTHER_MODEL.to_string()
}

/// The `gen_ai.response.model` label value for an answer of the route named `route`: the
/// upstream chooses it, so like a client-chosen name it is bounded per route and worker
/// (`MAX_SEEN_MODELS` names, then `other`).
pub fn response_model_label(route: &str, model: &str) -> String {
    bounded(&SEEN_RESPONSE_MODELS, route, model)
}

/// Builds `<base>;<k1>=<v1>;...`. A label with an empty value is left out; values keep
/// `[A-Za-z0-9._:/@+-]`, any other character becomes `_`, and they are cut at 96 characters.
pub fn name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(base.len() + 24 * labels.len());
    out.push_str(base);
    for (key, value) in labels {
        if value.is_empty() {
            continue;
        }
        out.push(';');
        out.push_str(key);
        out.push('=');
        push_sanitised(&mut out, value);
    }
    out
}

fn push_sanitised(out: &mut String, value: &str) {
    let clean =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@' | '+');
    if value.len() <= 96 && value.chars().all(clean) {
        out.push_str(value); // the usual case, without a push per character
        return;
    }
    for c in value.chars().take(96) {
        out.push(if clean(c) { c } else { '_' });
    }
}

/// True when `name` (built by `name`) has this base and all of these labels.
pub fn matches(name: &str, base: &str, labels: &[(&str, &str)]) -> bool {
    let (found, have) = split(name);
    found == base && labels.iter().all(|label| have.contains(label))
}

/// Splits a name built by `name` into its base and labels.
pub fn split(name: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let labels = parts
        .map(|part| part.split_once('=').unwrap_or((part, "")))
        .collect();
    (base, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_labels_keeping_dots() {
        let name = name(
            TOKEN_USAGE,
            &[
                ("route", "chat"),
                (REQUEST_MODEL, "gpt-4.1:mini/x;y=z"),
                (TOKEN_TYPE, "input"),
                (ERROR_TYPE, ""),
            ],
        );
        assert_eq!(
            name,
            "gen_ai.client.token.usage;route=chat;gen_ai.request.model=gpt-4.1:mini/x_y_z;gen_ai.token.type=input"
        );
        let (base, labels) = split(&name);
        assert_eq!(base, TOKEN_USAGE);
        assert_eq!(labels[1], (REQUEST_MODEL, "gpt-4.1:mini/x_y_z"));
    }

    #[test]
    fn seconds_round_to_the_nearest() {
        assert_eq!(seconds(0), 0);
        assert_eq!(seconds(499), 0);
        assert_eq!(seconds(500), 1);
        assert_eq!(seconds(2_600), 3);
    }
}
