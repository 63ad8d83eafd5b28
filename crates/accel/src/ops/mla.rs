//! DeepSeek's multi-head latent attention on the GPU: the latent cache (`kv_lora_rank`
//! normalised latent + `qk_rope` rotated shared key per position) and the attention core of
//! both forms of the CPU stage (`model::stage::mla`):
//!
//! - absorbed (decode): the queries `[q_nope·W_UK, q_pe]` (`lora + rope` wide, one per
//!   head) attend over the cached rows themselves, whose first `lora` values are also the
//!   value: [`MlaLatentCache::absorbed_attention`], with [`Ops::mla_q_nope`] and
//!   [`Ops::mla_absorbed_queries`] gathering and assembling the queries around the
//!   per-head `W_UK` matmul;
//! - decompressed (prompts): the cached latents ([`MlaLatentCache::gather_latents`]) are
//!   expanded by matmuls into per-head `k_nope` and values, the keys `[k_nope, k_pe]` are
//!   assembled ([`MlaLatentCache::decompressed_keys`]) and ordinary multi-head attention
//!   runs over them ([`Ops::mla_decompressed_attention`]).
//!
//! The projections (`W_UK`, `W_UV`, their flattened forms) are matmuls and are not here.

use kernels::attention::AttnShape;
use kernels::rope::RopeMode;

use super::{GpuAttn, Ops, RopeTable, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, Gpu, GpuBuffer};

/// MLA head geometry (the CPU stage's `MlaDims`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaDims {
    pub heads: usize,
    /// `qk_nope_head_dim`, `qk_rope_head_dim`, `kv_lora_rank`, `v_head_dim`.
    pub nope: usize,
    pub rope: usize,
    pub lora: usize,
    pub v: usize,
}

impl MlaDims {
    /// A query head: `nope + rope`.
    pub fn head_q(&self) -> usize {
        self.nope + self.rope
    }
    /// A cached row: `lora + rope`.
    pub fn latent_row(&self) -> usize {
        self.lora + self.rope
    }
}

/// One sequence's latent cache: per layer `n_ctx` rows of `lora + rope` floats.
#[derive(Debug)]
pub struct MlaLatentCache {
    pub dims: MlaDims,
    pub n_ctx: usize,
    layers: Vec<GpuBuffer>,
    adapter: String,
}

impl MlaLatentCache {
    /// Zeroed caches for `n_layers` layers at `n_ctx` positions (each layer within one
    /// storage binding, else an error naming `--ctx`).
    pub fn new(
        gpu: &Gpu,
        n_layers: usize,
        n_ctx: usize,
        dims: MlaDims,
    ) -> Result<MlaLatentCache, AccelError> {
        let bytes = (n_ctx as u64)
            .saturating_mul(dims.latent_row() as u64)
            .saturating_mul(4);
        let mut layers = Vec::with_capacity(n_layers);
        for il in 0..n_layers {
            let what = format!("layer {il}'s latent cache at --ctx {n_ctx}");
            if bytes > gpu.max_binding() {
                return Err(AccelError::TooLarge {
                    what: format!("{what} (a smaller --ctx fits)"),
                    bytes,
                    limit: gpu.max_binding(),
                    adapter: gpu.name().to_string(),
                });
            }
            layers.push(gpu.zeroed(&what, bytes)?);
        }
        Ok(MlaLatentCache {
            dims,
            n_ctx,
            layers,
            adapter: gpu.name().to_string(),
        })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `il`'s cache buffer (`n_ctx × (lora + rope)`).
    pub fn layer(&self, il: usize) -> Result<&GpuBuffer, AccelError> {
        self.layers.get(il).ok_or_else(|| AccelError::Validation {
            what: "MLA latent cache".into(),
            adapter: self.adapter.clone(),
            reason: format!("layer {il} of a cache of {} layers", self.layers.len()),
        })
    }

    fn check_positions(&self, ops: &Ops, what: &str, end: usize) -> Result<(), AccelError> {
        if end > self.n_ctx {
            return Err(ops.bad(
                what,
                format!(
                    "positions up to {end} past the cache's {} (--ctx)",
                    self.n_ctx
                ),
            ));
        }
        Ok(())
    }

    /// Records the store of `n` new positions `pos0..` of layer `il` from `kv` (rows of
    /// `lora + rope`: the `kv_a` projection, left unchanged): the latent part RMS-normalised
    /// with `kv_a_norm` (`eps`), the RoPE part rotated by table rows `table_row0..`, as the
    /// CPU stage does before its cache store.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        pos0: usize,
        n: usize,
        kv: Rows<'_>,
        kv_a_norm: &GpuBuffer,
        eps: f32,
        table: &RopeTable,
        table_row0: usize,
        mode: RopeMode,
    ) -> Result<(), AccelError> {
        const OP: &str = "MLA cache append";
        self.check_positions(ops, OP, pos0 + n)?;
        let d = self.dims;
        let w = d.latent_row();
        if table.n_dims != d.rope {
            return Err(ops.bad(
                OP,
                format!(
                    "a rope table of {} values for {} RoPE dims",
                    table.n_dims, d.rope
                ),
            ));
        }
        let cache = self.layer(il)?;
        let at = |col: usize| Rows::at(cache, pos0 * w + col, w);
        ops.rms_norm(rec, kv, Some(at(0)), n, d.lora, Some(kv_a_norm), eps)?;
        let kv_pe = Rows::at(kv.buf, kv.offset + d.lora, kv.stride);
        ops.copy_rows(rec, kv_pe, at(d.lora), n, d.rope, 1)?;
        ops.rope(rec, at(0), n, 1, w, d.lora, table, table_row0, mode)
    }

    /// Absorbed form: `attended[t, h] = Σ_p softmax_p(scale · q_attn[t, h] · row_p) ·
    /// latent_p` over positions `0..=pos0+t` of layer `il` (`q_attn`: `n_head × (lora +
    /// rope)` per token, from [`Ops::mla_absorbed_queries`]; `attended`: `n_head × lora`
    /// per token; both from token row `token0`). The CPU stage's absorbed attention call.
    #[allow(clippy::too_many_arguments)]
    pub fn absorbed_attention(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        scale: f32,
        q_attn: &GpuBuffer,
        token0: usize,
        n_tokens: usize,
        pos0: usize,
        attended: &GpuBuffer,
    ) -> Result<(), AccelError> {
        self.check_positions(ops, "MLA attention", pos0 + n_tokens)?;
        let d = self.dims;
        let w = d.latent_row();
        let a = GpuAttn {
            shape: AttnShape {
                n_head: d.heads,
                n_kv_head: 1,
                dk: w,
                dv: d.lora,
                k_stride: w,
                v_stride: w,
                v_offset: 0,
                k_head: w,
                v_head: d.lora,
                scale,
            },
            window: None,
            sinks: None,
        };
        let cache = self.layer(il)?;
        ops.attention(
            rec, &a, q_attn, token0, n_tokens, pos0, cache, cache, attended,
        )
    }

    /// Decompressed form, step 1: the latents of positions `0..n_pos` of layer `il`, back
    /// to back (`n_pos × lora`) into `latents`, the input of the `W_UK`/`W_UV` matmuls.
    pub fn gather_latents(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        n_pos: usize,
        latents: &GpuBuffer,
    ) -> Result<(), AccelError> {
        self.check_positions(ops, "MLA latent gather", n_pos)?;
        let d = self.dims;
        ops.copy_rows(
            rec,
            Rows::at(self.layer(il)?, 0, d.latent_row()),
            Rows::dense(latents, d.lora),
            n_pos,
            d.lora,
            1,
        )
    }

    /// Decompressed form, step 3: the keys of positions `0..n_pos`, `keys[p, h] =
    /// [k_nope[p, h], k_pe[p]]` (`n_pos × heads × (nope + rope)`), from the expanded
    /// `k_nope` (`n_pos × heads × nope`) and the cached shared RoPE keys.
    pub fn decompressed_keys(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        n_pos: usize,
        k_nope: &GpuBuffer,
        keys: &GpuBuffer,
    ) -> Result<(), AccelError> {
        self.check_positions(ops, "MLA keys", n_pos)?;
        let d = self.dims;
        let hq = d.head_q();
        let rows = n_pos * d.heads;
        ops.copy_rows(
            rec,
            Rows::dense(k_nope, d.nope),
            Rows::dense(keys, hq),
            rows,
            d.nope,
            1,
        )?;
        ops.copy_rows(
            rec,
            Rows::at(self.layer(il)?, d.lora, d.latent_row()),
            Rows::at(keys, d.nope, hq),
            rows,
            d.rope,
            d.heads,
        )
    }
}

impl Ops {
    /// Absorbed form, step 1: every head's `q_nope` (`n_tokens × heads × nope`, back to
    /// back) from the queries `q` (`n_tokens × heads × (nope + rope)`), the input of the
    /// per-head `W_UK` matmul.
    pub fn mla_q_nope(
        &self,
        rec: &mut Recording<'_>,
        d: MlaDims,
        q: &GpuBuffer,
        n_tokens: usize,
        q_nope: &GpuBuffer,
    ) -> Result<(), AccelError> {
        self.copy_rows(
            rec,
            Rows::dense(q, d.head_q()),
            Rows::dense(q_nope, d.nope),
            n_tokens * d.heads,
            d.nope,
            1,
        )
    }

    /// Absorbed form, step 3: the attention queries `q_attn[t, h] = [absorbed[t, h],
    /// q_pe[t, h]]` (`n_tokens × heads × (lora + rope)`) from the `W_UK` matmul's output
    /// `absorbed` (`n_tokens × heads × lora`) and the rotated `q_pe` part of `q`.
    pub fn mla_absorbed_queries(
        &self,
        rec: &mut Recording<'_>,
        d: MlaDims,
        absorbed: &GpuBuffer,
        q: &GpuBuffer,
        n_tokens: usize,
        q_attn: &GpuBuffer,
    ) -> Result<(), AccelError> {
        let rows = n_tokens * d.heads;
        let w = d.latent_row();
        self.copy_rows(
            rec,
            Rows::dense(absorbed, d.lora),
            Rows::dense(q_attn, w),
            rows,
            d.lora,
            1,
        )?;
        self.copy_rows(
            rec,
            Rows::at(q, d.nope, d.head_q()),
            Rows::at(q_attn, d.lora, w),
            rows,
            d.rope,
            1,
        )
    }

    /// Decompressed form, step 4: multi-head attention of `n_tokens` queries (`q`, rows
    /// of `heads × (nope + rope)` from token `token0`) at positions `pos0..` over the
    /// assembled `keys` (`n_pos × heads × (nope + rope)`) and the expanded `values`
    /// (`n_pos × heads × v`, the flattened `W_UV` matmul's output), into `out` (`heads × v`
    /// per token from `token0`). The CPU stage's decompressed attention call (there the
    /// buffers are head-major; the sums are the same).
    #[allow(clippy::too_many_arguments)]
    pub fn mla_decompressed_attention(
        &self,
        rec: &mut Recording<'_>,
        d: MlaDims,
        scale: f32,
        q: &GpuBuffer,
        token0: usize,
        n_tokens: usize,
        pos0: usize,
        keys: &GpuBuffer,
        values: &GpuBuffer,
        out: &GpuBuffer,
    ) -> Result<(), AccelError> {
        let hq = d.head_q();
        let a = GpuAttn {
            shape: AttnShape {
                n_head: d.heads,
                n_kv_head: d.heads,
                dk: hq,
                dv: d.v,
                k_stride: d.heads * hq,
                v_stride: d.heads * d.v,
                v_offset: 0,
                k_head: hq,
                v_head: d.v,
                scale,
            },
            window: None,
            sinks: None,
        };
        self.attention(rec, &a, q, token0, n_tokens, pos0, keys, values, out)
    }
}
