//! Where the forward pass multiplies by a weight matrix: either the production kernels
//! (activations quantized to the weight's dot partner, as llama.cpp does) or the exact
//! reference (weights dequantized, f32 activations). `--exact` swaps only this; the
//! forward pass is the same.
//!
//! The one other entry point is `kernels::moe`, which the MoE stage
//! ([`crate::stage::moe`]) calls for the routed experts in [`MatmulMode::Quantized`]
//! (grouping tokens by expert and running every active expert in one parallel region);
//! in [`MatmulMode::Exact`] the experts go through [`Linear::forward`] one by one.

use kernels::matmul::{
    matmul, matmul_exact, quantize_acts, ActScratch, ExactScratch, MatmulOp, OpBatch, QMatrix,
};
use kernels::ThreadPool;

use crate::weights::Matrix;
use crate::ModelError;

/// Which kernels multiply by weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulMode {
    /// Quantized activations and SIMD block dots (production).
    Quantized,
    /// Dequantized weights and f32 activations (reference; `--exact`).
    Exact,
}

/// Scratch memory of the matmuls, reused across calls (grown to the largest input seen,
/// then no allocation).
pub struct Linear {
    pub mode: MatmulMode,
    /// Attention's products in int8 over a q8_KV key cache (`kernels::attention`'s int8
    /// path, where the CPU has AVX-512 VNNI): on in the quantized mode, off in the exact one.
    pub int8_attention: bool,
    act: ActScratch,
    exact: ExactScratch,
    /// [`Linear::forward_slabs`]: the input rows of each slab, and head-major inputs and
    /// outputs.
    slab_rows: Vec<u32>,
    slab_in: Vec<f32>,
    slab_out: Vec<f32>,
}

/// `out = W_slab · x` with the kernels of `mode` (the body of [`Linear::forward`], apart
/// from `Linear` so that callers can lend it the scratch fields separately).
#[allow(clippy::too_many_arguments)]
fn product(
    mode: MatmulMode,
    act: &mut ActScratch,
    exact: &mut ExactScratch,
    pool: &ThreadPool,
    w: &Matrix,
    slab: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let err = |e: kernels::matmul::MatmulError| ModelError::Kernel(format!("{}: {e}", w.name()));
    match mode {
        // F32 weights (routers) are multiplied in f32 either way, as llama.cpp does.
        // The repacked copy when there is one (`Matrix::qmatrix`).
        MatmulMode::Quantized => matmul(pool, &w.qmatrix(slab)?, x, out, act).map_err(err),
        MatmulMode::Exact => {
            let view = QMatrix::new(w.ty, w.n_in, w.n_out, w.slab(slab)).map_err(err)?;
            exact.reserve(pool.n_threads(), w.n_in);
            matmul_exact(pool, &view, x, out, exact).map_err(err)
        }
    }
}

impl Linear {
    /// A matmul context for `mode`.
    pub fn new(mode: MatmulMode) -> Linear {
        Linear {
            mode,
            int8_attention: mode == MatmulMode::Quantized,
            act: ActScratch::new(),
            exact: ExactScratch::new(),
            slab_rows: Vec::new(),
            slab_in: Vec::new(),
            slab_out: Vec::new(),
        }
    }

    /// Makes room for `n_rows` input rows of `w` (quantized activations), so that a
    /// product that large does not allocate.
    pub fn reserve(&mut self, w: &Matrix, n_rows: usize) -> Result<(), ModelError> {
        if self.mode == MatmulMode::Quantized {
            self.act
                .reserve(w.ty, w.n_in, n_rows)
                .map_err(|e| ModelError::Kernel(format!("{}: {e}", w.name())))?;
        }
        Ok(())
    }

    /// `out[t] = W_slab · x[t]` for every token row `t` of `x` (`n_in` values each);
    /// `out` holds `n_out` values per token.
    pub fn forward(
        &mut self,
        pool: &ThreadPool,
        w: &Matrix,
        slab: usize,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        product(
            self.mode,
            &mut self.act,
            &mut self.exact,
            pool,
            w,
            slab,
            x,
            out,
        )
    }

    /// Several products of the same input (q/k/v, gate/up, ...): the input is quantized
    /// once and the products run as one parallel region (one barrier). Results are
    /// identical to calling [`Linear::forward`] for each.
    pub fn forward_multi(
        &mut self,
        pool: &ThreadPool,
        x: &[f32],
        products: &mut [(&Matrix, &mut [f32])],
    ) -> Result<(), ModelError> {
        let first = products.first().map(|p| p.0.ty);
        let act = first.and_then(quant::dot::act_type_for);
        let same_act = products
            .iter()
            .all(|p| quant::dot::act_type_for(p.0.ty) == act && p.0.n_in == products[0].0.n_in);
        if self.mode == MatmulMode::Exact
            || !same_act
            || products.len() > kernels::matmul::MAX_BATCH_OPS
        {
            for (w, out) in products.iter_mut() {
                self.forward(pool, w, 0, x, out)?;
            }
            return Ok(());
        }
        let w0: &Matrix = products[0].0;
        let err =
            |e: kernels::matmul::MatmulError| ModelError::Kernel(format!("{}: {e}", w0.name()));
        let xq = quantize_acts(pool, w0.ty, x, w0.n_in, &mut self.act).map_err(err)?;
        let mut batch = OpBatch::new();
        for (w, out) in products.iter_mut() {
            let w: &Matrix = w;
            batch
                .push(MatmulOp {
                    w: w.qmatrix(0)?,
                    xq,
                    tokens: None,
                    out,
                })
                .map_err(err)?;
        }
        batch.run(pool).map_err(err)
    }

    /// Per-head products of a stack (e.g. DeepSeek's `attn_k_b`): `x` holds `n` tokens ×
    /// `w.n_slab` rows of `w.n_in`, row (t, h) is multiplied by slab h, and `out` gets
    /// `n × n_slab` rows of `w.n_out`. All heads run as one parallel region.
    pub fn forward_slabs(
        &mut self,
        pool: &ThreadPool,
        w: &Matrix,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (heads, n_in, n_out) = (w.n_slab, w.n_in, w.n_out);
        let n = x.len() / (heads * n_in);
        let err =
            |e: kernels::matmul::MatmulError| ModelError::Kernel(format!("{}: {e}", w.name()));
        if self.mode == MatmulMode::Exact {
            let Linear {
                mode,
                act,
                exact,
                slab_in,
                slab_out,
                ..
            } = self;
            for h in 0..heads {
                slab_in.clear();
                for t in 0..n {
                    slab_in
                        .extend_from_slice(&x[(t * heads + h) * n_in..(t * heads + h + 1) * n_in]);
                }
                slab_out.resize(n * n_out, 0.0);
                product(*mode, act, exact, pool, w, h, slab_in, slab_out)?;
                for t in 0..n {
                    out[(t * heads + h) * n_out..(t * heads + h + 1) * n_out]
                        .copy_from_slice(&slab_out[t * n_out..(t + 1) * n_out]);
                }
            }
            return Ok(());
        }
        let xq = quantize_acts(pool, w.ty, x, n_in, &mut self.act).map_err(err)?;
        self.slab_rows.clear();
        for h in 0..heads {
            self.slab_rows
                .extend((0..n).map(|t| (t * heads + h) as u32));
        }
        self.slab_out.resize(heads * n * n_out, 0.0);
        // One pool op per group of ≤ MAX_BATCH_OPS heads (DeepSeek-V3 has 128).
        let per_op = kernels::matmul::MAX_BATCH_OPS;
        for (g, outs) in self.slab_out.chunks_mut(per_op * n * n_out).enumerate() {
            let mut batch = OpBatch::new();
            for (i, o) in outs.chunks_exact_mut(n * n_out).enumerate() {
                let h = g * per_op + i;
                batch
                    .push(MatmulOp {
                        w: w.qmatrix(h)?,
                        xq,
                        tokens: Some(&self.slab_rows[h * n..(h + 1) * n]),
                        out: o,
                    })
                    .map_err(err)?;
            }
            batch.run(pool).map_err(err)?;
        }
        for h in 0..heads {
            for t in 0..n {
                let src = (h * n + t) * n_out;
                out[(t * heads + h) * n_out..(t * heads + h + 1) * n_out]
                    .copy_from_slice(&self.slab_out[src..src + n_out]);
            }
        }
        Ok(())
    }
}
