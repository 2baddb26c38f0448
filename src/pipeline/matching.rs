//! Picks the first route whose `match` holds for a request.

use crate::plan::{Plan, RouteMatcher};

/// The request facts matching looks at, read once in the headers phase.
#[derive(Debug, Default, Clone)]
pub struct MatchInput<'a> {
    /// Envoy's route name (`xds.route_name`).
    pub route_name: Option<&'a str>,
    pub authority: &'a str,
    pub path: &'a str,
    /// Lower-cased names.
    pub headers: &'a [(String, String)],
}

pub fn select_route(plan: &Plan, input: &MatchInput<'_>) -> Option<usize> {
    plan.routes
        .iter()
        .position(|route| matches(&route.matcher, input))
}

pub fn matches(matcher: &RouteMatcher, input: &MatchInput<'_>) -> bool {
    if let Some(name) = &matcher.route_name {
        if input.route_name != Some(name.as_str()) {
            return false;
        }
    }
    if !matcher.hosts.is_empty() {
        let host = host_without_port(input.authority).to_ascii_lowercase();
        if !matcher
            .hosts
            .iter()
            .any(|pattern| host_matches(pattern, &host))
        {
            return false;
        }
    }
    if let Some(prefix) = &matcher.path_prefix {
        if !input.path.starts_with(prefix.as_str()) {
            return false;
        }
    }
    matcher.headers.iter().all(|(name, value)| {
        input
            .headers
            .iter()
            .any(|(header, actual)| header == name && actual == value)
    })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => pattern == host,
    }
}

/// Strips `:port`, keeping IPv6 literals such as `[::1]:8080` intact.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon)
            if authority
                .get(colon + 1..)
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            authority.get(..colon).unwrap_or(authority)
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> RouteMatcher {
        RouteMatcher {
            route_name: Some("llm".into()),
            hosts: vec!["llm.example.com".into(), "*.corp".into()],
            path_prefix: Some("/v1/".into()),
            headers: vec![("x-user-tier".into(), "free".into())],
        }
    }

    #[test]
    fn all_conditions_must_hold() {
        let headers = vec![("x-user-tier".to_string(), "free".to_string())];
        let input = MatchInput {
            route_name: Some("llm"),
            authority: "a.corp:8080",
            path: "/v1/chat/completions",
            headers: &headers,
        };
        assert!(matches(&matcher(), &input));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                route_name: Some("other"),
                ..input.clone()
            }
        ));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                route_name: None,
                ..input.clone()
            }
        ));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                authority: "corp",
                ..input.clone()
            }
        ));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                authority: "evilcorp",
                ..input.clone()
            }
        ));
        assert!(matches(
            &matcher(),
            &MatchInput {
                authority: "LLM.example.com",
                ..input.clone()
            }
        ));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                path: "/v2/chat",
                ..input.clone()
            }
        ));
        assert!(!matches(
            &matcher(),
            &MatchInput {
                headers: &[],
                ..input.clone()
            }
        ));
    }

    #[test]
    fn empty_matcher_matches_all() {
        assert!(matches(&RouteMatcher::default(), &MatchInput::default()));
    }

    #[test]
    fn strips_ports() {
        assert_eq!(host_without_port("a.b:80"), "a.b");
        assert_eq!(host_without_port("a.b"), "a.b");
        assert_eq!(host_without_port("[::1]:10000"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
