//! A `Host` that counts the calls the pipeline makes. In Envoy every host call is a
//! round trip out of the Wasm VM (about a microsecond each for calls that return data), so
//! the count is a cost: the native microbenchmark (`examples/pipeline_bench.rs`) reports it
//! and tests pin it where the pipeline promises to avoid needless calls.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::host::{Callout, Host, RecordingHost, SharedDataError, SharedEntry};

/// A `RecordingHost` that counts every call the pipeline makes, by name, and the bytes
/// that cross the boundary.
#[derive(Debug, Default)]
pub struct CountingHost {
    pub inner: RecordingHost,
    calls: RefCell<BTreeMap<&'static str, u32>>,
    bytes_in: Cell<usize>,
    bytes_out: Cell<usize>,
}

impl CountingHost {
    pub fn new(inner: RecordingHost) -> Self {
        CountingHost {
            inner,
            ..Default::default()
        }
    }

    /// Calls so far, by name (`get_request_body`, `set_request_header`, ...).
    pub fn calls(&self) -> BTreeMap<&'static str, u32> {
        self.calls.borrow().clone()
    }

    pub fn count_of(&self, name: &str) -> u32 {
        self.calls.borrow().get(name).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u32 {
        self.calls.borrow().values().sum()
    }

    /// Body bytes copied into the VM, and out of it.
    pub fn bytes_in(&self) -> usize {
        self.bytes_in.get()
    }

    pub fn bytes_out(&self) -> usize {
        self.bytes_out.get()
    }

    pub fn reset_counts(&self) {
        self.calls.borrow_mut().clear();
        self.bytes_in.set(0);
        self.bytes_out.set(0);
    }

    fn count(&self, name: &'static str) {
        *self.calls.borrow_mut().entry(name).or_default() += 1;
    }
}

impl Host for CountingHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.count("get_request_headers");
        self.inner.request_headers()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.count(if value.is_some() {
            "set_request_header"
        } else {
            "remove_request_header"
        });
        self.inner.set_request_header(name, value);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.count("get_request_body");
        self.bytes_in.set(self.bytes_in.get() + size);
        self.inner.request_body(size)
    }
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        self.count("set_request_body");
        self.bytes_out.set(self.bytes_out.get() + body.len());
        if old_size >= self.inner.request_body.len() {
            // The pipeline replaces whole bodies: skip RecordingHost's byte-wise splice, which
            // would dominate a microbenchmark of megabyte bodies.
            self.inner.request_body.clear();
            self.inner.request_body.extend_from_slice(body);
        } else {
            self.inner.replace_request_body(old_size, body);
        }
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.count("get_response_header");
        self.inner.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.count(if value.is_some() {
            "set_response_header"
        } else {
            "remove_response_header"
        });
        self.inner.set_response_header(name, value);
    }
    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        self.count("get_response_body");
        self.bytes_in.set(self.bytes_in.get() + size);
        self.inner.response_body(start, size)
    }
    fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]) {
        self.count("set_response_body");
        self.bytes_out.set(self.bytes_out.get() + body.len());
        self.inner.replace_response_body(start, size, body);
    }
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.count("send_response");
        self.inner.send_response(status, headers, body);
    }
    fn resume_request(&mut self) {
        self.count("resume_request");
        self.inner.resume_request();
    }
    fn resume_response(&mut self) {
        self.count("resume_response");
        self.inner.resume_response();
    }
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        self.count("dispatch");
        self.inner.dispatch(callout)
    }
    fn dispatch_detached(&mut self, callout: &Callout) -> Result<(), String> {
        self.count("dispatch_detached");
        self.inner.dispatch_detached(callout)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count("get_property");
        self.inner.property(path)
    }
    fn set_filter_state(&mut self, name: &str, value: &str) {
        self.count("set_filter_state");
        self.inner.set_filter_state(name, value);
    }
    fn now_ms(&self) -> u64 {
        self.count("now");
        self.inner.now_ms()
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        self.count("counter_add");
        self.inner.counter_add(name, delta);
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        self.count("histogram_record");
        self.inner.histogram_record(name, value);
    }
    fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
        self.count("shared_get");
        self.inner.shared_get(key)
    }
    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        self.count("shared_set");
        self.inner.shared_set(key, value, cas)
    }
}
