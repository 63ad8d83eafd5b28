//! One sequence: the tokens it holds, their KV cache, and activation buffers for running
//! it on its own. The scheduler batches many; `run`, `chat` and `bench` run one.

use std::sync::Arc;

use kernels::ThreadPool;
use model::{KvCache, Logits, Model, RunState};

use crate::EngineError;

/// Prompt tokens processed per forward pass (bounds the activation buffers).
pub const PREFILL_CHUNK: usize = 512;

/// One sequence: its tokens so far, KV cache and activation buffers.
pub struct Sequence {
    pub model: Arc<Model>,
    pool: Arc<ThreadPool>,
    pub kv: KvCache,
    state: RunState,
    /// Every token processed so far (prompt and generated); room for the whole context
    /// is reserved, so appending never allocates.
    pub tokens: Vec<u32>,
}

impl Sequence {
    pub(crate) fn new(
        model: Arc<Model>,
        pool: Arc<ThreadPool>,
        kv: KvCache,
        state: RunState,
    ) -> Sequence {
        let tokens = Vec::with_capacity(kv.n_ctx());
        Sequence {
            model,
            pool,
            kv,
            state,
            tokens,
        }
    }

    /// Bus traffic and GPU waits of this sequence's steps so far (`None`: no GPU tier).
    pub fn device_stats(&self) -> Option<model::backend::StreamStats> {
        self.state.device_stats()
    }

    /// The hidden states (the residual stream before the final norm) of every position
    /// the last step fed, in order (`dim` values each).
    pub fn hidden(&self) -> &[f32] {
        self.state.hidden(self.model.config.dim)
    }

    /// Processes `tokens` after what the sequence holds; returns the logits of the last
    /// position (or of every position of `tokens` with [`Logits::All`]).
    pub fn feed(&mut self, tokens: &[u32], which: Logits) -> Result<&[f32], EngineError> {
        Ok(self.feed_with_history(tokens, which)?.0)
    }

    /// [`feed`](Self::feed), also lending every token held (for the sampler's penalties)
    /// while the logits are borrowed.
    pub fn feed_with_history(
        &mut self,
        tokens: &[u32],
        which: Logits,
    ) -> Result<(&[f32], &[u32]), EngineError> {
        let logits =
            self.model
                .forward(&self.pool, &mut self.state, &mut self.kv, tokens, which)?;
        self.tokens.extend_from_slice(tokens);
        Ok((logits, &self.tokens))
    }

    /// Fills the cache to `to` positions with copies of the positions it holds, the
    /// tokens repeated alike (see [`model::KvCache::repeat_prefix`]: for benchmarks after
    /// a deep context, not for generating text).
    pub fn repeat_to(&mut self, to: usize) -> Result<(), EngineError> {
        self.kv.repeat_prefix(to)?;
        let held = self.tokens.len();
        self.tokens.resize(to, 0);
        kernels::kvdata::repeat(&mut self.tokens, held, to);
        Ok(())
    }

    /// Forgets everything from position `len` on (0 = start over); returns the positions
    /// kept, fewer than `len` when a sliding-window cache cannot go back that far
    /// ([`model::KvCache::truncate`]).
    pub fn truncate(&mut self, len: usize) -> usize {
        let kept = self.kv.truncate(len);
        self.tokens.truncate(kept);
        kept
    }

    /// Drops the tokens after the first `len` (a draft's rejected tokens, see
    /// [`crate::Verified::keep`]); an error if the cache cannot go back that far (a
    /// sliding-window ring: the step was longer than [`model::KvCache::ring_step`]).
    pub fn keep(&mut self, len: usize) -> Result<(), EngineError> {
        // Both would be the engine's bug, never the caller's input.
        let internal = |m: String| EngineError::Model(Arc::new(model::ModelError::Kernel(m)));
        if len > self.tokens.len() {
            return Err(internal(format!(
                "cannot keep {len} tokens of a sequence holding {}",
                self.tokens.len()
            )));
        }
        let kept = self.truncate(len);
        if kept != len {
            return Err(internal(format!(
                "the KV cache could not go back to {len} positions (it kept {kept})"
            )));
        }
        Ok(())
    }

    /// Positions left in the context.
    pub fn remaining(&self) -> usize {
        self.kv.n_ctx() - self.kv.len()
    }

    /// Tokens `prompt` shares with what the sequence holds, from the start.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Makes the sequence hold exactly `prompt`, reusing the longest common prefix of
    /// what it holds; returns the last position's logits, every token held and the number
    /// of reused tokens.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(&[f32], &[u32], usize), EngineError> {
        self.prefill_observed(prompt, |_, _| Ok(()))
    }

    /// [`prefill`](Self::prefill), calling `observe(hidden, tokens)` after each chunk with
    /// the chunk's hidden states ([`hidden`](Self::hidden)) and every token held then.
    pub fn prefill_observed(
        &mut self,
        prompt: &[u32],
        mut observe: impl FnMut(&[f32], &[u32]) -> Result<(), EngineError>,
    ) -> Result<(&[f32], &[u32], usize), EngineError> {
        check_prompt(prompt, self.kv.n_ctx())?;
        // The last prompt token is always run again: its logits are needed.
        let reuse = self.truncate(self.common_prefix(prompt).min(prompt.len() - 1));
        for chunk in prompt[reuse..].chunks(PREFILL_CHUNK) {
            self.feed(chunk, Logits::Last)?;
            observe(self.hidden(), &self.tokens)?;
        }
        Ok((self.state.logits(), &self.tokens, reuse))
    }
}

/// A prompt must hold at least one token and fit the context.
pub fn check_prompt(prompt: &[u32], n_ctx: usize) -> Result<(), EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::Input("the prompt is empty".into()));
    }
    if prompt.len() > n_ctx {
        return Err(EngineError::Input(format!(
            "the prompt has {} tokens, more than the context size {n_ctx}",
            prompt.len()
        )));
    }
    Ok(())
}
