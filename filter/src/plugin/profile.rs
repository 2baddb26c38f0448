//! Where the filter's time goes inside Envoy. Built with `--features phase-profile` (as
//! `make bench` does for its profile pass), every phase callback and every host call is
//! timed with the host clock, and every `REPORT_EVERY` requests one log line gives the
//! averages per request. Without the feature, `phase` is a plain call and nothing is kept.

#[derive(Debug, Clone, Copy)]
pub enum Phase {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Log,
}

#[cfg(not(feature = "phase-profile"))]
#[inline(always)]
pub fn phase<T>(
    _phase: Phase,
    host: &mut dyn aigate_core::host::Host,
    run: impl FnOnce(&mut dyn aigate_core::host::Host) -> T,
) -> T {
    run(host)
}

#[cfg(not(feature = "phase-profile"))]
#[inline(always)]
pub fn request_done() {}

#[cfg(feature = "phase-profile")]
pub use timed::{phase, request_done};

#[cfg(feature = "phase-profile")]
mod timed {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    use super::Phase;
    use crate::plugin::abi;
    use aigate_core::host::{Callout, Host, SharedDataError, SharedEntry};

    const REPORT_EVERY: u64 = 1000;
    /// Slow requests (megabyte prompts) report at least this often, after a few requests.
    const REPORT_AFTER_NS: u64 = 2_000_000_000;
    const PHASES: [&str; 5] = [
        "request_headers",
        "request_body",
        "response_headers",
        "response_body",
        "log",
    ];

    #[derive(Default)]
    struct Totals {
        requests: u64,
        since_ns: u64,
        /// Per phase: nanoseconds, callbacks, host calls made inside.
        phases: [(u64, u64, u64); 5],
        /// Per host call: nanoseconds, calls.
        host: BTreeMap<&'static str, (u64, u64)>,
    }

    thread_local! {
        static TOTALS: RefCell<Totals> = RefCell::new(Totals::default());
    }

    fn now() -> u64 {
        abi::now_nanos().unwrap_or(0)
    }

    pub fn phase<T>(phase: Phase, host: &mut dyn Host, run: impl FnOnce(&mut dyn Host) -> T) -> T {
        let mut timed = Timed {
            inner: host,
            calls: Cell::new(0),
        };
        let start = now();
        let out = run(&mut timed);
        let elapsed = now().saturating_sub(start);
        let calls = timed.calls.get();
        TOTALS.with(|totals| {
            if let Some(slot) = totals.borrow_mut().phases.get_mut(phase as usize) {
                slot.0 += elapsed;
                slot.1 += 1;
                slot.2 += calls;
            }
        });
        out
    }

    /// Called once per request (at the log phase); reports every `REPORT_EVERY` requests (or
    /// `REPORT_AFTER_NS`).
    pub fn request_done() {
        TOTALS.with(|totals| {
            let mut totals = totals.borrow_mut();
            totals.requests += 1;
            let now = now();
            if totals.since_ns == 0 {
                totals.since_ns = now;
            }
            let slow =
                totals.requests >= 20 && now.saturating_sub(totals.since_ns) >= REPORT_AFTER_NS;
            if totals.requests >= REPORT_EVERY || slow {
                log::warn!("{}", report(&totals));
                *totals = Totals::default();
            }
        });
    }

    /// One line: `aigate profile: <n> requests, clock read <c> us; in-VM us/request: total
    /// <t>, <phase> <us> (<calls> host calls) ...; host us/call: <name> <count>x<us> ...`.
    /// Times are corrected for the clock reads the profiling itself adds.
    fn report(totals: &Totals) -> String {
        let clock = clock_cost_ns();
        let n = totals.requests.max(1) as f64;
        let mut total = 0.0;
        let mut phases = Vec::new();
        for (name, (ns, _callbacks, calls)) in PHASES.iter().zip(totals.phases.iter()) {
            let own = (*ns as f64 - (*calls as f64) * 2.0 * clock).max(0.0) / n / 1000.0;
            total += own;
            phases.push(format!(
                "{name} {own:.1} ({:.1} host calls)",
                *calls as f64 / n
            ));
        }
        let host: Vec<String> = totals
            .host
            .iter()
            .map(|(name, (ns, calls))| {
                let per_call =
                    (*ns as f64 - *calls as f64 * clock).max(0.0) / (*calls).max(1) as f64 / 1000.0;
                format!("{name} {:.2}x{per_call:.2}", *calls as f64 / n)
            })
            .collect();
        format!(
            "aigate profile: {} requests, clock read {:.2} us; in-VM us/request: total {total:.1}, {}; host us/call: {}",
            totals.requests,
            clock / 1000.0,
            phases.join(", "),
            host.join(", ")
        )
    }

    fn clock_cost_ns() -> f64 {
        const READS: u64 = 64;
        let start = now();
        for _ in 0..READS {
            let _ = now();
        }
        now().saturating_sub(start) as f64 / (READS + 1) as f64
    }

    /// Times every host call the flow makes during one phase.
    struct Timed<'a> {
        inner: &'a mut dyn Host,
        calls: Cell<u64>,
    }

    impl Timed<'_> {
        fn time<T>(&mut self, name: &'static str, call: impl FnOnce(&mut dyn Host) -> T) -> T {
            let start = now();
            let out = call(&mut *self.inner);
            self.record(name, start);
            out
        }

        fn time_ref<T>(&self, name: &'static str, call: impl FnOnce(&dyn Host) -> T) -> T {
            let start = now();
            let out = call(&*self.inner);
            self.record(name, start);
            out
        }

        fn record(&self, name: &'static str, start: u64) {
            let elapsed = now().saturating_sub(start);
            self.calls.set(self.calls.get() + 1);
            TOTALS.with(|totals| {
                let mut totals = totals.borrow_mut();
                let slot = totals.host.entry(name).or_default();
                slot.0 += elapsed;
                slot.1 += 1;
            });
        }
    }

    impl Host for Timed<'_> {
        fn request_headers(&self) -> Vec<(String, String)> {
            self.time_ref("get_request_headers", |h| h.request_headers())
        }
        fn set_request_header(&mut self, name: &str, value: Option<&str>) {
            self.time("set_request_header", |h| h.set_request_header(name, value))
        }
        fn request_body(&self, size: usize) -> Option<Vec<u8>> {
            self.time_ref("get_request_body", |h| h.request_body(size))
        }
        fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
            self.time("set_request_body", |h| {
                h.replace_request_body(old_size, body)
            })
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.time_ref("get_response_header", |h| h.response_header(name))
        }
        fn set_response_header(&mut self, name: &str, value: Option<&str>) {
            self.time("set_response_header", |h| {
                h.set_response_header(name, value)
            })
        }
        fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
            self.time_ref("get_response_body", |h| h.response_body(start, size))
        }
        fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]) {
            self.time("set_response_body", |h| {
                h.replace_response_body(start, size, body)
            })
        }
        fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
            self.time("send_response", |h| h.send_response(status, headers, body))
        }
        fn resume_request(&mut self) {
            self.time("resume_request", |h| h.resume_request())
        }
        fn resume_response(&mut self) {
            self.time("resume_response", |h| h.resume_response())
        }
        fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
            self.time("dispatch", |h| h.dispatch(callout))
        }
        fn dispatch_detached(&mut self, callout: &Callout) -> Result<(), String> {
            self.time("dispatch_detached", |h| h.dispatch_detached(callout))
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.time_ref("get_property", |h| h.property(path))
        }
        fn set_filter_state(&mut self, name: &str, value: &str) {
            self.time("set_filter_state", |h| h.set_filter_state(name, value))
        }
        fn now_ms(&self) -> u64 {
            self.time_ref("now", |h| h.now_ms())
        }
        fn counter_add(&mut self, name: &str, delta: u64) {
            self.time("counter_add", |h| h.counter_add(name, delta))
        }
        fn histogram_record(&mut self, name: &str, value: u64) {
            self.time("histogram_record", |h| h.histogram_record(name, value))
        }
        fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
            self.time_ref("shared_get", |h| h.shared_get(key))
        }
        fn shared_set(
            &mut self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), SharedDataError> {
            self.time("shared_set", |h| h.shared_set(key, value, cas))
        }
    }
}
