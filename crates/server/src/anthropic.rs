//! The Anthropic Messages API: `POST /v1/messages` (one JSON message, or Anthropic's
//! SSE event stream) and `POST /v1/messages/count_tokens`, so that Claude-Code-style
//! clients can use the local model. The conversation is rendered with the model's own
//! chat template, as on the OpenAI route, and runs on the same scheduler.
//!
//! Tools (`tools`, `tool_use` / `tool_result` blocks) and extended thinking are refused
//! with a 400 for now rather than ignored: a client must not believe they worked.

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

use crate::gen::{self, GenParams, Output, StreamShape};
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
    bad(format!(
        "{what} not supported yet by this server (text content only for now)"
    ))
}

/// What a request asks the chat template to render: the messages, and the text of a
/// last assistant message that the answer continues (Anthropic's "prefill": the model
/// goes on from it and the response holds only the new text).
#[derive(Debug, PartialEq)]
struct Conversation {
    messages: Vec<ChatMessage>,
    prefill: Option<String>,
}

/// The request-level features this server does not have yet.
fn refuse_unsupported(req: &MessagesRequest) -> Result<(), ApiError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(not_yet("'tools' are"));
    }
    if let Some(choice) = &req.tool_choice {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "auto" | "none") {
            return Err(not_yet(&format!("tool_choice of type '{kind}' is")));
        }
    }
    if let Some(thinking) = &req.thinking {
        match thinking.get("type").and_then(Value::as_str) {
            Some("disabled") => {}
            Some(kind) => {
                return Err(not_yet(&format!(
                    "extended thinking (thinking.type '{kind}') is"
                )))
            }
            None => return Err(bad("'thinking' must be an object with a 'type'")),
        }
    }
    Ok(())
}

/// One content block's text: the one place where Anthropic's block types map onto what
/// the chat template gets. `Ok(None)`: a block that adds nothing to the prompt.
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
        "tool_use" | "tool_result" | "server_tool_use" | "web_search_tool_result" => Err(not_yet(
            &format!("{at}: '{kind}' blocks (tool calling) are"),
        )),
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
    refuse_unsupported(req)?;
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
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            r @ ("user" | "assistant") => r,
            other => {
                return Err(bad(format!(
                    "messages[{i}].role: '{other}' is not a role here (user or assistant; the \
                     system prompt goes in the top-level 'system')"
                )))
            }
        };
        let text = content_text(&m.content, &format!("messages[{i}].content"), role)?;
        out.push(ChatMessage::new(role, text));
    }
    // Consecutive messages of one role stay separate turns (the template renders each).
    let prefill = match out.last() {
        Some(last) if last.role == "assistant" => out.pop().map(|m| m.content),
        _ => None,
    };
    if out.is_empty() {
        return Err(bad(
            "the conversation needs a user message before the assistant's",
        ));
    }
    Ok(Conversation {
        messages: out,
        prefill: prefill.filter(|p| !p.is_empty()),
    })
}

/// The prompt's ids: the rendered conversation with the generation prompt, then the
/// prefill's tokens (as text: special-token text in it stays plain, unless the server
/// runs with `--special-in-content`). With a prefill the output continues the prompt's
/// text (a SentencePiece first token keeps its leading space).
async fn prompt_ids(
    st: &Arc<AppState>,
    conv: Conversation,
) -> Result<(Vec<u32>, Output), ApiError> {
    let (mut ids, _) =
        gen::chat_prompt(st, &conv.messages, &crate::tools::ChatSetup::default(), FLAVOR).await?;
    let Some(prefill) = conv.prefill else {
        return Ok((ids, Output::Answer));
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
    Ok((ids, Output::Continuation))
}

/// Anthropic's `stop_reason` and `stop_sequence` for a finished generation.
fn stop_reason(stats: &GenerationStats, stops: &[String]) -> (&'static str, Value) {
    match (stats.finish, stats.stop_string) {
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
    let stops = req.stop_sequences.take().unwrap_or_default();
    let params = GenParams {
        max_tokens: Some(max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: stops.clone(),
        ignore_eos: req.ignore_eos.unwrap_or(false),
        ..GenParams::default()
    };
    let (prompt, output) = prompt_ids(&st, conv).await?;
    let run = gen::start(&st, prompt, &params, output, &log, FLAVOR)?;
    let (id, model) = (new_id(), st.config.model_name.clone());
    if req.stream.unwrap_or(false) {
        let shape = Events {
            id,
            model,
            stops,
            started: false,
        };
        return Ok(sse(run, shape));
    }
    let done = gen::collect(run, FLAVOR).await?;
    let (reason, sequence) = stop_reason(&done.stats, &stops);
    let s = &done.stats;
    Ok(json_ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": done.text}],
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
    let (prompt, _) = prompt_ids(&st, conv).await?;
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
/// cut off.
struct Events {
    id: String,
    model: String,
    stops: Vec<String>,
    /// `message_start` and the text block's start were sent.
    started: bool,
}

impl Events {
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
        out.push(event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})));
        out.push(event(json!({"type": "ping"})));
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
                out.push(event(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": t}})));
                (out, false)
            }
            Event::Done(stats) => {
                self.start(stats.prompt_tokens, stats.cached_tokens, &mut out);
                let (reason, sequence) = stop_reason(&stats, &self.stops);
                out.push(event(json!({"type": "content_block_stop", "index": 0})));
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
    fn tools_thinking_and_unknown_blocks_are_refused_clearly() {
        let user = json!([{"role": "user", "content": "Hi"}]);
        let m = error_of(json!({"messages": user, "tools": [{"name": "f", "input_schema": {}}]}));
        assert!(m.contains("not supported yet"), "{m}");
        let m = error_of(
            json!({"messages": user, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        );
        assert!(m.contains("not supported yet"), "{m}");
        let m = error_of(json!({"messages": user, "tool_choice": {"type": "any"}}));
        assert!(m.contains("not supported yet"), "{m}");
        for block in [
            json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
            json!({"type": "tool_result", "tool_use_id": "t", "content": "4"}),
            json!({"type": "image", "source": {"type": "url", "url": "http://x"}}),
        ] {
            let m = error_of(json!({"messages": [{"role": "user", "content": [block]}]}));
            assert!(
                m.contains("messages[0].content[0]") && m.contains("not supported yet"),
                "{m}"
            );
        }
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
        };
        let stops = ["\n".to_string(), "END".to_string()];
        assert_eq!(
            stop_reason(&stats(FinishReason::Stop, Some(1)), &stops),
            ("stop_sequence", json!("END"))
        );
        assert_eq!(
            stop_reason(&stats(FinishReason::Stop, None), &stops),
            ("end_turn", Value::Null)
        );
        assert_eq!(
            stop_reason(&stats(FinishReason::Length, None), &stops),
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
        let mut shape = Events {
            id: "msg_1".into(),
            model: "m".into(),
            stops: vec![],
            started: false,
        };
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
