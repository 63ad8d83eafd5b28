//! Dequantization: ggml blocks → f32.
//!
//! Every formula is evaluated in f32 in the same order as ggml's `dequantize_row_*`
//! (and gguf-py's numpy port), so the results are bit-identical to the reference:
//! products of an f16 scale with small integers, then at most one subtraction.
//!
//! Three levels of API:
//! - per block, infallible: `BlockQ4K::dequantize(&self, &mut [f32; 256])`;
//! - per typed slice: [`dequantize_q4_k`]`(&[BlockQ4K], &mut [f32])`, checking lengths;
//! - by type id on raw bytes: [`dequantize`], [`dequantize_row`].

use crate::blocks::*;
use crate::error::{QuantError, TypeList};
use crate::iq1::{BlockIQ1M, BlockIQ1S};
use crate::mxfp4::BlockMXFP4;
use crate::ternary::{BlockTQ1_0, BlockTQ2_0};
use crate::GgmlType;

/// The types [`dequantize`] decodes, in ggml id order.
pub const DEQUANTIZE_TYPES: [GgmlType; 25] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS,
        IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M, BF16, TQ1_0, TQ2_0, MXFP4,
    ]
};

/// Whether [`dequantize`] can decode tensors of this type (i.e. whether a model whose
/// weights use it can be computed).
pub fn is_supported(ty: GgmlType) -> bool {
    DEQUANTIZE_TYPES.contains(&ty)
}

/// The error for a type outside [`DEQUANTIZE_TYPES`].
pub fn unsupported(ty: GgmlType) -> QuantError {
    QuantError::Unsupported {
        ty,
        supported: TypeList(&DEQUANTIZE_TYPES),
    }
}

/// Checks that `data` encodes exactly `n_values` values of type `ty`.
pub fn check_data_size(ty: GgmlType, data_len: usize, n_values: usize) -> Result<(), QuantError> {
    let bs = ty.block_size();
    if !n_values.is_multiple_of(bs) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            n_values,
            block_size: bs,
        });
    }
    let expected = (n_values / bs).saturating_mul(ty.type_size());
    if data_len != expected {
        return Err(QuantError::DataSize {
            ty,
            n_values,
            expected,
            actual: data_len,
        });
    }
    Ok(())
}

/// Reinterprets tensor bytes as blocks (no copy). `data.len()` must be a whole number of
/// blocks; every weight block has alignment 1, only [`BlockQ8K`] needs 4.
pub fn cast_blocks<B: Block>(data: &[u8]) -> Result<&[B], QuantError> {
    let size = std::mem::size_of::<B>();
    if !data.len().is_multiple_of(size) {
        return Err(QuantError::DataSize {
            ty: B::TYPE,
            n_values: data.len() / size * B::VALUES,
            expected: data.len() / size * size,
            actual: data.len(),
        });
    }
    bytemuck::try_cast_slice(data).map_err(|_| QuantError::DataSize {
        // Only reachable for a misaligned Q8_K buffer.
        ty: B::TYPE,
        n_values: data.len() / size * B::VALUES,
        expected: data.len(),
        actual: data.len(),
    })
}

/// Decodes `out.len()` values of type `ty` from `data` (which must hold exactly that many).
///
/// Errors: the type is not in [`DEQUANTIZE_TYPES`] (the message lists the supported
/// ones), `out.len()` is not a multiple of the block size, or `data` has the wrong length.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !is_supported(ty) {
        return Err(unsupported(ty));
    }
    check_data_size(ty, data.len(), out.len())?;
    match ty {
        F32 => dequantize_f32(data, out),
        F16 => dequantize_f16(data, out),
        BF16 => dequantize_bf16(data, out),
        Q4_0 => dequantize_q4_0(cast_blocks(data)?, out),
        Q4_1 => dequantize_q4_1(cast_blocks(data)?, out),
        Q5_0 => dequantize_q5_0(cast_blocks(data)?, out),
        Q5_1 => dequantize_q5_1(cast_blocks(data)?, out),
        Q8_0 => dequantize_q8_0(cast_blocks(data)?, out),
        Q2_K => dequantize_q2_k(cast_blocks(data)?, out),
        Q3_K => dequantize_q3_k(cast_blocks(data)?, out),
        Q4_K => dequantize_q4_k(cast_blocks(data)?, out),
        Q5_K => dequantize_q5_k(cast_blocks(data)?, out),
        Q6_K => dequantize_q6_k(cast_blocks(data)?, out),
        IQ4_NL => dequantize_iq4_nl(cast_blocks(data)?, out),
        IQ4_XS => dequantize_iq4_xs(cast_blocks(data)?, out),
        IQ1_S => dequantize_iq1_s(cast_blocks(data)?, out),
        IQ1_M => dequantize_iq1_m(cast_blocks(data)?, out),
        TQ1_0 => dequantize_tq1_0(cast_blocks(data)?, out),
        TQ2_0 => dequantize_tq2_0(cast_blocks(data)?, out),
        MXFP4 => dequantize_mxfp4(cast_blocks(data)?, out),
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => iq::dequantize_iq(ty, data, out),
        _ => Err(unsupported(ty)),
    }
}

/// Decodes row `row` of a 2-D tensor of type `ty` whose rows hold `out.len()` values
/// (ggml `ne[0]`), i.e. the bytes `data[row * row_bytes .. (row + 1) * row_bytes]`.
pub fn dequantize_row(
    ty: GgmlType,
    data: &[u8],
    row: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if !is_supported(ty) {
        return Err(unsupported(ty));
    }
    let n_per_row = out.len();
    let bs = ty.block_size();
    if !n_per_row.is_multiple_of(bs) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            n_values: n_per_row,
            block_size: bs,
        });
    }
    let row_bytes = n_per_row / bs * ty.type_size();
    let n_rows = data.len().checked_div(row_bytes).unwrap_or(0);
    if row >= n_rows {
        return Err(QuantError::RowOutOfRange {
            ty,
            row,
            n_rows,
            n_per_row,
        });
    }
    dequantize(ty, &data[row * row_bytes..(row + 1) * row_bytes], out)
}

// ---------------------------------------------------------------------------------------
// Plain float types.

/// Little-endian f32 bytes → f32.
pub fn dequantize_f32(data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_data_size(GgmlType::F32, data.len(), out.len())?;
    for (y, b) in out.iter_mut().zip(data.chunks_exact(4)) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Little-endian IEEE half bytes → f32 (exact).
pub fn dequantize_f16(data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use half::slice::HalfFloatSliceExt;
    check_data_size(GgmlType::F16, data.len(), out.len())?;
    // Stage through an aligned buffer: tensor bytes need not be 2-aligned, and the
    // slice conversion uses F16C when the CPU has it.
    let mut buf = [half::f16::ZERO; 256];
    for (ys, bs) in out.chunks_mut(256).zip(data.chunks(512)) {
        let n = ys.len();
        for (h, b) in buf[..n].iter_mut().zip(bs.chunks_exact(2)) {
            *h = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        buf[..n].convert_to_f32_slice(ys);
    }
    Ok(())
}

/// Little-endian bfloat16 bytes → f32 (exact: the bits shifted up).
pub fn dequantize_bf16(data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_data_size(GgmlType::BF16, data.len(), out.len())?;
    for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
        *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Per-block decoders.

impl BlockQ4_0 {
    /// y = d·(q − 8).
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..QK / 2 {
            let b = self.qs[j];
            y[j] = ((b & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// y = d·q + m.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for j in 0..QK / 2 {
            let b = self.qs[j];
            y[j] = (b & 0x0F) as f32 * d + m;
            y[j + QK / 2] = (b >> 4) as f32 * d + m;
        }
    }
}

impl BlockQ5_0 {
    /// y = d·(q − 16), the fifth bit of value j in bit j of `qh`.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let b = self.qs[j];
            y[j] = (((b & 0x0F) | h0) as i32 - 16) as f32 * d;
            y[j + QK / 2] = (((b >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

impl BlockQ5_1 {
    /// y = d·q + m, bits as Q5_0.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let b = self.qs[j];
            y[j] = ((b & 0x0F) | h0) as f32 * d + m;
            y[j + QK / 2] = ((b >> 4) | h1) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// y = d·q.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl BlockQ8_1 {
    /// y = d·q (`s` is only a cache of d·Σq for dot products).
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl BlockQ2K {
    /// y = d·(sc & 15)·q − dmin·(sc >> 4) per sub-block of 16.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let mut out = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &self.qs[32 * half..32 * half + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let sc = self.scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        y[out] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                }
            }
        }
    }
}

/// Q3_K's 16 signed 6-bit scales (−32..32) from their 12-byte packing: low 4 bits in
/// bytes 0..8 (two per byte), high 2 bits in bytes 8..12.
#[inline]
pub fn q3_k_scales(packed: &[u8; K_SCALE_SIZE]) -> [i8; 16] {
    let mut sc = [0i8; 16];
    for (j, s) in sc.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0xF
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | (high << 4)) as i8 - 32;
    }
    sc
}

impl BlockQ3K {
    /// y = d·sc·(q − 4·!hbit) per sub-block of 16.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d_all = self.d.to_f32();
        let scales = q3_k_scales(&self.scales);
        let mut out = 0;
        let mut is = 0;
        let mut m: u8 = 1;
        for half in 0..2 {
            let q = &self.qs[32 * half..32 * half + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d_all * (scales[is] as i32) as f32;
                    is += 1;
                    for l in 0..16 {
                        let i = l + 16 * part;
                        let low = ((q[i] >> shift) & 3) as i32;
                        let sub = if self.hmask[i] & m != 0 { 0 } else { 4 };
                        y[out] = dl * (low - sub) as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// Scale and min `j` (0..8) of Q4_K / Q5_K from their 12-byte packing (ggml's
/// `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl BlockQ4K {
    /// y = d·sc·q − dmin·m per sub-block of 32.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for k in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * k, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * k + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &self.qs[32 * k..32 * k + 32];
            let y = &mut y[64 * k..64 * k + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl BlockQ5K {
    /// y = d·sc·q − dmin·m per sub-block of 32, q with its fifth bit from `qh`.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for k in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * k, &self.scales);
            let (sc2, m2) = scale_min_k4(2 * k + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * k);
            let u2 = 2u8 << (2 * k);
            let ql = &self.qs[32 * k..32 * k + 32];
            let y = &mut y[64 * k..64 * k + 64];
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

impl BlockQ6K {
    /// y = d·sc·(q − 32) per sub-block of 16.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let sc = &self.scales[8 * half..8 * half + 8];
            let y = &mut y[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl BlockQ8K {
    /// y = d·q.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

impl BlockIQ4NL {
    /// y = d·`KVALUES_IQ4NL[q]`.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = self.d.to_f32();
        for j in 0..QK / 2 {
            y[j] = d * KVALUES_IQ4NL[(self.qs[j] & 0xF) as usize] as f32;
            y[j + QK / 2] = d * KVALUES_IQ4NL[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

impl BlockIQ4XS {
    /// y = d·(ls − 32)·`KVALUES_IQ4NL[q]` per sub-block of 32.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        let scales_h = u16::from_le_bytes(self.scales_h);
        for ib in 0..QK_K / 32 {
            let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
                | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            let qs = &self.qs[16 * ib..16 * ib + 16];
            let y = &mut y[32 * ib..32 * ib + 32];
            for j in 0..16 {
                y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed-slice decoders.

fn check_block_count<B: Block>(n_blocks: usize, out_len: usize) -> Result<(), QuantError> {
    let expected = n_blocks * B::VALUES;
    if expected != out_len {
        return Err(QuantError::BlockCount {
            ty: B::TYPE,
            n_blocks,
            expected,
            actual: out_len,
        });
    }
    Ok(())
}

/// Block types that decode to f32: generic access to the per-type slice decoders.
pub trait Dequantize: Block {
    /// Decodes `blocks` into `out`, which must hold exactly `blocks.len() * VALUES` values.
    fn dequantize_slice(blocks: &[Self], out: &mut [f32]) -> Result<(), QuantError>;
}

macro_rules! slice_decoder {
    ($($(#[$doc:meta])* $name:ident: $b:ty, $n:expr;)*) => {$(
        $(#[$doc])*
        pub fn $name(blocks: &[$b], out: &mut [f32]) -> Result<(), QuantError> {
            check_block_count::<$b>(blocks.len(), out.len())?;
            let (chunks, _) = out.as_chunks_mut::<{ $n }>();
            for (b, y) in blocks.iter().zip(chunks) {
                b.dequantize(y);
            }
            Ok(())
        }

        impl Dequantize for $b {
            fn dequantize_slice(blocks: &[Self], out: &mut [f32]) -> Result<(), QuantError> {
                $name(blocks, out)
            }
        }
    )*};
}

slice_decoder! {
    /// Q4_0 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q4_0: BlockQ4_0, QK;
    /// Q4_1 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q4_1: BlockQ4_1, QK;
    /// Q5_0 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q5_0: BlockQ5_0, QK;
    /// Q5_1 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q5_1: BlockQ5_1, QK;
    /// Q8_0 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q8_0: BlockQ8_0, QK;
    /// Q8_1 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_q8_1: BlockQ8_1, QK;
    /// Q2_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q2_k: BlockQ2K, QK_K;
    /// Q3_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q3_k: BlockQ3K, QK_K;
    /// Q4_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q4_k: BlockQ4K, QK_K;
    /// Q5_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q5_k: BlockQ5K, QK_K;
    /// Q6_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q6_k: BlockQ6K, QK_K;
    /// Q8_K blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_q8_k: BlockQ8K, QK_K;
    /// IQ4_NL blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_iq4_nl: BlockIQ4NL, QK;
    /// IQ4_XS blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq4_xs: BlockIQ4XS, QK_K;
    /// IQ1_S blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq1_s: BlockIQ1S, QK_K;
    /// IQ1_M blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq1_m: BlockIQ1M, QK_K;
    /// TQ1_0 blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_tq1_0: BlockTQ1_0, QK_K;
    /// TQ2_0 blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_tq2_0: BlockTQ2_0, QK_K;
    /// MXFP4 blocks → f32 (`out.len()` = 32 · blocks).
    dequantize_mxfp4: BlockMXFP4, QK;
}

// The 2- and 3-bit i-quants (after `slice_decoder!`, which they use).
mod iq;
pub use iq::*;
