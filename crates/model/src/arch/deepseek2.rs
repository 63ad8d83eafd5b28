//! DeepSeek-V2 / V2-Lite / V2.5 / V3 / R1, Kimi-K2, Moonlight: multi-head latent
//! attention (MLA) and DeepSeekMoE.
//!
//! - Queries come from `attn_q` (no q compression, V2-Lite) or `attn_q_a` → RMSNorm →
//!   `attn_q_b`. Which one is decided by the missing `attention.q_lora_rank` key / the
//!   tensors present, never by the layer count.
//! - Keys and values come from one latent: `attn_kv_a_mqa` gives `kv_lora` latent values
//!   (RMS-normalised by `attn_kv_a_norm`) and a `qk_rope`-wide key shared by all heads,
//!   rotated with NORM-layout RoPE. We run the *absorbed* form: per head, `attn_k_b`
//!   maps the query's no-RoPE part into latent space and `attn_v_b` maps the attended
//!   latent to the head's values, so the cache holds only the latent and the RoPE key.
//!   Long prompts instead decompress the cached latents into per-head keys and values
//!   (`attn_k_b` transposed, computed at load, and `attn_v_b`) when that costs less; see
//!   `stage::mla::mla_decompress_pays`.
//! - YaRN: llama.cpp's pre-scaling — the RoPE magnitude is cancelled and the attention
//!   scale becomes `mscale² / sqrt(qk_nope + qk_rope)` with
//!   `mscale = 1 + yarn_log_multiplier · ln(factor)`.
//! - MoE: softmax (V2) or sigmoid (V3) scores, `exp_probs_b` bias for selection only,
//!   group-limited top-k, optional renormalisation, `expert_weights_scale`, shared experts.

use kernels::rope::{deepseek2_yarn_scales, RopeMode};

use super::Hparams;
use crate::config::{Arch, Config, Gating, MlaConfig};
use crate::weights::{Attention, Binder, Matrix, MlaWeights};
use crate::ModelError;
use gguf::GgmlType;

pub(crate) fn config(hp: &Hparams, n_vocab: usize) -> Result<Config, ModelError> {
    let mut c = hp.base(Arch::Deepseek2, n_vocab)?;
    let bad = |problem: String| ModelError::BadConfig {
        file: hp.md.file().to_string(),
        problem,
    };
    let kv_lora_rank = hp.usize("attention.kv_lora_rank")?;
    let qk_rope = hp.usize("rope.dimension_count")?;
    // Files converted since the attn_kv_b split carry the per-head sizes in *_mla keys
    // (key_length is then the latent width kv_lora + rope).
    let head_k = match hp.opt_usize("attention.key_length_mla")? {
        Some(k) => k,
        None => c.head_dim,
    };
    let v_head = match hp.opt_usize("attention.value_length_mla")? {
        Some(v) => v,
        None => c.head_dim_v,
    };
    if qk_rope == 0 || qk_rope % 2 != 0 || head_k <= qk_rope {
        return Err(bad(format!(
            "MLA head width {head_k} must exceed the even RoPE width {qk_rope}"
        )));
    }
    let q_lora_rank = hp.opt_usize("attention.q_lora_rank")?.filter(|&r| r > 0);
    c.mla = Some(MlaConfig {
        q_lora_rank,
        kv_lora_rank,
        qk_nope: head_k - qk_rope,
        qk_rope,
        v_head,
        indexer: None,
    });
    c.head_dim = head_k;
    c.head_dim_v = v_head;

    let mut rope = hp.rope(qk_rope, RopeMode::Norm)?;
    let log_mul = hp
        .opt_f32("rope.scaling.yarn_log_multiplier")?
        .unwrap_or(0.0);
    let (rope_attn, kq_mscale) =
        deepseek2_yarn_scales(rope.attn_factor, rope.freq_scale, rope.ext_factor, log_mul);
    rope.attn_factor = rope_attn;
    c.rope = rope;
    c.kq_scale = kq_mscale * kq_mscale / (head_k as f32).sqrt();

    let gating = hp.gating(Gating::Softmax)?;
    let norm = hp.opt_bool("expert_weights_norm")?.unwrap_or(false);
    if let Some(mut m) = hp.moe(gating, norm)? {
        m.n_shared = hp.opt_usize("expert_shared_count")?.unwrap_or(0);
        m.shared_ffn = m.n_shared * m.expert_ffn;
        m.weights_scale = hp.opt_f32("expert_weights_scale")?.unwrap_or(1.0);
        m.leading_dense = hp.opt_usize("leading_dense_block_count")?.unwrap_or(0);
        hp.expert_groups(&mut m)?;
        c.moe = Some(m);
    }
    Ok(c)
}

/// Binds the MLA attention of layer `il`.
pub(crate) fn bind_mla(b: &Binder, c: &Config, il: usize) -> Result<Attention, ModelError> {
    let m = c.mla.as_ref().expect("deepseek2 config has MLA");
    let p = |n: &str| format!("blk.{il}.{n}");
    let q_width = c.n_head * (m.qk_nope + m.qk_rope);
    // Decide the query path from the tensors present; the key may be absent (V2-Lite).
    let (q_a, q_a_norm, q) = if b.has(&p("attn_q.weight")) {
        (None, None, b.matrix(&p("attn_q.weight"), c.dim, q_width)?)
    } else {
        let rank = match m.q_lora_rank {
            Some(r) => r,
            None => b.file.tensor(&p("attn_q_a.weight"))?.ne[1] as usize,
        };
        (
            Some(b.matrix(&p("attn_q_a.weight"), c.dim, rank)?),
            Some(b.vector(&p("attn_q_a_norm.weight"), rank)?),
            b.matrix(&p("attn_q_b.weight"), rank, q_width)?,
        )
    };
    let (k_b, v_b) = if !b.has(&p("attn_k_b.weight")) && b.has(&p("attn_kv_b.weight")) {
        let kv_b = b.matrix(
            &p("attn_kv_b.weight"),
            m.kv_lora_rank,
            c.n_head * (m.qk_nope + m.v_head),
        )?;
        split_kv_b(&kv_b, c.n_head, m.qk_nope, m.v_head)?
    } else {
        (
            b.stack(&p("attn_k_b.weight"), m.qk_nope, m.kv_lora_rank, c.n_head)?,
            b.stack(&p("attn_v_b.weight"), m.kv_lora_rank, m.v_head, c.n_head)?,
        )
    };
    // (F32 if the rows are not whole Q8_0 blocks; no released model has such a rank.)
    let k_b_t_ty = if m.kv_lora_rank.is_multiple_of(32) {
        GgmlType::Q8_0
    } else {
        GgmlType::F32
    };
    let k_b_t = transpose_k_b(&k_b, k_b_t_ty)?;
    Ok(Attention::Mla(MlaWeights {
        q_a,
        q_a_norm,
        q,
        kv_a: b.matrix(
            &p("attn_kv_a_mqa.weight"),
            c.dim,
            m.kv_lora_rank + m.qk_rope,
        )?,
        kv_a_norm: b.vector(&p("attn_kv_a_norm.weight"), m.kv_lora_rank)?,
        k_b,
        k_b_t,
        v_b,
        wo: b.matrix(&p("attn_output.weight"), c.n_head * m.v_head, c.dim)?,
        indexer: None,
    }))
}

/// `attn_k_b` and `attn_v_b` rebuilt from the fused `attn_kv_b` of files converted before
/// llama.cpp split it (DeepSeek-V2/V2.5/V3/R1 GGUFs from before April 2025; ik_llama.cpp
/// does the same at load). `attn_kv_b` maps the latent (`kv_lora`) to, per head, `qk_nope`
/// key rows then `v_head` value rows. The value rows are `attn_v_b` as they are, copied in
/// the stored type. The key rows are `attn_k_b` transposed (per head `kv_lora` rows of
/// `qk_nope`): dequantized, transposed and stored in the same type when it is a float type
/// (so the result is exactly what a split conversion of the same weights holds), else as
/// Q8_0 (F32 when `qk_nope` is not a whole number of Q8_0 blocks).
pub fn split_kv_b(
    kv_b: &Matrix,
    n_head: usize,
    qk_nope: usize,
    v_head: usize,
) -> Result<(Matrix, Matrix), ModelError> {
    let lora = kv_b.n_in;
    let per_head = qk_nope + v_head;
    let err = |e: quant::QuantError| ModelError::Kernel(format!("{}: {e}", kv_b.name()));
    if kv_b.n_out != n_head * per_head || kv_b.n_slab != 1 {
        return Err(ModelError::Kernel(format!(
            "{}: {} x {} rows do not hold {n_head} heads of {qk_nope} key + {v_head} value rows",
            kv_b.name(),
            kv_b.n_slab,
            kv_b.n_out
        )));
    }
    let rb = kv_b.row_bytes();
    let data = kv_b.data();
    let mut v_bytes = Vec::with_capacity(n_head * v_head * rb);
    let mut k = vec![0f32; n_head * qk_nope * lora];
    let mut rows = vec![0f32; qk_nope * lora];
    for h in 0..n_head {
        let head = &data[h * per_head * rb..(h + 1) * per_head * rb];
        let (keys, values) = head.split_at(qk_nope * rb);
        v_bytes.extend_from_slice(values);
        quant::dequantize(kv_b.ty, keys, &mut rows).map_err(err)?;
        // rows: qk_nope rows of kv_lora; attn_k_b's slab: kv_lora rows of qk_nope.
        let slab = &mut k[h * qk_nope * lora..(h + 1) * qk_nope * lora];
        for (i, row) in rows.chunks_exact(lora).enumerate() {
            for (r, &x) in row.iter().enumerate() {
                slab[r * qk_nope + i] = x;
            }
        }
    }
    let k_ty = match kv_b.ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => kv_b.ty,
        _ if qk_nope.is_multiple_of(32) => GgmlType::Q8_0,
        _ => GgmlType::F32,
    };
    let k_rb = k_ty.row_bytes(qk_nope as u64).ok_or_else(|| {
        ModelError::Kernel(format!("{}: qk_nope {qk_nope} too large", kv_b.name()))
    })? as usize;
    let mut k_bytes = vec![0u8; k_rb * lora * n_head];
    quant::quantize(k_ty, &k, &mut k_bytes).map_err(err)?;
    let k_b = Matrix::derived(
        format!("{} (key rows, transposed)", kv_b.name()),
        k_ty,
        qk_nope,
        lora,
        n_head,
        k_bytes,
    )?;
    let v_b = Matrix::derived(
        format!("{} (value rows)", kv_b.name()),
        kv_b.ty,
        lora,
        v_head,
        n_head,
        v_bytes,
    )?;
    Ok((k_b, v_b))
}

/// `attn_k_b` (per head: `kv_lora` rows of `qk_nope`) transposed and stacked into one
/// `kv_lora` → `n_head · qk_nope` matrix, so that a single matmul turns cached latents
/// into every head's no-RoPE key, stored as `ty`. The model uses Q8_0 (re-quantized from
/// the file's type along the other axis; Q8_0's ~0.4% error is small next to the file's own
/// 5-bit blocks); F32 makes the decompressed form exactly equivalent (tests).
pub fn transpose_k_b(k_b: &Matrix, ty: GgmlType) -> Result<Matrix, ModelError> {
    let (nope, lora, heads) = (k_b.n_in, k_b.n_out, k_b.n_slab);
    let name = format!("{} (transposed)", k_b.name());
    let err = |e: quant::QuantError| ModelError::Kernel(format!("{name}: {e}"));
    let mut src = vec![0f32; nope * lora * heads];
    quant::dequantize(k_b.ty, k_b.data(), &mut src).map_err(err)?;
    let mut t = vec![0f32; src.len()];
    for h in 0..heads {
        let slab = &src[h * lora * nope..(h + 1) * lora * nope];
        let out = &mut t[h * lora * nope..(h + 1) * lora * nope];
        for r in 0..lora {
            for i in 0..nope {
                out[i * lora + r] = slab[r * nope + i];
            }
        }
    }
    let rb = ty
        .row_bytes(lora as u64)
        .ok_or_else(|| ModelError::Kernel(format!("{name}: kv_lora {lora} too large")))?
        as usize;
    let mut bytes = vec![0u8; rb * nope * heads];
    quant::quantize(ty, &t, &mut bytes).map_err(err)?;
    Matrix::derived(name, ty, lora, heads * nope, 1, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fused `attn_kv_b` of `ty` with `n_head` heads of `nope` key + `v` value rows of
    /// `lora` values, and its values as stored (after quantization).
    fn kv_b(ty: GgmlType, lora: usize, n_head: usize, nope: usize, v: usize) -> (Matrix, Vec<f32>) {
        let rows = n_head * (nope + v);
        let vals: Vec<f32> = (0..rows * lora)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
            .collect();
        let mut bytes = vec![0u8; ty.row_bytes(lora as u64).unwrap() as usize * rows];
        quant::quantize(ty, &vals, &mut bytes).unwrap();
        let mut stored = vec![0f32; vals.len()];
        quant::dequantize(ty, &bytes, &mut stored).unwrap();
        let m = Matrix::derived("blk.0.attn_kv_b.weight".into(), ty, lora, rows, 1, bytes).unwrap();
        (m, stored)
    }

    fn values(m: &Matrix) -> Vec<f32> {
        let mut v = vec![0f32; m.n_in * m.n_out * m.n_slab];
        quant::dequantize(m.ty, m.data(), &mut v).unwrap();
        v
    }

    #[test]
    fn quantized_kv_b_splits_into_value_rows_and_transposed_key_rows() {
        // Q8_0 keys when qk_nope is whole Q8_0 blocks, F32 (exact) otherwise.
        for (nope, k_ty, tol) in [(64, GgmlType::Q8_0, 0.1 / 127.0), (48, GgmlType::F32, 0.0)] {
            let (lora, heads, v) = (64, 3, 32);
            let (fused, stored) = kv_b(GgmlType::Q8_0, lora, heads, nope, v);
            let (k_b, v_b) = split_kv_b(&fused, heads, nope, v).unwrap();
            assert_eq!(
                (k_b.ty, k_b.n_in, k_b.n_out, k_b.n_slab),
                (k_ty, nope, lora, heads)
            );
            assert_eq!(
                (v_b.ty, v_b.n_in, v_b.n_out, v_b.n_slab),
                (GgmlType::Q8_0, lora, v, heads)
            );
            let rb = fused.row_bytes();
            for h in 0..heads {
                let first_v = h * (nope + v) + nope;
                assert_eq!(v_b.slab(h), &fused.data()[first_v * rb..(first_v + v) * rb]);
            }
            let k = values(&k_b);
            for h in 0..heads {
                for r in 0..lora {
                    for i in 0..nope {
                        let want = stored[(h * (nope + v) + i) * lora + r];
                        let got = k[(h * lora + r) * nope + i];
                        assert!((got - want).abs() <= tol, "h{h} r{r} i{i}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn float_kv_b_keeps_its_type_exactly() {
        let (lora, heads, nope, v) = (32, 2, 16, 8);
        let (fused, stored) = kv_b(GgmlType::F16, lora, heads, nope, v);
        let (k_b, v_b) = split_kv_b(&fused, heads, nope, v).unwrap();
        assert_eq!((k_b.ty, v_b.ty), (GgmlType::F16, GgmlType::F16));
        let k = values(&k_b);
        for h in 0..heads {
            for r in 0..lora {
                for i in 0..nope {
                    assert_eq!(
                        k[(h * lora + r) * nope + i],
                        stored[(h * (nope + v) + i) * lora + r]
                    );
                }
            }
        }
    }

    #[test]
    fn kv_b_of_the_wrong_height_is_refused() {
        let (fused, _) = kv_b(GgmlType::F32, 32, 2, 16, 8);
        let e = split_kv_b(&fused, 3, 16, 8).unwrap_err().to_string();
        assert!(
            e.contains("attn_kv_b") && e.contains("3 heads of 16 key + 8 value rows"),
            "{e}"
        );
    }
}
