//! The forward pass shared by every architecture: read it top to bottom in
//! [`Model::forward`]. Activation buffers live in [`RunState`] (llama2.c's `RunState`),
//! sized on first use and reused, so steady-state decoding does not allocate.

use kernels::activation::silu_glu_inplace;
use kernels::attention::{attention, AttnScratch, AttnShape};
use kernels::norm::{rms_norm, rms_norm_inplace};
use kernels::rope::rope_heads;
use kernels::softmax::softmax_inplace;
use kernels::vector::{add_inplace, axpy};
use kernels::ThreadPool;

use crate::config::{Gating, MoeConfig};
use crate::kv::KvCache;
use crate::linear::{Linear, MatmulMode};
use crate::weights::{Attention, DenseFfn, Ffn, GqaWeights, MlaWeights, MoeFfn};
use crate::{Model, ModelError};

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position of the batch.
    All,
}

/// Every activation buffer of a forward pass, named for what it holds
/// (`n` = tokens in the batch).
pub struct RunState {
    linear: Linear,
    /// (sequence, position) of each token row of the batch.
    token_pos: Vec<(usize, usize)>,
    /// Residual stream, `n × dim`.
    x: Vec<f32>,
    /// Normalised input of the current block, `n × dim`.
    xb: Vec<f32>,
    /// Output of the current block, `n × dim`.
    block_out: Vec<f32>,
    /// Queries, keys, values of the batch (GQA), or queries and the latent/RoPE-key
    /// projection (MLA).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Compressed queries (MLA with q_lora).
    q_lora: Vec<f32>,
    /// Per-head gather/scatter buffers (MLA absorption).
    head_in: Vec<f32>,
    head_out: Vec<f32>,
    /// MLA: attention queries `[q_nope·W_UK, q_pe]`, `n × n_head × (kv_lora + qk_rope)`,
    /// and the attention-weighted latents, `n × n_head × kv_lora`.
    q_latent: Vec<f32>,
    attended_latent: Vec<f32>,
    /// MLA: which form each sequence of the batch uses in this layer, and the batch rows
    /// of the absorbed ones (their absorbed buffers are compacted to these rows).
    mla_form: MlaForm,
    mla_decompress: Vec<bool>,
    mla_absorbed_rows: Vec<usize>,
    /// MLA decompressed form, per position of one sequence: the latents (contiguous),
    /// every head's no-RoPE key, full keys `[k_nope, k_pe]` and values.
    mla_latents: Vec<f32>,
    mla_k_nope: Vec<f32>,
    mla_keys: Vec<f32>,
    mla_values: Vec<f32>,
    /// Attention output (all heads), `n × n_head · head_dim_v`.
    att_out: Vec<f32>,
    /// Per-thread attention scores.
    attn_scratch: AttnScratch,
    /// RoPE cos/sin of one position.
    rope_cache: Vec<f32>,
    /// FFN hidden activations (gate, then silu(gate)·up in place; up).
    ffn_gate: Vec<f32>,
    ffn_up: Vec<f32>,
    /// MoE: router logits `n × n_expert`, the chosen experts and weights `n × k`.
    router_logits: Vec<f32>,
    expert_ids: Vec<usize>,
    expert_weights: Vec<f32>,
    /// MoE: one expert's tokens (indices and weights), its inputs and outputs.
    expert_tokens: Vec<(usize, f32)>,
    expert_in: Vec<f32>,
    expert_out: Vec<f32>,
    /// Fused MoE: routed rows grouped by expert (`expert_offsets`), the token of each
    /// row, the row of each (token, slot), 0..n·k, and the quantized inputs / hidden rows.
    expert_offsets: Vec<usize>,
    routed_tokens: Vec<u32>,
    row_of_slot: Vec<usize>,
    identity: Vec<u32>,
    moe_act_in: kernels::matmul::ActScratch,
    moe_act_hidden: kernels::matmul::ActScratch,
    /// Output logits, `rows × n_vocab`.
    logits: Vec<f32>,
}

/// Grows `v` to at least `n` values and returns the first `n`.
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl RunState {
    /// Empty buffers; `mode` chooses production or exact matmuls.
    pub fn new(mode: MatmulMode) -> RunState {
        RunState {
            linear: Linear::new(mode),
            token_pos: Vec::new(),
            x: Vec::new(),
            xb: Vec::new(),
            block_out: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            q_lora: Vec::new(),
            head_in: Vec::new(),
            head_out: Vec::new(),
            q_latent: Vec::new(),
            attended_latent: Vec::new(),
            mla_form: MlaForm::Auto,
            mla_decompress: Vec::new(),
            mla_absorbed_rows: Vec::new(),
            mla_latents: Vec::new(),
            mla_k_nope: Vec::new(),
            mla_keys: Vec::new(),
            mla_values: Vec::new(),
            att_out: Vec::new(),
            attn_scratch: AttnScratch::new(),
            rope_cache: Vec::new(),
            ffn_gate: Vec::new(),
            ffn_up: Vec::new(),
            router_logits: Vec::new(),
            expert_ids: Vec::new(),
            expert_weights: Vec::new(),
            expert_tokens: Vec::new(),
            expert_in: Vec::new(),
            expert_out: Vec::new(),
            expert_offsets: Vec::new(),
            routed_tokens: Vec::new(),
            row_of_slot: Vec::new(),
            identity: Vec::new(),
            moe_act_in: kernels::matmul::ActScratch::new(),
            moe_act_hidden: kernels::matmul::ActScratch::new(),
            logits: Vec::new(),
        }
    }

    /// The matmul mode.
    pub fn mode(&self) -> MatmulMode {
        self.linear.mode
    }

    /// Chooses how MLA attention runs (default [`MlaForm::Auto`]).
    pub fn set_mla_form(&mut self, form: MlaForm) {
        self.mla_form = form;
    }
}

/// The two equivalent forms of DeepSeek's multi-head latent attention. Both read the same
/// compressed cache (latent + RoPE key per position); they differ in where `attn_k_b` /
/// `attn_v_b` are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaForm {
    /// Per sequence and layer, whichever costs fewer operations ([`mla_decompress_pays`]);
    /// always absorbed in [`MatmulMode::Exact`].
    Auto,
    /// Queries mapped into latent space (`q·W_UK`), attention over the 576-wide cached rows,
    /// `W_UV` after: cheapest when few tokens attend to a long cache (decode).
    Absorbed,
    /// Cached latents expanded into per-head keys and values (one int8 matmul per
    /// position), then ordinary attention over 192/128-wide heads: cheapest for prompts,
    /// where every cached position is attended to by many new tokens. (Absorbed anyway
    /// when the expanded keys and values would exceed 256 MiB.)
    Decompressed,
}

/// MLA head geometry.
#[derive(Clone, Copy, Debug)]
pub struct MlaDims {
    pub heads: usize,
    pub nope: usize,
    pub rope: usize,
    pub lora: usize,
    pub v: usize,
}

/// Floats of per-position scratch above which the decompressed form is not used, even
/// when asked for (its keys and values grow with the context): 256 MiB ≈ 8.7k positions
/// of DeepSeek-V2-Lite (7680 floats each), ≈ 1.1k of V3 (128 heads: 57 856 floats).
const MLA_DECOMPRESS_MAX_FLOATS: usize = 64 << 20;

/// Whether the decompressed form's scratch for `total` positions stays under the cap.
fn mla_decompress_fits(total: usize, d: &MlaDims) -> bool {
    // Keys, values, k_nope (later the head-major values), latents.
    total.saturating_mul(d.heads * (d.nope + d.rope + d.v + d.nope.max(d.v)) + d.lora)
        <= MLA_DECOMPRESS_MAX_FLOATS
}

/// Whether `m` new tokens after `pos0` cached ones cost less in the decompressed form.
/// Multiply-accumulates counted, the f32 attention ones at full weight and the int8 matmul
/// ones (absorption, decompression) at a quarter (what the packed int8 kernels do per
/// cycle relative to the f32 attention kernels, measured on V2-Lite shapes):
/// - absorbed: `m·ctx·H·(2·lora + rope)` attention + `m·H·lora·(nope + v)` absorption;
/// - decompressed: `m·ctx·H·(nope + rope + v)` attention + `(pos0+m)·H·lora·(nope + v)`.
///
/// with `ctx` the mean attended length. The choice depends only on the sequence's own
/// lengths, so a token's result never depends on the rest of its batch.
pub fn mla_decompress_pays(m: usize, pos0: usize, d: &MlaDims) -> bool {
    let total = pos0 + m;
    if !mla_decompress_fits(total, d) {
        return false;
    }
    let (mf, h) = (m as f64, d.heads as f64);
    let ctx = pos0 as f64 + (mf + 1.0) / 2.0;
    let int8 = 0.25 * h * d.lora as f64 * (d.nope + d.v) as f64;
    let absorbed = mf * ctx * h * (2 * d.lora + d.rope) as f64 + mf * int8;
    let decompressed = mf * ctx * h * (d.nope + d.rope + d.v) as f64 + total as f64 * int8;
    decompressed < absorbed
}

/// One sequence's share of a batch: its cache, its new tokens and which logits it wants.
pub struct BatchSeq<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

impl Model {
    /// Runs `tokens` (appended after what `kv` already holds) through the model and
    /// returns the logits of the last position (`[n_vocab]`) or of every position
    /// (`[tokens.len() × n_vocab]`).
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        st: &'s mut RunState,
        kv: &mut KvCache,
        tokens: &[u32],
        which: Logits,
    ) -> Result<&'s [f32], ModelError> {
        self.forward_batch(
            pool,
            st,
            &mut [BatchSeq {
                kv,
                tokens,
                logits: which,
            }],
        )
    }

    /// Runs several sequences' new tokens in one pass (prompt chunks and decode steps
    /// mixed): every matmul sees all tokens at once, attention reads each token's own
    /// sequence. Returns, sequence after sequence, one logit row (`Logits::Last`) or one
    /// per new token (`Logits::All`). A token's result does not depend on the rest of
    /// the batch.
    pub fn forward_batch<'s>(
        &self,
        pool: &ThreadPool,
        st: &'s mut RunState,
        seqs: &mut [BatchSeq<'_>],
    ) -> Result<&'s [f32], ModelError> {
        let c = &self.config;
        let w = &self.weights;
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                return Err(ModelError::Input(
                    "forward: a sequence has no tokens".into(),
                ));
            }
            if s.kv.len() + s.tokens.len() > s.kv.n_ctx() {
                return Err(ModelError::Input(format!(
                    "context full: {} cached + {} new tokens exceed the context size {}",
                    s.kv.len(),
                    s.tokens.len(),
                    s.kv.n_ctx()
                )));
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
                return Err(ModelError::Input(format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    c.n_vocab
                )));
            }
        }
        if seqs.is_empty() {
            return Err(ModelError::Input("forward: empty batch".into()));
        }
        // Which sequence and position each row of the batch belongs to.
        st.token_pos.clear();
        for (si, s) in seqs.iter().enumerate() {
            st.token_pos
                .extend((0..s.tokens.len()).map(|i| (si, s.kv.len() + i)));
        }
        let n = st.token_pos.len();

        // Token embeddings: rows of token_embd, dequantized.
        let x = buf(&mut st.x, n * c.dim);
        for (t, &tok) in seqs.iter().flat_map(|s| s.tokens.iter()).enumerate() {
            let e = &w.token_embd;
            quant::dequantize_row(
                e.ty,
                e.data(),
                tok as usize,
                &mut x[t * c.dim..(t + 1) * c.dim],
            )?;
        }

        for (il, layer) in w.layers.iter().enumerate() {
            norm_rows(
                &st.x[..n * c.dim],
                &layer.attn_norm,
                c.rms_eps,
                buf(&mut st.xb, n * c.dim),
            );
            match &layer.attn {
                Attention::Gqa(a) => self.attention_gqa(pool, st, seqs, il, a)?,
                Attention::Mla(a) => self.attention_mla(pool, st, seqs, il, a)?,
            }
            add_inplace(&mut st.x[..n * c.dim], &st.block_out[..n * c.dim]);

            norm_rows(
                &st.x[..n * c.dim],
                &layer.ffn_norm,
                c.rms_eps,
                buf(&mut st.xb, n * c.dim),
            );
            match &layer.ffn {
                Ffn::Dense(f) => {
                    let out = std::mem::take(&mut st.block_out);
                    st.block_out = self.dense_ffn(pool, st, f, n, out)?;
                }
                Ffn::Moe(m) => self.moe_ffn(pool, st, m, n)?,
            }
            add_inplace(&mut st.x[..n * c.dim], &st.block_out[..n * c.dim]);
        }
        for s in seqs.iter_mut() {
            let len = s.kv.len() + s.tokens.len();
            s.kv.set_len(len);
        }

        // Final norm and the output projection, only for the rows asked for.
        let mut rows = 0;
        let mut first_row = 0;
        for s in seqs.iter() {
            let (from, count) = match s.logits {
                Logits::Last => (first_row + s.tokens.len() - 1, 1),
                Logits::All => (first_row, s.tokens.len()),
            };
            for r in from..from + count {
                let out =
                    &mut buf(&mut st.xb, (rows + 1) * c.dim)[rows * c.dim..(rows + 1) * c.dim];
                rms_norm(
                    &st.x[r * c.dim..(r + 1) * c.dim],
                    &w.output_norm,
                    c.rms_eps,
                    out,
                );
                rows += 1;
            }
            first_row += s.tokens.len();
        }
        let logits = buf(&mut st.logits, rows * c.n_vocab);
        st.linear
            .forward(pool, &w.output, 0, &st.xb[..rows * c.dim], logits)?;
        Ok(&st.logits[..rows * c.n_vocab])
    }

    /// Grouped-query attention over each token's own cache; writes `st.block_out`.
    fn attention_gqa(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        seqs: &mut [BatchSeq<'_>],
        il: usize,
        a: &GqaWeights,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = st.token_pos.len();
        let (hd, hdv) = (c.head_dim, c.head_dim_v);
        let (q_w, k_w, v_w) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * hdv);
        let xb = &st.xb[..n * c.dim];
        st.linear.forward_multi(
            pool,
            xb,
            &mut [
                (&a.wq, buf(&mut st.q, n * q_w)),
                (&a.wk, buf(&mut st.k, n * k_w)),
                (&a.wv, buf(&mut st.v, n * v_w)),
            ],
        )?;
        for (m, bias, width) in [
            (&mut st.q, &a.bq, q_w),
            (&mut st.k, &a.bk, k_w),
            (&mut st.v, &a.bv, v_w),
        ] {
            if let Some(b) = bias {
                m[..n * width]
                    .chunks_exact_mut(width)
                    .for_each(|row| add_inplace(row, b));
            }
        }
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            st.q[..n * q_w]
                .chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, qn, c.rms_eps));
            st.k[..n * k_w]
                .chunks_exact_mut(hd)
                .for_each(|h| rms_norm_inplace(h, kn, c.rms_eps));
        }
        // Rotate q and k, and store k and v in each token's cache.
        let rope_cache = buf(&mut st.rope_cache, c.rope.n_dims);
        for (t, &(si, pos)) in st.token_pos.iter().enumerate() {
            c.rope.cache(pos as i32, None, rope_cache);
            rope_heads(
                &mut st.q[t * q_w..(t + 1) * q_w],
                hd,
                0,
                rope_cache,
                c.rope.mode,
            );
            rope_heads(
                &mut st.k[t * k_w..(t + 1) * k_w],
                hd,
                0,
                rope_cache,
                c.rope.mode,
            );
            let (k_cache, v_cache) = seqs[si].kv.gqa(il);
            k_cache[pos * k_w..(pos + 1) * k_w].copy_from_slice(&st.k[t * k_w..(t + 1) * k_w]);
            v_cache[pos * v_w..(pos + 1) * v_w].copy_from_slice(&st.v[t * v_w..(t + 1) * v_w]);
        }

        let shape = AttnShape {
            n_head: c.n_head,
            n_kv_head: c.n_head_kv,
            dk: hd,
            dv: hdv,
            k_stride: k_w,
            v_stride: v_w,
            v_offset: 0,
            k_head: hd,
            v_head: hdv,
            scale: c.kq_scale,
        };
        let att_out = buf(&mut st.att_out, n * c.n_head * hdv);
        let mut t0 = 0;
        for s in seqs.iter_mut() {
            let m = s.tokens.len();
            let pos0 = st.token_pos[t0].1;
            let (k_cache, v_cache) = s.kv.gqa_ref(il);
            attention(
                pool,
                &shape,
                &st.q[t0 * q_w..(t0 + m) * q_w],
                pos0,
                k_cache,
                v_cache,
                &mut att_out[t0 * c.n_head * hdv..(t0 + m) * c.n_head * hdv],
                &mut st.attn_scratch,
            );
            t0 += m;
        }
        st.linear.forward(
            pool,
            &a.wo,
            0,
            &st.att_out[..n * c.n_head * hdv],
            buf(&mut st.block_out, n * c.dim),
        )
    }

    /// DeepSeek MLA (absorbed or decompressed per sequence); writes `st.block_out`.
    fn attention_mla(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        seqs: &mut [BatchSeq<'_>],
        il: usize,
        a: &MlaWeights,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let n = st.token_pos.len();
        let m = c.mla.as_ref().expect("MLA weights imply an MLA config");
        let (nope, rope, lora) = (m.qk_nope, m.qk_rope, m.kv_lora_rank);
        let head_q = nope + rope;
        let q_w = c.n_head * head_q;
        let lat_w = lora + rope;
        let xb = &st.xb[..n * c.dim];

        // Queries: plain projection, or compressed → normalised → expanded.
        // (The latent and the shared RoPE key come from the same input, in the same pass.)
        match (&a.q_a, &a.q_a_norm) {
            (Some(q_a), Some(q_a_norm)) => {
                let q_lora = buf(&mut st.q_lora, n * q_a.n_out);
                st.linear.forward_multi(
                    pool,
                    xb,
                    &mut [(q_a, q_lora), (&a.kv_a, buf(&mut st.k, n * lat_w))],
                )?;
                let q_lora = &mut st.q_lora[..n * q_a.n_out];
                q_lora
                    .chunks_exact_mut(q_a.n_out)
                    .for_each(|r| rms_norm_inplace(r, q_a_norm, c.rms_eps));
                st.linear.forward(
                    pool,
                    &a.q,
                    0,
                    &st.q_lora[..n * q_a.n_out],
                    buf(&mut st.q, n * q_w),
                )?;
            }
            _ => st.linear.forward_multi(
                pool,
                xb,
                &mut [
                    (&a.q, buf(&mut st.q, n * q_w)),
                    (&a.kv_a, buf(&mut st.k, n * lat_w)),
                ],
            )?,
        }
        // Normalise/rotate the latent and the shared RoPE key, and cache them.
        let rope_cache = buf(&mut st.rope_cache, rope);
        for (t, &(si, pos)) in st.token_pos.iter().enumerate() {
            c.rope.cache(pos as i32, None, rope_cache);
            rope_heads(
                &mut st.q[t * q_w..(t + 1) * q_w],
                head_q,
                nope,
                rope_cache,
                c.rope.mode,
            );
            let kv_row = &mut st.k[t * lat_w..(t + 1) * lat_w];
            rms_norm_inplace(&mut kv_row[..lora], &a.kv_a_norm, c.rms_eps);
            rope_heads(&mut kv_row[lora..], rope, 0, rope_cache, c.rope.mode);
            seqs[si].kv.mla(il)[pos * lat_w..(pos + 1) * lat_w].copy_from_slice(kv_row);
        }

        // Per sequence: absorbed or decompressed form.
        let dims = MlaDims {
            heads: c.n_head,
            nope,
            rope,
            lora,
            v: m.v_head,
        };
        st.mla_decompress.clear();
        st.mla_absorbed_rows.clear();
        let mut t0 = 0;
        for s in seqs.iter() {
            let len = s.tokens.len();
            let pos0 = st.token_pos[t0].1;
            let decompress = match st.mla_form {
                MlaForm::Absorbed => false,
                MlaForm::Decompressed => mla_decompress_fits(pos0 + len, &dims),
                MlaForm::Auto => {
                    st.linear.mode == MatmulMode::Quantized && mla_decompress_pays(len, pos0, &dims)
                }
            };
            st.mla_decompress.push(decompress);
            if !decompress {
                st.mla_absorbed_rows.extend(t0..t0 + len);
            }
            t0 += len;
        }
        buf(&mut st.att_out, n * c.n_head * m.v_head);
        if !st.mla_absorbed_rows.is_empty() {
            self.mla_absorbed(pool, st, seqs, il, a, &dims)?;
        }
        let mut t0 = 0;
        for (si, s) in seqs.iter().enumerate() {
            let len = s.tokens.len();
            if st.mla_decompress[si] {
                let pos0 = st.token_pos[t0].1;
                self.mla_decompressed(pool, st, s.kv.mla_ref(il), t0, len, pos0, a, &dims)?;
            }
            t0 += len;
        }
        st.linear.forward(
            pool,
            &a.wo,
            0,
            &st.att_out[..n * c.n_head * m.v_head],
            buf(&mut st.block_out, n * c.dim),
        )
    }

    /// MLA in the absorbed form for the batch rows `st.mla_absorbed_rows` (whole
    /// sequences); writes their rows of `st.att_out`.
    fn mla_absorbed(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        seqs: &[BatchSeq<'_>],
        il: usize,
        a: &MlaWeights,
        d: &MlaDims,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let (h_n, nope, rope, lora, v) = (d.heads, d.nope, d.rope, d.lora, d.v);
        let (head_q, lat_w) = (nope + rope, lora + rope);
        let q_w = h_n * head_q;
        let rows = std::mem::take(&mut st.mla_absorbed_rows);
        let na = rows.len();
        // Absorb W_UK: per head, q_nope (nope) → latent space (lora). The attention query
        // of head h is [q_nope·W_UK, q_pe] (lat_w wide), scored against the cached
        // [c_kv, k_pe] rows, whose c_kv part is also the value. Row i of these buffers
        // is batch row rows[i].
        let head_in = buf(&mut st.head_in, na * h_n * nope);
        for (i, &t) in rows.iter().enumerate() {
            for h in 0..h_n {
                let src = t * q_w + h * head_q;
                head_in[(i * h_n + h) * nope..(i * h_n + h + 1) * nope]
                    .copy_from_slice(&st.q[src..src + nope]);
            }
        }
        let head_out = buf(&mut st.head_out, na * h_n * lora);
        st.linear
            .forward_slabs(pool, &a.k_b, &st.head_in[..na * h_n * nope], head_out)?;
        let q_attn = buf(&mut st.q_latent, na * h_n * lat_w);
        for (i, &t) in rows.iter().enumerate() {
            for h in 0..h_n {
                let dst = (i * h_n + h) * lat_w;
                let src = (i * h_n + h) * lora;
                q_attn[dst..dst + lora].copy_from_slice(&st.head_out[src..src + lora]);
                let pe = t * q_w + h * head_q + nope;
                q_attn[dst + lora..dst + lat_w].copy_from_slice(&st.q[pe..pe + rope]);
            }
        }
        let shape = AttnShape {
            n_head: h_n,
            n_kv_head: 1,
            dk: lat_w,
            dv: lora,
            k_stride: lat_w,
            v_stride: lat_w,
            v_offset: 0,
            k_head: lat_w,
            v_head: lora,
            scale: c.kq_scale,
        };
        let attended = buf(&mut st.attended_latent, na * h_n * lora);
        let (mut t0, mut i0) = (0, 0);
        for (si, s) in seqs.iter().enumerate() {
            let m = s.tokens.len();
            if !st.mla_decompress[si] {
                let pos0 = st.token_pos[t0].1;
                let latent_cache = s.kv.mla_ref(il);
                attention(
                    pool,
                    &shape,
                    &q_attn[i0 * h_n * lat_w..(i0 + m) * h_n * lat_w],
                    pos0,
                    latent_cache,
                    latent_cache,
                    &mut attended[i0 * h_n * lora..(i0 + m) * h_n * lora],
                    &mut st.attn_scratch,
                );
                i0 += m;
            }
            t0 += m;
        }

        // W_UV per head: attended latent (lora) → values (v_head), into the rows' att_out.
        let n = st.token_pos.len();
        if na == n {
            st.linear.forward_slabs(
                pool,
                &a.v_b,
                &st.attended_latent[..n * h_n * lora],
                &mut st.att_out[..n * h_n * v],
            )?;
        } else {
            let tmp = buf(&mut st.head_out, na * h_n * v);
            st.linear
                .forward_slabs(pool, &a.v_b, &st.attended_latent[..na * h_n * lora], tmp)?;
            for (i, &t) in rows.iter().enumerate() {
                st.att_out[t * h_n * v..(t + 1) * h_n * v]
                    .copy_from_slice(&st.head_out[i * h_n * v..(i + 1) * h_n * v]);
            }
        }
        st.mla_absorbed_rows = rows;
        Ok(())
    }

    /// MLA in the decompressed form for one sequence's `len` new tokens (batch rows
    /// `t0..t0 + len`, positions `pos0..`): the cached latents of every position are
    /// expanded into per-head keys `[latent·W_UKᵀ, k_pe]` and values `latent·W_UVᵀ`, then
    /// ordinary multi-head attention; writes the rows' `st.att_out`.
    #[allow(clippy::too_many_arguments)]
    fn mla_decompressed(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        latent_cache: &[f32],
        t0: usize,
        len: usize,
        pos0: usize,
        a: &MlaWeights,
        d: &MlaDims,
    ) -> Result<(), ModelError> {
        let (h_n, nope, rope, lora, v) = (d.heads, d.nope, d.rope, d.lora, d.v);
        let (head_q, lat_w) = (nope + rope, lora + rope);
        let ctx = pos0 + len;
        let latents = buf(&mut st.mla_latents, ctx * lora);
        for (p, row) in latents.chunks_exact_mut(lora).enumerate() {
            row.copy_from_slice(&latent_cache[p * lat_w..p * lat_w + lora]);
        }
        let v_b_all = a.v_b.flattened();
        st.linear.forward_multi(
            pool,
            &st.mla_latents[..ctx * lora],
            &mut [
                (&a.k_b_t, buf(&mut st.mla_k_nope, ctx * h_n * nope)),
                (&v_b_all, buf(&mut st.mla_values, ctx * h_n * v)),
            ],
        )?;
        // Keys and values head-major: each head's rows are contiguous, so attention streams
        // them in order (interleaved per position, a head's rows are h_n·head_q floats
        // apart: a new page per position for V3's 128 heads).
        let keys = buf(&mut st.mla_keys, ctx * h_n * head_q);
        for p in 0..ctx {
            let k_pe = &latent_cache[p * lat_w + lora..(p + 1) * lat_w];
            for h in 0..h_n {
                let dst = (h * ctx + p) * head_q;
                let src = (p * h_n + h) * nope;
                keys[dst..dst + nope].copy_from_slice(&st.mla_k_nope[src..src + nope]);
                keys[dst + nope..dst + head_q].copy_from_slice(k_pe);
            }
        }
        // The head-major values go into k_nope's buffer, consumed by now.
        let mut values_hm = std::mem::take(&mut st.mla_k_nope);
        let values = buf(&mut values_hm, ctx * h_n * v);
        for p in 0..ctx {
            for h in 0..h_n {
                let (dst, src) = ((h * ctx + p) * v, (p * h_n + h) * v);
                values[dst..dst + v].copy_from_slice(&st.mla_values[src..src + v]);
            }
        }
        let shape = AttnShape {
            n_head: h_n,
            n_kv_head: h_n,
            dk: head_q,
            dv: v,
            k_stride: head_q,
            v_stride: v,
            v_offset: 0,
            k_head: ctx * head_q,
            v_head: ctx * v,
            scale: self.config.kq_scale,
        };
        attention(
            pool,
            &shape,
            &st.q[t0 * h_n * head_q..(t0 + len) * h_n * head_q],
            pos0,
            &st.mla_keys[..ctx * h_n * head_q],
            &values_hm[..ctx * h_n * v],
            &mut st.att_out[t0 * h_n * v..(t0 + len) * h_n * v],
            &mut st.attn_scratch,
        );
        st.mla_k_nope = values_hm;
        Ok(())
    }

    /// `down(silu(gate·xb) · up·xb)` for the `n` rows of `st.xb`, written into `out`
    /// (returned, resized to `n × dim`).
    fn dense_ffn(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        f: &DenseFfn,
        n: usize,
        mut out: Vec<f32>,
    ) -> Result<Vec<f32>, ModelError> {
        let hidden = f.gate.n_out;
        let xb = &st.xb[..n * self.config.dim];
        st.linear.forward_multi(
            pool,
            xb,
            &mut [
                (&f.gate, buf(&mut st.ffn_gate, n * hidden)),
                (&f.up, buf(&mut st.ffn_up, n * hidden)),
            ],
        )?;
        silu_glu_inplace(&mut st.ffn_gate[..n * hidden], &st.ffn_up[..n * hidden]);
        st.linear.forward(
            pool,
            &f.down,
            0,
            &st.ffn_gate[..n * hidden],
            buf(&mut out, n * self.config.dim),
        )?;
        Ok(out)
    }

    /// Routed experts (+ shared expert) for the `n` rows of `st.xb`; writes `st.block_out`.
    fn moe_ffn(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        f: &MoeFfn,
        n: usize,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let mc = c.moe.as_ref().expect("MoE weights imply a MoE config");
        let dim = c.dim;
        let k = self.experts_per_token();

        // Route every token.
        let logits = buf(&mut st.router_logits, n * mc.n_expert);
        st.linear
            .forward(pool, &f.router, 0, &st.xb[..n * dim], logits)?;
        if st.expert_ids.len() < n * k {
            st.expert_ids.resize(n * k, 0);
        }
        let weights = buf(&mut st.expert_weights, n * k);
        for t in 0..n {
            route(
                mc,
                &mut st.router_logits[t * mc.n_expert..(t + 1) * mc.n_expert],
                f.selection_bias.as_deref(),
                &mut st.expert_ids[t * k..(t + 1) * k],
                &mut weights[t * k..(t + 1) * k],
            );
        }

        if st.linear.mode == MatmulMode::Quantized {
            return self.moe_experts_fused(pool, st, f, n, k);
        }

        // Reference path: each expert runs once over all the tokens routed to it.
        let out = buf(&mut st.block_out, n * dim);
        out.fill(0.0);
        let hidden = mc.expert_ffn;
        for e in 0..mc.n_expert {
            st.expert_tokens.clear();
            for t in 0..n {
                for slot in 0..k {
                    if st.expert_ids[t * k + slot] == e {
                        st.expert_tokens.push((t, st.expert_weights[t * k + slot]));
                    }
                }
            }
            let m = st.expert_tokens.len();
            if m == 0 {
                continue;
            }
            let x_in = buf(&mut st.expert_in, m * dim);
            for (i, &(t, _)) in st.expert_tokens.iter().enumerate() {
                x_in[i * dim..(i + 1) * dim].copy_from_slice(&st.xb[t * dim..(t + 1) * dim]);
            }
            st.linear.forward(
                pool,
                &f.gate_exps,
                e,
                &st.expert_in[..m * dim],
                buf(&mut st.ffn_gate, m * hidden),
            )?;
            st.linear.forward(
                pool,
                &f.up_exps,
                e,
                &st.expert_in[..m * dim],
                buf(&mut st.ffn_up, m * hidden),
            )?;
            silu_glu_inplace(&mut st.ffn_gate[..m * hidden], &st.ffn_up[..m * hidden]);
            st.linear.forward(
                pool,
                &f.down_exps,
                e,
                &st.ffn_gate[..m * hidden],
                buf(&mut st.expert_out, m * dim),
            )?;
            for (i, &(t, wgt)) in st.expert_tokens.iter().enumerate() {
                axpy(
                    &mut st.block_out[t * dim..(t + 1) * dim],
                    wgt,
                    &st.expert_out[i * dim..(i + 1) * dim],
                );
            }
        }
        self.shared_expert(pool, st, f, n)
    }

    /// The production MoE: the input is quantized once; the gate and up projections of
    /// every active expert (and the shared expert) run as one parallel region over
    /// (expert, row-chunk) items, each expert reading only its routed tokens; then
    /// SiLU·mul, one quantization of all hidden rows, and the down projections as a
    /// second region; finally each token's weighted sum, in slot order.
    fn moe_experts_fused(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        f: &MoeFfn,
        n: usize,
        k: usize,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let mc = c.moe.as_ref().expect("MoE config");
        let (dim, hidden) = (c.dim, mc.expert_ffn);
        let err = |e: kernels::matmul::MatmulError| ModelError::Kernel(format!("MoE: {e}"));

        // Group the (token, slot) pairs by expert: rows[off[e]..off[e+1]] are expert e's.
        let nk = n * k;
        st.expert_offsets.clear();
        st.expert_offsets.resize(mc.n_expert + 1, 0);
        for &e in &st.expert_ids[..nk] {
            st.expert_offsets[e + 1] += 1;
        }
        for e in 0..mc.n_expert {
            st.expert_offsets[e + 1] += st.expert_offsets[e];
        }
        st.routed_tokens.clear();
        st.routed_tokens.resize(nk, 0);
        st.row_of_slot.clear();
        st.row_of_slot.resize(nk, 0);
        {
            let mut next: Vec<usize> = st.expert_offsets[..mc.n_expert].to_vec();
            for (i, &e) in st.expert_ids[..nk].iter().enumerate() {
                st.routed_tokens[next[e]] = (i / k) as u32;
                st.row_of_slot[i] = next[e];
                next[e] += 1;
            }
        }
        if st.identity.len() < nk {
            st.identity = (0..nk as u32).collect();
        }

        let gate_all = std::mem::take(&mut st.ffn_gate);
        let up_all = std::mem::take(&mut st.ffn_up);
        let mut gate_all = gate_all;
        let mut up_all = up_all;
        buf(&mut gate_all, nk * hidden);
        buf(&mut up_all, nk * hidden);

        // Gate and up, in groups of experts (one pool op per group).
        let xq = kernels::matmul::quantize_acts(
            pool,
            f.gate_exps.ty,
            &st.xb[..n * dim],
            dim,
            &mut st.moe_act_in,
        )
        .map_err(err)?;
        let same_act = |ty| quant::dot::act_type_for(ty) == Some(xq.ty);
        if !same_act(f.up_exps.ty) {
            return Err(ModelError::Kernel(format!(
                "MoE: {} and {} experts need different activation types",
                f.gate_exps.ty, f.up_exps.ty
            )));
        }
        let active: Vec<usize> = (0..mc.n_expert)
            .filter(|&e| st.expert_offsets[e + 1] > st.expert_offsets[e])
            .collect();
        for group in active.chunks(kernels::matmul::MAX_BATCH_OPS / 2) {
            let mut ops = Vec::with_capacity(2 * group.len());
            let (mut g_rest, mut u_rest) =
                (&mut gate_all[..nk * hidden], &mut up_all[..nk * hidden]);
            let mut consumed = 0;
            for &e in group {
                let (r0, r1) = (st.expert_offsets[e], st.expert_offsets[e + 1]);
                let (_, g_tail) =
                    std::mem::take(&mut g_rest).split_at_mut((r0 - consumed) * hidden);
                let (g_here, g_next) = g_tail.split_at_mut((r1 - r0) * hidden);
                let (_, u_tail) =
                    std::mem::take(&mut u_rest).split_at_mut((r0 - consumed) * hidden);
                let (u_here, u_next) = u_tail.split_at_mut((r1 - r0) * hidden);
                g_rest = g_next;
                u_rest = u_next;
                consumed = r1;
                let tokens = &st.routed_tokens[r0..r1];
                ops.push(kernels::matmul::MatmulOp {
                    w: qmatrix(&f.gate_exps, e)?,
                    xq,
                    tokens: Some(tokens),
                    out: g_here,
                });
                ops.push(kernels::matmul::MatmulOp {
                    w: qmatrix(&f.up_exps, e)?,
                    xq,
                    tokens: Some(tokens),
                    out: u_here,
                });
            }
            kernels::matmul::matmul_batch(pool, &mut ops).map_err(err)?;
        }
        silu_glu_inplace(&mut gate_all[..nk * hidden], &up_all[..nk * hidden]);

        // Down, from one quantization of every hidden row.
        let out_all = buf(&mut st.expert_out, nk * dim);
        let hq = kernels::matmul::quantize_acts(
            pool,
            f.down_exps.ty,
            &gate_all[..nk * hidden],
            hidden,
            &mut st.moe_act_hidden,
        )
        .map_err(err)?;
        for group in active.chunks(kernels::matmul::MAX_BATCH_OPS) {
            let mut ops = Vec::with_capacity(group.len());
            let mut rest = &mut out_all[..];
            let mut consumed = 0;
            for &e in group {
                let (r0, r1) = (st.expert_offsets[e], st.expert_offsets[e + 1]);
                let (_, tail) = std::mem::take(&mut rest).split_at_mut((r0 - consumed) * dim);
                let (here, next) = tail.split_at_mut((r1 - r0) * dim);
                rest = next;
                consumed = r1;
                ops.push(kernels::matmul::MatmulOp {
                    w: qmatrix(&f.down_exps, e)?,
                    xq: hq,
                    tokens: Some(&st.identity[r0..r1]),
                    out: here,
                });
            }
            kernels::matmul::matmul_batch(pool, &mut ops).map_err(err)?;
        }
        st.ffn_gate = gate_all;
        st.ffn_up = up_all;

        // Weighted sum per token, in slot order (independent of the rest of the batch).
        let out = buf(&mut st.block_out, n * dim);
        out.fill(0.0);
        for t in 0..n {
            for slot in 0..k {
                let row = st.row_of_slot[t * k + slot];
                let wgt = st.expert_weights[t * k + slot];
                axpy(
                    &mut out[t * dim..(t + 1) * dim],
                    wgt,
                    &st.expert_out[row * dim..(row + 1) * dim],
                );
            }
        }
        self.shared_expert(pool, st, f, n)
    }

    /// Adds the shared expert(s) to `st.block_out`, scaled by sigmoid(shared_gate · x)
    /// where the architecture has that gate.
    fn shared_expert(
        &self,
        pool: &ThreadPool,
        st: &mut RunState,
        f: &MoeFfn,
        n: usize,
    ) -> Result<(), ModelError> {
        let dim = self.config.dim;
        if let Some(shared) = &f.shared {
            let shared_out = std::mem::take(&mut st.expert_out);
            let shared_out = self.dense_ffn(pool, st, shared, n, shared_out)?;
            for t in 0..n {
                let scale = match &f.shared_gate {
                    Some(g) => sigmoid(dot(g, &st.xb[t * dim..(t + 1) * dim])),
                    None => 1.0,
                };
                axpy(
                    &mut st.block_out[t * dim..(t + 1) * dim],
                    scale,
                    &shared_out[t * dim..(t + 1) * dim],
                );
            }
            st.expert_out = shared_out;
        }
        Ok(())
    }
}

/// The kernels' view of slab `e` of a weight stack.
fn qmatrix(
    w: &crate::weights::Matrix,
    e: usize,
) -> Result<kernels::matmul::QMatrix<'_>, ModelError> {
    w.qmatrix(e) // the repacked copy when there is one
}

/// Chooses `ids.len()` experts for one token from its router `logits` (overwritten
/// with the scores) and writes their combination weights.
pub fn route(
    mc: &MoeConfig,
    logits: &mut [f32],
    selection_bias: Option<&[f32]>,
    ids: &mut [usize],
    weights: &mut [f32],
) {
    let n_expert = logits.len();
    match mc.gating {
        Gating::Softmax => softmax_inplace(logits),
        Gating::Sigmoid => logits.iter_mut().for_each(|x| *x = sigmoid(*x)),
    }
    let scores: &[f32] = logits;
    // Selection uses the biased scores (DeepSeek-V3); the weights use the plain ones.
    let choice = |e: usize| scores[e] + selection_bias.map_or(0.0, |b| b[e]);
    let mut allowed = [true; 1024];
    let allowed = &mut allowed[..n_expert.min(1024)];
    if mc.n_group > 1 && mc.topk_group < mc.n_group && n_expert <= 1024 {
        // Group score = sum of the two best (biased) scores in the group.
        let per = n_expert / mc.n_group;
        let mut group_scores: Vec<(f32, usize)> = (0..mc.n_group)
            .map(|g| {
                let mut best = [f32::NEG_INFINITY; 2];
                for e in g * per..(g + 1) * per {
                    let s = choice(e);
                    if s > best[0] {
                        best = [s, best[0]];
                    } else if s > best[1] {
                        best[1] = s;
                    }
                }
                (best[0] + if per > 1 { best[1] } else { 0.0 }, g)
            })
            .collect();
        group_scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        allowed.fill(false);
        for &(_, g) in &group_scores[..mc.topk_group] {
            allowed[g * per..(g + 1) * per].fill(true);
        }
    }
    // Top-k by selection score; ties go to the lower expert id.
    let k = ids.len();
    let mut taken = 0;
    for e in 0..n_expert {
        if !allowed.get(e).copied().unwrap_or(true) {
            continue;
        }
        let s = choice(e);
        let mut i = taken.min(k);
        while i > 0 && choice(ids[i - 1]) < s {
            if i < k {
                ids[i] = ids[i - 1];
            }
            i -= 1;
        }
        if i < k {
            ids[i] = e;
        }
        taken += 1;
    }
    for (w, &e) in weights.iter_mut().zip(ids.iter()) {
        *w = scores[e];
    }
    if mc.norm_topk {
        let sum: f32 = weights.iter().sum();
        if sum > 0.0 {
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }
    weights.iter_mut().for_each(|w| *w *= mc.weights_scale);
}

/// RMSNorm of each `weight.len()`-wide row of `x` into `out`.
fn norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(xr, weight, eps, or);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
