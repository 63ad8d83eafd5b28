//! Row softmax ([`kernels::softmax::softmax_scaled_masked_inplace`] and
//! [`kernels::softmax::softmax_with_sink_inplace`]).

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, GpuBuffer};

impl Ops {
    /// In place over `n_rows` rows of `n` floats: `x = softmax(x · scale + mask)`, with
    /// `mask` (rows of `n`; stride 0 shares one row) optional and `−inf` entries excluded;
    /// with `sinks`, row `r`'s sink logit `sinks[r % sinks_len]` joins the denominator (one
    /// per head, rows ordered token-major). A row of nothing but `−inf` becomes zeros.
    /// Matches the CPU functions above (its sums in f64, these in f32).
    #[allow(clippy::too_many_arguments)]
    pub fn softmax(
        &self,
        rec: &mut Recording<'_>,
        x: Rows<'_>,
        n_rows: usize,
        n: usize,
        scale: f32,
        mask: Option<Rows<'_>>,
        sinks: Option<(&GpuBuffer, usize)>,
    ) -> Result<(), AccelError> {
        const OP: &str = "softmax";
        self.check_rows(OP, "x", &x, n_rows, n)?;
        if let Some(m) = &mask {
            self.check_rows(OP, "mask", m, n_rows, n)?;
            self.distinct(OP, m.buf, x.buf)?;
        }
        if let Some((s, len)) = sinks {
            if len == 0 {
                return Err(self.bad(OP, "an empty sink list".into()));
            }
            self.check_len(OP, "sinks", s, len)?;
            self.distinct(OP, s, x.buf)?;
        }
        if n_rows == 0 || n == 0 {
            return Ok(());
        }
        let m = mask.unwrap_or(Rows::dense(&self.absent, 0));
        let (s, n_sinks) = sinks.unwrap_or((&self.absent, 1));
        let params = Params::default()
            .u(n_rows)
            .u(n)
            .u(x.offset)
            .u(x.stride)
            .u(m.offset)
            .u(m.stride)
            .flag(mask.is_some())
            .flag(sinks.is_some())
            .u(n_sinks)
            .f(scale);
        rec.dispatch(
            &self.softmax,
            params.bytes(),
            &[x.buf, m.buf, s],
            self.grid(n_rows),
        );
        Ok(())
    }
}
