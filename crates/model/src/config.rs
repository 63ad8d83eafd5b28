//! Hyper-parameters: everything about a model's shapes and math that the forward pass
//! needs, read once from GGUF metadata by the architecture files in `arch/`.

use kernels::activation::Glu;
use kernels::rope::RopeParams;

/// The architecture families we run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// DeepSeek-V2/V2-Lite/V2.5/V3/R1, Kimi-K2, Moonlight: MLA attention + MoE.
    Deepseek2,
    /// DeepSeek-V3.2 (llama.cpp `deepseek32`): DeepSeek-V3 plus DeepSeek Sparse Attention,
    /// a lightning indexer choosing the cached positions each query's MLA attends to.
    Deepseek32,
    /// Qwen3-MoE: GQA with per-head q/k RMSNorm, MoE with renormalised top-k.
    Qwen3Moe,
    /// Qwen2-MoE: GQA with q/k/v biases, MoE + sigmoid-gated shared expert.
    Qwen2Moe,
    /// Llama family, including Mixtral (MoE when the file has experts).
    Llama,
    /// Dense Qwen2/Qwen2.5: GQA with q/k/v biases.
    Qwen2,
    /// GLM-4.5/4.6/4.7, GLM-4.5-Air: GQA with partial RoPE and q/k/v biases, DeepSeek-V3
    /// style sigmoid routing with a shared expert, leading dense layers.
    Glm4Moe,
    /// MiniMax-M2/M2.1/M2.5: GQA with q/k RMSNorm over all heads, partial RoPE, sigmoid
    /// routing, no shared expert.
    MinimaxM2,
    /// gpt-oss (llama.cpp `gpt-oss`): sinks, sliding-window layers, biases, clamped SwiGLU.
    GptOss,
}

impl Arch {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Deepseek2 => "deepseek2",
            Arch::Deepseek32 => "deepseek32",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Qwen2Moe => "qwen2moe",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Glm4Moe => "glm4moe",
            Arch::MinimaxM2 => "minimax-m2",
            Arch::GptOss => "gpt-oss",
        }
    }
}

/// How router logits become expert scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gating {
    /// softmax over all experts.
    Softmax,
    /// independent sigmoid per expert (DeepSeek-V3).
    Sigmoid,
}

impl Gating {
    /// From GGUF's `expert_gating_func` (llama.cpp's `LLAMA_EXPERT_GATING_FUNC_TYPE`).
    pub fn from_gguf(v: usize) -> Option<Gating> {
        match v {
            1 => Some(Gating::Softmax),
            2 => Some(Gating::Sigmoid),
            _ => None,
        }
    }

    /// The `expert_gating_func` value that says this.
    pub fn gguf_value(self) -> usize {
        match self {
            Gating::Softmax => 1,
            Gating::Sigmoid => 2,
        }
    }
}

/// RMSNorm of the queries and keys before RoPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    /// None required; per-head norms are still applied when the file has them (GLM-4.5's
    /// are optional).
    None,
    /// Each head normalised on its own, weights of `head_dim` (Qwen3).
    PerHead,
    /// All heads of a token normalised together, weights of `n_head·head_dim` for q and
    /// `n_head_kv·head_dim` for k (MiniMax-M2).
    AllHeads,
}

/// Mixture-of-experts routing and shapes.
#[derive(Clone, Debug)]
pub struct MoeConfig {
    /// Routed experts per MoE layer.
    pub n_expert: usize,
    /// Experts used per token (k); `--experts-per-token` may lower it.
    pub n_expert_used: usize,
    /// Hidden width of one routed expert.
    pub expert_ffn: usize,
    /// Number of shared experts (DeepSeek) — their FFN is stored fused, `n_shared × expert_ffn` wide
    /// (or `shared_ffn` where the file says so).
    pub n_shared: usize,
    /// Hidden width of the (fused) shared expert FFN, 0 if none.
    pub shared_ffn: usize,
    /// Score function.
    pub gating: Gating,
    /// Renormalise the selected experts' weights to sum to 1.
    pub norm_topk: bool,
    /// Multiply the routed weights by this (DeepSeek `routed_scaling_factor`).
    pub weights_scale: f32,
    /// Group-limited routing: experts are split in `n_group` groups, only the best
    /// `topk_group` groups compete (DeepSeek-V3); 1/1 disables it.
    pub n_group: usize,
    pub topk_group: usize,
    /// The first `leading_dense` layers have a dense FFN instead of experts.
    pub leading_dense: usize,
    /// How an expert's gate and up combine (gpt-oss: the clamped SwiGLU).
    pub act: Glu,
}

/// Sliding-window attention layers (gpt-oss: every other layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Positions a query sees on a sliding layer, itself included.
    pub window: usize,
    /// Per layer: whether it slides (the others attend to the whole context).
    pub layers: Vec<bool>,
}

/// DeepSeek's multi-head latent attention shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlaConfig {
    /// Rank of the query compression (`None`: a plain `attn_q` projection, as V2-Lite).
    pub q_lora_rank: Option<usize>,
    /// Rank of the compressed KV latent (512 for the real models).
    pub kv_lora_rank: usize,
    /// Per-head query/key dimensions without and with rotary position.
    pub qk_nope: usize,
    pub qk_rope: usize,
    /// Per-head value dimension.
    pub v_head: usize,
    /// DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2), `None` for dense MLA.
    pub indexer: Option<IndexerConfig>,
}

/// The lightning indexer of DeepSeek Sparse Attention: `n_head` small query heads of
/// `head_dim` score every cached position against one shared key per position; each
/// query attends to the `top_k` best positions (all of them while it has no more).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexerConfig {
    pub n_head: usize,
    pub head_dim: usize,
    pub top_k: usize,
}

/// All shapes and constants of one model.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Residual stream width.
    pub dim: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head key and value widths of the GQA attention (for MLA see [`MlaConfig`]).
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Dense FFN hidden width.
    pub ffn_dim: usize,
    pub rms_eps: f32,
    /// Rotary embedding of the attention (for MLA it applies to the `qk_rope` part).
    pub rope: RopeParams,
    /// Multiplier of q·k before softmax.
    pub kq_scale: f32,
    /// Longest context the model was trained for.
    pub n_ctx_train: usize,
    /// q, k, v projections carry biases.
    pub qkv_bias: bool,
    /// RMSNorm of q and k before RoPE (Qwen3 per head, MiniMax-M2 over all heads).
    pub qk_norm: QkNorm,
    /// Next-token-prediction (MTP) blocks the file carries after the `n_layer` blocks
    /// of the forward pass (GLM-4.5's `nextn_predict_layers`): only `--spec-type mtp`
    /// runs the first ([`crate::Model::nextn`]).
    pub nextn_layers: usize,
    pub moe: Option<MoeConfig>,
    pub mla: Option<MlaConfig>,
    /// Sliding-window layers, `None` when every layer sees the whole context.
    pub swa: Option<SlidingWindow>,
}

impl Config {
    /// The window of layer `il` if it is a sliding-window layer.
    pub fn window(&self, il: usize) -> Option<usize> {
        self.swa
            .as_ref()
            .filter(|s| s.layers.get(il).copied().unwrap_or(false))
            .map(|s| s.window)
    }

    /// Whether layer `il` has routed experts.
    pub fn is_moe_layer(&self, il: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| il >= m.leading_dense)
    }
}
