//! Llama-family models, including Mixtral (routed experts: softmax over all experts,
//! top-k, weights renormalised — the same as a softmax over the selected logits).

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Llama, n_vocab)?;
    c.rope = hp.rope(
        hp.opt_usize("rope.dimension_count")?.unwrap_or(c.head_dim),
        RopeMode::Norm,
    )?;
    c.moe = hp.moe(Gating::Softmax, true)?;
    Ok(c)
}
