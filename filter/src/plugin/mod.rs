//! The only proxy-wasm user: root and stream contexts, and the `Host` implementation over
//! the panic-free ABI wrappers in `abi`. Everything else is plain Rust.

mod abi;
mod profile;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, ContextType, LogLevel};

use aigate_core::host::{Callout, CalloutKind, CalloutReply, Host, SharedDataError, SharedEntry};
use aigate_core::pipeline::{Action, Flow};
use aigate_core::plan::{self, Plan};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            id: context_id,
            ..Root::default()
        })
    });
}}

/// Metric ids are per VM (per worker); defining a metric is cached by name.
type MetricIds = Rc<RefCell<HashMap<String, u32>>>;

#[derive(Default)]
struct Root {
    id: u32,
    plan: Option<Rc<Plan>>,
    metrics: MetricIds,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match abi::get_buffer(
            abi::BUFFER_PLUGIN_CONFIGURATION,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("aigate: cannot read the plugin configuration (host status {status})");
                return false;
            }
        };
        let env = |name: &str| std::env::var(name).ok();
        match plan::parse_and_compile(&bytes, &env) {
            Ok(plan) => {
                log::info!("aigate: configured {} route(s)", plan.routes.len());
                if plan.secrets.too_short() > 0 {
                    log::warn!(
                        "aigate: {} configured secret(s) shorter than {} bytes are not redacted from answers",
                        plan.secrets.too_short(),
                        aigate_core::secrets::MIN_SECRET_LEN
                    );
                }
                let mut host = WasmHost {
                    metrics: Rc::clone(&self.metrics),
                    root_id: self.id,
                    stream_id: self.id,
                };
                plan.prepare(&mut host);
                self.plan = Some(Rc::new(plan));
                true
            }
            Err(error) => {
                log::error!("aigate: invalid plugin configuration: {error}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        record_memory(&self.metrics);
        Some(Box::new(Stream {
            flow: self.plan.as_ref().map(|plan| Flow::new(Rc::clone(plan))),
            host: WasmHost {
                metrics: Rc::clone(&self.metrics),
                root_id: self.id,
                stream_id: context_id,
            },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The gauge `aigate.wasm_memory_bytes`: this VM's linear memory, updated as each request
/// starts (workers overwrite each other: it shows the last one). A soak run watches it for
/// growth per request; linear memory never shrinks, so a leak shows as a climbing value.
const MEMORY_GAUGE: &str = "aigate.wasm_memory_bytes";

fn record_memory(metrics: &MetricIds) {
    let bytes = core::arch::wasm32::memory_size(0) as u64 * 65_536;
    let id = metrics.borrow().get(MEMORY_GAUGE).copied();
    let id = match id {
        Some(id) => Some(id),
        None => abi::define_metric(abi::METRIC_GAUGE, MEMORY_GAUGE)
            .ok()
            .inspect(|id| {
                metrics.borrow_mut().insert(MEMORY_GAUGE.to_string(), *id);
            }),
    };
    if let Some(id) = id {
        let _ = abi::record_metric(id, bytes);
    }
}

struct Stream {
    flow: Option<Flow>,
    host: WasmHost,
}

fn to_wasm(action: Action) -> WasmAction {
    match action {
        Action::Continue => WasmAction::Continue,
        Action::Pause => WasmAction::Pause,
    }
}

impl Context for Stream {
    /// The stream ends: an attempt of a route with fallbacks that got no answer is counted
    /// (upstream filters get no `on_log`).
    fn on_done(&mut self) -> bool {
        if let Some(flow) = &mut self.flow {
            flow.on_done(&mut self.host);
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(flow) = &mut self.flow else { return };
        let headers = abi::get_map(abi::MAP_HTTP_CALL_RESPONSE_HEADERS).unwrap_or_default();
        let status = headers
            .iter()
            .find(|(name, _)| name == ":status")
            .and_then(|(_, value)| value.parse::<u16>().ok())
            .unwrap_or(0);
        let body = abi::get_buffer(abi::BUFFER_HTTP_CALL_RESPONSE_BODY, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let reply = CalloutReply {
            status,
            headers,
            body,
            grpc_status: None,
        };
        flow.on_callout_reply(&mut self.host, token_id, reply);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(flow) = &mut self.flow else { return };
        let body = if response_size > 0 {
            abi::get_buffer(abi::BUFFER_GRPC_RECEIVE, 0, response_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let reply = CalloutReply {
            status: if status_code == 0 { 200 } else { 502 },
            headers: Vec::new(),
            body,
            grpc_status: Some(status_code),
        };
        flow.on_callout_reply(&mut self.host, token_id, reply);
    }
}

impl Stream {
    /// Runs one phase of the flow (timed when built with the `phase-profile` feature).
    fn run(
        &mut self,
        phase: profile::Phase,
        step: impl FnOnce(&mut Flow, &mut dyn Host) -> Action,
    ) -> WasmAction {
        let Some(flow) = &mut self.flow else {
            return WasmAction::Continue;
        };
        to_wasm(profile::phase(phase, &mut self.host, |host| {
            step(flow, host)
        }))
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        self.run(profile::Phase::RequestHeaders, |flow, host| {
            flow.on_request_headers(host, end_of_stream)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        self.run(profile::Phase::RequestBody, |flow, host| {
            flow.on_request_body(host, body_size, end_of_stream)
        })
    }

    /// A request that ends with trailers: its end of stream comes here, not with the body.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> WasmAction {
        self.run(profile::Phase::RequestBody, |flow, host| {
            flow.on_request_trailers(host)
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> WasmAction {
        self.run(profile::Phase::ResponseHeaders, |flow, host| {
            flow.on_response_headers(host, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> WasmAction {
        self.run(profile::Phase::ResponseBody, |flow, host| {
            flow.on_response_body(host, body_size, end_of_stream)
        })
    }

    /// An answer that ends with trailers: its end of stream comes here, not with the body.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> WasmAction {
        self.run(profile::Phase::ResponseBody, |flow, host| {
            flow.on_response_trailers(host)
        })
    }

    fn on_log(&mut self) {
        if self.flow.is_some() {
            self.run(profile::Phase::Log, |flow, host| {
                flow.on_log(host);
                Action::Continue
            });
            profile::request_done();
        }
    }
}

struct WasmHost {
    metrics: MetricIds,
    /// The root context of this VM: it lives as long as the VM, so callouts started for it
    /// survive the stream that asked for them.
    root_id: u32,
    /// The stream this host acts for (the root's own id at configure time).
    stream_id: u32,
}

impl WasmHost {
    fn metric_id(&self, kind: u32, name: &str) -> Option<u32> {
        if let Some(id) = self.metrics.borrow().get(name) {
            return Some(*id);
        }
        let id = abi::define_metric(kind, name).ok()?;
        self.metrics.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }
}

fn log_failure(what: &str, status: u32) {
    log::debug!("aigate: {what} failed with host status {status}");
}

impl Host for WasmHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        abi::get_map(abi::MAP_REQUEST_HEADERS).unwrap_or_default()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        if let Err(status) = abi::set_map_value(abi::MAP_REQUEST_HEADERS, name, value) {
            log_failure("setting a request header", status);
        }
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::get_buffer(abi::BUFFER_REQUEST_BODY, 0, size)
            .ok()
            .flatten()
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        if let Err(status) = abi::set_buffer(abi::BUFFER_REQUEST_BODY, 0, old_size, body) {
            log::warn!("aigate: replacing the request body failed with host status {status}");
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        abi::get_map_value(abi::MAP_RESPONSE_HEADERS, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        if let Err(status) = abi::set_map_value(abi::MAP_RESPONSE_HEADERS, name, value) {
            log_failure("setting a response header", status);
        }
    }

    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        abi::get_buffer(abi::BUFFER_RESPONSE_BODY, start, size)
            .ok()
            .flatten()
    }

    fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]) {
        if let Err(status) = abi::set_buffer(abi::BUFFER_RESPONSE_BODY, start, size, body) {
            log::warn!("aigate: replacing the response body failed with host status {status}");
        }
    }

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
        if let Err(code) = abi::send_local_response(u32::from(status), headers, body) {
            log::warn!("aigate: sending a local response failed with host status {code}");
        }
    }

    fn resume_request(&mut self) {
        if let Err(status) = abi::continue_stream(abi::STREAM_REQUEST) {
            log_failure("resuming the request", status);
        }
    }

    fn resume_response(&mut self) {
        if let Err(status) = abi::continue_stream(abi::STREAM_RESPONSE) {
            log_failure("resuming the response", status);
        }
    }

    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        let timeout = Duration::from_millis(callout.timeout_ms);
        match &callout.kind {
            CalloutKind::Http => {
                let headers: Vec<(&str, &str)> = callout
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                proxy_wasm::hostcalls::dispatch_http_call(
                    &callout.cluster,
                    headers,
                    Some(&callout.body),
                    Vec::new(),
                    timeout,
                )
                .map_err(|status| format!("{status:?}"))
            }
            CalloutKind::Grpc { service, method } => {
                let metadata: Vec<(&str, &[u8])> = callout
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes()))
                    .collect();
                proxy_wasm::hostcalls::dispatch_grpc_call(
                    &callout.cluster,
                    service,
                    method,
                    metadata,
                    Some(&callout.body),
                    timeout,
                )
                .map_err(|status| format!("{status:?}"))
            }
        }
    }

    fn dispatch_detached(&mut self, callout: &Callout) -> Result<(), String> {
        if self.root_id == self.stream_id || abi::set_effective_context(self.root_id).is_err() {
            return self.dispatch(callout).map(|_| ());
        }
        let result = self.dispatch(callout).map(|_| ());
        if let Err(status) = abi::set_effective_context(self.stream_id) {
            log::warn!("aigate: cannot return to the stream context after a detached callout (host status {status})");
        }
        result
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::get_property(path).ok().flatten()
    }

    fn set_filter_state(&mut self, name: &str, value: &str) {
        if let Err(status) = abi::set_property(&[name], value.as_bytes()) {
            log_failure("setting filter state", status);
        }
    }

    fn now_ms(&self) -> u64 {
        abi::now_nanos().map(|nanos| nanos / 1_000_000).unwrap_or(0)
    }

    fn counter_add(&mut self, name: &str, delta: u64) {
        if let Some(id) = self.metric_id(abi::METRIC_COUNTER, name) {
            let _ = abi::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }

    fn histogram_record(&mut self, name: &str, value: u64) {
        if let Some(id) = self.metric_id(abi::METRIC_HISTOGRAM, name) {
            let _ = abi::record_metric(id, value);
        }
    }

    fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
        abi::get_shared_data(key).map_err(|status| {
            log::warn!("aigate: reading shared data {key} failed with host status {status}");
            SharedDataError::Other
        })
    }

    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        abi::set_shared_data(key, value, cas).map_err(|status| {
            if status == abi::STATUS_CAS_MISMATCH {
                SharedDataError::CasMismatch
            } else {
                SharedDataError::Other
            }
        })
    }
}
