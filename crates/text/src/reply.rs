//! An assistant reply as the model writes it → its parts: the answer (content), the
//! reasoning ("thinking") and the tool calls, for every tool-call syntax the chat
//! templates we run teach the model. Incremental: text goes in as it is generated, split
//! anywhere (even inside a marker), and parts come out as soon as they are certain.
//!
//! The family is found from the chat template's source ([`ReplyFormat::detect`]): the
//! template that teaches a syntax is the one that writes it for earlier turns.
//!
//! | family | tool call | reasoning |
//! |---|---|---|
//! | Hermes (Qwen2.5, Qwen3) | `<tool_call>{"name": N, "arguments": {..}}</tool_call>` | `<think>…</think>` |
//! | DeepSeek V3/R1 | `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>N\n```json\n{..}\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>` | `<think>…</think>` |
//! | DeepSeek V3.1 | the same with `<｜tool▁call▁begin｜>N<｜tool▁sep｜>{..}<｜tool▁call▁end｜>` | `<think>…</think>` |
//! | Kimi-K2 | `<\|tool_calls_section_begin\|><\|tool_call_begin\|>functions.N:I<\|tool_call_argument_begin\|>{..}<\|tool_call_end\|>…<\|tool_calls_section_end\|>` | `<think>…</think>` |
//! | GLM-4.5 | `<tool_call>N\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n</tool_call>` | `<think>…</think>` |
//! | gpt-oss (harmony) | `<\|start\|>assistant<\|channel\|>commentary to=functions.N <\|constrain\|>json<\|message\|>{..}<\|call\|>` | the `analysis` channel |
//!
//! Hermes calls are also recognised without their tags when the whole reply is such
//! objects (bare or in a ```json fence), as llama.cpp accepts them: small Qwen2.5 models
//! write them so. Such a reply is held until it ends (only when tools were offered).
//!
//! A call that does not parse (bad JSON, no name, arguments that are not an object) is
//! given back as content, exactly as the model wrote it.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ToolCall;

/// How a model writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolSyntax {
    /// `<tool_call>{json}</tool_call>` (Qwen2.5, Qwen3, Hermes).
    Hermes,
    /// DeepSeek's tool-call tokens (V3/R1 with a fenced JSON block, V3.1 without).
    DeepSeek,
    /// Kimi-K2's tool-call section.
    KimiK2,
    /// GLM-4.5's `<arg_key>`/`<arg_value>` pairs.
    Glm45,
    /// gpt-oss's harmony channels (reasoning is its `analysis` channel).
    Harmony,
}

/// What a model's replies may hold besides plain text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFormat {
    /// The tool-call syntax, None when the template shows no tool calls we parse.
    pub tools: Option<ToolSyntax>,
    /// Reasoning in `<think>…</think>` (the harmony format has its own channel).
    pub think_tags: bool,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const GLM_KEY_OPEN: &str = "<arg_key>";
const GLM_KEY_CLOSE: &str = "</arg_key>";
const GLM_VALUE_OPEN: &str = "<arg_value>";
const GLM_VALUE_CLOSE: &str = "</arg_value>";

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";

const KIMI_SECTION_BEGIN: &str = "<|tool_calls_section_begin|>";
const KIMI_SECTION_END: &str = "<|tool_calls_section_end|>";
const KIMI_CALL_BEGIN: &str = "<|tool_call_begin|>";
const KIMI_CALL_END: &str = "<|tool_call_end|>";
const KIMI_ARGS_BEGIN: &str = "<|tool_call_argument_begin|>";

const H_START: &str = "<|start|>";
const H_CHANNEL: &str = "<|channel|>";
const H_MESSAGE: &str = "<|message|>";
const H_END: &str = "<|end|>";
const H_CALL: &str = "<|call|>";
const H_RETURN: &str = "<|return|>";
const H_CONSTRAIN: &str = "<|constrain|>";

/// A harmony header longer than this without `<|message|>` is not harmony: the text is
/// given back as content rather than held forever.
const HARMONY_HEADER_MAX: usize = 256;

impl ReplyFormat {
    /// The format a chat template teaches, from its source: the tool-call markers it
    /// writes for earlier turns, and `<think>` tags. Templates without them give
    /// plain text (no tools, no reasoning).
    pub fn detect(template: &str) -> ReplyFormat {
        let has = |s: &str| template.contains(s);
        let tools = if has(H_CHANNEL) && has(H_MESSAGE) {
            Some(ToolSyntax::Harmony)
        } else if has(KIMI_SECTION_BEGIN) {
            Some(ToolSyntax::KimiK2)
        } else if has(DS_CALL_BEGIN) {
            Some(ToolSyntax::DeepSeek)
        } else if has(GLM_KEY_OPEN) && has(HERMES_OPEN) {
            Some(ToolSyntax::Glm45)
        } else if has(HERMES_OPEN) {
            Some(ToolSyntax::Hermes)
        } else {
            None
        };
        ReplyFormat {
            tools,
            think_tags: tools != Some(ToolSyntax::Harmony) && has(THINK_CLOSE),
        }
    }

    /// True when replies can carry reasoning apart from the answer.
    pub fn has_reasoning(&self) -> bool {
        self.think_tags || self.tools == Some(ToolSyntax::Harmony)
    }

    /// The marker texts of this format: their tokens must reach the parser as text even
    /// when they are special (control) tokens, which detokenizing usually drops.
    pub fn markers(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.think_tags {
            m.extend([THINK_OPEN, THINK_CLOSE]);
        }
        match self.tools {
            None => {}
            Some(ToolSyntax::Hermes) => m.extend([HERMES_OPEN, HERMES_CLOSE]),
            Some(ToolSyntax::Glm45) => m.extend([
                HERMES_OPEN,
                HERMES_CLOSE,
                GLM_KEY_OPEN,
                GLM_KEY_CLOSE,
                GLM_VALUE_OPEN,
                GLM_VALUE_CLOSE,
            ]),
            Some(ToolSyntax::DeepSeek) => m.extend([
                DS_CALLS_BEGIN,
                DS_CALLS_END,
                DS_CALL_BEGIN,
                DS_CALL_END,
                DS_SEP,
            ]),
            Some(ToolSyntax::KimiK2) => m.extend([
                KIMI_SECTION_BEGIN,
                KIMI_SECTION_END,
                KIMI_CALL_BEGIN,
                KIMI_CALL_END,
                KIMI_ARGS_BEGIN,
            ]),
            Some(ToolSyntax::Harmony) => m.extend([
                H_START,
                H_CHANNEL,
                H_MESSAGE,
                H_END,
                H_CALL,
                H_RETURN,
                H_CONSTRAIN,
            ]),
        }
        m
    }

    /// True when a rendered prompt leaves the model inside its reasoning: the template
    /// opened `<think>` in the generation prompt (DeepSeek-R1, Qwen3 thinking).
    pub fn prompt_opens_thinking(&self, prompt: &str) -> bool {
        if !self.think_tags {
            return false;
        }
        let tail = prompt.trim_end();
        tail.ends_with(THINK_OPEN)
    }
}

/// A part of a reply, in the order the model wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyPart {
    /// Answer text.
    Content(String),
    /// Reasoning text.
    Reasoning(String),
    /// A complete call. `id` is the model's own (Kimi-K2 writes one) or empty.
    ToolCall(ToolCall),
}

/// What to take apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Separate the reasoning (else it stays in the content, as written).
    pub reasoning: bool,
    /// Parse tool calls (the request offered tools; else calls stay text).
    pub tools: bool,
    /// The prompt ended inside `<think>`: the reply starts as reasoning.
    pub starts_in_thinking: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Answer text; `<think>` may still open the reasoning while nothing but
    /// whitespace was written.
    Content,
    /// Inside `<think>`.
    Thinking,
    /// Inside a call (Hermes, GLM) or a call section (DeepSeek, Kimi): held until its end.
    Call,
    /// Harmony: reading a message header up to `<|message|>`.
    Header,
    /// Harmony: inside a message of the given kind.
    Body(BodyKind),
    /// Harmony text that turned out not to be harmony: plain content to the end.
    Plain,
    /// Hermes: a reply that starts with `{` or a ```json fence may be a call written without
    /// its tags (small Qwen2.5 models do this): held to the end, then parsed.
    Bare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Reasoning,
    Content,
    Call,
}

/// The incremental reply parser: [`push`](Self::push) text as it is generated,
/// [`finish`](Self::finish) at the end. The concatenation of the parts it gives equals
/// what one `push` of the whole text and `finish` give (tested at every split point).
#[derive(Clone, Debug)]
pub struct ReplyParser {
    format: ReplyFormat,
    opts: ParseOptions,
    state: State,
    /// Text received and not yet given out.
    buf: String,
    /// The marker that opened the current call, kept to give a malformed call back.
    call_open: &'static str,
    /// The harmony header of the current message (for its call's name).
    header: String,
    /// Any non-whitespace content given out (then `<think>` is text, not a start).
    wrote_content: bool,
    /// Drop whitespace at the start of the next content or reasoning (after a
    /// reasoning or a call ends; never at the start of a plain reply).
    trim_start: bool,
    /// The start of the reply was looked at for a call without tags.
    bare_checked: bool,
}

impl ReplyParser {
    /// A parser for replies of `format`.
    pub fn new(format: ReplyFormat, opts: ParseOptions) -> ReplyParser {
        let harmony = format.tools == Some(ToolSyntax::Harmony);
        let state = if harmony && (opts.reasoning || opts.tools) {
            State::Header
        } else if harmony {
            State::Plain
        } else if opts.reasoning && opts.starts_in_thinking && format.think_tags {
            State::Thinking
        } else {
            State::Content
        };
        ReplyParser {
            format,
            opts,
            state,
            buf: String::new(),
            call_open: "",
            header: String::new(),
            wrote_content: false,
            trim_start: state == State::Thinking,
            bare_checked: false,
        }
    }

    /// Adds generated text; the parts that became certain are appended to `out`.
    pub fn push(&mut self, text: &str, out: &mut Vec<ReplyPart>) {
        self.buf.push_str(text);
        self.run(false, out);
    }

    /// Ends the reply: whatever is held back is given out (an unfinished call is parsed
    /// as it is, and given back as content if it does not parse).
    pub fn finish(&mut self, out: &mut Vec<ReplyPart>) {
        self.run(true, out);
    }

    /// Parses a whole reply at once.
    pub fn parse_all(format: ReplyFormat, opts: ParseOptions, text: &str) -> Vec<ReplyPart> {
        let mut p = ReplyParser::new(format, opts);
        let mut out = Vec::new();
        p.push(text, &mut out);
        p.finish(&mut out);
        merge_parts(out)
    }

    fn tools(&self) -> Option<ToolSyntax> {
        if self.opts.tools {
            self.format.tools
        } else {
            None
        }
    }

    /// The markers that start a call in content.
    fn call_openers(&self) -> &'static [&'static str] {
        match self.tools() {
            Some(ToolSyntax::Hermes) | Some(ToolSyntax::Glm45) => &[HERMES_OPEN],
            Some(ToolSyntax::DeepSeek) => &[DS_CALLS_BEGIN, DS_CALL_BEGIN],
            Some(ToolSyntax::KimiK2) => &[KIMI_SECTION_BEGIN, KIMI_CALL_BEGIN],
            Some(ToolSyntax::Harmony) | None => &[],
        }
    }

    fn run(&mut self, at_end: bool, out: &mut Vec<ReplyPart>) {
        loop {
            let progressed = match self.state {
                State::Content => self.step_content(at_end, out),
                State::Thinking => self.step_text(&[THINK_CLOSE], true, at_end, out),
                State::Call => self.step_call(at_end, out),
                State::Header => self.step_header(at_end),
                State::Body(kind) => self.step_body(kind, at_end, out),
                State::Plain => {
                    let text = std::mem::take(&mut self.buf);
                    self.emit(false, &text, out);
                    false
                }
                State::Bare if !at_end => false,
                State::Bare => {
                    let text = std::mem::take(&mut self.buf);
                    match parse_bare(&text) {
                        Some(calls) => out.extend(calls.into_iter().map(ReplyPart::ToolCall)),
                        None => self.emit(false, &text, out),
                    }
                    self.state = State::Content;
                    false
                }
            };
            if !progressed {
                return;
            }
        }
    }

    /// Content: look for a call opener (or `<think>` before any content).
    fn step_content(&mut self, at_end: bool, out: &mut Vec<ReplyPart>) -> bool {
        if self.tools() == Some(ToolSyntax::Hermes) && !self.bare_checked && !self.wrote_content {
            // Only `{` or a ```json fence: other replies (code in another language)
            // stream as they come.
            const FENCE: &str = "```json";
            let t = self.buf.trim_start();
            let undecided = t.is_empty() || (t.len() < FENCE.len() && FENCE.starts_with(t));
            if undecided && !at_end {
                return false;
            }
            if !t.is_empty() {
                self.bare_checked = true;
                if t.starts_with('{') || t.starts_with(FENCE) {
                    self.state = State::Bare;
                    return true;
                }
            }
        }
        let mut markers: Vec<&'static str> = self.call_openers().to_vec();
        let think = self.opts.reasoning && self.format.think_tags && !self.wrote_content;
        if think {
            markers.push(THINK_OPEN);
        }
        match find_first(&self.buf, &markers) {
            Some((at, marker)) => {
                let before = self.buf[..at].to_string();
                let rest = self.buf[at + marker.len()..].to_string();
                if marker == THINK_OPEN && !before.trim().is_empty() {
                    // Text came first: `<think>` is text. (Only reachable in one push.)
                    self.emit(false, &format!("{before}{THINK_OPEN}"), out);
                    self.buf = rest;
                    return true;
                }
                if marker == THINK_OPEN {
                    self.state = State::Thinking;
                } else {
                    self.emit(false, before.trim_end(), out);
                    self.call_open = marker;
                    self.state = State::Call;
                }
                self.trim_start = true;
                self.buf = rest;
                true
            }
            None => {
                self.emit_safe(false, &markers, at_end, out);
                false
            }
        }
    }

    /// Reasoning or content text up to one of `ends`; the end marker moves to content.
    fn step_text(
        &mut self,
        ends: &[&'static str],
        reasoning: bool,
        at_end: bool,
        out: &mut Vec<ReplyPart>,
    ) -> bool {
        match find_first(&self.buf, ends) {
            Some((at, marker)) => {
                let before = self.buf[..at].to_string();
                self.emit(reasoning, before.trim_end(), out);
                self.buf.drain(..at + marker.len());
                self.state = State::Content;
                self.trim_start = true;
                true
            }
            None => {
                self.emit_safe(reasoning, ends, at_end, out);
                false
            }
        }
    }

    /// Inside a call: wait for its end, then parse it.
    fn step_call(&mut self, at_end: bool, out: &mut Vec<ReplyPart>) -> bool {
        let close = match self.tools() {
            Some(ToolSyntax::Hermes) | Some(ToolSyntax::Glm45) => HERMES_CLOSE,
            Some(ToolSyntax::DeepSeek) => DS_CALLS_END,
            Some(ToolSyntax::KimiK2) => KIMI_SECTION_END,
            // Only a syntax's opener enters a call; nothing else can be in one.
            Some(ToolSyntax::Harmony) | None => {
                self.state = State::Content;
                return true;
            }
        };
        let (body, closed) = match self.buf.find(close) {
            Some(at) => (self.buf[..at].to_string(), true),
            None if at_end => (self.buf.clone(), false),
            None => return false,
        };
        let consumed = body.len() + if closed { close.len() } else { 0 };
        // DeepSeek and Kimi sections may come without their section markers: a lone
        // call begin opens one, and the section's body starts with that call.
        let section = match (self.call_open, self.tools()) {
            (DS_CALL_BEGIN, _) | (KIMI_CALL_BEGIN, _) => format!("{}{body}", self.call_open),
            _ => body.clone(),
        };
        let parsed = match self.tools() {
            Some(ToolSyntax::Hermes) => parse_hermes(&section).map(|c| vec![c]),
            Some(ToolSyntax::Glm45) => parse_glm(&section).map(|c| vec![c]),
            Some(ToolSyntax::DeepSeek) => parse_deepseek(&section),
            Some(ToolSyntax::KimiK2) => parse_kimi(&section),
            _ => None,
        };
        self.buf.drain(..consumed);
        self.state = State::Content;
        match parsed {
            Some(calls) => {
                out.extend(calls.into_iter().map(ReplyPart::ToolCall));
                self.trim_start = true;
            }
            None => {
                let raw = format!(
                    "{}{body}{}",
                    self.call_open,
                    if closed { close } else { "" }
                );
                self.trim_start = false;
                self.emit(false, &raw, out);
            }
        }
        true
    }

    /// Harmony: a header up to `<|message|>` decides what the message is.
    fn step_header(&mut self, at_end: bool) -> bool {
        match self.buf.find(H_MESSAGE) {
            Some(at) => {
                let header = self.buf[..at].to_string();
                self.buf.drain(..at + H_MESSAGE.len());
                let kind = harmony_kind(&header);
                let kind = match kind {
                    BodyKind::Call if !self.opts.tools => BodyKind::Content,
                    BodyKind::Reasoning if !self.opts.reasoning => BodyKind::Content,
                    k => k,
                };
                self.header = header;
                self.state = State::Body(kind);
                self.trim_start = true;
                true
            }
            None if at_end || self.buf.len() > HARMONY_HEADER_MAX => {
                // Not harmony after all: what the model wrote is content.
                self.state = State::Plain;
                !self.buf.is_empty() || at_end
            }
            None => false,
        }
    }

    /// Harmony: a message's text up to its end marker.
    fn step_body(&mut self, kind: BodyKind, at_end: bool, out: &mut Vec<ReplyPart>) -> bool {
        const ENDS: [&str; 4] = [H_END, H_CALL, H_RETURN, H_START];
        if kind != BodyKind::Call {
            return match find_first(&self.buf, &ENDS) {
                Some((at, marker)) => {
                    let before = self.buf[..at].to_string();
                    self.emit(kind == BodyKind::Reasoning, before.trim_end(), out);
                    // `<|start|>` belongs to the next header.
                    let skip = if marker == H_START { 0 } else { marker.len() };
                    self.buf.drain(..at + skip);
                    self.state = State::Header;
                    true
                }
                None => {
                    self.emit_safe(kind == BodyKind::Reasoning, &ENDS, at_end, out);
                    false
                }
            };
        }
        let (body, end) = match find_first(&self.buf, &ENDS) {
            Some((at, marker)) => (self.buf[..at].to_string(), Some(marker)),
            None if at_end => (self.buf.clone(), None),
            None => return false,
        };
        match harmony_call(&self.header, &body) {
            Some(call) => out.push(ReplyPart::ToolCall(call)),
            None => {
                let raw = format!("{}{H_MESSAGE}{body}", self.header);
                self.trim_start = false;
                self.emit(false, &raw, out);
            }
        }
        let skip = match end {
            Some(H_START) | None => 0,
            Some(m) => m.len(),
        };
        self.buf.drain(..body.len() + skip);
        self.state = State::Header;
        true
    }

    /// Gives out the buffer except what may start one of `markers` (or trailing
    /// whitespace, which may turn out to precede a marker and be dropped).
    fn emit_safe(
        &mut self,
        reasoning: bool,
        markers: &[&'static str],
        at_end: bool,
        out: &mut Vec<ReplyPart>,
    ) {
        let keep = if at_end {
            0
        } else {
            let partial = partial_marker_len(&self.buf, markers);
            let body = &self.buf[..self.buf.len() - partial];
            let ws = body.len() - body.trim_end().len();
            partial + ws
        };
        let cut = self.buf.len() - keep;
        let text = self.buf[..cut].to_string();
        self.buf.drain(..cut);
        self.emit(reasoning, &text, out);
    }

    fn emit(&mut self, reasoning: bool, text: &str, out: &mut Vec<ReplyPart>) {
        let text = if self.trim_start {
            text.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        self.trim_start = false;
        if reasoning {
            push_part(out, ReplyPart::Reasoning(text.to_string()));
        } else {
            self.wrote_content = true;
            push_part(out, ReplyPart::Content(text.to_string()));
        }
    }
}

/// Appends, merging with the last part when it is of the same kind.
fn push_part(out: &mut Vec<ReplyPart>, part: ReplyPart) {
    match (out.last_mut(), part) {
        (Some(ReplyPart::Content(a)), ReplyPart::Content(b)) => a.push_str(&b),
        (Some(ReplyPart::Reasoning(a)), ReplyPart::Reasoning(b)) => a.push_str(&b),
        (_, part) => out.push(part),
    }
}

/// Parts with neighbours of the same kind merged (what a client assembling a stream
/// sees).
pub fn merge_parts(parts: Vec<ReplyPart>) -> Vec<ReplyPart> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        push_part(&mut out, p);
    }
    out
}

/// The earliest occurrence of any marker: (byte offset, marker).
fn find_first(text: &str, markers: &[&'static str]) -> Option<(usize, &'static str)> {
    markers
        .iter()
        .filter_map(|m| text.find(m).map(|at| (at, *m)))
        .min_by_key(|&(at, m)| (at, usize::MAX - m.len()))
}

/// The length of the longest suffix of `text` that is a proper prefix of a marker.
fn partial_marker_len(text: &str, markers: &[&str]) -> usize {
    let mut best = 0;
    for m in markers {
        for n in (1..m.len()).rev() {
            if n <= best {
                break;
            }
            if m.is_char_boundary(n) && text.ends_with(&m[..n]) {
                best = n;
                break;
            }
        }
    }
    best
}

/// JSON text of an object, checked: the text itself, or a JSON string holding one
/// (some models quote their arguments).
fn object_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    if text.starts_with('{') {
        return Some(text.to_string());
    }
    let inner: String = serde_json::from_str(text).ok()?;
    let v: &RawValue = serde_json::from_str(&inner).ok()?;
    v.get()
        .trim()
        .starts_with('{')
        .then(|| v.get().trim().to_string())
}

/// `{"name": N, "arguments": {..}}`.
fn parse_hermes(body: &str) -> Option<ToolCall> {
    #[derive(Deserialize)]
    struct Call<'a> {
        name: String,
        #[serde(borrow, alias = "parameters")]
        arguments: Option<&'a RawValue>,
    }
    let call: Call = serde_json::from_str(body.trim()).ok()?;
    if call.name.is_empty() {
        return None;
    }
    let arguments = match call.arguments {
        Some(raw) => object_text(raw)?,
        None => "{}".to_string(),
    };
    Some(ToolCall {
        id: String::new(),
        name: call.name,
        arguments,
    })
}

/// A whole reply that is Hermes calls without their tags: one or more
/// `{"name": .., "arguments": {..}}` objects, possibly in a ```json fence, and nothing
/// else.
fn parse_bare(text: &str) -> Option<Vec<ToolCall>> {
    let mut body = text.trim();
    if let Some(fenced) = body.strip_prefix("```json") {
        body = fenced.trim_end().strip_suffix("```")?.trim();
    }
    let mut calls = Vec::new();
    let mut objects = serde_json::Deserializer::from_str(body).into_iter::<&RawValue>();
    for raw in objects.by_ref() {
        let raw = raw.ok()?;
        // Only objects with exactly a name and arguments: a JSON answer is not a call.
        let keys: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw.get()).ok()?;
        if keys.len() != 2 || !keys.contains_key("name") || !keys.contains_key("arguments") {
            return None;
        }
        calls.push(parse_hermes(raw.get())?);
    }
    (!calls.is_empty()).then_some(calls)
}

/// `N\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>...`: values that are JSON
/// (numbers, booleans, objects, lists) keep their type, anything else is a string.
fn parse_glm(body: &str) -> Option<ToolCall> {
    let (name, mut rest) = match body.find(GLM_KEY_OPEN) {
        Some(at) => (body[..at].trim(), &body[at..]),
        None => (body.trim(), ""),
    };
    if name.is_empty() || name.contains(['<', '>', '{', '\n']) {
        return None;
    }
    let mut args = String::from("{");
    let mut first = true;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let after_key = rest.strip_prefix(GLM_KEY_OPEN)?;
        let key_end = after_key.find(GLM_KEY_CLOSE)?;
        let key = after_key[..key_end].trim();
        let after = after_key[key_end + GLM_KEY_CLOSE.len()..].trim_start();
        let after_value = after.strip_prefix(GLM_VALUE_OPEN)?;
        let value_end = after_value.find(GLM_VALUE_CLOSE)?;
        let value = &after_value[..value_end];
        rest = &after_value[value_end + GLM_VALUE_CLOSE.len()..];
        if !first {
            args.push_str(", ");
        }
        first = false;
        args.push_str(&serde_json::to_string(key).ok()?);
        args.push_str(": ");
        match serde_json::from_str::<&RawValue>(value.trim()) {
            Ok(v) => args.push_str(v.get()),
            Err(_) => args.push_str(&serde_json::to_string(value).ok()?),
        }
    }
    args.push('}');
    Some(ToolCall {
        id: String::new(),
        name: name.to_string(),
        arguments: args,
    })
}

/// A DeepSeek section: calls `<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`, whitespace
/// between them; each `function<｜tool▁sep｜>N\n```json\n{..}\n```` (V3/R1) or
/// `N<｜tool▁sep｜>{..}` (V3.1).
fn parse_deepseek(section: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = section.trim();
    while !rest.is_empty() {
        let inner = rest.strip_prefix(DS_CALL_BEGIN)?;
        let (call, after) = match inner.find(DS_CALL_END) {
            Some(end) => (&inner[..end], &inner[end + DS_CALL_END.len()..]),
            None => (inner, ""),
        };
        let (head, tail) = call.split_once(DS_SEP)?;
        let (name, args) = match tail.split_once('\n') {
            // V3/R1: the type before the separator, name and a fenced block after it.
            Some((name, block)) if head.trim() == "function" => {
                let block = block.trim();
                let json = block
                    .strip_prefix("```json")
                    .or_else(|| block.strip_prefix("```"))?
                    .trim_end()
                    .strip_suffix("```")?;
                (name.trim(), json.trim())
            }
            _ => (head.trim(), tail.trim()),
        };
        if name.is_empty() {
            return None;
        }
        let raw: &RawValue = serde_json::from_str(args).ok()?;
        calls.push(ToolCall {
            id: String::new(),
            name: name.to_string(),
            arguments: object_text(raw)?,
        });
        rest = after.trim();
    }
    (!calls.is_empty()).then_some(calls)
}

/// A Kimi-K2 section: `<|tool_call_begin|>functions.N:I<|tool_call_argument_begin|>{..}<|tool_call_end|>`
/// calls; the id is `functions.N:I` as the model wrote it.
fn parse_kimi(section: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = section.trim();
    while !rest.is_empty() {
        let inner = rest.strip_prefix(KIMI_CALL_BEGIN)?;
        let (call, after) = match inner.find(KIMI_CALL_END) {
            Some(end) => (&inner[..end], &inner[end + KIMI_CALL_END.len()..]),
            None => (inner, ""),
        };
        let (id, args) = call.split_once(KIMI_ARGS_BEGIN)?;
        let id = id.trim();
        let name = id.strip_prefix("functions.").unwrap_or(id);
        let name = match name.rsplit_once(':') {
            Some((n, idx)) if idx.chars().all(|c| c.is_ascii_digit()) => n,
            _ => name,
        };
        if name.is_empty() {
            return None;
        }
        let raw: &RawValue = serde_json::from_str(args.trim()).ok()?;
        calls.push(ToolCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments: object_text(raw)?,
        });
        rest = after.trim();
    }
    (!calls.is_empty()).then_some(calls)
}

/// What a harmony message is, from its header (`assistant<|channel|>analysis`,
/// `<|channel|>commentary to=functions.N <|constrain|>json`, ...).
fn harmony_kind(header: &str) -> BodyKind {
    if harmony_recipient(header).is_some() {
        return BodyKind::Call;
    }
    let channel = header
        .split(H_CHANNEL)
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("");
    if channel.starts_with("analysis") {
        BodyKind::Reasoning
    } else {
        BodyKind::Content
    }
}

/// The function a header addresses (`to=functions.N`), in the role or channel part.
fn harmony_recipient(header: &str) -> Option<&str> {
    let at = header.find("to=")?;
    let to = header[at + 3..]
        .split(|c: char| c.is_whitespace() || c == '<')
        .next()?;
    let name = to.strip_prefix("functions.").unwrap_or(to);
    (!name.is_empty()).then_some(name)
}

fn harmony_call(header: &str, body: &str) -> Option<ToolCall> {
    let name = harmony_recipient(header)?;
    let raw: &RawValue = serde_json::from_str(body.trim()).ok()?;
    Some(ToolCall {
        id: String::new(),
        name: name.to_string(),
        arguments: object_text(raw)?,
    })
}
