//! Native microbenchmark of the request pipeline: where the filter's time goes, without
//! Envoy or V8. Drives `Flow` phase by phase through `RecordingHost` (as the Wasm glue
//! would) for 1 KB, 32 KB and 1 MB prompts and a 200-event stream, and counts the host
//! calls each request makes (in Envoy every one is a crossing out of the VM).
//!
//!     cargo run --release --example pipeline_bench [-- integration/bench/route.json]
//!
//! `PIPELINE_BENCH_GENERAL=1` sends every body through the general `Value` path (no
//! in-place rewrite), to compare the two. `PIPELINE_BENCH_ONLY="32 KB"` runs one scenario; `PIPELINE_BENCH_ITERS=20` a fixed number
//! of requests, for instruction counts that compare across changes:
//!
//!     PIPELINE_BENCH_ITERS=20 valgrind --tool=callgrind target/release/examples/pipeline_bench
//!
//! Times are medians per request in microseconds. V8 runs the same code a few times
//! slower than native, and each host call costs extra there: read it for proportions.

use std::rc::Rc;
use std::time::{Duration, Instant};

use aigate_core::counting_host::CountingHost;
use aigate_core::host::RecordingHost;
use aigate_core::pipeline::Flow;
use aigate_core::plan::{parse_and_compile, Plan};

const DEFAULT_ROUTE: &str = "integration/bench/route.json";
const FALLBACK_ROUTE: &str = "integration/bench/route-noguards.json";
const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! The quick brown fox jumps over the lazy dog. Write to bench.user@example.com if needed."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":21,"total_tokens":271}}"#;

// ---------------------------------------------------------------- workload

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "shows",
    "revenue",
    "growth",
    "across",
    "all",
    "regions",
    "while",
    "operating",
    "costs",
    "remained",
    "stable",
    "please",
    "summarise",
    "the",
    "main",
    "risks",
    "and",
    "suggest",
    "three",
    "actions",
    "for",
    "the",
    "next",
    "planning",
    "cycle",
];

/// A chat body of about `size` bytes: ~4 KB messages of prose with an e-mail address and a
/// phone number every ~2 KB (as integration/bench/workload.py builds them).
fn chat_body(size: usize, stream: bool) -> Vec<u8> {
    let mut text = String::with_capacity(size);
    let mut seed = size as u64 | 1;
    let mut since_pii = 1500;
    while text.len() + 80 < size.saturating_sub(120) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if since_pii > 2000 {
            text.push_str(if seed & 1 == 0 {
                "contact jane.doe@example.com for details "
            } else {
                "call 415-555-0134 after lunch "
            });
            since_pii = 0;
        } else {
            let word = WORDS[(seed >> 33) as usize % WORDS.len()];
            text.push_str(word);
            text.push(' ');
            since_pii += word.len() + 1;
        }
    }
    let mut messages =
        vec![serde_json::json!({"role": "system", "content": "You are a concise assistant."})];
    let parts: Vec<&str> = text
        .as_bytes()
        .chunks(4000)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    for (index, part) in parts.iter().enumerate() {
        let role = if (parts.len() - 1 - index).is_multiple_of(2) {
            "user"
        } else {
            "assistant"
        };
        messages.push(serde_json::json!({"role": role, "content": part}));
    }
    let mut body = serde_json::json!({"model": "gpt-4o-mini", "messages": messages});
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

fn sse_events(count: usize) -> Vec<Vec<u8>> {
    let head = r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"#;
    let mut out = Vec::with_capacity(count + 2);
    for index in 0..count {
        let delta = if index == 0 {
            r#""role":"assistant","content":""}"#.to_string()
        } else {
            format!(r#""content":"tok{index} "}}"#)
        };
        let finish = if index + 1 == count {
            r#""stop""#
        } else {
            "null"
        };
        out.push(format!("{head}{delta},\"finish_reason\":{finish}}}]}}\n\n").into_bytes());
    }
    out.push(format!("data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":250,\"completion_tokens\":{count},\"total_tokens\":{}}}}}\n\n", 250 + count).into_bytes());
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

// ---------------------------------------------------------------- one request

#[derive(Default, Clone, Copy)]
struct Phases {
    request_headers: Duration,
    request_body: Duration,
    response_headers: Duration,
    response_body: Duration,
}

fn new_host(body: &[u8]) -> CountingHost {
    let mut inner = RecordingHost::new();
    inner.request_headers = vec![
        (":method".into(), "POST".into()),
        (":path".into(), "/v1/chat/completions".into()),
        (":authority".into(), "127.0.0.1:10000".into()),
        (":scheme".into(), "http".into()),
        ("authorization".into(), "Bearer sk-client-key".into()),
        ("content-type".into(), "application/json".into()),
        ("content-length".into(), body.len().to_string()),
        ("user-agent".into(), "bench".into()),
        (
            "x-request-id".into(),
            "0f2c7e7a-5d1c-4a4e-9f0e-3c1b2a9d8e7f".into(),
        ),
    ];
    inner.request_body = body.to_vec();
    inner.set_property_value(&["xds", "route_name"], b"bench");
    CountingHost::new(inner)
}

/// One request through every phase; returns the time per phase.
fn one_request(plan: &Rc<Plan>, body: &[u8], stream: Option<&[Vec<u8>]>) -> (Phases, CountingHost) {
    let mut host = new_host(body);
    let mut flow = Flow::new(Rc::clone(plan));
    flow.set_in_place(std::env::var_os("PIPELINE_BENCH_GENERAL").is_none());
    let mut phases = Phases::default();

    let t = Instant::now();
    flow.on_request_headers(&mut host, false);
    phases.request_headers = t.elapsed();

    let t = Instant::now();
    flow.on_request_body(&mut host, body.len(), true);
    phases.request_body = t.elapsed();

    let content_type = if stream.is_some() {
        "text/event-stream"
    } else {
        "application/json"
    };
    host.inner.response_headers = vec![
        (":status".into(), "200".into()),
        ("content-type".into(), content_type.into()),
    ];
    let t = Instant::now();
    flow.on_response_headers(&mut host, false);
    phases.response_headers = t.elapsed();

    let chunks: Vec<&[u8]> = match stream {
        Some(events) => events.iter().map(Vec::as_slice).collect(),
        None => vec![COMPLETION.as_bytes()],
    };
    let mut elapsed = Duration::ZERO;
    for (index, chunk) in chunks.iter().enumerate() {
        host.inner.response_body = chunk.to_vec();
        let end = index + 1 == chunks.len();
        let t = Instant::now();
        flow.on_response_body(&mut host, chunk.len(), end);
        elapsed += t.elapsed();
    }
    let t = Instant::now();
    flow.on_log(&mut host);
    phases.response_body = elapsed + t.elapsed();
    (phases, host)
}

fn median(mut values: Vec<Duration>) -> f64 {
    values.sort();
    values
        .get(values.len() / 2)
        .map(|d| d.as_secs_f64() * 1e6)
        .unwrap_or(f64::NAN)
}

fn load_plan() -> (String, Rc<Plan>) {
    let requested = std::env::args().nth(1);
    let env = |_: &str| None;
    for path in requested
        .iter()
        .map(String::as_str)
        .chain([DEFAULT_ROUTE, FALLBACK_ROUTE])
    {
        let Ok(text) = std::fs::read(path) else {
            eprintln!("cannot read {path}");
            continue;
        };
        match parse_and_compile(&text, &env) {
            Ok(plan) => return (path.to_string(), Rc::new(plan)),
            Err(error) => eprintln!("{path}: {error}"),
        }
    }
    eprintln!("no usable route config; run from the repository root");
    std::process::exit(1);
}

fn main() {
    let (route, plan) = load_plan();
    println!("pipeline_bench: native, RecordingHost, route {route}");
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "scenario", "req hdrs", "req body", "resp hdrs", "resp body", "total", "iters"
    );
    let events = sse_events(200);
    let cases: [(&str, usize, bool); 4] = [
        ("1 KB", 1024, false),
        ("32 KB", 32 * 1024, false),
        ("1 MB", 1_000_000, false),
        ("stream 200", 1024, true),
    ];
    let only = std::env::var("PIPELINE_BENCH_ONLY").ok();
    // A fixed count makes instruction counts comparable (`valgrind --tool=callgrind`).
    let fixed_iters: Option<usize> = std::env::var("PIPELINE_BENCH_ITERS")
        .ok()
        .and_then(|n| n.parse().ok());
    let mut calls_report = Vec::new();
    for (name, size, stream) in cases {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let body = chat_body(size, stream);
        let stream_chunks = stream.then_some(events.as_slice());
        // Warm up, then run for about half a second (at least 20 requests).
        let _ = one_request(&plan, &body, stream_chunks);
        let mut samples: Vec<Phases> = Vec::new();
        let started = Instant::now();
        while match fixed_iters {
            Some(n) => samples.len() < n,
            None => {
                samples.len() < 20
                    || (started.elapsed() < Duration::from_millis(500) && samples.len() < 5000)
            }
        } {
            samples.push(one_request(&plan, &body, stream_chunks).0);
        }
        let (_, host) = one_request(&plan, &body, stream_chunks);
        let pick = |f: fn(&Phases) -> Duration| median(samples.iter().map(f).collect());
        let total =
            pick(|p| p.request_headers + p.request_body + p.response_headers + p.response_body);
        println!(
            "{:<12} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7}",
            name,
            pick(|p| p.request_headers),
            pick(|p| p.request_body),
            pick(|p| p.response_headers),
            pick(|p| p.response_body),
            total,
            samples.len()
        );
        calls_report.push((
            name,
            host.total(),
            host.calls(),
            host.bytes_in(),
            host.bytes_out(),
        ));
    }
    println!();
    println!("request body steps (median µs): parse, clone, serialize with serde_json and with aigate_core::json");
    for (name, size, stream) in cases {
        // Under a fixed count (callgrind) these timed steps would only add noise.
        if only.as_deref().is_some_and(|only| only != name) || stream || fixed_iters.is_some() {
            continue;
        }
        let body = chat_body(size, false);
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let runs = if size > 100_000 { 40 } else { 400 };
        let step = |f: &dyn Fn()| {
            median(
                (0..runs)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let parse = step(&|| {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).ok());
        });
        let clone = step(&|| {
            std::hint::black_box(value.clone());
        });
        let serde = step(&|| {
            std::hint::black_box(serde_json::to_vec(&value).ok());
        });
        let fast = step(&|| {
            std::hint::black_box(aigate_core::json::to_vec(&value, body.len()));
        });
        println!(
            "  {name:<12} parse {parse:>8.1}  clone {clone:>8.1}  serde_json {serde:>8.1}  aigate_core::json {fast:>8.1}"
        );
    }
    println!();
    println!("host calls per request (each one leaves the VM in Envoy):");
    for (name, count, calls, bytes_in, bytes_out) in calls_report {
        let list: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  {name:<12} {count:>4} calls, {bytes_in} bytes read, {bytes_out} bytes written: {}",
            list.join(", ")
        );
    }
}
