//! `aigate check`: the verdict is exactly `plan::parse_and_compile`, the function the
//! filter's `on_configure` calls. That function stops at the first fault; to list every
//! fault, each route is then compiled on its own through the same function and its paths
//! are put back under its real index.

use std::io::Write;

use serde_json::{Map, Value};

use super::args::Options;
use super::{read_input, EXIT_INVALID, EXIT_OK};
use aigate_core::config::{self, ConfigError};
use aigate_core::plan::{self, Plan};

/// The Wasm VM's environment as the CLI sees it: `--env` first, then the process environment,
/// then (with `--placeholder-env`) a placeholder for anything unset.
pub struct CliEnv<'a> {
    overrides: &'a [(String, String)],
    process: &'a dyn Fn(&str) -> Option<String>,
    placeholder: bool,
}

impl<'a> CliEnv<'a> {
    pub fn new(options: &'a Options, process: &'a dyn Fn(&str) -> Option<String>) -> Self {
        CliEnv {
            overrides: &options.env,
            process,
            placeholder: options.placeholder_env,
        }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        if let Some((_, value)) = self.overrides.iter().rev().find(|(key, _)| key == name) {
            return Some(value.clone());
        }
        (self.process)(name)
            .filter(|value| !value.is_empty())
            .or_else(|| self.placeholder.then(|| format!("placeholder-{name}")))
    }
}

/// Compiles the config; on failure returns every fault found (first the one the filter
/// itself would log).
pub fn compile_all(text: &[u8], env: &CliEnv<'_>) -> Result<Plan, Vec<ConfigError>> {
    let lookup = |name: &str| env.var(name);
    match plan::parse_and_compile(text, &lookup) {
        Ok(plan) => Ok(plan),
        Err(first) => {
            let mut errors = vec![with_position(first, text)];
            for error in per_route_errors(text, &lookup) {
                if !errors.contains(&error) {
                    errors.push(error);
                }
            }
            errors.sort_by_key(|error| route_index(&error.path));
            Err(errors)
        }
    }
}

/// Faults are listed in route order; top-level ones first.
fn route_index(path: &str) -> Option<usize> {
    path.strip_prefix("routes[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// A JSON syntax error has no useful path; say where in the file it is instead.
fn with_position(error: ConfigError, text: &[u8]) -> ConfigError {
    match serde_json::from_slice::<Value>(text) {
        Err(syntax) => ConfigError::new(
            error.path,
            format!(
                "{} (line {}, column {})",
                error.message,
                syntax.line(),
                syntax.column()
            ),
        ),
        Ok(_) => error,
    }
}

fn per_route_errors(text: &[u8], env: &dyn config::EnvLookup) -> Vec<ConfigError> {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(text) else {
        return Vec::new();
    };
    let Some(Value::Array(routes)) = top.get("routes") else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let mut single: Map<String, Value> = top.clone();
        single.insert("routes".into(), Value::Array(vec![route.clone()]));
        let Ok(bytes) = serde_json::to_vec(&Value::Object(single)) else {
            continue;
        };
        if let Err(error) = plan::parse_and_compile(&bytes, env) {
            errors.push(reindex(error, index));
        }
    }
    errors
}

/// `routes[0]...` → `routes[index]...`
fn reindex(error: ConfigError, index: usize) -> ConfigError {
    match error.path.strip_prefix("routes[0]") {
        Some(rest) => ConfigError::new(format!("routes[{index}]{rest}"), error.message),
        None => error,
    }
}

pub fn run(
    options: &Options,
    process_env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let text = read_input(&options.config)?;
    let env = CliEnv::new(options, process_env);
    let name = display_name(&options.config);
    match compile_all(&text, &env) {
        Ok(plan) => {
            let _ = writeln!(out, "{name}: valid, {} route(s)", plan.routes.len());
            for route in &plan.routes {
                let _ = writeln!(out, "  {}", describe_route(route));
            }
            if plan.allow_on_headers_stop_iteration {
                let _ = writeln!(
                    out,
                    "  note: allow_on_headers_stop_iteration is set: the Envoy PluginConfig must set it too (mode A)"
                );
            }
            if plan.secrets.too_short() > 0 {
                let _ = writeln!(
                    out,
                    "  note: {} secret(s) shorter than {} bytes: not redacted from answers (docs/CONFIG.md, Secrets in answers)",
                    plan.secrets.too_short(),
                    aigate_core::secrets::MIN_SECRET_LEN
                );
            }
            Ok(EXIT_OK)
        }
        Err(errors) => {
            let _ = writeln!(out, "{name}: invalid, {} error(s)", errors.len());
            for error in &errors {
                let path = if error.path.is_empty() {
                    "(top level)"
                } else {
                    &error.path
                };
                let _ = writeln!(out, "  {path}: {}", error.message);
            }
            Ok(EXIT_INVALID)
        }
    }
}

pub fn display_name(path: &str) -> &str {
    if path == "-" {
        "<stdin>"
    } else {
        path
    }
}

/// One line per route: name, provider and what it matches.
pub fn describe_route(route: &plan::Route) -> String {
    let provider = &route.provider;
    let auth = match &provider.auth {
        config::Auth::Key(_) => format!("key in {}", provider.spec().credential_header),
        config::Auth::Passthrough => "client's credential".to_string(),
        config::Auth::None => "none".to_string(),
    };
    format!(
        "{}: {} at {} (auth: {auth}), match {}",
        route.name,
        provider.kind.as_str(),
        provider.authority,
        describe_matcher(&route.matcher)
    )
}

pub fn describe_matcher(matcher: &plan::RouteMatcher) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &matcher.route_name {
        parts.push(format!("route_name={name}"));
    }
    if !matcher.hosts.is_empty() {
        parts.push(format!("hosts={}", matcher.hosts.join(",")));
    }
    if let Some(prefix) = &matcher.path_prefix {
        parts.push(format!("path_prefix={prefix}"));
    }
    for (name, value) in &matcher.headers {
        parts.push(format!("header {name}={value}"));
    }
    if parts.is_empty() {
        "everything".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn check(text: &str, options: &Options) -> Result<Plan, Vec<ConfigError>> {
        compile_all(text.as_bytes(), &CliEnv::new(options, &no_env))
    }

    #[test]
    fn lists_a_fault_per_route_with_real_indexes() {
        let text = r#"{"routes":[
            {"name":"a","provider":{"kind":"openai","auth":{"key":{"env":"A_KEY"}}}},
            {"name":"b","provider":{"kind":"openai","auth":{"none":true}}},
            {"name":"c","provider":{"kind":"openai","auth":{"none":true},"path":"v1"}}]}"#;
        let errors = check(text, &Options::default()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["routes[0].provider.auth.key.env", "routes[2].provider.path"]
        );
    }

    #[test]
    fn env_overrides_and_placeholders() {
        let text = r#"{"routes":[{"name":"a","provider":{"kind":"openai","auth":{"key":{"env":"A_KEY"}}}}]}"#;
        let with_env = Options {
            env: vec![("A_KEY".into(), "sk-x".into())],
            ..Options::default()
        };
        assert!(check(text, &with_env).is_ok());
        let placeholder = Options {
            placeholder_env: true,
            ..Options::default()
        };
        assert!(check(text, &placeholder).is_ok());
    }

    #[test]
    fn syntax_errors_say_where() {
        let errors = check("{\"routes\": [\n  {,}]}", &Options::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("line 2"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn top_level_faults_are_reported_once() {
        let errors = check(r#"{"routes":[],"wat":1}"#, &Options::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("wat"));
    }

    #[test]
    fn duplicate_names_are_found() {
        let route = r#"{"name":"a","provider":{"kind":"openai","auth":{"none":true}}}"#;
        let errors = check(
            &format!(r#"{{"routes":[{route},{route}]}}"#),
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(errors[0].path, "routes[1].name");
    }
}
