//! gpt-oss (gpt-oss-20b / gpt-oss-120b; llama.cpp `gpt-oss`, `LLM_ARCH_OPENAI_MOE`).
//!
//! - Attention: GQA (64 query / 8 KV heads of 64) with biases on q, k, v and the output,
//!   NEOX RoPE with YaRN (factor 32 over 4096 positions) whose correction range is *not*
//!   rounded to whole pairs (HF's `truncate: false`, OpenAI's reference; ggml rounds it);
//!   an attention sink per head (`attn_sinks`, a logit joining the softmax denominator);
//!   every other layer — layers 0, 2, 4, … unless `attention.sliding_window_pattern`
//!   says otherwise — sees only the last `attention.sliding_window` (128) positions, and
//!   its KV cache holds only those (see `crate::kv`).
//! - The FFN input norm is `post_attention_norm` (HF's `post_attention_layernorm`).
//! - MoE: the router has a bias; the top-k router logits are softmaxed among themselves
//!   (= softmax over all, then renormalised over the chosen); every expert product has a
//!   bias; the activation is the clamped SwiGLU `min(g, 7)·σ(1.702·min(g, 7))·(clamp(u, ±7) + 1)`.
//!   The real files store the experts as MXFP4.

use kernels::activation::Glu;
use kernels::rope::RopeMode;

use super::Hparams;
use crate::config::{Arch, Config, Gating, SlidingWindow};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::GptOss, n_vocab)?;
    let bad = |problem: String| ModelError::BadConfig {
        file: hp.md.file().to_string(),
        problem,
    };
    c.rope = hp.rope(
        hp.opt_usize("rope.dimension_count")?.unwrap_or(c.head_dim),
        RopeMode::Neox,
    )?;
    c.rope.truncate_corr = false;
    c.qkv_bias = true;
    let mut moe = hp
        .moe(Gating::Softmax, true)?
        .ok_or_else(|| bad("gpt-oss without experts (no expert_count)".into()))?;
    moe.act = Glu::GPT_OSS;
    c.moe = Some(moe);

    let window = hp.usize("attention.sliding_window")?;
    if window == 0 {
        return Err(bad("attention.sliding_window is 0".into()));
    }
    let key = format!("{}.attention.sliding_window_pattern", hp.arch);
    let layers = match hp.md.get(&key) {
        // One flag per layer.
        Some(gguf::Value::Array(gguf::Array::Bool(flags))) => {
            if flags.len() != c.n_layer {
                return Err(bad(format!(
                    "{key} has {} flags for {} layers",
                    flags.len(),
                    c.n_layer
                )));
            }
            flags.clone()
        }
        // A period: in each group of n layers all but the last slide (llama.cpp's
        // `set_swa_pattern`); 2 when absent.
        _ => {
            let n = hp
                .opt_usize("attention.sliding_window_pattern")?
                .unwrap_or(2);
            (0..c.n_layer).map(|il| n == 0 || il % n < n - 1).collect()
        }
    };
    c.swa = Some(SlidingWindow { window, layers });
    Ok(c)
}
