//! DeepSeek's multi-head latent attention on the GPU, recorded into the layer's one
//! submission like the GQA path: the query path (`attn_q`, or `attn_q_a` → RMSNorm →
//! `attn_q_b`), the latent projection `attn_kv_a_mqa`, RoPE (YaRN included: the step's
//! table is the CPU's `RopeParams::cache`), each sequence's latent cache store
//! (`accel::ops::MlaLatentCache`: the normalised latent and the rotated shared key), then
//! per sequence the form the CPU stage picks by the same rule
//! (`stage::mla::use_decompressed`: always absorbed in the exact mode, and for decode
//! steps and verified drafts):
//!
//! - absorbed: each head's `q_nope` mapped into latent space by its `attn_k_b`, attention
//!   over the cached rows themselves, each head's attended latent mapped to its values by
//!   its `attn_v_b`;
//! - decompressed: the cached latents expanded into every head's keys (`attn_k_b`
//!   transposed) and values (`attn_v_b`), then ordinary multi-head attention. Used only
//!   where each expanded buffer fits one storage binding; otherwise absorbed (the result
//!   differs by rounding only, and the choice depends on the sequence alone).
//!
//! and the output projection. The per-head matmuls are one batched dispatch each (every
//! head's matrix in one `GpuMatrix`, the grid's z picking the head); they read and write
//! head-major buffers (each head's rows back to back); attention works token-major.

use accel::matmul::{GpuMatrix, MatmulKernels, Strided};
use accel::ops::{Grid, MlaDims as GpuDims, MlaLatentCache, Ops, RopeTable, Rows};
use accel::{Gpu, GpuBuffer, Recording};

use super::{ensure, got, layer_kv, layer_slot, matrix, u32_of, vector, LayerKv, PATH};
use crate::backend::{DeviceMatrix, DeviceMla, MlaRule};
use crate::stage::mla::{use_decompressed, MlaDims};
use crate::stage::Batch;
use crate::{Config, ModelError};

/// An MLA layer's buffers on the GPU, grown to the largest step seen, and the form each
/// sequence of the step uses.
#[derive(Default)]
pub(super) struct MlaBuffers {
    /// The compressed queries (`n × q_lora`), the queries (`n × heads × (nope + rope)`),
    /// the `kv_a` rows (`n × (lora + rope)`).
    q_lora: Option<GpuBuffer>,
    q: Option<GpuBuffer>,
    kv: Option<GpuBuffer>,
    /// Absorbed form, for a block of `m` tokens: `q_nope` head-major (`heads × m ×
    /// nope`), its absorption (`heads × m × lora`), the attention queries (`m × heads ×
    /// (lora + rope)`), the attended latents token-major and head-major (`m × heads ×
    /// lora`), the values head-major (`heads × m × v`).
    q_nope: Option<GpuBuffer>,
    absorbed: Option<GpuBuffer>,
    q_attn: Option<GpuBuffer>,
    attended: Option<GpuBuffer>,
    attended_hm: Option<GpuBuffer>,
    values_hm: Option<GpuBuffer>,
    /// Decompressed form, per position of one sequence: the latents (`ctx × lora`), every
    /// head's no-RoPE key (`ctx × heads × nope`), the keys (`ctx × heads × (nope +
    /// rope)`), the values head-major and token-major (`ctx × heads × v`).
    latents: Option<GpuBuffer>,
    k_nope: Option<GpuBuffer>,
    keys: Option<GpuBuffer>,
    dvalues_hm: Option<GpuBuffer>,
    dvalues: Option<GpuBuffer>,
    /// Per sequence of the step: whether it runs decompressed.
    decompress: Vec<bool>,
    /// Tokens per absorbed block: the whole batch when every sequence is absorbed, else
    /// one sequence at a time.
    all_absorbed: bool,
}

/// The accelerator's geometry of `d`.
fn gpu_dims(d: &MlaDims) -> GpuDims {
    GpuDims {
        heads: d.heads,
        nope: d.nope,
        rope: d.rope,
        lora: d.lora,
        v: d.v,
    }
}

/// The batch of per-head matrices `d` (`attn_k_b` or `attn_v_b`), which must hold one
/// matrix per head.
fn per_head<'d>(
    d: &'d DeviceMatrix,
    heads: usize,
    what: &str,
) -> Result<&'d GpuMatrix, ModelError> {
    let w = matrix(d)?;
    if w.batch() != heads {
        return Err(ModelError::Kernel(format!(
            "{what}: {} holds {} matrices for {heads} heads",
            d.name,
            w.batch()
        )));
    }
    Ok(w)
}

/// The model's MLA geometry, or an error naming the layer.
fn dims(c: &Config, what: &str) -> Result<MlaDims, ModelError> {
    MlaDims::of(c).ok_or_else(|| {
        ModelError::Kernel(format!("{what}: MLA weights without an MLA configuration"))
    })
}

/// Whether the decompressed form's buffers for `ctx` positions fit one storage binding
/// each (as `ensure` allocates them: a power of two of bytes).
fn decompressed_fits(gpu: &Gpu, d: &MlaDims, ctx: usize) -> bool {
    let widest = (d.heads * (d.nope + d.rope)).max(d.heads * d.v).max(d.lora);
    ctx.checked_mul(widest)
        .and_then(|f| f.checked_mul(4))
        .is_some_and(|b| (b as u64).next_power_of_two() <= gpu.max_binding())
}

/// Sizes the layer's buffers for `n` tokens (and `att`, the attention output shared with
/// the GQA path), chooses each sequence's form, and makes each sequence's latent cache of
/// layer `il` on its first step.
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare(
    gpu: &Gpu,
    b: &mut MlaBuffers,
    att: &mut Option<GpuBuffer>,
    c: &Config,
    il: usize,
    a: &DeviceMla,
    rule: MlaRule,
    n: usize,
    batch: &mut Batch<'_, '_>,
) -> Result<(), ModelError> {
    let d = dims(c, &format!("layer {il} attention"))?;
    let (hq, lat_w) = (d.nope + d.rope, d.lora + d.rope);
    if let Some((q_a, _)) = &a.q_a {
        ensure(
            gpu,
            &mut b.q_lora,
            "MLA compressed queries",
            n * q_a.n_out,
            false,
        )?;
    }
    ensure(gpu, &mut b.q, "MLA queries", n * d.heads * hq, false)?;
    ensure(gpu, &mut b.kv, "MLA latent rows", n * lat_w, false)?;
    ensure(gpu, att, "attention output", n * d.heads * d.v, false)?;
    b.decompress.clear();
    let (mut block, mut ctx) = (0, 0);
    for seq in batch.seqs.iter() {
        let (len, pos0) = (seq.tokens.len(), seq.kv.len());
        let dec = use_decompressed(rule.form, rule.mode, len, pos0, &d, None)
            && decompressed_fits(gpu, &d, pos0 + len);
        b.decompress.push(dec);
        if dec {
            ctx = ctx.max(pos0 + len);
        } else {
            block = block.max(len);
        }
    }
    b.all_absorbed = b.decompress.iter().all(|&dec| !dec);
    if b.all_absorbed {
        block = n;
    }
    if block > 0 {
        let m = block;
        for (slot, label, floats) in [
            (&mut b.q_nope, "MLA q_nope", m * d.heads * d.nope),
            (&mut b.absorbed, "MLA absorbed q_nope", m * d.heads * d.lora),
            (&mut b.q_attn, "MLA attention queries", m * d.heads * lat_w),
            (
                &mut b.attended,
                "MLA attended latents",
                m * d.heads * d.lora,
            ),
            (
                &mut b.attended_hm,
                "MLA attended latents by head",
                m * d.heads * d.lora,
            ),
            (&mut b.values_hm, "MLA values by head", m * d.heads * d.v),
        ] {
            ensure(gpu, slot, label, floats, false)?;
        }
    }
    if ctx > 0 {
        for (slot, label, floats) in [
            (&mut b.latents, "MLA latents", ctx * d.lora),
            (&mut b.k_nope, "MLA expanded k_nope", ctx * d.heads * d.nope),
            (&mut b.keys, "MLA expanded keys", ctx * d.heads * hq),
            (
                &mut b.dvalues_hm,
                "MLA expanded values by head",
                ctx * d.heads * d.v,
            ),
            (&mut b.dvalues, "MLA expanded values", ctx * d.heads * d.v),
        ] {
            ensure(gpu, slot, label, floats, false)?;
        }
    }
    for seq in batch.seqs.iter_mut() {
        let n_ctx = seq.kv.n_ctx();
        let slot = layer_slot(seq.kv.device_part(), c, il)?;
        if slot.is_none() {
            *slot = Some(LayerKv::Mla(MlaLatentCache::new(
                gpu,
                1,
                n_ctx,
                gpu_dims(&d),
            )?));
        }
    }
    Ok(())
}

/// The layer's buffers shared with the GQA path: the normalised rows (in), the attention
/// output of all heads and its projection (out).
pub(super) struct LayerIo<'a> {
    pub hb: &'a GpuBuffer,
    pub att: &'a GpuBuffer,
    pub o: &'a GpuBuffer,
}

/// One sequence's share of an absorbed block: its first token row within the block, its
/// tokens, its first position, its cache.
struct BlockSeq<'a> {
    row0: usize,
    m: usize,
    pos0: usize,
    cache: &'a MlaLatentCache,
}

/// The recording's fixed inputs: kernels, geometry, weights, buffers.
struct Cx<'a, 'r> {
    ops: &'a Ops,
    mm: &'a MatmulKernels,
    rec: &'a mut Recording<'r>,
    b: &'a MlaBuffers,
    d: MlaDims,
    a: &'a DeviceMla,
    scale: f32,
    what: &'a str,
}

/// Records layer `il`'s MLA from `io.hb` to the output projection in `io.o` (see the
/// module docs), after [`prepare`].
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    ops: &Ops,
    mm: &MatmulKernels,
    rec: &mut Recording<'_>,
    b: &MlaBuffers,
    io: LayerIo<'_>,
    table: &RopeTable,
    c: &Config,
    a: &DeviceMla,
    n: usize,
    batch: &mut Batch<'_, '_>,
    il: usize,
) -> Result<(), ModelError> {
    let what = format!("layer {il} attention");
    let d = dims(c, &what)?;
    let (hq, lat_w) = (d.nope + d.rope, d.lora + d.rope);
    let q_w = d.heads * hq;
    let (q, kv) = (got(&b.q), got(&b.kv));
    let n32 = u32_of(n, &what)?;
    let eps = c.rms_eps;
    if b.decompress.len() != batch.seqs.len() {
        return Err(ModelError::Kernel(format!(
            "{what}: the step's forms were not chosen (prepare)"
        )));
    }

    // Queries: plain, or compressed → normalised → expanded; the latent rows.
    match &a.q_a {
        Some((q_a, norm)) => {
            let ql = got(&b.q_lora);
            let r = q_a.n_out;
            mm.record_path(PATH, rec, matrix(q_a)?, io.hb, 0, ql, 0, n32)?;
            ops.rms_norm(
                rec,
                Rows::dense(ql, r),
                None,
                n,
                r,
                Some(vector(norm)?),
                eps,
            )?;
            mm.record_path(PATH, rec, matrix(&a.q)?, ql, 0, q, 0, n32)?;
        }
        None => mm.record_path(PATH, rec, matrix(&a.q)?, io.hb, 0, q, 0, n32)?,
    }
    mm.record_path(PATH, rec, matrix(&a.kv_a)?, io.hb, 0, kv, 0, n32)?;
    ops.rope(
        rec,
        Rows::dense(q, q_w),
        n,
        d.heads,
        hq,
        d.nope,
        table,
        0,
        c.rope.mode,
    )?;
    let kv_norm = vector(&a.kv_a_norm)?;

    // Each sequence's latents into its cache, then its attention.
    let mut seqs = Vec::with_capacity(batch.seqs.len());
    let mut t0 = 0;
    for seq in batch.seqs.iter_mut() {
        let (m, pos0) = (seq.tokens.len(), seq.kv.len());
        let Some(LayerKv::Mla(cache)) = layer_kv(seq, il) else {
            return Err(ModelError::Kernel(format!(
                "{what}: a sequence without its latent cache on the device"
            )));
        };
        cache.append(
            ops,
            rec,
            0,
            pos0,
            m,
            Rows::at(kv, t0 * lat_w, lat_w),
            kv_norm,
            eps,
            table,
            t0,
            c.rope.mode,
        )?;
        seqs.push((t0, m, pos0, cache));
        t0 += m;
    }
    let mut cx = Cx {
        ops,
        mm,
        rec,
        b,
        d,
        a,
        scale: c.kq_scale,
        what: &what,
    };
    if b.all_absorbed {
        let block: Vec<BlockSeq<'_>> = seqs
            .iter()
            .map(|&(t0, m, pos0, cache)| BlockSeq {
                row0: t0,
                m,
                pos0,
                cache,
            })
            .collect();
        absorbed(&mut cx, io.att, 0, n, &block)?;
    } else {
        for (&(t0, m, pos0, cache), &dec) in seqs.iter().zip(&b.decompress) {
            if dec {
                decompressed(&mut cx, io.att, t0, m, pos0, cache)?;
            } else {
                let one = [BlockSeq {
                    row0: 0,
                    m,
                    pos0,
                    cache,
                }];
                absorbed(&mut cx, io.att, t0, m, &one)?;
            }
        }
    }
    let wo = matrix(&a.wo)?;
    mm.record_path(PATH, cx.rec, wo, io.att, 0, io.o, 0, n32)?;
    Ok(())
}

/// The absorbed form for the `m` token rows `tok0..` of the batch (whole sequences,
/// `seqs`, their rows relative to `tok0`), into their rows of `att`.
fn absorbed(
    cx: &mut Cx<'_, '_>,
    att: &GpuBuffer,
    tok0: usize,
    m: usize,
    seqs: &[BlockSeq<'_>],
) -> Result<(), ModelError> {
    let d = cx.d;
    let (h_n, nope, lora, v) = (d.heads, d.nope, d.lora, d.v);
    let (hq, lat_w) = (d.nope + d.rope, d.lora + d.rope);
    let b = cx.b;
    let (q, q_nope, absorbed) = (got(&b.q), got(&b.q_nope), got(&b.absorbed));
    let (q_attn, attended) = (got(&b.q_attn), got(&b.attended));
    let (attended_hm, values_hm) = (got(&b.attended_hm), got(&b.values_hm));
    let m32 = u32_of(m, cx.what)?;
    // q_nope head-major: row (h, t) ← query t's head h.
    cx.ops.copy_grid(
        cx.rec,
        Grid {
            buf: q,
            offset: tok0 * h_n * hq,
            outer: hq,
            inner: h_n * hq,
        },
        Grid {
            buf: q_nope,
            offset: 0,
            outer: m * nope,
            inner: nope,
        },
        h_n,
        m,
        nope,
    )?;
    // Every head's q_nope · W_UK in one dispatch.
    cx.mm.record_batched(
        PATH,
        cx.rec,
        per_head(&cx.a.k_b, h_n, cx.what)?,
        Strided::at(q_nope, 0, u32_of(m * nope, cx.what)?),
        Strided::at(absorbed, 0, u32_of(m * lora, cx.what)?),
        m32,
    )?;
    // Attention queries [q_nope·W_UK, q_pe], token-major.
    cx.ops.copy_grid(
        cx.rec,
        Grid {
            buf: absorbed,
            offset: 0,
            outer: m * lora,
            inner: lora,
        },
        Grid {
            buf: q_attn,
            offset: 0,
            outer: lat_w,
            inner: h_n * lat_w,
        },
        h_n,
        m,
        lora,
    )?;
    cx.ops.copy_rows(
        cx.rec,
        Rows::at(q, tok0 * h_n * hq + nope, hq),
        Rows::at(q_attn, lora, lat_w),
        m * h_n,
        d.rope,
        1,
    )?;
    for s in seqs {
        s.cache.absorbed_attention(
            cx.ops, cx.rec, 0, cx.scale, None, q_attn, s.row0, s.m, s.pos0, attended,
        )?;
    }
    // W_UV per head (every head in one dispatch), then the values back token-major into
    // the rows of `att`.
    cx.ops
        .transpose_heads(cx.rec, attended, attended_hm, m, h_n, lora, true)?;
    cx.mm.record_batched(
        PATH,
        cx.rec,
        per_head(&cx.a.v_b, h_n, cx.what)?,
        Strided::at(attended_hm, 0, u32_of(m * lora, cx.what)?),
        Strided::at(values_hm, 0, u32_of(m * v, cx.what)?),
        m32,
    )?;
    cx.ops.copy_grid(
        cx.rec,
        Grid {
            buf: values_hm,
            offset: 0,
            outer: m * v,
            inner: v,
        },
        Grid {
            buf: att,
            offset: tok0 * h_n * v,
            outer: v,
            inner: h_n * v,
        },
        h_n,
        m,
        v,
    )?;
    Ok(())
}

/// The decompressed form for one sequence's `m` token rows `tok0..` at positions
/// `pos0..`, into their rows of `att`.
fn decompressed(
    cx: &mut Cx<'_, '_>,
    att: &GpuBuffer,
    tok0: usize,
    m: usize,
    pos0: usize,
    cache: &MlaLatentCache,
) -> Result<(), ModelError> {
    let d = cx.d;
    let (h_n, v) = (d.heads, d.v);
    let ctx = pos0 + m;
    let b = cx.b;
    let (latents, k_nope, keys) = (got(&b.latents), got(&b.k_nope), got(&b.keys));
    let (values_hm, values) = (got(&b.dvalues_hm), got(&b.dvalues));
    let ctx32 = u32_of(ctx, cx.what)?;
    cache.gather_latents(cx.ops, cx.rec, 0, ctx, latents)?;
    let k_b_t = matrix(&cx.a.k_b_t)?;
    cx.mm
        .record_path(PATH, cx.rec, k_b_t, latents, 0, k_nope, 0, ctx32)?;
    cache.decompressed_keys(cx.ops, cx.rec, 0, ctx, k_nope, keys)?;
    // Every head's values from the same latents (x stride 0), in one dispatch.
    cx.mm.record_batched(
        PATH,
        cx.rec,
        per_head(&cx.a.v_b, h_n, cx.what)?,
        Strided::at(latents, 0, 0),
        Strided::at(values_hm, 0, u32_of(ctx * v, cx.what)?),
        ctx32,
    )?;
    cx.ops
        .transpose_heads(cx.rec, values_hm, values, ctx, h_n, v, false)?;
    cx.ops.mla_decompressed_attention(
        cx.rec,
        gpu_dims(&d),
        cx.scale,
        got(&b.q),
        tok0,
        m,
        pos0,
        keys,
        values,
        att,
    )?;
    Ok(())
}
