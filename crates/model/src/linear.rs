//! The one place where the forward pass multiplies by a weight matrix: either the
//! production kernels (activations quantized to the weight's dot partner, as llama.cpp
//! does) or the exact reference (weights dequantized, f32 activations). `--exact` swaps
//! only this; the forward pass is the same.

use kernels::matmul::{matmul, matmul_batch, matmul_exact, quantize_acts, ActScratch, ExactScratch, MatmulOp, QMatrix};
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

/// Scratch memory of the matmuls, reused across calls.
pub struct Linear {
    pub mode: MatmulMode,
    act: ActScratch,
    exact: ExactScratch,
}

impl Linear {
    /// A matmul context for `mode`.
    pub fn new(mode: MatmulMode) -> Linear {
        Linear { mode, act: ActScratch::new(), exact: ExactScratch::new() }
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
        let view = QMatrix::new(w.ty, w.n_in, w.n_out, w.slab(slab))
            .map_err(|e| ModelError::Input(format!("{}: {e}", w.name())))?;
        let r = match self.mode {
            // F32 weights (routers) are multiplied in f32 either way, as llama.cpp does.
            MatmulMode::Quantized => matmul(pool, &view, x, out, &mut self.act),
            MatmulMode::Exact => {
                self.exact.reserve(pool.n_threads(), w.n_in);
                matmul_exact(pool, &view, x, out, &mut self.exact)
            }
        };
        r.map_err(|e| ModelError::Input(format!("{}: {e}", w.name())))
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
        let same_act = products.iter().all(|p| quant::dot::act_type_for(p.0.ty) == act && p.0.n_in == products[0].0.n_in);
        if self.mode == MatmulMode::Exact || !same_act || products.len() > kernels::matmul::MAX_BATCH_OPS {
            for (w, out) in products.iter_mut() {
                self.forward(pool, w, 0, x, out)?;
            }
            return Ok(());
        }
        let w0: &Matrix = products[0].0;
        let xq = quantize_acts(pool, w0.ty, x, w0.n_in, &mut self.act)
            .map_err(|e| ModelError::Input(format!("{}: {e}", w0.name())))?;
        let mut ops = Vec::with_capacity(products.len());
        for (w, out) in products.iter_mut() {
            let w: &Matrix = w;
            let view = QMatrix::new(w.ty, w.n_in, w.n_out, w.slab(0))
                .map_err(|e| ModelError::Input(format!("{}: {e}", w.name())))?;
            ops.push(MatmulOp { w: view, xq, tokens: None, out });
        }
        matmul_batch(pool, &mut ops).map_err(|e| ModelError::Input(format!("{}: {e}", w0.name())))
    }
}
