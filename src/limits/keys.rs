//! Which budget a request is charged to: a header's value, the client address, or one fixed
//! key for the whole route.

use crate::config::model::LimitKeyConfig;
use crate::config::ConfigError;
use crate::host::Host;

/// Longer keys are replaced by a hash, so an oversized header cannot bloat shared memory
/// or rate limit service descriptors.
const MAX_KEY_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name lower-cased), for example `x-user-id`, or a consumer identity
    /// that an auth filter in front of aigate sets.
    Header(String),
    /// The downstream address (`source.address`) without its port.
    ClientAddress,
    /// The same key for every request.
    Fixed(String),
}

impl KeySource {
    pub fn compile(config: &LimitKeyConfig, path: &str) -> Result<KeySource, ConfigError> {
        let given = [
            config.header.is_some(),
            config.client_address.is_some(),
            config.fixed.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::new(
                path,
                "give exactly one of \"header\", \"client_address\" or \"fixed\"",
            ));
        }
        if let Some(name) = &config.header {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || name.starts_with(':') {
                return Err(ConfigError::new(
                    format!("{path}.header"),
                    "must be a non-empty request header name (not a pseudo-header)",
                ));
            }
            return Ok(KeySource::Header(name));
        }
        if let Some(enabled) = config.client_address {
            if !enabled {
                return Err(ConfigError::new(
                    format!("{path}.client_address"),
                    "must be true when given",
                ));
            }
            return Ok(KeySource::ClientAddress);
        }
        match &config.fixed {
            Some(value) if !value.is_empty() => Ok(KeySource::Fixed(bounded(value))),
            _ => Err(ConfigError::new(
                format!("{path}.fixed"),
                "must be a non-empty string",
            )),
        }
    }

    /// The budget key of this request. A missing header gives the empty key: all such
    /// requests share one budget (they are not let through unlimited). None when the host
    /// does not give the client's address: Envoy always knows it, so that is the host's
    /// failure, never a reason to charge the client to a budget shared with others.
    pub fn value(&self, headers: &[(String, String)], host: &dyn Host) -> Option<String> {
        Some(match self {
            KeySource::Header(name) => headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| bounded(value.trim()))
                .unwrap_or_default(),
            KeySource::ClientAddress => {
                let address = host.property(&["source", "address"])?;
                let address = String::from_utf8(address).ok()?;
                bounded(strip_port(address.trim()))
            }
            KeySource::Fixed(value) => value.clone(),
        })
    }
}

/// `1.2.3.4:5678` → `1.2.3.4`, `[2001:db8::1]:443` → `2001:db8::1`; a bare address stays.
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        // One colon: host:port. More than one: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

/// Prefix of a hashed key. Only `bounded` makes keys that start with it.
const HASHED_PREFIX: &str = "fnv:";
/// Prefix that escapes a raw key which starts with `fnv:` or with this prefix itself.
const ESCAPED_PREFIX: &str = "raw:";

/// Keeps short keys as they are; replaces a long one by `fnv:` + its 64-bit FNV-1a hash.
/// Raw and hashed keys live in separate namespaces: a raw key that starts with `fnv:` (a
/// client sending another key's hashed form literally) or with `raw:` gets a `raw:` prefix,
/// so no raw key ever equals a hashed one and no two raw keys become equal. Every other key
/// is unchanged (rate limit service descriptors see the header's value).
pub fn bounded(value: &str) -> String {
    if value.len() > MAX_KEY_BYTES {
        format!("{HASHED_PREFIX}{:016x}", fnv1a(value.as_bytes()))
    } else if value.starts_with(HASHED_PREFIX) || value.starts_with(ESCAPED_PREFIX) {
        format!("{ESCAPED_PREFIX}{value}")
    } else {
        value.to_string()
    }
}

/// FNV-1a, 64 bit: stable across workers and restarts (shard choice, long keys).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::RecordingHost;

    fn key(json: &str) -> Result<KeySource, ConfigError> {
        let config: LimitKeyConfig = serde_json::from_str(json).unwrap();
        KeySource::compile(&config, "k")
    }

    #[test]
    fn compiles_exactly_one_source() {
        assert_eq!(
            key(r#"{"header":"X-User-Id"}"#).unwrap(),
            KeySource::Header("x-user-id".into())
        );
        assert_eq!(
            key(r#"{"client_address":true}"#).unwrap(),
            KeySource::ClientAddress
        );
        assert_eq!(
            key(r#"{"fixed":"all"}"#).unwrap(),
            KeySource::Fixed("all".into())
        );
        assert!(key("{}").unwrap_err().message.contains("exactly one"));
        assert!(key(r#"{"header":"a","fixed":"b"}"#).is_err());
        assert_eq!(key(r#"{"header":" "}"#).unwrap_err().path, "k.header");
        assert_eq!(key(r#"{"header":":path"}"#).unwrap_err().path, "k.header");
        assert_eq!(
            key(r#"{"client_address":false}"#).unwrap_err().path,
            "k.client_address"
        );
        assert_eq!(key(r#"{"fixed":""}"#).unwrap_err().path, "k.fixed");
    }

    #[test]
    fn header_value_or_shared_empty_key() {
        let host = RecordingHost::new();
        let source = KeySource::Header("x-user-id".into());
        let headers = vec![("x-user-id".to_string(), " alice ".to_string())];
        assert_eq!(source.value(&headers, &host).unwrap(), "alice");
        assert_eq!(source.value(&[], &host).unwrap(), "");
    }

    #[test]
    fn client_address_drops_the_port() {
        let mut host = RecordingHost::new();
        host.set_property_value(&["source", "address"], b"10.1.2.3:55012");
        assert_eq!(
            KeySource::ClientAddress.value(&[], &host).unwrap(),
            "10.1.2.3"
        );
        let mut host = RecordingHost::new();
        host.set_property_value(&["source", "address"], b"[2001:db8::7]:443");
        assert_eq!(
            KeySource::ClientAddress.value(&[], &host).unwrap(),
            "2001:db8::7"
        );
        // The host gives no address (or no text): a failure, not the shared empty key.
        assert_eq!(
            KeySource::ClientAddress.value(&[], &RecordingHost::new()),
            None
        );
        let mut host = RecordingHost::new();
        host.set_property_value(&["source", "address"], b"\xff\xfe");
        assert_eq!(KeySource::ClientAddress.value(&[], &host), None);
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(strip_port("127.0.0.1"), "127.0.0.1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("unix:/tmp/sock"), "unix:/tmp/sock");
    }

    #[test]
    fn long_keys_are_hashed_stably() {
        let long = "u".repeat(500);
        let hashed = bounded(&long);
        assert!(hashed.starts_with("fnv:") && hashed.len() == 20);
        assert_eq!(hashed, bounded(&long));
        assert_ne!(hashed, bounded(&"v".repeat(500)));
        assert_eq!(bounded("short"), "short");
    }

    /// Issue 12 item 14: `fnv:<hash>` sent literally must not share the long key's budget.
    #[test]
    fn raw_keys_never_equal_hashed_keys() {
        let long = "team-".repeat(40);
        let hashed = bounded(&long);
        assert_ne!(bounded(&hashed), hashed);
        assert_eq!(bounded(&hashed), format!("raw:{hashed}"));
        // Escaping stays injective: `raw:fnv:..` sent literally is a third key.
        let escaped = bounded(&hashed);
        assert_ne!(bounded(&escaped), escaped);
        assert_ne!(bounded(&escaped), hashed);
        // Through the header source too.
        let host = RecordingHost::new();
        let source = KeySource::Header("x-user-id".into());
        let as_long = vec![("x-user-id".to_string(), long.clone())];
        let as_hash = vec![("x-user-id".to_string(), hashed.clone())];
        assert_ne!(source.value(&as_long, &host), source.value(&as_hash, &host));
        // Ordinary keys are untouched.
        assert_eq!(bounded("alice"), "alice");
        assert_eq!(bounded("fnvx"), "fnvx");
    }
}
