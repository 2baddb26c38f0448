//! The `aigate` binary end to end: exit codes, JSON paths, redaction, dry runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const SECRET: &str = "sk-live-do-not-print-4242";

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aigate"));
    command.env_remove("OPENAI_API_KEY");
    command
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aigate-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn run(args: &[&str]) -> (i32, String, String) {
    let output: Output = bin().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CONFIG: &str = r#"{"routes":[
  {"name":"internal","match":{"route_name":"vllm"},
   "provider":{"kind":"openai_compatible","authority":"vllm.internal","auth":{"none":true}}},
  {"name":"chat","match":{"hosts":["llm.example.com"]},
   "provider":{"kind":"openai","auth":{"key":{"env":"OPENAI_API_KEY"}},"models":{"fast":"gpt-4o-mini"}}}]}"#;

const REQUEST: &str = r#"{"model":"fast","messages":[{"role":"user","content":"hello"}]}"#;

#[test]
fn check_accepts_a_valid_config() {
    let config = temp_file("valid.json", CONFIG);
    let env = format!("OPENAI_API_KEY={SECRET}");
    let (code, out, _) = run(&["check", config.to_str().unwrap(), "--env", &env]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid, 2 route(s)"), "{out}");
    assert!(out.contains("chat: openai at api.openai.com"), "{out}");
    assert!(!out.contains(SECRET));
}

#[test]
fn check_uses_the_process_environment() {
    let config = temp_file("env.json", CONFIG);
    let output = bin()
        .args(["check", config.to_str().unwrap()])
        .env("OPENAI_API_KEY", SECRET)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn check_reports_every_fault_with_its_json_path() {
    let config = temp_file(
        "invalid.json",
        r#"{"routes":[
          {"name":"a","provider":{"kind":"openai","auth":{"key":{"env":"OPENAI_API_KEY"}}}},
          {"name":"b","provider":{"kind":"openai","auth":{"none":true}},"match":{"path_prefix":"v1"}},
          {"name":"c","provider":{"kind":"openai","auth":{"none":true},"colour":"red"}}]}"#,
    );
    let (code, out, _) = run(&["check", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("invalid, 3 error(s)"), "{out}");
    assert!(
        out.contains("routes[0].provider.auth.key.env: environment variable \"OPENAI_API_KEY\""),
        "{out}"
    );
    assert!(
        out.contains("routes[1].match.path_prefix: must start with '/'"),
        "{out}"
    );
    assert!(
        out.contains("routes[2].provider.colour: unknown field `colour`"),
        "{out}"
    );
    let first = out.find("routes[0]").unwrap();
    assert!(
        first < out.find("routes[1]").unwrap() && first < out.find("routes[2]").unwrap(),
        "in route order: {out}"
    );
}

#[test]
fn check_placeholder_env_for_ci() {
    let config = temp_file("placeholder.json", CONFIG);
    let (code, out, _) = run(&["check", config.to_str().unwrap(), "--placeholder-env"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn check_reads_standard_input_and_locates_syntax_errors() {
    let mut child = bin()
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"routes\": [\n  {oops}]}")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        out.contains("<stdin>: invalid") && out.contains("line 2"),
        "{out}"
    );
}

#[test]
fn check_refuses_trailing_bytes_after_the_config() {
    for (name, tail) in [
        ("garbage", " xyz\n"),
        ("two-documents", "\n{\"routes\": []}\n"),
    ] {
        let config = temp_file(&format!("trailing-{name}.json"), &format!("{CONFIG}{tail}"));
        let (code, out, _) = run(&["check", config.to_str().unwrap(), "--placeholder-env"]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(
            out.contains("invalid")
                && out.contains("trailing characters after the config's JSON document"),
            "{name}: {out}"
        );
    }
    // The same config without the tail passes: the tail is what is refused.
    let config = temp_file("trailing-none.json", &format!("{CONFIG}\n\n"));
    let (code, out, _) = run(&["check", config.to_str().unwrap(), "--placeholder-env"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["frobnicate"]).0, 2);
    let (code, _, err) = run(&["check", "/nonexistent/aigate.json"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read /nonexistent/aigate.json"),
        "{err}"
    );
    assert_eq!(run(&["help"]).0, 0);
}

#[test]
fn explain_shows_route_upstream_request_and_redacts_credentials() {
    let config = temp_file("explain.json", CONFIG);
    let request = temp_file("request.json", REQUEST);
    let env = format!("OPENAI_API_KEY={SECRET}");
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--env",
        &env,
        "--host",
        "llm.example.com",
        "--route-name",
        "public",
        "-H",
        "x-api-key: client-secret-value",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("skipped routes[0] internal: route_name is not vllm"),
        "{out}"
    );
    assert!(out.contains("Route: chat (routes[1]) matched"), "{out}");
    assert!(
        out.contains("Result: the request goes upstream as:"),
        "{out}"
    );
    assert!(out.contains(":authority: api.openai.com"), "{out}");
    assert!(out.contains("authorization: <redacted>"), "{out}");
    assert!(out.contains("\"model\": \"gpt-4o-mini\""), "{out}");
    assert!(
        out.contains("~ /model: \"fast\" -> \"gpt-4o-mini\""),
        "{out}"
    );
    assert!(!out.contains(SECRET), "the provider key leaked:\n{out}");
    assert!(
        !out.contains("client-secret-value"),
        "the client's key must be dropped:\n{out}"
    );
}

#[test]
fn explain_shows_local_rejections() {
    let config = temp_file("reject.json", CONFIG);
    let request = temp_file(
        "bad-model.json",
        r#"{"model":"smart","messages":[{"role":"user","content":"x"}]}"#,
    );
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--placeholder-env",
        "--host",
        "llm.example.com",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answers the client itself with 400"), "{out}");
    assert!(out.contains("model_not_found"), "{out}");
}

#[test]
fn explain_without_a_matching_route_passes_through() {
    let config = temp_file("nomatch.json", CONFIG);
    let request = temp_file("nomatch-request.json", REQUEST);
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--placeholder-env",
        "--host",
        "elsewhere.example.com",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no route matched"), "{out}");
}

#[test]
fn explain_runs_the_response_path() {
    let config = temp_file("response.json", CONFIG);
    let request = temp_file(
        "stream-request.json",
        r#"{"model":"fast","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
    );
    let answer = temp_file(
        "answer.sse",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
         data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
         data: [DONE]\n\n",
    );
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--placeholder-env",
        "--host",
        "llm.example.com",
        "--upstream-response",
        answer.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("usage: gen_ai.provider.name=openai gen_ai.request.model=gpt-4o-mini gen_ai.token.type=output 1"),
        "{out}"
    );
    assert!(out.contains("Result: the client receives 200"), "{out}");
    // The client did not ask for usage: the filter's own usage chunk is not passed on.
    let client_body = out.split("Result: the client receives").nth(1).unwrap();
    assert!(!client_body.contains("\"usage\""), "{out}");

    let error = temp_file(
        "error.json",
        r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
    );
    let (_, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--placeholder-env",
        "--host",
        "llm.example.com",
        "--upstream-response",
        error.to_str().unwrap(),
        "--upstream-status",
        "429",
    ]);
    assert!(out.contains("Result: the client receives 429"), "{out}");
    assert!(out.contains("rate_limit_error"), "{out}");
}

#[test]
fn explain_shows_the_cost_of_the_answer() {
    let config = temp_file(
        "priced.json",
        r#"{"pricing":{"gpt-4o-mini":{"input":0.15,"output":0.60,"cached_input":0.075}},
            "routes":[{"name":"chat","provider":{"kind":"openai","auth":{"none":true}}}]}"#,
    );
    let request = temp_file(
        "priced-request.json",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#,
    );
    let answer = temp_file(
        "priced-answer.json",
        r#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":1000,"completion_tokens":500,"prompt_tokens_details":{"cached_tokens":400}}}"#,
    );
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
        "--upstream-response",
        answer.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    // 600 × 0.15 + 400 × 0.075 + 500 × 0.60 = 420 micro-dollars.
    assert!(
        out.contains("cost: gen_ai.provider.name=openai gen_ai.response.model=gpt-4o-mini 420 micro-dollars (USD 0.000420)"),
        "{out}"
    );
    assert!(out.contains("aigate.cost_usd = 0.000420"), "{out}");
}

#[test]
fn explain_refuses_an_invalid_config() {
    let config = temp_file("explain-invalid.json", r#"{"routes":[{"name":"x"}]}"#);
    let request = temp_file("explain-invalid-request.json", REQUEST);
    let (code, out, _) = run(&[
        "explain",
        config.to_str().unwrap(),
        request.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing field `provider`"), "{out}");
}

/// Issue 12 item 10: `aigate check` on a config with the credential where an object belongs.
#[test]
fn check_never_prints_a_misplaced_credential() {
    let config = temp_file(
        "slip.json",
        &format!(
            r#"{{"routes":[{{"name":"a","provider":{{"kind":"openai","auth":{{"key":"{SECRET}"}}}}}}]}}"#
        ),
    );
    let (code, out, err) = run(&["check", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].provider.auth.key: invalid type"),
        "{out}"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
}

/// Issue 12 item 9: a secret too short to be redacted from answers is pointed out.
#[test]
fn check_notes_secrets_too_short_to_redact() {
    let config = temp_file(
        "short.json",
        r#"{"routes":[{"name":"a","provider":{"kind":"openai","auth":{"key":{"value":"abc"}}}}]}"#,
    );
    let (code, out, _) = run(&["check", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 secret(s) shorter than 8 bytes: not redacted"),
        "{out}"
    );
    assert!(!out.contains("abc\""), "{out}");
    let config = temp_file("long.json", CONFIG);
    let env = format!("OPENAI_API_KEY={SECRET}");
    let (_, out, _) = run(&["check", config.to_str().unwrap(), "--env", &env]);
    assert!(!out.contains("shorter than"), "{out}");
}
