//! RoPE/YaRN ([`kernels::rope::rope_heads`]). The cos/sin table of a step's positions is
//! computed on the host by the CPU's own [`RopeParams::cache`] and uploaded once per step
//! (`n_tokens × n_dims` floats, shared by every layer); the shader only rotates. Why not
//! compute the angles in the shader: ggml's angle is a product of `pos` and repeated f32
//! powers, and GPU `sin`/`cos` are only specified to about 2⁻¹¹ absolute error on
//! Vulkan — a table from the host is bit-identical to the CPU path at every position and
//! costs one small upload per step.

use kernels::rope::{RopeMode, RopeParams};

use super::{Ops, Params, Rows};
use crate::pipeline::Recording;
use crate::{AccelError, Gpu, GpuBuffer};

/// The cos/sin table of up to `capacity` token positions on the GPU.
#[derive(Debug)]
pub struct RopeTable {
    pub buf: GpuBuffer,
    pub capacity: usize,
    pub n_dims: usize,
    /// Rows filled by the last [`RopeTable::fill`].
    pub len: usize,
    host: Vec<f32>,
}

impl RopeTable {
    /// A table for `capacity` tokens of `n_dims` rotated values (even).
    pub fn new(gpu: &Gpu, capacity: usize, n_dims: usize) -> Result<RopeTable, AccelError> {
        if n_dims == 0 || !n_dims.is_multiple_of(2) || capacity == 0 {
            return Err(AccelError::Validation {
                what: "rope table".into(),
                adapter: gpu.name().to_string(),
                reason: format!(
                    "{capacity} tokens of {n_dims} rotated values: need tokens and an even, non-zero n_dims"
                ),
            });
        }
        let floats = capacity.saturating_mul(n_dims);
        Ok(RopeTable {
            buf: gpu.zeroed("rope table", floats.saturating_mul(4) as u64)?,
            capacity,
            n_dims,
            len: 0,
            host: Vec::with_capacity(floats),
        })
    }

    /// Row `t` ← the angles of `positions[t]` (`RopeParams::cache`, with the optional
    /// `freq_factors`). The upload lands before the next submission: fill the table once
    /// per step, before submitting the step's recording.
    pub fn fill(
        &mut self,
        gpu: &Gpu,
        params: &RopeParams,
        positions: &[usize],
        freq_factors: Option<&[f32]>,
    ) -> Result<(), AccelError> {
        let bad = |reason: String| AccelError::Validation {
            what: "rope table".into(),
            adapter: gpu.name().to_string(),
            reason,
        };
        if params.n_dims != self.n_dims {
            return Err(bad(format!(
                "the table holds {} rotated values per token, the parameters {}",
                self.n_dims, params.n_dims
            )));
        }
        if positions.len() > self.capacity {
            return Err(bad(format!(
                "{} positions for a table of {}",
                positions.len(),
                self.capacity
            )));
        }
        if let Some(ff) = freq_factors {
            if ff.len() < self.n_dims / 2 {
                return Err(bad(format!(
                    "{} frequency factors for {} pairs",
                    ff.len(),
                    self.n_dims / 2
                )));
            }
        }
        if let Some(p) = positions.iter().find(|&&p| p > i32::MAX as usize) {
            return Err(bad(format!("position {p} past i32")));
        }
        self.host.clear();
        self.host.resize(positions.len() * self.n_dims, 0.0);
        for (row, &pos) in self.host.chunks_exact_mut(self.n_dims).zip(positions) {
            params.cache(pos as i32, freq_factors, row);
        }
        gpu.write(&self.buf, bytemuck::cast_slice(&self.host))?;
        self.len = positions.len();
        Ok(())
    }
}

impl Ops {
    /// In place: for `n_tokens` token rows of `x`, each holding `n_heads` heads of
    /// `head_dim` floats, rotates the `table.n_dims` values from `offset` in every head by
    /// the angles of table row `table_row0 + t` (as `kernels::rope::rope_heads` with that
    /// row's cache). DeepSeek's query: `head_dim = nope + rope`, `offset = nope`; its
    /// latent row: one head of `lora + rope`, `offset = lora`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        rec: &mut Recording<'_>,
        x: Rows<'_>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        offset: usize,
        table: &RopeTable,
        table_row0: usize,
        mode: RopeMode,
    ) -> Result<(), AccelError> {
        const OP: &str = "rope";
        let n_dims = table.n_dims;
        if offset + n_dims > head_dim {
            return Err(self.bad(
                OP,
                format!("{n_dims} rotated values from {offset} exceed a head of {head_dim}"),
            ));
        }
        if table_row0 + n_tokens > table.len {
            return Err(self.bad(
                OP,
                format!(
                    "tokens {table_row0}..{} of a table filled for {}",
                    table_row0 + n_tokens,
                    table.len
                ),
            ));
        }
        self.check_rows(OP, "x", &x, n_tokens, n_heads * head_dim)?;
        self.bindable(OP, &table.buf)?;
        let pairs = n_tokens * n_heads * (n_dims / 2);
        if pairs == 0 {
            return Ok(());
        }
        let params = Params::default()
            .u(n_tokens)
            .u(n_heads)
            .u(head_dim)
            .u(offset)
            .u(n_dims)
            .u(x.offset)
            .u(x.stride)
            .u(table_row0)
            .flag(mode == RopeMode::Neox);
        rec.dispatch(
            &self.rope,
            params.bytes(),
            &[x.buf, &table.buf],
            self.grid(pairs.div_ceil(64)),
        );
        Ok(())
    }
}
