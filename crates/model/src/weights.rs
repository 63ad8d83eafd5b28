//! Weights: views into the mapped GGUF file, bound to layers by name and checked
//! against the hyper-parameters (llama2.c's `TransformerWeights`).

use std::sync::Arc;

use gguf::{GgmlType, Gguf};

use crate::ModelError;

/// A weight matrix (or a stack of them: experts, heads) stored in the file.
/// Row `r` of slab `s` holds `n_in` values: output `r` is `row · x`.
#[derive(Clone)]
pub struct Matrix {
    file: Arc<Gguf>,
    index: usize,
    pub ty: GgmlType,
    /// Row length (`ne[0]`).
    pub n_in: usize,
    /// Rows per slab (`ne[1]`).
    pub n_out: usize,
    /// Slabs (`ne[2]`: experts or heads), 1 for a plain matrix.
    pub n_slab: usize,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} [{} x {} x {}]", self.name(), self.ty, self.n_in, self.n_out, self.n_slab)
    }
}

impl Matrix {
    /// Tensor name in the file.
    pub fn name(&self) -> &str {
        &self.file.tensors()[self.index].name
    }
    /// All bytes of the tensor.
    pub fn data(&self) -> &[u8] {
        self.file.view(&self.file.tensors()[self.index]).data
    }
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.n_in as u64).unwrap_or(0) as usize
    }
    /// Bytes of slab `s` (expert or head `s`).
    pub fn slab(&self, s: usize) -> &[u8] {
        let n = self.row_bytes() * self.n_out;
        &self.data()[s * n..(s + 1) * n]
    }
    /// Bytes of the weights (for memory summaries).
    pub fn bytes(&self) -> usize {
        self.row_bytes() * self.n_out * self.n_slab
    }
}

/// Binds tensors of one file by name, checking shapes and types.
pub struct Binder<'a> {
    pub file: &'a Arc<Gguf>,
}

impl Binder<'_> {
    fn bad(&self, name: &str, problem: String) -> ModelError {
        ModelError::BadTensor { file: self.file.name().to_string(), name: name.to_string(), problem }
    }

    /// Whether the file has a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.file.get_tensor(name).is_some()
    }

    /// A matrix with `ne = [n_in, n_out]` (or `[n_in, n_out, n_slab]` through [`Self::stack`]).
    pub fn matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<Matrix, ModelError> {
        self.stack_opt_slab(name, n_in, n_out, None)
    }

    /// A stack of `n_slab` matrices, `ne = [n_in, n_out, n_slab]`.
    pub fn stack(&self, name: &str, n_in: usize, n_out: usize, n_slab: usize) -> Result<Matrix, ModelError> {
        self.stack_opt_slab(name, n_in, n_out, Some(n_slab))
    }

    /// [`Self::matrix`], or `None` when the tensor is absent.
    pub fn opt_matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<Option<Matrix>, ModelError> {
        if self.has(name) { self.matrix(name, n_in, n_out).map(Some) } else { Ok(None) }
    }

    fn stack_opt_slab(&self, name: &str, n_in: usize, n_out: usize, n_slab: Option<usize>) -> Result<Matrix, ModelError> {
        let index = self
            .file
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| gguf::GgufError::MissingTensor { file: self.file.name().to_string(), name: name.to_string() })?;
        let info = &self.file.tensors()[index];
        let want: Vec<u64> = match n_slab {
            None => vec![n_in as u64, n_out as u64],
            Some(s) => vec![n_in as u64, n_out as u64, s as u64],
        };
        // A trailing dimension of 1 is the same shape.
        let mut got = info.ne.clone();
        while got.len() > want.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got != want {
            return Err(self.bad(name, format!("shape (ne) is {:?}, expected {want:?}", info.ne)));
        }
        if !quant::is_supported(info.ty) {
            return Err(self.bad(name, quant::unsupported(info.ty).to_string()));
        }
        Ok(Matrix { file: self.file.clone(), index, ty: info.ty, n_in, n_out, n_slab: n_slab.unwrap_or(1) })
    }

    /// A vector of `len` values (norm weights, biases, router bias), dequantized to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.file.tensor(name)?;
        if t.n_elements() != len as u64 || t.ne[1..].iter().any(|&d| d != 1) {
            return Err(self.bad(name, format!("shape (ne) is {:?}, expected [{len}]", t.ne)));
        }
        let mut v = vec![0f32; len];
        quant::dequantize(t.ty, t.data, &mut v).map_err(|e| self.bad(name, e.to_string()))?;
        Ok(v)
    }

    /// [`Self::vector`], or `None` when the tensor is absent.
    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        if self.has(name) { self.vector(name, len).map(Some) } else { Ok(None) }
    }
}

/// Grouped-query attention (Llama, Qwen2, Qwen2-MoE, Qwen3-MoE).
pub struct GqaWeights {
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k (Qwen3), length `head_dim`.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// DeepSeek multi-head latent attention, in the absorbed form: the cache holds the
/// normalised latent `c_kv` and the rotated shared key `k_pe` per position.
pub struct MlaWeights {
    /// Query path: either `attn_q` (`q_a` is `None`) or `attn_q_a` → norm → `attn_q_b`.
    pub q_a: Option<Matrix>,
    pub q_a_norm: Option<Vec<f32>>,
    /// `attn_q` or `attn_q_b`: `dim` (or q_lora) → `n_head · (qk_nope + qk_rope)`.
    pub q: Matrix,
    /// `attn_kv_a_mqa`: `dim` → `kv_lora + qk_rope`.
    pub kv_a: Matrix,
    pub kv_a_norm: Vec<f32>,
    /// Per head: `qk_nope` → `kv_lora` (`attn_k_b`, ne `[qk_nope, kv_lora, n_head]`).
    pub k_b: Matrix,
    /// Per head: `kv_lora` → `v_head` (`attn_v_b`, ne `[kv_lora, v_head, n_head]`).
    pub v_b: Matrix,
    pub wo: Matrix,
}

/// The attention block of one layer.
pub enum Attention {
    Gqa(GqaWeights),
    Mla(MlaWeights),
}

/// A SiLU-gated FFN: `down(silu(gate·x) * (up·x))`.
pub struct DenseFfn {
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
}

/// A mixture-of-experts FFN.
pub struct MoeFfn {
    /// Router, `dim` → `n_expert` (F32 in every file we have seen).
    pub router: Matrix,
    /// DeepSeek-V3's selection bias (`exp_probs_b`), added to the scores for choosing only.
    pub selection_bias: Option<Vec<f32>>,
    /// Expert stacks, ne `[dim, expert_ffn, n_expert]` / `[expert_ffn, dim, n_expert]`.
    pub gate_exps: Matrix,
    pub up_exps: Matrix,
    pub down_exps: Matrix,
    /// Shared expert(s), fused into one FFN.
    pub shared: Option<DenseFfn>,
    /// Qwen2-MoE: the shared expert's output is scaled by sigmoid(shared_gate · x).
    pub shared_gate: Option<Vec<f32>>,
}

/// The FFN block of one layer.
pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

/// One transformer block.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub attn: Attention,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

/// Every weight of a model.
pub struct Weights {
    /// `token_embd`, ne `[dim, n_vocab]`: rows are looked up, not multiplied.
    pub token_embd: Matrix,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    /// `output` (or `token_embd` when the embeddings are tied).
    pub output: Matrix,
}

impl Binder<'_> {
    /// The SiLU-gated dense FFN `blk.{il}.ffn_{gate,up,down}{suffix}`.
    pub fn dense_ffn(&self, il: usize, suffix: &str, dim: usize, hidden: usize) -> Result<DenseFfn, ModelError> {
        Ok(DenseFfn {
            gate: self.matrix(&format!("blk.{il}.ffn_gate{suffix}.weight"), dim, hidden)?,
            up: self.matrix(&format!("blk.{il}.ffn_up{suffix}.weight"), dim, hidden)?,
            down: self.matrix(&format!("blk.{il}.ffn_down{suffix}.weight"), hidden, dim)?,
        })
    }

    /// `token_embd`, `output_norm` and `output` (falling back to `token_embd` when tied).
    pub fn embeddings(&self, dim: usize, n_vocab: usize) -> Result<(Matrix, Vec<f32>, Matrix), ModelError> {
        let token_embd = self.matrix("token_embd.weight", dim, n_vocab)?;
        let output_norm = self.vector("output_norm.weight", dim)?;
        let output = match self.opt_matrix("output.weight", dim, n_vocab)? {
            Some(m) => m,
            None => token_embd.clone(),
        };
        Ok((token_embd, output_norm, output))
    }
}
