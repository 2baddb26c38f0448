//! Upstream providers. What differs between them is data (`KindSpec`: default authority and
//! path, credential header) plus one `Codec` per wire format that translates requests,
//! answers, streams and errors between the OpenAI chat-completions API and the native API.

mod anthropic;
mod codec;
mod common;
mod gemini;
mod openai;

use std::collections::BTreeMap;

use serde_json::Value;

pub use codec::for_provider as codec_for;
#[cfg(test)]
pub use codec::{chat_only_openai as chat_only_openai_codec, for_kind as codec_for_kind};
pub use codec::{Codec, Exchange, StreamDecoder};

use crate::api::Operation;
use crate::config::model::{
    default_anthropic_max_tokens, default_anthropic_version, ProviderConfig, ProviderKind,
};
use crate::config::{Auth, ConfigError, EnvLookup};
use crate::error::ApiError;

/// The static facts of one provider kind.
#[derive(Debug)]
pub struct KindSpec {
    pub default_authority: Option<&'static str>,
    pub default_path: &'static str,
    /// Header that carries the credential, and the prefix before the secret.
    pub credential_header: &'static str,
    pub credential_prefix: &'static str,
}

const OPENAI: KindSpec = KindSpec {
    default_authority: Some("api.openai.com"),
    default_path: "/v1/chat/completions",
    credential_header: "authorization",
    credential_prefix: "Bearer ",
};
const AZURE_OPENAI: KindSpec = KindSpec {
    default_authority: None,
    default_path: "/openai/deployments/{deployment}/chat/completions",
    credential_header: "api-key",
    credential_prefix: "",
};
const ANTHROPIC: KindSpec = KindSpec {
    default_authority: Some("api.anthropic.com"),
    default_path: "/v1/messages",
    credential_header: "x-api-key",
    credential_prefix: "",
};
const GEMINI: KindSpec = KindSpec {
    default_authority: Some("generativelanguage.googleapis.com"),
    default_path: "/v1beta/models/{model}:{method}",
    credential_header: "x-goog-api-key",
    credential_prefix: "",
};
const OPENAI_COMPATIBLE: KindSpec = KindSpec {
    default_authority: None,
    default_path: "/v1/chat/completions",
    credential_header: "authorization",
    credential_prefix: "Bearer ",
};

pub fn spec(kind: ProviderKind) -> &'static KindSpec {
    match kind {
        ProviderKind::Openai => &OPENAI,
        ProviderKind::AzureOpenai => &AZURE_OPENAI,
        ProviderKind::Anthropic => &ANTHROPIC,
        ProviderKind::Gemini => &GEMINI,
        ProviderKind::OpenaiCompatible => &OPENAI_COMPATIBLE,
    }
}

/// Every header a client may carry a credential in; all are removed unless `passthrough`.
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "api-key", "x-api-key", "x-goog-api-key"];

#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub deployment: Option<String>,
    pub api_version: String,
}

#[derive(Debug, Clone)]
pub struct AnthropicSettings {
    pub version: String,
    pub max_tokens: u64,
}

#[derive(Debug)]
pub struct Provider {
    pub kind: ProviderKind,
    pub authority: String,
    pub path: String,
    pub auth: Auth,
    pub model: Option<String>,
    pub models: Option<BTreeMap<String, String>>,
    pub azure: Option<AzureSettings>,
    pub anthropic: AnthropicSettings,
    /// The provider serves Anthropic Messages natively (`anthropic`, and `openai_compatible`
    /// with `"messages": true`).
    pub messages: bool,
    /// The server serves the OpenAI Responses API itself (`openai_compatible`'s
    /// `"responses"`; always true for `openai` and `azure_openai`).
    pub responses: bool,
}

impl Provider {
    pub fn compile(
        config: &ProviderConfig,
        path: &str,
        headers_wait_for_body: bool,
        env: &dyn EnvLookup,
    ) -> Result<Provider, ConfigError> {
        let spec = spec(config.kind);
        if !codec::is_available(config.kind) {
            return Err(ConfigError::new(
                format!("{path}.kind"),
                format!(
                    "provider kind {:?} is not supported by this build",
                    config.kind.as_str()
                ),
            ));
        }
        let authority = match (&config.authority, spec.default_authority) {
            (Some(authority), _) if !authority.trim().is_empty() => authority.trim().to_string(),
            (Some(_), _) => {
                return Err(ConfigError::new(
                    format!("{path}.authority"),
                    "must not be empty",
                ))
            }
            (None, Some(default)) => default.to_string(),
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{path}.authority"),
                    format!("is required for provider kind {:?}", config.kind.as_str()),
                ))
            }
        };
        let upstream_path = config
            .path
            .clone()
            .unwrap_or_else(|| spec.default_path.to_string());
        if !upstream_path.starts_with('/') {
            return Err(ConfigError::new(
                format!("{path}.path"),
                "must start with '/'",
            ));
        }
        let auth = crate::config::compile_auth(&config.auth, &format!("{path}.auth"), env)?;
        if let Some(model) = &config.model {
            if model.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.model"),
                    "must not be empty",
                ));
            }
        }
        if let Some(models) = &config.models {
            if models.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.models"),
                    "must map at least one name",
                ));
            }
            if let Some((name, _)) = models.iter().find(|(_, target)| target.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("{path}.models.{name}"),
                    "must not be empty",
                ));
            }
        }
        if config.azure.is_some() && config.kind != ProviderKind::AzureOpenai {
            return Err(ConfigError::new(
                format!("{path}.azure"),
                "only applies to kind \"azure_openai\"",
            ));
        }
        if config.responses.is_some() && config.kind != ProviderKind::OpenaiCompatible {
            return Err(ConfigError::new(
                format!("{path}.responses"),
                "only applies to kind \"openai_compatible\"",
            ));
        }
        if config.anthropic.is_some() && config.kind != ProviderKind::Anthropic {
            return Err(ConfigError::new(
                format!("{path}.anthropic"),
                "only applies to kind \"anthropic\"",
            ));
        }
        if config.messages.is_some() && config.kind != ProviderKind::OpenaiCompatible {
            return Err(ConfigError::new(
                format!("{path}.messages"),
                "only applies to kind \"openai_compatible\"",
            ));
        }
        let azure = match config.kind {
            ProviderKind::AzureOpenai => {
                let azure = config
                    .azure
                    .clone()
                    .unwrap_or(crate::config::model::AzureConfig {
                        deployment: None,
                        api_version: crate::config::model::default_azure_api_version(),
                    });
                if azure.api_version.trim().is_empty() {
                    return Err(ConfigError::new(
                        format!("{path}.azure.api_version"),
                        "must not be empty",
                    ));
                }
                Some(AzureSettings {
                    deployment: azure.deployment,
                    api_version: azure.api_version,
                })
            }
            _ => None,
        };
        if let Some(anthropic) = &config.anthropic {
            if anthropic.version.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.anthropic.version"),
                    "must not be empty",
                ));
            }
            if anthropic.max_tokens == 0 {
                return Err(ConfigError::new(
                    format!("{path}.anthropic.max_tokens"),
                    "must be greater than 0",
                ));
            }
        }
        let anthropic = config
            .anthropic
            .as_ref()
            .map(|a| AnthropicSettings {
                version: a.version.clone(),
                max_tokens: a.max_tokens,
            })
            .unwrap_or(AnthropicSettings {
                version: default_anthropic_version(),
                max_tokens: default_anthropic_max_tokens(),
            });
        let provider = Provider {
            kind: config.kind,
            authority,
            path: upstream_path,
            auth,
            model: config.model.clone(),
            models: config.models.clone(),
            azure,
            anthropic,
            messages: config.kind == ProviderKind::Anthropic || config.messages == Some(true),
            responses: config.responses.unwrap_or(true),
        };
        if !headers_wait_for_body && provider.path_depends_on_body() {
            return Err(ConfigError::new(
                path,
                "the upstream path depends on the request's model, which is only known from the body: \
                 set \"model\" (or \"azure.deployment\"), or set allow_on_headers_stop_iteration \
                 (in both the Envoy PluginConfig and this config)",
            ));
        }
        Ok(provider)
    }

    pub fn codec(&self) -> &'static dyn Codec {
        codec::for_provider(self.kind, self.messages, self.responses)
    }

    pub fn spec(&self) -> &'static KindSpec {
        spec(self.kind)
    }

    /// The model the provider will be asked for, after `model` enforcement and `models` mapping.
    pub fn resolve_model(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        if let Some(model) = &self.model {
            return Ok(Some(model.clone()));
        }
        match (&self.models, requested) {
            (Some(models), Some(name)) => match models.get(name) {
                Some(target) => Ok(Some(target.clone())),
                None => Err(ApiError::new(
                    400,
                    "invalid_request_error",
                    "model_not_found",
                    format!(
                        "The model {name:?} is not available on this route. Available: {}",
                        models
                            .keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            },
            (Some(_), None) | (None, None) => Err(ApiError::invalid_request(
                "missing_model",
                "The request must name a \"model\".",
            )),
            (None, Some(name)) => Ok(Some(name.to_string())),
        }
    }

    /// True when the model goes into the upstream path (Gemini, Azure without a fixed
    /// deployment).
    fn path_uses_model(&self) -> bool {
        self.path.contains("{model}")
            || (self.path.contains("{deployment}")
                && self
                    .azure
                    .as_ref()
                    .and_then(|a| a.deployment.as_ref())
                    .is_none())
    }

    /// True when the upstream path itself chooses streaming (a `{method}` placeholder, as
    /// Gemini's `generateContent` / `streamGenerateContent`).
    pub fn stream_in_path(&self) -> bool {
        self.path.contains("{method}")
    }

    /// Whether the provider is asked for a stream. Normally when the client streams and no
    /// response stage needs the whole answer first. When the path chooses streaming but was
    /// written before the body was read (`path_written_early`: mode B), it was written for
    /// a stream, so the answer always is one; the filter aggregates it for a client that
    /// asked for JSON.
    pub fn upstream_stream(
        &self,
        client_stream: bool,
        needs_whole_answer: bool,
        path_written_early: bool,
    ) -> bool {
        if path_written_early && self.stream_in_path() {
            return true;
        }
        client_stream && !needs_whole_answer
    }

    /// The model a request will use when only the config can tell (headers phase).
    fn model_known_from_config(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Checks a model name before it goes into the upstream path or the access log: no
    /// control characters anywhere, and only path-safe characters where the path carries it
    /// (so `../admin` or `x?y` cannot reshape the upstream URL).
    pub fn check_model_name(&self, model: &str) -> Result<(), ApiError> {
        if model.chars().any(char::is_control) {
            return Err(ApiError::invalid_request(
                "invalid_value",
                "Invalid parameter 'model': must not contain control characters.",
            ));
        }
        let in_path = self.path_depends_on_body();
        let path_safe =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
        if in_path && (!model.chars().all(path_safe) || model.starts_with('.')) {
            return Err(ApiError::invalid_request(
                "invalid_value",
                "Invalid parameter 'model': this route puts the model in the upstream path, so it may only contain \
                 ASCII letters, digits, '-', '_', '.', ':' and '@'.",
            ));
        }
        Ok(())
    }

    fn path_depends_on_body(&self) -> bool {
        self.path_uses_model() && self.model_known_from_config().is_none()
    }

    /// The `:path` sent upstream. `model` is None in the headers phase when the body is not
    /// read yet; `stream` is None then too.
    pub fn upstream_path(
        &self,
        operation: Operation,
        model: Option<&str>,
        stream: Option<bool>,
    ) -> String {
        let model = model.or(self.model_known_from_config()).unwrap_or_default();
        if matches!(
            operation,
            Operation::Responses | Operation::ResponsesCompact
        ) && self.azure.is_some()
        {
            // Azure's v1 API: the deployment goes in the body's `model`, no api-version.
            return format!("/openai/v1/{}", operation.path_suffix());
        }
        let mut path = self.path.replace("{model}", model);
        if operation != Operation::ChatCompletions {
            // The configured path names the provider's chat (or Messages) endpoint; other
            // operations live beside it (`/v1/messages` → `/v1/messages/count_tokens`).
            let base = path
                .strip_suffix(Operation::ChatCompletions.path_suffix())
                .or_else(|| path.strip_suffix(Operation::Messages.path_suffix()));
            if let Some(base) = base {
                path = format!("{base}{}", operation.path_suffix());
            }
        }
        if path.contains("{deployment}") {
            let deployment = self
                .azure
                .as_ref()
                .and_then(|a| a.deployment.as_deref())
                .unwrap_or(model);
            path = path.replace("{deployment}", deployment);
        }
        let stream_query = if path.contains("{method}") {
            path = path.replace("{method}", self.codec().stream_method(stream));
            self.codec().stream_query(stream)
        } else {
            None
        };
        if let Some(azure) = &self.azure {
            let separator = if path.contains('?') { '&' } else { '?' };
            path = format!("{path}{separator}api-version={}", azure.api_version);
        }
        if let Some(query) = stream_query {
            let separator = if path.contains('?') { '&' } else { '?' };
            path = format!("{path}{separator}{query}");
        }
        path
    }

    /// The credential header to set, if the route injects one.
    pub fn credential_header(&self) -> Option<(&'static str, String)> {
        match &self.auth {
            Auth::Key(secret) => Some((
                self.spec().credential_header,
                format!("{}{}", self.spec().credential_prefix, secret.expose()),
            )),
            Auth::Passthrough | Auth::None => None,
        }
    }

    /// Provider-specific fixed headers (for example `anthropic-version`).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        self.codec().extra_headers(self)
    }

    /// Translates the shaped OpenAI chat request into the provider's body.
    pub fn encode_request(&self, request: &Value, exchange: &Exchange) -> Result<Value, ApiError> {
        self.codec().encode_request(request, self, exchange)
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
