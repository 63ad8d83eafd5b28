//! The OpenAI API: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, with
//! SSE streaming (`data: {chunk}` … `data: [DONE]`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use engine::scheduler::Event;
use engine::{ChatMessage, FinishReason, GenerationStats};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use text::ToolCall;

use crate::gen::{self, GenParams, Output, StreamShape};
use crate::logprobs::LogprobStream;
use crate::tools::{self, ChatSetup, Parsed, Piece, Reply, ToolChoice};
use crate::{json_ok, parse_json, structured, AccessLog, ApiError, AppState, Flavor};

/// `stop`: one string or a list.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub(crate) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// A message's `content`: a string, or a list of parts of which the text ones count.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Debug)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant turn's calls.
    #[serde(default)]
    tool_calls: Option<Vec<MessageToolCall>>,
    /// A tool message: the call it answers.
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// An assistant turn's reasoning (sent back by clients of DeepSeek's API).
    #[serde(default)]
    reasoning_content: Option<String>,
}

#[derive(Deserialize, Debug)]
struct MessageToolCall {
    #[serde(default)]
    id: Option<String>,
    function: MessageFunction,
}

#[derive(Deserialize, Debug)]
struct MessageFunction {
    name: String,
    /// JSON text (OpenAI); an object is taken too.
    #[serde(default)]
    arguments: Option<Value>,
}

/// `prompt` of a completion: a string, a one-string list, or token ids.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Deserialize, Debug, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Both endpoints' request body (each checks the fields it needs; unknown fields are
/// ignored, known ones must have the right type).
#[derive(Deserialize, Debug)]
struct Request {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<Prompt>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<StringOrList>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repeat_penalty: Option<f32>,
    n: Option<i64>,
    #[serde(default)]
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: Option<bool>,
    echo: Option<bool>,
    /// Chat: `true`/`false`; completions: the number of alternatives (0..=20).
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
    logit_bias: Option<std::collections::HashMap<String, f32>>,
    response_format: Option<Value>,
    /// llama-server's extensions: a GBNF (or `%llguidance` Lark) grammar, a bare schema.
    grammar: Option<String>,
    json_schema: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<tools::ApiTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Template variables (llama-server's and vLLM's extension), e.g. `enable_thinking`.
    #[serde(default)]
    chat_template_kwargs: Option<Value>,
    /// Shorthand for `chat_template_kwargs: {"enable_thinking": ...}`.
    #[serde(default)]
    enable_thinking: Option<bool>,
    /// "none" or "deepseek": this request's `--reasoning-format`.
    #[serde(default)]
    reasoning_format: Option<String>,
}

impl Request {
    fn params(&mut self) -> Result<GenParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::bad_request(format!(
                    "only n=1 is supported, got n={n}"
                )));
            }
        }
        if self.echo == Some(true) {
            return Err(ApiError::bad_request("echo is not supported"));
        }
        Ok(GenParams {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            seed: self.seed,
            stop: self
                .stop
                .take()
                .map(StringOrList::into_vec)
                .unwrap_or_default(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: None,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            ..Default::default()
        })
    }

    /// The settings that shape the output besides sampling: log-probabilities (chat or
    /// legacy completion form), `logit_bias`, and the grammar from `response_format`,
    /// `grammar` or `json_schema` (compiled here: an invalid one is a 400).
    async fn shape_output(
        &self,
        st: &Arc<AppState>,
        params: &mut GenParams,
        chat: bool,
    ) -> Result<(), ApiError> {
        params.logprobs = if chat {
            crate::logprobs::chat_request(self.logprobs.as_ref(), self.top_logprobs)
        } else {
            crate::logprobs::completion_request(self.logprobs.as_ref())
        }
        .map_err(ApiError::bad_request)?;
        params.logit_bias =
            structured::logit_bias(self.logit_bias.as_ref(), st.engine.model.config.n_vocab)?;
        let spec = structured::openai_spec(
            self.response_format.as_ref(),
            self.grammar.as_deref(),
            self.json_schema.as_ref(),
        )?;
        params.constraint = structured::compile(st, spec, Flavor::OpenAi).await?;
        Ok(())
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// The model as OpenAI lists it, with Anthropic's fields too (`type`, `display_name`,
/// `created_at`): both APIs list models at `GET /v1/models`, and extra fields are
/// ignored by either's clients.
fn model_object(st: &AppState) -> Value {
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.started);
    json!({"id": st.config.model_name, "object": "model", "created": st.started, "owned_by": "ferromoe",
        "type": "model", "display_name": st.config.model_name,
        "created_at": crate::ollama::rfc3339(created)})
}

/// `GET /v1/models` (with Anthropic's paging fields: one page).
pub(crate) async fn models(State(st): State<Arc<AppState>>) -> Response {
    let name = &st.config.model_name;
    json_ok(json!({"object": "list", "data": [model_object(&st)],
        "has_more": false, "first_id": name, "last_id": name}))
}

/// `GET /v1/models/{id}`.
pub(crate) async fn model(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.check_model(Some(&id), Flavor::OpenAi)?;
    Ok(json_ok(model_object(&st)))
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        // Not sent: a cancelled generation ends in an error (gen::CUT_OFF).
        FinishReason::Cancelled => "cancelled",
    }
}

fn usage(stats: &GenerationStats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
    })
}

/// llama.cpp-style `timings` (an extension clients ignore; the chat page shows it):
/// speeds measured by the server, not by the network.
fn timings(stats: &GenerationStats) -> Value {
    let processed = stats.prompt_tokens - stats.cached_tokens;
    let mut t = json!({
        "cache_n": stats.cached_tokens,
        "prompt_n": processed,
        "prompt_ms": stats.prefill_seconds * 1e3,
        "prompt_per_second": stats.prefill_tps(),
        "predicted_n": stats.generated_tokens,
        "predicted_ms": stats.decode_seconds * 1e3,
        "predicted_per_second": stats.decode_tps(),
        // Of the decode time, what the grammar of a constrained request took.
        "grammar_ms": stats.grammar_seconds * 1e3,
    });
    // Speculative decoding's drafts, as llama-server reports them (only when some were made).
    if stats.drafted_tokens > 0 {
        t["draft_n"] = stats.drafted_tokens.into();
        t["draft_n_accepted"] = stats.accepted_tokens.into();
    }
    t
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<AccessLog>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: Request = parse_json(&headers, &body, Flavor::OpenAi)?;
    st.check_model(req.model.as_deref(), Flavor::OpenAi)?;
    let messages = req
        .messages
        .take()
        .ok_or_else(|| ApiError::bad_request("'messages' is required"))?;
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "'messages' must hold at least one message",
        ));
    }
    let mut conversation = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content: parts of type '{kind}' are not supported (text only)"
                            )))
                        }
                    }
                }
                text
            }
        };
        let role = gen::check_role(&m.role, i, Flavor::OpenAi)?;
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                let arguments = match c.function.arguments {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(s)) => s,
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => {
                        return Err(ApiError::bad_request(format!(
                            "messages[{i}].tool_calls[{j}].function.arguments must be a JSON text"
                        )))
                    }
                };
                if serde_json::from_str::<Value>(&arguments).is_err() {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}].tool_calls[{j}].function.arguments is not JSON: {arguments}"
                    )));
                }
                Ok(ToolCall {
                    id: c.id.unwrap_or_else(|| format!("call_{i}_{j}")),
                    name: c.function.name,
                    arguments,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        conversation.push(ChatMessage {
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
            reasoning: m.reasoning_content,
            ..ChatMessage::new(role, content)
        });
    }
    let (setup, choice) = chat_setup(&st, &mut req)?;
    let mut params = req.params()?;
    req.shape_output(&st, &mut params, true).await?;
    let forced = tools::forced_call(&st, &setup.tools, &choice, Flavor::OpenAi)?;
    if forced.is_some() {
        if params.constraint.is_some() {
            return Err(ApiError::bad_request(
                "a tool_choice that forces a call cannot be combined with response_format, \
                 grammar or json_schema",
            ));
        }
        params.constraint = structured::compile(&st, forced, Flavor::OpenAi).await?;
    }
    let (prompt, prompt_text) =
        gen::chat_prompt(&st, &conversation, &setup, Flavor::OpenAi).await?;
    let reply = setup.reply(&st, &prompt_text);
    if reply.is_some() {
        params.keep_special = tools::keep_special(&st);
    }
    let run = gen::start(&st, prompt, &params, Output::Answer, &log, Flavor::OpenAi)?;
    let lp = LogprobStream::of(&run, st.engine.tokenizer.as_ref());
    let (id, created, model) = (
        new_id("chatcmpl"),
        crate::unix_now(),
        st.config.model_name.clone(),
    );
    if req.stream.unwrap_or(false) {
        let shape = ChatChunks {
            id,
            created,
            model,
            include_usage: req.include_usage(),
            sent_role: false,
            lp,
            reply,
        };
        return Ok(sse(run, shape));
    }
    let done = gen::collect(run, Flavor::OpenAi).await?;
    let logprobs = match (&lp, &st.engine.tokenizer) {
        (Some(_), Some(tok)) => {
            json!({"content": crate::logprobs::content(tok, &done.logprobs), "refusal": null})
        }
        _ => Value::Null,
    };
    let parsed = Parsed::new(reply, done.text);
    let mut message = json!({"role": "assistant", "content": parsed.content});
    if !parsed.reasoning.is_empty() {
        message["reasoning_content"] = json!(parsed.reasoning);
    }
    let finish = if parsed.calls.is_empty() {
        finish_reason(done.stats.finish)
    } else {
        if parsed.content.is_empty() {
            message["content"] = Value::Null;
        }
        let calls: Vec<Value> = parsed.calls.iter().map(tool_call_json).collect();
        message["tool_calls"] = json!(calls);
        "tool_calls"
    };
    Ok(json_ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": finish,
        }],
        "usage": usage(&done.stats),
        "timings": timings(&done.stats),
    })))
}

/// A chat request's tools, tool choice, template variables and reasoning format.
fn chat_setup(st: &AppState, req: &mut Request) -> Result<(ChatSetup, ToolChoice), ApiError> {
    let flavor = Flavor::OpenAi;
    let choice = tools::tool_choice(req.tool_choice.as_ref(), flavor)?;
    let specs = tools::tool_specs(req.tools.take().unwrap_or_default(), flavor)?;
    let reasoning = match req.reasoning_format.as_deref() {
        None => st.config.reasoning_format,
        Some(s) => tools::ReasoningFormat::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "reasoning_format must be \"none\" or \"deepseek\", got '{s}'"
            ))
        })?,
    };
    let mut setup = ChatSetup {
        // "none": the model is not told of the tools, and nothing is parsed as a call.
        tools: if choice == ToolChoice::None {
            Vec::new()
        } else {
            specs
        },
        kwargs: tools::template_kwargs(req.chat_template_kwargs.take(), flavor)?,
        reasoning,
    };
    if let Some(on) = req.enable_thinking {
        setup.set_kwarg("enable_thinking", json!(on));
    }
    setup.check_tools(st, flavor)?;
    Ok((setup, choice))
}

/// A call as OpenAI writes it in a message.
fn tool_call_json(c: &ToolCall) -> Value {
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<AccessLog>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: Request = parse_json(&headers, &body, Flavor::OpenAi)?;
    st.check_model(req.model.as_deref(), Flavor::OpenAi)?;
    let prompt = match req.prompt.take() {
        None => return Err(ApiError::bad_request("'prompt' is required")),
        Some(Prompt::Text(t)) => gen::tokenize(&st, t, true, Flavor::OpenAi).await?,
        Some(Prompt::Texts(mut v)) if v.len() == 1 => {
            gen::tokenize(&st, v.remove(0), true, Flavor::OpenAi).await?
        }
        Some(Prompt::Texts(v)) => {
            return Err(ApiError::bad_request(format!(
                "'prompt' must be one string (n=1), got a list of {}",
                v.len()
            )))
        }
        Some(Prompt::Ids(ids)) => {
            let n_vocab = st.engine.model.config.n_vocab;
            if ids.is_empty() {
                return Err(ApiError::bad_request("the prompt is empty"));
            }
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ApiError::bad_request(format!(
                    "token id {bad} is outside the vocabulary (size {n_vocab})"
                )));
            }
            ids
        }
    };
    let mut params = req.params()?;
    req.shape_output(&st, &mut params, false).await?;
    let run = gen::start(
        &st,
        prompt,
        &params,
        Output::Continuation,
        &log,
        Flavor::OpenAi,
    )?;
    let lp = LogprobStream::of(&run, st.engine.tokenizer.as_ref());
    let (id, created, model) = (
        new_id("cmpl"),
        crate::unix_now(),
        st.config.model_name.clone(),
    );
    if req.stream.unwrap_or(false) {
        let shape = CompletionChunks {
            id,
            created,
            model,
            include_usage: req.include_usage(),
            lp,
        };
        return Ok(sse(run, shape));
    }
    let done = gen::collect(run, Flavor::OpenAi).await?;
    let logprobs = match (&lp, &st.engine.tokenizer) {
        (Some(_), Some(tok)) => crate::logprobs::legacy(tok, &done.logprobs, &mut 0),
        _ => Value::Null,
    };
    Ok(json_ok(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": done.text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason(done.stats.finish)}],
        "usage": usage(&done.stats),
        "timings": timings(&done.stats),
    })))
}

fn sse<S: StreamShape>(run: gen::Running, shape: S) -> Response {
    let stream =
        gen::messages(run, shape).map(|m| Ok::<_, Infallible>(SseEvent::default().data(m)));
    Sse::new(stream).into_response()
}

fn error_chunk(e: &dyn std::fmt::Display) -> String {
    json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": null}})
        .to_string()
}

struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    sent_role: bool,
    lp: Option<LogprobStream>,
    /// Takes the reply apart (tools offered or reasoning separated), else None.
    reply: Option<Reply>,
}

impl ChatChunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        self.chunk_with(delta, Value::Null, finish)
    }

    fn chunk_with(&self, delta: Value, logprobs: Value, finish: Option<&str>) -> String {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    }
}

impl ChatChunks {
    /// The `logprobs` of a chunk: the tokens that arrived since the last one.
    fn lp_content(&mut self) -> Value {
        self.lp
            .as_mut()
            .and_then(LogprobStream::content)
            .map_or(Value::Null, |c| json!({"content": c, "refusal": null}))
    }

    /// Parsed pieces as deltas: `content`, `reasoning_content`, and for each call one
    /// delta with its index, id and name, then one with its arguments (as OpenAI streams
    /// them: clients join the argument fragments of an index).
    fn send_pieces(&self, pieces: Vec<Piece>, out: &mut Vec<String>) {
        for p in pieces {
            match p {
                Piece::Content(t) => out.push(self.chunk(json!({"content": t}), None)),
                Piece::Reasoning(t) => out.push(self.chunk(json!({"reasoning_content": t}), None)),
                Piece::Call { index, call } => {
                    let head = json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]});
                    out.push(self.chunk(head, None));
                    let args = json!({"tool_calls": [{"index": index,
                        "function": {"arguments": call.arguments}}]});
                    out.push(self.chunk(args, None));
                }
            }
        }
    }
}

impl StreamShape for ChatChunks {
    fn on_event(&mut self, ev: Event, _prompt_tokens: usize) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        if !self.sent_role {
            self.sent_role = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        match ev {
            Event::Started { .. } => (out, false),
            Event::Text(t) => {
                let lp = self.lp_content();
                match self.reply.as_mut() {
                    None => out.push(self.chunk_with(json!({"content": t}), lp, None)),
                    Some(r) => {
                        let pieces = r.push(&t);
                        self.send_pieces(pieces, &mut out);
                        // The tokens' log-probabilities follow the deltas they made (the
                        // parser may hold their text back: then they come alone).
                        if !lp.is_null() {
                            out.push(self.chunk_with(json!({}), lp, None));
                        }
                    }
                }
                (out, false)
            }
            Event::Done(stats) => {
                let mut finish = finish_reason(stats.finish);
                if let Some(r) = self.reply.as_mut() {
                    let pieces = r.finish();
                    self.send_pieces(pieces, &mut out);
                    if self.reply.as_ref().is_some_and(|r| r.calls() > 0) {
                        finish = "tool_calls";
                    }
                }
                // Tokens whose text never came (held back, then dropped at a stop string).
                let lp = self.lp_content();
                if !lp.is_null() {
                    out.push(self.chunk_with(json!({}), lp, None));
                }
                let mut last: Value =
                    serde_json::from_str(&self.chunk(json!({}), Some(finish))).unwrap_or_default();
                last["timings"] = timings(&stats);
                out.push(last.to_string());
                if self.include_usage {
                    out.push(
                        json!({
                            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": usage(&stats),
                        })
                        .to_string(),
                    );
                }
                out.push("[DONE]".into());
                (out, true)
            }
            Event::Error(e) => {
                out.push(error_chunk(&e));
                out.push("[DONE]".into());
                (out, true)
            }
        }
    }

    fn on_cut_off(&mut self, message: &str) -> Vec<String> {
        vec![error_chunk(&message), "[DONE]".into()]
    }
}

struct CompletionChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    lp: Option<LogprobStream>,
}

impl CompletionChunks {
    fn chunk(&self, text: &str, finish: Option<&str>) -> String {
        self.chunk_with(text, Value::Null, finish)
    }

    fn chunk_with(&self, text: &str, logprobs: Value, finish: Option<&str>) -> String {
        let mut c = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    }
}

impl CompletionChunks {
    /// The `logprobs` of a chunk: the tokens that arrived since the last one.
    fn lp_legacy(&mut self) -> Value {
        self.lp
            .as_mut()
            .and_then(LogprobStream::legacy)
            .unwrap_or(Value::Null)
    }
}

impl StreamShape for CompletionChunks {
    fn on_event(&mut self, ev: Event, _prompt_tokens: usize) -> (Vec<String>, bool) {
        match ev {
            Event::Started { .. } => (vec![], false),
            Event::Text(t) => {
                let lp = self.lp_legacy();
                (vec![self.chunk_with(&t, lp, None)], false)
            }
            Event::Done(stats) => {
                let mut out = Vec::new();
                let lp = self.lp_legacy();
                if !lp.is_null() {
                    out.push(self.chunk_with("", lp, None));
                }
                let mut last: Value =
                    serde_json::from_str(&self.chunk("", Some(finish_reason(stats.finish))))
                        .unwrap_or_default();
                last["timings"] = timings(&stats);
                out.push(last.to_string());
                if self.include_usage {
                    out.push(
                        json!({
                            "id": self.id, "object": "text_completion", "created": self.created,
                            "model": self.model, "choices": [], "usage": usage(&stats),
                        })
                        .to_string(),
                    );
                }
                out.push("[DONE]".into());
                (out, true)
            }
            Event::Error(e) => (vec![error_chunk(&e), "[DONE]".into()], true),
        }
    }

    fn on_cut_off(&mut self, message: &str) -> Vec<String> {
        vec![error_chunk(&message), "[DONE]".into()]
    }
}
