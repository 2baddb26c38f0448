//! A proxy-wasm HTTP filter that does nothing: every callback takes the SDK's default
//! (`Continue`). Envoy still crosses into the VM for each request and response phase, which
//! is the cost every Wasm filter pays before it does any work.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Noop) });
}}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}
