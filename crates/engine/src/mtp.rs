//! Speculative drafts from the model's own next-token-prediction (MTP) layer
//! (`--spec-type mtp`; GLM-4.5's and DeepSeek-V3.2's `nextn` block, see
//! `model::Model::forward_nextn`).
//!
//! The block's cache holds one position per trunk position `p` whose next token is known:
//! the trunk's hidden state at `p` paired with the token at `p + 1`. To draft after the
//! sampled token `next`, the trunk positions not yet in the block's cache (the prompt
//! after the prefill, or the confirmed part of the last step) run through it, `next`
//! pairing with the last of them; the last row's most likely token is the first draft
//! token. Each further one chains on the block's own output and the token it just
//! drafted, at the following position; those chained positions are dropped from the
//! block's cache afterwards, since the trunk has not confirmed them.
//!
//! Cache positions follow the training recipe (DeepSeek-V3's MTP, as vLLM and SGLang run
//! it): position `p` pairs the trunk's state at `p` with the token at `p + 1`.
//! llama.cpp and ik_llama.cpp key the same pair by `p + 1` and add a row (a zero state,
//! the first token) at 0; attention sees relative positions, so only that row differs.
//! A chat turn that reuses the cached prefix starts the block's cache at the first new
//! position (the drafter lives for one generation): fewer positions to attend to, the
//! same verification.
//!
//! Drafts are proposals only: the trunk verifies them in one multi-token step
//! ([`crate::Generation::verify`]), so the output is the same as without them.

use std::sync::Arc;

use kernels::ThreadPool;
use model::{BatchSeq, HiddenFrom, KvCache, Logits, Model, RunState};

use crate::sampler::argmax;
use crate::{recycle, EngineError, PREFILL_CHUNK};

/// The scratch of the MTP block's passes: one per generation (`run`, `chat`), or one
/// shared by every sequence of a server, whose drafts [`draft_batch`] runs together.
pub struct MtpPass {
    model: Arc<Model>,
    pool: Arc<ThreadPool>,
    state: RunState,
    /// The rows of a pass: the hidden states, every sequence's after the other.
    hidden: Vec<f32>,
    /// The sequences of a pass (kept to reuse its storage; empty between passes).
    batch: Vec<BatchSeq<'static>>,
}

/// Most rows of one sequence in a batched draft's first pass: the positions a verified
/// step confirms ([`draft_batch`] runs the rows before those through the block alone).
const FIRST_PASS_ROWS: usize = model::VERIFY_STEP_MAX + 1;

/// Most rows of one pass over up to `seqs` sequences: a chunk of one sequence's pending
/// rows ([`MtpDrafter::observe`]), or each sequence's first-pass rows of a batched draft.
pub(crate) fn pass_rows(seqs: usize) -> usize {
    PREFILL_CHUNK.max(seqs * FIRST_PASS_ROWS)
}

impl MtpPass {
    /// Scratch for passes over up to `seqs` sequences with caches of up to `n_ctx`
    /// positions, sized up front (a chunk of rows, or a verified step's rows per
    /// sequence) so that drafting in a steady state allocates nothing.
    pub fn new(
        model: Arc<Model>,
        pool: Arc<ThreadPool>,
        mode: model::MatmulMode,
        seqs: usize,
        n_ctx: usize,
    ) -> Result<MtpPass, EngineError> {
        let seqs = seqs.max(1);
        let rows = pass_rows(seqs);
        let mut state = RunState::new(mode);
        let limits = model::BatchLimits {
            tokens: rows,
            seqs,
            ctx: n_ctx,
            logit_rows: 0,
        };
        model.reserve_nextn(&mut state, &pool, limits)?;
        Ok(MtpPass {
            hidden: Vec::with_capacity(rows * model.config.dim),
            batch: Vec::with_capacity(seqs),
            state,
            model,
            pool,
        })
    }

    /// The block over each sequence's rows in [`Self::hidden`] (paired with its
    /// drafter's `tokens`): one row of logits per sequence.
    fn run<'d>(
        &mut self,
        drafters: impl Iterator<Item = &'d mut MtpDrafter>,
        from: HiddenFrom,
    ) -> Result<&[f32], EngineError> {
        let mut batch = recycle(std::mem::take(&mut self.batch));
        for d in drafters {
            batch.push(BatchSeq {
                kv: &mut d.kv,
                tokens: &d.tokens,
                logits: Logits::Last,
            });
        }
        let result = self.model.forward_nextn_batch(
            &self.pool,
            &mut self.state,
            &mut batch,
            &self.hidden,
            from,
        );
        self.batch = recycle(batch);
        result?;
        Ok(self.state.logits())
    }
}

/// The MTP block's cache and the rows waiting for it, for one generation.
pub struct MtpDrafter {
    kv: KvCache,
    dim: usize,
    /// Trunk hidden states (before the final norm) not yet in the block's cache, of the
    /// trunk positions `pending_from..`, `dim` values each.
    pending: Vec<f32>,
    pending_from: usize,
    /// The tokens paired with the rows of the drafter's pass.
    tokens: Vec<u32>,
    /// While drafting ([`draft_batch`]): whether this sequence drafts, and whether it
    /// takes part in the chained pass being run; the cache length to go back to (the
    /// chained positions are the block's guesses); its last row in the pass just run.
    drafting: bool,
    chaining: bool,
    confirmed: usize,
    last_row: usize,
}

/// One sequence's share of [`draft_batch`].
pub struct DraftJob<'a> {
    pub drafter: &'a mut MtpDrafter,
    /// Every token the sequence holds.
    pub tokens: &'a [u32],
    /// The token sampled after them, which the draft follows.
    pub next: u32,
    /// Draft tokens wanted.
    pub want: usize,
    /// The draft (cleared first).
    pub out: &'a mut Vec<u32>,
}

impl MtpDrafter {
    /// A drafter for `model`'s MTP block with room for `n_ctx` positions (the sequence's
    /// context); an error saying why when the model has no usable block.
    pub fn new(
        model: &Model,
        types: model::KvTypes,
        n_ctx: usize,
    ) -> Result<MtpDrafter, EngineError> {
        let kv = model.nextn_cache(types, n_ctx)?;
        let dim = model.config.dim;
        // Room for the most rows that wait (a chunk, plus a step's while drafting pauses),
        // so that a drafter in a steady state allocates nothing.
        Ok(MtpDrafter {
            kv,
            dim,
            pending: Vec::with_capacity((PREFILL_CHUNK + model::VERIFY_STEP_MAX) * dim),
            pending_from: 0,
            tokens: Vec::with_capacity(PREFILL_CHUNK.max(model::VERIFY_STEP_MAX + 1)),
            drafting: false,
            chaining: false,
            confirmed: 0,
            last_row: 0,
        })
    }

    /// Positions in the block's cache.
    pub fn cached(&self) -> usize {
        self.kv.len()
    }

    /// Takes the hidden states of the last positions the trunk fed and kept (`hidden`:
    /// one row per position, the last of `tokens`, every token the sequence holds). Runs
    /// the positions whose next token is known through the block (in `pass`) once a
    /// prompt's worth are waiting; the rest wait for a draft.
    pub fn observe(
        &mut self,
        pass: &mut MtpPass,
        hidden: &[f32],
        tokens: &[u32],
    ) -> Result<(), EngineError> {
        let dim = self.dim;
        let rows = hidden.len() / dim;
        let first = tokens.len() - rows;
        if self.pending.is_empty() {
            self.pending_from = first;
        } else if self.pending_from + self.pending.len() / dim != first {
            // Not the positions after the pending ones (cannot happen in one generation):
            // start again from these.
            self.pending.clear();
            self.pending_from = first;
        }
        self.pending.extend_from_slice(hidden);
        if self.pending.len() / dim > PREFILL_CHUNK {
            let known = tokens.len() - 1 - self.pending_from;
            self.flush(pass, tokens, known)?;
        }
        Ok(())
    }

    /// Runs the first `n` pending rows through the block alone, paired with the tokens
    /// after their positions (`tokens[p + 1]`), in chunks.
    fn flush(&mut self, pass: &mut MtpPass, tokens: &[u32], n: usize) -> Result<(), EngineError> {
        let dim = self.dim;
        let mut done = 0;
        while done < n {
            let len = (n - done).min(PREFILL_CHUNK);
            pass.hidden.clear();
            self.stage(pass, tokens, done, len, None);
            pass.run(std::iter::once(&mut *self), HiddenFrom::Trunk)?;
            done += len;
        }
        self.pending.drain(..n * dim);
        self.pending_from += n;
        Ok(())
    }

    /// Appends pending rows `skip..skip + len` to `pass`'s rows (the pass's earlier
    /// sequences' before them) and sets the tokens they pair with: `tokens[p + 1]`, or
    /// `next` after the last token held.
    fn stage(
        &mut self,
        pass: &mut MtpPass,
        tokens: &[u32],
        skip: usize,
        len: usize,
        next: Option<u32>,
    ) {
        let dim = self.dim;
        let from = self.pending_from + skip;
        self.tokens.clear();
        for p in from..from + len {
            self.tokens
                .push(tokens.get(p + 1).copied().or(next).unwrap_or_default());
        }
        pass.hidden
            .extend_from_slice(&self.pending[skip * dim..(skip + len) * dim]);
    }

    /// Writes into `out` (cleared first) a draft of `want` tokens to follow `next`, the
    /// token sampled after `tokens` (every token the sequence holds). Nothing when
    /// `want` is 0 or the trunk's hidden state of the last position is missing.
    pub fn draft(
        &mut self,
        pass: &mut MtpPass,
        tokens: &[u32],
        next: u32,
        want: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), EngineError> {
        let mut job = [DraftJob {
            drafter: self,
            tokens,
            next,
            want,
            out,
        }];
        draft_batch(pass, &mut job)
    }
}

/// Drafts for several sequences at once (a server's): every pass of the MTP block runs all
/// the sequences still drafting — the first over each one's pending rows (the last paired
/// with its `next`), each further one over one chained row per sequence — so the block's
/// weights and the head are read once per drafted position, not once per sequence. Each
/// draft is the one the sequence would get alone ([`MtpDrafter::draft`]): a row's result
/// does not depend on the rest of the pass.
pub fn draft_batch(pass: &mut MtpPass, jobs: &mut [DraftJob<'_>]) -> Result<(), EngineError> {
    let dim = pass.model.config.dim;
    let vocab = pass.model.config.n_vocab;
    let mut any = false;
    for j in jobs.iter_mut() {
        j.out.clear();
        let d = &mut *j.drafter;
        let rows = d.pending.len() / dim;
        d.drafting = j.want > 0 && rows > 0 && d.pending_from + rows == j.tokens.len();
        d.chaining = false;
        // The shared first pass takes a verified step's rows per sequence; a longer wait
        // (the end of a prompt) goes through the block alone first.
        if d.drafting && rows > FIRST_PASS_ROWS {
            d.flush(pass, j.tokens, rows - FIRST_PASS_ROWS)?;
        }
        any |= d.drafting;
    }
    if !any {
        return Ok(());
    }

    pass.hidden.clear();
    for j in jobs.iter_mut().filter(|j| j.drafter.drafting) {
        let rows = j.drafter.pending.len() / dim;
        j.drafter.stage(pass, j.tokens, 0, rows, Some(j.next));
    }
    let drafters = jobs.iter_mut().map(|j| &mut *j.drafter);
    let logits = pass.run(drafters.filter(|d| d.drafting), HiddenFrom::Trunk)?;
    let mut row = 0;
    for (k, j) in jobs.iter_mut().filter(|j| j.drafter.drafting).enumerate() {
        let d = &mut *j.drafter;
        j.out.push(argmax(&logits[k * vocab..(k + 1) * vocab]));
        let rows = d.pending.len() / dim;
        row += rows;
        d.last_row = row - 1;
        d.pending.clear();
        d.pending_from += rows;
        d.confirmed = d.kv.len();
    }

    // Each further token chains on the block's own output and the token it just drafted.
    loop {
        pass.hidden.clear();
        let mut chained = 0;
        for j in jobs.iter_mut() {
            let d = &mut *j.drafter;
            d.chaining = d.drafting && j.out.len() < j.want && d.kv.len() < d.kv.n_ctx();
            if !d.chaining {
                continue;
            }
            let prev = &pass.state.hidden(dim)[d.last_row * dim..(d.last_row + 1) * dim];
            pass.hidden.extend_from_slice(prev);
            d.tokens.clear();
            d.tokens.extend(j.out.last().copied());
            d.last_row = chained;
            chained += 1;
        }
        if chained == 0 {
            break;
        }
        let drafters = jobs.iter_mut().map(|j| &mut *j.drafter);
        let logits = pass.run(drafters.filter(|d| d.chaining), HiddenFrom::Nextn)?;
        for (k, j) in jobs.iter_mut().filter(|j| j.drafter.chaining).enumerate() {
            j.out.push(argmax(&logits[k * vocab..(k + 1) * vocab]));
        }
    }
    for j in jobs.iter_mut().filter(|j| j.drafter.drafting) {
        let d = &mut *j.drafter;
        d.kv.truncate(d.confirmed);
    }
    Ok(())
}
