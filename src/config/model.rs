//! The plugin configuration exactly as operators write it (see CONFIG.md).
//!
//! These types only describe the JSON shape; semantic checks and compilation into
//! an immutable plan live in `compile`. Every struct refuses unknown keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub routes: Vec<RouteConfig>,
    /// Set to true only when the Envoy `PluginConfig` also sets
    /// `allow_on_headers_stop_iteration: true`. Then the filter holds the request
    /// headers until the body is read, so headers (path, authority) may depend on the body.
    #[serde(default)]
    pub allow_on_headers_stop_iteration: bool,
    /// US dollars per million tokens, keyed by the provider's model name.
    #[serde(default)]
    pub pricing: BTreeMap<String, PriceConfig>,
}

/// One model's prices, US dollars per million tokens. `cached_input` and `cache_write`
/// default to `input`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    pub provider: ProviderConfig,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub guards: GuardsConfig,
    #[serde(default)]
    pub transform: TransformConfig,
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// Providers tried in order when the attempt before failed with a condition in
    /// `retry.on`, before any byte of the answer reached the client (each needs `cluster`).
    #[serde(default)]
    pub fallbacks: Vec<ProviderConfig>,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

/// When an attempt counts as failed (and the next provider is tried), and how long one
/// attempt may take. The Envoy route's retry policy must say the same (docs/DEPLOY.md).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// `connect-failure`, `reset`, `timeout`, `429`, `5xx`; default all five.
    #[serde(default)]
    pub on: Option<Vec<String>>,
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(default)]
    pub route_name: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Gemini,
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }

    /// The well-known `gen_ai.provider.name` (the metrics' label); `openai_compatible`
    /// servers (vLLM, Ollama, ...) have none, so they keep aigate's name.
    pub fn gen_ai_name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::AzureOpenai => "azure.ai.openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gcp.gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    pub auth: AuthConfig,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub models: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    #[serde(default)]
    pub anthropic: Option<AnthropicConfig>,
    /// `openai_compatible` only: the server serves Anthropic Messages (`/v1/messages`)
    /// itself, so Messages clients pass through (default false: translated to chat).
    #[serde(default)]
    pub messages: Option<bool>,
    /// `openai_compatible` only: the server serves `/v1/responses` itself (default true);
    /// false sends Responses clients through the chat-completions bridge.
    #[serde(default)]
    pub responses: Option<bool>,
    /// The Envoy cluster that serves this provider (its endpoints carry the metadata
    /// `aigate.cluster` with this name): required on fallbacks.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// Exactly one of the three fields must be given; `compile` checks that.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub key: Option<SecretConfig>,
    #[serde(default)]
    pub passthrough: Option<bool>,
    #[serde(default)]
    pub none: Option<bool>,
}

/// `{ "env": "NAME" }` or `{ "value": "..." }`. Debug never prints the value.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretConfig")
            .field("env", &self.env)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default = "default_azure_api_version")]
    pub api_version: String,
}

pub fn default_azure_api_version() -> String {
    "2024-10-21".to_string()
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AnthropicConfig {
    #[serde(default = "default_anthropic_version")]
    pub version: String,
    #[serde(default = "default_anthropic_max_tokens")]
    pub max_tokens: u64,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            version: default_anthropic_version(),
            max_tokens: default_anthropic_max_tokens(),
        }
    }
}

pub fn default_anthropic_version() -> String {
    "2023-06-01".to_string()
}

pub fn default_anthropic_max_tokens() -> u64 {
    4096
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub prepend: Vec<Value>,
    #[serde(default)]
    pub append: Vec<Value>,
    #[serde(default)]
    pub templates: Vec<TemplateConfig>,
    #[serde(default = "default_true")]
    pub allow_untemplated: bool,
    #[serde(default)]
    pub defaults: Map<String, Value>,
    #[serde(default)]
    pub overrides: Map<String, Value>,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            max_body_bytes: default_max_body_bytes(),
            prepend: Vec::new(),
            append: Vec::new(),
            templates: Vec::new(),
            allow_untemplated: true,
            defaults: Map::new(),
            overrides: Map::new(),
        }
    }
}

pub fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub name: String,
    pub body: Value,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct GuardsConfig {
    #[serde(default)]
    pub request: Vec<GuardConfig>,
    #[serde(default)]
    pub response: Vec<GuardConfig>,
    #[serde(default)]
    pub reject: RejectConfig,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RejectConfig {
    #[serde(default = "default_reject_status")]
    pub status: u16,
    #[serde(default = "default_reject_message")]
    pub message: String,
}

impl Default for RejectConfig {
    fn default() -> Self {
        RejectConfig {
            status: default_reject_status(),
            message: default_reject_message(),
        }
    }
}

fn default_reject_status() -> u16 {
    403
}

fn default_reject_message() -> String {
    "The request was rejected due to inappropriate content".to_string()
}

/// A guard is exactly one of these (externally tagged: `{ "regex": {...} }`).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GuardConfig {
    Regex(RegexGuardConfig),
    Webhook(WebhookGuardConfig),
    Moderation(ModerationGuardConfig),
    LlmCheck(LlmCheckGuardConfig),
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Closed,
    Open,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RegexAction {
    Reject,
    #[default]
    Mask,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RegexGuardConfig {
    /// Name used as the error `code` and in metrics; defaults to `regex`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub builtins: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<NamedPatternConfig>,
    #[serde(default)]
    pub action: RegexAction,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct NamedPatternConfig {
    pub name: String,
    pub pattern: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookGuardConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModerationGuardConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LlmCheckGuardConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub endpoint: EndpointConfig,
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub unsafe_when: Option<String>,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    #[serde(default)]
    pub request: Option<TransformerConfig>,
    #[serde(default)]
    pub response: Option<TransformerConfig>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    pub extract_pattern: Option<String>,
    #[serde(default)]
    pub parse_instructions: bool,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub tokens: Vec<TokenLimitConfig>,
    /// Budgets in US dollars, priced from the top-level `pricing`.
    #[serde(default)]
    pub cost: Vec<CostLimitConfig>,
    #[serde(default)]
    pub backend: BackendConfig,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TokenLimitConfig {
    pub name: String,
    pub key: LimitKeyConfig,
    pub limit: u64,
    pub window_ms: u64,
    /// Which tokens of an answer count against `limit`.
    #[serde(default)]
    pub count: TokenCount,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenCount {
    /// Prompt and completion tokens (`total_tokens`).
    #[default]
    Total,
    /// Prompt tokens (cached ones included).
    Input,
    /// Completion tokens (reasoning included).
    Output,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CostLimitConfig {
    pub name: String,
    pub key: LimitKeyConfig,
    /// US dollars per window.
    pub limit_usd: f64,
    pub window_ms: u64,
}

/// Exactly one field must be given; `compile` checks that.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitKeyConfig {
    /// A request header, for example `x-user-id` or a consumer identity set by an auth filter.
    #[serde(default)]
    pub header: Option<String>,
    /// The downstream client address (`source.address`, without port).
    #[serde(default)]
    pub client_address: Option<bool>,
    /// One budget shared by every request on the route.
    #[serde(default)]
    pub fixed: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendConfig {
    #[default]
    Local,
    Rls(RlsConfig),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RlsConfig {
    pub cluster: String,
    #[serde(default = "default_rls_domain")]
    pub domain: String,
    #[serde(default = "default_rls_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_rls_domain() -> String {
    "aigate".to_string()
}

fn default_rls_timeout_ms() -> u64 {
    100
}
