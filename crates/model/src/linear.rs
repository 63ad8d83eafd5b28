//! The one place where the forward pass multiplies by a weight matrix: either the
//! production kernels (activations quantized to the weight's dot partner, as llama.cpp
//! does) or the exact reference (weights dequantized, f32 activations). `--exact` swaps
//! only this; the forward pass is the same.

use kernels::matmul::{matmul, matmul_exact, ActScratch, ExactScratch, QMatrix};
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
}
