//! The Anthropic Messages API: `POST /v1/messages` (one JSON message, or Anthropic's
//! SSE event stream) and `POST /v1/messages/count_tokens`, so that Claude-Code-style
//! clients can use the local model. The conversation is rendered with the model's own
//! chat template, as on the OpenAI route, and runs on the same scheduler.
//!
//! Tools (`tools`, `tool_use` / `tool_result` blocks) map onto the same tool calls and
//! tool messages as the OpenAI route's, rendered by the template and parsed back from
//! the model's own call syntax (`crate::tools`); extended thinking switches the
//! template's `enable_thinking` and comes back as `thinking` blocks. Forcing a call
//! (`tool_choice` `any` or `tool`) needs the reply constrained to the call syntax and is
//! refused with a 400, as on the OpenAI route, rather than ignored.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use engine::scheduler::Event;
use engine::{ChatMessage, FinishReason, GenerationStats};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use text::{ToolCall, ToolSpec};

use crate::gen::{self, GenParams, Output, StreamShape};
use crate::tools::{ChatSetup, Parsed, Piece, Reply, ToolChoice};
use crate::{json_ok, parse_json, AccessLog, ApiError, AppState, Flavor};

const FLAVOR: Flavor = Flavor::Anthropic;

#[derive(Deserialize, Debug)]
struct Message {
    role: String,
    /// A string, or a list of content blocks (checked in [`block_text`]).
    content: Value,
}

/// The body of both endpoints (count_tokens has no `max_tokens`). Unknown fields —
/// `metadata`, `service_tier`, `cache_control` on blocks, … — are ignored.
#[derive(Deserialize, Debug)]
struct MessagesRequest {
    model: Option<String>,
    max_tokens: Option<i64>,
    messages: Option<Vec<Message>>,
    /// A string or a list of text blocks.
    system: Option<Value>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    stream: Option<bool>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
    /// llama.cpp's extension (not Anthropic's): keep going past end-of-generation tokens.
    ignore_eos: Option<bool>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with_flavor(FLAVOR)
}

fn not_yet(what: &str) -> ApiError {
    bad(format!("{what} not supported by this server"))
}

/// What a request asks the chat template to render: the messages, the tools and template
/// variables, and the text of a last assistant message that the answer continues
/// (Anthropic's "prefill": the model goes on from it and the response holds only the new
/// text).
#[derive(Debug)]
struct Conversation {
    messages: Vec<ChatMessage>,
    setup: ChatSetup,
    /// `any` or `tool`: the reply must be a call.
    forced: ToolChoice,
    prefill: Option<String>,
}

/// An Anthropic tool: `{name, description, input_schema}` (client tools; the server tools
/// Anthropic runs itself, `web_search_…`, carry a `type` and are refused).
fn tool_spec(tool: &Value, i: usize) -> Result<ToolSpec, ApiError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(bad(format!(
                "tools[{i}]: '{kind}' is one of Anthropic's server tools, which this server does                  not run (client tools only: name, description, input_schema)"
            )));
        }
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| bad(format!("tools[{i}].name must be a non-empty string")))?;
    let description = match tool.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(bad(format!("tools[{i}].description must be a string"))),
    };
    let parameters = match tool.get("input_schema") {
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(bad(format!(
                "tools[{i}].input_schema must be a JSON Schema object"
            )))
        }
    };
    Ok(ToolSpec {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// The tools, `tool_choice` and `thinking` of a request as the template and the reply
/// parser see them.
fn setup(req: &MessagesRequest) -> Result<(ChatSetup, ToolChoice), ApiError> {
    let mut offer = true;
    let mut forced = ToolChoice::Auto;
    if let Some(choice) = &req.tool_choice {
        match choice.get("type").and_then(Value::as_str) {
            Some("auto") => {}
            // "none": the model is not told of the tools and nothing is read as a call.
            Some("none") => offer = false,
            Some("any") => forced = ToolChoice::Required,
            Some("tool") => match choice.get("name").and_then(Value::as_str) {
                Some(name) => forced = ToolChoice::Named(name.to_string()),
                None => return Err(bad("tool_choice of type 'tool' needs a 'name'")),
            },
            _ => {
                return Err(bad(
                    "tool_choice must be an object with type 'auto', 'any', 'tool' or 'none'",
                ))
            }
        }
    }
    let tools = match &req.tools {
        Some(tools) if offer => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool_spec(t, i))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let mut setup = ChatSetup {
        tools,
        kwargs: Vec::new(),
        // Thinking is always taken apart into `thinking` blocks: the Messages API has no
        // place for it in a text block.
        reasoning: crate::tools::ReasoningFormat::DeepSeek,
    };
    if let Some(thinking) = &req.thinking {
        match thinking.get("type").and_then(Value::as_str) {
            Some("enabled") => setup.set_kwarg("enable_thinking", json!(true)),
            Some("disabled") => setup.set_kwarg("enable_thinking", json!(false)),
            Some(kind) => {
                return Err(bad(format!(
                    "thinking.type must be 'enabled' or 'disabled', got '{kind}'"
                )))
            }
            None => return Err(bad("'thinking' must be an object with a 'type'")),
        }
    }
    Ok((setup, forced))
}

/// The text of a `tool_result` block's `content`: a string or text blocks.
fn tool_result_text(block: &Value, at: &str) -> Result<String, ApiError> {
    match block.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(c) => content_text(c, &format!("{at}.content"), "user"),
    }
}

/// One message's blocks as chat messages: an assistant turn's text and `tool_use` calls
/// become one assistant message with tool calls; a user turn's `tool_result` blocks
/// become `tool` messages (answering the calls by id, with the function's name) before
/// the user's own text, if any.
fn message_turns(
    m: &Message,
    role: &'static str,
    i: usize,
    call_names: &mut Vec<(String, String)>,
    out: &mut Vec<ChatMessage>,
) -> Result<(), ApiError> {
    let at = format!("messages[{i}].content");
    let Value::Array(blocks) = &m.content else {
        out.push(ChatMessage::new(role, content_text(&m.content, &at, role)?));
        return Ok(());
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") if role == "assistant" => {
                let field = |k: &str| block.get(k).and_then(Value::as_str);
                let (Some(id), Some(name)) = (field("id"), field("name")) else {
                    return Err(bad(format!(
                        "{at}: a tool_use block needs string 'id' and 'name'"
                    )));
                };
                let input = match block.get("input") {
                    Some(v @ Value::Object(_)) => v.to_string(),
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(_) => return Err(bad(format!("{at}.input must be an object"))),
                };
                call_names.push((id.to_string(), name.to_string()));
                calls.push(ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: input,
                });
            }
            Some("tool_result") if role == "user" => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}: a tool_result block needs 'tool_use_id'")))?;
                let mut content = tool_result_text(block, &at)?;
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    content = format!("Error: {content}");
                }
                let name = call_names
                    .iter()
                    .rev()
                    .find(|(c, _)| c == id)
                    .map(|(_, n)| n.clone());
                out.push(ChatMessage {
                    tool_call_id: Some(id.to_string()),
                    name,
                    ..ChatMessage::new("tool", content)
                });
            }
            Some(kind @ ("tool_use" | "tool_result")) => {
                return Err(bad(format!(
                    "{at}: a '{kind}' block cannot be in a {role} message"
                )))
            }
            _ => {
                if let Some(t) = block_text(block, &at, role)? {
                    text.push_str(t);
                }
            }
        }
    }
    if !calls.is_empty() || !text.is_empty() || role == "assistant" {
        out.push(ChatMessage {
            tool_calls: calls,
            ..ChatMessage::new(role, text)
        });
    }
    Ok(())
}

/// One content block's text (tool blocks are read by [`message_turns`]). `Ok(None)`: a block that adds nothing to the prompt.
fn block_text<'a>(block: &'a Value, at: &str, role: &str) -> Result<Option<&'a str>, ApiError> {
    let kind = block.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad(format!(
            "{at}: a content block must be an object with a 'type'"
        ))
    })?;
    match kind {
        "text" => block
            .get("text")
            .and_then(Value::as_str)
            .map(Some)
            .ok_or_else(|| bad(format!("{at}: a text block needs a string 'text'"))),
        // Earlier turns' thinking: Anthropic's own API leaves it out of the context, so
        // it adds nothing here either.
        "thinking" | "redacted_thinking" if role == "assistant" => Ok(None),
        "server_tool_use" | "web_search_tool_result" => Err(not_yet(&format!(
            "{at}: '{kind}' blocks (Anthropic's server tools) are"
        ))),
        "tool_use" | "tool_result" => Err(bad(format!(
            "{at}: a '{kind}' block cannot be in a {role} message"
        ))),
        "image" | "document" | "search_result" | "container_upload" => {
            Err(not_yet(&format!("{at}: '{kind}' blocks are")))
        }
        other => Err(bad(format!(
            "{at}: '{other}' is not a content block type this server knows"
        ))),
    }
}

/// A `content` or `system` value's text: a string, or text blocks joined as they are
/// (the OpenAI route joins a message's text parts the same way).
fn content_text(content: &Value, at: &str, role: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                if let Some(t) = block_text(block, &format!("{at}[{j}]"), role)? {
                    text.push_str(t);
                }
            }
            Ok(text)
        }
        _ => Err(bad(format!(
            "{at} must be a string or a list of content blocks"
        ))),
    }
}

/// The request's conversation for the chat template.
fn conversation(req: &mut MessagesRequest) -> Result<Conversation, ApiError> {
    let (setup, forced) = setup(req)?;
    let messages = req
        .messages
        .take()
        .ok_or_else(|| bad("'messages' is required"))?;
    if messages.is_empty() {
        return Err(bad("'messages' must hold at least one message"));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = &req.system {
        let text = content_text(system, "system", "system")?;
        if !text.is_empty() {
            out.push(ChatMessage::system(text));
        }
    }
    let mut call_names = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(bad(format!(
                    "messages[{i}].role: '{other}' is not a role here (user or assistant; the \
                     system prompt goes in the top-level 'system')"
                )))
            }
        };
        message_turns(m, role, i, &mut call_names, &mut out)?;
    }
    // Consecutive messages of one role stay separate turns (the template renders each).
    // A last assistant message of plain text is a prefill; one with calls is history.
    let prefill = match out.last() {
        Some(last) if last.role == "assistant" && last.tool_calls.is_empty() => {
            out.pop().map(|m| m.content)
        }
        _ => None,
    };
    if !out.iter().any(|m| m.role == "user") {
        return Err(bad(
            "the conversation needs a user message before the assistant's",
        ));
    }
    let prefill = prefill.filter(|p| !p.is_empty());
    if prefill.is_some() && forced != ToolChoice::Auto {
        return Err(bad(
            "a tool_choice that forces a call cannot continue a prefilled assistant message",
        ));
    }
    Ok(Conversation {
        messages: out,
        setup,
        forced,
        prefill,
    })
}

/// The prompt's ids: the rendered conversation with the generation prompt, then the
/// prefill's tokens (as text: special-token text in it stays plain, unless the server
/// runs with `--special-in-content`). With a prefill the output continues the prompt's
/// text (a SentencePiece first token keeps its leading space).
async fn prompt_ids(
    st: &Arc<AppState>,
    conv: Conversation,
) -> Result<(Vec<u32>, Output, Option<Reply>), ApiError> {
    let (mut ids, text) = gen::chat_prompt(st, &conv.messages, &conv.setup, FLAVOR).await?;
    let Some(prefill) = conv.prefill else {
        let reply = conv.setup.reply(st, &text);
        return Ok((ids, Output::Answer, reply));
    };
    let engine = st.engine.clone();
    let as_text = !st.config.special_in_content;
    let more = tokio::task::spawn_blocking(move || match engine.tokenizer.as_ref() {
        // The whole prefill is one text span.
        Some(tok) if as_text => tok
            .encode_with_text_spans(&prefill, false, std::slice::from_ref(&(0..prefill.len())))
            .map_err(|e| e.to_string()),
        Some(tok) => tok.encode(&prefill, false).map_err(|e| e.to_string()),
        None => Err("this model file has no tokenizer".to_string()),
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")).with_flavor(FLAVOR))?
    .map_err(bad)?;
    ids.extend(more);
    // A continued answer is plain text: the prefill decided what it is.
    Ok((ids, Output::Continuation, None))
}

/// Anthropic's `stop_reason` and `stop_sequence` for a finished generation.
fn stop_reason(stats: &GenerationStats, stops: &[String], calls: usize) -> (&'static str, Value) {
    match (stats.finish, stats.stop_string) {
        (FinishReason::Stop, None) if calls > 0 => ("tool_use", Value::Null),
        (FinishReason::Stop, Some(i)) => ("stop_sequence", json!(stops.get(i))),
        (FinishReason::Length, _) => ("max_tokens", Value::Null),
        // Not sent: a cancelled generation ends in an error (gen::CUT_OFF).
        _ => ("end_turn", Value::Null),
    }
}

/// Anthropic counts prompt tokens read from the cache apart from the others: the
/// prefix cache's reuse is `cache_read_input_tokens` (nothing is ever written on
/// request, so `cache_creation_input_tokens` is 0).
fn usage(prompt_tokens: usize, cached_tokens: usize, output_tokens: usize) -> Value {
    json!({
        "input_tokens": prompt_tokens - cached_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached_tokens,
    })
}

/// A call as Anthropic writes it: a `tool_use` block with the arguments as an object.
fn tool_use_json(c: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": c.id, "name": c.name,
        "input": crate::tools::arguments_object(&c.arguments)})
}

fn new_id() -> String {
    format!("msg_{:024x}", rand::random::<u128>() >> 32)
}

/// `POST /v1/messages`.
pub(crate) async fn messages(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<AccessLog>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: MessagesRequest = parse_json(&headers, &body, FLAVOR)?;
    st.check_model(req.model.as_deref(), FLAVOR)?;
    let max_tokens = req
        .max_tokens
        .ok_or_else(|| bad("'max_tokens' is required"))?;
    let conv = conversation(&mut req)?;
    conv.setup.check_tools(&st, FLAVOR)?;
    let stops = req.stop_sequences.take().unwrap_or_default();
    let mut params = GenParams {
        max_tokens: Some(max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: stops.clone(),
        ignore_eos: req.ignore_eos.unwrap_or(false),
        ..GenParams::default()
    };
    let forced = crate::tools::forced_call(&st, &conv.setup.tools, &conv.forced, FLAVOR)?;
    params.constraint = crate::structured::compile(&st, forced, FLAVOR).await?;
    let (prompt, output, reply) = prompt_ids(&st, conv).await?;
    if reply.is_some() {
        // The call and thinking markers must reach the parser as text.
        params.keep_special = crate::tools::keep_special(&st);
    }
    let run = gen::start(&st, prompt, &params, output, &log, FLAVOR)?;
    let (id, model) = (new_id(), st.config.model_name.clone());
    if req.stream.unwrap_or(false) {
        return Ok(sse(run, Events::new(id, model, stops, reply)));
    }
    let done = gen::collect(run, FLAVOR).await?;
    let parsed = Parsed::new(reply, done.text);
    let (reason, sequence) = stop_reason(&done.stats, &stops, parsed.calls.len());
    let mut content = Vec::new();
    if !parsed.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": parsed.reasoning, "signature": ""}));
    }
    // A text block when there is text, or when nothing else came (as the stream sends).
    if !parsed.content.is_empty() || (parsed.calls.is_empty() && parsed.reasoning.is_empty()) {
        content.push(json!({"type": "text", "text": parsed.content}));
    }
    content.extend(parsed.calls.iter().map(tool_use_json));
    let s = &done.stats;
    Ok(json_ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(s.prompt_tokens, s.cached_tokens, s.generated_tokens),
    })))
}

/// `POST /v1/messages/count_tokens`: the rendered prompt's token count.
pub(crate) async fn count_tokens(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: MessagesRequest = parse_json(&headers, &body, FLAVOR)?;
    st.check_model(req.model.as_deref(), FLAVOR)?;
    let conv = conversation(&mut req)?;
    conv.setup.check_tools(&st, FLAVOR)?;
    let (prompt, _, _) = prompt_ids(&st, conv).await?;
    Ok(json_ok(json!({"input_tokens": prompt.len()})))
}

/// An SSE event: its name, a newline, its JSON data (JSON text holds no raw newline, so
/// [`sse`] can split them again).
fn event(data: Value) -> String {
    let name = data["type"].as_str().unwrap_or("error").to_string();
    format!("{name}\n{data}")
}

fn sse(run: gen::Running, shape: Events) -> Response {
    let stream = gen::messages(run, shape).map(|m| {
        let (name, data) = m.split_once('\n').unwrap_or(("error", m.as_str()));
        Ok::<_, Infallible>(SseEvent::default().event(name).data(data))
    });
    Sse::new(stream).into_response()
}

/// Anthropic's event sequence: `message_start`, `content_block_start`, `ping`, one
/// `content_block_delta` per piece of text, `content_block_stop`, `message_delta` (stop
/// reason and usage), `message_stop`; an `error` event when the generation fails or is
/// cut off. When the reply is parsed (tools offered, or thinking), each part gets its own
/// block as it comes: `thinking` (`thinking_delta`), `text` (`text_delta`) and one
/// `tool_use` block per call (its arguments in one `input_json_delta`).
struct Events {
    id: String,
    model: String,
    stops: Vec<String>,
    /// `message_start` (and, for a plain reply, the text block's start) were sent.
    started: bool,
    /// Takes the reply apart, or None for plain text.
    reply: Option<Reply>,
    /// The open block: its index and kind (`text` or `thinking`).
    open: Option<(usize, &'static str)>,
    /// Blocks started so far.
    blocks: usize,
    /// Tool calls sent.
    calls: usize,
}

impl Events {
    fn new(id: String, model: String, stops: Vec<String>, reply: Option<Reply>) -> Events {
        Events {
            id,
            model,
            stops,
            started: false,
            reply,
            open: None,
            blocks: 0,
            calls: 0,
        }
    }

    fn start(&mut self, prompt_tokens: usize, cached_tokens: usize, out: &mut Vec<String>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage(prompt_tokens, cached_tokens, 0),
        }})));
        if self.reply.is_none() {
            self.open_block("text", out);
        }
        out.push(event(json!({"type": "ping"})));
    }

    fn close_block(&mut self, out: &mut Vec<String>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(json!({"type": "content_block_stop", "index": index})));
        }
    }

    /// Makes a `kind` block the open one (closing another kind's).
    fn open_block(&mut self, kind: &'static str, out: &mut Vec<String>) -> usize {
        match self.open {
            Some((index, k)) if k == kind => return index,
            Some(_) => self.close_block(out),
            None => {}
        }
        let index = self.blocks;
        self.blocks += 1;
        let block = match kind {
            "thinking" => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        out.push(event(json!({"type": "content_block_start", "index": index,
            "content_block": block})));
        self.open = Some((index, kind));
        index
    }

    fn send(&mut self, piece: Piece, out: &mut Vec<String>) {
        match piece {
            Piece::Content(t) => {
                let index = self.open_block("text", out);
                out.push(event(json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": t}})));
            }
            Piece::Reasoning(t) => {
                let index = self.open_block("thinking", out);
                out.push(event(json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "thinking_delta", "thinking": t}})));
            }
            Piece::Call { call, .. } => {
                self.close_block(out);
                let index = self.blocks;
                self.blocks += 1;
                self.calls += 1;
                out.push(event(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name,
                        "input": {}}})));
                let input = crate::tools::arguments_object(&call.arguments).to_string();
                out.push(event(json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": input}})));
                out.push(event(json!({"type": "content_block_stop", "index": index})));
            }
        }
    }
}

fn error_event(e: &ApiError) -> String {
    event(e.clone().with_flavor(FLAVOR).body())
}

impl StreamShape for Events {
    fn on_event(&mut self, ev: Event, prompt_tokens: usize) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        match ev {
            Event::Started {
                prompt_tokens,
                cached_tokens,
            } => {
                self.start(prompt_tokens, cached_tokens, &mut out);
                (out, false)
            }
            Event::Text(t) => {
                self.start(prompt_tokens, 0, &mut out);
                let pieces = match self.reply.as_mut() {
                    Some(r) => r.push(&t),
                    None => vec![Piece::Content(t.to_string())],
                };
                for p in pieces {
                    self.send(p, &mut out);
                }
                (out, false)
            }
            Event::Done(stats) => {
                self.start(stats.prompt_tokens, stats.cached_tokens, &mut out);
                let pieces = self.reply.as_mut().map(Reply::finish).unwrap_or_default();
                for p in pieces {
                    self.send(p, &mut out);
                }
                if self.blocks == 0 {
                    // Nothing came: an empty text block, as Anthropic sends.
                    self.open_block("text", &mut out);
                }
                self.close_block(&mut out);
                let (reason, sequence) = stop_reason(&stats, &self.stops, self.calls);
                out.push(event(json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage(stats.prompt_tokens, stats.cached_tokens, stats.generated_tokens),
                })));
                out.push(event(json!({"type": "message_stop"})));
                (out, true)
            }
            Event::Error(e) => {
                out.push(error_event(&ApiError::from(e)));
                (out, true)
            }
        }
    }

    fn on_cut_off(&mut self, message: &str) -> Vec<String> {
        vec![error_event(&ApiError::unavailable(message))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    fn error_of(v: Value) -> String {
        let e = conversation(&mut request(v)).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        e.message
    }

    #[test]
    fn system_blocks_strings_and_prefill() {
        let conv = conversation(&mut request(json!({
            "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""}, {"type": "text", "text": "Hello"}]},
                {"role": "user", "content": "Count"},
                {"role": "assistant", "content": "1, 2,"},
            ],
        })))
        .unwrap();
        let roles: Vec<(&str, &str)> = conv
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            roles,
            [
                ("system", "Be terse."),
                ("user", "Hi"),
                ("user", "again"),
                ("assistant", "Hello"),
                ("user", "Count"),
            ]
        );
        assert_eq!(conv.prefill.as_deref(), Some("1, 2,"));
        // An empty system prompt adds no turn; no trailing assistant, no prefill.
        let conv = conversation(&mut request(
            json!({"system": "", "messages": [{"role": "user", "content": "Hi"}]}),
        ))
        .unwrap();
        assert_eq!(conv.messages, [ChatMessage::user("Hi")]);
        assert_eq!(conv.prefill, None);
    }

    #[test]
    fn tools_thinking_and_blocks_map_or_are_refused_clearly() {
        let user = json!([{"role": "user", "content": "Hi"}]);
        // Forcing a call, server tools and non-text media are refused.
        let m = error_of(json!({"messages": user, "tool_choice": {"type": "tool"}}));
        assert!(m.contains("needs a 'name'"), "{m}");
        let m = error_of(json!({"messages": [{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Sure"}], "tools": [{"name": "f", "input_schema": {}}],
            "tool_choice": {"type": "any"}}));
        assert!(m.contains("prefilled"), "{m}");
        let m = error_of(
            json!({"messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        );
        assert!(m.contains("server tools"), "{m}");
        let m = error_of(json!({"messages": user, "tools": [{"name": "", "input_schema": {}}]}));
        assert!(m.contains("tools[0].name"), "{m}");
        let m = error_of(json!({"messages": user, "thinking": {"type": "sometimes"}}));
        assert!(m.contains("thinking.type"), "{m}");
        let image = json!({"type": "image", "source": {"type": "url", "url": "http://x"}});
        let m = error_of(json!({"messages": [{"role": "user", "content": [image]}]}));
        assert!(
            m.contains("messages[0].content[0]") && m.contains("not supported"),
            "{m}"
        );
        let m = error_of(json!({"messages": [{"role": "user", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}));
        assert!(m.contains("cannot be in a user message"), "{m}");
        // Tools, thinking on: template variables and tool specs.
        let conv = conversation(&mut request(json!({"messages": user,
            "tools": [{"name": "add", "description": "Adds.", "input_schema": {"type": "object"}}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}})))
        .unwrap();
        assert_eq!(conv.setup.tools.len(), 1);
        assert_eq!(conv.setup.tools[0].name, "add");
        assert_eq!(
            conv.setup.tools[0].parameters.as_deref(),
            Some(r#"{"type":"object"}"#)
        );
        assert_eq!(
            conv.setup.kwargs,
            vec![("enable_thinking".to_string(), json!(true))]
        );
        // tool_choice none: the tools are not offered.
        let conv = conversation(&mut request(json!({"messages": user,
            "tools": [{"name": "add", "input_schema": {}}], "tool_choice": {"type": "none"}})))
        .unwrap();
        assert!(conv.setup.tools.is_empty());
        // What is accepted: no tools, thinking off, tool_choice auto.
        conversation(&mut request(json!({"messages": user, "tools": [],
            "thinking": {"type": "disabled"}, "tool_choice": {"type": "auto"}})))
        .unwrap();
        for (body, needle) in [
            (json!({"messages": []}), "at least one"),
            (json!({}), "'messages' is required"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "not a role",
            ),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "must be a string or a list",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "'type'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "string 'text'",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "bogus"}]}]}),
                "'bogus'",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "x"}]}),
                "needs a user message",
            ),
            (json!({"messages": user, "system": 5}), "system must be"),
        ] {
            let m = error_of(body.clone());
            assert!(m.contains(needle), "{body}: {m}");
        }
    }

    #[test]
    fn a_tool_round_trip_becomes_calls_and_tool_messages() {
        let conv = conversation(&mut request(json!({"messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "use the tool", "signature": "x"},
                {"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 2}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4"}]},
                {"type": "text", "text": "Thanks."}]},
        ]})))
        .unwrap();
        let m = &conv.messages;
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            (m[1].role.as_str(), m[1].content.as_str()),
            ("assistant", "Let me add.")
        );
        assert_eq!(m[1].tool_calls.len(), 1);
        assert_eq!(m[1].tool_calls[0].name, "add");
        assert_eq!(m[1].tool_calls[0].id, "toolu_1");
        assert_eq!(
            serde_json::from_str::<Value>(&m[1].tool_calls[0].arguments).unwrap(),
            json!({"a": 2, "b": 2})
        );
        assert_eq!((m[2].role.as_str(), m[2].content.as_str()), ("tool", "4"));
        assert_eq!(m[2].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(m[2].name.as_deref(), Some("add"));
        assert_eq!(
            (m[3].role.as_str(), m[3].content.as_str()),
            ("user", "Thanks.")
        );
        // A last assistant turn with calls is history, not a prefill.
        assert!(conv.prefill.is_none());
    }

    #[test]
    fn stop_reasons_map_from_the_engine() {
        let stats = |finish, stop_string| GenerationStats {
            prompt_tokens: 10,
            cached_tokens: 4,
            generated_tokens: 3,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            finish,
            stop_string,
            grammar_seconds: 0.0,
            grammar_error: None,
            drafted_tokens: 0,
            accepted_tokens: 0,
        };
        let stops = ["\n".to_string(), "END".to_string()];
        assert_eq!(
            stop_reason(&stats(FinishReason::Stop, Some(1)), &stops, 0),
            ("stop_sequence", json!("END"))
        );
        assert_eq!(
            stop_reason(&stats(FinishReason::Stop, None), &stops, 0),
            ("end_turn", Value::Null)
        );
        assert_eq!(
            stop_reason(&stats(FinishReason::Length, None), &stops, 0),
            ("max_tokens", Value::Null)
        );
        let u = usage(10, 4, 3);
        assert_eq!(
            (
                u["input_tokens"].as_u64(),
                u["cache_read_input_tokens"].as_u64()
            ),
            (Some(6), Some(4))
        );
    }

    #[test]
    fn the_event_sequence_and_cut_off() {
        let mut shape = Events::new("msg_1".into(), "m".into(), vec![], None);
        let mut names = Vec::new();
        let mut push = |(msgs, _end): (Vec<String>, bool)| {
            for m in msgs {
                let (name, data) = m.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["type"], name);
                names.push(name.to_string());
            }
        };
        push(shape.on_event(
            Event::Started {
                prompt_tokens: 5,
                cached_tokens: 0,
            },
            5,
        ));
        push(shape.on_event(Event::Text("Hi".into()), 5));
        push((shape.on_cut_off(gen::CUT_OFF), true));
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "error"
            ]
        );
        let cut = shape.on_cut_off(gen::CUT_OFF).remove(0);
        let v: Value = serde_json::from_str(cut.split_once('\n').unwrap().1).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cut off"));
    }
}
