//! GLM-4.5/4.6/4.7 and GLM-4.5-Air (`glm4moe`): GQA with q/k/v biases, NEOX RoPE on the
//! first half of each head only (`partial_rotary_factor` 0.5: `rope.dimension_count` <
//! head dim), optional per-head q/k RMSNorm (the 355B model has it, Air does not), and
//! DeepSeek-V3's MoE: sigmoid scores, the `exp_probs_b` correction bias for selection
//! only, group-limited top-k when the file says so, renormalised top-k weights
//! (`expert_weights_norm`), `expert_weights_scale` (`routed_scaling_factor`), one shared
//! expert, dense leading layers (`leading_dense_block_count`).
//!
//! - The pre-FFN norm is stored as `post_attention_norm` (HF's `post_attention_layernorm`
//!   under llama.cpp's GLM naming), not `ffn_norm`.
//! - The files carry `nextn_predict_layers` next-token-prediction (MTP) blocks after the
//!   trunk, counted in `block_count` (`Config::nextn_layers`): the forward pass runs
//!   `block_count - nextn_predict_layers` layers, as llama.cpp's does; the first MTP
//!   block is bound beside them (`Weights::nextn`) and drafts for `--spec-type mtp`
//!   (`forward::nextn`).

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Glm4Moe, n_vocab)?;
    c.nextn_layers = hp.nextn_layers(c.n_layer)?;
    c.n_layer -= c.nextn_layers;
    c.rope = hp.rope(hp.partial_rope_dims(c.head_dim)?, RopeMode::Neox)?;
    let gating = hp.gating(Gating::Sigmoid)?;
    let norm = hp.opt_bool("expert_weights_norm")?.unwrap_or(false);
    if let Some(mut m) = hp.moe(gating, norm)? {
        m.n_shared = hp.opt_usize("expert_shared_count")?.unwrap_or(0);
        m.shared_ffn = m.n_shared * m.expert_ffn;
        // 0 (or no key) means no scaling, as in llama.cpp.
        m.weights_scale = hp
            .opt_f32("expert_weights_scale")?
            .filter(|&s| s != 0.0)
            .unwrap_or(1.0);
        m.leading_dense = hp.opt_usize("leading_dense_block_count")?.unwrap_or(0);
        hp.expert_groups(&mut m)?;
        c.moe = Some(m);
    }
    Ok(c)
}
