//! DeepSeek's multi-head latent attention (MLA), in two equivalent forms chosen per
//! sequence and layer by their cost ([`mla_decompress_pays`]).
//!
//! Contract: `xb` (`n × dim`) in; queries (plain, or compressed → normalised →
//! expanded), the normalised latent and rotated shared RoPE key of each token stored in
//! its cache (`kv_lora + qk_rope` floats per position), causal attention of each token
//! over its sequence in the absorbed or decompressed form, and the output projection
//! written to `out` (`n × dim`).
//!
//! With DeepSeek-V3.2's lightning indexer ([`super::indexer`]) a query at a position of
//! at least `top_k` attends only to the `top_k` positions the indexer selects: in either
//! form their cached rows (or expanded keys and values) are gathered in ascending order and
//! attended as a context of `top_k` positions. The earlier queries attend densely.

use kernels::attention::{attention, attention_with, AttnOpts, AttnScratch, AttnShape};
use kernels::kvdata::{KvData, KvType};
use kernels::norm::rms_norm_inplace;
use kernels::rope::rope_heads;

use super::indexer::{self, IndexerScratch};
use super::{buf, Batch, StageCtx};
use crate::forward::BatchLimits;
use crate::linear::MatmulMode;
use crate::weights::MlaWeights;
use crate::{Config, ModelError};

/// The two equivalent forms of DeepSeek's multi-head latent attention. Both read the same
/// compressed cache (latent + RoPE key per position); they differ in where `attn_k_b` /
/// `attn_v_b` are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MlaForm {
    /// Per sequence and layer, whichever costs fewer operations ([`mla_decompress_pays`]);
    /// always absorbed in [`MatmulMode::Exact`].
    #[default]
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

impl MlaDims {
    /// The geometry of a model with MLA (`None` without).
    pub fn of(c: &Config) -> Option<MlaDims> {
        c.mla.as_ref().map(|m| MlaDims {
            heads: c.n_head,
            nope: m.qk_nope,
            rope: m.qk_rope,
            lora: m.kv_lora_rank,
            v: m.v_head,
        })
    }
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

/// The most tokens of one sequence a step after cached positions may hold and still run in
/// the absorbed form, whatever the cost rule says: a decode step and a verified speculative
/// draft ([`crate::forward::VERIFY_STEP_MAX`]). The two forms agree only to rounding, so a
/// draft of `m − 1` tokens verified in one step gives bit for bit the logits of `m`
/// one-token (absorbed) decode steps only if it is absorbed too. (A prompt into an empty
/// cache is never a verification: the cost rule alone decides.)
pub const ABSORBED_STEP_MAX: usize = 16;

/// Whether `m` new tokens after `pos0` cached ones cost less in the decompressed form
/// (never for steps of at most [`ABSORBED_STEP_MAX`] tokens after cached ones).
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
    if (pos0 > 0 && m <= ABSORBED_STEP_MAX) || !mla_decompress_fits(total, d) {
        return false;
    }
    let (mf, h) = (m as f64, d.heads as f64);
    let ctx = pos0 as f64 + (mf + 1.0) / 2.0;
    let int8 = 0.25 * h * d.lora as f64 * (d.nope + d.v) as f64;
    let absorbed = mf * ctx * h * (2 * d.lora + d.rope) as f64 + mf * int8;
    let decompressed = mf * ctx * h * (d.nope + d.rope + d.v) as f64 + total as f64 * int8;
    decompressed < absorbed
}

/// Whether a sequence's `len` new tokens after `pos0` cached ones run in the decompressed
/// form, with `form` asked for in matmul `mode` (`top_k`: the lightning indexer's
/// selection size, if any). The rule of both tiers (the GPU's MLA follows it too), so
/// that they run the same form.
pub fn use_decompressed(
    form: MlaForm,
    mode: MatmulMode,
    len: usize,
    pos0: usize,
    d: &MlaDims,
    top_k: Option<usize>,
) -> bool {
    match form {
        MlaForm::Absorbed => false,
        MlaForm::Decompressed => mla_decompress_fits(pos0 + len, d),
        // A sequence with sparse queries stays absorbed: the decompressed form gathers
        // its selections one head at a time, which does not pay.
        MlaForm::Auto => {
            mode == MatmulMode::Quantized
                && mla_decompress_pays(len, pos0, d)
                && top_k.is_none_or(|k| pos0 + len <= k)
        }
    }
}

/// The MLA stage's buffers (`n` = tokens in the batch, `ctx` = one sequence's positions).
#[derive(Default)]
pub struct MlaScratch {
    /// Which form to use.
    pub form: MlaForm,
    /// Queries `n × n_head·(nope + rope)`; the latent + RoPE key rows `n × (lora + rope)`;
    /// the compressed queries `n × q_lora` (with q_lora).
    q: Vec<f32>,
    latent_rope: Vec<f32>,
    q_lora: Vec<f32>,
    /// Absorbed form: per-head gather/scatter buffers; the attention queries
    /// `[q_nope·W_UK, q_pe]`, `n × n_head × (lora + rope)`; the attention-weighted
    /// latents, `n × n_head × lora`.
    head_in: Vec<f32>,
    head_out: Vec<f32>,
    q_latent: Vec<f32>,
    attended_latent: Vec<f32>,
    /// Which form each sequence of the batch uses in this layer, and the batch rows of the
    /// absorbed ones (their absorbed buffers are compacted to these rows).
    decompress: Vec<bool>,
    absorbed_rows: Vec<usize>,
    /// Decompressed form, per position of one sequence: the latents (contiguous), every
    /// head's no-RoPE key (then the head-major values), full keys `[k_nope, k_pe]`, values.
    latents: Vec<f32>,
    k_nope: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Over a q8_KV latent cache with int8 attention: the head-major keys and values as
    /// int8 rows (value + 128) with one scale each, the form the int8 path reads in place.
    keys_q: Vec<u8>,
    keys_d: Vec<f32>,
    values_q: Vec<u8>,
    values_d: Vec<f32>,
    /// Attention output (all heads), `n × n_head·v_head`.
    att_out: Vec<f32>,
    /// RoPE cos/sin of one position.
    rope_cache: Vec<f32>,
    /// Per-thread attention scores.
    attn: AttnScratch,
    /// The lightning indexer's buffers and selections (DeepSeek-V3.2).
    indexer: IndexerScratch,
    /// Run dense MLA although the model has an indexer (its keys are still cached): for
    /// tests that show the selection matters.
    pub ignore_selection: bool,
    /// One sparse query's gathered rows: absorbed, `top_k` latent + RoPE key rows;
    /// decompressed, one head's `top_k` keys then its `top_k` values.
    gathered: Vec<f32>,
}

impl MlaScratch {
    /// Sizes the per-token buffers for the batches within `max` of a model shaped `c` on
    /// `threads` threads. The decompressed form's per-position buffers grow with the
    /// longest prompt it serves, or are sized for the whole context (up to the cap) when
    /// that form is forced.
    pub fn reserve(&mut self, c: &Config, max: BatchLimits, threads: usize) {
        let (Some(d), Some(m)) = (MlaDims::of(c), c.mla.as_ref()) else {
            return;
        };
        let (n, n_seqs) = (max.tokens, max.seqs);
        // Absorbed: values are latents (lora wide); decompressed: v_head wide.
        let (head_q, lat_w) = (d.nope + d.rope, d.lora + d.rope);
        self.attn
            .reserve_for(threads, max.ctx, lat_w.max(head_q), d.lora.max(d.v));
        buf(&mut self.q, n * d.heads * head_q);
        buf(&mut self.latent_rope, n * lat_w);
        buf(&mut self.q_lora, n * m.q_lora_rank.unwrap_or(0));
        buf(&mut self.head_in, n * d.heads * d.nope);
        buf(&mut self.head_out, n * d.heads * d.lora.max(d.v));
        buf(&mut self.q_latent, n * d.heads * lat_w);
        buf(&mut self.attended_latent, n * d.heads * d.lora);
        buf(&mut self.att_out, n * d.heads * d.v);
        buf(&mut self.rope_cache, d.rope);
        self.decompress.reserve(n_seqs);
        self.absorbed_rows.reserve(n);
        self.indexer.reserve(c, max);
        if let Some(ix) = &m.indexer {
            buf(&mut self.gathered, ix.top_k * lat_w.max(head_q + d.v));
        }
        if let Some(ctx) = self.forced_decompress_ctx(c, max.ctx) {
            buf(&mut self.latents, ctx * d.lora);
            buf(&mut self.k_nope, ctx * d.heads * d.nope.max(d.v));
            buf(&mut self.keys, ctx * d.heads * head_q);
            buf(&mut self.values, ctx * d.heads * d.v);
        }
    }
}

impl MlaScratch {
    /// With the decompressed form forced (every step, decode included), the positions
    /// its per-position buffers are sized for: the whole context `n_ctx`, at most the cap
    /// (longer contexts use the absorbed form).
    pub fn forced_decompress_ctx(&self, c: &Config, n_ctx: usize) -> Option<usize> {
        let d = MlaDims::of(c).filter(|_| self.form == MlaForm::Decompressed)?;
        let per_position = d.heads * (d.nope + d.rope + d.v + d.nope.max(d.v)) + d.lora;
        Some(n_ctx.min(MLA_DECOMPRESS_MAX_FLOATS / per_position.max(1)))
    }
}

/// MLA of layer `il` (see the module contract).
pub fn mla_attention(
    cx: &mut StageCtx<'_>,
    s: &mut MlaScratch,
    a: &MlaWeights,
    batch: &mut Batch<'_, '_>,
    il: usize,
    xb: &[f32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let (c, pool) = (cx.config, cx.pool);
    let n = batch.rows.len();
    let d = MlaDims::of(c).ok_or_else(|| {
        ModelError::Kernel("MLA weights in a model without an MLA configuration".into())
    })?;
    let (nope, rope, lora) = (d.nope, d.rope, d.lora);
    let head_q = nope + rope;
    let q_w = c.n_head * head_q;
    let lat_w = lora + rope;

    // Queries: plain projection, or compressed → normalised → expanded.
    // (The latent and the shared RoPE key come from the same input, in the same pass.)
    let q = buf(&mut s.q, n * q_w);
    let latent_rope = buf(&mut s.latent_rope, n * lat_w);
    match (&a.q_a, &a.q_a_norm) {
        (Some(q_a), Some(q_a_norm)) => {
            let q_lora = buf(&mut s.q_lora, n * q_a.n_out);
            cx.linear.forward_multi(
                pool,
                xb,
                &mut [(q_a, &mut *q_lora), (&a.kv_a, &mut *latent_rope)],
            )?;
            q_lora
                .chunks_exact_mut(q_a.n_out)
                .for_each(|r| rms_norm_inplace(r, q_a_norm, c.rms_eps));
            cx.linear.forward(pool, &a.q, 0, q_lora, q)?;
        }
        _ => cx.linear.forward_multi(
            pool,
            xb,
            &mut [(&a.q, &mut *q), (&a.kv_a, &mut *latent_rope)],
        )?,
    }
    // Normalise/rotate the latent and the shared RoPE key, and cache them.
    let rope_cache = buf(&mut s.rope_cache, rope);
    for (t, &(si, pos)) in batch.rows.iter().enumerate() {
        c.rope.cache(pos as i32, None, rope_cache);
        rope_heads(
            &mut q[t * q_w..(t + 1) * q_w],
            head_q,
            nope,
            rope_cache,
            c.rope.mode,
        );
        let kv_row = &mut latent_rope[t * lat_w..(t + 1) * lat_w];
        rms_norm_inplace(&mut kv_row[..lora], &a.kv_a_norm, c.rms_eps);
        rope_heads(&mut kv_row[lora..], rope, 0, rope_cache, c.rope.mode);
        batch.seqs[si].kv.write_mla(il, pos, kv_row);
    }
    if let (Some(ix), Some(q_a)) = (&a.indexer, &a.q_a) {
        let q_lora = &s.q_lora[..n * q_a.n_out];
        indexer::select(cx, &mut s.indexer, ix, batch, il, xb, q_lora)?;
    }
    let top_k = match (&a.indexer, s.ignore_selection) {
        (Some(_), false) => c
            .mla
            .as_ref()
            .and_then(|m| m.indexer.as_ref())
            .map(|ix| ix.top_k),
        _ => None,
    };

    // Per sequence: absorbed or decompressed form.
    s.decompress.clear();
    s.absorbed_rows.clear();
    let mut t0 = 0;
    for seq in batch.seqs.iter() {
        let len = seq.tokens.len();
        let pos0 = batch.rows[t0].1;
        let decompress = use_decompressed(s.form, cx.linear.mode, len, pos0, &d, top_k);
        s.decompress.push(decompress);
        if !decompress {
            s.absorbed_rows.extend(t0..t0 + len);
        }
        t0 += len;
    }
    buf(&mut s.att_out, n * c.n_head * d.v);
    if !s.absorbed_rows.is_empty() {
        absorbed(cx, s, batch, il, a, &d, top_k)?;
    }
    let mut t0 = 0;
    for (si, seq) in batch.seqs.iter().enumerate() {
        let len = seq.tokens.len();
        if s.decompress[si] {
            let pos0 = batch.rows[t0].1;
            decompressed(cx, s, seq.kv.mla(il), t0..t0 + len, pos0, a, &d, top_k)?;
        }
        t0 += len;
    }
    cx.linear
        .forward(pool, &a.wo, 0, &s.att_out[..n * c.n_head * d.v], out)
}

/// How many of a sequence's `m` new rows, at positions `pos0..`, attend densely: all
/// without a selection (`top_k` `None`), else those at positions below `top_k`.
fn dense_rows(m: usize, pos0: usize, top_k: Option<usize>) -> usize {
    top_k.map_or(m, |k| m.min(k.saturating_sub(pos0)))
}

/// MLA in the absorbed form for the batch rows `s.absorbed_rows` (whole sequences);
/// writes their rows of `s.att_out`. With `top_k`, rows past the first `top_k` positions
/// attend to their indexer selection.
#[allow(clippy::too_many_arguments)]
fn absorbed(
    cx: &mut StageCtx<'_>,
    s: &mut MlaScratch,
    batch: &Batch<'_, '_>,
    il: usize,
    a: &MlaWeights,
    d: &MlaDims,
    top_k: Option<usize>,
) -> Result<(), ModelError> {
    let pool = cx.pool;
    let (h_n, nope, rope, lora, v) = (d.heads, d.nope, d.rope, d.lora, d.v);
    let (head_q, lat_w) = (nope + rope, lora + rope);
    let q_w = h_n * head_q;
    let MlaScratch {
        q,
        head_in,
        head_out,
        q_latent,
        attended_latent,
        decompress,
        absorbed_rows: rows,
        att_out,
        attn,
        indexer,
        gathered,
        ..
    } = s;
    let na = rows.len();
    // Absorb W_UK: per head, q_nope (nope) → latent space (lora). The attention query
    // of head h is [q_nope·W_UK, q_pe] (lat_w wide), scored against the cached
    // [c_kv, k_pe] rows, whose c_kv part is also the value. Row i of these buffers
    // is batch row rows[i].
    let head_in = buf(head_in, na * h_n * nope);
    for (i, &t) in rows.iter().enumerate() {
        for h in 0..h_n {
            let src = t * q_w + h * head_q;
            head_in[(i * h_n + h) * nope..(i * h_n + h + 1) * nope]
                .copy_from_slice(&q[src..src + nope]);
        }
    }
    let absorbed_q = buf(head_out, na * h_n * lora);
    cx.linear.forward_slabs(pool, &a.k_b, head_in, absorbed_q)?;
    let q_attn = buf(q_latent, na * h_n * lat_w);
    for (i, &t) in rows.iter().enumerate() {
        for h in 0..h_n {
            let dst = (i * h_n + h) * lat_w;
            let src = (i * h_n + h) * lora;
            q_attn[dst..dst + lora].copy_from_slice(&absorbed_q[src..src + lora]);
            let pe = t * q_w + h * head_q + nope;
            q_attn[dst + lora..dst + lat_w].copy_from_slice(&q[pe..pe + rope]);
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
        scale: cx.config.kq_scale,
    };
    let attended = buf(attended_latent, na * h_n * lora);
    let (mut t0, mut i0) = (0, 0);
    for (si, seq) in batch.seqs.iter().enumerate() {
        let m = seq.tokens.len();
        if !decompress[si] {
            let pos0 = batch.rows[t0].1;
            let latent_cache = seq.kv.mla(il);
            let dense = dense_rows(m, pos0, top_k);
            let opts = AttnOpts {
                int8: cx.linear.int8_attention,
                ..AttnOpts::default()
            };
            attention_with(
                pool,
                &shape,
                opts,
                &q_attn[i0 * h_n * lat_w..(i0 + dense) * h_n * lat_w],
                pos0,
                latent_cache,
                latent_cache,
                &mut attended[i0 * h_n * lora..(i0 + dense) * h_n * lora],
                attn,
            );
            // Each sparse row: its selected rows, gathered, as a context of top_k.
            for j in dense..m {
                let sel = indexer
                    .selection(t0 + j, pos0 + j)
                    .expect("a row past top_k has a selection");
                let g = buf(gathered, sel.len() * lat_w);
                for (row, &p) in g.chunks_exact_mut(lat_w).zip(sel) {
                    latent_cache.read(p as usize * lat_w, row);
                }
                let i = i0 + j;
                attention(
                    pool,
                    &shape,
                    &q_attn[i * h_n * lat_w..(i + 1) * h_n * lat_w],
                    sel.len() - 1,
                    KvData::F32(g),
                    KvData::F32(g),
                    &mut attended[i * h_n * lora..(i + 1) * h_n * lora],
                    attn,
                );
            }
            i0 += m;
        }
        t0 += m;
    }

    // W_UV per head: attended latent (lora) → values (v_head), into the rows' att_out.
    let n = batch.rows.len();
    if na == n {
        cx.linear
            .forward_slabs(pool, &a.v_b, attended, &mut att_out[..n * h_n * v])?;
    } else {
        let values = buf(head_out, na * h_n * v);
        cx.linear.forward_slabs(pool, &a.v_b, attended, values)?;
        for (i, &t) in rows.iter().enumerate() {
            att_out[t * h_n * v..(t + 1) * h_n * v]
                .copy_from_slice(&values[i * h_n * v..(i + 1) * h_n * v]);
        }
    }
    Ok(())
}

/// MLA in the decompressed form for one sequence's new tokens (batch rows `rows`,
/// positions `pos0..`): the cached latents of every position are expanded into per-head
/// keys `[latent·W_UKᵀ, k_pe]` and values `latent·W_UVᵀ`, then ordinary multi-head
/// attention; writes the rows' `s.att_out`. With `top_k`, rows past the first `top_k`
/// positions attend to their indexer selection, one head at a time.
#[allow(clippy::too_many_arguments)]
fn decompressed(
    cx: &mut StageCtx<'_>,
    s: &mut MlaScratch,
    latent_cache: KvData<'_>,
    rows: std::ops::Range<usize>,
    pos0: usize,
    a: &MlaWeights,
    d: &MlaDims,
    top_k: Option<usize>,
) -> Result<(), ModelError> {
    let pool = cx.pool;
    let (h_n, nope, rope, lora, v) = (d.heads, d.nope, d.rope, d.lora, d.v);
    let (head_q, lat_w) = (nope + rope, lora + rope);
    let (t0, len) = (rows.start, rows.len());
    let ctx = pos0 + len;
    let latents = buf(&mut s.latents, ctx * lora);
    for (p, row) in latents.chunks_exact_mut(lora).enumerate() {
        latent_cache.read(p * lat_w, row);
    }
    // k_nope's buffer later holds the head-major values: room for both.
    buf(&mut s.k_nope, ctx * h_n * nope.max(v));
    let k_nope = &mut s.k_nope[..ctx * h_n * nope];
    let values = buf(&mut s.values, ctx * h_n * v);
    let v_b_all = a.v_b.flattened();
    cx.linear.forward_multi(
        pool,
        latents,
        &mut [(&a.k_b_t, &mut *k_nope), (&v_b_all, &mut *values)],
    )?;
    // Keys and values head-major: each head's rows are contiguous, so attention streams
    // them in order (interleaved per position, a head's rows are h_n·head_q floats
    // apart: a new page per position for V3's 128 heads).
    let keys = buf(&mut s.keys, ctx * h_n * head_q);
    let k_pe = buf(&mut s.rope_cache, rope);
    for p in 0..ctx {
        latent_cache.read(p * lat_w + lora, k_pe);
        for h in 0..h_n {
            let dst = (h * ctx + p) * head_q;
            let src = (p * h_n + h) * nope;
            keys[dst..dst + nope].copy_from_slice(&k_nope[src..src + nope]);
            keys[dst + nope..dst + head_q].copy_from_slice(&*k_pe);
        }
    }
    // The head-major values go into k_nope's buffer, consumed by now.
    let values_hm = &mut s.k_nope[..ctx * h_n * v];
    for p in 0..ctx {
        for h in 0..h_n {
            let (dst, src) = ((h * ctx + p) * v, (p * h_n + h) * v);
            values_hm[dst..dst + v].copy_from_slice(&values[src..src + v]);
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
        scale: cx.config.kq_scale,
    };
    let dense = dense_rows(len, pos0, top_k);
    let q = &s.q[t0 * h_n * head_q..(t0 + dense) * h_n * head_q];
    let out = &mut s.att_out[t0 * h_n * v..(t0 + dense) * h_n * v];
    // A q8_KV cache chose int8 attention: the expanded keys and values become int8 rows
    // too (one scale per head's row), read in place by the int8 path.
    if latent_cache.ty() == KvType::Q8Kv
        && cx.linear.int8_attention
        && kernels::attention::int8_available()
    {
        let (kq, kd) = quantize_rows(keys, head_q, &mut s.keys_q, &mut s.keys_d);
        let (vq, vd) = quantize_rows(values_hm, v, &mut s.values_q, &mut s.values_d);
        let opts = AttnOpts {
            int8: true,
            ..AttnOpts::default()
        };
        let k = KvData::Q8Kv {
            row: head_q,
            q: kq,
            d: kd,
        };
        let vv = KvData::Q8Kv {
            row: v,
            q: vq,
            d: vd,
        };
        attention_with(pool, &shape, opts, q, pos0, k, vv, out, &mut s.attn);
    } else {
        attention(
            pool,
            &shape,
            q,
            pos0,
            KvData::F32(keys),
            KvData::F32(values_hm),
            out,
            &mut s.attn,
        );
    }
    // Each sparse row, head by head: the head's selected keys and values, gathered.
    for t in t0 + dense..t0 + len {
        let sel = s
            .indexer
            .selection(t, pos0 + t - t0)
            .expect("a row past top_k has a selection");
        let k_n = sel.len();
        let one_head = AttnShape {
            n_head: 1,
            n_kv_head: 1,
            k_head: k_n * head_q,
            v_head: k_n * v,
            ..shape
        };
        let g = buf(&mut s.gathered, k_n * (head_q + v));
        let (gk, gv) = g.split_at_mut(k_n * head_q);
        for h in 0..h_n {
            for (j, &p) in sel.iter().enumerate() {
                let (src_k, src_v) = ((h * ctx + p as usize) * head_q, (h * ctx + p as usize) * v);
                gk[j * head_q..(j + 1) * head_q].copy_from_slice(&keys[src_k..src_k + head_q]);
                gv[j * v..(j + 1) * v].copy_from_slice(&values_hm[src_v..src_v + v]);
            }
            let q_at = (t * h_n + h) * head_q;
            let out_at = (t * h_n + h) * v;
            attention(
                pool,
                &one_head,
                &s.q[q_at..q_at + head_q],
                k_n - 1,
                KvData::F32(gk),
                KvData::F32(gv),
                &mut s.att_out[out_at..out_at + v],
                &mut s.attn,
            );
        }
    }
    Ok(())
}

/// `x`'s rows of `width` values as q8_KV rows (value + 128, one scale per row) in `q`/`d`.
fn quantize_rows<'a>(
    x: &[f32],
    width: usize,
    q: &'a mut Vec<u8>,
    d: &'a mut Vec<f32>,
) -> (&'a [u8], &'a [f32]) {
    let rows = x.len() / width;
    q.resize(rows * width, 0);
    d.resize(rows, 0.0);
    kernels::kvdata::quantize_q8kv_rows(x, width, &mut q[..rows * width], &mut d[..rows]);
    (&q[..rows * width], &d[..rows])
}
