//! Grouped-query attention over a KV cache in GPU memory ([`GpuKvCache`]), as
//! [`kernels::attention::attention_with`]: causal, `n_head / n_kv_head` query heads per KV
//! head, optional sliding window and attention sinks, for a decode step (1 token) or a
//! prompt (n tokens) alike — one kernel, an online softmax over blocks of positions.

use kernels::attention::AttnShape;

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, Gpu, GpuBuffer};

/// Widest query/key and value rows the attention kernel holds (its `MAX_DK`, and
/// `PER_THREAD × 64` value elements).
pub const MAX_HEAD_DIM: usize = 1024;

/// One attention call: the CPU's [`AttnShape`] (the same strides and scale), plus what
/// `AttnOpts` adds, with the sinks (one logit per query head) on the GPU.
#[derive(Clone, Copy, Debug)]
pub struct GpuAttn<'a> {
    pub shape: AttnShape,
    /// The query at position `p` sees `p − window + 1 ..= p` only.
    pub window: Option<usize>,
    pub sinks: Option<&'a GpuBuffer>,
}

impl Ops {
    /// `out[t, h] = softmax(scale · q[t, h] · K[lo..=pos0+t]) · V[lo..=pos0+t]` for the
    /// `n_tokens` tokens of one sequence at positions `pos0..`, whose keys and values are
    /// already in `k` / `v` (laid out as `a.shape` says; `k` and `v` may be one buffer).
    /// `q` holds `n_head × dk` floats per token and `out` `n_head × dv`, both from token
    /// row `token0` (a sequence's rows within a batch). Matches `attention_with` on the
    /// same buffers (its softmax in f64 and two passes, this one online in f32).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        rec: &mut Recording<'_>,
        a: &GpuAttn<'_>,
        q: &GpuBuffer,
        token0: usize,
        n_tokens: usize,
        pos0: usize,
        k: &GpuBuffer,
        v: &GpuBuffer,
        out: &GpuBuffer,
    ) -> Result<(), AccelError> {
        const OP: &str = "attention";
        let s = &a.shape;
        if s.n_kv_head == 0 || !s.n_head.is_multiple_of(s.n_kv_head) {
            return Err(self.bad(
                OP,
                format!(
                    "{} query heads do not split into groups of {} KV heads",
                    s.n_head, s.n_kv_head
                ),
            ));
        }
        if s.dk == 0 || s.dk > MAX_HEAD_DIM || s.dv == 0 || s.dv > MAX_HEAD_DIM {
            return Err(self.bad(
                OP,
                format!(
                    "head widths dk {} and dv {} must be within 1..={MAX_HEAD_DIM}",
                    s.dk, s.dv
                ),
            ));
        }
        if a.window == Some(0) {
            return Err(self.bad(OP, "a sliding window of 0 positions".into()));
        }
        let rows_end = token0 + n_tokens;
        self.check_len(OP, "queries", q, rows_end * s.n_head * s.dk)?;
        self.check_len(OP, "output", out, rows_end * s.n_head * s.dv)?;
        for (what, b) in [("queries", q), ("keys", k), ("values", v)] {
            self.distinct(OP, b, out)
                .map_err(|_| self.bad(OP, format!("the {what} buffer is also the output")))?;
        }
        if let Some(sk) = a.sinks {
            self.check_len(OP, "sinks", sk, s.n_head)?;
            self.distinct(OP, sk, out)?;
        }
        if n_tokens == 0 {
            return Ok(());
        }
        let ctx = pos0 + n_tokens;
        // The last position's row of the last KV head.
        self.check_rows(
            OP,
            "keys",
            &Rows::at(k, (s.n_kv_head - 1) * s.k_head, s.k_stride),
            ctx,
            s.dk,
        )?;
        self.check_rows(
            OP,
            "values",
            &Rows::at(v, s.v_offset + (s.n_kv_head - 1) * s.v_head, s.v_stride),
            ctx,
            s.dv,
        )?;
        let params = Params::default()
            .u(n_tokens)
            .u(s.n_head)
            .u(s.n_head / s.n_kv_head)
            .u(s.dk)
            .u(s.dv)
            .u(s.k_stride)
            .u(s.v_stride)
            .u(s.v_offset)
            .u(s.k_head)
            .u(s.v_head)
            .u(token0)
            .u(pos0)
            .u(a.window.unwrap_or(0))
            .flag(a.sinks.is_some())
            .f(s.scale);
        rec.dispatch(
            &self.attn,
            params.bytes(),
            &[q, k, v, a.sinks.unwrap_or(&self.absent), out],
            self.grid(n_tokens * s.n_head),
        );
        Ok(())
    }
}

/// One sequence's keys and values in GPU memory: per layer a key and a value buffer of
/// `n_ctx` rows (`k_width`, `v_width` floats: every KV head of a position, as the CPU's
/// cache lays them out), filled by [`GpuKvCache::append`].
#[derive(Debug)]
pub struct GpuKvCache {
    pub n_ctx: usize,
    pub k_width: usize,
    pub v_width: usize,
    layers: Vec<(GpuBuffer, GpuBuffer)>,
    adapter: String,
}

impl GpuKvCache {
    /// Zeroed caches for `n_layers` layers at `n_ctx` positions. A layer's cache must fit
    /// one storage binding: past it, an error naming `--ctx`.
    pub fn new(
        gpu: &Gpu,
        n_layers: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<GpuKvCache, AccelError> {
        let mut layers = Vec::with_capacity(n_layers);
        for il in 0..n_layers {
            let mut pair = Vec::with_capacity(2);
            for (kind, width) in [("K", k_width), ("V", v_width)] {
                let bytes = (n_ctx as u64)
                    .saturating_mul(width as u64)
                    .saturating_mul(4);
                let what = format!("layer {il}'s {kind} cache at --ctx {n_ctx}");
                if bytes > gpu.max_binding() {
                    return Err(AccelError::TooLarge {
                        what: format!("{what} (a smaller --ctx fits)"),
                        bytes,
                        limit: gpu.max_binding(),
                        adapter: gpu.name().to_string(),
                    });
                }
                pair.push(gpu.zeroed(&what, bytes)?);
            }
            let v = pair.pop().expect("two buffers");
            let k = pair.pop().expect("two buffers");
            layers.push((k, v));
        }
        Ok(GpuKvCache {
            n_ctx,
            k_width,
            v_width,
            layers,
            adapter: gpu.name().to_string(),
        })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, il: usize) -> Result<&(GpuBuffer, GpuBuffer), AccelError> {
        self.layers.get(il).ok_or_else(|| AccelError::Validation {
            what: "KV cache".into(),
            adapter: self.adapter.clone(),
            reason: format!("layer {il} of a cache of {} layers", self.layers.len()),
        })
    }

    /// Layer `il`'s key buffer (`n_ctx × k_width`).
    pub fn k(&self, il: usize) -> Result<&GpuBuffer, AccelError> {
        Ok(&self.layer(il)?.0)
    }

    /// Layer `il`'s value buffer (`n_ctx × v_width`).
    pub fn v(&self, il: usize) -> Result<&GpuBuffer, AccelError> {
        Ok(&self.layer(il)?.1)
    }

    /// Records the store of `n` new positions `pos0..pos0 + n` of layer `il`: rows of
    /// `keys` (`k_width` floats) and `values` (`v_width`).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        pos0: usize,
        n: usize,
        keys: Rows<'_>,
        values: Rows<'_>,
    ) -> Result<(), AccelError> {
        if pos0 + n > self.n_ctx {
            return Err(ops.bad(
                "KV cache append",
                format!(
                    "positions {pos0}..{} past the cache's {} (--ctx)",
                    pos0 + n,
                    self.n_ctx
                ),
            ));
        }
        let (k, v) = self.layer(il)?;
        ops.copy_rows(
            rec,
            keys,
            Rows::at(k, pos0 * self.k_width, self.k_width),
            n,
            self.k_width,
            1,
        )?;
        ops.copy_rows(
            rec,
            values,
            Rows::at(v, pos0 * self.v_width, self.v_width),
            n,
            self.v_width,
            1,
        )
    }

    /// Records attention of `n_tokens` query rows (from `token0` in `q` and `out`) at
    /// positions `pos0..` over layer `il`'s cache, for a model with `n_head` query heads of
    /// `head_dim` and `n_kv_head` KV heads of `head_dim`/`head_dim_v` (the CPU GQA stage's
    /// shape).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        ops: &Ops,
        rec: &mut Recording<'_>,
        il: usize,
        heads: GqaHeads,
        q: &GpuBuffer,
        token0: usize,
        n_tokens: usize,
        pos0: usize,
        out: &GpuBuffer,
    ) -> Result<(), AccelError> {
        let GqaHeads {
            n_head,
            n_kv_head,
            head_dim,
            head_dim_v,
            scale,
            window,
            sinks,
        } = heads;
        if n_kv_head * head_dim != self.k_width || n_kv_head * head_dim_v != self.v_width {
            return Err(ops.bad(
                "attention",
                format!(
                    "{n_kv_head} KV heads of {head_dim}/{head_dim_v} floats in a cache of \
                     {}/{}-float rows",
                    self.k_width, self.v_width
                ),
            ));
        }
        let a = GpuAttn {
            shape: AttnShape {
                n_head,
                n_kv_head,
                dk: head_dim,
                dv: head_dim_v,
                k_stride: self.k_width,
                v_stride: self.v_width,
                v_offset: 0,
                k_head: head_dim,
                v_head: head_dim_v,
                scale,
            },
            window,
            sinks,
        };
        let (k, v) = self.layer(il)?;
        ops.attention(rec, &a, q, token0, n_tokens, pos0, k, v, out)
    }
}

/// The head geometry of a GQA layer ([`GpuKvCache::attend`]).
#[derive(Clone, Copy, Debug)]
pub struct GqaHeads<'a> {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub scale: f32,
    pub window: Option<usize>,
    pub sinks: Option<&'a GpuBuffer>,
}
