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
use model::{HiddenFrom, KvCache, Model, RunState};

use crate::{EngineError, PREFILL_CHUNK};

/// The MTP block's cache and buffers for one generation.
pub struct MtpDrafter {
    model: Arc<Model>,
    pool: Arc<ThreadPool>,
    state: RunState,
    kv: KvCache,
    /// Trunk hidden states (before the final norm) not yet in the block's cache, of the
    /// trunk positions `pending_from..`, `dim` values each.
    pending: Vec<f32>,
    pending_from: usize,
    /// The tokens paired with the pending rows, and the last chained output.
    tokens: Vec<u32>,
    chained: Vec<f32>,
}

impl MtpDrafter {
    /// A drafter for `model`'s MTP block with room for `n_ctx` positions (the sequence's
    /// context); an error saying why when the model has no usable block.
    pub fn new(
        model: Arc<Model>,
        pool: Arc<ThreadPool>,
        mode: model::MatmulMode,
        types: model::KvTypes,
        n_ctx: usize,
    ) -> Result<MtpDrafter, EngineError> {
        let kv = model.nextn_cache(types, n_ctx)?;
        // Sized up front for the largest pass (a chunk of pending rows) and the most rows
        // that wait (a chunk, plus a step's while drafting pauses), so that a drafter in a
        // steady state allocates nothing.
        let mut state = RunState::new(mode);
        let limits = model::BatchLimits {
            tokens: PREFILL_CHUNK,
            seqs: 1,
            ctx: n_ctx,
            logit_rows: 1,
        };
        model.reserve_nextn(&mut state, &pool, limits)?;
        let dim = model.config.dim;
        Ok(MtpDrafter {
            state,
            kv,
            pending: Vec::with_capacity((PREFILL_CHUNK + model::VERIFY_STEP_MAX) * dim),
            pending_from: 0,
            tokens: Vec::with_capacity(PREFILL_CHUNK),
            chained: Vec::with_capacity(dim),
            model,
            pool,
        })
    }

    /// Positions in the block's cache.
    pub fn cached(&self) -> usize {
        self.kv.len()
    }

    /// Takes the hidden states of the last positions the trunk fed and kept (`hidden`:
    /// one row per position, the last of `tokens`, every token the sequence holds). Runs
    /// the positions whose next token is known through the block once a prompt's worth
    /// are waiting; the rest wait for [`draft`](Self::draft).
    pub fn observe(&mut self, hidden: &[f32], tokens: &[u32]) -> Result<(), EngineError> {
        let dim = self.model.config.dim;
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
            self.flush(tokens, known, None)?;
        }
        Ok(())
    }

    /// Runs the first `n` pending rows through the block, paired with the tokens after
    /// their positions (`tokens[p + 1]`, or `next` after the last token held), in chunks;
    /// returns the logits of the last row.
    fn flush(
        &mut self,
        tokens: &[u32],
        n: usize,
        next: Option<u32>,
    ) -> Result<&[f32], EngineError> {
        let dim = self.model.config.dim;
        let mut done = 0;
        while done < n {
            let len = (n - done).min(PREFILL_CHUNK);
            let from = self.pending_from + done;
            self.tokens.clear();
            for p in from..from + len {
                self.tokens
                    .push(tokens.get(p + 1).copied().or(next).unwrap_or_default());
            }
            self.model.forward_nextn(
                &self.pool,
                &mut self.state,
                &mut self.kv,
                &self.pending[done * dim..(done + len) * dim],
                HiddenFrom::Trunk,
                &self.tokens,
            )?;
            done += len;
        }
        self.pending.drain(..n * dim);
        self.pending_from += n;
        Ok(self.state.logits())
    }

    /// Writes into `out` (cleared first) a draft of `want` tokens to follow `next`, the
    /// token sampled after `tokens` (every token the sequence holds). Nothing when
    /// `want` is 0 or the trunk's hidden state of the last position is missing.
    pub fn draft(
        &mut self,
        tokens: &[u32],
        next: u32,
        want: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), EngineError> {
        out.clear();
        let dim = self.model.config.dim;
        let rows = self.pending.len() / dim;
        if want == 0 || rows == 0 || self.pending_from + rows != tokens.len() {
            return Ok(());
        }
        let first = argmax(self.flush(tokens, rows, Some(next))?);
        out.push(first);
        // The positions chained from here on are the block's guesses: dropped after.
        let confirmed = self.kv.len();
        while out.len() < want && self.kv.len() < self.kv.n_ctx() {
            let last = out[out.len() - 1];
            self.chained.clear();
            let rows = self.state.hidden(dim).rchunks_exact(dim);
            self.chained
                .extend_from_slice(rows.into_iter().next().unwrap_or_default());
            let logits = self.model.forward_nextn(
                &self.pool,
                &mut self.state,
                &mut self.kv,
                &self.chained,
                HiddenFrom::Nextn,
                std::slice::from_ref(&last),
            )?;
            out.push(argmax(logits));
        }
        self.kv.truncate(confirmed);
        Ok(())
    }
}

/// The index of the largest value (the first of equals).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
