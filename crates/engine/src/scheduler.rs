//! Continuous batching: one thread owns every sequence of a server, admits requests
//! from a bounded queue (up to `max_seqs` at once) and runs all active sequences'
//! next tokens — prompt chunks and decode steps mixed — in ONE forward pass per
//! iteration. Each request keeps its own [`Sequence`] (KV cache) and [`Generation`]
//! (sampler, streaming decoder, stop matcher: the same state machine as
//! [`Engine::generate`]), so its output is the same alone or under load (greedy). A
//! steady-state step allocates nothing: the logits are read where the forward pass left
//! them and every buffer is reused.
//!
//! Finished sequences are kept (up to `prefix_cache` of them): a new request whose
//! prompt starts with one's tokens (the next turn of a chat) reuses that KV and only
//! processes the new tokens. A cancelled sequence (client gone) is dropped at the next
//! iteration, which frees its cache.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(engine: Arc<engine::Engine>, prompt: Vec<u32>, req: engine::GenerateRequest) {
//! use engine::scheduler::{Event, Job, Scheduler, SchedulerConfig};
//! let sched = Scheduler::start(engine, SchedulerConfig::new(4, 2048));
//! let (tx, rx) = std::sync::mpsc::channel();
//! let ticket = sched
//!     .submit(Job::new(prompt, req, move |ev: Event<&str>| tx.send(ev.into_owned()).is_ok()))
//!     .unwrap();
//! for ev in rx {
//!     if let Event::Text(t) = ev { print!("{t}") }
//! }
//! drop(ticket);
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use model::{BatchLimits, BatchSeq, Logits, RunState};

use crate::mtp::{self, DraftJob, MtpDrafter, MtpPass};
use crate::recycle;
use crate::sequence::check_prompt;
use crate::{
    Engine, EngineError, FinishReason, GenerateRequest, Generation, GenerationStats, Sequence,
    SpecType, Speculation, Step, TokenLogprobs, PREFILL_CHUNK,
};

/// Limits of a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences generating at once (batched into one forward pass).
    pub max_seqs: usize,
    /// Requests waiting for a free slot beyond `max_seqs`; more are refused
    /// ([`SubmitError::Full`], HTTP 503).
    pub queue: usize,
    /// Context size of each sequence (prompt + generated tokens).
    pub n_ctx: usize,
    /// Finished sequences kept for prefix reuse.
    pub prefix_cache: usize,
    /// Tokens per forward pass at most (decode steps first, then prompt chunks), which
    /// bounds the activation buffers and the decode latency others see during a long
    /// prefill.
    pub step_tokens: usize,
    /// Speculative decoding of the requests that do not choose
    /// ([`GenerateRequest::speculation`]): their drafts ride in the same forward pass as
    /// the other sequences' steps.
    pub speculation: Speculation,
}

impl SchedulerConfig {
    /// `max_seqs` sequences of `n_ctx` positions, a queue of `4 × max_seqs`, as many
    /// cached sequences as slots, 512 tokens per step.
    pub fn new(max_seqs: usize, n_ctx: usize) -> SchedulerConfig {
        let max_seqs = max_seqs.max(1);
        SchedulerConfig {
            max_seqs,
            queue: 4 * max_seqs,
            n_ctx,
            prefix_cache: max_seqs,
            step_tokens: PREFILL_CHUNK,
            speculation: Speculation::default(),
        }
    }
}

/// What a running request reports, in order: one `Started`, any number of `Text`,
/// then exactly one `Done` or `Error`. The sink receives the text borrowed
/// (`Event<&str>`: the scheduler allocates nothing per token); `into_owned` makes the
/// `Event` (of `String`) that can be sent on.
#[derive(Clone, Debug)]
pub enum Event<T = String> {
    /// The request got a slot; `cached_tokens` of its `prompt_tokens` were already in
    /// a kept sequence's KV cache and are not processed again.
    Started {
        prompt_tokens: usize,
        cached_tokens: usize,
    },
    /// Text that became final (complete UTF-8, never part of a stop string).
    Text(T),
    /// Generation ended (also after a cancellation).
    Done(GenerationStats),
    /// The request could not run: its input (→ 4xx) or the model (→ 500), see
    /// [`EngineError::is_input`].
    Error(EngineError),
}

impl Event<&str> {
    /// The event with its text copied, to send to another thread.
    pub fn into_owned(self) -> Event {
        match self {
            Event::Started {
                prompt_tokens,
                cached_tokens,
            } => Event::Started {
                prompt_tokens,
                cached_tokens,
            },
            Event::Text(t) => Event::Text(t.to_string()),
            Event::Done(stats) => Event::Done(stats),
            Event::Error(e) => Event::Error(e),
        }
    }
}

/// Receives a request's events; returns `false` when nobody listens any more, which
/// cancels the request.
pub type EventSink = Box<dyn FnMut(Event<&str>) -> bool + Send>;

/// Receives each generated token's log-probabilities (when the request asks for them),
/// just before the [`Event::Text`] of that step.
pub type TokenSink = Box<dyn FnMut(&TokenLogprobs) + Send>;

/// One request for the scheduler.
pub struct Job {
    pub prompt: Vec<u32>,
    pub request: GenerateRequest,
    pub sink: EventSink,
    /// The output continues the prompt's text (a completion): keep the leading space
    /// of the first token (SentencePiece `▁Paris` → " Paris"). A chat answer starts a
    /// new text, where that space is dropped.
    pub continues_prompt: bool,
    /// Where each token's log-probabilities go ([`GenerateRequest::logprobs`]).
    pub on_token: Option<TokenSink>,
}

impl Job {
    /// A job sending its events to `sink` (an answer that starts a new text).
    pub fn new(
        prompt: Vec<u32>,
        request: GenerateRequest,
        sink: impl FnMut(Event<&str>) -> bool + Send + 'static,
    ) -> Job {
        Job {
            prompt,
            request,
            sink: Box::new(sink),
            continues_prompt: false,
            on_token: None,
        }
    }

    /// Sends each token's log-probabilities to `f` (the request must ask for them).
    pub fn with_token_sink(mut self, f: impl FnMut(&TokenLogprobs) + Send + 'static) -> Job {
        self.on_token = Some(Box::new(f));
        self
    }

    /// Marks the output as the continuation of the prompt's text.
    pub fn continuing(mut self, yes: bool) -> Job {
        self.continues_prompt = yes;
        self
    }
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Every slot is busy and the queue is full.
    #[error("the server is busy: {active} sequences running and {queued} waiting (limits {max_seqs} + {queue})")]
    Full {
        active: usize,
        queued: usize,
        max_seqs: usize,
        queue: usize,
    },
    /// The scheduler is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The prompt or the settings cannot run at all (an input error: HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

/// Held by whoever waits for a job: dropping it (a client that went away) cancels the
/// job; the scheduler then drops its sequence at the next iteration.
#[derive(Debug)]
pub struct Ticket {
    cancel: Arc<AtomicBool>,
    /// Scheduler-wide id of the job (for logs).
    pub id: u64,
}

impl Ticket {
    /// Cancels the job now.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Counters for a health endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStatus {
    /// Sequences generating now.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Finished sequences kept for prefix reuse.
    pub cached: usize,
    /// Requests finished (including cancelled ones).
    pub completed: u64,
    /// Requests cancelled before they finished.
    pub cancelled: u64,
    /// Prompt tokens not processed thanks to the prefix cache, over all requests.
    pub reused_tokens: u64,
    /// Forward passes run, and the sequences in them (their ratio is the mean batch).
    pub steps: u64,
    pub batched_seqs: u64,
    /// Time spent in those forward passes, in microseconds.
    pub forward_micros: u64,
}

struct Queued {
    job: Job,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct Shared {
    pending: VecDeque<Queued>,
    status: SchedulerStatus,
    /// No new jobs are accepted.
    closing: bool,
    /// Every job is cancelled, then the thread ends.
    abort: bool,
}

struct Inner {
    shared: Mutex<Shared>,
    wake: Condvar,
    next_id: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic in the scheduler thread poisons the lock; the counters stay usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running scheduler thread. Dropping it cancels everything and joins the thread.
pub struct Scheduler {
    inner: Arc<Inner>,
    config: SchedulerConfig,
    /// Why the model cannot draft with an MTP block ([`Speculation::check_model`]), if it
    /// cannot: requests asking for such drafts are refused with it.
    no_mtp: Option<String>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the scheduler thread for `engine`.
    pub fn start(engine: Arc<Engine>, config: SchedulerConfig) -> Scheduler {
        let mut config = config;
        config.max_seqs = config.max_seqs.max(1);
        config.step_tokens = config.step_tokens.max(config.max_seqs + 1);
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared::default()),
            wake: Condvar::new(),
            next_id: AtomicU64::new(1),
        });
        let mtp = Speculation {
            kind: SpecType::Mtp,
            ..Speculation::default()
        };
        let no_mtp = mtp.check_model(&engine.model).err();
        let worker = Worker::new(engine, config.clone(), inner.clone());
        let thread = std::thread::Builder::new()
            .name("ferromoe-scheduler".into())
            .spawn(move || worker.run())
            .expect("spawn the scheduler thread");
        Scheduler {
            inner,
            config,
            no_mtp,
            thread: Some(thread),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a job. Its events go to the job's sink from the scheduler thread; keep the
    /// ticket while you listen (dropping it cancels the job).
    pub fn submit(&self, job: Job) -> Result<Ticket, SubmitError> {
        let invalid = |e: EngineError| SubmitError::Invalid(e.to_string());
        check_prompt(&job.prompt, self.config.n_ctx).map_err(invalid)?;
        job.request.validate().map_err(invalid)?;
        self.config
            .speculation
            .validate()
            .map_err(SubmitError::Invalid)?;
        let speculation = job.request.speculation.unwrap_or(self.config.speculation);
        if let (true, Some(why)) = (speculation.drafts_with_mtp(), &self.no_mtp) {
            return Err(SubmitError::Invalid(why.clone()));
        }
        let mut sh = self.inner.lock();
        if sh.closing || sh.abort {
            return Err(SubmitError::ShuttingDown);
        }
        let (active, queued) = (sh.status.active, sh.pending.len());
        if active + queued >= self.config.max_seqs + self.config.queue {
            return Err(SubmitError::Full {
                active,
                queued,
                max_seqs: self.config.max_seqs,
                queue: self.config.queue,
            });
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(AtomicBool::new(false));
        sh.pending.push_back(Queued {
            job,
            cancel: cancel.clone(),
        });
        sh.status.queued = sh.pending.len();
        drop(sh);
        self.inner.wake.notify_all();
        Ok(Ticket { cancel, id })
    }

    /// Current counters.
    pub fn status(&self) -> SchedulerStatus {
        self.inner.lock().status.clone()
    }

    /// Stops accepting jobs; running and queued ones go on to their end.
    pub fn close(&self) {
        self.inner.lock().closing = true;
        self.inner.wake.notify_all();
    }

    /// Cancels every running and queued job (each gets its `Done` with
    /// [`FinishReason::Cancelled`]) and stops accepting new ones.
    pub fn cancel_all(&self) {
        let mut sh = self.inner.lock();
        sh.closing = true;
        sh.abort = true;
        drop(sh);
        self.inner.wake.notify_all();
    }

    /// Waits until every accepted job has ended (after [`close`](Self::close)) and the
    /// thread has exited.
    pub fn join(mut self) {
        self.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.cancel_all();
            let _ = t.join();
        }
    }
}

/// One admitted request in flight: its sequence and its generation.
struct ActiveJob {
    sequence: Sequence,
    generation: Generation,
    prompt: Vec<u32>,
    sink: EventSink,
    on_token: Option<TokenSink>,
    cancel: Arc<AtomicBool>,
    /// Prompt tokens already in the KV cache (reused or processed).
    fed: usize,
    cached: usize,
    /// The last sampled token, fed at the next step with its draft (valid while
    /// `decoding`).
    next: u32,
    decoding: bool,
    /// This step's share: `None` (left out), `Some(0)` (the decode token and its draft,
    /// `generation.pending()`) or `Some(n)` (the next `n` prompt tokens).
    take: Option<usize>,
    /// Drafts from the model's MTP block, when the request asks for them, and the
    /// buffer of the current draft.
    mtp: Option<MtpDrafter>,
    draft: Vec<u32>,
    started: Instant,
    prefill_seconds: f64,
    decode_started: Option<Instant>,
}

struct Worker {
    engine: Arc<Engine>,
    config: SchedulerConfig,
    inner: Arc<Inner>,
    state: RunState,
    active: Vec<ActiveJob>,
    /// Finished sequences, least recently used first.
    cache: Vec<Sequence>,
    /// The step's batch, kept empty between steps for its allocation.
    batch: Vec<BatchSeq<'static>>,
    /// Indices into `active` of the jobs that ended in this step, with why (or the error
    /// that ended them).
    ended: Vec<(usize, Result<FinishReason, EngineError>)>,
    /// The scratch of the MTP drafts of every sequence (made for the first job that
    /// drafts with MTP), and the step's drafting jobs (kept empty between steps).
    mtp_pass: Option<MtpPass>,
    draft_jobs: Vec<DraftJob<'static>>,
}

/// A drafter for a job whose request drafts with the MTP block; the first such job also
/// makes the scratch (`pass`) all the drafters' passes share.
fn mtp_drafter(
    engine: &Engine,
    config: &SchedulerConfig,
    pass: &mut Option<MtpPass>,
    spec: &Speculation,
    seq: &Sequence,
) -> Result<Option<MtpDrafter>, EngineError> {
    let Some(m) = engine.mtp_drafter(spec, seq)? else {
        return Ok(None);
    };
    if pass.is_none() {
        *pass = Some(engine.mtp_pass(config.max_seqs, config.n_ctx)?);
    }
    Ok(Some(m))
}

impl Worker {
    fn new(engine: Arc<Engine>, config: SchedulerConfig, inner: Arc<Inner>) -> Worker {
        let limits = BatchLimits {
            tokens: config.step_tokens,
            seqs: config.max_seqs,
            ctx: config.n_ctx,
            // Every position of each sequence's draft (requests may turn speculation on).
            logit_rows: config.max_seqs * model::VERIFY_STEP_MAX,
        };
        // Sized up front so that steady-state steps do not allocate. If that fails, the
        // buffers grow on demand instead, and the step that needs them reports the same
        // error to its jobs.
        let state = engine
            .new_state(limits)
            .unwrap_or_else(|_| RunState::new(engine.mode));
        let max = config.max_seqs;
        Worker {
            engine,
            config,
            inner,
            state,
            active: Vec::with_capacity(max),
            cache: Vec::with_capacity(max + 1),
            batch: Vec::with_capacity(max),
            ended: Vec::with_capacity(max),
            mtp_pass: None,
            draft_jobs: Vec::with_capacity(max),
        }
    }

    fn run(mut self) {
        loop {
            let (admitted, abort) = {
                let mut sh = self.inner.lock();
                while self.active.is_empty() && sh.pending.is_empty() && !sh.closing && !sh.abort {
                    sh = self.inner.wake.wait(sh).unwrap_or_else(|e| e.into_inner());
                }
                if self.active.is_empty() && sh.pending.is_empty() && (sh.closing || sh.abort) {
                    return;
                }
                let mut admitted = Vec::new();
                if sh.abort {
                    admitted.extend(sh.pending.drain(..));
                } else {
                    while self.active.len() + admitted.len() < self.config.max_seqs {
                        match sh.pending.pop_front() {
                            Some(q) => admitted.push(q),
                            None => break,
                        }
                    }
                }
                sh.status.queued = sh.pending.len();
                (admitted, sh.abort)
            };
            for q in admitted {
                if abort {
                    q.cancel.store(true, Ordering::SeqCst);
                }
                self.admit(q);
            }
            if abort {
                for s in &self.active {
                    s.cancel.store(true, Ordering::SeqCst);
                }
            }
            self.drop_cancelled();
            if !self.active.is_empty() {
                self.step();
            }
            self.publish();
        }
    }

    /// Updates the shared counters.
    fn publish(&self) {
        let mut sh = self.inner.lock();
        sh.status.active = self.active.len();
        sh.status.cached = self.cache.len();
        sh.status.queued = sh.pending.len();
    }

    /// Gives a job a sequence (the kept one sharing the longest prefix with its prompt,
    /// when there is one) and makes it active.
    fn admit(&mut self, q: Queued) {
        let Queued { job, cancel } = q;
        let Job {
            prompt,
            mut request,
            mut sink,
            continues_prompt,
            on_token,
        } = job;
        let Some(tok) = self.engine.tokenizer.as_ref() else {
            sink(Event::Error(EngineError::NoTokenizer));
            return;
        };
        let best = self
            .cache
            .iter()
            .enumerate()
            .map(|(i, s)| (s.common_prefix(&prompt), i))
            .max_by_key(|&(n, i)| (n, i));
        let mut sequence = match best {
            Some((n, i)) if n > 0 => self.cache.remove(i),
            // No overlap: recycle the least recently used one once the cache is full,
            // so the number of KV caches stays bounded.
            Some(_) if self.cache.len() >= self.config.prefix_cache => self.cache.remove(0),
            _ => match self.engine.sequence(self.config.n_ctx) {
                Ok(s) => s,
                Err(e) => {
                    sink(Event::Error(e));
                    return;
                }
            },
        };
        let spec = *request.speculation.get_or_insert(self.config.speculation);
        let mtp = match mtp_drafter(
            &self.engine,
            &self.config,
            &mut self.mtp_pass,
            &spec,
            &sequence,
        ) {
            Ok(m) => m,
            Err(e) => {
                sink(Event::Error(e));
                return;
            }
        };
        // The last prompt token is always run again: its logits are needed.
        // (A cache with sliding-window rings may keep less than asked: see `KvCache::truncate`.)
        let reuse = sequence.truncate(sequence.common_prefix(&prompt).min(prompt.len() - 1));
        {
            let mut sh = self.inner.lock();
            sh.status.reused_tokens += reuse as u64;
            sh.status.active = self.active.len() + 1;
        }
        if !sink(Event::Started {
            prompt_tokens: prompt.len(),
            cached_tokens: reuse,
        }) {
            cancel.store(true, Ordering::SeqCst);
        }
        let mut generation = Generation::new(tok, &request, continues_prompt);
        generation.set_step_cost(self.engine.step_cost(&spec));
        let job = ActiveJob {
            generation,
            sequence,
            prompt,
            sink,
            on_token,
            cancel,
            fed: reuse,
            cached: reuse,
            next: 0,
            decoding: false,
            take: None,
            mtp,
            draft: Vec::with_capacity(model::VERIFY_STEP_MAX),
            started: Instant::now(),
            prefill_seconds: 0.0,
            decode_started: None,
        };
        if job.generation.is_empty_request() {
            self.finish(job, FinishReason::Length);
        } else {
            self.active.push(job);
        }
    }

    /// Ends cancelled jobs; their KV caches are freed right away.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].cancel.load(Ordering::SeqCst) {
                let job = self.active.swap_remove(i);
                let stats = job.stats(FinishReason::Cancelled);
                let mut sink = job.sink;
                drop(job.sequence);
                self.count_done(true);
                sink(Event::Done(stats));
            } else {
                i += 1;
            }
        }
    }

    /// Counts a finished job and publishes the new number of active sequences, before
    /// its client hears of the end (its next request must find the slot free).
    fn count_done(&self, cancelled: bool) {
        let mut sh = self.inner.lock();
        sh.status.active = self.active.len();
        sh.status.completed += 1;
        sh.status.cancelled += u64::from(cancelled);
    }

    /// One forward pass over every active sequence, then a generation step for those
    /// whose prompt is complete. Allocates nothing once the buffers have grown.
    fn step(&mut self) {
        // Decode steps first (one token each, then their drafts), then prompt chunks
        // within the budget.
        let decoding = self.active.iter().filter(|j| j.decoding).count();
        let mut budget = self.config.step_tokens.saturating_sub(decoding);
        self.ended.clear();
        let drafts_failed = self.draft_with_mtp(&mut budget);
        let mut batch = recycle(std::mem::take(&mut self.batch));
        for j in self.active.iter_mut() {
            j.take = if j.decoding {
                // A sliding-window cache goes back only so far: no step longer than that.
                let max_step = (budget + 1).min(j.sequence.kv.ring_step().unwrap_or(usize::MAX));
                let room = j.sequence.remaining();
                match &j.mtp {
                    Some(_) if drafts_failed => {
                        j.take = None;
                        continue;
                    }
                    // (Its draft's share of the budget is taken already.)
                    Some(_) => _ = j.generation.propose(j.next, &j.draft),
                    None => {
                        let fed =
                            (j.generation).next_tokens(&j.sequence.tokens, j.next, room, max_step);
                        budget -= fed.len() - 1;
                    }
                }
                Some(0)
            } else if budget > 0 {
                let n = (j.prompt.len() - j.fed).min(budget).min(PREFILL_CHUNK);
                budget -= n;
                Some(n)
            } else {
                None
            };
            let (tokens, logits): (&[u32], _) = match j.take {
                None => continue,
                Some(0) => (j.generation.pending(), Logits::All),
                Some(n) => (&j.prompt[j.fed..j.fed + n], Logits::Last),
            };
            batch.push(BatchSeq {
                kv: &mut j.sequence.kv,
                tokens,
                logits,
            });
        }
        let n_batch = batch.len();
        if n_batch == 0 {
            self.batch = recycle(batch);
            return self.end_jobs();
        }
        let t = Instant::now();
        let result = self
            .engine
            .forward_batch(&mut self.state, &mut batch)
            .map(|_| ());
        let took = t.elapsed();
        let (vocab, dim) = (
            self.engine.model.config.n_vocab,
            self.engine.model.config.dim,
        );
        self.batch = recycle(batch);
        {
            let mut sh = self.inner.lock();
            sh.status.forward_micros += took.as_micros() as u64;
            sh.status.steps += 1;
            sh.status.batched_seqs += n_batch as u64;
        }
        if let Err(e) = result {
            // Jobs whose drafts failed end first: `fail_batch` moves the others.
            self.end_jobs();
            return self.fail_batch(e);
        }
        // Each sequence's logits rows, and every row's hidden state (MTP drafts read it).
        let (logits, hidden) = (self.state.logits(), self.state.hidden(dim));
        let (mut at, mut first_row) = (0, 0);
        for (i, j) in self.active.iter_mut().enumerate() {
            let Some(n) = j.take else { continue };
            // A decode step has a row of logits per position of its draft, a prompt chunk
            // one; both have a hidden state per token fed.
            let (rows, fed) = match n {
                0 => (j.generation.pending().len(), j.generation.pending().len()),
                n => (1, n),
            };
            let Some(block) = logits.get(at * vocab..(at + rows) * vocab) else {
                break;
            };
            let states = &hidden[first_row * dim..(first_row + fed) * dim];
            at += rows;
            first_row += fed;
            let decode_states = if n == 0 {
                j.sequence.tokens.extend_from_slice(j.generation.pending());
                j.decoding = false;
                Some(states)
            } else {
                j.sequence
                    .tokens
                    .extend_from_slice(&j.prompt[j.fed..j.fed + n]);
                j.fed += n;
                if let (Some(m), Some(pass)) = (&mut j.mtp, &mut self.mtp_pass) {
                    if let Err(e) = m.observe(pass, states, &j.sequence.tokens) {
                        self.ended.push((i, Err(e)));
                        continue;
                    }
                }
                if j.fed < j.prompt.len() {
                    continue;
                }
                j.prefill_seconds = j.started.elapsed().as_secs_f64();
                j.decode_started = Some(Instant::now());
                None
            };
            if let Some(end) = j.generate(block, decode_states, self.mtp_pass.as_mut(), dim) {
                self.ended.push((i, end));
            }
        }
        self.end_jobs();
    }

    /// The MTP drafts of every decoding sequence that drafts with MTP, in one batch of
    /// passes ([`mtp::draft_batch`]), each as long as its generation asks within the
    /// step's `budget` (tokens beyond the decode tokens), from which each draft's full
    /// length is taken (a draft may come out shorter). When the passes fail, those jobs
    /// end with the error (returns `true`).
    fn draft_with_mtp(&mut self, budget: &mut usize) -> bool {
        let Some(pass) = self.mtp_pass.as_mut() else {
            return false;
        };
        let mut jobs = recycle(std::mem::take(&mut self.draft_jobs));
        for j in self.active.iter_mut().filter(|j| j.decoding) {
            let Some(m) = &mut j.mtp else { continue };
            let max_step = (*budget + 1).min(j.sequence.kv.ring_step().unwrap_or(usize::MAX));
            let want = j.generation.draft_length(j.sequence.remaining(), max_step);
            *budget -= want;
            jobs.push(DraftJob {
                drafter: m,
                tokens: &j.sequence.tokens,
                next: j.next,
                want,
                out: &mut j.draft,
            });
        }
        let result = mtp::draft_batch(pass, &mut jobs);
        self.draft_jobs = recycle(jobs);
        let Err(e) = result else { return false };
        for (i, j) in self.active.iter().enumerate() {
            if j.decoding && j.mtp.is_some() {
                self.ended.push((i, Err(e.clone())));
            }
        }
        true
    }

    /// Ends the jobs of `self.ended` (finished, or failed with an error).
    fn end_jobs(&mut self) {
        // Remove from the back so the indices stay valid.
        self.ended.sort_unstable_by_key(|&(i, _)| i);
        while let Some((i, end)) = self.ended.pop() {
            let mut job = self.active.swap_remove(i);
            match end {
                Ok(reason) => self.finish(job, reason),
                Err(e) => {
                    self.count_done(false);
                    (job.sink)(Event::Error(e));
                }
            }
        }
    }

    /// A forward error ends every job of the batch with that error.
    fn fail_batch(&mut self, e: EngineError) {
        let mut i = self.active.len();
        while i > 0 {
            i -= 1;
            if self.active[i].take.is_some() {
                let mut job = self.active.swap_remove(i);
                self.count_done(false);
                (job.sink)(Event::Error(e.clone()));
            }
        }
    }

    /// Flushes held-back text, reports the stats and keeps the sequence for reuse.
    fn finish(&mut self, mut job: ActiveJob, reason: FinishReason) {
        let rest = job.generation.finish(reason);
        if !rest.is_empty() {
            (job.sink)(Event::Text(rest));
        }
        let stats = job.stats(reason);
        self.count_done(reason == FinishReason::Cancelled);
        (job.sink)(Event::Done(stats));
        if reason != FinishReason::Cancelled && self.config.prefix_cache > 0 {
            if self.cache.len() >= self.config.prefix_cache {
                self.cache.remove(0);
            }
            self.cache.push(job.sequence);
        }
    }
}

impl ActiveJob {
    /// The generation steps of this job's logits `rows` (one per position of its draft,
    /// or the prompt's last), streaming the text that became final and dropping the
    /// rejected draft tokens; the reason (or the error) when the job ends. After a
    /// decode step, `states` are the hidden states of the positions it fed: the MTP
    /// drafter takes those of the confirmed ones.
    fn generate(
        &mut self,
        rows: &[f32],
        states: Option<&[f32]>,
        mtp_pass: Option<&mut MtpPass>,
        dim: usize,
    ) -> Option<Result<FinishReason, EngineError>> {
        let n_ctx = self.sequence.kv.n_ctx();
        // The first position this step fed.
        let first = self.sequence.tokens.len() - states.map_or(0, |s| s.len() / dim);
        let (sink, on_token) = (&mut self.sink, &mut self.on_token);
        let mut emit = |g: &Generation| {
            if let (Some(lp), Some(f)) = (g.token_logprobs(), on_token.as_mut()) {
                f(lp);
            }
            g.text().is_empty() || sink(Event::Text(g.text()))
        };
        let v = self
            .generation
            .verify(rows, &self.sequence.tokens, n_ctx, &mut emit);
        if let Err(e) = self.sequence.keep(v.keep) {
            return Some(Err(e));
        }
        if let (Some(m), Some(pass), Some(states), Step::Next(_)) =
            (&mut self.mtp, mtp_pass, states, v.step)
        {
            let kept = (v.keep - first) * dim;
            if let Err(e) = m.observe(pass, &states[..kept], &self.sequence.tokens) {
                return Some(Err(e));
            }
        }
        match v.step {
            Step::Next(next) => {
                self.next = next;
                self.decoding = true;
                None
            }
            Step::Finished(reason) => Some(Ok(reason)),
        }
    }

    fn stats(&self, finish: FinishReason) -> GenerationStats {
        GenerationStats {
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached,
            generated_tokens: self.generation.generated(),
            prefill_seconds: if self.decode_started.is_some() {
                self.prefill_seconds
            } else {
                self.started.elapsed().as_secs_f64()
            },
            decode_seconds: self
                .decode_started
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0),
            grammar_seconds: self.generation.grammar_seconds(),
            grammar_error: self.generation.constraint_error().map(str::to_string),
            finish,
            stop_string: self.generation.stop_string(),
            drafted_tokens: self.generation.drafter().drafted,
            accepted_tokens: self.generation.drafter().accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadOptions, SamplingParams};
    use std::sync::mpsc;

    fn engine() -> Arc<Engine> {
        let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
        Arc::new(
            Engine::load(
                &path,
                &LoadOptions {
                    threads: Some(2),
                    ..Default::default()
                },
                &mut |_| {},
            )
            .unwrap(),
        )
    }

    fn greedy(n: usize) -> GenerateRequest {
        GenerateRequest {
            max_new_tokens: n,
            sampling: SamplingParams::greedy(),
            stop: vec![],
            ignore_eos: true,
            ..Default::default()
        }
    }

    fn collect(
        sched: &Scheduler,
        prompt: Vec<u32>,
        req: GenerateRequest,
    ) -> (Ticket, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let t = sched
            .submit(Job::new(prompt, req, move |ev| {
                tx.send(ev.into_owned()).is_ok()
            }))
            .unwrap();
        (t, rx)
    }

    fn text_and_stats(rx: mpsc::Receiver<Event>) -> (String, GenerationStats, usize) {
        let (mut text, mut cached) = (String::new(), usize::MAX);
        for ev in rx {
            match ev {
                Event::Started { cached_tokens, .. } => cached = cached_tokens,
                Event::Text(t) => text += &t,
                Event::Done(s) => return (text, s, cached),
                Event::Error(e) => panic!("{e}"),
            }
        }
        panic!("no Done event")
    }

    #[test]
    fn batched_greedy_equals_generate_alone_and_prefix_is_reused() {
        let engine = engine();
        let tok = engine.tokenizer.clone().unwrap();
        let prompts: Vec<Vec<u32>> = [
            "Once upon a time",
            "The capital of France",
            "1, 2, 3,",
            "Hello",
        ]
        .iter()
        .map(|p| tok.encode(p, false).unwrap())
        .collect();
        let alone: Vec<String> = prompts
            .iter()
            .map(|p| {
                let mut s = engine.sequence(256).unwrap();
                let mut out = String::new();
                engine
                    .generate(&mut s, p, &greedy(12), &mut |t| {
                        out += t;
                        true
                    })
                    .unwrap();
                out
            })
            .collect();
        let sched = Scheduler::start(engine.clone(), SchedulerConfig::new(4, 256));
        let runs: Vec<_> = prompts
            .iter()
            .map(|p| collect(&sched, p.clone(), greedy(12)))
            .collect();
        for ((_t, rx), want) in runs.into_iter().zip(&alone) {
            let (text, stats, _) = text_and_stats(rx);
            assert_eq!(&text, want);
            assert_eq!(stats.generated_tokens, 12);
            assert_eq!(stats.finish, FinishReason::Length);
        }
        assert!(
            sched.status().batched_seqs > sched.status().steps,
            "{:?}",
            sched.status()
        );
        // A prompt extending a finished sequence reuses its KV.
        let mut longer = prompts[0].clone();
        longer.extend(tok.encode(" there was", false).unwrap());
        let (_t, rx) = collect(&sched, longer.clone(), greedy(4));
        let (_, stats, cached) = text_and_stats(rx);
        assert_eq!(cached, prompts[0].len());
        assert_eq!(stats.cached_tokens, prompts[0].len());
        assert_eq!(stats.prompt_tokens, longer.len());
        assert!(sched.status().reused_tokens >= prompts[0].len() as u64);
    }

    #[test]
    fn full_queue_is_refused_and_cancel_frees_the_slot() {
        let engine = engine();
        let tok = engine.tokenizer.clone().unwrap();
        let prompt = tok.encode("count with me", false).unwrap();
        let mut cfg = SchedulerConfig::new(1, 512);
        cfg.queue = 1;
        let sched = Scheduler::start(engine, cfg);
        let (t1, rx1) = collect(&sched, prompt.clone(), greedy(400));
        let (t2, rx2) = collect(&sched, prompt.clone(), greedy(2));
        let err = sched
            .submit(Job::new(prompt.clone(), greedy(2), |_| true))
            .unwrap_err();
        assert!(matches!(err, SubmitError::Full { .. }), "{err:?}");
        drop(t1);
        let (_, stats, _) = text_and_stats(rx1);
        assert_eq!(stats.finish, FinishReason::Cancelled);
        assert!(stats.generated_tokens < 400);
        let (_, stats, _) = text_and_stats(rx2);
        assert_eq!(stats.finish, FinishReason::Length);
        drop(t2);
        let st = sched.status();
        assert_eq!(st.cancelled, 1);
        assert_eq!(st.completed, 2);
        let too_long = vec![prompt[0]; 513];
        assert!(matches!(
            sched.submit(Job::new(too_long, greedy(1), |_| true)),
            Err(SubmitError::Invalid(_))
        ));
        sched.join();
    }
}
