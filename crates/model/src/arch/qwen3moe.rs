//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): GQA with per-head q/k RMSNorm and a head
//! width independent of the hidden size, NEOX RoPE, softmax routing with the top-k
//! weights always renormalised, no shared expert, embeddings possibly tied.

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating, QkNorm};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Qwen3Moe, n_vocab)?;
    c.rope = hp.rope(
        hp.opt_usize("rope.dimension_count")?.unwrap_or(c.head_dim),
        RopeMode::Neox,
    )?;
    c.qk_norm = QkNorm::PerHead;
    c.moe = hp.moe(Gating::Softmax, true)?;
    Ok(c)
}
