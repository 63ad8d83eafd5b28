//! The stages of a transformer block. Every stage has the same contract: it reads `xb`,
//! the normalised hidden states of the batch (`n × dim`, token-major), and writes its
//! residual contribution to `out` (`n × dim`, overwritten), which the layer loop in
//! [`crate::forward`] adds to the residual stream. Attention stages also append the
//! batch's keys/values (or latents) to each sequence's cache and read it back.
//!
//! Each stage owns a scratch struct: buffers sized from the model's shapes and the
//! largest batch ([`crate::RunState::reserve`]), so that steady-state steps do not
//! allocate. Weights ([`crate::weights`]), shapes ([`crate::Config`]) and these buffers
//! stay apart, as in llama2.c.
//!
//! - [`attention`]: grouped-query attention (Llama, Qwen2, Qwen2-MoE, Qwen3-MoE);
//! - [`mla`]: DeepSeek's multi-head latent attention, absorbed or decompressed, with
//!   DeepSeek-V3.2's lightning [`indexer`] choosing the positions a query attends to;
//! - [`ffn`]: the SiLU-gated dense FFN (dense layers, shared experts);
//! - [`moe`]: routing, the routed experts (`kernels::moe`) and the shared expert.

pub mod attention;
pub mod ffn;
pub mod indexer;
pub mod mla;
pub mod moe;

use kernels::ThreadPool;

use crate::forward::BatchSeq;
use crate::linear::Linear;
use crate::Config;

/// What every stage uses besides its weights and scratch: the shapes, the thread pool
/// and the matmul context (mode and activation scratch, shared by all stages).
pub struct StageCtx<'a> {
    pub config: &'a Config,
    pub pool: &'a ThreadPool,
    pub linear: &'a mut Linear,
}

/// The batch as attention sees it: the (sequence, position) of each token row, and per
/// sequence its cache and new tokens (rows of a sequence are contiguous, in order).
pub struct Batch<'b, 's> {
    pub rows: &'b [(usize, usize)],
    pub seqs: &'b mut [BatchSeq<'s>],
}

/// Grows `v` to at least `n` values (allocating only the first time a size is seen) and
/// returns the first `n`.
pub(crate) fn buf<T: Clone + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}
