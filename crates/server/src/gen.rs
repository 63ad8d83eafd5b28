//! What both APIs share: sampling settings → [`GenerateRequest`], prompt rendering and
//! tokenizing, handing the job to the scheduler, and turning its events into a stream
//! (SSE or NDJSON) or one collected answer.

use std::collections::VecDeque;
use std::sync::Arc;

use engine::scheduler::{Event, Job, Ticket};
use engine::{
    ChatMessage, Constraint, FinishReason, GenerateRequest, GenerationStats, SamplingParams,
    TokenLogprobs,
};
use futures_util::Stream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use text::RenderOptions;

use crate::logprobs::LogprobBuffer;
use crate::tools::ChatSetup;
use crate::{AccessLog, ApiError, AppState, Flavor};

/// Sampling and length settings as the APIs name them (already range-checked for type
/// by serde; values are checked here).
#[derive(Clone, Debug, Default)]
pub(crate) struct GenParams {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    /// llama.cpp's extension: keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// The compiled grammar the output must match (see `structured.rs`).
    pub constraint: Option<Constraint>,
    /// Token id → bias added to its logit (already range-checked).
    pub logit_bias: Vec<(u32, f32)>,
    /// Report log-probabilities with this many alternatives per token.
    pub logprobs: Option<usize>,
    /// Special tokens the reply parser must see as text (see `tools::keep_special`).
    pub keep_special: Vec<u32>,
}

impl GenParams {
    /// The engine request for a prompt of `prompt_len` tokens: at most what the
    /// context has room for.
    pub fn request(
        &self,
        prompt_len: usize,
        n_ctx: usize,
        flavor: Flavor,
    ) -> Result<GenerateRequest, ApiError> {
        let bad = |m: String| ApiError::bad_request(m).with_flavor(flavor);
        let room = n_ctx.saturating_sub(prompt_len);
        let max_new_tokens = match self.max_tokens {
            Some(n) if n < 1 => return Err(bad(format!("max_tokens must be at least 1, got {n}"))),
            Some(n) => (n as u64).min(room as u64) as usize,
            None => room,
        };
        let d = SamplingParams::default();
        let top_k = match self.top_k {
            Some(k) if k < 0 => return Err(bad(format!("top_k must be ≥ 0, got {k}"))),
            Some(k) => k as usize,
            None => d.top_k,
        };
        let repeat_last_n = match self.repeat_last_n {
            Some(n) if n < 0 => return Err(bad(format!("repeat_last_n must be ≥ 0, got {n}"))),
            Some(n) => n as usize,
            None => d.repeat_last_n,
        };
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = v {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(bad(format!("{name} must be in [-2, 2], got {v}")));
                }
            }
        }
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n,
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.map(|s| s as u64).unwrap_or_else(rand::random),
        };
        sampling.validate().map_err(bad)?;
        Ok(GenerateRequest {
            max_new_tokens,
            sampling,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            constraint: self.constraint.clone(),
            logit_bias: self.logit_bias.clone(),
            logprobs: self.logprobs,
            keep_special: self.keep_special.clone(),
            speculation: None,
        })
    }
}

/// The roles a message may have. OpenAI's `developer` is its newer name for `system`
/// (chat templates know only `system`). Anything else — a misspelt or empty role — would
/// be rendered into the prompt as the template sees fit, so it is refused.
pub(crate) fn check_role(
    role: &str,
    index: usize,
    flavor: Flavor,
) -> Result<&'static str, ApiError> {
    match role {
        "system" | "developer" => Ok("system"),
        "user" => Ok("user"),
        "assistant" => Ok("assistant"),
        "tool" => Ok("tool"),
        other => Err(ApiError::bad_request(format!(
            "messages[{index}].role: '{other}' is not a role (system, developer, user, assistant, tool)"
        ))
        .with_flavor(flavor)),
    }
}

/// Renders a conversation with the model's chat template, with the request's tools and
/// template variables.
pub(crate) fn render_chat(
    st: &AppState,
    messages: &[ChatMessage],
    setup: &ChatSetup,
    flavor: Flavor,
) -> Result<String, ApiError> {
    let template = st.engine.template.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model has no chat template").with_flavor(flavor)
    })?;
    let options = RenderOptions {
        add_generation_prompt: true,
        tools: &setup.tools,
        kwargs: &setup.kwargs,
    };
    template
        .render_with(messages, &options)
        .map_err(|e| ApiError::bad_request(format!("chat template: {e}")).with_flavor(flavor))
}

/// A conversation's prompt: its ids, and the rendered text (which tells whether the
/// template opened the model's reasoning). Message contents are text: special-token
/// text in them (a user's `<|im_end|>`) is encoded as plain tokens so it cannot forge a
/// turn, unless the server runs with `--special-in-content`.
pub(crate) async fn chat_prompt(
    st: &Arc<AppState>,
    messages: &[ChatMessage],
    setup: &ChatSetup,
    flavor: Flavor,
) -> Result<(Vec<u32>, String), ApiError> {
    crate::tools::check_special_text(st, &setup.tools, messages, flavor)?;
    let text = render_chat(st, messages, setup, flavor)?;
    let forging = !st.config.special_in_content
        && st
            .engine
            .tokenizer
            .as_ref()
            .is_some_and(|t| messages.iter().any(|m| t.contains_special_text(&m.content)));
    if !forging {
        return Ok((tokenize(st, text.clone(), false, flavor).await?, text));
    }
    let spans = content_spans(st, messages, setup, &text, flavor)?;
    let engine = st.engine.clone();
    let rendered = text.clone();
    let ids = tokio::task::spawn_blocking(move || match engine.tokenizer.as_ref() {
        Some(tok) => tok
            .encode_with_text_spans(&rendered, false, &spans)
            .map_err(|e| e.to_string()),
        None => Err("this model file has no tokenizer".to_string()),
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")).with_flavor(flavor))?
    .map_err(|e| ApiError::bad_request(e).with_flavor(flavor))?;
    Ok((ids, text))
}

/// Where each message's content sits in the rendered prompt `text`: the conversation is
/// rendered again with a private-use marker in place of each content, and the markers
/// must come out once each, in order, giving back `text` when replaced. A template that
/// does not show contents verbatim cannot be checked, and the request is refused.
fn content_spans(
    st: &AppState,
    messages: &[ChatMessage],
    setup: &ChatSetup,
    text: &str,
    flavor: Flavor,
) -> Result<Vec<std::ops::Range<usize>>, ApiError> {
    let marker = |i: usize| format!("\u{E000}{i}\u{E001}");
    let marked: Vec<ChatMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = if m.content.is_empty() {
                String::new()
            } else {
                marker(i)
            };
            ChatMessage {
                content,
                ..m.clone()
            }
        })
        .collect();
    let rendered = render_chat(st, &marked, setup, flavor)?;
    let mut rebuilt = String::with_capacity(text.len());
    let mut spans = Vec::new();
    let mut rest = rendered.as_str();
    for (i, m) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.content.is_empty())
    {
        let mark = marker(i);
        let Some(at) = rest.find(&mark) else { break };
        rebuilt.push_str(&rest[..at]);
        spans.push(rebuilt.len()..rebuilt.len() + m.content.len());
        rebuilt.push_str(&m.content);
        rest = &rest[at + mark.len()..];
    }
    rebuilt.push_str(rest);
    if rebuilt != text || rest.contains('\u{E000}') {
        return Err(ApiError::bad_request(
            "a message's content holds special-token text (such as '<|im_end|>') and this model's \
             chat template does not show contents verbatim, so it cannot be kept as text; remove it, \
             or start the server with --special-in-content to have it read as control tokens",
        )
        .with_flavor(flavor));
    }
    Ok(spans)
}

/// Tokenizes on a blocking thread (a long prompt takes a while).
pub(crate) async fn tokenize(
    st: &Arc<AppState>,
    text: String,
    add_special: bool,
    flavor: Flavor,
) -> Result<Vec<u32>, ApiError> {
    let engine = st.engine.clone();
    let ids = tokio::task::spawn_blocking(move || match engine.tokenizer.as_ref() {
        Some(tok) => tok.encode(&text, add_special).map_err(|e| e.to_string()),
        None => Err("this model file has no tokenizer".to_string()),
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task: {e}")).with_flavor(flavor))?
    .map_err(|e| ApiError::bad_request(e).with_flavor(flavor))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty").with_flavor(flavor));
    }
    Ok(ids)
}

/// Why a generation that a client still waits for was cancelled: only the shutdown
/// cancels such a one (a client that goes away cancels its own, unheard).
pub(crate) const CUT_OFF: &str =
    "cut off: the server is shutting down and the grace time for running requests is over";

/// A job on the scheduler: its events and the ticket that cancels it when dropped.
pub(crate) struct Running {
    pub rx: UnboundedReceiver<Event>,
    pub ticket: Ticket,
    pub prompt_tokens: usize,
    /// The tokens' log-probabilities as they come (when the request asked for them).
    pub logprobs: Option<LogprobBuffer>,
}

/// Checks the prompt against the context and queues the job (503 when full).
/// What the output is: a new text (chat answer) or the continuation of the prompt
/// (completion; SentencePiece's leading space of the first token is kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Answer,
    Continuation,
}

pub(crate) fn start(
    st: &AppState,
    prompt: Vec<u32>,
    params: &GenParams,
    output: Output,
    log: &AccessLog,
    flavor: Flavor,
) -> Result<Running, ApiError> {
    let n_ctx = st.config.n_ctx;
    if prompt.len() + 1 > n_ctx {
        return Err(ApiError::bad_request_code(
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {n_ctx} tokens, but the prompt has {} tokens \
                 (and at least one token must be generated)",
                prompt.len()
            ),
        )
        .with_flavor(flavor));
    }
    let request = params.request(prompt.len(), n_ctx, flavor)?;
    let prompt_tokens = prompt.len();
    let (tx, rx) = unbounded_channel();
    let job_log = log.clone();
    let metrics = st.metrics.clone();
    let sink = move |ev: Event<&str>| {
        match &ev {
            Event::Started {
                prompt_tokens,
                cached_tokens,
            } if *cached_tokens > 0 => {
                metrics.count_start(*cached_tokens);
                tracing::info!(
                    "prefix cache: reused {cached_tokens} of {prompt_tokens} prompt tokens ({} {})",
                    job_log.method,
                    job_log.path
                )
            }
            Event::Done(stats) => {
                metrics.count_done(stats);
                job_log.generation(200, stats);
                if let Some(e) = &stats.grammar_error {
                    tracing::warn!(
                        "{} {}: the grammar ended the output early: {e}",
                        job_log.method,
                        job_log.path
                    );
                }
                // Cancelled with someone still listening: not a client that went away
                // but the shutdown's grace time running out.
                if stats.finish == FinishReason::Cancelled && !tx.is_closed() {
                    tracing::warn!(
                        "{} {}: {CUT_OFF} after {} tokens; the client gets an error",
                        job_log.method,
                        job_log.path,
                        stats.generated_tokens
                    );
                }
            }
            Event::Error(e) if e.is_input() => tracing::warn!(
                "{} {}: generation refused: {e}",
                job_log.method,
                job_log.path
            ),
            Event::Error(e) => tracing::error!(
                "{} {}: generation failed: {}",
                job_log.method,
                job_log.path,
                e.chain()
            ),
            _ => {}
        }
        tx.send(ev.into_owned()).is_ok()
    };
    let mut job = Job::new(prompt, request, sink).continuing(output == Output::Continuation);
    let logprobs = params.logprobs.map(|_| LogprobBuffer::default());
    if let Some(buf) = &logprobs {
        let buf = buf.clone();
        job = job.with_token_sink(move |lp| {
            buf.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lp.clone())
        });
    }
    let ticket = st
        .scheduler
        .submit(job)
        .map_err(|e| ApiError::from(e).with_flavor(flavor))?;
    log.defer();
    Ok(Running {
        rx,
        ticket,
        prompt_tokens,
        logprobs,
    })
}

/// A finished generation.
pub(crate) struct Collected {
    pub text: String,
    pub stats: GenerationStats,
    /// Each token's log-probabilities (empty unless asked for).
    pub logprobs: Vec<TokenLogprobs>,
}

/// Waits for the whole answer (dropping the future — a client gone — cancels the job).
pub(crate) async fn collect(mut run: Running, flavor: Flavor) -> Result<Collected, ApiError> {
    let mut text = String::new();
    while let Some(ev) = run.rx.recv().await {
        match ev {
            Event::Started { .. } => {}
            Event::Text(t) => text.push_str(&t),
            Event::Done(stats) if stats.finish == FinishReason::Cancelled => {
                return Err(ApiError::unavailable(CUT_OFF).with_flavor(flavor))
            }
            Event::Done(stats) => {
                let logprobs = crate::logprobs::take(run.logprobs.as_ref());
                return Ok(Collected {
                    text,
                    stats,
                    logprobs,
                });
            }
            Event::Error(e) => return Err(ApiError::from(e).with_flavor(flavor)),
        }
    }
    Err(ApiError::internal("the scheduler stopped before the request ended").with_flavor(flavor))
}

/// What a streaming response does with each event: the messages to send (JSON texts),
/// and whether the stream ends after them.
pub(crate) trait StreamShape: Send + 'static {
    fn on_event(&mut self, ev: Event, prompt_tokens: usize) -> (Vec<String>, bool);
    /// The last messages of a stream cut off at shutdown: an error, never a normal end.
    fn on_cut_off(&mut self, message: &str) -> Vec<String>;
}

/// The job's events as a stream of messages; dropping the stream cancels the job.
pub(crate) fn messages<S: StreamShape>(
    run: Running,
    shape: S,
) -> impl Stream<Item = String> + Send {
    struct St<S> {
        run: Running,
        shape: S,
        out: VecDeque<String>,
        ended: bool,
    }
    let st = St {
        run,
        shape,
        out: VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(m) = st.out.pop_front() {
                return Some((m, st));
            }
            if st.ended {
                return None;
            }
            match st.run.rx.recv().await {
                Some(Event::Done(stats)) if stats.finish == FinishReason::Cancelled => {
                    st.out.extend(st.shape.on_cut_off(CUT_OFF));
                    st.ended = true;
                }
                Some(ev) => {
                    let (msgs, end) = st.shape.on_event(ev, st.run.prompt_tokens);
                    st.out.extend(msgs);
                    st.ended = end;
                }
                None => {
                    st.ended = true;
                    let _ = &st.run.ticket;
                }
            }
        }
    })
}
