//! One file per architecture family: each reads its hyper-parameters from the GGUF
//! metadata and binds its tensors. The forward pass (`forward.rs`) is shared; what
//! differs between families is data in [`Config`] and the variants of
//! [`Attention`]/[`Ffn`] they bind.

pub mod deepseek2;
pub mod deepseek32;
pub mod glm4moe;
pub mod gpt_oss;
pub mod llama;
pub mod minimax_m2;
pub mod qwen2;
pub mod qwen2moe;
pub mod qwen3moe;

use gguf::Metadata;
use kernels::rope::{RopeMode, RopeParams};

use crate::config::{Arch, Config, Gating, MoeConfig, QkNorm};
use crate::weights::{Attention, Binder, ExpertBiasWeights, Ffn, GqaWeights, MoeFfn};
use crate::ModelError;

/// Typed access to the `{arch}.*` keys.
pub(crate) struct Hparams<'a> {
    pub md: &'a Metadata,
    pub arch: &'a str,
}

impl Hparams<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    pub fn usize(&self, k: &str) -> Result<usize, ModelError> {
        Ok(self.md.u32(&self.key(k))? as usize)
    }
    pub fn opt_usize(&self, k: &str) -> Result<Option<usize>, ModelError> {
        Ok(self.md.opt_u32(&self.key(k))?.map(|v| v as usize))
    }
    pub fn opt_f32(&self, k: &str) -> Result<Option<f32>, ModelError> {
        Ok(self.md.opt_f32(&self.key(k))?)
    }
    pub fn opt_bool(&self, k: &str) -> Result<Option<bool>, ModelError> {
        Ok(self.md.opt_bool(&self.key(k))?)
    }
    pub fn opt_str(&self, k: &str) -> Result<Option<&str>, ModelError> {
        Ok(self.md.opt_str(&self.key(k))?)
    }

    /// RoPE with the file's scaling settings (none, linear or YaRN) as llama.cpp reads them.
    pub fn rope(&self, n_dims: usize, mode: RopeMode) -> Result<RopeParams, ModelError> {
        let mut p = RopeParams::new(
            n_dims,
            mode,
            self.opt_f32("rope.freq_base")?.unwrap_or(10000.0),
        );
        let scaling = self
            .opt_str("rope.scaling.type")?
            .unwrap_or("none")
            .to_string();
        let factor = match self.opt_f32("rope.scaling.factor")? {
            Some(f) => f,
            None => self.opt_f32("rope.scale_linear")?.unwrap_or(1.0),
        };
        if scaling != "none" && factor > 0.0 {
            p.freq_scale = 1.0 / factor;
        }
        p.ext_factor = if scaling == "yarn" { 1.0 } else { 0.0 };
        p.attn_factor = self.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0);
        p.beta_fast = self.opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0);
        p.beta_slow = self.opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0);
        let orig = match self.opt_usize("rope.scaling.original_context_length")? {
            Some(n) => n,
            None => self.usize("context_length")?,
        };
        p.n_ctx_orig = orig as u32;
        Ok(p)
    }

    /// The settings every family shares: widths, heads, norm epsilon, context.
    pub fn base(&self, arch: crate::Arch, n_vocab: usize) -> Result<Config, ModelError> {
        let dim = self.usize("embedding_length")?;
        let n_head = self.usize("attention.head_count")?;
        let n_head_kv = self.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let bad = |problem: String| ModelError::BadConfig {
            file: self.md.file().to_string(),
            problem,
        };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad(format!(
                "{n_head} attention heads cannot share {n_head_kv} KV heads"
            )));
        }
        let head_dim = self
            .opt_usize("attention.key_length")?
            .unwrap_or(dim / n_head);
        let head_dim_v = self
            .opt_usize("attention.value_length")?
            .unwrap_or(head_dim);
        let n_layer = self.usize("block_count")?;
        if dim == 0 || n_layer == 0 || head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!(
                "invalid shapes: embedding {dim}, {n_layer} layers, head dim {head_dim}"
            )));
        }
        let rms_eps = self
            .opt_f32("attention.layer_norm_rms_epsilon")?
            .unwrap_or(1e-6);
        Ok(Config {
            arch,
            n_vocab,
            dim,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            ffn_dim: self.opt_usize("feed_forward_length")?.unwrap_or(0),
            rms_eps,
            rope: RopeParams::new(head_dim, RopeMode::Norm, 10000.0),
            kq_scale: 1.0 / (head_dim as f32).sqrt(),
            n_ctx_train: self.usize("context_length")?,
            qkv_bias: false,
            qk_norm: QkNorm::None,
            nextn_layers: 0,
            moe: None,
            mla: None,
            swa: None,
        })
    }

    fn bad(&self, problem: String) -> ModelError {
        ModelError::BadConfig {
            file: self.md.file().to_string(),
            problem,
        }
    }

    /// The rotated width of a head: `rope.dimension_count` where it is a part of the
    /// head (GLM-4.5, MiniMax-M2), else the whole head.
    pub fn partial_rope_dims(&self, head_dim: usize) -> Result<usize, ModelError> {
        let n = self.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if n == 0 || n % 2 != 0 || n > head_dim {
            return Err(self.bad(format!(
                "rope.dimension_count {n} must be even and at most the head dim {head_dim}"
            )));
        }
        Ok(n)
    }

    /// The score function of the router: `expert_gating_func`, or `default` without it.
    pub fn gating(&self, default: Gating) -> Result<Gating, ModelError> {
        match self.opt_usize("expert_gating_func")? {
            None => Ok(default),
            Some(g) => Gating::from_gguf(g).ok_or_else(|| {
                self.bad(format!(
                    "expert_gating_func {g} is not 1 (softmax) or 2 (sigmoid)"
                ))
            }),
        }
    }

    /// Next-token-prediction blocks counted in `block_count` after the trunk
    /// (`nextn_predict_layers`); at least one trunk layer must remain.
    pub fn nextn_layers(&self, block_count: usize) -> Result<usize, ModelError> {
        let n = self.opt_usize("nextn_predict_layers")?.unwrap_or(0);
        if n >= block_count {
            return Err(self.bad(format!(
                "nextn_predict_layers {n} leaves no layer of the {block_count} blocks to run"
            )));
        }
        Ok(n)
    }

    /// Group-limited routing (`expert_group_count` / `expert_group_used_count`, 1/1
    /// without the keys), checked against the expert counts.
    pub fn expert_groups(&self, m: &mut MoeConfig) -> Result<(), ModelError> {
        m.n_group = self.opt_usize("expert_group_count")?.unwrap_or(1).max(1);
        m.topk_group = self
            .opt_usize("expert_group_used_count")?
            .unwrap_or(1)
            .max(1);
        if !m.n_expert.is_multiple_of(m.n_group)
            || m.topk_group > m.n_group
            || m.topk_group * (m.n_expert / m.n_group) < m.n_expert_used
        {
            return Err(self.bad(format!(
                "{} experts cannot be split in {} groups of which {} are used",
                m.n_expert, m.n_group, m.topk_group
            )));
        }
        Ok(())
    }

    /// Routed-expert settings shared by the GQA MoE families.
    pub fn moe(&self, gating: Gating, norm_topk: bool) -> Result<Option<MoeConfig>, ModelError> {
        let n_expert = self.opt_usize("expert_count")?.unwrap_or(0);
        if n_expert == 0 {
            return Ok(None);
        }
        let n_expert_used = self.usize("expert_used_count")?;
        if n_expert_used == 0 || n_expert_used > n_expert {
            return Err(ModelError::BadConfig {
                file: self.md.file().to_string(),
                problem: format!("expert_used_count {n_expert_used} must be in 1..={n_expert}"),
            });
        }
        let ffn = self.opt_usize("feed_forward_length")?.unwrap_or(0);
        Ok(Some(MoeConfig {
            n_expert,
            n_expert_used,
            expert_ffn: self.opt_usize("expert_feed_forward_length")?.unwrap_or(ffn),
            n_shared: 0,
            shared_ffn: 0,
            gating,
            norm_topk,
            weights_scale: 1.0,
            n_group: 1,
            topk_group: 1,
            leading_dense: 0,
            act: kernels::activation::Glu::Silu,
        }))
    }
}

/// Binds the grouped-query attention of layer `il`.
pub(crate) fn bind_gqa(b: &Binder, c: &Config, il: usize) -> Result<Attention, ModelError> {
    let p = |n: &str| format!("blk.{il}.{n}");
    let (q, kv, v) = (
        c.n_head * c.head_dim,
        c.n_head_kv * c.head_dim,
        c.n_head_kv * c.head_dim_v,
    );
    let (q_norm, k_norm) = bind_qk_norms(b, c, il)?;
    Ok(Attention::Gqa(GqaWeights {
        bo: b.opt_vector(&p("attn_output.bias"), c.dim)?,
        sinks: b.opt_vector(&p("attn_sinks.weight"), c.n_head)?,
        wq: b.matrix(&p("attn_q.weight"), c.dim, q)?,
        wk: b.matrix(&p("attn_k.weight"), c.dim, kv)?,
        wv: b.matrix(&p("attn_v.weight"), c.dim, v)?,
        wo: b.matrix(&p("attn_output.weight"), c.n_head * c.head_dim_v, c.dim)?,
        bq: if c.qkv_bias {
            Some(b.vector(&p("attn_q.bias"), q)?)
        } else {
            b.opt_vector(&p("attn_q.bias"), q)?
        },
        bk: if c.qkv_bias {
            Some(b.vector(&p("attn_k.bias"), kv)?)
        } else {
            b.opt_vector(&p("attn_k.bias"), kv)?
        },
        bv: if c.qkv_bias {
            Some(b.vector(&p("attn_v.bias"), v)?)
        } else {
            b.opt_vector(&p("attn_v.bias"), v)?
        },
        q_norm,
        k_norm,
    }))
}

/// A layer's q and k RMSNorm weights, if it has them.
type QkNormWeights = (Option<Vec<f32>>, Option<Vec<f32>>);

/// The q and k RMSNorm weights of layer `il` as `c.qk_norm` says: required per head or
/// over all heads, or optional per-head ones (both or neither).
fn bind_qk_norms(b: &Binder, c: &Config, il: usize) -> Result<QkNormWeights, ModelError> {
    let (q, k) = (
        format!("blk.{il}.attn_q_norm.weight"),
        format!("blk.{il}.attn_k_norm.weight"),
    );
    let hd = c.head_dim;
    Ok(match c.qk_norm {
        QkNorm::PerHead => (Some(b.vector(&q, hd)?), Some(b.vector(&k, hd)?)),
        QkNorm::AllHeads => (
            Some(b.vector(&q, c.n_head * hd)?),
            Some(b.vector(&k, c.n_head_kv * hd)?),
        ),
        // Present in the file or not; one without the other is the missing one's error.
        QkNorm::None if b.has(&q) || b.has(&k) => {
            (Some(b.vector(&q, hd)?), Some(b.vector(&k, hd)?))
        }
        QkNorm::None => (None, None),
    })
}

/// Binds the FFN of layer `il`: dense, or routed experts (+ shared expert) by the config.
pub(crate) fn bind_ffn(b: &Binder, c: &Config, il: usize) -> Result<Ffn, ModelError> {
    let Some(m) = c.moe.as_ref().filter(|_| c.is_moe_layer(il)) else {
        return Ok(Ffn::Dense(b.dense_ffn(il, "", c.dim, c.ffn_dim)?));
    };
    let p = |n: &str| format!("blk.{il}.{n}");
    if !b.has(&p("ffn_gate_exps.weight")) && b.has(&p("ffn_gate.0.weight")) {
        return Err(ModelError::BadConfig {
            file: b.file.name().to_string(),
            problem: "experts stored as separate per-expert tensors (an old GGUF layout); re-convert the model with a current llama.cpp".into(),
        });
    }
    let shared = if m.shared_ffn > 0 {
        Some(b.dense_ffn(il, "_shexp", c.dim, m.shared_ffn)?)
    } else {
        None
    };
    let ffn = m.expert_ffn;
    let expert_bias = if b.has(&p("ffn_gate_exps.bias")) {
        Some(ExpertBiasWeights {
            gate: b.array(&p("ffn_gate_exps.bias"), &[ffn, m.n_expert])?,
            up: b.array(&p("ffn_up_exps.bias"), &[ffn, m.n_expert])?,
            down: b.array(&p("ffn_down_exps.bias"), &[c.dim, m.n_expert])?,
        })
    } else {
        None
    };
    Ok(Ffn::Moe(MoeFfn {
        router_bias: b.opt_vector(&p("ffn_gate_inp.bias"), m.n_expert)?,
        expert_bias,
        router: b.matrix(&p("ffn_gate_inp.weight"), c.dim, m.n_expert)?,
        selection_bias: b.opt_vector(&p("exp_probs_b.bias"), m.n_expert)?,
        gate_exps: b.stack(&p("ffn_gate_exps.weight"), c.dim, m.expert_ffn, m.n_expert)?,
        up_exps: b.stack(&p("ffn_up_exps.weight"), c.dim, m.expert_ffn, m.n_expert)?,
        down_exps: b.stack(&p("ffn_down_exps.weight"), m.expert_ffn, c.dim, m.n_expert)?,
        shared,
        shared_gate: b.opt_vector(&p("ffn_gate_inp_shexp.weight"), c.dim)?,
    }))
}

/// The name of layer `il`'s pre-FFN RMSNorm: `ffn_norm`, except GLM-4.5's, which
/// llama.cpp names after HF's `post_attention_layernorm`.
pub(crate) fn ffn_norm_name(arch: Arch, il: usize) -> String {
    match arch {
        // Both name the FFN input norm after HF's `post_attention_layernorm`.
        Arch::Glm4Moe | Arch::GptOss => format!("blk.{il}.post_attention_norm.weight"),
        _ => format!("blk.{il}.ffn_norm.weight"),
    }
}
