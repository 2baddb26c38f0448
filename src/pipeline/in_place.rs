//! The request and the answer rewritten in place, for the common route: an OpenAI-shaped
//! provider, no shaping, and only regex guards as body stages. The body is read through
//! borrowed views (`json_view`), the guards see its texts, and only what changes is
//! rewritten: the model, `stream_options`, the masked strings. A body nothing changes is
//! not written back at all.
//!
//! Each reader mirrors what the general path (the client API's `validate`,
//! `text::visit_request`, `text::visit_answer`, the OpenAI codec) would do, and says `None`
//! wherever it is not sure it would do the same: the caller then takes the general `Value`
//! path, which also words every error. Nothing here has side effects. The client APIs
//! (`client_api`) call these readers: `read_request` reads what every OpenAI request shares
//! and hands the view to the API for its own fields (`read_messages`, `is_text_prompt`,
//! `is_embeddings_input`).

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::{ROLES, TEXT_PARTS};
use crate::json_view::{self, Edits, Kind, Member};
use crate::usage::Usage;

/// Deeper bodies take the general path, whose `Value` parse refuses more than 128 levels.
const MAX_NESTING: usize = 100;

/// One text the guards read, where it sits in the body, and what they made of it.
#[derive(Debug)]
pub struct Text<'a> {
    /// The JSON string's range in the body, quotes included.
    pub range: Range<usize>,
    pub text: Cow<'a, str>,
    /// The JSON string had no escapes, and the text as it is now needs none (guards keep
    /// that so: their placeholders need no escapes).
    pub plain: bool,
    pub changed: bool,
    /// The answer's choice the text belongs to (0 in requests).
    pub choice: usize,
}

impl<'a> Text<'a> {
    fn read(body: &'a str, raw: &'a RawValue, choice: usize) -> Option<Text<'a>> {
        let text = json_view::as_str(raw)?;
        Some(Text {
            range: json_view::range_in(body, raw.get())?,
            plain: matches!(text, Cow::Borrowed(_)),
            text,
            changed: false,
            choice,
        })
    }
}

// ---------------------------------------------------------------- views

/// The members of an OpenAI request the readers look at, borrowed from the body.
#[derive(Deserialize)]
pub struct RequestView<'a> {
    #[serde(borrow, default)]
    model: Member<'a>,
    #[serde(borrow, default)]
    stream: Member<'a>,
    #[serde(borrow, default)]
    stream_options: Member<'a>,
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow)]
    suffix: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    refusal: Option<&'a RawValue>,
}

/// A tool call of a message, or of a stream chunk's delta (which numbers them by `index`).
#[derive(Deserialize)]
pub(crate) struct ToolCallView<'a> {
    #[serde(borrow)]
    pub index: Option<&'a RawValue>,
    #[serde(borrow)]
    pub function: Option<FunctionView<'a>>,
}

/// A message's tool call, its `function` kept raw to check its kind first.
#[derive(Deserialize)]
struct CallView<'a> {
    #[serde(borrow)]
    function: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(crate) struct FunctionView<'a> {
    #[serde(borrow)]
    pub arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptionsView<'a> {
    #[serde(borrow)]
    include_usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnswerView<'a> {
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow)]
    message: Option<MessageView<'a>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
}

fn is_string(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|raw| json_view::kind(raw) == Kind::String)
}

// ---------------------------------------------------------------- request

/// A request read in place.
pub struct Request<'a> {
    body: &'a str,
    /// The `{` that opens the body: members are inserted right after it.
    open: usize,
    model: Option<&'a RawValue>,
    pub requested_model: Option<Cow<'a, str>>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub wants_usage: bool,
    has_stream_options: bool,
    pub texts: Vec<Text<'a>>,
}

/// Reads a request body; None when the general path must (or may) see it differently.
/// `api_fields` checks the client API's own fields in the view (as its `validate` would)
/// and reads their texts; the texts every OpenAI request's guards read (`prompt`, `suffix`,
/// `input`, as `text::visit_request` does) follow.
pub fn read_request<'a>(
    body: &'a str,
    api_fields: impl FnOnce(&RequestView<'a>, &mut Vec<Text<'a>>) -> Option<()>,
) -> Option<Request<'a>> {
    if !json_view::nesting_within(body.as_bytes(), MAX_NESTING) {
        return None;
    }
    let view: RequestView<'a> = serde_json::from_str(body).ok()?;
    let open = body.find('{')?;
    let model = match view.model.0 {
        None => None,
        Some(raw) if json_view::kind(raw) == Kind::String => Some(raw),
        Some(_) => return None, // "must be a string"
    };
    let stream = match view.stream.0.map(|raw| (json_view::kind(raw), raw)) {
        None | Some((Kind::Null, _)) => false,
        Some((Kind::Bool, raw)) => json_view::as_bool(raw)?,
        Some(_) => return None, // "must be a boolean"
    };
    let wants_usage = view
        .stream_options
        .0
        .and_then(|raw| serde_json::from_str::<StreamOptionsView<'_>>(raw.get()).ok())
        .and_then(|options| options.include_usage)
        .and_then(json_view::as_bool)
        .unwrap_or(false);
    let mut texts = Vec::new();
    api_fields(&view, &mut texts)?;
    for raw in [view.prompt, view.suffix, view.input].into_iter().flatten() {
        read_strings(body, raw, &mut texts)?;
    }
    let requested_model = match model {
        Some(raw) => Some(json_view::as_str(raw)?),
        None => None,
    };
    Some(Request {
        body,
        open,
        requested_model,
        model,
        stream,
        wants_usage,
        has_stream_options: view.stream_options.0.is_some(),
        texts,
    })
}

/// Chat's `messages`, checked as its `validate` demands, their texts read.
pub fn read_messages<'a>(
    body: &'a str,
    view: &RequestView<'a>,
    texts: &mut Vec<Text<'a>>,
) -> Option<()> {
    let messages = view.messages.as_ref()?;
    if messages.is_empty() {
        return None;
    }
    for message in messages {
        if json_view::kind(message) != Kind::Object {
            return None; // "must be an object"
        }
        let message: MessageView<'_> = serde_json::from_str(message.get()).ok()?;
        let role = json_view::as_str(message.role?)?;
        if !ROLES.contains(&role.as_ref()) {
            return None;
        }
        let has_calls = message.tool_calls.map(json_view::kind) == Some(Kind::Array)
            || message.function_call.map(json_view::kind) == Some(Kind::Object);
        if json_view::is_null(message.content) && !has_calls {
            return None; // content is required without tool calls
        }
        read_message(body, &message, 0, true, texts)?;
    }
    Some(())
}

/// Legacy completions' `prompt`: a string, or a non-empty array of strings (as its
/// `validate` demands). Its texts are read with every request's.
pub fn is_text_prompt(view: &RequestView<'_>) -> bool {
    let Some(raw) = view.prompt else {
        return false;
    };
    match json_view::kind(raw) {
        Kind::String => true,
        Kind::Array => serde_json::from_str::<Vec<&RawValue>>(raw.get())
            .is_ok_and(|items| !items.is_empty() && items.iter().all(|item| is_string(Some(item)))),
        _ => false,
    }
}

/// Embeddings' `input`: one of the API's shapes (`api::embeddings_input_shape`). Its texts
/// are read with every request's.
pub fn is_embeddings_input(view: &RequestView<'_>) -> bool {
    view.input
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
        .is_some_and(|input| crate::api::embeddings_input_shape(&input).is_some())
}

/// A string's text, or the strings of an array (other items skipped, as token arrays are).
fn read_strings<'a>(body: &'a str, raw: &'a RawValue, texts: &mut Vec<Text<'a>>) -> Option<()> {
    match json_view::kind(raw) {
        Kind::String => texts.push(Text::read(body, raw, 0)?),
        Kind::Array => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
            for item in items {
                if is_string(Some(item)) {
                    texts.push(Text::read(body, item, 0)?);
                }
            }
        }
        _ => {}
    }
    Some(())
}

/// The texts of a message, in `text::visit_message`'s order. `strict`: the request's
/// content parts must each have a `type` (as `api::validate` demands).
fn read_message<'a>(
    body: &'a str,
    message: &MessageView<'a>,
    choice: usize,
    strict: bool,
    texts: &mut Vec<Text<'a>>,
) -> Option<()> {
    match message.content.map(|raw| (json_view::kind(raw), raw)) {
        None | Some((Kind::Null, _)) => {}
        Some((Kind::String, raw)) => texts.push(Text::read(body, raw, choice)?),
        Some((Kind::Array, raw)) => {
            let parts: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
            for part in parts {
                if json_view::kind(part) != Kind::Object {
                    if strict {
                        return None;
                    }
                    continue;
                }
                let part: PartView<'_> = serde_json::from_str(part.get()).ok()?;
                if strict {
                    // A `type`, and a string where a text part's text is (`api::TEXT_PARTS`).
                    let kind = json_view::as_str(part.kind?)?;
                    for (text_kind, field) in TEXT_PARTS {
                        let raw = if field == "text" {
                            part.text
                        } else {
                            part.refusal
                        };
                        if kind == text_kind && !is_string(raw) {
                            return None;
                        }
                    }
                }
                for raw in [part.text, part.refusal].into_iter().flatten() {
                    if json_view::kind(raw) == Kind::String {
                        texts.push(Text::read(body, raw, choice)?);
                    }
                }
            }
        }
        Some(_) if strict => return None,
        Some(_) => {}
    }
    match message.refusal.map(|raw| (json_view::kind(raw), raw)) {
        None | Some((Kind::Null, _)) => {}
        Some((Kind::String, raw)) => texts.push(Text::read(body, raw, choice)?),
        Some(_) if strict => return None, // "must be a string or null"
        Some(_) => {}
    }
    // Tool calls: null or an array of objects; a `function`: null or an object whose
    // `arguments` is a string (as `api::validate` demands of requests).
    let calls: Vec<&RawValue> = match message.tool_calls.map(json_view::kind) {
        None | Some(Kind::Null) => Vec::new(),
        Some(Kind::Array) => serde_json::from_str(message.tool_calls?.get()).ok()?,
        Some(_) if strict => return None,
        Some(_) => Vec::new(),
    };
    let mut functions = Vec::new();
    for call in calls {
        if json_view::kind(call) != Kind::Object {
            if strict {
                return None;
            }
            continue;
        }
        let call: CallView<'_> = serde_json::from_str(call.get()).ok()?;
        functions.push(call.function);
    }
    functions.push(message.function_call);
    for function in functions.into_iter().flatten() {
        match json_view::kind(function) {
            Kind::Null => continue,
            Kind::Object => {}
            _ if strict => return None,
            _ => continue,
        }
        let function: FunctionView<'_> = serde_json::from_str(function.get()).ok()?;
        match function.arguments.map(|raw| (json_view::kind(raw), raw)) {
            None => {}
            Some((Kind::String, raw)) => texts.push(Text::read(body, raw, choice)?),
            Some(_) if strict => return None,
            Some(_) => {}
        }
    }
    Some(())
}

impl<'a> Request<'a> {
    /// What the OpenAI codec would change besides the texts: the model, and usage asked
    /// for on a stream (`streams`: the client API streams at all). None when only the
    /// general path can make the change.
    pub fn field_edits(
        &self,
        model: &str,
        streams: bool,
        client_stream: bool,
        upstream_stream: bool,
    ) -> Option<Edits> {
        let mut edits = Edits::default();
        let after_open = self.open + 1;
        match self.model {
            Some(_) if self.requested_model.as_deref() == Some(model) => {}
            Some(raw) => {
                if !edits.replace_with_string(self.body, raw, model) {
                    return None;
                }
            }
            None => {
                let mut member = b"\"model\":".to_vec();
                crate::json::write_str(model, &mut member);
                member.push(b',');
                edits.replace(after_open..after_open, member);
            }
        }
        if !streams {
            // No stream options in an API that does not stream (embeddings).
            return Some(edits);
        }
        match (client_stream, upstream_stream) {
            (true, true) if self.wants_usage => {}
            (true, true) if !self.has_stream_options => edits.replace(
                after_open..after_open,
                b"\"stream_options\":{\"include_usage\":true},".to_vec(),
            ),
            (false, false) => {}
            // Options to rewrite, or a stream the filter turns on or off: the general path.
            _ => return None,
        }
        Some(edits)
    }
}

// ---------------------------------------------------------------- answer

/// An OpenAI answer read in place.
pub struct Answer<'a> {
    pub usage: Option<Usage>,
    pub texts: Vec<Text<'a>>,
    /// Per choice, the range of a non-null `logprobs` (emptied when its text changes).
    logprobs: Vec<Option<Range<usize>>>,
}

pub fn read_answer(body: &str) -> Option<Answer<'_>> {
    if !json_view::nesting_within(body.as_bytes(), MAX_NESTING) {
        return None;
    }
    let view: AnswerView<'_> = serde_json::from_str(body).ok()?;
    let mut texts = Vec::new();
    let mut logprobs = Vec::new();
    for (index, choice) in view.choices.iter().flatten().enumerate() {
        if let Some(message) = &choice.message {
            read_message(body, message, index, false, &mut texts)?;
        }
        if let Some(raw) = choice.text.filter(|raw| is_string(Some(raw))) {
            texts.push(Text::read(body, raw, index)?);
        }
        logprobs.push(match choice.logprobs {
            Some(raw) if json_view::kind(raw) != Kind::Null => {
                Some(json_view::range_in(body, raw.get())?)
            }
            _ => None,
        });
    }
    let usage = view
        .usage
        .and_then(|raw| serde_json::from_str::<Usage>(raw.get()).ok())
        .map(Usage::normalised);
    Some(Answer {
        usage,
        texts,
        logprobs,
    })
}

impl Answer<'_> {
    /// The answer's edits: changed texts, and the logprobs of their choices (they carry the
    /// original tokens).
    pub fn edits(&self) -> Edits {
        let mut edits = text_edits(&self.texts);
        let mut emptied = vec![false; self.logprobs.len()];
        for text in self.texts.iter().filter(|text| text.changed) {
            if let Some(done) = emptied.get_mut(text.choice) {
                if !*done {
                    *done = true;
                    if let Some(Some(range)) = self.logprobs.get(text.choice) {
                        edits.replace(range.clone(), b"null".to_vec());
                    }
                }
            }
        }
        edits
    }
}

/// The changed texts as edits.
pub fn text_edits(texts: &[Text<'_>]) -> Edits {
    let mut edits = Edits::default();
    for text in texts.iter().filter(|text| text.changed) {
        if text.plain {
            // Guards only cut out pieces and add placeholders: nothing to escape.
            let mut bytes = Vec::with_capacity(text.text.len() + 2);
            bytes.push(b'"');
            bytes.extend_from_slice(text.text.as_bytes());
            bytes.push(b'"');
            edits.replace(text.range.clone(), bytes);
        } else {
            edits.replace_with_str(text.range.clone(), &text.text);
        }
    }
    edits
}
