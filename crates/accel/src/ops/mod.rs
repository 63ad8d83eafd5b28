//! The GPU ops other than matmul: RMSNorm, residual/bias adds, gated activations, softmax,
//! RoPE/YaRN, strided row copies, GQA attention over a KV cache in GPU memory, and the
//! cache and attention core of DeepSeek's MLA in both forms.
//!
//! [`Ops::new`] compiles every pipeline once; each method validates its sizes against the
//! buffers on the host (an [`AccelError`], never a GPU fault or a silent clamp) and records
//! one dispatch into a [`Recording`]. Each op matches a CPU function of `kernels` (named in
//! its docs) and is tested against it (`tests/ops*.rs`).
//!
//! Buffers hold f32 values; shapes and offsets are counted in f32 elements. A [`Rows`]
//! names a block of rows inside a buffer (offset + stride), so ops can read and write parts
//! of a row (DeepSeek's latent vs RoPE parts, a KV cache at position `p`) without copies.
//!
//! None of these kernels needs subgroup operations or f16: each is a workgroup-memory
//! reduction or an elementwise pass in f32, so one path runs on every adapter.

mod act;
mod attn;
mod copy;
mod mla;
mod norm;
mod rope;
mod softmax;

pub use attn::{GpuAttn, GpuKvCache, GqaHeads, MAX_HEAD_DIM};
pub use mla::{MlaDims, MlaLatentCache};
pub use rope::RopeTable;

use crate::{AccelError, Gpu, GpuBuffer, Kernel, Workgroups};

/// Every compiled pipeline of this module, plus a one-float buffer bound where an optional
/// input (a norm's weight, a softmax's mask or sinks) is absent.
pub struct Ops {
    norm: Kernel,
    norm_inplace: Kernel,
    add: Kernel,
    glu: Kernel,
    softmax: Kernel,
    rope: Kernel,
    copy: Kernel,
    attn: Kernel,
    absent: GpuBuffer,
    adapter: String,
    max_per_dim: u32,
    max_binding: u64,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("adapter", &self.adapter)
            .finish()
    }
}

/// Kernels that read `src` and write `dst` come in two variants built from one body: in
/// place (`data` at binding 1) or into another buffer (`src` at 1, `dst` at 3), so that
/// wgpu never sees one buffer bound twice with a write.
const IO_INPLACE: &str = "
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
fn load(i: u32) -> f32 { return data[i]; }
fn store(i: u32, v: f32) { data[i] = v; }
";
const IO_COPY: &str = "
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
fn load(i: u32) -> f32 { return src[i]; }
fn store(i: u32, v: f32) { dst[i] = v; }
";

impl Ops {
    /// Compiles every pipeline (once per device).
    pub fn new(gpu: &Gpu) -> Result<Ops, AccelError> {
        let norm_body = include_str!("../shaders/norm.wgsl");
        Ok(Ops {
            norm: gpu.compile("rms_norm", &format!("{IO_COPY}{norm_body}"), "main")?,
            norm_inplace: gpu.compile(
                "rms_norm (in place)",
                &format!("{IO_INPLACE}{norm_body}"),
                "main",
            )?,
            add: gpu.compile("add", include_str!("../shaders/add.wgsl"), "main")?,
            glu: gpu.compile("glu", include_str!("../shaders/act.wgsl"), "main")?,
            softmax: gpu.compile("softmax", include_str!("../shaders/softmax.wgsl"), "main")?,
            rope: gpu.compile("rope", include_str!("../shaders/rope.wgsl"), "main")?,
            copy: gpu.compile("copy_rows", include_str!("../shaders/copy.wgsl"), "main")?,
            attn: gpu.compile("attention", include_str!("../shaders/attn.wgsl"), "main")?,
            absent: gpu.zeroed("absent optional input", 4)?,
            adapter: gpu.name().to_string(),
            max_per_dim: gpu.limits.max_compute_workgroups_per_dimension,
            max_binding: gpu.max_binding(),
        })
    }

    fn grid(&self, count: usize) -> Workgroups {
        Workgroups::linear(count as u32, self.max_per_dim)
    }

    /// An error about the shapes of op `op` (a caller's bug, reported before anything
    /// reaches the GPU).
    fn bad(&self, op: &str, reason: String) -> AccelError {
        AccelError::Validation {
            what: op.to_string(),
            adapter: self.adapter.clone(),
            reason,
        }
    }

    /// `b` can be bound whole as one storage binding.
    fn bindable(&self, op: &str, b: &GpuBuffer) -> Result<(), AccelError> {
        if b.buffer.size() > self.max_binding {
            return Err(self.bad(
                op,
                format!(
                    "{} holds {} bytes, more than one storage binding ({} bytes): split it by rows",
                    b.label, b.len, self.max_binding
                ),
            ));
        }
        Ok(())
    }

    /// `a` and `b` are different buffers (one of them is written).
    fn distinct(&self, op: &str, a: &GpuBuffer, b: &GpuBuffer) -> Result<(), AccelError> {
        if a.buffer == b.buffer {
            return Err(self.bad(
                op,
                format!(
                    "{} is both read and written: pass the in-place form",
                    a.label
                ),
            ));
        }
        Ok(())
    }

    /// `rows` holds `n_rows` rows of `width` floats (and can be bound).
    fn check_rows(
        &self,
        op: &str,
        what: &str,
        rows: &Rows<'_>,
        n_rows: usize,
        width: usize,
    ) -> Result<(), AccelError> {
        self.bindable(op, rows.buf)?;
        if n_rows == 0 || width == 0 {
            return Ok(());
        }
        let need = (n_rows - 1)
            .checked_mul(rows.stride)
            .and_then(|x| x.checked_add(rows.offset))
            .and_then(|x| x.checked_add(width));
        let have = rows.buf.len as usize / 4;
        match need {
            Some(need) if need <= have => Ok(()),
            _ => Err(self.bad(
                op,
                format!(
                    "{what} ({}): {n_rows} rows of {width} floats at offset {} and stride {} need \
                     {} floats, the buffer holds {have}",
                    rows.buf.label,
                    rows.offset,
                    rows.stride,
                    need.map_or("more than 2^64".to_string(), |n| n.to_string()),
                ),
            )),
        }
    }

    /// `buf` holds at least `n` floats (and can be bound).
    fn check_len(&self, op: &str, what: &str, buf: &GpuBuffer, n: usize) -> Result<(), AccelError> {
        self.check_rows(op, what, &Rows::dense(buf, n), 1, n)
    }
}

/// A block of f32 rows inside a buffer: element `c` of row `r` is at
/// `offset + r·stride + c` (all in floats). A stride of 0 repeats one row (a bias).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub buf: &'a GpuBuffer,
    pub offset: usize,
    pub stride: usize,
}

impl<'a> Rows<'a> {
    /// Rows of `width` floats back to back from the start of `buf`.
    pub fn dense(buf: &'a GpuBuffer, width: usize) -> Rows<'a> {
        Rows {
            buf,
            offset: 0,
            stride: width,
        }
    }

    /// Rows of `stride` floats from `offset`.
    pub fn at(buf: &'a GpuBuffer, offset: usize, stride: usize) -> Rows<'a> {
        Rows {
            buf,
            offset,
            stride,
        }
    }
}

/// A uniform parameter block: scalars (u32 or f32, 4 bytes each) in the order the shader's
/// `Params` struct declares them.
#[derive(Default)]
struct Params(Vec<u8>);

impl Params {
    /// A count or index: values past u32 are rejected by the callers' checks first (every
    /// bound buffer is at most 4 GiB, so its float indices fit).
    fn u(mut self, v: usize) -> Self {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
        self
    }
    fn f(mut self, v: f32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn flag(self, v: bool) -> Self {
        self.u(v as usize)
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}
