//! The one seam between the pipeline and Envoy. The filter crate (`filter/src/plugin`) implements
//! it with proxy-wasm host calls; tests implement it with a recording mock.

/// A call to another service through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub kind: CalloutKind,
    /// For HTTP: `:method`, `:path`, `:authority` and the rest. For gRPC: initial metadata.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutKind {
    Http,
    Grpc { service: String, method: String },
}

/// What came back from a callout. `status` is the HTTP status; Envoy answers 503/504 itself
/// on connection failure or timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalloutReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For gRPC callouts: the gRPC status (0 is OK). `status` is then 200 or 502.
    pub grpc_status: Option<u32>,
}

impl CalloutReply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A shared-data entry as read: its value and compare-and-swap token (None when absent).
pub type SharedEntry = (Option<Vec<u8>>, Option<u32>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedDataError {
    /// Someone else wrote the key since it was read: read again and retry.
    CasMismatch,
    Other,
}

pub trait Host {
    fn request_headers(&self) -> Vec<(String, String)>;
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the whole buffered request body (of `old_size` bytes).
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]);

    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>>;
    fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]);

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]);
    fn resume_request(&mut self);
    fn resume_response(&mut self);

    /// Starts a callout; the reply arrives later through the flow's `on_callout_reply`.
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String>;

    /// Starts a callout whose reply nobody waits for (a usage report). Unlike `dispatch`, it
    /// must outlive the request: Envoy cancels a stream's pending callouts when the stream
    /// ends, so the glue starts it on behalf of the root context.
    fn dispatch_detached(&mut self, callout: &Callout) -> Result<(), String> {
        self.dispatch(callout).map(|_| ())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets `wasm.<name>` filter state, readable in access logs as `%FILTER_STATE(wasm.<name>:PLAIN)%`.
    fn set_filter_state(&mut self, name: &str, value: &str);

    fn now_ms(&self) -> u64;

    fn counter_add(&mut self, name: &str, delta: u64);
    fn histogram_record(&mut self, name: &str, value: u64);

    /// The entry's value and compare-and-swap token: `Ok((None, None))` when it does not
    /// exist, `Err` when the host failed to read it (never to be taken for "absent": a
    /// write after it would replace what is there).
    fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError>;
    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError>;
}

/// A reply the filter sent itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A `Host` that keeps everything in memory and records what the pipeline did. Used by the
/// native tests and by `aigate explain` to dry-run a request without Envoy.
#[derive(Debug, Default, Clone)]
pub struct RecordingHost {
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    /// The local reply, if the pipeline answered itself: (status, headers, body).
    pub local_response: Option<LocalResponse>,
    pub callouts: Vec<(u32, Callout)>,
    /// Clusters for which `dispatch` fails, as Envoy does for an unknown cluster.
    pub unknown_clusters: Vec<String>,
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    pub filter_state: std::collections::BTreeMap<String, String>,
    pub counters: std::collections::BTreeMap<String, u64>,
    pub histograms: std::collections::BTreeMap<String, Vec<u64>>,
    pub shared: std::collections::BTreeMap<String, (Vec<u8>, u32)>,
    pub now_ms: u64,
    pub resumed_request: u32,
    pub resumed_response: u32,
    /// The host fails to give the answer's body (`response_body` is None), as a broken host
    /// could: tests that the filter treats it as its own failure.
    pub response_body_unreadable: bool,
    /// The host fails every shared-data read (`shared_get` is `Err`), as a broken host could.
    pub shared_unreadable: bool,
    next_token: u32,
}

impl RecordingHost {
    pub fn new() -> Self {
        RecordingHost {
            now_ms: 1_700_000_000_000,
            next_token: 1,
            ..Default::default()
        }
    }

    pub fn request_header(&self, name: &str) -> Option<&str> {
        find(&self.request_headers, name)
    }

    pub fn response_header_value(&self, name: &str) -> Option<&str> {
        find(&self.response_headers, name)
    }

    pub fn set_property_value(&mut self, path: &[&str], value: &[u8]) {
        self.properties
            .push((path.iter().map(|s| s.to_string()).collect(), value.to_vec()));
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The sum of every value recorded in histograms named `base` whose labels include all
    /// of `labels` (see `metrics::name`).
    pub fn histogram_total(&self, base: &str, labels: &[(&str, &str)]) -> u64 {
        self.histograms
            .iter()
            .filter(|(name, _)| crate::metrics::matches(name, base, labels))
            .flat_map(|(_, values)| values.iter())
            .sum()
    }

    /// The sum of the counters named `base` whose labels include all of `labels`.
    pub fn counter_total(&self, base: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .iter()
            .filter(|(name, _)| crate::metrics::matches(name, base, labels))
            .map(|(_, value)| value)
            .sum()
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        headers.push((name.to_string(), value.to_string()));
    }
}

fn splice(buffer: &mut Vec<u8>, start: usize, size: usize, body: &[u8]) {
    let start = start.min(buffer.len());
    let end = start.saturating_add(size).min(buffer.len());
    buffer.splice(start..end, body.iter().copied());
}

impl Host for RecordingHost {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.request_headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.request_headers, name, value);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(
            self.request_body
                .get(..size.min(self.request_body.len()))?
                .to_vec(),
        )
    }
    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        splice(&mut self.request_body, 0, old_size, body);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers, name).map(str::to_string)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.response_headers, name, value);
    }
    fn response_body(&self, start: usize, size: usize) -> Option<Vec<u8>> {
        if self.response_body_unreadable {
            return None;
        }
        let end = start.saturating_add(size).min(self.response_body.len());
        Some(self.response_body.get(start.min(end)..end)?.to_vec())
    }
    fn replace_response_body(&mut self, start: usize, size: usize, body: &[u8]) {
        splice(&mut self.response_body, start, size, body);
    }
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.local_response = Some(LocalResponse {
            status,
            headers: headers.to_vec(),
            body: body.to_vec(),
        });
    }
    fn resume_request(&mut self) {
        self.resumed_request += 1;
    }
    fn resume_response(&mut self) {
        self.resumed_response += 1;
    }
    fn dispatch(&mut self, callout: &Callout) -> Result<u32, String> {
        if self.unknown_clusters.contains(&callout.cluster) {
            return Err("BadArgument".to_string());
        }
        let token = self.next_token.max(1);
        self.next_token = token + 1;
        self.callouts.push((token, callout.clone()));
        Ok(token)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties
            .iter()
            .find(|(key, _)| key.iter().map(String::as_str).eq(path.iter().copied()))
            .map(|(_, value)| value.clone())
    }
    fn set_filter_state(&mut self, name: &str, value: &str) {
        self.filter_state
            .insert(name.to_string(), value.to_string());
    }
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
    fn counter_add(&mut self, name: &str, delta: u64) {
        *self.counters.entry(name.to_string()).or_default() += delta;
    }
    fn histogram_record(&mut self, name: &str, value: u64) {
        self.histograms
            .entry(name.to_string())
            .or_default()
            .push(value);
    }
    fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
        if self.shared_unreadable {
            return Err(SharedDataError::Other);
        }
        Ok(match self.shared.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        let current = self.shared.get(key).map(|(_, c)| *c);
        if let (Some(expected), Some(actual)) = (cas, current) {
            if expected != actual {
                return Err(SharedDataError::CasMismatch);
            }
        }
        let next = current.unwrap_or(0) + 1;
        self.shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}
