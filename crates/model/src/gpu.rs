//! The wgpu backend of the device tier ([`crate::backend`]): weights as
//! [`accel::matmul::GpuMatrix`], products by [`accel::matmul::MatmulKernels`], the gated
//! activation by [`accel::ops::Ops`]. Each stage is one submission: its input rows written
//! once, every dispatch recorded, its output copied into a staging buffer in the same
//! submission and read once in [`Stream::finish`].

use std::sync::Arc;
use std::time::Instant;

use accel::matmul::{GpuMatrix, MatmulKernels, MatmulPath};
use accel::ops::{GpuKvCache, GqaHeads, MlaLatentCache, Ops, RopeTable, Rows};
use accel::{Gpu, GpuBuffer, Recording};
use kernels::activation::Glu;

use crate::backend::{
    AfterAttention, Backend, DeviceAttention, DeviceFfn, DeviceGqa, DeviceMatrix, DeviceVector,
    MlaRule, Stream, StreamStats,
};
use crate::stage::Batch;
use crate::weights::Matrix;
use crate::{Config, ModelError};

mod mla;

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

    fn upload_stack(&self, m: &Matrix) -> Result<DeviceMatrix, ModelError> {
        let gm = GpuMatrix::upload_batched(
            &self.gpu,
            m.name(),
            m.ty,
            m.n_slab,
            m.n_out,
            m.n_in,
            m.data(),
        )?;
        Ok(DeviceMatrix {
            name: m.name().to_string(),
            n_in: m.n_in,
            n_out: m.n_out,
            bytes: gm.bytes(),
            handle: Arc::new(gm),
        })
    }

    fn upload_vector(&self, name: &str, v: &[f32]) -> Result<DeviceVector, ModelError> {
        let b = self.gpu.upload(name, bytemuck::cast_slice(v))?;
        Ok(DeviceVector {
            name: name.to_string(),
            len: v.len(),
            handle: Arc::new(b),
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
            layer: LayerBuffers::default(),
            rope: None,
            layer_pending: None,
            resident_rows: 0,
            mla_rule: None,
            mla: mla::MlaBuffers::default(),
            positions: Vec::new(),
            host: Vec::new(),
            stats: StreamStats::default(),
        }))
    }
}

/// A layer's activations on the GPU (`n` tokens): the residual rows, the normalised
/// rows, the queries, keys and values, the attention output (all heads), its projection
/// and the router logits.
#[derive(Default)]
struct LayerBuffers {
    h: Option<GpuBuffer>,
    hb: Option<GpuBuffer>,
    q: Option<GpuBuffer>,
    k: Option<GpuBuffer>,
    v: Option<GpuBuffer>,
    att: Option<GpuBuffer>,
    o: Option<GpuBuffer>,
    logits: Option<GpuBuffer>,
}

/// What a started layer reads back: `n × dim` residual values, then as many normalised
/// values when `xb`, then `logits` router logits.
#[derive(Clone, Copy, Debug)]
struct LayerPending {
    floats: usize,
    xb: bool,
    logits: usize,
}

/// The device part of a sequence's [`crate::KvCache`]: per layer whose attention runs
/// on this GPU, its keys and values (GQA) or latents (MLA) at every position of the
/// context.
struct WgpuKv {
    layers: Vec<Option<LayerKv>>,
}

/// One layer's cache on the GPU.
enum LayerKv {
    Gqa(GpuKvCache),
    Mla(MlaLatentCache),
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
    /// Layers whose attention runs here: their buffers, the step's RoPE angles, and the
    /// layer in flight (read back through `staging` too).
    layer: LayerBuffers,
    rope: Option<RopeTable>,
    layer_pending: Option<LayerPending>,
    /// Rows of the normalised hidden states the last started layer left in
    /// `layer.hb` (a MoE layer's shared experts read them there).
    resident_rows: usize,
    /// How MLA layers choose their form this step, and their buffers.
    mla_rule: Option<MlaRule>,
    mla: mla::MlaBuffers,
    /// The step's token positions, and the host side of a layer's read-back.
    positions: Vec<usize>,
    host: Vec<f32>,
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

/// A buffer `ensure` allocated.
fn got(b: &Option<GpuBuffer>) -> &GpuBuffer {
    b.as_ref().expect("ensured")
}

/// `v`'s GPU buffer.
fn vector(v: &DeviceVector) -> Result<&GpuBuffer, ModelError> {
    v.handle
        .downcast_ref::<GpuBuffer>()
        .ok_or_else(|| ModelError::Kernel(format!("{}: not a wgpu buffer", v.name)))
}

/// A float offset or count as the shaders' u32 (every bound buffer is within 4 GiB, so a
/// larger one is a caller's bug reported as such).
fn u32_of(v: usize, what: &str) -> Result<u32, ModelError> {
    u32::try_from(v).map_err(|_| ModelError::Kernel(format!("{what}: {v} is past u32")))
}

/// Records the SiLU-gated FFN `f` over `n` rows of `x` into `y`, through the hidden
/// buffers `g`, `u`, `a` (each `n × f.gate.n_out` floats).
#[allow(clippy::too_many_arguments)]
fn record_ffn(
    matmul: &MatmulKernels,
    ops: &Ops,
    rec: &mut Recording<'_>,
    f: &DeviceFfn,
    x: &GpuBuffer,
    (g, u, a): (&GpuBuffer, &GpuBuffer, &GpuBuffer),
    y: &GpuBuffer,
    n: usize,
) -> Result<(), ModelError> {
    let (gate_w, up_w, down_w) = (matrix(&f.gate)?, matrix(&f.up)?, matrix(&f.down)?);
    let hidden = f.gate.n_out;
    let n32 = u32_of(n, "ffn tokens")?;
    matmul.record_path(PATH, rec, gate_w, x, 0, g, 0, n32)?;
    matmul.record_path(PATH, rec, up_w, x, 0, u, 0, n32)?;
    ops.glu(
        rec,
        Glu::Silu,
        Rows::dense(g, hidden),
        Rows::dense(u, hidden),
        Rows::dense(a, hidden),
        n,
        hidden,
    )?;
    matmul.record_path(PATH, rec, down_w, a, 0, y, 0, n32)?;
    Ok(())
}

impl WgpuStream {
    fn check_idle(&self, what: &str) -> Result<(), ModelError> {
        match (self.pending, self.layer_pending) {
            (None, None) => Ok(()),
            _ => Err(ModelError::Kernel(format!(
                "{what}: a device stage is still in flight (finish it first)"
            ))),
        }
    }

    /// The FFN's hidden buffers, grown for `n` rows of `hidden`.
    fn ensure_ffn(&mut self, n: usize, hidden: usize) -> Result<(), ModelError> {
        for slot in [0, 1, 2] {
            let (s, label) = match slot {
                0 => (&mut self.gate, "ffn gate"),
                1 => (&mut self.up, "ffn up"),
                _ => (&mut self.act, "ffn activation"),
            };
            ensure(&self.gpu, s, label, n * hidden, false)?;
        }
        Ok(())
    }

    fn ffn_buffers(&self) -> (&GpuBuffer, &GpuBuffer, &GpuBuffer) {
        (
            self.gate.as_ref().expect("ensured"),
            self.up.as_ref().expect("ensured"),
            self.act.as_ref().expect("ensured"),
        )
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
        self.stats.dispatches += rec.dispatches();
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
        self.ensure_ffn(n, f.gate.n_out)?;
        self.submit("ffn", x, n * f.down.n_out, |s, rec| {
            let (xb, yb) = (s.x.as_ref().expect("x"), s.y.as_ref().expect("y"));
            record_ffn(&s.matmul, &s.ops, rec, f, xb, s.ffn_buffers(), yb, n)
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

    fn begin_step(
        &mut self,
        c: &Config,
        rows: &[(usize, usize)],
        mla: MlaRule,
    ) -> Result<(), ModelError> {
        self.check_idle("forward step")?;
        self.resident_rows = 0;
        self.mla_rule = Some(mla);
        let n = rows.len().max(1);
        if self
            .rope
            .as_ref()
            .is_none_or(|t| t.capacity < n || t.n_dims != c.rope.n_dims)
        {
            self.rope = Some(RopeTable::new(
                &self.gpu,
                n.next_power_of_two(),
                c.rope.n_dims,
            )?);
        }
        let table = self.rope.as_mut().expect("just made");
        self.positions.clear();
        self.positions.extend(rows.iter().map(|&(_, pos)| pos));
        table.fill(&self.gpu, &c.rope, &self.positions, None)?;
        Ok(())
    }

    fn start_attention(
        &mut self,
        c: &Config,
        il: usize,
        a: &DeviceAttention,
        x: &[f32],
        batch: &mut Batch<'_, '_>,
        after: AfterAttention<'_>,
    ) -> Result<(), ModelError> {
        let what = format!("layer {il} attention");
        self.check_idle(&what)?;
        let dim = c.dim;
        let n = rows_of(x, dim, &what)?;
        if n != batch.rows.len() {
            return Err(ModelError::Kernel(format!(
                "{what}: {n} residual rows for a batch of {} tokens",
                batch.rows.len()
            )));
        }
        if self.rope.as_ref().is_none_or(|t| t.len != n) {
            return Err(ModelError::Kernel(format!(
                "{what}: the step's RoPE angles were not prepared (begin_step)"
            )));
        }
        let (attn_norm, ffn_norm) = match a {
            DeviceAttention::Gqa(g) => (&g.attn_norm, &g.ffn_norm),
            DeviceAttention::Mla(m) => (&m.attn_norm, &m.ffn_norm),
        };
        let (xb_back, logits_n) = match after {
            AfterAttention::Ffn(f) => {
                self.ensure_ffn(n, f.gate.n_out)?;
                ensure(&self.gpu, &mut self.y, "stage output", n * dim, false)?;
                (false, 0)
            }
            AfterAttention::Norm => (true, 0),
            AfterAttention::Router => {
                let r = a.router().ok_or_else(|| {
                    ModelError::Kernel(format!("{what}: a MoE layer without its router here"))
                })?;
                (true, n * r.n_out)
            }
        };
        let lb = &mut self.layer;
        for (slot, label, floats) in [
            (&mut lb.h, "residual rows", n * dim),
            (&mut lb.hb, "normalised rows", n * dim),
            (&mut lb.o, "attention projection", n * dim),
            (&mut lb.logits, "router logits", logits_n),
        ] {
            ensure(&self.gpu, slot, label, floats, false)?;
        }
        let back = n * dim * if xb_back { 2 } else { 1 } + logits_n;
        ensure(&self.gpu, &mut self.staging, "stage read-back", back, true)?;
        match a {
            DeviceAttention::Gqa(_) => self.prepare_gqa(c, il, n, batch)?,
            DeviceAttention::Mla(m) => {
                let rule = self.mla_rule.ok_or_else(|| {
                    ModelError::Kernel(format!("{what}: no step begun (begin_step)"))
                })?;
                mla::prepare(
                    &self.gpu,
                    &mut self.mla,
                    &mut self.layer.att,
                    c,
                    il,
                    m,
                    rule,
                    n,
                    batch,
                )?
            }
        }

        let gpu = self.gpu.clone();
        let (ops, mm) = (self.ops.clone(), self.matmul.clone());
        let lb = &self.layer;
        let (h, hb, o) = (got(&lb.h), got(&lb.hb), got(&lb.o));
        let staging = self.staging.as_ref().expect("ensured");
        let table = self.rope.as_ref().expect("checked");
        gpu.write(h, bytemuck::cast_slice(x))?;
        let mut rec = gpu.record(&what);
        let n32 = u32_of(n, &what)?;
        let eps = c.rms_eps;
        ops.rms_norm(
            &mut rec,
            Rows::dense(h, dim),
            Some(Rows::dense(hb, dim)),
            n,
            dim,
            Some(vector(attn_norm)?),
            eps,
        )?;
        // The attention's output projection into `o`.
        match a {
            DeviceAttention::Gqa(g) => {
                record_gqa(&ops, &mm, &mut rec, lb, table, c, il, g, n, batch)?
            }
            DeviceAttention::Mla(m) => mla::record(
                &ops,
                &mm,
                &mut rec,
                &self.mla,
                mla::LayerIo {
                    hb,
                    att: got(&lb.att),
                    o,
                },
                table,
                c,
                m,
                n,
                batch,
                il,
            )?,
        }
        ops.add(&mut rec, Rows::dense(h, dim), Rows::dense(o, dim), n, dim)?;
        ops.rms_norm(
            &mut rec,
            Rows::dense(h, dim),
            Some(Rows::dense(hb, dim)),
            n,
            dim,
            Some(vector(ffn_norm)?),
            eps,
        )?;
        match after {
            AfterAttention::Ffn(f) => {
                let y = self.y.as_ref().expect("ensured");
                record_ffn(&mm, &ops, &mut rec, f, hb, self.ffn_buffers(), y, n)?;
                ops.add(&mut rec, Rows::dense(h, dim), Rows::dense(y, dim), n, dim)?;
            }
            AfterAttention::Norm => {}
            AfterAttention::Router => {
                let r = matrix(a.router().expect("checked"))?;
                let logits = got(&lb.logits);
                mm.record_path(PATH, &mut rec, r, hb, 0, logits, 0, n32)?;
            }
        }
        let nd = (n * dim * 4) as u64;
        rec.copy_region(h, 0, staging, 0, nd)?;
        if xb_back {
            rec.copy_region(hb, 0, staging, nd, nd)?;
        }
        if logits_n > 0 {
            rec.copy_region(got(&lb.logits), 0, staging, 2 * nd, (logits_n * 4) as u64)?;
        }
        self.stats.dispatches += rec.dispatches();
        rec.submit()?;
        self.resident_rows = n;
        self.layer_pending = Some(LayerPending {
            floats: back,
            xb: xb_back,
            logits: logits_n,
        });
        self.stats.bytes_up += nd;
        self.stats.submissions += 1;
        Ok(())
    }

    fn finish_layer(
        &mut self,
        x: &mut [f32],
        xb: Option<&mut [f32]>,
        logits: Option<&mut [f32]>,
    ) -> Result<(), ModelError> {
        let Some(p) = self.layer_pending.take() else {
            return Err(ModelError::Kernel(
                "device layer: nothing was started".into(),
            ));
        };
        let nd = x.len();
        let expect = nd * if p.xb { 2 } else { 1 } + p.logits;
        let wrong = p.floats != expect
            || p.xb != xb.is_some()
            || (p.logits > 0) != logits.is_some()
            || xb.as_ref().is_some_and(|b| b.len() != nd)
            || logits.as_ref().is_some_and(|l| l.len() != p.logits);
        if wrong {
            return Err(ModelError::Kernel(format!(
                "device layer: {} values computed, {nd} residual values{}{} asked for",
                p.floats,
                if xb.is_some() {
                    " + normalised rows"
                } else {
                    ""
                },
                logits
                    .as_ref()
                    .map_or(String::new(), |l| format!(" + {} logits", l.len())),
            )));
        }
        let start = Instant::now();
        let staging = self.staging.as_ref().expect("a started layer has one");
        // One read of everything the layer sends back, then split on the host.
        if self.host.len() < p.floats {
            self.host.resize(p.floats, 0.0);
        }
        let host = &mut self.host[..p.floats];
        self.gpu
            .read_staging(staging, bytemuck::cast_slice_mut(host))?;
        x.copy_from_slice(&host[..nd]);
        if let Some(b) = xb {
            b.copy_from_slice(&host[nd..2 * nd]);
        }
        if let Some(l) = logits {
            l.copy_from_slice(&host[2 * nd..]);
        }
        self.stats.wait_seconds += start.elapsed().as_secs_f64();
        self.stats.bytes_down += (p.floats * 4) as u64;
        Ok(())
    }

    fn start_resident_ffn(&mut self, f: &DeviceFfn) -> Result<(), ModelError> {
        self.check_idle(&f.gate.name)?;
        let n = self.resident_rows;
        if n == 0 || self.layer.hb.is_none() {
            return Err(ModelError::Kernel(format!(
                "{}: no layer left normalised rows on the device",
                f.gate.name
            )));
        }
        self.ensure_ffn(n, f.gate.n_out)?;
        let out = n * f.down.n_out;
        ensure(&self.gpu, &mut self.y, "stage output", out, false)?;
        ensure(&self.gpu, &mut self.staging, "stage read-back", out, true)?;
        let gpu = self.gpu.clone();
        let mut rec = gpu.record("shared experts");
        let (hb, y) = (
            self.layer.hb.as_ref().expect("checked"),
            self.y.as_ref().expect("ensured"),
        );
        record_ffn(
            &self.matmul,
            &self.ops,
            &mut rec,
            f,
            hb,
            self.ffn_buffers(),
            y,
            n,
        )?;
        rec.copy_region(
            y,
            0,
            self.staging.as_ref().expect("ensured"),
            0,
            (out * 4) as u64,
        )?;
        self.stats.dispatches += rec.dispatches();
        rec.submit()?;
        self.pending = Some(out);
        self.stats.submissions += 1;
        Ok(())
    }

    fn stats(&self) -> StreamStats {
        self.stats
    }
}

impl WgpuStream {
    /// A GQA layer's buffers for `n` tokens, and each sequence's cache of layer `il`
    /// (made on its first step).
    fn prepare_gqa(
        &mut self,
        c: &Config,
        il: usize,
        n: usize,
        batch: &mut Batch<'_, '_>,
    ) -> Result<(), ModelError> {
        let (hd, hdv) = (c.head_dim, c.head_dim_v);
        let (q_w, k_w, v_w) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * hdv);
        let lb = &mut self.layer;
        for (slot, label, floats) in [
            (&mut lb.q, "queries", n * q_w),
            (&mut lb.k, "keys", n * k_w),
            (&mut lb.v, "values", n * v_w),
            (&mut lb.att, "attention output", n * c.n_head * hdv),
        ] {
            ensure(&self.gpu, slot, label, floats, false)?;
        }
        for seq in batch.seqs.iter_mut() {
            let n_ctx = seq.kv.n_ctx();
            let slot = layer_slot(seq.kv.device_part(), c, il)?;
            if slot.is_none() {
                *slot = Some(LayerKv::Gqa(GpuKvCache::new(
                    &self.gpu, 1, n_ctx, k_w, v_w,
                )?));
            }
        }
        Ok(())
    }
}

/// Layer `il`'s slot in a sequence's device cache (the cache made on first use).
fn layer_slot<'p>(
    part: &'p mut Option<Box<dyn std::any::Any + Send>>,
    c: &Config,
    il: usize,
) -> Result<&'p mut Option<LayerKv>, ModelError> {
    if part.as_ref().is_none_or(|p| !p.is::<WgpuKv>()) {
        *part = Some(Box::new(WgpuKv {
            layers: (0..c.n_layer).map(|_| None).collect(),
        }));
    }
    let kv = part
        .as_mut()
        .and_then(|p| p.downcast_mut::<WgpuKv>())
        .expect("just made");
    kv.layers
        .get_mut(il)
        .ok_or_else(|| ModelError::Kernel(format!("layer {il} of a cache of {} layers", c.n_layer)))
}

/// Layer `il`'s cache of a sequence, made by the stage's `prepare`.
fn layer_kv<'k>(seq: &'k mut crate::forward::BatchSeq<'_>, il: usize) -> Option<&'k LayerKv> {
    seq.kv
        .device_part()
        .as_ref()
        .and_then(|p| p.downcast_ref::<WgpuKv>())
        .and_then(|kv| kv.layers.get(il))
        .and_then(|l| l.as_ref())
}

/// Records a GQA layer's attention from the normalised rows `lb.hb` to its output
/// projection in `lb.o`: projections (and biases, q/k norms), RoPE, each sequence's cache
/// store and attention, the output projection.
#[allow(clippy::too_many_arguments)]
fn record_gqa(
    ops: &Ops,
    mm: &MatmulKernels,
    rec: &mut Recording<'_>,
    lb: &LayerBuffers,
    table: &RopeTable,
    c: &Config,
    il: usize,
    a: &DeviceGqa,
    n: usize,
    batch: &mut Batch<'_, '_>,
) -> Result<(), ModelError> {
    let what = format!("layer {il} attention");
    let dim = c.dim;
    let (hd, hdv) = (c.head_dim, c.head_dim_v);
    let (q_w, k_w, v_w) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * hdv);
    let (hb, q, k, v) = (got(&lb.hb), got(&lb.q), got(&lb.k), got(&lb.v));
    let (att, o) = (got(&lb.att), got(&lb.o));
    let n32 = u32_of(n, &what)?;
    let eps = c.rms_eps;
    for (w, bias, out, width) in [
        (&a.wq, &a.bq, q, q_w),
        (&a.wk, &a.bk, k, k_w),
        (&a.wv, &a.bv, v, v_w),
    ] {
        mm.record_path(PATH, rec, matrix(w)?, hb, 0, out, 0, n32)?;
        if let Some(b) = bias {
            ops.add(
                rec,
                Rows::dense(out, width),
                Rows::at(vector(b)?, 0, 0),
                n,
                width,
            )?;
        }
    }
    // The norm spans what its weights span: one head or all heads of a token.
    for (norm, buf, width) in [(&a.q_norm, q, q_w), (&a.k_norm, k, k_w)] {
        if let Some(nw) = norm {
            if nw.len == 0 || !width.is_multiple_of(nw.len) {
                return Err(ModelError::Kernel(format!(
                    "{what}: a norm of {} values over rows of {width}",
                    nw.len
                )));
            }
            let rows = n * width / nw.len;
            ops.rms_norm(
                rec,
                Rows::dense(buf, nw.len),
                None,
                rows,
                nw.len,
                Some(vector(nw)?),
                eps,
            )?;
        }
    }
    ops.rope(
        rec,
        Rows::dense(q, q_w),
        n,
        c.n_head,
        hd,
        0,
        table,
        0,
        c.rope.mode,
    )?;
    ops.rope(
        rec,
        Rows::dense(k, k_w),
        n,
        c.n_head_kv,
        hd,
        0,
        table,
        0,
        c.rope.mode,
    )?;
    let sinks = a.sinks.as_ref().map(vector).transpose()?;
    let mut t0 = 0;
    for seq in batch.seqs.iter_mut() {
        let m = seq.tokens.len();
        let pos0 = seq.kv.len();
        let Some(LayerKv::Gqa(cache)) = layer_kv(seq, il) else {
            return Err(ModelError::Kernel(format!(
                "{what}: a sequence without its GQA cache on the device"
            )));
        };
        cache.append(
            ops,
            rec,
            0,
            pos0,
            m,
            Rows::at(k, t0 * k_w, k_w),
            Rows::at(v, t0 * v_w, v_w),
        )?;
        let heads = GqaHeads {
            n_head: c.n_head,
            n_kv_head: c.n_head_kv,
            head_dim: hd,
            head_dim_v: hdv,
            scale: c.kq_scale,
            window: c.window(il),
            sinks,
            split: None,
        };
        cache.attend(ops, rec, 0, heads, q, t0, m, pos0, att)?;
        t0 += m;
    }
    mm.record_path(PATH, rec, matrix(&a.wo)?, att, 0, o, 0, n32)?;
    if let Some(b) = &a.bo {
        ops.add(rec, Rows::dense(o, dim), Rows::at(vector(b)?, 0, 0), n, dim)?;
    }
    Ok(())
}
