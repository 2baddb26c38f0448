//! Keeps credentials out of what `explain` prints: credential headers by name, and any text
//! that contains a secret the config resolves (`auth.key` anywhere in the config).

use serde_json::Value;

use aigate_core::providers::CLIENT_CREDENTIAL_HEADERS;
use aigate_core::secrets::collect;

pub const REDACTED: &str = "<redacted>";

/// Headers whose value is a credential whatever it holds.
const EXTRA_CREDENTIAL_HEADERS: [&str; 3] = ["proxy-authorization", "cookie", "set-cookie"];

/// Secrets shorter than this are only hidden by header name: replacing every "ab" in a
/// body would make the output useless and would hint at the secret anyway.
const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Finds every `auth.key` secret in the raw config and resolves it like the filter does.
    pub fn from_config(config: &Value, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut secrets = Vec::new();
        collect(config, env, &mut secrets);
        secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_credential_header(name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        CLIENT_CREDENTIAL_HEADERS.contains(&name.as_str())
            || EXTRA_CREDENTIAL_HEADERS.contains(&name.as_str())
    }

    pub fn header_value(&self, name: &str, value: &str) -> String {
        if Self::is_credential_header(name)
            || self.secrets.iter().any(|s| value.contains(s.as_str()))
        {
            REDACTED.to_string()
        } else {
            value.to_string()
        }
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_secrets_anywhere_in_the_config() {
        let config = json!({"routes":[{"provider":{"auth":{"key":{"env":"K"}}},
            "guards":{"request":[{"webhook":{"endpoint":{"cluster":"c","auth":{"key":{"value":"hook-secret"}}}}}]}}]});
        let env = |name: &str| (name == "K").then(|| "sk-live-123".to_string());
        let redactor = Redactor::from_config(&config, &env);
        assert_eq!(
            redactor.header_value("x-custom", "Bearer sk-live-123"),
            REDACTED
        );
        assert_eq!(redactor.header_value("Authorization", "anything"), REDACTED);
        assert_eq!(redactor.header_value("x-user", "alice"), "alice");
        assert_eq!(
            redactor.text("a hook-secret b sk-live-123"),
            "a <redacted> b <redacted>"
        );
    }
}
