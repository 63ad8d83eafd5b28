//! Strided row copies between buffers: cache appends, gathers, broadcasts and the
//! token-major ↔ head-major transposes around per-head matmuls.

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, GpuBuffer};

/// Rows indexed by two levels: row `(i, j)` starts at `offset + i·outer + j·inner` floats.
#[derive(Clone, Copy, Debug)]
pub struct Grid<'a> {
    pub buf: &'a GpuBuffer,
    pub offset: usize,
    pub outer: usize,
    pub inner: usize,
}

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
        let src = Grid {
            buf: src.buf,
            offset: src.offset,
            outer: src.stride,
            inner: 0,
        };
        let dst = Grid {
            buf: dst.buf,
            offset: dst.offset,
            outer: repeat * dst.stride,
            inner: dst.stride,
        };
        self.copy(rec, OP, src, dst, n_rows, repeat, width)
    }

    /// `dst` row `(i, j)` ← `src` row `(i, j)` for `i < n_outer`, `j < n_inner`, rows of
    /// `width` floats. E.g. token-major `[t][h]` rows of w floats (`outer = w`,
    /// `inner = heads·w` with i = h, j = t) into head-major `[h][t]` (`outer = n·w`,
    /// `inner = w`).
    pub fn copy_grid(
        &self,
        rec: &mut Recording<'_>,
        src: Grid<'_>,
        dst: Grid<'_>,
        n_outer: usize,
        n_inner: usize,
        width: usize,
    ) -> Result<(), AccelError> {
        const OP: &str = "copy_grid";
        for (what, g) in [("source", &src), ("destination", &dst)] {
            self.bindable(OP, g.buf)?;
            if n_outer == 0 || n_inner == 0 || width == 0 {
                continue;
            }
            // The row farthest from the start (strides are non-negative) ends at `end`.
            let end = (n_outer - 1)
                .checked_mul(g.outer)
                .zip((n_inner - 1).checked_mul(g.inner))
                .and_then(|(a, b)| a.checked_add(b))
                .and_then(|x| x.checked_add(g.offset))
                .and_then(|x| x.checked_add(width));
            let have = g.buf.len as usize / 4;
            if end.is_none_or(|e| e > have) {
                return Err(self.bad(
                    OP,
                    format!(
                        "{what} ({}): {n_outer} × {n_inner} rows of {width} floats (strides {} and \
                         {} from {}) need {} floats, the buffer holds {have}",
                        g.buf.label,
                        g.outer,
                        g.inner,
                        g.offset,
                        end.map_or("more than 2^64".to_string(), |e| e.to_string()),
                    ),
                ));
            }
        }
        self.copy(rec, OP, src, dst, n_outer * n_inner, n_inner, width)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        rec: &mut Recording<'_>,
        op: &str,
        src: Grid<'_>,
        dst: Grid<'_>,
        n_rows: usize,
        n_inner: usize,
        width: usize,
    ) -> Result<(), AccelError> {
        self.distinct(op, src.buf, dst.buf)?;
        if n_rows == 0 || width == 0 || n_inner == 0 {
            return Ok(());
        }
        let params = Params::default()
            .u(n_rows)
            .u(n_inner)
            .u(width)
            .u(src.offset)
            .u(src.outer)
            .u(src.inner)
            .u(dst.offset)
            .u(dst.outer)
            .u(dst.inner);
        rec.dispatch(
            &self.copy,
            params.bytes(),
            &[src.buf, dst.buf],
            self.grid((n_rows * width).div_ceil(256)),
        );
        Ok(())
    }

    /// Token-major `[t][h]` rows of `width` floats (`src`, from element 0) into head-major
    /// `[h][t]` (`dst`), or back with `to_heads` false: the layouts on either side of
    /// per-head matmuls (MLA's `W_UK`, `W_UV`), whose inputs are each head's rows back to
    /// back.
    #[allow(clippy::too_many_arguments)]
    pub fn transpose_heads(
        &self,
        rec: &mut Recording<'_>,
        src: &GpuBuffer,
        dst: &GpuBuffer,
        n_tokens: usize,
        n_heads: usize,
        width: usize,
        to_heads: bool,
    ) -> Result<(), AccelError> {
        let token_major = |buf| Grid {
            buf,
            offset: 0,
            outer: width,
            inner: n_heads * width,
        };
        let head_major = |buf| Grid {
            buf,
            offset: 0,
            outer: n_tokens * width,
            inner: width,
        };
        let (s, d) = if to_heads {
            (token_major(src), head_major(dst))
        } else {
            (head_major(src), token_major(dst))
        };
        self.copy_grid(rec, s, d, n_heads, n_tokens, width)
    }
}
