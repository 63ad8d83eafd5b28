//! Quantized matmul on the GPU: y[t][r] = Σ_c w[r][c]·x[t][c] with f32 activations and
//! outputs and GGUF weights dequantized inside the shader.
//!
//! Why it is built this way:
//! - **Weights stay in file order** ([`GpuMatrix`]): the tensor's bytes are uploaded as they are
//!   in the GGUF file, so loading is one copy and the GPU holds exactly the file's bytes (the
//!   placement plan counts them). Blocks of 34 or 210 bytes are not 4-byte aligned; the
//!   shaders read bytes and unaligned words out of `array<u32>` (`matmul_common.wgsl`), which
//!   costs a few shifts next to the memory traffic that bounds a GEMV anyway.
//! - **Split at row boundaries**: one storage binding is limited (128 MiB on lavapipe, often
//!   2–4 GiB on real GPUs), and an output head or a dense FFN matrix can be larger. A matrix is
//!   held as parts of whole rows, each within the limit, and [`MatmulKernels::record`]
//!   dispatches once per part; every part writes its own rows of y. The limit is a parameter
//!   ([`GpuMatrix::upload_with_limit`]) so tests can force a split with a small matrix.
//! - **One dequantizer per type, shared by both kernels**: each `matmul_<type>.wgsl` decodes 8
//!   consecutive values of a row (`dequant8`) with the formulas of `quant::dequant`, in f32.
//!   Activations stay f32 and sums are f32, so results match the CPU's exact mode
//!   (`kernels::matmul_exact`, i.e. dequantize then an f32 dot) to rounding (~1e-6 relative),
//!   and every shader is tested against `quant::dequantize` on lavapipe.
//! - **GEMV for decode** (≤ [`GEMV_MAX_TOKENS`] tokens): one workgroup of 64 threads per row
//!   and group of up to 8 tokens; each weight chunk is decoded once and multiplied into every
//!   token's sum (decode is bound by reading the weights once).
//! - **Tiled GEMM for prompts** (more tokens): tiles of 64 rows × 32 tokens; per step of 32
//!   values the weight tile is decoded into workgroup memory once and reused by all 32 tokens,
//!   and each thread accumulates 4 rows × 2 tokens. 12.4 KiB of workgroup memory, within
//!   WebGPU's 16 KiB minimum, so it runs on every adapter.
//! - **Batch invariance: both kernels add in one fixed order**, so a token's outputs are the
//!   same bits alone (GEMV), in a small batch (GEMV) or in a prompt (GEMM), and the engine's
//!   concurrent-vs-solo guarantee holds on the GPU tier with the fast kernel for each size.
//!   The order: slices of 32 values summed in order, slices summed in order into 64 runs
//!   (`per_run` slices each, fixed by the row length), runs added by an in-order pairwise
//!   tree. The GEMV computes one run per thread and the tree across threads (subgroup
//!   shuffles for its lowest levels where the adapter has subgroups, workgroup memory for
//!   the rest or for all of it without them — both compiled and tested); the GEMM streams the
//!   same order with a binary-counter stack per output. `subgroupAdd` is not used: its order
//!   is the hardware's. A test checks the bits on lavapipe; a driver that fused `a + w·x`
//!   into an FMA in one kernel but not the other would break it, which is why both kernels
//!   write the products in the same form.
//! - **f16 arithmetic is not used**: the f16 scales are decoded exactly with integer bit
//!   operations (no subnormal flushing), and every product is f32 so that the GPU and CPU
//!   tiers agree; `shader-f16` would save little where weights are read once per token.
//! - **A batch of same-shape matrices is one dispatch** ([`MatmulKernels::record_batched`]):
//!   per-head products (DeepSeek's `attn_k_b`/`attn_v_b`: 128 heads on V3) would otherwise
//!   be one dispatch each, thousands per token. The heads' matrices are uploaded back to
//!   back as one [`GpuMatrix`] ([`GpuMatrix::upload_batched`]) and the grid's z index picks
//!   matrix z: its rows, its x at `x_offset + z·x_stride`, its y at `y_offset + z·y_stride`.
//!   A single matrix is the batch of one (z = 0), through the same shaders and code, so
//!   a batched product is bit for bit the separate ones. A batch is split into parts at
//!   whole matrices only (the GEMM's tiles must not mix two matrices' activations).
//! - **Router logits are this matmul**: F32/F16 gate weights are ordinary `GpuMatrix`es; float
//!   rows may have any length (rows end inside a chunk of 8 are masked).

use quant::GgmlType;

use crate::pipeline::Recording;
use crate::{AccelError, Gpu, GpuBuffer, Kernel, Workgroups};

/// Up to this many tokens a matmul runs as a GEMV, above it as a tiled GEMM.
pub const GEMV_MAX_TOKENS: u32 = 8;

/// Tokens per GEMV workgroup (the shader's `GEMV_TOKENS`).
const GEMV_TOKENS: u32 = 8;
/// Rows and tokens per GEMM tile (the shader's `GEMM_ROWS`, `GEMM_TOKENS`).
const GEMM_ROWS: u32 = 64;
const GEMM_TOKENS: u32 = 32;

/// Weight types with GPU kernels, in ggml id order.
pub const GPU_MATMUL_TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, BF16,
    ]
};

const COMMON: &str = include_str!("shaders/matmul_common.wgsl");
const GEMV: &str = include_str!("shaders/matmul_gemv.wgsl");
const GEMV_SUBGROUP: &str = include_str!("shaders/matmul_gemv_subgroup.wgsl");
const GEMV_SHARED: &str = include_str!("shaders/matmul_gemv_shared.wgsl");
const GEMM: &str = include_str!("shaders/matmul_gemm.wgsl");

/// The shader that decodes `ty` (its `dequant8`), if there is one.
fn dequant_source(ty: GgmlType) -> Option<&'static str> {
    use GgmlType::*;
    Some(match ty {
        F32 => include_str!("shaders/matmul_f32.wgsl"),
        F16 => include_str!("shaders/matmul_f16.wgsl"),
        BF16 => include_str!("shaders/matmul_bf16.wgsl"),
        Q4_0 => include_str!("shaders/matmul_q4_0.wgsl"),
        Q4_1 => include_str!("shaders/matmul_q4_1.wgsl"),
        Q5_0 => include_str!("shaders/matmul_q5_0.wgsl"),
        Q5_1 => include_str!("shaders/matmul_q5_1.wgsl"),
        Q8_0 => include_str!("shaders/matmul_q8_0.wgsl"),
        Q2_K => include_str!("shaders/matmul_q2_k.wgsl"),
        Q3_K => include_str!("shaders/matmul_q3_k.wgsl"),
        Q4_K => include_str!("shaders/matmul_q4_k.wgsl"),
        Q5_K => include_str!("shaders/matmul_q5_k.wgsl"),
        Q6_K => include_str!("shaders/matmul_q6_k.wgsl"),
        IQ4_NL => include_str!("shaders/matmul_iq4_nl.wgsl"),
        IQ4_XS => include_str!("shaders/matmul_iq4_xs.wgsl"),
        _ => return None,
    })
}

fn type_list() -> String {
    GPU_MATMUL_TYPES
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unsupported(what: &str, ty: GgmlType) -> AccelError {
    AccelError::UnsupportedType {
        what: what.to_string(),
        ty: ty.name().to_string(),
        supported: type_list(),
    }
}

fn bad_shape(what: &str, reason: String) -> AccelError {
    AccelError::BadShape {
        what: what.to_string(),
        reason,
    }
}

/// Whether [`GpuMatrix`] and [`MatmulKernels`] take weights of type `ty`.
pub fn gpu_supports(ty: GgmlType) -> bool {
    dequant_source(ty).is_some()
}

/// Byte offsets inside one part are u32 in the shaders; the unaligned word read may touch the
/// word after the last byte.
const MAX_PART_BYTES: u64 = u32::MAX as u64 - 8;

/// Rows `first_row..first_row + rows` of matrices `first..first + count` of a batch, in one
/// storage buffer (matrix by matrix). A batch of one is split at any row; a larger batch at
/// whole matrices only (`first_row` 0, every row).
#[derive(Debug)]
struct MatrixPart {
    first: u32,
    count: u32,
    first_row: u32,
    rows: u32,
    buffer: GpuBuffer,
}

/// Weight matrices on the GPU: a batch of `batch` matrices (1 for an ordinary weight), each
/// `rows` rows of `cols` values of type `ty`, the GGUF bytes in file order (matrix after
/// matrix), in one or more buffers split so each fits one storage binding.
#[derive(Debug)]
pub struct GpuMatrix {
    name: String,
    ty: GgmlType,
    batch: u32,
    rows: u32,
    cols: u32,
    row_bytes: u32,
    parts: Vec<MatrixPart>,
}

impl GpuMatrix {
    /// Uploads `data` (rows × cols values of `ty`, as in the file) split at the adapter's
    /// binding limit. Unsupported types are [`AccelError::UnsupportedType`] (the caller keeps
    /// the tensor on the CPU); a data length that does not match the shape is
    /// [`AccelError::BadShape`].
    pub fn upload(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<GpuMatrix, AccelError> {
        Self::upload_with_limit(gpu, name, ty, rows, cols, data, gpu.max_binding())
    }

    /// As [`GpuMatrix::upload`], with parts of at most `max_part_bytes` (also capped by the
    /// adapter's binding limit): tests use a small limit to force a split.
    pub fn upload_with_limit(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
        max_part_bytes: u64,
    ) -> Result<GpuMatrix, AccelError> {
        Self::upload_batched_with_limit(gpu, name, ty, 1, rows, cols, data, max_part_bytes)
    }

    /// Uploads `batch` matrices of `rows × cols` values of `ty`, back to back in `data` (a
    /// GGUF tensor of ne `[cols, rows, batch]`, e.g. DeepSeek's per-head `attn_k_b`), as one
    /// batch for [`MatmulKernels::record_batched`]. Errors as [`GpuMatrix::upload`]; one
    /// matrix of a larger batch must fit one binding ([`AccelError::TooLarge`]).
    pub fn upload_batched(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        batch: usize,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<GpuMatrix, AccelError> {
        Self::upload_batched_with_limit(gpu, name, ty, batch, rows, cols, data, gpu.max_binding())
    }

    /// As [`GpuMatrix::upload_batched`], with parts of at most `max_part_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_batched_with_limit(
        gpu: &Gpu,
        name: &str,
        ty: GgmlType,
        batch: usize,
        rows: usize,
        cols: usize,
        data: &[u8],
        max_part_bytes: u64,
    ) -> Result<GpuMatrix, AccelError> {
        if !gpu_supports(ty) {
            return Err(unsupported(name, ty));
        }
        if batch == 0 || rows == 0 || cols == 0 {
            return Err(bad_shape(
                name,
                format!("a batch of {batch} matrices of {rows} × {cols} has no values"),
            ));
        }
        let shape_err = || {
            bad_shape(
                name,
                format!(
                    "{ty} rows of {cols} values must be whole blocks of {} and the matrix must \
                     hold at most 2^32 rows of at most 2^32 bytes",
                    ty.block_size()
                ),
            )
        };
        let row_bytes = ty.row_bytes(cols as u64).ok_or_else(shape_err)?;
        let (batch32, rows32, cols32, row_bytes32) = match (
            u32::try_from(batch),
            u32::try_from(rows),
            u32::try_from(cols),
            u32::try_from(row_bytes),
        ) {
            (Ok(n), Ok(r), Ok(c), Ok(b)) => (n, r, c, b),
            _ => return Err(shape_err()),
        };
        let expected = row_bytes as u128 * rows as u128 * batch as u128;
        if data.len() as u128 != expected {
            let what = if batch == 1 {
                String::new()
            } else {
                format!("{batch} matrices of ")
            };
            return Err(bad_shape(
                name,
                format!(
                    "{what}{rows} rows of {cols} {ty} values take {expected} bytes but the tensor has {}",
                    data.len()
                ),
            ));
        }
        // Whole words: a binding limit of 2^31 - 1 (Vulkan, DX12) must not round up past itself.
        let limit = max_part_bytes.min(gpu.max_binding()).min(MAX_PART_BYTES) & !3;
        let too_large = |what: String, bytes: u64| AccelError::TooLarge {
            what,
            bytes,
            limit,
            adapter: gpu.name().to_string(),
        };
        // A part is a run of whole rows (one matrix) or of whole matrices (a batch).
        let (unit_bytes, units) = if batch == 1 {
            if row_bytes > limit {
                return Err(too_large(format!("{name} (one row)"), row_bytes));
            }
            (row_bytes, rows32)
        } else {
            let matrix_bytes = row_bytes * rows as u64;
            if matrix_bytes > limit {
                return Err(too_large(
                    format!("{name} (one matrix of the batch)"),
                    matrix_bytes,
                ));
            }
            (matrix_bytes, batch32)
        };
        let per_part = (limit / unit_bytes).min(units as u64) as u32;
        let mut parts = Vec::new();
        let mut first = 0u32;
        while first < units {
            let n = per_part.min(units - first);
            let start = first as usize * unit_bytes as usize;
            let end = start + n as usize * unit_bytes as usize;
            let label = match (per_part >= units, batch == 1) {
                (true, _) => name.to_string(),
                (false, true) => format!("{name} rows {first}..{}", first + n),
                (false, false) => format!("{name} matrices {first}..{}", first + n),
            };
            let buffer = gpu.upload(&label, &data[start..end])?;
            parts.push(if batch == 1 {
                MatrixPart {
                    first: 0,
                    count: 1,
                    first_row: first,
                    rows: n,
                    buffer,
                }
            } else {
                MatrixPart {
                    first,
                    count: n,
                    first_row: 0,
                    rows: rows32,
                    buffer,
                }
            });
            first += n;
        }
        Ok(GpuMatrix {
            name: name.to_string(),
            ty,
            batch: batch32,
            rows: rows32,
            cols: cols32,
            row_bytes: row_bytes32,
            parts,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Matrices in the batch (1 for an ordinary weight).
    pub fn batch(&self) -> usize {
        self.batch as usize
    }

    /// Rows of one matrix of the batch.
    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    pub fn cols(&self) -> usize {
        self.cols as usize
    }

    /// How many buffers (storage bindings) hold it.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// GPU memory it takes (its buffers, padded to 4 bytes each).
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.buffer.size()).sum()
    }
}

/// One operand of [`MatmulKernels::record_batched`]: matrix z's rows start at element
/// `offset + z·batch_stride` of `buf` (f32 elements).
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub buf: &'a GpuBuffer,
    pub offset: u32,
    pub batch_stride: u32,
}

impl<'a> Strided<'a> {
    pub fn at(buf: &'a GpuBuffer, offset: u32, batch_stride: u32) -> Strided<'a> {
        Strided {
            buf,
            offset,
            batch_stride,
        }
    }
}

/// Which kernel [`MatmulKernels::record_path`] uses: `Auto` picks GEMV up to
/// [`GEMV_MAX_TOKENS`] tokens and GEMM above; tests force one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPath {
    Auto,
    Gemv,
    Gemm,
}

/// The two pipelines of one weight type.
#[derive(Debug)]
struct TypeKernels {
    ty: GgmlType,
    gemv: Kernel,
    gemm: Kernel,
}

/// The matmul pipelines, compiled once (at load).
#[derive(Debug)]
pub struct MatmulKernels {
    kernels: Vec<TypeKernels>,
    subgroups: bool,
    adapter: String,
    max_per_dim: u32,
}

impl MatmulKernels {
    /// Every type of [`GPU_MATMUL_TYPES`], with the subgroup reduction if the adapter has it.
    pub fn new(gpu: &Gpu) -> Result<MatmulKernels, AccelError> {
        Self::for_types(gpu, &GPU_MATMUL_TYPES)
    }

    /// Only the kernels for `types` (the types a model puts on the GPU: compiling is not free).
    pub fn for_types(gpu: &Gpu, types: &[GgmlType]) -> Result<MatmulKernels, AccelError> {
        Self::with_subgroups(gpu, types, gpu.features.subgroup)
    }

    /// As [`MatmulKernels::for_types`], choosing how the GEMV adds its threads' sums:
    /// `subgroups = false` forces the workgroup-memory fallback (same result bits; asking for
    /// subgroups the adapter lacks is an error).
    pub fn with_subgroups(
        gpu: &Gpu,
        types: &[GgmlType],
        subgroups: bool,
    ) -> Result<MatmulKernels, AccelError> {
        if subgroups && !gpu.features.subgroup {
            return Err(AccelError::Validation {
                what: "compiling the matmul kernels".to_string(),
                adapter: gpu.name().to_string(),
                reason: "subgroup operations were asked for but the adapter has none".to_string(),
            });
        }
        let mut kernels: Vec<TypeKernels> = Vec::new();
        for &ty in types {
            if kernels.iter().any(|k| k.ty == ty) {
                continue;
            }
            let dequant = dequant_source(ty).ok_or_else(|| unsupported("matmul kernels", ty))?;
            let reduce = if subgroups {
                GEMV_SUBGROUP
            } else {
                GEMV_SHARED
            };
            let gemv_src = [COMMON, dequant, GEMV, reduce].join("\n");
            let gemm_src = [COMMON, dequant, GEMM].join("\n");
            let name = ty.name().to_lowercase();
            kernels.push(TypeKernels {
                ty,
                gemv: gpu.compile(&format!("matmul_gemv_{name}"), &gemv_src, "main")?,
                gemm: gpu.compile(&format!("matmul_gemm_{name}"), &gemm_src, "main")?,
            });
        }
        Ok(MatmulKernels {
            kernels,
            subgroups,
            adapter: gpu.name().to_string(),
            max_per_dim: gpu.limits.max_compute_workgroups_per_dimension,
        })
    }

    /// Whether the GEMV reduction uses subgroup shuffles.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// Whether kernels for `ty` were compiled.
    pub fn has(&self, ty: GgmlType) -> bool {
        self.kernels.iter().any(|k| k.ty == ty)
    }

    /// Records y[t][r] = Σ_c w[r][c]·x[t][c] for t < n_tokens: x holds n_tokens rows of
    /// `w.cols()` f32 from element `x_offset`, y receives n_tokens rows of `w.rows()` f32 from
    /// element `y_offset`. GEMV up to [`GEMV_MAX_TOKENS`] tokens, tiled GEMM above (the same
    /// bits either way). x and y must be different buffers. Errors (never a panic): a type
    /// without compiled kernels, ranges past a buffer's end, a batched matrix (that is
    /// [`MatmulKernels::record_batched`]).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        rec: &mut Recording,
        w: &GpuMatrix,
        x: &GpuBuffer,
        x_offset: u32,
        y: &GpuBuffer,
        y_offset: u32,
        n_tokens: u32,
    ) -> Result<(), AccelError> {
        self.record_path(MatmulPath::Auto, rec, w, x, x_offset, y, y_offset, n_tokens)
    }

    /// As [`MatmulKernels::record`] with the kernel chosen by `path`: the batch of one.
    #[allow(clippy::too_many_arguments)]
    pub fn record_path(
        &self,
        path: MatmulPath,
        rec: &mut Recording,
        w: &GpuMatrix,
        x: &GpuBuffer,
        x_offset: u32,
        y: &GpuBuffer,
        y_offset: u32,
        n_tokens: u32,
    ) -> Result<(), AccelError> {
        self.record_batched(
            path,
            rec,
            w,
            Strided::at(x, x_offset, 0),
            Strided::at(y, y_offset, 0),
            n_tokens,
        )
    }

    /// Records the product of every matrix `z` of the batch `w` ([`GpuMatrix::upload_batched`])
    /// with its own activations, in one dispatch per part: y[z][t][r] = Σ_c w[z][r][c]·x[z][t][c]
    /// for t < n_tokens, where x[z] is n_tokens rows of `w.cols()` f32 from element
    /// `x.offset + z·x.batch_stride` and y[z] n_tokens rows of `w.rows()` f32 from element
    /// `y.offset + z·y.batch_stride`. Each product has the bits a [`MatmulKernels::record_path`]
    /// of matrix z alone would give. The x ranges may overlap (a stride of 0 gives every
    /// matrix the same x); the y ranges may not. Errors (never a panic): as `record`, output
    /// ranges that overlap, more matrices in one part than a grid dimension allows.
    pub fn record_batched(
        &self,
        path: MatmulPath,
        rec: &mut Recording,
        w: &GpuMatrix,
        x: Strided<'_>,
        y: Strided<'_>,
        n_tokens: u32,
    ) -> Result<(), AccelError> {
        let what = format!("matmul {}", w.name);
        let k = self
            .kernels
            .iter()
            .find(|k| k.ty == w.ty)
            .ok_or_else(|| unsupported(&what, w.ty))?;
        if n_tokens == 0 {
            return Ok(());
        }
        if x.buf.buffer == y.buf.buffer {
            return Err(self.invalid(
                &what,
                format!("x and y are the same buffer {:?}", x.buf.label),
            ));
        }
        let last = w.batch as u64 - 1;
        let y_len = n_tokens as u64 * w.rows as u64;
        if w.batch > 1 && (y.batch_stride as u64) < y_len {
            return Err(self.invalid(
                &what,
                format!(
                    "the outputs of {} matrices overlap: {n_tokens} tokens × {} outputs each, \
                     {} elements apart",
                    w.batch, w.rows, y.batch_stride
                ),
            ));
        }
        let x_end =
            x.offset as u64 + last * x.batch_stride as u64 + n_tokens as u64 * w.cols as u64;
        if x_end > x.buf.len / 4 {
            return Err(self.invalid(
                &what,
                format!(
                    "{} × {n_tokens} tokens × {} values from element {} (stride {}) run past {:?} ({} f32)",
                    w.batch,
                    w.cols,
                    x.offset,
                    x.batch_stride,
                    x.buf.label,
                    x.buf.len / 4
                ),
            ));
        }
        let y_end = y.offset as u64 + last * y.batch_stride as u64 + y_len;
        if y_end > y.buf.len / 4 {
            return Err(self.invalid(
                &what,
                format!(
                    "{} × {n_tokens} tokens × {} outputs from element {} (stride {}) run past {:?} ({} f32)",
                    w.batch,
                    w.rows,
                    y.offset,
                    y.batch_stride,
                    y.buf.label,
                    y.buf.len / 4
                ),
            ));
        }
        if x_end > u32::MAX as u64 || y_end > u32::MAX as u64 {
            return Err(self.invalid(
                &what,
                "activations and outputs are indexed by u32 f32 elements".to_string(),
            ));
        }
        let gemv = match path {
            MatmulPath::Auto => n_tokens <= GEMV_MAX_TOKENS,
            MatmulPath::Gemv => true,
            MatmulPath::Gemm => false,
        };
        let max = self.max_per_dim as u64;
        for part in &w.parts {
            let count = if gemv {
                part.rows as u64 * n_tokens.div_ceil(GEMV_TOKENS) as u64
            } else {
                part.rows.div_ceil(GEMM_ROWS) as u64 * n_tokens.div_ceil(GEMM_TOKENS) as u64
            };
            if count > max * max || count > u32::MAX as u64 {
                return Err(self.invalid(
                    &what,
                    format!("{count} workgroups exceed the adapter's {max} × {max} grid"),
                ));
            }
            if part.count as u64 > max {
                return Err(self.invalid(
                    &what,
                    format!(
                        "{} matrices in one dispatch exceed the adapter's {max} workgroups per dimension",
                        part.count
                    ),
                ));
            }
            // In range: the part's first matrix is at most the last, checked above.
            let params = [
                part.rows,
                w.cols,
                n_tokens,
                w.row_bytes,
                part.first_row,
                w.rows,
                x.offset + part.first * x.batch_stride,
                y.offset + part.first * y.batch_stride,
                x.batch_stride,
                y.batch_stride,
            ];
            let params: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
            let kernel = if gemv { &k.gemv } else { &k.gemm };
            let grid = Workgroups {
                z: part.count,
                ..Workgroups::linear(count as u32, self.max_per_dim)
            };
            rec.dispatch(kernel, &params, &[&part.buffer, x.buf, y.buf], grid);
        }
        Ok(())
    }

    fn invalid(&self, what: &str, reason: String) -> AccelError {
        AccelError::Validation {
            what: what.to_string(),
            adapter: self.adapter.clone(),
            reason,
        }
    }
}
