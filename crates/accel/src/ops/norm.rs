//! RMSNorm ([`kernels::norm::rms_norm`], `rms_norm_inplace`, `rms_norm_unweighted_inplace`)
//! and the residual/bias add ([`kernels::vector::add_inplace`]).

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, GpuBuffer};

impl Ops {
    /// RMSNorm of `n_rows` rows of `width` floats: `dst = src / sqrt(mean(src²) + eps) · w`
    /// (`weight` `None`: `w = 1`). `dst` `None` normalises `src` in place; otherwise `dst`
    /// must be another buffer. Matches `kernels::norm::rms_norm` row by row (the mean in
    /// f32 here, f64 there: within a few ulps).
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        rec: &mut Recording<'_>,
        src: Rows<'_>,
        dst: Option<Rows<'_>>,
        n_rows: usize,
        width: usize,
        weight: Option<&GpuBuffer>,
        eps: f32,
    ) -> Result<(), AccelError> {
        const OP: &str = "rms_norm";
        self.check_rows(OP, "input", &src, n_rows, width)?;
        if let Some(d) = &dst {
            self.check_rows(OP, "output", d, n_rows, width)?;
            self.distinct(OP, src.buf, d.buf)?;
        }
        if let Some(w) = weight {
            self.check_len(OP, "weight", w, width)?;
        }
        if n_rows == 0 || width == 0 {
            return Ok(());
        }
        let out = dst.unwrap_or(src);
        let params = Params::default()
            .u(n_rows)
            .u(width)
            .u(src.offset)
            .u(src.stride)
            .u(out.offset)
            .u(out.stride)
            .flag(weight.is_some())
            .f(eps);
        let w = weight.unwrap_or(&self.absent);
        match dst {
            Some(d) => rec.dispatch(
                &self.norm,
                params.bytes(),
                &[src.buf, w, d.buf],
                self.grid(n_rows),
            ),
            None => rec.dispatch(
                &self.norm_inplace,
                params.bytes(),
                &[src.buf, w],
                self.grid(n_rows),
            ),
        }
        Ok(())
    }

    /// `x += y` over `n_rows` rows of `width` floats: the residual connection, or a bias
    /// added to every row (`y` with stride 0). Matches `kernels::vector::add_inplace`.
    pub fn add(
        &self,
        rec: &mut Recording<'_>,
        x: Rows<'_>,
        y: Rows<'_>,
        n_rows: usize,
        width: usize,
    ) -> Result<(), AccelError> {
        const OP: &str = "add";
        self.check_rows(OP, "x", &x, n_rows, width)?;
        self.check_rows(OP, "y", &y, n_rows, width)?;
        self.distinct(OP, y.buf, x.buf)?;
        if n_rows == 0 || width == 0 {
            return Ok(());
        }
        let params = Params::default()
            .u(n_rows)
            .u(width)
            .u(x.offset)
            .u(x.stride)
            .u(y.offset)
            .u(y.stride);
        rec.dispatch(
            &self.add,
            params.bytes(),
            &[x.buf, y.buf],
            self.grid((n_rows * width).div_ceil(256)),
        );
        Ok(())
    }
}
