//! Repacked (row-interleaved) weight layouts for the GEMM/GEMV path.
//!
//! A GGUF weight matrix stores each row as a run of blocks. The dot kernels of [`crate::dot`]
//! consume one weight row at a time and keep per-position lanes, so every weight block is
//! unpacked (nibbles, scales, f16) for every call and its 8 result lanes need a horizontal
//! sum. Repacking at load rearranges groups of [`ROWS`] = 8 rows so that one 256-bit vector
//! holds the same 4 positions of all 8 rows: one `vpdpbusd` with a broadcast 4-byte group of
//! activations then advances all 8 rows at once (lane = row), the sub-block scales are
//! stored pre-decoded (one `vpmovzxbd` per sub-block for 8 rows), and the 8 results come
//! out as one vector, ready to store. This is the idea behind llama.cpp's CPU "repack"
//! buffers and ik_llama.cpp's `_R4`/`_R8` types (the layout and code here are our own).
//!
//! Formats ([`PackedType`]):
//! - [`PackedType::Q4Kx8`]: Q4_K, 8 rows per group (see `q4k` for the byte layout), +2.8%
//!   (148 bytes per row-block instead of 144: the 12 packed scale bytes become 16 plain
//!   ones).
//! - [`PackedType::Q6Kx8`]: Q6_K, 8 rows per group (see `q6k`), same size as the source.
//! - [`PackedType::Q2Kx8`]: Q2_K, 8 rows per group (see `q2k`), same size as the source.
//! - [`PackedType::Q3Kx8`]: Q3_K, 8 rows per group (see `q3k`), +3.6% (114 bytes per
//!   row-block instead of 110: the 12 bytes of packed scales become 16 plain ones).
//! - [`PackedType::IQ4XSx8`]: IQ4_XS, 8 rows per group (see `iq4xs`), +1.5% (138 bytes per
//!   row-block instead of 136: the 6 bytes of packed scales become 8 plain ones).
//! - [`PackedType::Q8_0x8`], [`PackedType::Q5_0x8`], [`PackedType::Q4_0x8`],
//!   [`PackedType::MXFP4x8`]: the 32-value blocks × Q8_0 activations (see `legacy`), the
//!   same size as the source (the quants are stored or looked up unsigned, so `vpdpbusd`
//!   takes them as they are).
//! - [`PackedType::IQ2XXSx8`], [`PackedType::IQ3XXSx8`]: IQ2_XXS / IQ3_XXS, 8 rows per
//!   group (see `iq2xxs`, `iq3xxs`), the same size as the source; only where their
//!   AVX-512 VBMI tiles run ([`PackedType::for_type`]).
//! - [`PackedType::IQ1Sx8`], [`PackedType::IQ1Mx8`]: IQ1_S / IQ1_M, 8 rows per group (see
//!   `iq1`), the same size as the source; only where their AVX-512 VNNI tiles run.
//! - [`PackedType::IQ2Sx8`], [`PackedType::IQ2XSx8`], [`PackedType::IQ3Sx8`]: IQ2_S /
//!   IQ2_XS / IQ3_S likewise (see `iq2s`, `iq2xs`, `iq3s`), the same size as the source.
//! - [`PackedType::TQ1_0x8`], [`PackedType::TQ2_0x8`]: TQ1_0 / TQ2_0, 8 rows per group
//!   (see `ternary`), the same size as the source; only where their AVX-512 tiles run.
//!
//! Numerics (the *definition*, [`scalar`] functions; the legacy types likewise with
//! `acc = fma(d·d_a, Σ w·a, acc)` per 32-value block): per row and block, the exact
//! integers of ggml's Q4_K×Q8_K dot (`isum = Σ_s sc_s·Σ q·a`, `msum = Σ_s m_s·(bsums)`),
//! then one f32 accumulator per (row, token) updated per block as
//! `acc = fma(d·d_a, isum, acc); acc = fma(−dmin·d_a, msum, acc)`. The SIMD tile kernels
//! compute the same integers and the same f32 operations in the same order, so they are
//! bit-identical to the scalar definition (property-tested), whatever the number of tokens
//! per call: results are batch-invariant. They are *not* bit-identical to
//! [`crate::dot::VecDot`] (which keeps 8 position lanes per row and sums them at the end):
//! the difference is f32 rounding only (same integers), a few ulps of Σ|terms|.
//!
//! Rows not a multiple of [`ROWS`] are not repacked (callers keep such matrices as they
//! are).

// `is_multiple_of` is newer than our MSRV (1.85).
#![allow(clippy::manual_is_multiple_of)]

use crate::dot::SimdPath;
use crate::GgmlType;

mod iq1;
mod iq2s;
mod iq2xs;
mod iq2xxs;
mod iq3s;
mod iq3xxs;
mod iq4xs;
mod legacy;
mod q2k;
mod q3k;
mod q4k;
mod q6k;
mod ternary;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use iq1::{IQ1MX8_BLOCK_BYTES, IQ1SX8_BLOCK_BYTES};
pub use iq2s::IQ2SX8_BLOCK_BYTES;
pub use iq2xs::IQ2XSX8_BLOCK_BYTES;
pub use iq2xxs::IQ2XXSX8_BLOCK_BYTES;
pub use iq3s::IQ3SX8_BLOCK_BYTES;
pub use iq3xxs::IQ3XXSX8_BLOCK_BYTES;
pub use iq4xs::IQ4XSX8_BLOCK_BYTES;
use legacy::Kind;
pub use legacy::{MXFP4X8_BLOCK_BYTES, Q4_0X8_BLOCK_BYTES, Q5_0X8_BLOCK_BYTES, Q8_0X8_BLOCK_BYTES};
pub use q2k::Q2KX8_BLOCK_BYTES;
pub use q3k::Q3KX8_BLOCK_BYTES;
pub use q4k::Q4KX8_BLOCK_BYTES;
pub use q6k::Q6KX8_BLOCK_BYTES;
pub use ternary::{TQ1_0X8_BLOCK_BYTES, TQ2_0X8_BLOCK_BYTES};

/// Rows per repacked group.
pub const ROWS: usize = 8;

/// Most tokens one tile-kernel call handles.
pub const MAX_TOKENS: usize = 8;

/// Why a repack or a packed dot could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RepackError {
    /// No repacked layout for this type.
    #[error("no repacked layout for weight type {0} (supported: Q4_K, Q6_K, Q2_K, Q3_K, IQ4_XS, Q8_0, Q5_0, Q4_0, MXFP4, IQ2_XXS, IQ3_XXS, IQ1_S, IQ1_M, IQ2_S, IQ2_XS, IQ3_S, TQ1_0, TQ2_0)")]
    Unsupported(GgmlType),
    /// Shapes that do not fit the layout or the buffers.
    #[error("repack {ty} [{n_in} x {n_out}]: {problem}")]
    Shape {
        ty: GgmlType,
        n_in: usize,
        n_out: usize,
        problem: String,
    },
}

/// A repacked layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackedType {
    /// Q4_K, groups of 8 rows (see the module docs).
    Q4Kx8,
    /// Q6_K, groups of 8 rows (see `q6k`).
    Q6Kx8,
    /// Q8_0, groups of 8 rows (see `legacy`).
    Q8_0x8,
    /// Q5_0, groups of 8 rows (see `legacy`).
    Q5_0x8,
    /// Q4_0, groups of 8 rows (see `legacy`).
    Q4_0x8,
    /// IQ4_NL, groups of 8 rows (see `legacy`).
    IQ4NLx8,
    /// Q2_K, groups of 8 rows (see `q2k`).
    Q2Kx8,
    /// Q3_K, groups of 8 rows (see `q3k`).
    Q3Kx8,
    /// IQ4_XS, groups of 8 rows (see `iq4xs`).
    IQ4XSx8,
    /// MXFP4, groups of 8 rows (see `legacy`).
    MXFP4x8,
    /// IQ2_XXS, groups of 8 rows (see `iq2xxs`).
    IQ2XXSx8,
    /// IQ3_XXS, groups of 8 rows (see `iq3xxs`).
    IQ3XXSx8,
    /// IQ1_S, groups of 8 rows (see `iq1`).
    IQ1Sx8,
    /// IQ1_M, groups of 8 rows (see `iq1`).
    IQ1Mx8,
    /// IQ2_S, groups of 8 rows (see `iq2s`).
    IQ2Sx8,
    /// IQ2_XS, groups of 8 rows (see `iq2xs`).
    IQ2XSx8,
    /// IQ3_S, groups of 8 rows (see `iq3s`).
    IQ3Sx8,
    /// TQ1_0, groups of 8 rows (see `ternary`).
    TQ1_0x8,
    /// TQ2_0, groups of 8 rows (see `ternary`).
    TQ2_0x8,
}

impl PackedType {
    /// The layout the engine repacks weights of type `ty` into on this CPU, if any: the
    /// type's [`layout_of`](Self::layout_of) where a tile kernel runs it faster than the
    /// file-order dots. IQ2_XXSx8 and IQ3_XXSx8 have only AVX-512 VBMI tiles (their
    /// codebook decode is `vpermi2b`/`vpermb`/`vpmultishiftqb`, GFNI); without them the
    /// scalar tile would be slower than the file-order AVX2 kernels, so such CPUs keep
    /// those types as they are. The same holds for the other codebook layouts and the
    /// ternary ones (TQ1_0x8, TQ2_0x8: AVX-512 tiles run through the codebook layouts' VBMI
    /// tile), and for IQ1_Sx8 / IQ1_Mx8 with VNNI.
    pub fn for_type(ty: GgmlType) -> Option<PackedType> {
        PackedType::layout_of(ty).filter(|p| match p {
            PackedType::IQ2XXSx8
            | PackedType::IQ3XXSx8
            | PackedType::IQ2Sx8
            | PackedType::IQ2XSx8
            | PackedType::IQ3Sx8
            | PackedType::TQ1_0x8
            | PackedType::TQ2_0x8 => vbmi_tiles(),
            // Their tile is AVX-512 only (one 512-bit vector per 8 rows' group of 8).
            PackedType::IQ1Sx8 | PackedType::IQ1Mx8 => vnni_tiles(),
            _ => true,
        })
    }

    /// The layout that exists for weights of type `ty`, whatever this CPU runs (tests and
    /// tools; the engine asks [`for_type`](Self::for_type)).
    pub fn layout_of(ty: GgmlType) -> Option<PackedType> {
        match ty {
            GgmlType::Q4_K => Some(PackedType::Q4Kx8),
            GgmlType::Q6_K => Some(PackedType::Q6Kx8),
            GgmlType::Q8_0 => Some(PackedType::Q8_0x8),
            GgmlType::Q5_0 => Some(PackedType::Q5_0x8),
            GgmlType::Q4_0 => Some(PackedType::Q4_0x8),
            GgmlType::IQ4_NL => Some(PackedType::IQ4NLx8),
            GgmlType::Q2_K => Some(PackedType::Q2Kx8),
            GgmlType::Q3_K => Some(PackedType::Q3Kx8),
            GgmlType::IQ4_XS => Some(PackedType::IQ4XSx8),
            GgmlType::MXFP4 => Some(PackedType::MXFP4x8),
            GgmlType::IQ2_XXS => Some(PackedType::IQ2XXSx8),
            GgmlType::IQ3_XXS => Some(PackedType::IQ3XXSx8),
            GgmlType::IQ1_S => Some(PackedType::IQ1Sx8),
            GgmlType::IQ1_M => Some(PackedType::IQ1Mx8),
            GgmlType::IQ2_S => Some(PackedType::IQ2Sx8),
            GgmlType::IQ2_XS => Some(PackedType::IQ2XSx8),
            GgmlType::IQ3_S => Some(PackedType::IQ3Sx8),
            GgmlType::TQ1_0 => Some(PackedType::TQ1_0x8),
            GgmlType::TQ2_0 => Some(PackedType::TQ2_0x8),
            _ => None,
        }
    }

    /// The source (file) type.
    pub fn source(self) -> GgmlType {
        match self {
            PackedType::Q4Kx8 => GgmlType::Q4_K,
            PackedType::Q6Kx8 => GgmlType::Q6_K,
            PackedType::Q8_0x8 => GgmlType::Q8_0,
            PackedType::Q5_0x8 => GgmlType::Q5_0,
            PackedType::Q4_0x8 => GgmlType::Q4_0,
            PackedType::IQ4NLx8 => GgmlType::IQ4_NL,
            PackedType::Q2Kx8 => GgmlType::Q2_K,
            PackedType::Q3Kx8 => GgmlType::Q3_K,
            PackedType::IQ4XSx8 => GgmlType::IQ4_XS,
            PackedType::MXFP4x8 => GgmlType::MXFP4,
            PackedType::IQ2XXSx8 => GgmlType::IQ2_XXS,
            PackedType::IQ3XXSx8 => GgmlType::IQ3_XXS,
            PackedType::IQ1Sx8 => GgmlType::IQ1_S,
            PackedType::IQ1Mx8 => GgmlType::IQ1_M,
            PackedType::IQ2Sx8 => GgmlType::IQ2_S,
            PackedType::IQ2XSx8 => GgmlType::IQ2_XS,
            PackedType::IQ3Sx8 => GgmlType::IQ3_S,
            PackedType::TQ1_0x8 => GgmlType::TQ1_0,
            PackedType::TQ2_0x8 => GgmlType::TQ2_0,
        }
    }

    /// Short name for summaries (`"Q4_Kx8"`).
    pub fn name(self) -> &'static str {
        match self {
            PackedType::Q4Kx8 => "Q4_Kx8",
            PackedType::Q6Kx8 => "Q6_Kx8",
            PackedType::Q8_0x8 => "Q8_0x8",
            PackedType::Q5_0x8 => "Q5_0x8",
            PackedType::Q4_0x8 => "Q4_0x8",
            PackedType::IQ4NLx8 => "IQ4_NLx8",
            PackedType::Q2Kx8 => "Q2_Kx8",
            PackedType::Q3Kx8 => "Q3_Kx8",
            PackedType::IQ4XSx8 => "IQ4_XSx8",
            PackedType::MXFP4x8 => "MXFP4x8",
            PackedType::IQ2XXSx8 => "IQ2_XXSx8",
            PackedType::IQ3XXSx8 => "IQ3_XXSx8",
            PackedType::IQ1Sx8 => "IQ1_Sx8",
            PackedType::IQ1Mx8 => "IQ1_Mx8",
            PackedType::IQ2Sx8 => "IQ2_Sx8",
            PackedType::IQ2XSx8 => "IQ2_XSx8",
            PackedType::IQ3Sx8 => "IQ3_Sx8",
            PackedType::TQ1_0x8 => "TQ1_0x8",
            PackedType::TQ2_0x8 => "TQ2_0x8",
        }
    }

    /// Bytes of one packed block (8 rows × one source block).
    pub fn block_bytes(self) -> usize {
        match self {
            PackedType::Q4Kx8 => Q4KX8_BLOCK_BYTES,
            PackedType::Q6Kx8 => Q6KX8_BLOCK_BYTES,
            PackedType::Q8_0x8 => Q8_0X8_BLOCK_BYTES,
            PackedType::Q5_0x8 => Q5_0X8_BLOCK_BYTES,
            PackedType::Q4_0x8 | PackedType::IQ4NLx8 => Q4_0X8_BLOCK_BYTES,
            PackedType::Q2Kx8 => Q2KX8_BLOCK_BYTES,
            PackedType::Q3Kx8 => Q3KX8_BLOCK_BYTES,
            PackedType::IQ4XSx8 => IQ4XSX8_BLOCK_BYTES,
            PackedType::MXFP4x8 => MXFP4X8_BLOCK_BYTES,
            PackedType::IQ2XXSx8 => IQ2XXSX8_BLOCK_BYTES,
            PackedType::IQ3XXSx8 => IQ3XXSX8_BLOCK_BYTES,
            PackedType::IQ1Sx8 => IQ1SX8_BLOCK_BYTES,
            PackedType::IQ1Mx8 => IQ1MX8_BLOCK_BYTES,
            PackedType::IQ2Sx8 => IQ2SX8_BLOCK_BYTES,
            PackedType::IQ2XSx8 => IQ2XSX8_BLOCK_BYTES,
            PackedType::IQ3Sx8 => IQ3SX8_BLOCK_BYTES,
            PackedType::TQ1_0x8 => TQ1_0X8_BLOCK_BYTES,
            PackedType::TQ2_0x8 => TQ2_0X8_BLOCK_BYTES,
        }
    }

    /// Bytes of one group of [`ROWS`] rows of `n_in` values (`None` if `n_in` is not a
    /// whole number of blocks or overflows).
    pub fn group_bytes(self, n_in: usize) -> Option<usize> {
        let bs = self.source().block_size();
        if n_in == 0 || n_in % bs != 0 {
            return None;
        }
        (n_in / bs).checked_mul(self.block_bytes())
    }

    /// Bytes of a whole repacked `n_out × n_in` matrix (`n_out` must be a multiple of
    /// [`ROWS`]).
    pub fn matrix_bytes(self, n_in: usize, n_out: usize) -> Option<usize> {
        if n_out % ROWS != 0 {
            return None;
        }
        self.group_bytes(n_in)?.checked_mul(n_out / ROWS)
    }
}

/// Whether this CPU runs the AVX-512 VBMI tiles of the codebook layouts (IQ2_XXSx8,
/// IQ3_XXSx8, IQ2_Sx8, IQ2_XSx8, IQ3_Sx8) and the ternary layouts (TQ1_0x8, TQ2_0x8).
fn vbmi_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::vbmi();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU runs the AVX-512 VNNI tiles (IQ1_Sx8, IQ1_Mx8).
fn vnni_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::vnni();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn shape(ty: GgmlType, n_in: usize, n_out: usize, problem: String) -> RepackError {
    RepackError::Shape {
        ty,
        n_in,
        n_out,
        problem,
    }
}

/// Checks the shapes of a repack/unpack between `file` bytes (`n_out` rows of `ty`) and
/// `packed` bytes; returns the layout.
fn check(
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    file: usize,
    packed: usize,
) -> Result<PackedType, RepackError> {
    let pt = PackedType::layout_of(ty).ok_or(RepackError::Unsupported(ty))?;
    if n_out % ROWS != 0 {
        return Err(shape(
            ty,
            n_in,
            n_out,
            format!("{n_out} rows is not a multiple of {ROWS}"),
        ));
    }
    let want_packed = pt.matrix_bytes(n_in, n_out).ok_or_else(|| {
        shape(
            ty,
            n_in,
            n_out,
            format!("{n_in} values is not a whole number of {ty} blocks"),
        )
    })?;
    let want_file = ty
        .row_bytes(n_in as u64)
        .and_then(|rb| (rb as usize).checked_mul(n_out))
        .ok_or_else(|| shape(ty, n_in, n_out, "size overflows".to_string()))?;
    if file != want_file {
        return Err(shape(
            ty,
            n_in,
            n_out,
            format!("source holds {file} bytes, expected {want_file}"),
        ));
    }
    if packed != want_packed {
        return Err(shape(
            ty,
            n_in,
            n_out,
            format!("packed buffer holds {packed} bytes, expected {want_packed}"),
        ));
    }
    Ok(pt)
}

/// The (packed block, row, source block) triples of a repack, for source blocks of
/// `vals` values and `sbb` bytes and packed blocks of `pbb` bytes: `f(pb, r, src_block)`
/// fills row r's share of packed block `pb` from that row's source block.
#[inline(always)]
pub(super) fn each_row_block(
    n_in: usize,
    n_out: usize,
    (vals, sbb, pbb): (usize, usize, usize),
    src: &[u8],
    dst: &mut [u8],
    mut f: impl FnMut(&mut [u8], usize, &[u8]),
) {
    let nb = n_in / vals;
    let row_bytes = nb * sbb;
    for (g, out) in dst
        .chunks_exact_mut(nb * pbb)
        .enumerate()
        .take(n_out / ROWS)
    {
        for (ib, pb) in out.chunks_exact_mut(pbb).enumerate() {
            for r in 0..ROWS {
                let o = (g * ROWS + r) * row_bytes + ib * sbb;
                f(pb, r, &src[o..o + sbb]);
            }
        }
    }
}

/// The inverse walk of [`each_row_block`]: `f(pb, r, dst_block)` writes row r's source
/// block back from packed block `pb`.
#[inline(always)]
pub(super) fn each_row_block_back(
    n_in: usize,
    n_out: usize,
    (vals, sbb, pbb): (usize, usize, usize),
    packed: &[u8],
    dst: &mut [u8],
    mut f: impl FnMut(&[u8], usize, &mut [u8]),
) {
    let nb = n_in / vals;
    let row_bytes = nb * sbb;
    for (g, grp) in packed.chunks_exact(nb * pbb).enumerate().take(n_out / ROWS) {
        for (ib, pb) in grp.chunks_exact(pbb).enumerate() {
            for r in 0..ROWS {
                let o = (g * ROWS + r) * row_bytes + ib * sbb;
                f(pb, r, &mut dst[o..o + sbb]);
            }
        }
    }
}

/// Repacks `n_out` rows of `n_in` values of `ty` as stored in GGUF (`src`) into `dst`
/// (exactly [`PackedType::matrix_bytes`] bytes).
pub fn repack(
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), RepackError> {
    match check(ty, n_in, n_out, src.len(), dst.len())? {
        PackedType::Q4Kx8 => q4k::repack(n_in, n_out, src, dst),
        PackedType::Q6Kx8 => q6k::repack(n_in, n_out, src, dst),
        PackedType::Q8_0x8 => legacy::repack(Kind::Q8_0, n_in, n_out, src, dst),
        PackedType::Q5_0x8 => legacy::repack(Kind::Q5_0, n_in, n_out, src, dst),
        PackedType::Q4_0x8 => legacy::repack(Kind::Q4_0, n_in, n_out, src, dst),
        PackedType::IQ4NLx8 => legacy::repack(Kind::Iq4Nl, n_in, n_out, src, dst),
        PackedType::Q2Kx8 => q2k::repack(n_in, n_out, src, dst),
        PackedType::Q3Kx8 => q3k::repack(n_in, n_out, src, dst),
        PackedType::IQ4XSx8 => iq4xs::repack(n_in, n_out, src, dst),
        PackedType::MXFP4x8 => legacy::repack(Kind::Mxfp4, n_in, n_out, src, dst),
        PackedType::IQ2XXSx8 => iq2xxs::repack(n_in, n_out, src, dst),
        PackedType::IQ3XXSx8 => iq3xxs::repack(n_in, n_out, src, dst),
        PackedType::IQ1Sx8 => iq1::repack_s(n_in, n_out, src, dst),
        PackedType::IQ1Mx8 => iq1::repack_m(n_in, n_out, src, dst),
        PackedType::IQ2Sx8 => iq2s::repack(n_in, n_out, src, dst),
        PackedType::IQ2XSx8 => iq2xs::repack(n_in, n_out, src, dst),
        PackedType::IQ3Sx8 => iq3s::repack(n_in, n_out, src, dst),
        PackedType::TQ1_0x8 => ternary::repack::<{ ternary::TQ1 }>(n_in, n_out, src, dst),
        PackedType::TQ2_0x8 => ternary::repack::<{ ternary::TQ2 }>(n_in, n_out, src, dst),
    }
    Ok(())
}

/// The inverse of [`repack`]: the GGUF bytes of the `n_out` rows (for dequantization and
/// the reference path). `unpack(repack(x)) == x` for blocks whose packed scales are
/// canonical (ggml's quantizer writes them so; see `q4k`).
pub fn unpack(
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    packed: &[u8],
    dst: &mut [u8],
) -> Result<(), RepackError> {
    match check(ty, n_in, n_out, dst.len(), packed.len())? {
        PackedType::Q4Kx8 => q4k::unpack(n_in, n_out, packed, dst),
        PackedType::Q6Kx8 => q6k::unpack(n_in, n_out, packed, dst),
        PackedType::Q8_0x8 => legacy::unpack(Kind::Q8_0, n_in, n_out, packed, dst),
        PackedType::Q5_0x8 => legacy::unpack(Kind::Q5_0, n_in, n_out, packed, dst),
        PackedType::Q4_0x8 => legacy::unpack(Kind::Q4_0, n_in, n_out, packed, dst),
        PackedType::IQ4NLx8 => legacy::unpack(Kind::Iq4Nl, n_in, n_out, packed, dst),
        PackedType::Q2Kx8 => q2k::unpack(n_in, n_out, packed, dst),
        PackedType::Q3Kx8 => q3k::unpack(n_in, n_out, packed, dst),
        PackedType::IQ4XSx8 => iq4xs::unpack(n_in, n_out, packed, dst),
        PackedType::MXFP4x8 => legacy::unpack(Kind::Mxfp4, n_in, n_out, packed, dst),
        PackedType::IQ2XXSx8 => iq2xxs::unpack(n_in, n_out, packed, dst),
        PackedType::IQ3XXSx8 => iq3xxs::unpack(n_in, n_out, packed, dst),
        PackedType::IQ1Sx8 => iq1::unpack_s(n_in, n_out, packed, dst),
        PackedType::IQ1Mx8 => iq1::unpack_m(n_in, n_out, packed, dst),
        PackedType::IQ2Sx8 => iq2s::unpack(n_in, n_out, packed, dst),
        PackedType::IQ2XSx8 => iq2xs::unpack(n_in, n_out, packed, dst),
        PackedType::IQ3Sx8 => iq3s::unpack(n_in, n_out, packed, dst),
        PackedType::TQ1_0x8 => ternary::unpack::<{ ternary::TQ1 }>(n_in, n_out, packed, dst),
        PackedType::TQ2_0x8 => ternary::unpack::<{ ternary::TQ2 }>(n_in, n_out, packed, dst),
    }
    Ok(())
}

/// A tile kernel: `ng` consecutive packed groups of `nb` blocks each × `T` activation rows
/// → `out[t·ld + g·ROWS + row]`.
///
/// # Safety
/// `w` must point to `ng` groups of `nb` packed blocks, each `a[t]` (t < T) to `nb`
/// activation blocks (as the activation quantizer writes them: Q8_K `bsums` are the sums
/// of their quants), `out` to f32 readable and writable at those offsets (rows longer than
/// 64 blocks keep their partial sums there between passes), non-overlapping
/// (`ld ≥ ng·ROWS` when T > 1) and aliasing neither `w` nor `a`; and the CPU must support
/// the kernel's target features.
pub(crate) type TileFn =
    unsafe fn(nb: usize, ng: usize, w: *const u8, a: *const *const u8, out: *mut f32, ld: usize);

/// A many-token kernel: `ng` consecutive packed groups of `nb` blocks each × every
/// activation row of `acts` → `out[t·ld + g·ROWS + row]`, bit-identical to the tile kernels
/// (a layout's prompt path: see `x86::strip`).
///
/// # Safety
/// As [`TileFn`] for each row of `acts`.
pub(crate) type GemmFn =
    unsafe fn(nb: usize, ng: usize, w: *const u8, acts: &[&[u8]], out: *mut f32, ld: usize);

#[derive(Clone, Copy)]
enum Imp {
    Scalar,
    #[allow(dead_code)] // never built on non-x86 targets
    Simd(&'static [TileFn]),
}

/// The dot product of a packed layout, with its implementation chosen once.
#[derive(Clone, Copy)]
pub struct PackedDot {
    /// The layout.
    pub packed: PackedType,
    /// The activation type (Q8_K for Q4_K).
    pub act: GgmlType,
    /// The implementation in use.
    pub path: SimdPath,
    /// Tokens per tile-kernel call: 8 where the tile's accumulators fit the registers and
    /// it pays (Q4_Kx8 and the 512-bit tiles of the 32-value layouts on AVX-512 VNNI, 32
    /// registers: +4–11% GEMM; 16 tokens measured slower for MXFP4/Q8_0 at n_in 2048, their
    /// activation rows no longer fitting L1), else 4 (Q6_Kx8 at 8 tokens spills: −31%;
    /// AVX2 has 16 registers).
    pub tile_tokens: usize,
    imp: Imp,
    /// The layout's many-token kernel and the fewest tokens of a call it takes (the
    /// decoded-strip GEMMs on AVX-512 VNNI: `x86::strip`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    wide: Option<(GemmFn, usize)>,
}

impl std::fmt::Debug for PackedDot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedDot")
            .field("packed", &self.packed)
            .field("path", &self.path)
            .finish()
    }
}

impl PackedDot {
    /// The kernel for `packed` on the best path of this CPU.
    pub fn new(packed: PackedType) -> PackedDot {
        PackedDot::with_path(packed, crate::dot::best_path())
    }

    /// The kernel on a given path (falls back AVX512-VNNI → AVX2 → scalar as available;
    /// `path` of the result says what runs).
    pub fn with_path(packed: PackedType, path: SimdPath) -> PackedDot {
        let act = crate::dot::act_type_for(packed.source()).unwrap_or(GgmlType::Q8_K);
        #[cfg(target_arch = "x86_64")]
        if let Some((p, fns)) = x86::kernels(packed, path) {
            let tile_tokens = match (packed, p) {
                (
                    PackedType::Q4Kx8
                    | PackedType::Q5_0x8
                    | PackedType::Q8_0x8
                    | PackedType::Q4_0x8
                    | PackedType::IQ4NLx8
                    | PackedType::MXFP4x8,
                    SimdPath::Avx512Vnni,
                ) => MAX_TOKENS,
                _ => 4,
            }
            .min(fns.len());
            return PackedDot {
                packed,
                act,
                path: p,
                tile_tokens,
                imp: Imp::Simd(fns),
                wide: x86::wide_kernel(packed, p),
            };
        }
        let _ = path;
        PackedDot {
            packed,
            act,
            path: SimdPath::Scalar,
            tile_tokens: MAX_TOKENS,
            imp: Imp::Scalar,
            wide: None,
        }
    }

    /// One group of [`ROWS`] packed rows (`group`: [`PackedType::group_bytes`] bytes)
    /// against up to [`MAX_TOKENS`] activation rows (longer lists are split):
    /// `out[t][r] = Σ W[r]·a[t]`. Each value is the same whatever the other rows of the
    /// call (batch invariance).
    ///
    /// # Panics
    /// On lengths that do not fit `n_in` (a caller bug; shapes are validated at load).
    pub fn tile(&self, n_in: usize, group: &[u8], acts: &[&[u8]], out: &mut [[f32; ROWS]]) {
        let gb = self.packed.group_bytes(n_in);
        let ab = self.act.row_bytes(n_in as u64).map(|b| b as usize);
        assert!(
            gb == Some(group.len()) && acts.iter().all(|a| Some(a.len()) == ab) && acts.len() == out.len(),
            "PackedDot::tile: {} n_in {n_in}: group {} bytes (want {gb:?}), {} activation rows, {} outputs",
            self.packed.name(),
            group.len(),
            acts.len(),
            out.len()
        );
        // SAFETY: the lengths were checked just above; `out` holds acts.len() rows of
        // ROWS contiguous f32, so row stride ROWS covers exactly it.
        unsafe { self.tiles_unchecked(n_in, group, acts, out.as_mut_ptr() as *mut f32, ROWS) }
    }

    /// [`tile`](Self::tile) for several consecutive groups at once and without length
    /// checks, for callers that validated a whole matrix and its activation rows once:
    /// `groups` holds whole groups (g = 0, 1, …) and `out[t·ld + g·ROWS + r] = Σ W_g[r]·a[t]`.
    /// Per-token work on the activations (e.g. Q4_K's min sums) is done once per call
    /// for all its groups; the values are those of [`tile`](Self::tile), bit for bit.
    /// A call of many tokens (a prompt's) may run the layout's many-token kernel instead
    /// of tiles of [`tile_tokens`](Self::tile_tokens) (Q6_Kx8 on AVX-512 VNNI: the
    /// weights decoded once per strip for all the call's tokens), with the same values.
    ///
    /// # Safety
    /// `groups` must hold a multiple of [`PackedType::group_bytes`]`(n_in)` bytes, every
    /// `acts[t]` one activation row of `n_in` values of [`PackedDot::act`] as the
    /// activation quantizer writes it, and `out` must be valid for reads and writes at
    /// every `t·ld + g·ROWS + r` (t < acts.len(), r < ROWS), with `ld ≥ ng·ROWS` when
    /// there are several tokens (each token's outputs its own), aliasing neither input.
    pub unsafe fn tiles_unchecked(
        &self,
        n_in: usize,
        groups: &[u8],
        acts: &[&[u8]],
        out: *mut f32,
        ld: usize,
    ) {
        let nb = n_in / self.packed.source().block_size();
        let gb = self.packed.block_bytes() * nb;
        let ng = groups.len() / gb.max(1);
        debug_assert!(
            acts.len() <= 1 || ld >= ng * ROWS,
            "tiles_unchecked: ld {ld} < {ng} groups"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some((gemm, _)) = self.wide.filter(|&(_, min)| acts.len() >= min) {
            // SAFETY: the contract above is the many-token kernel's; `wide` was chosen for
            // a path this CPU has.
            unsafe { gemm(nb, ng, groups.as_ptr(), acts, out, ld) };
            return;
        }
        let w = self.tile_tokens;
        for (c, a) in acts.chunks(w).enumerate() {
            // SAFETY (both arms): token c·w + t's output row is within the caller's range.
            let o = unsafe { out.add(c * w * ld) };
            match self.imp {
                Imp::Scalar => {
                    for (g, group) in groups.chunks_exact(gb).enumerate() {
                        for (t, at) in a.iter().enumerate() {
                            let v = match self.packed {
                                PackedType::Q4Kx8 => q4k::dot_scalar(nb, group, at),
                                PackedType::Q6Kx8 => q6k::dot_scalar(nb, group, at),
                                PackedType::Q8_0x8 => legacy::dot_scalar(Kind::Q8_0, nb, group, at),
                                PackedType::Q5_0x8 => legacy::dot_scalar(Kind::Q5_0, nb, group, at),
                                PackedType::Q4_0x8 => legacy::dot_scalar(Kind::Q4_0, nb, group, at),
                                PackedType::IQ4NLx8 => {
                                    legacy::dot_scalar(Kind::Iq4Nl, nb, group, at)
                                }
                                PackedType::Q2Kx8 => q2k::dot_scalar(nb, group, at),
                                PackedType::Q3Kx8 => q3k::dot_scalar(nb, group, at),
                                PackedType::IQ4XSx8 => iq4xs::dot_scalar(nb, group, at),
                                PackedType::MXFP4x8 => {
                                    legacy::dot_scalar(Kind::Mxfp4, nb, group, at)
                                }
                                PackedType::IQ2XXSx8 => iq2xxs::dot_scalar(nb, group, at),
                                PackedType::IQ3XXSx8 => iq3xxs::dot_scalar(nb, group, at),
                                PackedType::IQ1Sx8 => iq1::dot_scalar_s(nb, group, at),
                                PackedType::IQ1Mx8 => iq1::dot_scalar_m(nb, group, at),
                                PackedType::IQ2Sx8 => iq2s::dot_scalar(nb, group, at),
                                PackedType::IQ2XSx8 => iq2xs::dot_scalar(nb, group, at),
                                PackedType::IQ3Sx8 => iq3s::dot_scalar(nb, group, at),
                                PackedType::TQ1_0x8 => scalar::dot_tq1_0x8(nb, group, at),
                                PackedType::TQ2_0x8 => scalar::dot_tq2_0x8(nb, group, at),
                            };
                            // SAFETY: per the contract.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    v.as_ptr(),
                                    o.add(t * ld + g * ROWS),
                                    ROWS,
                                )
                            };
                        }
                    }
                }
                Imp::Simd(fns) => {
                    let mut ptrs = [std::ptr::null::<u8>(); MAX_TOKENS];
                    for (p, ai) in ptrs.iter_mut().zip(a) {
                        *p = ai.as_ptr();
                    }
                    // SAFETY: lengths per the contract (`groups` holds ng groups of nb
                    // packed blocks, each activation row nb blocks, `out` writable at the
                    // kernel's offsets); CPU features were detected when `fns` was chosen.
                    unsafe { fns[a.len() - 1](nb, ng, groups.as_ptr(), ptrs.as_ptr(), o, ld) };
                }
            }
        }
    }
}

/// The scalar definitions (see the module docs).
pub mod scalar {
    pub use super::iq1::dot_scalar_m as dot_iq1mx8;
    pub use super::iq1::dot_scalar_s as dot_iq1sx8;
    pub use super::iq2s::dot_scalar as dot_iq2sx8;
    pub use super::iq2xs::dot_scalar as dot_iq2xsx8;
    pub use super::iq2xxs::dot_scalar as dot_iq2xxsx8;
    pub use super::iq3s::dot_scalar as dot_iq3sx8;
    pub use super::iq3xxs::dot_scalar as dot_iq3xxsx8;
    pub use super::iq4xs::dot_scalar as dot_iq4xsx8;
    pub use super::q2k::dot_scalar as dot_q2kx8;
    pub use super::q3k::dot_scalar as dot_q3kx8;
    pub use super::q4k::dot_scalar as dot_q4kx8;
    pub use super::q6k::dot_scalar as dot_q6kx8;

    /// Q8_0x8 × Q8_0.
    pub fn dot_q8_0x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::legacy::dot_scalar(super::Kind::Q8_0, nb, group, act)
    }

    /// Q5_0x8 × Q8_0.
    pub fn dot_q5_0x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::legacy::dot_scalar(super::Kind::Q5_0, nb, group, act)
    }

    /// Q4_0x8 × Q8_0.
    pub fn dot_q4_0x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::legacy::dot_scalar(super::Kind::Q4_0, nb, group, act)
    }

    /// TQ1_0x8 × Q8_K.
    pub fn dot_tq1_0x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::ternary::dot_scalar::<{ super::ternary::TQ1 }>(nb, group, act)
    }

    /// TQ2_0x8 × Q8_K.
    pub fn dot_tq2_0x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::ternary::dot_scalar::<{ super::ternary::TQ2 }>(nb, group, act)
    }

    /// MXFP4x8 × Q8_0.
    pub fn dot_mxfp4x8(nb: usize, group: &[u8], act: &[u8]) -> [f32; super::ROWS] {
        super::legacy::dot_scalar(super::Kind::Mxfp4, nb, group, act)
    }
}

/// Test hooks: per-block integers of the tile kernels vs the scalar definition. Not a
/// stable API.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// `[block][row] = [isum, msum]` of one packed group × one activation row (scalar).
    pub fn block_ints_scalar(
        packed: PackedType,
        n_in: usize,
        group: &[u8],
        act: &[u8],
    ) -> Vec<[[i32; 2]; ROWS]> {
        let nb = n_in / packed.source().block_size();
        match packed {
            PackedType::Q4Kx8 => q4k::ints_scalar(nb, group, act),
            PackedType::Q6Kx8 => q6k::ints_scalar(nb, group, act),
            PackedType::Q8_0x8 => legacy::ints_scalar(Kind::Q8_0, nb, group, act),
            PackedType::Q5_0x8 => legacy::ints_scalar(Kind::Q5_0, nb, group, act),
            PackedType::Q4_0x8 => legacy::ints_scalar(Kind::Q4_0, nb, group, act),
            PackedType::IQ4NLx8 => legacy::ints_scalar(Kind::Iq4Nl, nb, group, act),
            PackedType::Q2Kx8 => q2k::ints_scalar(nb, group, act),
            PackedType::Q3Kx8 => q3k::ints_scalar(nb, group, act),
            PackedType::IQ4XSx8 => iq4xs::ints_scalar(nb, group, act),
            PackedType::MXFP4x8 => legacy::ints_scalar(Kind::Mxfp4, nb, group, act),
            PackedType::IQ2XXSx8 => iq2xxs::ints_scalar(nb, group, act),
            PackedType::IQ3XXSx8 => iq3xxs::ints_scalar(nb, group, act),
            PackedType::IQ1Sx8 => iq1::ints_scalar_s(nb, group, act),
            PackedType::IQ1Mx8 => iq1::ints_scalar_m(nb, group, act),
            PackedType::IQ2Sx8 => iq2s::ints_scalar(nb, group, act),
            PackedType::IQ2XSx8 => iq2xs::ints_scalar(nb, group, act),
            PackedType::IQ3Sx8 => iq3s::ints_scalar(nb, group, act),
            PackedType::TQ1_0x8 => ternary::ints_scalar::<{ ternary::TQ1 }>(nb, group, act),
            PackedType::TQ2_0x8 => ternary::ints_scalar::<{ ternary::TQ2 }>(nb, group, act),
        }
    }

    /// The same integers from the SIMD block code on `path` (`None` if unavailable).
    pub fn block_ints_simd(
        packed: PackedType,
        path: SimdPath,
        n_in: usize,
        group: &[u8],
        act: &[u8],
    ) -> Option<Vec<[[i32; 2]; ROWS]>> {
        assert_eq!(packed.group_bytes(n_in), Some(group.len()));
        assert_eq!(
            crate::dot::act_type_for(packed.source()).and_then(|t| t.row_bytes(n_in as u64)),
            Some(act.len() as u64)
        );
        let nb = n_in / packed.source().block_size();
        #[cfg(target_arch = "x86_64")]
        return x86::block_ints(packed, path, nb, group, act);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (path, nb);
            None
        }
    }
}
