//! The SiLU-gated dense FFN: dense layers, and the shared experts of MoE layers.
//!
//! Contract: `xb` (`n × dim`) in; `down(silu(gate·xb) · up·xb)` written to `out`
//! (`n × dim`).

use kernels::activation::silu_glu_inplace;

use super::{buf, StageCtx};
use crate::weights::DenseFfn;
use crate::ModelError;

/// The dense FFN's buffers: hidden activations, `n × hidden` (gate, then silu(gate)·up
/// in place; up).
#[derive(Default)]
pub struct FfnScratch {
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl FfnScratch {
    /// Sizes the buffers for `n` tokens of an FFN `hidden` wide.
    pub fn reserve(&mut self, hidden: usize, n: usize) {
        buf(&mut self.gate, n * hidden);
        buf(&mut self.up, n * hidden);
    }
}

/// The dense FFN `f` of the rows of `xb` (see the module contract).
pub fn dense_ffn(
    cx: &mut StageCtx<'_>,
    s: &mut FfnScratch,
    f: &DenseFfn,
    xb: &[f32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let n = xb.len() / cx.config.dim;
    let hidden = f.gate.n_out;
    let gate = buf(&mut s.gate, n * hidden);
    let up = buf(&mut s.up, n * hidden);
    cx.linear
        .forward_multi(cx.pool, xb, &mut [(&f.gate, &mut *gate), (&f.up, &mut *up)])?;
    silu_glu_inplace(gate, up);
    cx.linear.forward(cx.pool, &f.down, 0, gate, out)
}
