//! Strided row copies between buffers (cache appends, gathers, broadcasts).

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::AccelError;

impl Ops {
    /// `dst` row `r` ← `src` row `r / repeat`, for `n_rows` rows of `width` floats
    /// (`repeat` 1: a plain copy; `repeat` k: each source row written to k consecutive
    /// destination rows). `src` and `dst` must be different buffers.
    pub fn copy_rows(
        &self,
        rec: &mut Recording<'_>,
        src: Rows<'_>,
        dst: Rows<'_>,
        n_rows: usize,
        width: usize,
        repeat: usize,
    ) -> Result<(), AccelError> {
        const OP: &str = "copy_rows";
        if repeat == 0 {
            return Err(self.bad(OP, "repeat 0".into()));
        }
        self.check_rows(OP, "source", &src, n_rows.div_ceil(repeat), width)?;
        self.check_rows(OP, "destination", &dst, n_rows, width)?;
        self.distinct(OP, src.buf, dst.buf)?;
        if n_rows == 0 || width == 0 {
            return Ok(());
        }
        let params = Params::default()
            .u(n_rows)
            .u(width)
            .u(src.offset)
            .u(src.stride)
            .u(repeat)
            .u(dst.offset)
            .u(dst.stride);
        rec.dispatch(
            &self.copy,
            params.bytes(),
            &[src.buf, dst.buf],
            self.grid((n_rows * width).div_ceil(256)),
        );
        Ok(())
    }
}
