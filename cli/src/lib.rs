//! `aigate`, the native command line over the filter's own code: `check` validates a plugin
//! config exactly as `on_configure` does, `explain` dry-runs a request through the real
//! `Flow` with an in-memory host. Native only: nothing here touches proxy-wasm.

mod args;
mod check;
mod explain;
mod json_diff;
mod redact;
mod trace;

use std::io::Write;

pub use args::{Command, Options, USAGE};

/// Exit codes: 0 done, 1 the config is invalid, 2 bad usage or an unreadable file.
pub const EXIT_OK: i32 = 0;
pub const EXIT_INVALID: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Runs the CLI with `args` (without the program name); `env` is the process environment.
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let command = match args::parse(args) {
        Ok(command) => command,
        Err(message) => {
            let _ = writeln!(err, "aigate: {message}\n\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let result = match command {
        Command::Help => {
            let _ = write!(out, "{USAGE}");
            return EXIT_OK;
        }
        Command::Version => {
            let _ = writeln!(out, "aigate {}", env!("CARGO_PKG_VERSION"));
            return EXIT_OK;
        }
        Command::Check(options) => check::run(&options, env, out),
        Command::Explain(options, request) => explain::run(&options, &request, env, out),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(err, "aigate: {message}");
            EXIT_USAGE
        }
    }
}

/// Reads a file, or standard input for `-`.
fn read_input(path: &str) -> Result<Vec<u8>, String> {
    if path == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(buffer);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}
