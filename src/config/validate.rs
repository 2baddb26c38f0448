//! The config layer's validation types: the fault with its JSON path (`ConfigError`), the
//! VM's environment (`EnvLookup`), credentials (`Secret`, `Auth`) and callout endpoints
//! (`Endpoint`), with the compilers every stage and provider shares. Naming no stage, they sit
//! below the stages, so a stage's own `compile` needs nothing from the plan (`crate::plan`).

use std::fmt;

use super::model::{AuthConfig, EndpointConfig, SecretConfig};

/// A configuration fault at a JSON path such as `routes[2].provider.auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Reads a variable of the Wasm VM's environment (`vm_config.environment_variables`).
pub trait EnvLookup {
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> EnvLookup for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A resolved credential. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a credential is attached to an outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Set the provider's own header from this secret; drop what the client sent.
    Key(Secret),
    /// Forward the client's credential untouched.
    Passthrough,
    /// Send no credential at all; drop what the client sent.
    None,
}

/// A callout target: an Envoy cluster plus the pseudo-headers and timeout of the call.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub auth: Auth,
}

pub const DEFAULT_CALLOUT_TIMEOUT_MS: u64 = 5_000;

/// Resolves `{ "env": ... }` or `{ "value": ... }` at configure time.
pub fn resolve_secret(
    config: &SecretConfig,
    path: &str,
    env: &dyn EnvLookup,
) -> Result<Secret, ConfigError> {
    match (&config.env, &config.value) {
        (Some(name), None) => match env.var(name) {
            Some(value) if !value.is_empty() => Ok(Secret::new(value)),
            _ => Err(ConfigError::new(
                format!("{path}.env"),
                format!("environment variable {name:?} is not set in the Wasm VM (vm_config.environment_variables)"),
            )),
        },
        (None, Some(value)) if !value.is_empty() => Ok(Secret::new(value.clone())),
        (None, Some(_)) => Err(ConfigError::new(format!("{path}.value"), "must not be empty")),
        _ => Err(ConfigError::new(path, "give exactly one of \"env\" or \"value\"")),
    }
}

pub fn compile_auth(
    config: &AuthConfig,
    path: &str,
    env: &dyn EnvLookup,
) -> Result<Auth, ConfigError> {
    let given = [
        config.key.is_some(),
        config.passthrough.is_some(),
        config.none.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given != 1 {
        return Err(ConfigError::new(
            path,
            "give exactly one of \"key\", \"passthrough\" or \"none\"",
        ));
    }
    if let Some(key) = &config.key {
        return Ok(Auth::Key(resolve_secret(key, &format!("{path}.key"), env)?));
    }
    if let Some(flag) = config.passthrough {
        if !flag {
            return Err(ConfigError::new(
                format!("{path}.passthrough"),
                "must be true when given",
            ));
        }
        return Ok(Auth::Passthrough);
    }
    if config.none == Some(false) {
        return Err(ConfigError::new(
            format!("{path}.none"),
            "must be true when given",
        ));
    }
    Ok(Auth::None)
}

/// Compiles a callout endpoint; `default_path` applies when the operator gave none.
pub fn compile_endpoint(
    config: &EndpointConfig,
    path: &str,
    default_path: &str,
    env: &dyn EnvLookup,
) -> Result<Endpoint, ConfigError> {
    if config.cluster.trim().is_empty() {
        return Err(ConfigError::new(
            format!("{path}.cluster"),
            "must not be empty",
        ));
    }
    let endpoint_path = config
        .path
        .clone()
        .unwrap_or_else(|| default_path.to_string());
    if !endpoint_path.starts_with('/') {
        return Err(ConfigError::new(
            format!("{path}.path"),
            "must start with '/'",
        ));
    }
    let timeout_ms = config.timeout_ms.unwrap_or(DEFAULT_CALLOUT_TIMEOUT_MS);
    if timeout_ms == 0 {
        return Err(ConfigError::new(
            format!("{path}.timeout_ms"),
            "must be greater than 0",
        ));
    }
    let auth = match &config.auth {
        Some(auth) => compile_auth(auth, &format!("{path}.auth"), env)?,
        None => Auth::None,
    };
    if auth == Auth::Passthrough {
        return Err(ConfigError::new(
            format!("{path}.auth.passthrough"),
            "callouts cannot forward the client's credential; use \"key\" or \"none\"",
        ));
    }
    Ok(Endpoint {
        cluster: config.cluster.clone(),
        authority: config
            .authority
            .clone()
            .unwrap_or_else(|| config.cluster.clone()),
        path: endpoint_path,
        timeout_ms,
        auth,
    })
}
