//! Command-line parsing, by hand: the surface is small and a parser crate would not pay.

pub const USAGE: &str = "\
usage:
  aigate check CONFIG.json [--env NAME=VALUE]... [--placeholder-env]
  aigate explain CONFIG.json REQUEST.json [options]
  aigate help | version

check     validates a plugin config exactly as the filter's on_configure does and prints
          each fault with its JSON path. Exit 0 valid, 1 invalid, 2 bad usage.
explain   dry-runs one request through the filter's real request pipeline and prints the
          route that matched, the stages and their outcomes, the callouts they make, and the
          upstream request that would be sent (credentials redacted).

CONFIG.json and REQUEST.json may be '-' for standard input (not both).

secrets (both commands):
  --env NAME=VALUE        set a variable of the Wasm VM's environment (repeatable); the
                          process environment is used for the others
  --placeholder-env       a secret {\"env\": NAME} that is not set resolves to a placeholder
                          instead of being an error (CI checks of manifests)

explain options:
  --route-name NAME       Envoy's route name (xds.route_name) the request arrives on
  --host HOST             :authority (default localhost)
  --path PATH             :path (default /v1/chat/completions)
  --method METHOD         :method (default POST)
  -H, --header 'K: V'     a request header (repeatable)
  --callout-reply FILE    the answer to the next callout a stage dispatches (repeatable, used
                          in order): {\"status\":200,\"headers\":{\"k\":\"v\"},\"body\":<JSON or string>}.
                          Without one the dry run stops at the first callout and says so.
  --upstream-response FILE  also run the response path with this provider answer (JSON, or
                          SSE when it starts with 'data:' or 'event:')
  --upstream-status N     status of that answer (default 200)
  --upstream-header 'K: V'  a header of that answer (repeatable; content-type is guessed)
";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub config: String,
    pub env: Vec<(String, String)>,
    pub placeholder_env: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    pub request: String,
    pub route_name: Option<String>,
    pub host: String,
    pub path: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub callout_replies: Vec<String>,
    pub upstream_response: Option<String>,
    pub upstream_status: u16,
    pub upstream_headers: Vec<(String, String)>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            request: String::new(),
            route_name: None,
            host: "localhost".into(),
            path: "/v1/chat/completions".into(),
            method: "POST".into(),
            headers: Vec::new(),
            callout_replies: Vec::new(),
            upstream_response: None,
            upstream_status: 200,
            upstream_headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Check(Options),
    Explain(Options, Box<RequestOptions>),
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("missing command".into());
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "version" | "-V" | "--version" => Ok(Command::Version),
        "check" => {
            let (options, _, positional) = parse_options(rest, false)?;
            match positional.as_slice() {
                [config] => Ok(Command::Check(Options {
                    config: config.clone(),
                    ..options
                })),
                _ => Err("check takes exactly one CONFIG.json".into()),
            }
        }
        "explain" => {
            let (options, request, positional) = parse_options(rest, true)?;
            match positional.as_slice() {
                [config, body] => {
                    if config == "-" && body == "-" {
                        return Err(
                            "CONFIG.json and REQUEST.json cannot both be standard input".into()
                        );
                    }
                    Ok(Command::Explain(
                        Options {
                            config: config.clone(),
                            ..options
                        },
                        Box::new(RequestOptions {
                            request: body.clone(),
                            ..request
                        }),
                    ))
                }
                _ => Err("explain takes CONFIG.json and REQUEST.json".into()),
            }
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_options(
    args: &[String],
    explain: bool,
) -> Result<(Options, RequestOptions, Vec<String>), String> {
    let mut options = Options::default();
    let mut request = RequestOptions::default();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--env" => {
                let pair = value("--env")?;
                let (name, val) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
                if name.is_empty() {
                    return Err(format!("--env {pair:?}: the name is empty"));
                }
                options.env.push((name.to_string(), val.to_string()));
            }
            "--placeholder-env" => options.placeholder_env = true,
            "--route-name" if explain => request.route_name = Some(value(arg)?),
            "--host" if explain => request.host = value(arg)?,
            "--path" if explain => {
                request.path = value(arg)?;
                if !request.path.starts_with('/') {
                    return Err("--path must start with '/'".into());
                }
            }
            "--method" if explain => request.method = value(arg)?.to_ascii_uppercase(),
            "-H" | "--header" if explain => request.headers.push(header(&value(arg)?)?),
            "--callout-reply" if explain => request.callout_replies.push(value(arg)?),
            "--upstream-response" if explain => request.upstream_response = Some(value(arg)?),
            "--upstream-status" if explain => {
                let text = value(arg)?;
                request.upstream_status = text
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| {
                        format!("--upstream-status {text:?}: expected an HTTP status")
                    })?;
            }
            "--upstream-header" if explain => request.upstream_headers.push(header(&value(arg)?)?),
            "-" => positional.push(arg.clone()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => positional.push(arg.clone()),
        }
    }
    Ok((options, request, positional))
}

/// `name: value` (or `name:value`); the name is lower-cased as HTTP/2 requires.
fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .filter(|(name, _)| !name.trim().is_empty())
        .ok_or_else(|| format!("header {text:?}: expected 'name: value'"))?;
    Ok((
        name.trim().to_ascii_lowercase(),
        value.trim_start().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_check() {
        let command = parse(&args(
            "check c.json --env A=1 --env B=x=y --placeholder-env",
        ))
        .unwrap();
        assert_eq!(
            command,
            Command::Check(Options {
                config: "c.json".into(),
                env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
                placeholder_env: true,
            })
        );
    }

    #[test]
    fn parses_explain() {
        let command = parse(&args(
            "explain c.json r.json --route-name llm --host h --path /x -H x-user:1 --callout-reply a.json --upstream-status 429",
        ))
        .unwrap();
        let Command::Explain(options, request) = command else {
            panic!()
        };
        assert_eq!(options.config, "c.json");
        assert_eq!(request.request, "r.json");
        assert_eq!(request.route_name.as_deref(), Some("llm"));
        assert_eq!(request.host, "h");
        assert_eq!(request.path, "/x");
        assert_eq!(
            request.headers,
            vec![("x-user".to_string(), "1".to_string())]
        );
        assert_eq!(request.callout_replies, vec!["a.json".to_string()]);
        assert_eq!(request.upstream_status, 429);
    }

    #[test]
    fn refuses_bad_usage() {
        for bad in [
            "",
            "frobnicate",
            "check",
            "check a b",
            "check a --env X",
            "check a --host h",
            "explain a",
            "explain - -",
            "explain a b --path x",
            "explain a b --upstream-status 9999",
            "explain a b -H nocolon",
            "explain a b --wat",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} should be refused");
        }
    }
}
