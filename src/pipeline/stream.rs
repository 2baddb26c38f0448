//! The streamed-answer path: frame SSE events across chunks, translate them to OpenAI
//! chunks, read usage, let event filters (response guards) work, and re-serialise only when
//! something may change. A plain OpenAI stream passes byte for byte.

use serde_json::Value;

use super::stage::EventFilter;
use crate::client_api::{self, ClientApi};
use crate::error::ApiError;
use crate::host::Host;
use crate::providers::StreamDecoder;
use crate::sse::{SseEvent, SseParser};
use crate::usage::Usage;

pub struct StreamProcessor {
    /// The client API the stream answers: its usage events and error events.
    api: &'static dyn ClientApi,
    parser: SseParser,
    decoder: Option<Box<dyn StreamDecoder>>,
    filters: Vec<Box<dyn EventFilter>>,
    /// The filter asked upstream for the usage chunk; the client did not, so it is dropped.
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    /// Read the model the answer names from its usage events (`record_answer_model`).
    record_model: bool,
    /// The model named by the last usage event that named one (`json_view::answer_model` of
    /// the client-form event): what the answer is priced under.
    answer_model: Option<String>,
    /// The model the first upstream event naming one names (`json_view::answer_model`).
    response_model: Option<String>,
    /// After an in-band error the rest of the upstream stream is dropped.
    ended_with_error: bool,
    saw_content: bool,
    saw_done: bool,
    /// The code of the in-band error that ended the stream (the filter's own, or one the
    /// upstream or its translation sent), until the flow takes it to count and log it.
    error_code: Option<String>,
    error_taken: bool,
    /// Bytes of generated text seen so far (`usage::generated_text_len`): what the answer is
    /// charged by estimate when its usage never arrives.
    generated: usize,
    events: Vec<SseEvent>,
    openai_events: Vec<SseEvent>,
}

impl StreamProcessor {
    pub fn new(
        decoder: Option<Box<dyn StreamDecoder>>,
        filters: Vec<Box<dyn EventFilter>>,
        strip_usage_chunk: bool,
    ) -> Self {
        StreamProcessor {
            api: &client_api::chat::Chat,
            parser: SseParser::new(),
            decoder,
            filters,
            strip_usage_chunk,
            usage: None,
            record_model: false,
            answer_model: None,
            response_model: None,
            ended_with_error: false,
            saw_content: false,
            saw_done: false,
            error_code: None,
            error_taken: false,
            generated: 0,
            events: Vec::new(),
            openai_events: Vec::new(),
        }
    }

    /// The stream answers `api` (chat completions unless set).
    pub fn for_api(mut self, api: &'static dyn ClientApi) -> Self {
        self.api = api;
        self
    }

    /// Also read the model each usage event names (pricing needs it; one parse per usage
    /// event, which streams send once or twice).
    pub fn record_answer_model(mut self, record: bool) -> Self {
        self.record_model = record;
        self
    }

    /// The model the stream's usage events named, if any.
    pub fn answer_model(&self) -> Option<&str> {
        self.answer_model.as_deref()
    }

    /// True when the stream's bytes pass unchanged and are only observed.
    pub fn is_passthrough(&self) -> bool {
        self.decoder.is_none() && self.filters.is_empty() && !self.strip_usage_chunk
    }

    /// The answer's usage so far; None while a bridge has only written usage the provider
    /// never reported (`StreamDecoder::usage_reported`): the estimate is charged then.
    pub fn usage(&self) -> Option<Usage> {
        match self.decoder.as_ref().and_then(|d| d.usage_reported()) {
            Some(false) => None,
            _ => self.usage,
        }
    }

    /// The model the answer names, once an event named one.
    pub fn response_model(&self) -> Option<&str> {
        self.response_model.as_deref()
    }

    /// True once the OpenAI `[DONE]` marker went by: clients hang up right after it, so
    /// the answer is accounted then rather than at Envoy's end of stream.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    /// Bytes of generated text relayed so far (see `usage::estimate`).
    pub fn generated_bytes(&self) -> usize {
        self.generated
    }

    /// The code of the in-band error the stream ended with, once (None afterwards).
    pub fn take_error(&mut self) -> Option<String> {
        if self.error_taken {
            return None;
        }
        let code = self.error_code.take();
        self.error_taken = code.is_some();
        code
    }

    /// True once an event with generated content was seen (time to first token).
    pub fn saw_content(&self) -> bool {
        self.saw_content
    }

    /// Feeds one upstream chunk. Returns the bytes to send instead, or None to send the chunk
    /// unchanged (passthrough).
    pub fn push(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        host: &mut dyn Host,
    ) -> Option<Vec<u8>> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let whole_before = self.parser.at_event_boundary();
        self.parser.push(chunk, &mut events);
        let whole_after = self.parser.at_event_boundary();
        if end_of_stream {
            self.parser.finish(&mut events);
        }
        if self.response_model.is_none() {
            // The provider's own events (before any translation, which writes the model
            // asked for), until one names the model.
            self.response_model = events
                .iter()
                .filter(|event| crate::find::contains(&event.data, "\"model"))
                .find_map(|event| crate::json_view::answer_model(event.data.as_bytes()));
        }
        if self.is_passthrough() || self.chunk_passes(whole_before && whole_after, &events) {
            for event in &events {
                self.observe(event);
            }
            self.events = events;
            return None;
        }
        let mut out = Vec::with_capacity(chunk.len() + 64);
        if self.ended_with_error {
            self.events = events;
            return Some(out);
        }
        let mut openai_events = std::mem::take(&mut self.openai_events);
        openai_events.clear();
        let mut decoded = Ok(());
        for event in events.drain(..) {
            decoded = match &mut self.decoder {
                Some(decoder) => decoder.on_event(&event, &mut openai_events),
                None => {
                    openai_events.push(event);
                    Ok(())
                }
            };
            if decoded.is_err() {
                break;
            }
        }
        if decoded.is_ok() && end_of_stream {
            if let Some(decoder) = &mut self.decoder {
                decoder.finish(&mut openai_events);
            }
        }
        // What was decoded before an upstream error event still reaches the client.
        let mut result = self.filter_and_write(
            &mut openai_events,
            end_of_stream && decoded.is_ok(),
            &mut out,
            host,
        );
        // A filter's error carries the filter's own code; an upstream error event the
        // decoder turned into an error is labelled by its status, as HTTP upstream errors
        // are (the upstream's own codes would make the metric's labels unbounded).
        let mut outcome = result.as_ref().err().map(|error| error.code.clone());
        if result.is_ok() {
            outcome = decoded
                .as_ref()
                .err()
                .map(|error| format!("upstream_{}", error.status));
            result = decoded;
        }
        if let Err(error) = result {
            self.api.write_error_event(&error, &mut out);
            if let Some(outcome) = outcome {
                self.note_error(&outcome);
            }
            self.ended_with_error = true;
        }
        self.events = events;
        self.openai_events = openai_events;
        Some(out)
    }

    /// When only the usage chunk may have to go, a chunk of whole events none of which is
    /// dropped passes as it is: no re-serialisation and no body rewrite for almost every
    /// chunk of a plain OpenAI stream.
    fn chunk_passes(&self, whole_events: bool, events: &[SseEvent]) -> bool {
        whole_events
            && self.decoder.is_none()
            && self.filters.is_empty()
            && !self.ended_with_error
            && !(self.strip_usage_chunk && events.iter().any(is_usage_only_chunk))
    }

    fn filter_and_write(
        &mut self,
        openai_events: &mut Vec<SseEvent>,
        end_of_stream: bool,
        out: &mut Vec<u8>,
        host: &mut dyn Host,
    ) -> Result<(), ApiError> {
        let mut current: Vec<SseEvent> = Vec::with_capacity(openai_events.len());
        for event in openai_events.drain(..) {
            self.observe(&event);
            if self.strip_usage_chunk && is_usage_only_chunk(&event) {
                continue;
            }
            current.push(event);
        }
        // Event by event through the whole chain, written at once: when a filter fails, what
        // the chain already released still reaches the client before the error event.
        for event in current {
            let released = run_filters(&mut self.filters, 0, vec![event], host)?;
            for event in &released {
                event.write_to(out);
            }
        }
        if end_of_stream {
            for index in 0..self.filters.len() {
                let mut flushed = Vec::new();
                if let Some(filter) = self.filters.get_mut(index) {
                    filter.finish(&mut flushed, host)?;
                }
                for event in &run_filters(&mut self.filters, index + 1, flushed, host)? {
                    event.write_to(out);
                }
            }
        }
        Ok(())
    }

    fn note_error(&mut self, code: &str) {
        if self.error_code.is_none() && !self.error_taken {
            self.error_code = Some(code.to_string());
        }
    }

    fn observe(&mut self, event: &SseEvent) {
        if self.api.ends_stream(event) {
            self.saw_done = true;
        }
        if event.is_done_marker() {
            return;
        }
        if let Some(code) = in_band_error(&event.data) {
            self.note_error(&code);
        } else if self.api.is_upstream_stream_error(&event.data) {
            self.note_error("upstream_stream_error");
        }
        let before = self.usage;
        self.api.update_stream_usage(&event.data, &mut self.usage);
        if self.record_model && self.usage != before {
            if let Some(model) = crate::json_view::answer_model(event.data.as_bytes())
                .filter(|model| !model.is_empty())
            {
                self.answer_model = Some(model);
            }
        }

        if crate::find::contains(&event.data, "\"delta\"") {
            self.saw_content = true;
            self.generated += self.api.generated_text_len(&event.data);
        }
    }
}

/// The outcome of an OpenAI-shaped in-band error event (`{"error": {...}}`): the
/// translation's own `incomplete_upstream_stream` (a stream cut before the provider finished
/// it), else `upstream_stream_error` (one the upstream sent; its own code is not used as a
/// label, which would make the errors metric's labels unbounded).
fn in_band_error(data: &str) -> Option<String> {
    if !crate::find::contains(data, "\"error\"") {
        return None;
    }
    let value = serde_json::from_str::<Value>(data).ok()?;
    let error = value.get("error").filter(|error| error.is_object())?;
    let code = error.get("code").and_then(Value::as_str);
    Some(
        if code == Some(INCOMPLETE) {
            INCOMPLETE
        } else {
            "upstream_stream_error"
        }
        .to_string(),
    )
}

const INCOMPLETE: &str = "incomplete_upstream_stream";

/// Passes `events` through `filters[from..]`.
fn run_filters(
    filters: &mut [Box<dyn EventFilter>],
    from: usize,
    mut events: Vec<SseEvent>,
    host: &mut dyn Host,
) -> Result<Vec<SseEvent>, ApiError> {
    for filter in filters.iter_mut().skip(from) {
        let mut next = Vec::with_capacity(events.len());
        for event in events {
            filter.on_event(event, &mut next, host)?;
        }
        events = next;
    }
    Ok(events)
}

/// A chunk that carries only usage (`choices: []`), as OpenAI sends for `include_usage`.
fn is_usage_only_chunk(event: &SseEvent) -> bool {
    if !crate::find::contains(&event.data, "\"usage\"") {
        return false;
    }
    serde_json::from_str::<Value>(&event.data)
        .ok()
        .is_some_and(|v| {
            v.get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
        })
}

/// Two translators in a row: a provider's decoder into chat chunks (none for an OpenAI
/// stream), then a client API's bridge from chat chunks into its own events.
pub struct Chained {
    first: Option<Box<dyn StreamDecoder>>,
    second: Box<dyn StreamDecoder>,
    between: Vec<SseEvent>,
    /// A chat chunk between the two carried usage: the bridge's usage is the provider's. A
    /// server that ignores `include_usage` sends none, and the bridge's events then carry
    /// zeros the client API requires, which must not be charged as the answer's usage.
    usage_seen: bool,
}

impl Chained {
    pub fn new(first: Option<Box<dyn StreamDecoder>>, second: Box<dyn StreamDecoder>) -> Self {
        Chained {
            first,
            second,
            between: Vec::new(),
            usage_seen: false,
        }
    }

    fn pass_on(&mut self, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        let mut result = Ok(());
        for event in self.between.drain(..) {
            if !self.usage_seen && crate::usage::from_stream_event(&event.data).is_some() {
                self.usage_seen = true;
            }
            if result.is_ok() {
                result = self.second.on_event(&event, out);
            }
        }
        result
    }
}

impl StreamDecoder for Chained {
    fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
        let first = match &mut self.first {
            Some(first) => first.on_event(event, &mut self.between),
            None => {
                self.between.push(event.clone());
                Ok(())
            }
        };
        // What the first decoded before an error still goes through the second.
        self.pass_on(out)?;
        first
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(first) = &mut self.first {
            first.finish(&mut self.between);
        }
        // The second still owes the client a well-formed end, whatever the first owed.
        if let Err(error) = self.pass_on(out) {
            log::warn!(
                "aigate: the end of a translated stream was unreadable: {}",
                error.code
            );
        }
        self.second.finish(out);
    }

    fn usage_reported(&self) -> Option<bool> {
        Some(self.usage_seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles each event's data, and at its end says how many it saw.
    struct Echo {
        tag: &'static str,
        seen: usize,
        fail_on: Option<&'static str>,
    }

    impl StreamDecoder for Echo {
        fn on_event(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) -> Result<(), ApiError> {
            self.seen += 1;
            if self.fail_on == Some(event.data.as_str()) {
                return Err(ApiError::new(502, "api_error", "bad_event", "bad"));
            }
            out.push(SseEvent::data(format!("{}({})", self.tag, event.data)));
            Ok(())
        }

        fn finish(&mut self, out: &mut Vec<SseEvent>) {
            out.push(SseEvent::data(format!("{}-end:{}", self.tag, self.seen)));
        }
    }

    fn echo(tag: &'static str, fail_on: Option<&'static str>) -> Box<dyn StreamDecoder> {
        Box::new(Echo {
            tag,
            seen: 0,
            fail_on,
        })
    }

    fn datas(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn chained_decoders_run_in_order_and_both_finish() {
        let mut chain = Chained::new(Some(echo("a", None)), echo("b", None));
        let mut out = Vec::new();
        chain.on_event(&SseEvent::data("1"), &mut out).unwrap();
        chain.on_event(&SseEvent::data("2"), &mut out).unwrap();
        chain.finish(&mut out);
        assert_eq!(datas(&out), ["b(a(1))", "b(a(2))", "b(a-end:2)", "b-end:3"]);
    }

    #[test]
    fn without_a_first_decoder_events_go_straight_to_the_second() {
        let mut chain = Chained::new(None, echo("b", None));
        let mut out = Vec::new();
        chain.on_event(&SseEvent::data("1"), &mut out).unwrap();
        chain.finish(&mut out);
        assert_eq!(datas(&out), ["b(1)", "b-end:1"]);
    }

    #[test]
    fn an_error_of_either_decoder_reaches_the_caller() {
        let mut chain = Chained::new(Some(echo("a", Some("x"))), echo("b", None));
        let mut out = Vec::new();
        assert!(chain.on_event(&SseEvent::data("x"), &mut out).is_err());
        let mut chain = Chained::new(Some(echo("a", None)), echo("b", Some("a(y)")));
        assert!(chain.on_event(&SseEvent::data("y"), &mut out).is_err());
    }
}
