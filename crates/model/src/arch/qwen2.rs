//! Dense Qwen2 / Qwen2.5 (our real-weights test model): GQA with q/k/v biases, NEOX RoPE.

use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Qwen2, n_vocab)?;
    c.rope = hp.rope(
        hp.opt_usize("rope.dimension_count")?.unwrap_or(c.head_dim),
        RopeMode::Neox,
    )?;
    c.qkv_bias = true;
    Ok(c)
}
