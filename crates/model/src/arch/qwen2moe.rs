//! Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): GQA with q/k/v biases, NEOX RoPE; softmax
//! routing whose top-k weights are *not* renormalised, plus a shared expert scaled by
//! sigmoid(`ffn_gate_inp_shexp` · x).

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Qwen2Moe, n_vocab)?;
    c.rope = hp.rope(
        hp.opt_usize("rope.dimension_count")?.unwrap_or(c.head_dim),
        RopeMode::Neox,
    )?;
    c.qkv_bias = true;
    // llama.cpp hard-codes "no renormalisation" for this family; the file has no key for it.
    let mut moe = hp.moe(Gating::Softmax, false)?;
    if let Some(m) = moe.as_mut() {
        m.shared_ffn = hp
            .opt_usize("expert_shared_feed_forward_length")?
            .unwrap_or(0);
        m.n_shared = usize::from(m.shared_ffn > 0);
    }
    c.moe = moe;
    Ok(c)
}
