//! The plan: the only module that knows every stage. It turns the operator's JSON into an
//! immutable `Plan` (secrets resolved, regexes compiled, defaults applied, every fault
//! reported once with the JSON path where it sits) and holds each route's stages as ordered
//! lists: request stages, response stages and stream filter factories. The flow
//! (`pipeline::Flow`) walks the lists without knowing which stage is which; what it must know
//! about a stage (it runs in the headers phase, it needs the whole answer, it may set the
//! status, it settles a budget) the stage declares through the contract (`pipeline::stage`).

use std::rc::Rc;

use crate::config::model::{
    AuthConfig, MatchConfig, PluginConfig, PriceConfig, ProviderConfig, ProviderKind,
    RequestConfig, RouteConfig,
};
use crate::config::{ConfigError, EnvLookup};
use crate::cost::{Price, PriceTable};
use crate::guards::{EventFilterFactory, GuardPlan};
use crate::host::Host;
use crate::limits::LimitPlan;
use crate::pipeline::stage::{RequestStage, ResponseStage};
use crate::providers::Provider;
use crate::secrets::Secrets;
use crate::shaping::Shaping;
use crate::transform::TransformPlan;

#[derive(Debug, Clone, Default)]
pub struct RouteMatcher {
    pub route_name: Option<String>,
    /// Lower-cased; a leading `*.` means "any subdomain of".
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub provider: Provider,
    pub shaping: Shaping,
    /// In order: the budget check, the guards, the transformer.
    pub request_stages: Vec<Box<dyn RequestStage>>,
    /// In order: the guards, the transformer.
    pub response_stages: Vec<Box<dyn ResponseStage>>,
    /// One filter per streamed answer from each (the stream masker of regex guards).
    pub stream_filters: Vec<Box<dyn EventFilterFactory>>,
    /// Set when the route has `fallbacks`: then `provider` is the client's own form
    /// (chat completions, no credential, no translation) and each attempt is translated and
    /// credentialed by the aigate instance on the upstream side (`pipeline::attempt`).
    pub attempts: Option<Attempts>,
}

/// A condition under which an attempt failed and the next provider is tried (`retry.on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCondition {
    ConnectFailure,
    Reset,
    Timeout,
    Status429,
    Status5xx,
}

impl RetryCondition {
    pub const ALL: [RetryCondition; 5] = [
        RetryCondition::ConnectFailure,
        RetryCondition::Reset,
        RetryCondition::Timeout,
        RetryCondition::Status429,
        RetryCondition::Status5xx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryCondition::ConnectFailure => "connect-failure",
            RetryCondition::Reset => "reset",
            RetryCondition::Timeout => "timeout",
            RetryCondition::Status429 => "429",
            RetryCondition::Status5xx => "5xx",
        }
    }

    pub fn parse(name: &str) -> Option<RetryCondition> {
        RetryCondition::ALL
            .into_iter()
            .find(|condition| condition.as_str() == name)
    }

    /// The condition an answer's status is, if it is one.
    pub fn of_status(status: u16) -> Option<RetryCondition> {
        match status {
            429 => Some(RetryCondition::Status429),
            500..=599 => Some(RetryCondition::Status5xx),
            _ => None,
        }
    }
}

/// The default `retry.per_try_timeout_ms`.
pub const DEFAULT_PER_TRY_TIMEOUT_MS: u64 = 60_000;

/// The providers of a route with fallbacks, in the order they are tried (the route's own
/// provider first). Each is a plan of one stage-free route: what an attempt runs.
#[derive(Debug)]
pub struct Attempts {
    pub plans: Vec<Rc<Plan>>,
    /// `Provider.cluster` of each, in the same order.
    pub clusters: Vec<Option<String>>,
    pub retry_on: Vec<RetryCondition>,
    pub per_try_timeout_ms: u64,
}

impl Attempts {
    /// The attempt plan serving a host whose endpoint metadata names `cluster` (None: no
    /// metadata, which only the primary without a `cluster` may be served by).
    pub fn index_for(&self, cluster: Option<&str>) -> Option<usize> {
        self.clusters
            .iter()
            .position(|candidate| candidate.as_deref() == cluster)
    }

    pub fn retries_on(&self, condition: RetryCondition) -> bool {
        self.retry_on.contains(&condition)
    }
}

impl Route {
    /// The request stage at `index` of `request_stages`.
    pub fn request_stage(&self, index: usize) -> Option<&dyn RequestStage> {
        self.request_stages.get(index).map(AsRef::as_ref)
    }

    /// The response stage at `index` of `response_stages`.
    pub fn response_stage(&self, index: usize) -> Option<&dyn ResponseStage> {
        self.response_stages.get(index).map(AsRef::as_ref)
    }

    /// True when some response stage needs the whole answer, so streams are re-streamed.
    pub fn needs_whole_answer(&self) -> bool {
        self.response_stages
            .iter()
            .any(|stage| stage.needs_whole_answer())
    }
}

#[derive(Debug)]
pub struct Plan {
    pub routes: Vec<Route>,
    pub allow_on_headers_stop_iteration: bool,
    /// Every configured credential, redacted from whatever reaches the client
    /// (`parse_and_compile` fills it; `compile` alone leaves it empty).
    pub secrets: Secrets,
    /// The top-level `pricing`, in micro-dollars per million tokens.
    pub pricing: PriceTable,
}

impl Plan {
    /// True when some route has fallbacks (a request may be an attempt's).
    pub fn has_fallbacks(&self) -> bool {
        self.routes.iter().any(|route| route.attempts.is_some())
    }

    /// True when some route matches on Envoy's route name (worth a host call to read it).
    pub fn matches_route_names(&self) -> bool {
        self.routes
            .iter()
            .any(|route| route.matcher.route_name.is_some())
    }

    /// Lets every stage set up what it shares across requests before traffic (the local
    /// budgets' shared data, `limits::local::prepare`); the filter calls it once per VM.
    pub fn prepare(&self, host: &mut dyn Host) {
        for route in &self.routes {
            for stage in &route.request_stages {
                stage.prepare(host);
            }
        }
    }
}

/// Parses JSON text and compiles it, reporting the first fault with its JSON path.
pub fn parse_and_compile(text: &[u8], env: &dyn EnvLookup) -> Result<Plan, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let config: PluginConfig =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let message = strip_serde_position(&err.inner().to_string());
            if is_secret_path(&path) {
                // serde quotes the offending value (`invalid type: string "sk-..."`): under
                // `auth` that value may be the credential itself, so say what was wrong without it.
                return ConfigError::new(secret_safe_path(&path), without_values(&message));
            }
            ConfigError::new(path, message)
        })?;
    // One JSON document and nothing after it but whitespace: `{...} xyz` or a second
    // document is a broken file, not a config with an ignorable tail.
    deserializer.end().map_err(|err| {
        ConfigError::new(
            String::new(),
            format!(
                "{} after the config's JSON document",
                strip_serde_position(&err.to_string())
            ),
        )
    })?;
    let mut plan = compile(&config, env)?;
    if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(text) {
        plan.secrets = Secrets::from_config(&raw, &|name: &str| env.var(name));
    }
    Ok(plan)
}

/// True when a JSON path is inside an `auth` object (providers, fallbacks, endpoints): the
/// only place where the config holds credentials.
fn is_secret_path(path: &str) -> bool {
    path.split(['.', '[']).any(|segment| segment == "auth")
}

/// The path up to `auth`, then only the names the auth object defines: a key the operator
/// wrote by mistake could be the credential itself.
fn secret_safe_path(path: &str) -> String {
    let Some(index) = path.find(".auth") else {
        return path.to_string();
    };
    let (head, tail) = path.split_at(index + ".auth".len());
    let mut out = head.to_string();
    for segment in tail.split('.').filter(|s| !s.is_empty()) {
        out.push('.');
        out.push_str(
            if matches!(segment, "key" | "env" | "value" | "passthrough" | "none") {
                segment
            } else {
                "<redacted>"
            },
        );
    }
    out
}

/// A serde message with every quoted value (`"..."`, `` `...` ``) replaced, except the
/// field names serde lists after "expected".
fn without_values(message: &str) -> String {
    let (head, expected) = match message.find(", expected") {
        Some(index) => message.split_at(index),
        None => (message, ""),
    };
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in head.chars() {
        match quote {
            Some(open) if c == open => {
                out.push_str("<redacted>");
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push_str("<redacted>");
    }
    out.push_str(expected);
    out
}

/// serde_json appends " at line L column C"; the JSON path says more than that.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}

pub fn compile(config: &PluginConfig, env: &dyn EnvLookup) -> Result<Plan, ConfigError> {
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        if routes.iter().any(|r: &Route| r.name == route.name) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate route name {:?}", route.name),
            ));
        }
        routes.push(compile_route(route, &path, config, env)?);
    }
    Ok(Plan {
        routes,
        allow_on_headers_stop_iteration: config.allow_on_headers_stop_iteration,
        secrets: Secrets::default(),
        pricing: compile_pricing(&config.pricing)?,
    })
}

/// The price table: every price finite, at least 0 and at most `cost::MAX_USD_PER_MILLION`,
/// taken to the nearest micro-dollar per million tokens; model names non-empty.
fn compile_pricing(
    config: &std::collections::BTreeMap<String, PriceConfig>,
) -> Result<PriceTable, ConfigError> {
    let mut prices = std::collections::BTreeMap::new();
    for (model, price) in config {
        let at = format!("pricing.{model}");
        if model.trim().is_empty() {
            return Err(ConfigError::new(
                "pricing",
                "a model name must not be empty",
            ));
        }
        let micros = |name: &str, usd: f64| {
            crate::cost::micros(usd)
                .map_err(|error| ConfigError::new(format!("{at}.{name}"), error.to_string()))
        };
        let optional = |name: &str, usd: Option<f64>| usd.map(|usd| micros(name, usd)).transpose();
        prices.insert(
            model.clone(),
            Price {
                input: micros("input", price.input)?,
                output: micros("output", price.output)?,
                cached_input: optional("cached_input", price.cached_input)?,
                cache_write: optional("cache_write", price.cache_write)?,
            },
        );
    }
    Ok(PriceTable::new(prices))
}

fn compile_route(
    route: &RouteConfig,
    path: &str,
    config: &PluginConfig,
    env: &dyn EnvLookup,
) -> Result<Route, ConfigError> {
    if route.name.trim().is_empty() {
        return Err(ConfigError::new(
            format!("{path}.name"),
            "must not be empty",
        ));
    }
    if !route
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::new(
            format!("{path}.name"),
            "may only contain ASCII letters, digits, '-', '_' and '.' (it is used in metric names)",
        ));
    }
    let matcher = compile_matcher(&route.matcher, &format!("{path}.match"))?;
    let attempts = compile_attempts(route, path, config, env)?;
    let provider = match &attempts {
        // The downstream instance keeps the client's form: the attempts translate.
        Some(_) => Provider::compile(
            &client_form_provider(),
            &format!("{path}.provider"),
            true,
            env,
        )?,
        None => Provider::compile(
            &route.provider,
            &format!("{path}.provider"),
            config.allow_on_headers_stop_iteration,
            env,
        )?,
    };
    let shaping = Shaping::compile(&route.request, &format!("{path}.request"))?;
    let guards = GuardPlan::compile(&route.guards, &format!("{path}.guards"), &route.name, env)?;
    let transform = TransformPlan::compile(&route.transform, &format!("{path}.transform"), env)?;
    let limits = match &route.limits {
        Some(limits) => Some(LimitPlan::compile(
            limits,
            &route.name,
            &format!("{path}.limits"),
            !config.pricing.is_empty(),
        )?),
        None => None,
    };
    // The order of each list is the order the flow runs them in.
    let GuardPlan {
        request: request_guards,
        response: response_guards,
        stream: stream_filters,
    } = guards;
    let mut request_stages: Vec<Box<dyn RequestStage>> = Vec::new();
    request_stages.extend(limits.map(|limits| limits.check));
    request_stages.extend(request_guards);
    request_stages.extend(transform.request);
    let mut response_stages: Vec<Box<dyn ResponseStage>> = response_guards;
    response_stages.extend(transform.response);
    let sets_status = response_stages.iter().any(|stage| stage.sets_status());
    if sets_status && !config.allow_on_headers_stop_iteration {
        return Err(ConfigError::new(
            path,
            "a response guard that rejects, or a response transformer with parse_instructions, must set the \
             answer's status after reading it: enable allow_on_headers_stop_iteration (in the Envoy PluginConfig \
             and at the top of this config)",
        ));
    }
    Ok(Route {
        name: route.name.clone(),
        matcher,
        provider,
        shaping,
        request_stages,
        response_stages,
        stream_filters,
        attempts,
    })
}

/// The provider a route with fallbacks has downstream: chat completions as the client sent
/// them, no credential change, the model left as asked (each attempt resolves it).
fn client_form_provider() -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::OpenaiCompatible,
        authority: Some("aigate-attempts".into()),
        path: None,
        auth: AuthConfig {
            passthrough: Some(true),
            ..AuthConfig::default()
        },
        model: None,
        models: None,
        azure: None,
        anthropic: None,
        // Every client API passes through in the client's form: the attempts translate.
        messages: Some(true),
        responses: Some(true),
        cluster: None,
    }
}

fn compile_attempts(
    route: &RouteConfig,
    path: &str,
    config: &PluginConfig,
    env: &dyn EnvLookup,
) -> Result<Option<Attempts>, ConfigError> {
    if route.fallbacks.is_empty() {
        if route.retry.is_some() {
            return Err(ConfigError::new(
                format!("{path}.retry"),
                "applies to fallbacks; this route has none",
            ));
        }
        return Ok(None);
    }
    let retry = route.retry.clone().unwrap_or_default();
    let retry_on = match &retry.on {
        None => RetryCondition::ALL.to_vec(),
        Some(names) => {
            if names.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.retry.on"),
                    "must name at least one condition",
                ));
            }
            let mut out = Vec::with_capacity(names.len());
            for (index, name) in names.iter().enumerate() {
                let Some(condition) = RetryCondition::parse(name) else {
                    return Err(ConfigError::new(
                        format!("{path}.retry.on[{index}]"),
                        format!(
                            "unknown condition {name:?}; use connect-failure, reset, timeout, 429 or 5xx"
                        ),
                    ));
                };
                if !out.contains(&condition) {
                    out.push(condition);
                }
            }
            out
        }
    };
    let per_try_timeout_ms = retry
        .per_try_timeout_ms
        .unwrap_or(DEFAULT_PER_TRY_TIMEOUT_MS);
    if per_try_timeout_ms == 0 {
        return Err(ConfigError::new(
            format!("{path}.retry.per_try_timeout_ms"),
            "must be greater than 0",
        ));
    }
    // Every attempt sees the header map earlier attempts wrote (Envoy gives them one): a
    // provider that forwards the client's credential could forward another's key instead.
    let passthrough = std::iter::once(&route.provider)
        .chain(&route.fallbacks)
        .filter(|provider| provider.auth.passthrough.is_some())
        .count();
    if passthrough != 0 && passthrough != route.fallbacks.len() + 1 {
        return Err(ConfigError::new(
            format!("{path}.fallbacks"),
            "auth passthrough on some providers of a route and a key or none on others is refused: \
             a later attempt could forward the key an earlier one set; use passthrough on all or none",
        ));
    }
    let providers = std::iter::once((format!("{path}.provider"), &route.provider)).chain(
        route
            .fallbacks
            .iter()
            .enumerate()
            .map(|(index, provider)| (format!("{path}.fallbacks[{index}]"), provider)),
    );
    let mut plans = Vec::with_capacity(route.fallbacks.len() + 1);
    let mut clusters: Vec<Option<String>> = Vec::with_capacity(route.fallbacks.len() + 1);
    for (index, (provider_path, provider)) in providers.enumerate() {
        let cluster = match &provider.cluster {
            Some(cluster) if cluster.trim().is_empty() => {
                return Err(ConfigError::new(
                    format!("{provider_path}.cluster"),
                    "must not be empty",
                ))
            }
            Some(cluster) => Some(cluster.trim().to_string()),
            None if index > 0 => {
                return Err(ConfigError::new(
                    format!("{provider_path}.cluster"),
                    "is required on a fallback (the Envoy cluster that serves it)",
                ))
            }
            None => None,
        };
        if clusters.contains(&cluster) {
            return Err(ConfigError::new(
                format!("{provider_path}.cluster"),
                "names the cluster of an earlier provider of this route; each needs its own",
            ));
        }
        clusters.push(cluster);
        let compiled = Provider::compile(
            provider,
            &provider_path,
            config.allow_on_headers_stop_iteration,
            env,
        )?;
        let shaping = Shaping::compile(
            &RequestConfig {
                max_body_bytes: route.request.max_body_bytes,
                ..RequestConfig::default()
            },
            &format!("{path}.request"),
        )?;
        plans.push(Rc::new(Plan {
            routes: vec![Route {
                name: route.name.clone(),
                matcher: RouteMatcher::default(),
                provider: compiled,
                shaping,
                request_stages: Vec::new(),
                response_stages: Vec::new(),
                stream_filters: Vec::new(),
                attempts: None,
            }],
            allow_on_headers_stop_iteration: config.allow_on_headers_stop_iteration,
            secrets: Secrets::default(),
            // Answers are priced downstream, where the answer that reached the client is seen.
            pricing: PriceTable::default(),
        }));
    }
    Ok(Some(Attempts {
        plans,
        clusters,
        retry_on,
        per_try_timeout_ms,
    }))
}

fn compile_matcher(config: &MatchConfig, path: &str) -> Result<RouteMatcher, ConfigError> {
    let mut hosts = Vec::with_capacity(config.hosts.len());
    for (index, host) in config.hosts.iter().enumerate() {
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty()
            || (host.contains('*') && !host.starts_with("*."))
            || host.matches('*').count() > 1
        {
            return Err(ConfigError::new(
                format!("{path}.hosts[{index}]"),
                "must be a host name or a '*.' suffix pattern",
            ));
        }
        hosts.push(host);
    }
    if let Some(prefix) = &config.path_prefix {
        if !prefix.starts_with('/') {
            return Err(ConfigError::new(
                format!("{path}.path_prefix"),
                "must start with '/'",
            ));
        }
    }
    Ok(RouteMatcher {
        route_name: config.route_name.clone(),
        hosts,
        path_prefix: config.path_prefix.clone(),
        headers: config
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect(),
    })
}
