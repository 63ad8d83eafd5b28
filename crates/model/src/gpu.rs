//! The wgpu backend of the device tier ([`crate::backend`]): weights as
//! [`accel::matmul::GpuMatrix`], products by [`accel::matmul::MatmulKernels`], the gated
//! activation by [`accel::ops::Ops`]. Each stage is one submission: its input rows written
//! once, every dispatch recorded, its output copied into a staging buffer in the same
//! submission and read once in [`Stream::finish`].

use std::sync::Arc;
use std::time::Instant;

use accel::matmul::{GpuMatrix, MatmulKernels, MatmulPath};
use accel::ops::{Ops, Rows};
use accel::{Gpu, GpuBuffer};
use kernels::activation::Glu;

use crate::backend::{Backend, DeviceFfn, DeviceMatrix, Stream, StreamStats};
use crate::weights::Matrix;
use crate::ModelError;

/// One opened GPU with its pipelines, compiled once at load.
pub struct WgpuBackend {
    gpu: Arc<Gpu>,
    matmul: Arc<MatmulKernels>,
    ops: Arc<Ops>,
}

impl WgpuBackend {
    /// Compiles the matmul kernels of the weight `types` the plan puts on `gpu`, and the
    /// other ops.
    pub fn new(gpu: Arc<Gpu>, types: &[gguf::GgmlType]) -> Result<WgpuBackend, ModelError> {
        let matmul = MatmulKernels::for_types(&gpu, types)?;
        let ops = Ops::new(&gpu)?;
        Ok(WgpuBackend {
            gpu,
            matmul: Arc::new(matmul),
            ops: Arc::new(ops),
        })
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        self.gpu.name().to_string()
    }

    fn upload(&self, m: &Matrix) -> Result<DeviceMatrix, ModelError> {
        let rows = m.n_out * m.n_slab;
        let gm = GpuMatrix::upload(&self.gpu, m.name(), m.ty, rows, m.n_in, m.data())?;
        Ok(DeviceMatrix {
            name: m.name().to_string(),
            n_in: m.n_in,
            n_out: rows,
            bytes: gm.bytes(),
            handle: Arc::new(gm),
        })
    }

    fn new_stream(&self) -> Result<Box<dyn Stream>, ModelError> {
        Ok(Box::new(WgpuStream {
            gpu: self.gpu.clone(),
            matmul: self.matmul.clone(),
            ops: self.ops.clone(),
            x: None,
            gate: None,
            up: None,
            act: None,
            y: None,
            staging: None,
            pending: None,
            stats: StreamStats::default(),
        }))
    }
}

/// A [`crate::RunState`]'s buffers on the GPU, grown to the largest step seen.
struct WgpuStream {
    gpu: Arc<Gpu>,
    matmul: Arc<MatmulKernels>,
    ops: Arc<Ops>,
    /// Input rows, hidden gate / up / activated rows, output rows, and the output's
    /// host-readable copy.
    x: Option<GpuBuffer>,
    gate: Option<GpuBuffer>,
    up: Option<GpuBuffer>,
    act: Option<GpuBuffer>,
    y: Option<GpuBuffer>,
    staging: Option<GpuBuffer>,
    /// f32 values of the stage in flight, waiting in `staging`.
    pending: Option<usize>,
    stats: StreamStats,
}

/// `slot`, grown (to a power of two) to hold `floats` f32 values.
fn ensure<'b>(
    gpu: &Gpu,
    slot: &'b mut Option<GpuBuffer>,
    label: &str,
    floats: usize,
    staging: bool,
) -> Result<&'b GpuBuffer, ModelError> {
    let bytes = (floats.max(1) * 4) as u64;
    if slot.as_ref().is_none_or(|b| b.len < bytes) {
        let size = bytes.next_power_of_two();
        *slot = Some(if staging {
            gpu.staging(label, size)?
        } else {
            gpu.zeroed(label, size)?
        });
    }
    Ok(slot.as_ref().expect("just allocated"))
}

fn matrix(d: &DeviceMatrix) -> Result<&GpuMatrix, ModelError> {
    d.handle
        .downcast_ref::<GpuMatrix>()
        .ok_or_else(|| ModelError::Kernel(format!("{}: not a wgpu matrix", d.name)))
}

/// The token rows of `x` for a product of width `n_in`.
fn rows_of(x: &[f32], n_in: usize, what: &str) -> Result<usize, ModelError> {
    if n_in == 0 || !x.len().is_multiple_of(n_in) {
        return Err(ModelError::Kernel(format!(
            "{what}: {} inputs are not whole rows of {n_in}",
            x.len()
        )));
    }
    Ok(x.len() / n_in)
}

impl WgpuStream {
    fn check_idle(&self, what: &str) -> Result<(), ModelError> {
        match self.pending {
            Some(_) => Err(ModelError::Kernel(format!(
                "{what}: a device stage is still in flight (finish it first)"
            ))),
            None => Ok(()),
        }
    }

    /// Writes the input rows, runs `record` and copies `out_floats` values of `y` into the
    /// staging buffer, all in one submission.
    fn submit(
        &mut self,
        what: &str,
        x: &[f32],
        out_floats: usize,
        record: impl FnOnce(&mut Self, &mut accel::pipeline::Recording<'_>) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        ensure(&self.gpu, &mut self.x, "stage input", x.len(), false)?;
        ensure(&self.gpu, &mut self.y, "stage output", out_floats, false)?;
        ensure(
            &self.gpu,
            &mut self.staging,
            "stage read-back",
            out_floats,
            true,
        )?;
        let gpu = self.gpu.clone();
        gpu.write(self.x.as_ref().expect("ensured"), bytemuck::cast_slice(x))?;
        let mut rec = gpu.record(what);
        record(self, &mut rec)?;
        rec.copy(
            self.y.as_ref().expect("ensured"),
            self.staging.as_ref().expect("ensured"),
            (out_floats * 4) as u64,
        );
        rec.submit()?;
        self.pending = Some(out_floats);
        self.stats.bytes_up += (x.len() * 4) as u64;
        self.stats.submissions += 1;
        Ok(())
    }
}

/// GEMV for few tokens, tiled GEMM for more: both add in one fixed order, so a token's
/// result is the same bits alone, batched or in a prompt (the engine's batch invariance).
const PATH: MatmulPath = MatmulPath::Auto;

impl Stream for WgpuStream {
    fn start_ffn(&mut self, f: &DeviceFfn, x: &[f32]) -> Result<(), ModelError> {
        self.check_idle(&f.gate.name)?;
        let n = rows_of(x, f.gate.n_in, &f.gate.name)?;
        let hidden = f.gate.n_out;
        let dim_out = f.down.n_out;
        for slot in [0, 1, 2] {
            let (s, label) = match slot {
                0 => (&mut self.gate, "ffn gate"),
                1 => (&mut self.up, "ffn up"),
                _ => (&mut self.act, "ffn activation"),
            };
            ensure(&self.gpu, s, label, n * hidden, false)?;
        }
        let (gate_w, up_w, down_w) = (matrix(&f.gate)?, matrix(&f.up)?, matrix(&f.down)?);
        self.submit("ffn", x, n * dim_out, |s, rec| {
            let (xb, yb) = (s.x.as_ref().expect("x"), s.y.as_ref().expect("y"));
            let (g, u, a) = (
                s.gate.as_ref().expect("gate"),
                s.up.as_ref().expect("up"),
                s.act.as_ref().expect("act"),
            );
            let n32 = n as u32;
            s.matmul.record_path(PATH, rec, gate_w, xb, 0, g, 0, n32)?;
            s.matmul.record_path(PATH, rec, up_w, xb, 0, u, 0, n32)?;
            s.ops.glu(
                rec,
                Glu::Silu,
                Rows::dense(g, hidden),
                Rows::dense(u, hidden),
                Rows::dense(a, hidden),
                n,
                hidden,
            )?;
            s.matmul.record_path(PATH, rec, down_w, a, 0, yb, 0, n32)?;
            Ok(())
        })
    }

    fn start_matmul(&mut self, w: &DeviceMatrix, x: &[f32]) -> Result<(), ModelError> {
        self.check_idle(&w.name)?;
        let n = rows_of(x, w.n_in, &w.name)?;
        let gw = matrix(w)?;
        self.submit("matmul", x, n * w.n_out, |s, rec| {
            let (xb, yb) = (s.x.as_ref().expect("x"), s.y.as_ref().expect("y"));
            s.matmul
                .record_path(PATH, rec, gw, xb, 0, yb, 0, n as u32)?;
            Ok(())
        })
    }

    fn finish(&mut self, out: &mut [f32]) -> Result<(), ModelError> {
        let Some(n) = self.pending.take() else {
            return Err(ModelError::Kernel(
                "device stage: nothing was started".into(),
            ));
        };
        if out.len() != n {
            return Err(ModelError::Kernel(format!(
                "device stage: {n} outputs computed, {} expected",
                out.len()
            )));
        }
        let start = Instant::now();
        let staging = self.staging.as_ref().expect("a started stage has one");
        self.gpu
            .read_staging(staging, bytemuck::cast_slice_mut(out))?;
        self.stats.wait_seconds += start.elapsed().as_secs_f64();
        self.stats.bytes_down += (n * 4) as u64;
        Ok(())
    }

    fn stats(&self) -> StreamStats {
        self.stats
    }
}
