//! Block dot products: one row of weight blocks × one (or a few) rows of activation
//! blocks, the inner loop of every matmul.
//!
//! Each supported weight type has an activation partner (the type the matmul quantizes
//! its f32 input to, once per op): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4, Q8_1 for Q4_1/Q5_1
//! (whose offset `m` needs the activation sums), Q8_K for the k-quants, IQ4_XS, IQ1_S/IQ1_M
//! and TQ1_0/TQ2_0, and
//! plain f32 for F32/F16/BF16 weights.
//!
//! Implementations of every pair ([`SimdPath`]):
//! - [`scalar`]: the definition. Exactly ggml's generic C math: integer partial sums per
//!   (sub-)block, then f32 scale products accumulated in ggml's order.
//! - `avx2` (x86-64 only, chosen at run time with `is_x86_feature_detected!`): the same
//!   integer partial sums (bit-identical, property-tested), with the f32 scale products
//!   accumulated in 8-lane vectors, so the final f32 differs from the scalar one by a few
//!   ulps of the sum of |terms| (as llama.cpp's own SIMD paths differ from its generic C).
//! - `avx512vnni`: the AVX2 kernels with each multiply-accumulate pair fused into one VNNI
//!   instruction (256-bit registers, so no frequency licence). Same integers, same f32
//!   operations in the same order: bit-identical to `avx2`, only faster.
//!
//! [`vec_dot_for`] picks the implementation once; [`VecDot::dot`] and
//! [`VecDot::dot_multi`] then call through a function pointer with no per-call feature
//! detection.
//!
//! Batch invariance: [`VecDot::dot_multi`] gives, for each activation row, bit-for-bit the
//! value [`VecDot::dot`] gives for that row alone (the per-row accumulation order does not
//! depend on how many rows share the call).
//!
//! Input contracts (what the activation quantizers and ggml's weight quantizers guarantee;
//! any bytes are memory-safe, but outside these scalar and SIMD may disagree):
//! - Q8_K `bsums` are the sums of each 16 `qs` (both paths take the k-quant mins from them,
//!   and the AVX2 Q3_K/Q6_K kernels also their −4/−32 offsets, the AVX2 TQ1_0/TQ2_0 kernels
//!   their −1 and the AVX2 IQ1_S/IQ1_M kernels their unsigned-grid offsets and IQ1_S's deltas);
//! - Q8_1 `s` is used as stored (ggml's definition: `d·Σq` rounded to f16);
//! - Q8_0 *weights* lie in −127..=127 (the quantizer's range; −128 breaks the AVX2 sign
//!   trick). Activations may use the full −128..=127.
//!
//! GEMM use ([`VecDot::dot_multi`]): tile the tokens in groups of [`MAX_ROWS`] and, for each
//! weight row, call `dot_multi` with the group's activation rows. Each weight block is then
//! loaded and unpacked (nibbles → bytes, scales → vectors, f16 → f32) once for up to 4
//! tokens, and the 4 rows' integer dots run from registers; in-cache this is 1.5–2× the
//! throughput of 4 separate `dot`s (see `bench/dot_bench.rs`).

use crate::GgmlType;

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod iq1;
pub(crate) mod layout;
pub mod mxfp4;
pub mod scalar;
pub mod scalar_iq;
pub mod ternary;

/// Most activation rows one kernel call handles ([`VecDot::dot_multi`] splits longer lists
/// into groups of this size).
pub const MAX_ROWS: usize = 4;

/// The weight types [`vec_dot_for`] accepts, in ggml id order.
pub const DOT_TYPES: [GgmlType; 25] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS,
        IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4,
    ]
};

/// Why a dot product could not be set up or run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DotError {
    /// No dot product for this weight type.
    #[error("no dot product for weight type {0} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, TQ1_0, TQ2_0, MXFP4)")]
    Unsupported(GgmlType),
    /// The row length is not a whole number of blocks.
    #[error("{ty}: {n} values is not a multiple of the block size {block_size}")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block_size: usize,
    },
    /// A row's byte length does not match `n` values of its type.
    #[error("{which} row ({ty}): {n} values take {expected} bytes, but the row has {actual}")]
    RowLength {
        which: &'static str,
        ty: GgmlType,
        n: usize,
        expected: usize,
        actual: usize,
    },
    /// `dot_multi` got a different number of activation rows and outputs.
    #[error("dot_multi: {rows} activation rows but {outs} outputs")]
    OutputCount { rows: usize, outs: usize },
}

/// The activation type a weight type's dot product consumes, or `None` if unsupported.
pub fn act_type_for(weight: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    Some(match weight {
        F32 | F16 | BF16 => F32,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => Q8_K,
        IQ1_S | IQ1_M | TQ1_0 | TQ2_0 => Q8_K,
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => Q8_K,
        _ => return None,
    })
}

/// Which implementation a [`VecDot`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdPath {
    /// The portable reference ([`scalar`]).
    Scalar,
    /// AVX2 + FMA + F16C integer dots (x86-64).
    Avx2,
    /// The AVX2 kernels with the multiply-accumulates fused by AVX512-VNNI (`vpdpbusd`,
    /// `vpdpwssd` on 256-bit registers). Same integers, same f32 operations: results are
    /// bit-identical to [`SimdPath::Avx2`].
    Avx512Vnni,
}

impl SimdPath {
    /// `"scalar"` or `"avx2"`.
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Scalar => "scalar",
            SimdPath::Avx2 => "avx2",
            SimdPath::Avx512Vnni => "avx512vnni",
        }
    }
}

/// The best path this CPU supports (detected once, then cached).
pub fn best_path() -> SimdPath {
    use std::sync::OnceLock;
    static PATH: OnceLock<SimdPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::vnni_available() {
                return SimdPath::Avx512Vnni;
            }
            if avx2::available() {
                return SimdPath::Avx2;
            }
        }
        SimdPath::Scalar
    })
}

/// Name of the SIMD path [`vec_dot_for`] uses on this machine (`"avx512vnni"`, `"avx2"` or
/// `"scalar"`), for the load summary.
pub fn simd_path() -> &'static str {
    best_path().name()
}

/// A scalar kernel: exact-length weight and activation rows.
pub(crate) type ScalarFn = fn(w: &[u8], a: &[u8]) -> f32;

/// A SIMD kernel over `nb` blocks and `N` activation rows (`N` fixed per function: the
/// array [`RowsFns`] holds N = 1..=4).
///
/// # Safety
/// `w` must point to `nb` weight blocks, each `a[r]` (r < N) to `nb` activation blocks,
/// `out` to N writable f32, and the CPU must support the kernel's target features.
pub(crate) type RowsFn = unsafe fn(nb: usize, w: *const u8, a: *const *const u8, out: *mut f32);
pub(crate) type RowsFns = [RowsFn; MAX_ROWS];

#[derive(Clone, Copy)]
enum Imp {
    Scalar(ScalarFn),
    #[allow(dead_code)] // never built on non-x86 targets
    Simd(&'static RowsFns),
}

/// A dot product for one weight type, with its implementation chosen once.
///
/// Rows are raw little-endian bytes as stored in GGUF (weights) or produced by the
/// activation quantizer (`act`); they need no particular alignment.
#[derive(Clone, Copy)]
pub struct VecDot {
    /// The weight type.
    pub weight: GgmlType,
    /// The activation type to quantize the f32 input to (F32 means "leave it as f32").
    pub act: GgmlType,
    /// The implementation in use.
    pub path: SimdPath,
    imp: Imp,
    /// Row geometry for the per-call length check without divisions: log2 of the block
    /// size (every ggml block size is a power of two) and the bytes per block.
    shift: u32,
    w_block: usize,
    a_block: usize,
}

impl std::fmt::Debug for VecDot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VecDot")
            .field("weight", &self.weight)
            .field("act", &self.act)
            .field("path", &self.path)
            .finish()
    }
}

/// The dot product for `weight` on the best path this CPU supports.
pub fn vec_dot_for(weight: GgmlType) -> Result<VecDot, DotError> {
    vec_dot_with(weight, best_path())
}

/// The dot product for `weight` on a given path (tests compare paths). Asking for a path the
/// CPU lacks falls back to the next one down (AVX512-VNNI → AVX2 → scalar): `path` of the
/// result says what runs.
pub fn vec_dot_with(weight: GgmlType, path: SimdPath) -> Result<VecDot, DotError> {
    let act = act_type_for(weight).ok_or(DotError::Unsupported(weight))?;
    let scalar = scalar::kernel(weight).ok_or(DotError::Unsupported(weight))?;
    #[cfg(target_arch = "x86_64")]
    if path != SimdPath::Scalar && avx2::available() {
        let vnni = path == SimdPath::Avx512Vnni && avx2::vnni_available();
        if let Some(fns) = avx2::kernels(weight, vnni) {
            let path = if vnni {
                SimdPath::Avx512Vnni
            } else {
                SimdPath::Avx2
            };
            return Ok(VecDot::new(weight, act, path, Imp::Simd(fns)));
        }
    }
    let _ = path; // only x86-64 has a path other than scalar (so far)
    Ok(VecDot::new(
        weight,
        act,
        SimdPath::Scalar,
        Imp::Scalar(scalar),
    ))
}

impl VecDot {
    fn new(weight: GgmlType, act: GgmlType, path: SimdPath, imp: Imp) -> VecDot {
        let bs = weight.block_size();
        debug_assert!(bs.is_power_of_two());
        debug_assert_eq!(act.block_size(), bs);
        VecDot {
            weight,
            act,
            path,
            imp,
            shift: bs.trailing_zeros(),
            w_block: weight.type_size(),
            a_block: act.type_size(),
        }
    }

    /// Whether `n` is a whole number of blocks and the rows have its exact byte lengths:
    /// a shift, two multiplies and compares (this runs on every call).
    #[inline(always)]
    fn lengths_ok(&self, n: usize, w_len: usize, a_len: usize) -> bool {
        let nb = n >> self.shift;
        nb << self.shift == n
            && nb.checked_mul(self.w_block) == Some(w_len)
            && nb.checked_mul(self.a_block) == Some(a_len)
    }

    /// Bytes of one weight row of `n` values (`None` if `n` is not a block multiple).
    pub fn weight_row_bytes(&self, n: usize) -> Option<usize> {
        row_bytes(self.weight, n)
    }

    /// Bytes of one activation row of `n` values (`None` if `n` is not a block multiple).
    pub fn act_row_bytes(&self, n: usize) -> Option<usize> {
        row_bytes(self.act, n)
    }

    /// Checks `n` and the lengths of a weight row and an activation row.
    pub fn check(&self, n: usize, w_row: &[u8], a_row: &[u8]) -> Result<(), DotError> {
        check_row(self.weight, "weight", n, w_row.len())?;
        check_row(self.act, "activation", n, a_row.len())
    }

    /// Σ w·a over one row of `n` values, or an error naming the bad length.
    pub fn try_dot(&self, n: usize, w_row: &[u8], a_row: &[u8]) -> Result<f32, DotError> {
        if !self.lengths_ok(n, w_row.len(), a_row.len()) {
            return Err(self.length_error(n, w_row.len(), a_row.len()));
        }
        Ok(self.dot_unchecked_len(n, w_row, a_row))
    }

    /// Σ w·a over one row of `n` values.
    ///
    /// # Panics
    /// If the row lengths do not match `n` (a caller bug: shapes are validated at load;
    /// use [`VecDot::try_dot`] for unvalidated input). The check is a shift, two multiplies
    /// and three compares per call.
    #[inline]
    pub fn dot(&self, n: usize, w_row: &[u8], a_row: &[u8]) -> f32 {
        if !self.lengths_ok(n, w_row.len(), a_row.len()) {
            self.length_panic(n, w_row.len(), a_row.len());
        }
        self.dot_unchecked_len(n, w_row, a_row)
    }

    #[cold]
    #[inline(never)]
    fn length_panic(&self, n: usize, w_len: usize, a_len: usize) -> ! {
        panic!("VecDot::dot: {}", self.length_error(n, w_len, a_len));
    }

    /// The error for lengths that [`VecDot::lengths_ok`] rejected (the precise message
    /// comes from the division-based [`check_row`]).
    #[cold]
    fn length_error(&self, n: usize, w_len: usize, a_len: usize) -> DotError {
        match check_row(self.weight, "weight", n, w_len)
            .and_then(|_| check_row(self.act, "activation", n, a_len))
        {
            Err(e) => e,
            // Unreachable (both checks are the same arithmetic); still an error, never a
            // kernel call on unchecked lengths.
            Ok(()) => DotError::NotBlockMultiple {
                ty: self.weight,
                n,
                block_size: self.weight.block_size(),
            },
        }
    }

    #[inline]
    fn dot_unchecked_len(&self, n: usize, w_row: &[u8], a_row: &[u8]) -> f32 {
        match self.imp {
            Imp::Scalar(f) => f(w_row, a_row),
            Imp::Simd(fns) => {
                let nb = n >> self.shift;
                let a = [a_row.as_ptr()];
                let mut out = 0f32;
                // SAFETY: `check` verified both rows hold exactly `nb` blocks of their types,
                // `a` holds one pointer, `out` one f32, and `Imp::Simd` is only built after
                // the CPU features were detected.
                unsafe { fns[0](nb, w_row.as_ptr(), a.as_ptr(), &mut out) };
                out
            }
        }
    }

    /// One weight row against several activation rows: `out[r] = dot(n, w_row, a_rows[r])`,
    /// bit-identical to calling [`VecDot::dot`] per row, but each weight block is loaded
    /// and unpacked once per group of up to [`MAX_ROWS`] activation rows (the GEMM path).
    ///
    /// # Panics
    /// If a length does not match (see [`VecDot::try_dot_multi`]).
    pub fn dot_multi(&self, n: usize, w_row: &[u8], a_rows: &[&[u8]], out: &mut [f32]) {
        if let Err(e) = self.try_dot_multi(n, w_row, a_rows, out) {
            panic!("VecDot::dot_multi: {e}");
        }
    }

    /// [`VecDot::dot_multi`] returning an error for bad lengths instead of panicking.
    pub fn try_dot_multi(
        &self,
        n: usize,
        w_row: &[u8],
        a_rows: &[&[u8]],
        out: &mut [f32],
    ) -> Result<(), DotError> {
        if a_rows.len() != out.len() {
            return Err(DotError::OutputCount {
                rows: a_rows.len(),
                outs: out.len(),
            });
        }
        for a in a_rows {
            if !self.lengths_ok(n, w_row.len(), a.len()) {
                return Err(self.length_error(n, w_row.len(), a.len()));
            }
        }
        if a_rows.is_empty() {
            check_row(self.weight, "weight", n, w_row.len())?;
        }
        match self.imp {
            Imp::Scalar(f) => {
                for (o, a) in out.iter_mut().zip(a_rows) {
                    *o = f(w_row, a);
                }
            }
            Imp::Simd(fns) => {
                let nb = n >> self.shift;
                for (rows, outs) in a_rows.chunks(MAX_ROWS).zip(out.chunks_mut(MAX_ROWS)) {
                    let mut ptrs = [std::ptr::null::<u8>(); MAX_ROWS];
                    for (p, a) in ptrs.iter_mut().zip(rows) {
                        *p = a.as_ptr();
                    }
                    // SAFETY: every row was length-checked above; `ptrs` holds `rows.len()`
                    // valid pointers and `outs` as many f32; the kernel index is
                    // rows.len() - 1 < MAX_ROWS; CPU features were detected when built.
                    unsafe {
                        fns[rows.len() - 1](nb, w_row.as_ptr(), ptrs.as_ptr(), outs.as_mut_ptr())
                    };
                }
            }
        }
        Ok(())
    }
}

#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than our MSRV (1.85)
fn row_bytes(ty: GgmlType, n: usize) -> Option<usize> {
    let bs = ty.block_size();
    if n % bs != 0 {
        return None;
    }
    (n / bs).checked_mul(ty.type_size())
}

fn check_row(ty: GgmlType, which: &'static str, n: usize, actual: usize) -> Result<(), DotError> {
    let expected = row_bytes(ty, n).ok_or(DotError::NotBlockMultiple {
        ty,
        n,
        block_size: ty.block_size(),
    })?;
    if expected != actual {
        return Err(DotError::RowLength {
            which,
            ty,
            n,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Test hooks: the integer partial sums of each block, so the property tests can check the
/// SIMD path against the scalar one bit for bit. Not a stable API.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// Per block of one row: `[main, second]` integer sums, as defined per type in
    /// `scalar::block_ints` (see the source). `None` for types without integer sums (F32/F16/BF16) or
    /// bad lengths.
    pub fn block_ints_scalar(
        weight: GgmlType,
        n: usize,
        w: &[u8],
        a: &[u8],
    ) -> Option<Vec<[i32; 2]>> {
        let act = act_type_for(weight)?;
        check_row(weight, "weight", n, w.len()).ok()?;
        check_row(act, "activation", n, a.len()).ok()?;
        scalar::block_ints(weight, w, a)
    }

    /// The same sums computed by the SIMD kernels' block code on `path` (AVX2 or
    /// AVX512-VNNI); `None` if that path is not available here, for `SimdPath::Scalar`, or
    /// for types without integer sums.
    pub fn block_ints_simd(
        path: SimdPath,
        weight: GgmlType,
        n: usize,
        w: &[u8],
        a: &[u8],
    ) -> Option<Vec<[i32; 2]>> {
        let act = act_type_for(weight)?;
        check_row(weight, "weight", n, w.len()).ok()?;
        check_row(act, "activation", n, a.len()).ok()?;
        #[cfg(target_arch = "x86_64")]
        {
            let ok = match path {
                SimdPath::Scalar => false,
                SimdPath::Avx2 => avx2::available(),
                SimdPath::Avx512Vnni => avx2::vnni_available(),
            };
            if ok {
                return avx2::block_ints(weight, path == SimdPath::Avx512Vnni, w, a);
            }
        }
        let _ = path;
        None
    }
}
