//! The Ollama API: `/api/chat`, `/api/generate` (NDJSON streaming by default,
//! `"stream": false` for one object), `/api/tags`, `/api/show`, `/api/version`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
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
use crate::openai::StringOrList;
use crate::tools::{self, ChatSetup, Parsed, Piece, Reply};
use crate::{json_ok, parse_json, structured, AccessLog, ApiError, AppState, Flavor};

const FLAVOR: Flavor = Flavor::Ollama;

/// Ollama's `options` (the ones that matter for generation; others are ignored).
#[derive(Deserialize, Debug, Default)]
struct Options {
    num_predict: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<StringOrList>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    /// llama.cpp's extension (not Ollama's): keep going past end-of-generation tokens.
    #[serde(default)]
    ignore_eos: bool,
}

impl Options {
    fn params(self) -> GenParams {
        GenParams {
            // Ollama: -1 = until the end of the context, -2 = fill the context.
            max_tokens: self.num_predict.filter(|&n| n != -1 && n != -2),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            seed: self.seed,
            stop: self.stop.map(StringOrList::into_vec).unwrap_or_default(),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            ignore_eos: self.ignore_eos,
            ..Default::default()
        }
    }
}

/// `format` (`"json"` or a JSON schema) and `logprobs`/`top_logprobs`, which both
/// endpoints take at the top level.
#[derive(Deserialize, Debug, Default)]
struct OutputFields {
    format: Option<Value>,
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
}

impl OutputFields {
    /// `options` as generation settings, with the grammar compiled (an invalid schema
    /// is a 400) and the log-probabilities asked for.
    async fn params(&self, st: &Arc<AppState>, options: Options) -> Result<GenParams, ApiError> {
        let mut params = options.params();
        params.logprobs = crate::logprobs::chat_request(self.logprobs.as_ref(), self.top_logprobs)
            .map_err(|m| ApiError::bad_request(m).with_flavor(FLAVOR))?;
        let spec = structured::ollama_spec(self.format.as_ref())?;
        params.constraint = structured::compile(st, spec, FLAVOR).await?;
        Ok(params)
    }
}

#[derive(Deserialize, Debug)]
struct Message {
    role: String,
    #[serde(default)]
    content: String,
    /// An assistant turn's reasoning.
    #[serde(default)]
    thinking: Option<String>,
    /// An assistant turn's calls, arguments as an object.
    #[serde(default)]
    tool_calls: Option<Vec<MessageToolCall>>,
    /// A tool message: the function that answered.
    #[serde(default)]
    tool_name: Option<String>,
}

#[derive(Deserialize, Debug)]
struct MessageToolCall {
    function: MessageFunction,
}

#[derive(Deserialize, Debug)]
struct MessageFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize, Debug)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    #[serde(flatten)]
    output: OutputFields,
    #[serde(default)]
    tools: Option<Vec<tools::ApiTool>>,
    /// Thinking on or off (the template's `enable_thinking`); gpt-oss's levels
    /// ("low", "medium", "high") set its `reasoning_effort`.
    #[serde(default)]
    think: Option<Value>,
}

#[derive(Deserialize, Debug)]
struct GenerateRequest {
    model: Option<String>,
    prompt: Option<String>,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    #[serde(flatten)]
    output: OutputFields,
    /// As in `/api/chat` (not with `raw`, which has no template).
    #[serde(default)]
    think: Option<Value>,
}

#[derive(Deserialize, Debug)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

/// RFC 3339 UTC time, as Ollama's `created_at`.
fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `t` as an RFC 3339 UTC time with nanoseconds (Ollama's and Anthropic's dates).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let now = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

fn done_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

/// The counters of Ollama's last message.
fn final_fields(v: &mut Value, stats: &GenerationStats, start: Instant) {
    let ns = |s: f64| (s * 1e9) as u64;
    v["done"] = json!(true);
    v["done_reason"] = json!(done_reason(stats.finish));
    v["total_duration"] = json!(start.elapsed().as_nanos() as u64);
    v["load_duration"] = json!(0);
    v["prompt_eval_count"] = json!(stats.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(stats.prefill_seconds));
    v["eval_count"] = json!(stats.generated_tokens);
    v["eval_duration"] = json!(ns(stats.decode_seconds));
}

/// `POST /api/chat`.
pub(crate) async fn chat(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<AccessLog>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_json(&headers, &body, FLAVOR)?;
    st.check_model(req.model.as_deref(), FLAVOR)?;
    let messages = req
        .messages
        .ok_or_else(|| ApiError::bad_request("'messages' is required").with_flavor(FLAVOR))?;
    let model = st.config.model_name.clone();
    if messages.is_empty() {
        // Ollama answers an empty conversation by (re)loading the model.
        return Ok(json_ok(json!({"model": model, "created_at": rfc3339_now(),
            "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true})));
    }
    let mut conversation = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let role = gen::check_role(&m.role, i, FLAVOR)?;
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                let arguments = match c.function.arguments {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => {
                        return Err(ApiError::bad_request(format!(
                            "messages[{i}].tool_calls[{j}].function.arguments must be an object"
                        ))
                        .with_flavor(FLAVOR))
                    }
                };
                Ok(ToolCall {
                    id: format!("call_{i}_{j}"),
                    name: c.function.name,
                    arguments,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        conversation.push(ChatMessage {
            tool_calls,
            reasoning: m.thinking,
            name: m.tool_name,
            ..ChatMessage::new(role, m.content)
        });
    }
    link_tool_results(&mut conversation);
    let mut setup = ChatSetup {
        tools: tools::tool_specs(req.tools.unwrap_or_default(), FLAVOR)?,
        kwargs: Vec::new(),
        reasoning: st.config.reasoning_format,
    };
    apply_think(&mut setup, req.think)?;
    setup.check_tools(&st, FLAVOR)?;
    let mut params = req.output.params(&st, req.options).await?;
    let (prompt, prompt_text) = gen::chat_prompt(&st, &conversation, &setup, FLAVOR).await?;
    let reply = setup.reply(&st, &prompt_text);
    if reply.is_some() {
        params.keep_special = tools::keep_special(&st);
    }
    let run = gen::start(&st, prompt, &params, Output::Answer, &log, FLAVOR)?;
    let shape = Lines {
        model,
        chat: true,
        start: log.start,
        lp: LogprobStream::of(&run, st.engine.tokenizer.as_ref()),
        reply,
    };
    if req.stream.unwrap_or(true) {
        return Ok(ndjson(run, shape));
    }
    let done = gen::collect(run, FLAVOR).await?;
    let parsed = Parsed::new(shape.reply, done.text);
    let mut v = json!({"model": shape.model, "created_at": rfc3339_now(),
        "message": {"role": "assistant", "content": parsed.content}, "done": false});
    if !parsed.reasoning.is_empty() {
        v["message"]["thinking"] = json!(parsed.reasoning);
    }
    if !parsed.calls.is_empty() {
        let calls: Vec<Value> = parsed
            .calls
            .iter()
            .enumerate()
            .map(|(i, c)| tool_call_json(i, c))
            .collect();
        v["message"]["tool_calls"] = json!(calls);
    }
    final_fields(&mut v, &done.stats, log.start);
    if let (Some(_), Some(tok)) = (&shape.lp, &st.engine.tokenizer) {
        v["logprobs"] = crate::logprobs::content(tok, &done.logprobs);
    }
    Ok(json_ok(v))
}

/// Ollama's tool messages name no call: they answer the last assistant turn's calls in
/// order, and get those calls' ids (and names, unless `tool_name` gave one), which
/// templates such as Kimi-K2's show.
fn link_tool_results(conversation: &mut [ChatMessage]) {
    let mut unanswered = std::collections::VecDeque::new();
    for m in conversation {
        if m.role == "assistant" {
            unanswered = m
                .tool_calls
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect();
        } else if m.role == "tool" {
            if let Some((id, name)) = unanswered.pop_front() {
                m.tool_call_id.get_or_insert(id);
                m.name.get_or_insert(name);
            }
        }
    }
}

/// Ollama's `think`: thinking on or off (the template's `enable_thinking`); gpt-oss's
/// levels ("low", "medium", "high") set its `reasoning_effort`.
fn apply_think(setup: &mut ChatSetup, think: Option<Value>) -> Result<(), ApiError> {
    match think {
        None | Some(Value::Null) => {}
        Some(Value::Bool(on)) => setup.set_kwarg("enable_thinking", json!(on)),
        Some(Value::String(level)) if ["low", "medium", "high"].contains(&level.as_str()) => {
            setup.set_kwarg("enable_thinking", json!(true));
            setup.set_kwarg("reasoning_effort", json!(level));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "think must be true, false, \"low\", \"medium\" or \"high\", got {other}"
            ))
            .with_flavor(FLAVOR))
        }
    }
    Ok(())
}

/// A call as Ollama writes it: arguments as an object.
fn tool_call_json(index: usize, c: &ToolCall) -> Value {
    json!({"id": c.id, "function": {"index": index, "name": c.name,
        "arguments": tools::arguments_object(&c.arguments)}})
}

/// `POST /api/generate`.
pub(crate) async fn generate(
    State(st): State<Arc<AppState>>,
    Extension(log): Extension<AccessLog>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: GenerateRequest = parse_json(&headers, &body, FLAVOR)?;
    st.check_model(req.model.as_deref(), FLAVOR)?;
    let model = st.config.model_name.clone();
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return Ok(json_ok(
            json!({"model": model, "created_at": rfc3339_now(), "response": "",
            "done_reason": "load", "done": true}),
        ));
    }
    // Like Ollama: the prompt is one user turn of the chat template unless `raw`.
    let output = if req.raw {
        Output::Continuation
    } else {
        Output::Answer
    };
    let mut params = req.output.params(&st, req.options).await?;
    let (ids, reply) = if req.raw {
        (gen::tokenize(&st, prompt, true, FLAVOR).await?, None)
    } else {
        let mut conversation: Vec<ChatMessage> =
            req.system.into_iter().map(ChatMessage::system).collect();
        conversation.push(ChatMessage::user(prompt));
        let mut setup = ChatSetup {
            reasoning: st.config.reasoning_format,
            ..ChatSetup::default()
        };
        apply_think(&mut setup, req.think)?;
        let (ids, text) = gen::chat_prompt(&st, &conversation, &setup, FLAVOR).await?;
        let reply = setup.reply(&st, &text);
        if reply.is_some() {
            params.keep_special = tools::keep_special(&st);
        }
        (ids, reply)
    };
    let run = gen::start(&st, ids, &params, output, &log, FLAVOR)?;
    let shape = Lines {
        model,
        chat: false,
        start: log.start,
        lp: LogprobStream::of(&run, st.engine.tokenizer.as_ref()),
        reply,
    };
    if req.stream.unwrap_or(true) {
        return Ok(ndjson(run, shape));
    }
    let done = gen::collect(run, FLAVOR).await?;
    let parsed = Parsed::new(shape.reply, done.text);
    let mut v = json!({"model": shape.model, "created_at": rfc3339_now(),
        "response": parsed.content, "done": false});
    if !parsed.reasoning.is_empty() {
        v["thinking"] = json!(parsed.reasoning);
    }
    final_fields(&mut v, &done.stats, log.start);
    if let (Some(_), Some(tok)) = (&shape.lp, &st.engine.tokenizer) {
        v["logprobs"] = crate::logprobs::content(tok, &done.logprobs);
    }
    Ok(json_ok(v))
}

fn ndjson(run: gen::Running, shape: Lines) -> Response {
    let stream = gen::messages(run, shape).map(|m| Ok::<_, Infallible>(m + "\n"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One NDJSON object per piece of text, then the counters.
struct Lines {
    model: String,
    chat: bool,
    start: Instant,
    lp: Option<LogprobStream>,
    /// Takes a chat reply apart (tools offered or reasoning separated), else None.
    reply: Option<Reply>,
}

impl Lines {
    /// A line with the log-probabilities of the tokens that arrived since the last one.
    fn line_with_logprobs(&mut self, text: &str) -> Value {
        let mut v = self.line(text);
        if let Some(c) = self.lp.as_mut().and_then(LogprobStream::content) {
            v["logprobs"] = c;
        }
        v
    }

    fn line(&self, text: &str) -> Value {
        if self.chat {
            json!({"model": self.model, "created_at": rfc3339_now(),
                "message": {"role": "assistant", "content": text}, "done": false})
        } else {
            json!({"model": self.model, "created_at": rfc3339_now(), "response": text, "done": false})
        }
    }
}

impl Lines {
    /// Parsed pieces as chat lines: `content`, `thinking`, or a line with a call.
    fn piece_lines(&self, pieces: Vec<Piece>) -> Vec<String> {
        pieces
            .into_iter()
            .map(|p| {
                let mut v = self.line("");
                let (text, thinking, calls) = if self.chat {
                    (
                        "/message/content",
                        "/message/thinking",
                        "/message/tool_calls",
                    )
                } else {
                    ("/response", "/thinking", "/tool_calls")
                };
                let (at, value) = match p {
                    Piece::Content(t) => (text, json!(t)),
                    Piece::Reasoning(t) => (thinking, json!(t)),
                    Piece::Call { index, call } => (calls, json!([tool_call_json(index, &call)])),
                };
                set(&mut v, at, value);
                v.to_string()
            })
            .collect()
    }
}

/// Sets `v` at a `/a/b` path of objects (creating the last key).
fn set(v: &mut Value, path: &str, value: Value) {
    let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.insert(key.to_string(), value);
    }
}

impl StreamShape for Lines {
    fn on_event(&mut self, ev: Event, _prompt_tokens: usize) -> (Vec<String>, bool) {
        match ev {
            Event::Started { .. } => (vec![], false),
            Event::Text(t) => match self.reply.as_mut() {
                None => (vec![self.line_with_logprobs(&t).to_string()], false),
                Some(r) => {
                    let pieces = r.push(&t);
                    let mut lines = self.piece_lines(pieces);
                    // The tokens' log-probabilities follow the lines they made (the parser
                    // may hold their text back: then they come alone).
                    let v = self.line_with_logprobs("");
                    if v.get("logprobs").is_some() {
                        lines.push(v.to_string());
                    }
                    (lines, false)
                }
            },
            Event::Done(stats) => {
                let mut out = match self.reply.as_mut() {
                    Some(r) => {
                        let pieces = r.finish();
                        self.piece_lines(pieces)
                    }
                    None => Vec::new(),
                };
                let mut v = self.line_with_logprobs("");
                final_fields(&mut v, &stats, self.start);
                out.push(v.to_string());
                (out, true)
            }
            Event::Error(e) => (vec![json!({"error": e.to_string()}).to_string()], true),
        }
    }

    fn on_cut_off(&mut self, message: &str) -> Vec<String> {
        vec![json!({"error": message}).to_string()]
    }
}

/// The facts `/api/tags` and `/api/show` report.
fn details(st: &AppState) -> Value {
    let m = &st.engine.model;
    let arch = m.config.arch.name();
    let params: u64 = m.file.tensors().iter().map(|t| t.n_elements()).sum();
    // The quantization: the file's own `general.file_type` (Q4_K_M, not the Q4_K or
    // Q5_0 that most of its weights happen to be), else the type holding the most weights.
    let named = m
        .file
        .metadata()
        .opt_u32("general.file_type")
        .ok()
        .flatten()
        .and_then(gguf::file_type_name);
    let mut by_type = std::collections::BTreeMap::new();
    for t in m.file.tensors() {
        *by_type.entry(t.ty.name()).or_insert(0u64) += t.n_elements();
    }
    let quant = match named {
        Some(name) => name.to_string(),
        None => by_type
            .iter()
            .max_by_key(|(_, &n)| n)
            .map(|(t, _)| t.to_string())
            .unwrap_or_default(),
    };
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": engine::human_count(params).replace(' ', ""),
        "quantization_level": quant,
    })
}

/// The model file's SHA-256 (empty while it is being computed: see `digest.rs`).
fn digest(st: &AppState) -> String {
    st.digest.get().unwrap_or_default()
}

/// `GET /api/tags`.
pub(crate) async fn tags(State(st): State<Arc<AppState>>) -> Response {
    let name = st.ollama_name();
    json_ok(json!({"models": [{
        "name": name,
        "model": name,
        "modified_at": rfc3339_now(),
        "size": st.config.file_size,
        "digest": digest(&st),
        "details": details(&st),
    }]}))
}

/// `GET /api/ps`: the loaded model (always this one, always loaded).
pub(crate) async fn ps(State(st): State<Arc<AppState>>) -> Response {
    let name = st.ollama_name();
    json_ok(json!({"models": [{
        "name": name,
        "model": name,
        "size": st.config.file_size,
        "digest": digest(&st),
        "details": details(&st),
        "expires_at": "9999-12-31T23:59:59Z",
        "size_vram": 0,
    }]}))
}

/// `POST /api/show`.
pub(crate) async fn show(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ShowRequest = parse_json(&headers, &body, FLAVOR)?;
    let asked = req.model.or(req.name).unwrap_or_default();
    if asked.is_empty() {
        return Err(ApiError::bad_request("'model' is required").with_flavor(FLAVOR));
    }
    st.check_model(Some(&asked), FLAVOR)?;
    let m = &st.engine.model;
    let arch = m.config.arch.name();
    let params: u64 = m.file.tensors().iter().map(|t| t.n_elements()).sum();
    let template = st
        .engine
        .template
        .as_ref()
        .map(|t| t.source().to_string())
        .unwrap_or_default();
    Ok(json_ok(json!({
        "modelfile": format!("# served by ferromoe\nFROM {}\n", st.config.model_name),
        "parameters": format!("num_ctx {}", st.config.n_ctx),
        "template": template,
        "details": details(&st),
        "model_info": {
            "general.architecture": arch,
            "general.parameter_count": params,
            format!("{arch}.context_length"): m.config.n_ctx_train,
            format!("{arch}.embedding_length"): m.config.dim,
            format!("{arch}.block_count"): m.config.n_layer,
        },
        "capabilities": capabilities(&st),
        "modified_at": rfc3339_now(),
    })))
}

/// What the model can do, as Ollama lists it: tools and thinking where its chat
/// template has a format this server parses.
fn capabilities(st: &AppState) -> Vec<&'static str> {
    let format = tools::reply_format(st);
    let mut caps = vec!["completion"];
    if format.tools.is_some() {
        caps.push("tools");
    }
    if format.has_reasoning() {
        caps.push("thinking");
    }
    caps
}

/// `GET /api/version`.
pub(crate) async fn version() -> Response {
    json_ok(json!({"version": env!("CARGO_PKG_VERSION")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_answer_the_last_calls_in_order() {
        let call = |id: &str, name: &str| ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: "{}".into(),
        };
        let mut named = ChatMessage::new("tool", "r2");
        named.name = Some("own".into());
        let mut conv = vec![
            ChatMessage::user("q"),
            ChatMessage {
                tool_calls: vec![call("c1", "f"), call("c2", "g")],
                ..ChatMessage::new("assistant", "")
            },
            ChatMessage::new("tool", "r1"),
            named,
            ChatMessage::new("tool", "extra"),
        ];
        link_tool_results(&mut conv);
        let got: Vec<(Option<&str>, Option<&str>)> = conv[2..]
            .iter()
            .map(|m| (m.tool_call_id.as_deref(), m.name.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("c1"), Some("f")),
                (Some("c2"), Some("own")),
                (None, None)
            ]
        );
    }
}
