//! A `Host` for the dry run: everything is kept by a `RecordingHost`, and the calls that
//! tell what the pipeline decided (metrics, filter state, callouts, local replies) are also
//! logged in order, so `explain` can tell the story whatever stages a build has.

use aigate_core::host::{Callout, Host, RecordingHost, SharedDataError, SharedEntry};
use aigate_core::metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Counter { name: String, delta: u64 },
    FilterState { name: String, value: String },
    Callout { token: u32, callout: Callout },
    CalloutRefused { cluster: String },
    LocalResponse { status: u16 },
}

#[derive(Debug, Default)]
pub struct TracingHost {
    pub inner: RecordingHost,
    pub events: Vec<Event>,
}

impl TracingHost {
    pub fn new(inner: RecordingHost) -> Self {
        TracingHost {
            inner,
            events: Vec::new(),
        }
    }
}

impl Host for TracingHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.inner.request_headers()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.inner.set_request_header(name, value);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.inner.request_body(size)
    }
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        self.inner.replace_request_body(old_size, body);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.inner.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.inner.set_response_header(name, value);
    }
    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        self.inner.response_body(start, size)
    }
    fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]) {
        self.inner.replace_response_body(start, size, body);
    }
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.events.push(Event::LocalResponse { status });
        self.inner.send_response(status, headers, body);
    }
    fn resume_request(&mut self) {
        self.inner.resume_request();
    }
    fn resume_response(&mut self) {
        self.inner.resume_response();
    }
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        let result = self.inner.dispatch(callout);
        match &result {
            Ok(token) => self.events.push(Event::Callout {
                token: *token,
                callout: callout.clone(),
            }),
            Err(_) => self.events.push(Event::CalloutRefused {
                cluster: callout.cluster.clone(),
            }),
        }
        result
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.inner.property(path)
    }
    fn set_filter_state(&mut self, name: &str, value: &str) {
        self.events.push(Event::FilterState {
            name: name.to_string(),
            value: value.to_string(),
        });
        self.inner.set_filter_state(name, value);
    }
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        self.events.push(Event::Counter {
            name: name.to_string(),
            delta,
        });
        self.inner.counter_add(name, delta);
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        // Shown like a counter's delta: token usage is a histogram.
        self.events.push(Event::Counter {
            name: name.to_string(),
            delta: value,
        });
        self.inner.histogram_record(name, value);
    }
    fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
        self.inner.shared_get(key)
    }
    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        self.inner.shared_set(key, value, cas)
    }
}

/// Metric base names the dry run knows how to read; others are shown as they are.
const KNOWN_BASES: [&str; 11] = [
    metrics::TOKENS,
    metrics::GUARD_OUTCOMES,
    metrics::TRANSFORMER_OUTCOMES,
    metrics::LIMIT_OUTCOMES,
    metrics::ERRORS,
    metrics::REQUESTS,
    metrics::TOKEN_USAGE,
    metrics::OPERATION_DURATION,
    metrics::TIME_TO_FIRST_CHUNK,
    metrics::COST,
    metrics::UNPRICED,
];

/// Splits a metric name built by `metrics::name` back into its labels and base name:
/// `aigate.guard.outcomes_total;route=chat;guard=pii;outcome=masked` →
/// ([("route","chat"),("guard","pii"),("outcome","masked")], "aigate.guard.outcomes_total").
pub fn split_metric(name: &str) -> Option<(Vec<(String, String)>, &'static str)> {
    let (base, labels) = metrics::split(name);
    let base = KNOWN_BASES.iter().find(|known| **known == base)?;
    let labels = labels
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Some((labels, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_split_back_into_labels() {
        let name = metrics::name(
            metrics::GUARD_OUTCOMES,
            &[("route", "chat"), ("guard", "pii"), ("outcome", "masked")],
        );
        let (labels, base) = split_metric(&name).unwrap();
        assert_eq!(base, metrics::GUARD_OUTCOMES);
        assert_eq!(
            labels,
            vec![
                ("route".to_string(), "chat".to_string()),
                ("guard".to_string(), "pii".to_string()),
                ("outcome".to_string(), "masked".to_string())
            ]
        );
        assert_eq!(split_metric("other.thing"), None);
    }
}
