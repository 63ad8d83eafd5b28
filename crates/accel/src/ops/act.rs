//! Gated activations: SiLU-GLU ([`kernels::activation::silu_glu`]) and gpt-oss's clamped
//! `swiglu_oai` ([`kernels::activation::Glu::SwigluOai`]).

use kernels::activation::Glu;

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::AccelError;

impl Ops {
    /// `out = act(gate, up)` over `n_rows` rows of `width` floats (as
    /// `kernels::activation::glu_inplace`, into `out`). `gate` and `up` may be parts of one
    /// buffer (a fused projection); `out` must be another buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn glu(
        &self,
        rec: &mut Recording<'_>,
        act: Glu,
        gate: Rows<'_>,
        up: Rows<'_>,
        out: Rows<'_>,
        n_rows: usize,
        width: usize,
    ) -> Result<(), AccelError> {
        const OP: &str = "glu";
        self.check_rows(OP, "gate", &gate, n_rows, width)?;
        self.check_rows(OP, "up", &up, n_rows, width)?;
        self.check_rows(OP, "output", &out, n_rows, width)?;
        self.distinct(OP, gate.buf, out.buf)?;
        self.distinct(OP, up.buf, out.buf)?;
        if n_rows == 0 || width == 0 {
            return Ok(());
        }
        let (kind, alpha, limit) = match act {
            Glu::Silu => (0, 0.0, 0.0),
            Glu::SwigluOai { alpha, limit } => (1, alpha, limit),
        };
        let params = Params::default()
            .u(n_rows)
            .u(width)
            .u(gate.offset)
            .u(gate.stride)
            .u(up.offset)
            .u(up.stride)
            .u(out.offset)
            .u(out.stride)
            .u(kind)
            .f(alpha)
            .f(limit);
        rec.dispatch(
            &self.glu,
            params.bytes(),
            &[gate.buf, up.buf, out.buf],
            self.grid((n_rows * width).div_ceil(256)),
        );
        Ok(())
    }
}
