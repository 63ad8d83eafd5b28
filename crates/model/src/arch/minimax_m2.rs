//! MiniMax-M2/M2.1/M2.5 (`minimax-m2`): GQA whose q and k RMSNorms span all heads of a
//! token at once (weights of `n_head·head_dim` and `n_head_kv·head_dim`, HF's
//! `qk_norm_type = "per_layer"`), NEOX RoPE on the first `rotary_dim` values of each
//! head (64 of 128 in the real model), and routed experts only: sigmoid scores, the
//! `exp_probs_b` correction bias for selection only, top-k weights always renormalised
//! (the GGUF carries no key for it; llama.cpp hard-codes it as HF does), no shared expert.

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating, QkNorm};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::MinimaxM2, n_vocab)?;
    c.rope = hp.rope(hp.partial_rope_dims(c.head_dim)?, RopeMode::Neox)?;
    c.qk_norm = QkNorm::AllHeads;
    let gating = hp.gating(Gating::Sigmoid)?;
    if let Some(mut m) = hp.moe(gating, true)? {
        // 0 (or no key) means no scaling, as in llama.cpp.
        m.weights_scale = hp
            .opt_f32("expert_weights_scale")?
            .filter(|&s| s != 0.0)
            .unwrap_or(1.0);
        hp.expert_groups(&mut m)?;
        c.moe = Some(m);
    }
    Ok(c)
}
