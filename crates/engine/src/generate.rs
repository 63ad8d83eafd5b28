//! Generation: the one state machine that turns a sequence's logits into text — sample,
//! check for the end (an end-of-generation token, a stop string, the length or context
//! limit), detokenize and flush — used by [`Engine::generate`] (`run`, `chat`) and by the
//! scheduler for every batched request.

use std::time::Instant;

use text::{StreamDecoder, Tokenizer};

use crate::constraint::Constraint;
use crate::mtp::{MtpDrafter, MtpPass};
use crate::speculate::{Drafter, Speculation};
use crate::stop::StopMatcher;
use crate::{Engine, EngineError, Sampler, SamplingParams, Sequence};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop strings (never included in the output).
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (with a constraint, an
    /// end-of-generation token the grammar allows still ends the output).
    pub ignore_eos: bool,
    /// The output must match this grammar: tokens it forbids are masked out before
    /// sampling, and generation ends when it is complete ([`crate::constraint`]).
    pub constraint: Option<Constraint>,
    /// Added to these tokens' logits before sampling (OpenAI's `logit_bias`: −100 bans
    /// a token, +100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
    /// Report each generated token's log-probability and its `n` most likely
    /// alternatives ([`Generation::token_logprobs`]).
    pub logprobs: Option<usize>,
    /// Special tokens written into the text instead of dropped: the tool-call and
    /// reasoning markers of the model's reply format (`text::ReplyFormat::markers`),
    /// which the caller's reply parser must see.
    pub keep_special: Vec<u32>,
    /// Speculative decoding for this request (`None`: whoever runs it decides — the
    /// server's `--spec-type`, or [`Speculation::default`]); it never changes greedy
    /// output, nor the distribution of sampled output ([`crate::speculate`]).
    pub speculation: Option<Speculation>,
}

impl Default for GenerateRequest {
    /// Up to 256 tokens with the default sampling, no stop strings, no constraint.
    fn default() -> GenerateRequest {
        GenerateRequest {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
            logit_bias: Vec::new(),
            logprobs: None,
            keep_special: Vec::new(),
            speculation: None,
        }
    }
}

/// Most alternatives [`GenerateRequest::logprobs`] may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl GenerateRequest {
    /// Checks what the caller asked for (the sampling settings' ranges, the bias
    /// values, the number of alternatives).
    pub fn validate(&self) -> Result<(), EngineError> {
        self.sampling.validate().map_err(EngineError::Input)?;
        if let Some(&(t, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(EngineError::Input(format!(
                "logit_bias for token {t} must be a finite number, got {b}"
            )));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(EngineError::Input(format!(
                "top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {n}"
            )));
        }
        if let Some(s) = &self.speculation {
            s.validate().map_err(EngineError::Input)?;
        }
        Ok(())
    }
}

/// The log-probabilities of one generated token: the model's own distribution at that
/// step (log-softmax of the raw logits, before penalties, bias, grammar and
/// temperature), as OpenAI reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens, best first (ties: lower id first), with their
    /// log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_new_tokens` reached, or the context is full.
    Length,
    /// The caller asked to stop (Ctrl-C, client gone).
    Cancelled,
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV was already in the sequence (prefix reuse).
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Of the decode time, what the grammar took: computing the allowed tokens and
    /// committing the sampled ones (0 without a constraint).
    pub grammar_seconds: f64,
    /// The grammar engine failed mid-way and ended the output (as `Stop`): why.
    pub grammar_error: Option<String>,
    pub finish: FinishReason,
    /// The stop string that ended the output: its index in the request's `stop` list
    /// (Anthropic's `stop_sequence`). None when an end-of-generation token or the
    /// length ended it.
    pub stop_string: Option<usize>,
    /// Speculative decoding: tokens drafted, and of them confirmed by the model (each
    /// confirmed token is one forward pass saved).
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
}

impl GenerationStats {
    /// Prompt tokens per second (of the tokens actually processed).
    pub fn prefill_tps(&self) -> f64 {
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prefill_seconds.max(1e-9)
    }
    /// Generated tokens per second (first token excluded: it comes from the prefill).
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
    /// The share of drafted tokens the model confirmed (`None`: nothing was drafted).
    pub fn acceptance(&self) -> Option<f64> {
        (self.drafted_tokens > 0).then(|| self.accepted_tokens as f64 / self.drafted_tokens as f64)
    }
}

/// What verifying a step's tokens decided ([`Generation::verify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Feed the token, or finish.
    pub step: Step,
    /// Positions the sequence keeps: the tokens fed up to the last one whose logits were
    /// used; truncate the sequence (and its cache) to this, dropping rejected draft tokens.
    pub keep: usize,
}

/// What a generation step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed this token to the sequence, then step again with its logits.
    Next(u32),
    /// Generation is over; call [`Generation::finish`] with this reason.
    Finished(FinishReason),
}

/// One request's generation state: its sampler, streaming decoder and stop matcher, the
/// count of tokens generated and the text that became final at the last step. Its
/// buffers are reused, so a step allocates nothing once they have grown.
pub struct Generation {
    tok: Tokenizer,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    max_new_tokens: usize,
    ignore_eos: bool,
    generated: usize,
    /// The decoded text of the last token, before the stop matcher.
    piece: String,
    /// Text that became final at the last step (or at the finish).
    text: String,
    /// A stop string ended the output: what it held back is dropped, not flushed.
    stopped_by_string: bool,
    constraint: Option<Constraint>,
    /// Why the constraint ended the output early (its grammar failed), if it did.
    constraint_error: Option<String>,
    /// Time spent in the grammar (masks and commits).
    grammar_time: std::time::Duration,
    logit_bias: Vec<(u32, f32)>,
    /// The logits with the bias and the grammar's mask applied (only used when one is set).
    shaped: Vec<f32>,
    /// Alternatives to report per token (`None`: no log-probabilities).
    logprobs: Option<usize>,
    /// The last step's token log-probabilities, valid when `has_logprobs`.
    last: TokenLogprobs,
    has_logprobs: bool,
    /// Drafts and their statistics (speculative decoding).
    drafter: Drafter,
    /// The tokens of the next step: the sampled token, then the draft (capacity reserved).
    pending: Vec<u32>,
    draft: Vec<u32>,
    /// Draft tokens in the step being verified.
    drafted_now: usize,
}

impl Generation {
    /// A generation for `req` with `tok`'s vocabulary. `continues_prompt`: the output
    /// continues the prompt's text (a completion), so the first token keeps its leading
    /// space (SentencePiece `▁Paris` → " Paris"); a chat answer starts a new text.
    pub fn new(tok: &Tokenizer, req: &GenerateRequest, continues_prompt: bool) -> Generation {
        let decoder = tok.stream_decoder(true).keep_special(&req.keep_special);
        let mut stops = StopMatcher::new(&req.stop);
        // One token's text is at most its piece plus an incomplete character, each byte
        // at worst a 3-byte U+FFFD; the stop matcher holds a stop string's worth more.
        // Sized once, so a step never reallocates.
        let piece_cap = 3 * (tok.max_piece_len() + 4);
        let text_cap = piece_cap + stops.max_stop_len();
        stops.reserve(text_cap);
        Generation {
            tok: tok.clone(),
            sampler: Sampler::new(req.sampling.clone()),
            decoder: if continues_prompt {
                decoder.keep_leading_space()
            } else {
                decoder
            },
            stops,
            max_new_tokens: req.max_new_tokens,
            ignore_eos: req.ignore_eos,
            generated: 0,
            piece: String::with_capacity(piece_cap),
            text: String::with_capacity(text_cap),
            stopped_by_string: false,
            constraint: req.constraint.clone(),
            constraint_error: None,
            grammar_time: std::time::Duration::ZERO,
            logit_bias: req.logit_bias.clone(),
            shaped: Vec::new(),
            logprobs: req.logprobs,
            last: TokenLogprobs::default(),
            has_logprobs: false,
            drafter: Drafter::new(req.speculation.unwrap_or_default()),
            pending: Vec::with_capacity(model::VERIFY_STEP_MAX),
            draft: Vec::with_capacity(model::VERIFY_STEP_MAX),
            drafted_now: 0,
        }
    }

    /// The tokens [`next_tokens`](Self::next_tokens) chose last (the sampled token and its
    /// draft).
    pub fn pending(&self) -> &[u32] {
        &self.pending
    }

    /// Sets the model's extra cost of a step per draft token (see
    /// [`Engine::step_cost_per_token`]), which sizes the drafts.
    pub fn set_step_cost(&mut self, cost_per_token: f32) {
        self.drafter.set_step_cost(cost_per_token);
    }

    /// The speculative decoding statistics so far.
    pub fn drafter(&self) -> &Drafter {
        &self.drafter
    }

    /// The tokens to feed in the next step after sampling `next`: `next`, then a draft for
    /// the model to verify in the same step ([`crate::speculate`]), at most `max_step`
    /// tokens in all. `history` is every token held, `room` the positions left in the
    /// context before `next`. The draft never runs past what may still be generated.
    /// Feed them in one step with every position's logits and pass those to
    /// [`verify`](Self::verify).
    pub fn next_tokens(
        &mut self,
        history: &[u32],
        next: u32,
        room: usize,
        max_step: usize,
    ) -> &[u32] {
        let limit = self.draft_limit(room, max_step);
        let mut draft = std::mem::take(&mut self.draft);
        self.drafter.draft(history, next, limit, &mut draft);
        self.propose(next, &draft);
        self.draft = draft;
        &self.pending
    }

    /// The most draft tokens the next step may hold: a step of at most `max_step` tokens,
    /// `room` positions left in the context, and one token per position, no more than may
    /// still be generated.
    fn draft_limit(&self, room: usize, max_step: usize) -> usize {
        let left = self.max_new_tokens.saturating_sub(self.generated);
        max_step
            .min(room)
            .min(left)
            .min(model::VERIFY_STEP_MAX)
            .saturating_sub(1)
    }

    /// How many tokens a drafter of the caller's (MTP) should draft for the next step
    /// (arguments as [`next_tokens`](Self::next_tokens)): 0 when drafting is off or
    /// paused, else the length the measured acceptance favours. Feed its draft through
    /// [`propose`](Self::propose).
    pub fn draft_length(&mut self, room: usize, max_step: usize) -> usize {
        let limit = self.draft_limit(room, max_step);
        self.drafter.wanted(limit)
    }

    /// The tokens of the next step: `next`, then `draft` (from any drafter: at most
    /// `model::VERIFY_STEP_MAX − 1` tokens are kept, and the caller must leave room for
    /// them in the context), to be fed in one step and passed to
    /// [`verify`](Self::verify). [`next_tokens`](Self::next_tokens) drafts by prompt
    /// lookup and calls this.
    pub fn propose(&mut self, next: u32, draft: &[u32]) -> &[u32] {
        let draft = &draft[..draft.len().min(model::VERIFY_STEP_MAX - 1)];
        self.drafted_now = draft.len();
        self.pending.clear();
        self.pending.push(next);
        self.pending.extend_from_slice(draft);
        &self.pending
    }

    /// Samples each position of a step from its `logits` (one row per position of the
    /// tokens from [`next_tokens`](Self::next_tokens), or the one row of a prompt's last
    /// position), as [`step`](Self::step) would one after the other, while the draft is
    /// confirmed: the first token that differs from the draft (or that ends the output)
    /// ends the step. `tokens` is every token held after the step was fed, `n_ctx` the
    /// context size. `emit` is called after each position's step (its text and
    /// log-probabilities are final then); `false` cancels. The sequence must then be
    /// truncated to [`Verified::keep`].
    pub fn verify(
        &mut self,
        logits: &[f32],
        tokens: &[u32],
        n_ctx: usize,
        emit: &mut dyn FnMut(&Generation) -> bool,
    ) -> Verified {
        let d = std::mem::take(&mut self.drafted_now);
        let rows = d + 1;
        let vocab = logits.len() / rows;
        // The tokens fed before the draft (the prompt, or everything up to `next`).
        let base = tokens.len() - d;
        for i in 0..rows {
            let history = &tokens[..base + i];
            let draft = (i < d).then(|| tokens[base + i]);
            let step = self.step_inner(
                &logits[i * vocab..(i + 1) * vocab],
                history,
                n_ctx - history.len(),
                draft,
            );
            let keep = base + i;
            if !emit(self) {
                self.drafter.record(d, i);
                return Verified {
                    step: Step::Finished(FinishReason::Cancelled),
                    keep,
                };
            }
            match step {
                Step::Next(t) if draft == Some(t) => continue,
                step => {
                    self.drafter.record(d, i);
                    return Verified { step, keep };
                }
            }
        }
        unreachable!("the last row has no draft token, so it always ends the step")
    }

    /// The last step's token and its log-probabilities (when the request asked for them
    /// and the step produced a token of the output: end-of-generation tokens are not
    /// reported).
    pub fn token_logprobs(&self) -> Option<&TokenLogprobs> {
        self.has_logprobs.then_some(&self.last)
    }

    /// Why the grammar ended the output early (an error inside the grammar engine), if
    /// it did; the output then ends with [`FinishReason::Stop`].
    pub fn constraint_error(&self) -> Option<&str> {
        self.constraint_error.as_deref()
    }

    /// Seconds spent in the grammar so far (computing masks, committing tokens).
    pub fn grammar_seconds(&self) -> f64 {
        self.grammar_time.as_secs_f64()
    }

    /// Records `token`'s log-probability and the `n` best alternatives under the
    /// log-softmax of `logits`.
    fn record_logprobs(&mut self, logits: &[f32], token: u32, n: usize) {
        let max = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        // In f64: the sum over a large vocabulary loses nothing.
        let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        let lp = |l: f32| (l as f64 - log_z) as f32;
        self.last.token = token;
        self.last.logprob = logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&l| lp(l));
        // The n best by a bounded insertion (n ≤ 20): one pass, no sort of the vocabulary.
        let top = &mut self.last.top;
        top.clear();
        if n > 0 {
            for (i, &l) in logits.iter().enumerate() {
                if top.len() == n && top[n - 1].1 >= l || l.is_nan() {
                    continue;
                }
                let at = top.partition_point(|&(_, b)| b >= l);
                if top.len() == n {
                    top.pop();
                }
                top.insert(at, (i as u32, l));
            }
            for e in top.iter_mut() {
                e.1 = lp(e.1);
            }
        }
        self.has_logprobs = true;
    }

    /// Tokens generated so far (an end-of-generation token counts).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// The stop string that ended the output (its index in the request's `stop`).
    pub fn stop_string(&self) -> Option<usize> {
        self.stops.matched()
    }

    /// Nothing may be generated at all (`max_new_tokens` is 0).
    pub fn is_empty_request(&self) -> bool {
        self.max_new_tokens == 0
    }

    /// Samples the next token from `logits`, the last-position logits of a sequence
    /// holding `history` with `room` positions left, and decides: feed it, or stop. The
    /// text that became final is in [`text`](Self::text) (possibly empty).
    pub fn step(&mut self, logits: &[f32], history: &[u32], room: usize) -> Step {
        self.step_inner(logits, history, room, None)
    }

    /// [`step`](Self::step), where `draft` was guessed for this position: sampled with
    /// the speculative rejection rule ([`Sampler::sample_with_draft`]).
    fn step_inner(
        &mut self,
        logits: &[f32],
        history: &[u32],
        room: usize,
        draft: Option<u32>,
    ) -> Step {
        self.text.clear();
        self.has_logprobs = false;
        // The bias and the grammar's mask work on a copy, made only when one is set: an
        // unconstrained request costs nothing here.
        let next = if self.constraint.is_some() || !self.logit_bias.is_empty() {
            if let Some(c) = &mut self.constraint {
                let t = Instant::now();
                let masked = c.mask_into(logits, &mut self.shaped);
                self.grammar_time += t.elapsed();
                if let Err(e) = masked {
                    self.constraint_error = Some(e);
                    return Step::Finished(FinishReason::Stop);
                }
            } else {
                self.shaped.clear();
                self.shaped.extend_from_slice(logits);
            }
            // A forbidden token stays at −∞ whatever its bias.
            for &(t, b) in &self.logit_bias {
                if let Some(l) = self.shaped.get_mut(t as usize) {
                    *l += b;
                }
            }
            match draft {
                Some(d) => self.sampler.sample_with_draft(&self.shaped, history, d),
                None => self.sampler.sample(&self.shaped, history),
            }
        } else {
            match draft {
                Some(d) => self.sampler.sample_with_draft(logits, history, d),
                None => self.sampler.sample(logits, history),
            }
        };
        self.generated += 1;
        let eog = self.tok.is_eog(next);
        if let Some(c) = &mut self.constraint {
            // The mask allowed it: the grammar is complete.
            if eog {
                return Step::Finished(FinishReason::Stop);
            }
            let t = Instant::now();
            let committed = c.commit(next);
            self.grammar_time += t.elapsed();
            if let Err(e) = committed {
                self.constraint_error = Some(e);
                return Step::Finished(FinishReason::Stop);
            }
        } else if eog && !self.ignore_eos {
            return Step::Finished(FinishReason::Stop);
        }
        if let Some(n) = self.logprobs {
            self.record_logprobs(logits, next, n);
        }
        self.piece.clear();
        self.decoder.push_to(next, &mut self.piece);
        if self.stops.push_to(&self.piece, &mut self.text) {
            self.stopped_by_string = true;
            return Step::Finished(FinishReason::Stop);
        }
        if self.constraint.as_ref().is_some_and(Constraint::is_stopped) {
            return Step::Finished(FinishReason::Stop);
        }
        if self.generated >= self.max_new_tokens || room == 0 {
            return Step::Finished(FinishReason::Length);
        }
        Step::Next(next)
    }

    /// The text that became final at the last step or finish: complete UTF-8, never part
    /// of a stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Ends the generation: the text held back (an unfinished character, a possible
    /// stop-string start) becomes final in [`text`](Self::text), unless a stop string
    /// ended the output or the caller cancelled.
    pub fn finish(&mut self, reason: FinishReason) -> &str {
        self.text.clear();
        if reason != FinishReason::Cancelled && !self.stopped_by_string {
            self.piece.clear();
            self.decoder.flush_to(&mut self.piece);
            if !self.stops.push_to(&self.piece, &mut self.text) {
                self.stops.flush_to(&mut self.text);
            }
        }
        &self.text
    }
}

impl Engine {
    /// The cost of a decode step per token it feeds, relative to a one-token step
    /// (what the draft length's cost model weighs): MTP drafts add their block's pass.
    pub(crate) fn step_cost(&self, spec: &Speculation) -> f32 {
        match spec.drafts_with_mtp() {
            true => self.step_cost_per_token + self.mtp_cost_per_token,
            false => self.step_cost_per_token,
        }
    }

    /// A drafter for `seq`'s generation when `spec` drafts with the model's MTP block
    /// (its cache follows the sequence's positions and types).
    pub(crate) fn mtp_drafter(
        &self,
        spec: &Speculation,
        seq: &Sequence,
    ) -> Result<Option<MtpDrafter>, EngineError> {
        if !spec.drafts_with_mtp() {
            return Ok(None);
        }
        let (types, n_ctx) = (seq.kv.types(), seq.kv.n_ctx());
        Ok(Some(MtpDrafter::new(&self.model, types, n_ctx)?))
    }

    /// Scratch for the MTP block's passes over up to `seqs` sequences' drafts at once,
    /// with caches of up to `n_ctx` positions.
    pub fn mtp_pass(&self, seqs: usize, n_ctx: usize) -> Result<MtpPass, EngineError> {
        let (model, pool) = (self.model.clone(), self.pool.clone());
        MtpPass::new(model, pool, self.mode, seqs, n_ctx)
    }

    /// Generates after `prompt` (reusing whatever prefix `seq` already holds), calling
    /// `on_text` with each piece of text as it becomes final (complete UTF-8, no stop
    /// strings); `on_text` returns `false` to cancel.
    pub fn generate(
        &self,
        seq: &mut Sequence,
        prompt: &[u32],
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerationStats, EngineError> {
        let tok = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        req.validate()?;
        let mut gen = Generation::new(tok, req, false);
        let spec = req.speculation.unwrap_or_default();
        gen.set_step_cost(self.step_cost(&spec));
        let n_ctx = seq.kv.n_ctx();
        // A sliding-window cache goes back only so far: no step longer than that.
        let max_step = seq.kv.ring_step().unwrap_or(usize::MAX);
        let mut mtp = match self.mtp_drafter(&spec, seq)? {
            Some(d) => Some((d, self.mtp_pass(1, n_ctx)?)),
            None => None,
        };
        let mut observe = |hidden: &[f32], tokens: &[u32]| match &mut mtp {
            Some((m, pass)) => m.observe(pass, hidden, tokens),
            None => Ok(()),
        };
        let t0 = Instant::now();
        let (logits, history, cached) = seq.prefill_observed(prompt, &mut observe)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut emit = |g: &Generation| g.text().is_empty() || on_text(g.text());
        let mut draft = Vec::with_capacity(model::VERIFY_STEP_MAX);
        let finish = if gen.is_empty_request() {
            FinishReason::Length
        } else {
            let mut v = gen.verify(logits, history, n_ctx, &mut emit);
            loop {
                match v.step {
                    Step::Finished(reason) => break reason,
                    Step::Next(next) => {
                        let room = seq.remaining();
                        let tokens = match &mut mtp {
                            Some((m, pass)) => {
                                let want = gen.draft_length(room, max_step);
                                m.draft(pass, &seq.tokens, next, want, &mut draft)?;
                                gen.propose(next, &draft)
                            }
                            None => gen.next_tokens(&seq.tokens, next, room, max_step),
                        };
                        let fed = seq.tokens.len();
                        let (logits, history) =
                            seq.feed_with_history(tokens, model::Logits::All)?;
                        v = gen.verify(logits, history, n_ctx, &mut emit);
                        seq.keep(v.keep)?;
                        if let (Some((m, pass)), Step::Next(_)) = (&mut mtp, v.step) {
                            let kept = (v.keep - fed) * self.model.config.dim;
                            m.observe(pass, &seq.hidden()[..kept], &seq.tokens)?;
                        }
                    }
                }
            }
        };
        let rest = gen.finish(finish);
        if !rest.is_empty() {
            on_text(rest);
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: gen.generated(),
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            grammar_seconds: gen.grammar_seconds(),
            grammar_error: gen.constraint_error().map(str::to_string),
            finish,
            stop_string: gen.stop_string(),
            drafted_tokens: gen.drafter().drafted,
            accepted_tokens: gen.drafter().accepted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
        let file = gguf::Gguf::open(&path).unwrap();
        Tokenizer::from_gguf(file.metadata()).unwrap()
    }

    fn request(max_new_tokens: usize, stop: &[&str]) -> GenerateRequest {
        GenerateRequest {
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Drives `gen` as if the model predicted `ids` one after the other (one-hot logits);
    /// returns the text streamed (finish included), the steps and the finish reason.
    fn drive(
        gen: &mut Generation,
        vocab: usize,
        ids: &[u32],
        room: usize,
    ) -> (String, usize, FinishReason) {
        let (mut text, mut history) = (String::new(), vec![1u32]);
        for (i, &id) in ids.iter().enumerate() {
            let mut logits = vec![0f32; vocab];
            logits[id as usize] = 1.0;
            let step = gen.step(&logits, &history, room.saturating_sub(i));
            text += gen.text();
            match step {
                Step::Next(t) => {
                    assert_eq!(t, id);
                    history.push(t);
                }
                Step::Finished(reason) => {
                    text += gen.finish(reason);
                    return (text, i + 1, reason);
                }
            }
        }
        panic!("still running after {} tokens", ids.len())
    }

    #[test]
    fn kept_special_tokens_are_written_others_dropped() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let start = tok.token_id("<|im_start|>").unwrap();
        assert!(tok.is_special(start) && !tok.is_eog(start));
        let mut ids = tok.encode("Hi", false).unwrap();
        ids.push(start);
        ids.extend(tok.encode("there", false).unwrap());
        let mut plain = Generation::new(&tok, &request(ids.len(), &[]), false);
        assert_eq!(drive(&mut plain, vocab, &ids, 100).0, "Hithere");
        let mut req = request(ids.len(), &[]);
        req.keep_special = vec![start];
        let mut kept = Generation::new(&tok, &req, false);
        assert_eq!(drive(&mut kept, vocab, &ids, 100).0, "Hi<|im_start|>there");
    }

    #[test]
    fn stops_at_a_stop_string_across_tokens_and_never_shows_it() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let ids = tok
            .encode("Hello world. STOP and more words", false)
            .unwrap();
        let mut gen = Generation::new(&tok, &request(100, &["@@", "STOP"]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(text, "Hello world. ");
        assert_eq!(reason, FinishReason::Stop);
        assert!(steps < ids.len());
        assert_eq!(gen.generated(), steps);
        assert_eq!(gen.stop_string(), Some(1), "which stop string ended it");
    }

    #[test]
    fn length_and_context_end_it_and_held_back_text_is_flushed() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let ids = tok.encode("one two three four", false).unwrap();
        // "thr" could start the stop string "three!": held back, then flushed at the end.
        let n = tok.encode("one two three", false).unwrap().len();
        let mut gen = Generation::new(&tok, &request(n, &["three!"]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(
            (text.as_str(), steps, reason),
            ("one two three", n, FinishReason::Length)
        );
        assert_eq!(gen.stop_string(), None);
        let mut gen = Generation::new(&tok, &request(100, &[]), false);
        let (_, steps, reason) = drive(&mut gen, vocab, &ids, 2);
        assert_eq!((steps, reason), (3, FinishReason::Length));
    }

    #[test]
    fn end_of_generation_token_stops_unless_ignored() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let eos = tok.eos_id().unwrap();
        let mut ids = tok.encode("Hi", false).unwrap();
        ids.push(eos);
        ids.extend(tok.encode(" there", false).unwrap());
        let mut gen = Generation::new(&tok, &request(100, &[]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!((text.as_str(), reason), ("Hi", FinishReason::Stop));
        assert_eq!(steps, ids.iter().position(|&t| t == eos).unwrap() + 1);
        let mut req = request(ids.len(), &[]);
        req.ignore_eos = true;
        let mut gen = Generation::new(&tok, &req, false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(
            (text.as_str(), steps, reason),
            ("Hi there", ids.len(), FinishReason::Length)
        );
    }
}
