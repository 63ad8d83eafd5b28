//! Matrix products over quantized weights: `out[t][r] = Σ_i W[r][i] · x[t][i]`.
//!
//! Weights are ggml tensors as stored in GGUF: `n_out` rows (ggml `ne[1]`) of `n_in`
//! values (`ne[0]`), row-major, any type `quant::dot` supports. Activations are f32,
//! token-major (`x[t * n_in + i]`), and so is the output (`out[t * n_out + r]`, ggml's
//! `dst` layout).
//!
//! The fast path quantizes the activations once per op to the weight type's dot partner
//! ([`quant::dot::act_type_for`]: Q8_K, Q8_0, Q8_1, or f32 as is) into a caller-owned
//! [`ActScratch`], then splits the output rows across the pool. For one token (GEMV)
//! each row is one [`VecDot::dot`]; for many (GEMM) rows are tiled against blocks of
//! tokens and each weight row is consumed by [`VecDot::dot_multi`] for up to
//! [`quant::dot::MAX_ROWS`] tokens at a time, so a weight row is read from memory once per
//! tile and then reused from L1.
//!
//! Batch invariance: every output element is one `dot`/`dot_multi` call, which the dot
//! API guarantees bit-identical for a given (weight row, activation row) whatever else
//! is in the call; quantizing a token's activations depends only on that token. So a
//! token's output never depends on the batch it shares or on the thread count.
//!
//! [`matmul_exact`] is the reference mode (`--exact`): weights dequantized row by row to
//! f32 and multiplied with the unquantized f32 activations, accumulated in f64.
//!
//! Nothing here allocates once the scratch buffers are sized (see
//! [`ActScratch::reserve`], [`ExactScratch::reserve`]).

use crate::pool::{SharedMut, ThreadPool};
use quant::dot::{act_type_for, vec_dot_for, DotError, VecDot, MAX_ROWS};
use quant::repack::{PackedDot, PackedType, ROWS as PACK_ROWS};
use quant::{GgmlType, QuantError};

/// Why a matmul could not run. Messages name the shapes involved.
#[derive(Debug, thiserror::Error)]
pub enum MatmulError {
    /// The weight type has no dot product (or other dot setup error).
    #[error(transparent)]
    Dot(#[from] DotError),
    /// A (de)quantization error (unsupported type, bad sizes).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// Shapes or buffer lengths that do not fit together.
    #[error("matmul shape error: {0}")]
    Shape(String),
}

fn shape_err(msg: String) -> MatmulError {
    MatmulError::Shape(msg)
}

/// Bytes of a row of `n` values of `ty`, or a shape error.
fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, MatmulError> {
    let bs = ty.block_size();
    if n % bs != 0 {
        return Err(shape_err(format!(
            "{ty}: row of {n} values is not a multiple of the block size {bs}"
        )));
    }
    (n / bs)
        .checked_mul(ty.type_size())
        .ok_or_else(|| shape_err(format!("{ty}: row of {n} values overflows")))
}

/// A 2-D weight matrix view: `n_out` rows of `n_in` values of type `ty` (no copy).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    /// Weight type.
    pub ty: GgmlType,
    /// Values per row (ggml `ne[0]`, the reduction dimension).
    pub n_in: usize,
    /// Rows (ggml `ne[1]`, the output dimension).
    pub n_out: usize,
    /// Bytes of one row.
    pub row_bytes: usize,
    /// `n_out · row_bytes` bytes as stored in GGUF, or, when `packed` is set, the
    /// repacked groups ([`PackedType::matrix_bytes`] bytes).
    pub data: &'a [u8],
    /// The repacked layout of `data` (see `quant::repack`), or `None` for file order.
    pub packed: Option<PackedType>,
}

impl<'a> QMatrix<'a> {
    /// A view of a matrix repacked by `quant::repack::repack` (`n_out` a multiple of
    /// `quant::repack::ROWS`); `ty` is the source type, `data` the packed bytes.
    pub fn packed(
        packed: PackedType,
        n_in: usize,
        n_out: usize,
        data: &'a [u8],
    ) -> Result<QMatrix<'a>, MatmulError> {
        let ty = packed.source();
        let rb = row_bytes(ty, n_in)?;
        let want = packed.matrix_bytes(n_in, n_out).ok_or_else(|| {
            shape_err(format!(
                "{} [{n_in}, {n_out}]: not a repackable shape",
                packed.name()
            ))
        })?;
        if data.len() != want {
            return Err(shape_err(format!(
                "{} [{n_in}, {n_out}] needs {want} bytes, data has {}",
                packed.name(),
                data.len()
            )));
        }
        Ok(QMatrix {
            ty,
            n_in,
            n_out,
            row_bytes: rb,
            data,
            packed: Some(packed),
        })
    }

    /// Checks that `data` holds exactly `n_out` rows of `n_in` values of `ty`.
    pub fn new(
        ty: GgmlType,
        n_in: usize,
        n_out: usize,
        data: &'a [u8],
    ) -> Result<QMatrix<'a>, MatmulError> {
        let rb = row_bytes(ty, n_in)?;
        let want = rb
            .checked_mul(n_out)
            .ok_or_else(|| shape_err(format!("{ty} [{n_in}, {n_out}] overflows")))?;
        if data.len() != want {
            return Err(shape_err(format!(
                "{ty} [{n_in}, {n_out}] needs {want} bytes, data has {}",
                data.len()
            )));
        }
        Ok(QMatrix {
            ty,
            n_in,
            n_out,
            row_bytes: rb,
            data,
            packed: None,
        })
    }

    /// A 2-D view from a ggml shape (`ne = [n_in, n_out]`, trailing 1s allowed).
    pub fn from_ne(ty: GgmlType, ne: &[u64], data: &'a [u8]) -> Result<QMatrix<'a>, MatmulError> {
        if ne.is_empty() || ne.len() > 4 || ne.iter().skip(2).any(|&d| d != 1) {
            return Err(shape_err(format!(
                "expected a 2-D tensor, got shape {ne:?}"
            )));
        }
        let n_in =
            usize::try_from(ne[0]).map_err(|_| shape_err(format!("shape {ne:?} too large")))?;
        let n_out = usize::try_from(*ne.get(1).unwrap_or(&1))
            .map_err(|_| shape_err(format!("shape {ne:?} too large")))?;
        QMatrix::new(ty, n_in, n_out, data)
    }

    /// Bytes of row `r` (panics if `r >= n_out` or the matrix is packed: packed rows
    /// are interleaved in groups, see `quant::repack::unpack`).
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert!(self.packed.is_none(), "QMatrix::row on a packed matrix");
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The sub-matrix of rows `rows` (no copy), e.g. one head's slice of a projection.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Result<QMatrix<'a>, MatmulError> {
        if rows.start > rows.end || rows.end > self.n_out {
            return Err(shape_err(format!(
                "rows {rows:?} out of range for {} rows",
                self.n_out
            )));
        }
        if let Some(p) = self.packed {
            if rows.start % PACK_ROWS != 0 || rows.end % PACK_ROWS != 0 {
                return Err(shape_err(format!(
                    "rows {rows:?} of a {} matrix: not whole groups of {PACK_ROWS}",
                    p.name()
                )));
            }
            let gb = self.data.len() / (self.n_out / PACK_ROWS).max(1);
            return Ok(QMatrix {
                n_out: rows.len(),
                data: &self.data[rows.start / PACK_ROWS * gb..rows.end / PACK_ROWS * gb],
                ..*self
            });
        }
        Ok(QMatrix {
            n_out: rows.len(),
            data: &self.data[rows.start * self.row_bytes..rows.end * self.row_bytes],
            ..*self
        })
    }
}

/// Anonymous memory for weights repacked at load (`quant::repack`): a private mapping
/// advised for transparent huge pages (`MADV_HUGEPAGE`), 2 MiB-aligned, so multi-GiB weight
/// sets take 512× fewer page faults to fill and far fewer TLB misses to stream (the
/// hardware prefetchers also stop at page boundaries). Zero-filled; unmapped on drop.
pub struct WeightBuffer {
    /// Start of the usable (aligned) bytes.
    ptr: *mut u8,
    len: usize,
    /// The whole mapping, for `munmap`.
    base: *mut libc::c_void,
    map_len: usize,
}

// SAFETY: the buffer owns its mapping exclusively; `&WeightBuffer` only reads it.
unsafe impl Send for WeightBuffer {}
// SAFETY: as above (shared access is read-only).
unsafe impl Sync for WeightBuffer {}

impl WeightBuffer {
    const HUGE: usize = 2 << 20;

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Result<WeightBuffer, MatmulError> {
        if len == 0 {
            return Ok(WeightBuffer {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
                base: std::ptr::null_mut(),
                map_len: 0,
            });
        }
        let map_len = len
            .checked_add(Self::HUGE)
            .ok_or_else(|| shape_err(format!("weight buffer of {len} bytes overflows")))?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(shape_err(format!(
                "could not map {len} bytes for repacked weights: {}",
                std::io::Error::last_os_error()
            )));
        }
        let offset = (Self::HUGE - (base as usize % Self::HUGE)) % Self::HUGE;
        // SAFETY: offset < HUGE, so [offset, offset + len) lies inside the mapping.
        let ptr = unsafe { (base as *mut u8).add(offset) };
        // SAFETY: advice on our own mapping; a failure (THP disabled) only loses the hint.
        unsafe { libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        Ok(WeightBuffer {
            ptr,
            len,
            base,
            map_len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for WeightBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zero-filled) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for WeightBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for WeightBuffer {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: `base`/`map_len` are exactly the mapping made in `zeroed`, unmapped once.
            unsafe { libc::munmap(self.base, self.map_len) };
        }
    }
}

impl std::fmt::Debug for WeightBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBuffer({} bytes)", self.len)
    }
}

/// Caller-owned buffer for quantized activations. Backed by `u64` words so that Q8_K
/// blocks (alignment 4) can be written in place. Size it once at load with
/// [`reserve`](Self::reserve); an undersized buffer grows (allocates) on first use.
#[derive(Default, Debug)]
pub struct ActScratch {
    words: Vec<u64>,
}

impl ActScratch {
    /// An empty buffer.
    pub fn new() -> ActScratch {
        ActScratch::default()
    }

    /// Makes room for `n_tokens` rows of `n_in` activations quantized for weights of
    /// type `weight_ty` (call with the largest shape the model will use).
    pub fn reserve(
        &mut self,
        weight_ty: GgmlType,
        n_in: usize,
        n_tokens: usize,
    ) -> Result<(), MatmulError> {
        let act = act_type_for(weight_ty).ok_or(DotError::Unsupported(weight_ty))?;
        let bytes = row_bytes(act, n_in)?.checked_mul(n_tokens).ok_or_else(|| {
            shape_err(format!(
                "activation buffer for {n_tokens} × {n_in} overflows"
            ))
        })?;
        self.ensure_bytes(bytes);
        Ok(())
    }

    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn ensure_bytes(&mut self, bytes: usize) {
        let words = bytes.div_ceil(8);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        self.ensure_bytes(len);
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..len]
    }
}

/// Activations of `n_tokens` tokens, quantized to `ty` (or f32 bytes), ready for the dots.
#[derive(Clone, Copy, Debug)]
pub struct QuantizedActs<'a> {
    /// The activation type (Q8_K, Q8_0, Q8_1 or F32).
    pub ty: GgmlType,
    /// Values per token.
    pub n_in: usize,
    /// Tokens.
    pub n_tokens: usize,
    /// Bytes per token row.
    pub row_bytes: usize,
    data: &'a [u8],
}

impl<'a> QuantizedActs<'a> {
    /// Token `t`'s row bytes.
    #[inline]
    pub fn row(&self, t: usize) -> &'a [u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Quantizes `x` (`n_tokens = x.len() / n_in` rows) for multiplication with weights of
/// type `weight_ty`, into `scratch` (token rows split across the pool when there are
/// several). For F32/F16/BF16 weights the f32 input is used as is (no copy).
pub fn quantize_acts<'a>(
    pool: &ThreadPool,
    weight_ty: GgmlType,
    x: &'a [f32],
    n_in: usize,
    scratch: &'a mut ActScratch,
) -> Result<QuantizedActs<'a>, MatmulError> {
    let act = act_type_for(weight_ty).ok_or(DotError::Unsupported(weight_ty))?;
    if n_in == 0 || x.len() % n_in != 0 {
        return Err(shape_err(format!(
            "activations: {} values is not a multiple of n_in = {n_in}",
            x.len()
        )));
    }
    let n_tokens = x.len() / n_in;
    let rb = row_bytes(act, n_in)?;
    if act == GgmlType::F32 {
        return Ok(QuantizedActs {
            ty: act,
            n_in,
            n_tokens,
            row_bytes: rb,
            data: bytemuck::cast_slice(x),
        });
    }
    let buf = scratch.bytes_mut(rb * n_tokens);
    let dst = SharedMut(buf.as_mut_ptr());
    let quantize_row = |t: usize| {
        let src = &x[t * n_in..(t + 1) * n_in];
        // SAFETY: token t's destination bytes [t·rb, (t+1)·rb) are inside `buf` and no
        // other thread writes them (each token index is handed out once).
        let row = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * rb), rb) };
        quantize_act_row(act, src, row)
    };
    if n_tokens < 4 || pool.n_threads() == 1 {
        for t in 0..n_tokens {
            quantize_row(t)?;
        }
    } else {
        let failed = std::sync::atomic::AtomicBool::new(false);
        pool.run(n_tokens, |range, _| {
            for t in range {
                if quantize_row(t).is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        if failed.into_inner() {
            // Sizes were computed from the same numbers, so this is unreachable; report
            // it rather than panic all the same.
            return Err(shape_err(format!(
                "activation quantization to {act} failed for n_in = {n_in}"
            )));
        }
    }
    Ok(QuantizedActs {
        ty: act,
        n_in,
        n_tokens,
        row_bytes: rb,
        data: &buf[..rb * n_tokens],
    })
}

/// One token row → activation blocks of type `act`, written into `dst` bytes.
fn quantize_act_row(act: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), MatmulError> {
    match act {
        GgmlType::Q8_K => {
            // `dst` starts at a multiple of the Q8_K row size (a multiple of 4) in a
            // u64-aligned buffer, so the cast's alignment check passes.
            let blocks: &mut [quant::BlockQ8K] = bytemuck::try_cast_slice_mut(dst)
                .map_err(|e| shape_err(format!("Q8_K activation buffer: {e}")))?;
            quant::quantize_act_q8_k(src, blocks)?
        }
        GgmlType::Q8_0 => quant::quantize_act_q8_0(src, bytemuck::cast_slice_mut(dst))?,
        GgmlType::Q8_1 => quant::quantize_act_q8_1(src, bytemuck::cast_slice_mut(dst))?,
        other => return Err(shape_err(format!("no activation quantizer for {other}"))),
    }
    Ok(())
}

/// Tokens per GEMM tile: their quantized rows (≤ 32 × 8 KiB for n_in = 7168) stay in L2
/// while a chunk of weight rows is multiplied with them.
const TOKEN_TILE: usize = 32;

/// Fewest rows per work item of a packed GEMM (see `Kern::chunk`).
const PACKED_GEMM_ROWS: usize = 128;

/// Rows per work item. GEMV: many chunks per thread (~32) so that a thread that is
/// descheduled mid-op (the cores are shared) holds up the barrier by one small chunk and
/// the others can steal the rest of its share, but each chunk at least ~16 KiB of weights
/// so that the per-chunk cost (one atomic add) stays negligible. (The pool gives each
/// thread one contiguous share of chunks, so chunk boundaries do not break a thread's
/// sequential read stream.) GEMM: per-row work is already n_tokens dots, so smaller
/// chunks suffice.
fn rows_per_chunk(n_out: usize, row_bytes: usize, n_tokens: usize, n_threads: usize) -> usize {
    if n_threads <= 1 {
        return n_out.max(1);
    }
    let balance = n_out.div_ceil(n_threads * 32);
    let min_bytes = 16 * 1024 / n_tokens.clamp(1, 8);
    let min_rows = min_bytes.div_ceil(row_bytes.max(1)).max(4);
    balance.max(min_rows).min(n_out).max(1)
}

/// `out = x · Wᵀ` for f32 `x` (`n_tokens × n_in`), quantizing `x` once into `scratch`.
/// `out` must hold `n_tokens × n_out` values.
pub fn matmul(
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut ActScratch,
) -> Result<(), MatmulError> {
    let xq = quantize_acts(pool, w.ty, x, w.n_in, scratch)?;
    matmul_acts(pool, w, &xq, out)
}

/// `out = xq · Wᵀ` with activations already quantized by [`quantize_acts`] (reuse them for
/// every weight that consumes the same input: gate and up, all experts, …).
pub fn matmul_acts(
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    xq: &QuantizedActs<'_>,
    out: &mut [f32],
) -> Result<(), MatmulError> {
    let kern = Kern::for_matrix(w)?;
    check_shapes(kern.act(), w, xq, xq.n_tokens, out)?;
    let n_tokens = xq.n_tokens;
    if n_tokens == 0 || w.n_out == 0 {
        return Ok(());
    }
    let chunk = kern.chunk(
        rows_per_chunk(w.n_out, w.row_bytes, n_tokens, pool.n_threads()),
        n_tokens,
        w.n_out,
        pool.n_threads(),
    );
    let dst = SharedMut(out.as_mut_ptr());
    pool.run_chunked(w.n_out, chunk, |rows, _| {
        // SAFETY: this closure writes only out[t·n_out + r] for r in `rows`, a range no
        // other thread receives; `out` has n_tokens·n_out elements (checked above).
        unsafe { kern.run(w, xq, None, rows, dst.get()) }
    });
    Ok(())
}

/// The kernel of one product: file-order rows through [`VecDot`], or a packed layout's
/// tile kernel.
#[derive(Clone, Copy, Debug)]
enum Kern {
    Rows(VecDot),
    Packed(PackedDot),
}

impl Kern {
    fn for_matrix(w: &QMatrix<'_>) -> Result<Kern, MatmulError> {
        Ok(match w.packed {
            Some(p) => Kern::Packed(PackedDot::new(p)),
            None => Kern::Rows(vec_dot_for(w.ty)?),
        })
    }

    fn act(&self) -> GgmlType {
        match self {
            Kern::Rows(vd) => vd.act,
            Kern::Packed(pd) => pd.act,
        }
    }

    /// Rows per work item, from [`rows_per_chunk`]'s `rows`: packed matrices split only
    /// at group boundaries, and for at least a tile of tokens into at least
    /// [`PACKED_GEMM_ROWS`] (each tile call prepares its tokens' activations once for all
    /// groups of its chunk: V2-Lite pp512 +4% over 24-row chunks).
    fn chunk(&self, rows: usize, n_tokens: usize, n_out: usize, n_threads: usize) -> usize {
        match self {
            Kern::Rows(_) => rows,
            Kern::Packed(pd) => {
                // Only for real GEMMs (a few decode steps batched stay bandwidth-bound and
                // keep their small items), and never fewer items than threads.
                // GEMM items hold whole pairs of groups where they can: the 512-bit tiles
                // run two groups side by side and an odd last group at half speed.
                let (rows, unit) = if n_tokens >= pd.tile_tokens {
                    let r = rows.max(PACKED_GEMM_ROWS.min(n_out.div_ceil(n_threads.max(1))));
                    (r, 2 * PACK_ROWS)
                } else {
                    (rows, PACK_ROWS)
                };
                rows.div_ceil(unit) * unit
            }
        }
    }

    /// # Safety
    /// As [`rows_kernel`] (for packed matrices `rows` must start at a group boundary).
    #[inline]
    unsafe fn run(
        &self,
        w: &QMatrix<'_>,
        xq: &QuantizedActs<'_>,
        tokens: Option<&[u32]>,
        rows: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match self {
                Kern::Rows(vd) => rows_kernel(vd, w, xq, tokens, rows, out),
                Kern::Packed(pd) => packed_kernel(pd, w, xq, tokens, rows, out),
            }
        }
    }
}

fn check_shapes(
    act: GgmlType,
    w: &QMatrix<'_>,
    xq: &QuantizedActs<'_>,
    n_tok: usize,
    out: &[f32],
) -> Result<(), MatmulError> {
    if xq.ty != act {
        return Err(shape_err(format!(
            "activations are {} but {} weights need {}",
            xq.ty, w.ty, act
        )));
    }
    if xq.n_in != w.n_in {
        return Err(shape_err(format!(
            "activations have {} values per token, weights {} per row",
            xq.n_in, w.n_in
        )));
    }
    let want = n_tok.saturating_mul(w.n_out);
    if out.len() != want {
        return Err(shape_err(format!(
            "output holds {} values, need {n_tok} tokens × {} rows = {want}",
            out.len(),
            w.n_out
        )));
    }
    Ok(())
}

/// Computes output rows `rows` for every token (or for the tokens `tokens` selects from
/// `xq`, output row i ← activation row `tokens[i]`).
///
/// # Safety
/// `out` must point to `n_tok · w.n_out` f32 (n_tok = `tokens.len()` or `xq.n_tokens`),
/// every entry of `tokens` must be < `xq.n_tokens`, and no other thread may access the
/// elements `t·n_out + r`, r ∈ `rows`, during the call.
unsafe fn rows_kernel(
    vd: &VecDot,
    w: &QMatrix<'_>,
    xq: &QuantizedActs<'_>,
    tokens: Option<&[u32]>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    let n = w.n_in;
    let n_out = w.n_out;
    let n_tok = tokens.map_or(xq.n_tokens, |t| t.len());
    let act_row = |i: usize| xq.row(tokens.map_or(i, |t| t[i] as usize));
    if n_tok == 1 {
        let a = act_row(0);
        for r in rows {
            let wr = w.row(r);
            prefetch_ahead(wr);
            let v = vd.dot(n, wr, a);
            // SAFETY: r < n_out, token 0; disjoint per the contract.
            unsafe { *out.add(r) = v };
        }
        return;
    }
    let mut t0 = 0;
    while t0 < n_tok {
        let t1 = (t0 + TOKEN_TILE).min(n_tok);
        for r in rows.clone() {
            let wr = w.row(r);
            let mut t = t0;
            while t < t1 {
                let g = (t1 - t).min(MAX_ROWS);
                let mut a: [&[u8]; MAX_ROWS] = [&[]; MAX_ROWS];
                for (k, slot) in a.iter_mut().take(g).enumerate() {
                    *slot = act_row(t + k);
                }
                let mut res = [0f32; MAX_ROWS];
                vd.dot_multi(n, wr, &a[..g], &mut res[..g]);
                for (k, v) in res.iter().take(g).enumerate() {
                    // SAFETY: t + k < n_tok, r < n_out; disjoint per the contract.
                    unsafe { *out.add((t + k) * n_out + r) = *v };
                }
                t += g;
            }
        }
        t0 = t1;
    }
}

/// How far ahead of a weight row a GEMV asks for its bytes (see [`prefetch_ahead`]).
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the bytes `PREFETCH_AHEAD` past `row`'s (one `prefetcht0` per 64-byte line of
/// a row's length): the rows of a GEMV are consecutive, so these are the rows a few dots
/// from now. A GEMV from DRAM is latency-bound per core; the hardware prefetchers alone
/// leave the loads of the next lines waiting behind the arithmetic (the repacked tiles do
/// the same: `quant::repack`'s `PREFETCH_AHEAD`).
#[inline(always)]
fn prefetch_ahead(row: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = row.as_ptr().wrapping_add(PREFETCH_AHEAD);
        let mut line = 0;
        while line < row.len() {
            // SAFETY: a prefetch is a hint and never faults, whatever the address
            // (`wrapping_add` keeps the pointer arithmetic itself defined); SSE is
            // part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line) as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Tokens per [`PackedDot::tiles_unchecked`] call of [`packed_kernel`]: the call splits
/// them into tiles of `tile_tokens`, or (the decoded-strip layouts on AVX-512 VNNI, ≥ 8–12 tokens) decode
/// each strip of weights once for all of them, so more tokens per call spread that decode
/// thinner (Q6_K 2048 × 1408, 1 thread: 8 → 64 tokens per call 205 → 285 GFLOP/s, 128
/// 289–305); 128 keeps the pointer list on the stack (2 KiB).
const PACKED_CALL_TOKENS: usize = 128;

/// [`rows_kernel`] for a packed matrix: all the chunk's groups of [`PACK_ROWS`] rows
/// against up to [`PACKED_CALL_TOKENS`] tokens per call, whose tile kernels prepare their
/// tokens' activations once for all the groups. The chunk's groups (≥ 128 rows for a
/// GEMM: ~150 KiB of Q4_K at n_in 2048, several MiB for wide rows) are re-read for each
/// token tile, from L2 or L3 (blocking them to stay in L2 measured no faster on V3 shapes).
/// Every output element comes from the same per-(row, token) computation whatever the
/// batch (batch invariance).
///
/// # Safety
/// As [`rows_kernel`]; `rows.start` is a multiple of [`PACK_ROWS`] and `rows.end` one or
/// `w.n_out` (a multiple of it for packed matrices).
unsafe fn packed_kernel(
    pd: &PackedDot,
    w: &QMatrix<'_>,
    xq: &QuantizedActs<'_>,
    tokens: Option<&[u32]>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    const MT: usize = PACKED_CALL_TOKENS;
    let n_out = w.n_out;
    let n_tok = tokens.map_or(xq.n_tokens, |t| t.len());
    let act_row = |i: usize| xq.row(tokens.map_or(i, |t| t[i] as usize));
    let gb = w.data.len() / (n_out / PACK_ROWS).max(1);
    // What `tiles_unchecked` relies on, checked once per chunk (QuantizedActs' fields are
    // public, so a caller could have changed `row_bytes`).
    assert!(
        w.packed.and_then(|p| p.group_bytes(w.n_in)) == Some(gb)
            && pd.act.row_bytes(w.n_in as u64) == Some(xq.row_bytes as u64)
            && xq.ty == pd.act,
        "packed matmul: inconsistent matrix or activation shapes"
    );
    let (g0, g1) = (rows.start / PACK_ROWS, rows.end.div_ceil(PACK_ROWS));
    let groups = &w.data[g0 * gb..g1 * gb];
    let mut t = 0;
    while t < n_tok {
        let cnt = (n_tok - t).min(MT);
        let mut a: [&[u8]; MT] = [&[]; MT];
        for (k, slot) in a.iter_mut().take(cnt).enumerate() {
            *slot = act_row(t + k);
        }
        // SAFETY: `groups` are whole packed groups of this matrix (QMatrix::packed checked
        // the matrix size), every activation row is a row of `xq`, whose type and width
        // were verified for this matrix, and the kernel reads back and writes only
        // out[(t + k)·n_out + r] for k < cnt (t + k < n_tok) and r in g0·8 .. g1·8 ⊂ `rows`
        // (ld = n_out ≥ the chunk's rows): this thread's disjoint elements per the contract.
        unsafe {
            pd.tiles_unchecked(
                w.n_in,
                groups,
                &a[..cnt],
                out.add(t * n_out + g0 * PACK_ROWS),
                n_out,
            )
        };
        t += cnt;
    }
}

/// Most products one [`matmul_batch`] call takes (its bookkeeping lives on the stack).
pub const MAX_BATCH_OPS: usize = 64;

/// One product of a [`matmul_batch`]: `out[i] = W · xq[tokens[i]]` (or every token of `xq`
/// when `tokens` is `None`); `out` holds `n_tok × w.n_out` values, token-major.
pub struct MatmulOp<'a> {
    /// The weights (e.g. one expert's slab of a stack).
    pub w: QMatrix<'a>,
    /// Quantized activations (shared between ops that consume the same input).
    pub xq: QuantizedActs<'a>,
    /// Which activation rows to use, in output order (the tokens routed to an expert).
    pub tokens: Option<&'a [u32]>,
    /// The output.
    pub out: &'a mut [f32],
}

impl MatmulOp<'_> {
    /// A product of nothing (an unused slot of an [`OpBatch`]).
    fn empty() -> MatmulOp<'static> {
        MatmulOp {
            w: QMatrix {
                ty: GgmlType::F32,
                n_in: 0,
                n_out: 0,
                row_bytes: 0,
                data: &[],
                packed: None,
            },
            xq: QuantizedActs {
                ty: GgmlType::F32,
                n_in: 0,
                n_tokens: 0,
                row_bytes: 0,
                data: &[],
            },
            tokens: None,
            out: &mut [],
        }
    }
}

/// Up to [`MAX_BATCH_OPS`] products collected for one [`matmul_batch`], on the stack (so
/// that building a batch never allocates: the forward pass builds several per layer).
pub struct OpBatch<'a> {
    ops: [MatmulOp<'a>; MAX_BATCH_OPS],
    len: usize,
}

impl<'a> OpBatch<'a> {
    /// An empty batch.
    pub fn new() -> OpBatch<'a> {
        OpBatch {
            ops: std::array::from_fn(|_| MatmulOp::empty()),
            len: 0,
        }
    }

    /// Products collected so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no product was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a product; an error when the batch already holds [`MAX_BATCH_OPS`].
    pub fn push(&mut self, op: MatmulOp<'a>) -> Result<(), MatmulError> {
        let slot = self.ops.get_mut(self.len).ok_or_else(|| {
            shape_err(format!("matmul_batch: more than {MAX_BATCH_OPS} products"))
        })?;
        *slot = op;
        self.len += 1;
        Ok(())
    }

    /// Runs the collected products as one pool op ([`matmul_batch`]).
    pub fn run(&mut self, pool: &ThreadPool) -> Result<(), MatmulError> {
        matmul_batch(pool, &mut self.ops[..self.len])
    }
}

impl Default for OpBatch<'_> {
    fn default() -> Self {
        OpBatch::new()
    }
}

/// Runs several independent products as ONE pool op (one barrier): work items are
/// (product, row chunk) pairs, so e.g. the k active experts' gate and up projections of a
/// decode step are spread over all threads together. Each output element is the same
/// `dot`/`dot_multi` call as in [`matmul_acts`], so results are bit-identical to running
/// the products one by one.
pub fn matmul_batch(pool: &ThreadPool, ops: &mut [MatmulOp<'_>]) -> Result<(), MatmulError> {
    if ops.len() > MAX_BATCH_OPS {
        return Err(shape_err(format!(
            "matmul_batch: {} products (at most {MAX_BATCH_OPS})",
            ops.len()
        )));
    }
    let mut vds: [Option<Kern>; MAX_BATCH_OPS] = [None; MAX_BATCH_OPS];
    let mut chunks = [0usize; MAX_BATCH_OPS];
    // first_item[j] = index of op j's first work item; first_item[len] = total.
    let mut first_item = [0usize; MAX_BATCH_OPS + 1];
    let mut outs = [SharedMut(std::ptr::null_mut::<f32>()); MAX_BATCH_OPS];
    let n_threads = pool.n_threads();
    let mut total = 0usize;
    for (j, op) in ops.iter_mut().enumerate() {
        let vd = Kern::for_matrix(&op.w)?;
        let n_tok = match op.tokens {
            Some(ts) => {
                if let Some(bad) = ts.iter().find(|&&t| t as usize >= op.xq.n_tokens) {
                    return Err(shape_err(format!(
                        "matmul_batch op {j}: token {bad} out of range ({} activation rows)",
                        op.xq.n_tokens
                    )));
                }
                ts.len()
            }
            None => op.xq.n_tokens,
        };
        check_shapes(vd.act(), &op.w, &op.xq, n_tok, op.out)?;
        vds[j] = Some(vd);
        first_item[j] = total;
        if n_tok > 0 && op.w.n_out > 0 {
            chunks[j] = vd.chunk(
                rows_per_chunk(op.w.n_out, op.w.row_bytes, n_tok, n_threads),
                n_tok,
                op.w.n_out,
                n_threads,
            );
            total += op.w.n_out.div_ceil(chunks[j]);
        }
        outs[j] = SharedMut(op.out.as_mut_ptr());
    }
    first_item[ops.len()] = total;
    let n_ops = ops.len();
    let ops_ref: &[MatmulOp<'_>] = ops;
    pool.run_chunked(total, 1, |items, _| {
        for item in items {
            // Ops are few (≤ 64): a linear scan finds the item's op.
            let j = (0..n_ops).rfind(|&j| first_item[j] <= item && item < first_item[j + 1]);
            let Some(j) = j else { continue };
            let (op, Some(vd)) = (&ops_ref[j], vds[j].as_ref()) else {
                continue;
            };
            let start = (item - first_item[j]) * chunks[j];
            let rows = start..(start + chunks[j]).min(op.w.n_out);
            // SAFETY: op j's output has n_tok·n_out elements and valid token indices
            // (checked above); row chunks of one op are disjoint and each is handed out
            // once; different ops have different (exclusively borrowed) outputs.
            unsafe { vd.run(&op.w, &op.xq, op.tokens, rows, outs[j].get()) }
        }
    });
    Ok(())
}

/// Per-thread f32 row buffers for [`matmul_exact`].
#[derive(Default, Debug)]
pub struct ExactScratch {
    rows: Vec<f32>,
}

impl ExactScratch {
    /// An empty buffer.
    pub fn new() -> ExactScratch {
        ExactScratch::default()
    }

    /// Makes room for one dequantized row of `n_in` values per pool thread.
    pub fn reserve(&mut self, n_threads: usize, n_in: usize) {
        let need = n_threads * n_in;
        if self.rows.len() < need {
            self.rows.resize(need, 0.0);
        }
    }
}

/// Reference mode: each weight row dequantized to f32, multiplied by the unquantized f32
/// activations, products accumulated in f64 in index order (so results are also
/// independent of batch and threads). Slow; for `--exact` and tests.
pub fn matmul_exact(
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut ExactScratch,
) -> Result<(), MatmulError> {
    if !quant::is_supported(w.ty) {
        return Err(quant::unsupported(w.ty).into());
    }
    if let Some(p) = w.packed {
        return Err(shape_err(format!(
            "{}: the exact mode needs file-order weights (load without repacking)",
            p.name()
        )));
    }
    let n = w.n_in;
    if n == 0 || x.len() % n != 0 {
        return Err(shape_err(format!(
            "activations: {} values is not a multiple of n_in = {n}",
            x.len()
        )));
    }
    let n_tokens = x.len() / n;
    if out.len() != n_tokens * w.n_out {
        return Err(shape_err(format!(
            "output holds {} values, need {n_tokens} tokens × {} rows",
            out.len(),
            w.n_out
        )));
    }
    let n_threads = pool.n_threads();
    scratch.reserve(n_threads, n);
    let bufs = SharedMut(scratch.rows.as_mut_ptr());
    let dst = SharedMut(out.as_mut_ptr());
    let n_out = w.n_out;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let chunk = rows_per_chunk(n_out, w.row_bytes, n_tokens, n_threads);
    pool.run_chunked(n_out, chunk, |rows, tid| {
        // SAFETY: thread `tid` (unique among the running threads, < n_threads) owns
        // buffer [tid·n, (tid+1)·n), which `reserve` made exist.
        let row = unsafe { std::slice::from_raw_parts_mut(bufs.get().add(tid * n), n) };
        for r in rows {
            if quant::dequantize(w.ty, w.row(r), row).is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            for t in 0..n_tokens {
                let xt = &x[t * n..(t + 1) * n];
                let mut acc = 0f64;
                for (a, b) in row.iter().zip(xt) {
                    acc += (*a * *b) as f64;
                }
                // SAFETY: element (t, r) with r in this thread's rows: disjoint.
                unsafe { *dst.get().add(t * n_out + r) = acc as f32 };
            }
        }
    });
    if failed.into_inner() {
        return Err(shape_err(format!(
            "{}: dequantizing a row of {n} values failed",
            w.ty
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant::{BlockQ4_1, Half};
    use rand::{Rng, SeedableRng};

    type Rng64 = rand::rngs::StdRng;

    /// Random weights of type `ty` (through the crate's quantizer, or random valid blocks
    /// for types it does not produce) and their exact f32 values.
    fn weights(ty: GgmlType, n_in: usize, n_out: usize, rng: &mut Rng64) -> (Vec<u8>, Vec<f32>) {
        let n = n_in * n_out;
        let bytes = if ty == GgmlType::Q4_1 {
            let blocks: Vec<BlockQ4_1> = (0..n / 32)
                .map(|_| BlockQ4_1 {
                    d: Half::from_f32(rng.random_range(0.001..0.05)),
                    m: Half::from_f32(rng.random_range(-0.2..0.0)),
                    qs: std::array::from_fn(|_| rng.random()),
                })
                .collect();
            bytemuck::cast_slice(&blocks).to_vec()
        } else if !quant::can_quantize(ty) {
            // No quantizer (the i-quants IQ1_S … IQ3_S, TQ1_0, TQ2_0): random blocks (any bytes
            // are valid), redrawn until their values are finite and of ordinary size.
            let size = ty.type_size();
            let mut b = vec![0u8; n / ty.block_size() * size];
            let mut vals = vec![0f32; ty.block_size()];
            for blk in b.chunks_exact_mut(size) {
                loop {
                    rng.fill(blk);
                    quant::dequantize(ty, blk, &mut vals).unwrap();
                    if vals.iter().all(|v| v.abs() < 4.0) && vals.iter().any(|&v| v != 0.0) {
                        break;
                    }
                }
            }
            b
        } else {
            let src: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut b = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            quant::quantize(ty, &src, &mut b).unwrap();
            b
        };
        let mut f = vec![0f32; n];
        quant::dequantize(ty, &bytes, &mut f).unwrap();
        (bytes, f)
    }

    /// The f32 values an activation row of type `act` encodes.
    fn decode_acts(act: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        match act {
            GgmlType::F32 => out.extend(
                row.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            GgmlType::Q8_K => {
                for b in row.chunks_exact(292) {
                    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    out.extend(b[4..260].iter().map(|q| d * (*q as i8) as f32));
                }
            }
            GgmlType::Q8_0 | GgmlType::Q8_1 => {
                let (size, off) = if act == GgmlType::Q8_0 {
                    (34, 2)
                } else {
                    (36, 4)
                };
                for b in row.chunks_exact(size) {
                    let d = Half([b[0], b[1]]).to_f32();
                    out.extend(b[off..off + 32].iter().map(|q| d * (*q as i8) as f32));
                }
            }
            other => panic!("unexpected activation type {other}"),
        }
        assert_eq!(out.len(), n);
        out
    }

    const TYPES: [GgmlType; 19] = {
        use GgmlType::*;
        [
            F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ1_S, IQ1_M, TQ1_0, TQ2_0, MXFP4,
            IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
        ]
    };

    #[test]
    fn matches_dequantized_f64_reference() {
        let mut rng = Rng64::seed_from_u64(7);
        let pools = [ThreadPool::new(1), ThreadPool::new(2)];
        let mut scratch = ActScratch::new();
        let mut exact_scratch = ExactScratch::new();
        for ty in TYPES {
            let shapes: &[(usize, usize, usize)] = if ty.block_size() == 256 {
                &[(256, 37, 1), (512, 64, 7), (768, 19, 33), (256, 1, 5)]
            } else {
                &[(96, 5, 3), (512, 64, 1), (256, 23, 37)]
            };
            for &(n_in, n_out, n_tokens) in shapes {
                let (wb, wf) = weights(ty, n_in, n_out, &mut rng);
                let w = QMatrix::new(ty, n_in, n_out, &wb).unwrap();
                let x: Vec<f32> = (0..n_in * n_tokens)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                for pool in &pools {
                    let mut out = vec![f32::NAN; n_out * n_tokens];
                    let xq = quantize_acts(pool, ty, &x, n_in, &mut scratch).unwrap();
                    let act = xq.ty;
                    let decoded: Vec<Vec<f32>> = (0..n_tokens)
                        .map(|t| decode_acts(act, xq.row(t), n_in))
                        .collect();
                    matmul_acts(pool, &w, &xq, &mut out).unwrap();
                    let mut exact = vec![f32::NAN; n_out * n_tokens];
                    matmul_exact(pool, &w, &x, &mut exact, &mut exact_scratch).unwrap();
                    for t in 0..n_tokens {
                        for r in 0..n_out {
                            let wr = &wf[r * n_in..(r + 1) * n_in];
                            let xt = &x[t * n_in..(t + 1) * n_in];
                            let (mut tight, mut tight_mag, mut loose, mut loose_mag) =
                                (0f64, 0f64, 0f64, 0f64);
                            for i in 0..n_in {
                                let a = wr[i] as f64 * decoded[t][i] as f64;
                                tight += a;
                                tight_mag += a.abs();
                                let b = wr[i] as f64 * xt[i] as f64;
                                loose += b;
                                loose_mag += b.abs();
                            }
                            let got = out[t * n_out + r] as f64;
                            let ctx = format!(
                                "{ty} [{n_in}x{n_out}] tokens {n_tokens} t{t} r{r} threads {}",
                                pool.n_threads()
                            );
                            // Q8_1 carries s = d·Σq rounded to f16, which the Q4_1/Q5_1
                            // dots use for the offset term: allow for that rounding.
                            let rel = if act == GgmlType::Q8_1 { 1e-3 } else { 2e-5 };
                            assert!(
                                (got - tight).abs() <= rel * tight_mag + 1e-6,
                                "{ctx}: {got} vs {tight} (quantized acts)"
                            );
                            assert!(
                                (got - loose).abs() <= 0.03 * loose_mag + 1e-6,
                                "{ctx}: {got} vs {loose} (f32 acts)"
                            );
                            let e = exact[t * n_out + r] as f64;
                            assert!(
                                (e - loose).abs() <= 1e-6 * loose_mag + 1e-6,
                                "{ctx}: exact {e} vs {loose}"
                            );
                        }
                    }
                    // The convenience wrapper gives the same bits.
                    let mut out2 = vec![0f32; n_out * n_tokens];
                    matmul(pool, &w, &x, &mut out2, &mut scratch).unwrap();
                    assert_eq!(bits(&out), bits(&out2));
                }
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn batch_and_thread_invariant() {
        let mut rng = Rng64::seed_from_u64(8);
        let p1 = ThreadPool::new(1);
        let p2 = ThreadPool::new(2);
        let mut scratch = ActScratch::new();
        for ty in [
            GgmlType::Q4_K,
            GgmlType::Q8_0,
            GgmlType::Q6_K,
            GgmlType::F16,
        ] {
            let (n_in, n_out, n_tokens) = (512, 300, 45);
            let (wb, _) = weights(ty, n_in, n_out, &mut rng);
            let w = QMatrix::new(ty, n_in, n_out, &wb).unwrap();
            let x: Vec<f32> = (0..n_in * n_tokens)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let mut full1 = vec![0f32; n_out * n_tokens];
            let mut full2 = vec![0f32; n_out * n_tokens];
            matmul(&p1, &w, &x, &mut full1, &mut scratch).unwrap();
            matmul(&p2, &w, &x, &mut full2, &mut scratch).unwrap();
            assert_eq!(bits(&full1), bits(&full2), "{ty}: 1 vs 2 threads");
            // Each token alone (GEMV path) and an odd sub-batch give the same bits.
            for t in 0..n_tokens {
                let mut one = vec![0f32; n_out];
                matmul(
                    &p2,
                    &w,
                    &x[t * n_in..(t + 1) * n_in],
                    &mut one,
                    &mut scratch,
                )
                .unwrap();
                assert_eq!(
                    bits(&one),
                    bits(&full1[t * n_out..(t + 1) * n_out]),
                    "{ty}: token {t} alone"
                );
            }
            let (a, b) = (3, 14);
            let mut sub = vec![0f32; n_out * (b - a)];
            matmul(&p2, &w, &x[a * n_in..b * n_in], &mut sub, &mut scratch).unwrap();
            assert_eq!(
                bits(&sub),
                bits(&full1[a * n_out..b * n_out]),
                "{ty}: sub-batch"
            );
        }
    }

    #[test]
    fn batch_of_expert_products_matches_one_by_one() {
        let mut rng = Rng64::seed_from_u64(10);
        let pool = ThreadPool::new(2);
        let mut scratch = ActScratch::new();
        let ty = GgmlType::Q4_K;
        let (n_in, n_out, n_expert, n_tokens) = (256, 40, 4, 9);
        let (wb, _) = weights(ty, n_in, n_out * n_expert, &mut rng);
        // Expert e is slab e of the stack: rows e·n_out .. (e + 1)·n_out.
        let slab = wb.len() / n_expert;
        let expert =
            |e: usize| QMatrix::new(ty, n_in, n_out, &wb[e * slab..(e + 1) * slab]).unwrap();
        let x: Vec<f32> = (0..n_in * n_tokens)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let xq = quantize_acts(&pool, ty, &x, n_in, &mut scratch).unwrap();
        // Token lists per expert (as a router would produce), one empty.
        let lists: [&[u32]; 4] = [&[0, 3, 8], &[], &[1, 2, 4, 5, 6, 7, 8], &[5]];
        let mut outs: Vec<Vec<f32>> = lists
            .iter()
            .map(|l| vec![f32::NAN; l.len() * n_out])
            .collect();
        let mut full = vec![0f32; n_out * n_tokens];
        {
            let mut ops: Vec<MatmulOp> = outs
                .iter_mut()
                .zip(lists)
                .enumerate()
                .map(|(e, (out, list))| MatmulOp {
                    w: expert(e),
                    xq,
                    tokens: Some(list),
                    out,
                })
                .collect();
            ops.push(MatmulOp {
                w: expert(2),
                xq,
                tokens: None,
                out: &mut full,
            });
            matmul_batch(&pool, &mut ops).unwrap();
        }
        let mut all = vec![0f32; n_out * n_tokens];
        matmul_acts(&pool, &expert(2), &xq, &mut all).unwrap();
        assert_eq!(bits(&full), bits(&all));
        for (e, list) in lists.iter().enumerate() {
            let mut ref_all = vec![0f32; n_out * n_tokens];
            matmul_acts(&pool, &expert(e), &xq, &mut ref_all).unwrap();
            for (i, &t) in list.iter().enumerate() {
                let t = t as usize;
                assert_eq!(
                    bits(&outs[e][i * n_out..(i + 1) * n_out]),
                    bits(&ref_all[t * n_out..(t + 1) * n_out]),
                    "expert {e} token {t}"
                );
            }
        }
        // A token index past the activations is an error, not a panic.
        let mut o = vec![0f32; n_out];
        let mut bad = [MatmulOp {
            w: expert(0),
            xq,
            tokens: Some(&[9]),
            out: &mut o,
        }];
        assert!(matmul_batch(&pool, &mut bad).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let pool = ThreadPool::new(1);
        let mut scratch = ActScratch::new();
        let data = vec![0u8; 144 * 4];
        assert!(QMatrix::new(GgmlType::Q4_K, 256, 5, &data).is_err());
        assert!(QMatrix::new(GgmlType::Q4_K, 100, 4, &data).is_err());
        let w = QMatrix::new(GgmlType::Q4_K, 256, 4, &data).unwrap();
        let x = vec![0f32; 256];
        let mut out = vec![0f32; 3];
        let e = matmul(&pool, &w, &x, &mut out, &mut scratch).unwrap_err();
        assert!(e.to_string().contains("output holds 3 values"), "{e}");
        let mut out = vec![0f32; 4];
        assert!(matmul(&pool, &w, &x[..255], &mut out, &mut scratch).is_err());
        // A type with no dot product.
        let q8k = vec![0u8; 292];
        let w = QMatrix::new(GgmlType::Q8_K, 256, 1, &q8k).unwrap();
        assert!(matches!(
            matmul(&pool, &w, &x, &mut out[..1], &mut scratch),
            Err(MatmulError::Dot(_))
        ));
        // Activations quantized for another weight type.
        let w = QMatrix::new(GgmlType::Q4_K, 256, 4, &data).unwrap();
        let xq = quantize_acts(&pool, GgmlType::Q8_0, &x, 256, &mut scratch).unwrap();
        assert!(matmul_acts(&pool, &w, &xq, &mut out).is_err());
        assert!(w.rows(2..5).is_err());
        assert_eq!(w.rows(1..3).unwrap().n_out, 2);
    }
}
