//! DeepSeek-V3.2 (llama.cpp `deepseek32`): DeepSeek-V3 (see `deepseek2`: MLA,
//! DeepSeekMoE with sigmoid routing) plus DeepSeek Sparse Attention (DSA).
//!
//! - Each layer has a lightning indexer (`blk.N.indexer.*`, keys
//!   `attention.indexer.{head_count,key_length,top_k}`): its queries come from the same
//!   normalised compressed query as MLA's (`attn_q_b`'s input), its one key per position
//!   from the attention input through `indexer.attn_k` and a LayerNorm with bias; both
//!   rotated (NEOX layout, unlike MLA's) on their first `qk_rope` values. Each query then
//!   attends to the `top_k` cached positions the indexer scores highest
//!   (`stage::indexer`), in either form of MLA; with at most `top_k` positions that is
//!   dense MLA. The indexer's keys are cached per position next to the latents.
//! - The files carry `nextn_predict_layers` next-token-prediction (MTP) blocks after the
//!   trunk, counted in `block_count` (`Config::nextn_layers`): outside the forward pass,
//!   as llama.cpp does without `--mtp`; the first is bound beside it and drafts for
//!   `--spec-type mtp` (`forward::nextn`; not tested on a file: none is small enough).
//! - The reference implementation rotates the indexer's queries and keys by a Hadamard
//!   matrix and scores in FP8; HF's definition skips both (the rotation is orthogonal, so
//!   it does not change a dot product), and so do we.

use super::{deepseek2, Hparams};
use crate::config::{Arch, Config, IndexerConfig};
use crate::weights::{Attention, Binder, IndexerWeights};
use crate::ModelError;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = deepseek2::config(hp, n_vocab)?;
    c.arch = Arch::Deepseek32;
    c.nextn_layers = hp.nextn_layers(c.n_layer)?;
    c.n_layer -= c.nextn_layers;
    let bad = |problem: String| ModelError::BadConfig {
        file: hp.md.file().to_string(),
        problem,
    };
    let ix = IndexerConfig {
        n_head: hp.usize("attention.indexer.head_count")?,
        head_dim: hp.usize("attention.indexer.key_length")?,
        top_k: hp.usize("attention.indexer.top_k")?,
    };
    let m = c.mla.as_mut().expect("deepseek2 config has MLA");
    if ix.n_head == 0 || ix.top_k == 0 || ix.head_dim < m.qk_rope {
        return Err(bad(format!(
            "indexer of {} heads of {} values (RoPE on {}) selecting {} positions",
            ix.n_head, ix.head_dim, m.qk_rope, ix.top_k
        )));
    }
    if m.q_lora_rank.is_none() {
        return Err(bad(
            "the indexer's queries need the compressed query (attention.q_lora_rank)".into(),
        ));
    }
    m.indexer = Some(ix);
    Ok(c)
}

/// Binds layer `il`'s MLA (as DeepSeek-V3's) and its lightning indexer.
pub(crate) fn bind(b: &Binder, c: &Config, il: usize) -> Result<Attention, ModelError> {
    let m = c.mla.as_ref().expect("deepseek32 config has MLA");
    let ix = m
        .indexer
        .as_ref()
        .expect("deepseek32 config has an indexer");
    let Attention::Mla(mut a) = deepseek2::bind_mla(b, c, il)? else {
        unreachable!("bind_mla binds MLA")
    };
    let p = |n: &str| format!("blk.{il}.indexer.{n}");
    let q_lora = a.q.n_in;
    a.indexer = Some(Box::new(IndexerWeights {
        q_b: b.matrix(&p("attn_q_b.weight"), q_lora, ix.n_head * ix.head_dim)?,
        k: b.matrix(&p("attn_k.weight"), c.dim, ix.head_dim)?,
        k_norm: b.vector(&p("k_norm.weight"), ix.head_dim)?,
        k_norm_bias: b.vector(&p("k_norm.bias"), ix.head_dim)?,
        proj: b.matrix(&p("proj.weight"), c.dim, ix.n_head)?,
    }));
    Ok(Attention::Mla(a))
}
