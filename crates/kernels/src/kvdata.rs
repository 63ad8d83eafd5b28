//! Element types of KV-cache rows (llama.cpp's `--cache-type-k/-v`: f32, f16, bf16,
//! q8_0, and ik_llama.cpp's per-row int8 q8_KV), the buffers that hold them, and their conversion back to f32 for the attention
//! kernel, a block of cached rows at a time (AVX2/F16C, with a scalar reference that gives
//! the same bits: every conversion is exact or one f32 multiply).

use quant::blocks::{BlockQ8_0, Half};

/// Values per Q8_0 block.
const QK: usize = 32;

/// The element type of a KV cache's keys or values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// 4 bytes per value.
    #[default]
    F32,
    /// IEEE half, 2 bytes (rounded to nearest even).
    F16,
    /// bfloat16, 2 bytes (f32's exponent, 8 bits of mantissa).
    Bf16,
    /// Blocks of 32 values as int8 with one f16 scale: 34 bytes per 32 values.
    Q8_0,
    /// Whole rows (one head's key or value, or an MLA latent row) as int8 with one f32
    /// scale per row (`d = max|x|/127`), stored offset by 128: `width + 4` bytes per row.
    /// The default mode's int8 attention reads it as it is (ik_llama.cpp's `q8_KV`).
    Q8Kv,
}

impl KvType {
    /// Every type, in the order the flags list them.
    pub const ALL: [KvType; 5] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8_0,
        KvType::Q8Kv,
    ];

    /// llama.cpp's spelling.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q8Kv => "q8_KV",
        }
    }

    /// Values per block: rows of this type are whole blocks (32 for q8_0).
    pub fn block(self) -> usize {
        match self {
            KvType::Q8_0 => QK,
            _ => 1,
        }
    }

    /// Bytes of `n` values stored in rows of `row` values (`None` when `n` is not whole
    /// blocks — whole rows for q8_KV — or the size overflows).
    pub fn bytes(self, n: usize, row: usize) -> Option<usize> {
        if n % self.block() != 0 {
            return None;
        }
        match self {
            KvType::F32 => n.checked_mul(4),
            KvType::F16 | KvType::Bf16 => n.checked_mul(2),
            KvType::Q8_0 => (n / QK).checked_mul(std::mem::size_of::<BlockQ8_0>()),
            KvType::Q8Kv => {
                if row == 0 || n % row != 0 {
                    return None;
                }
                (n / row).checked_mul(4)?.checked_add(n)
            }
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    /// llama.cpp's names, any case.
    fn from_str(s: &str) -> Result<KvType, String> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "'{s}' is not a KV-cache type this engine stores (one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// A KV-cache buffer: values of one type, addressed by value index.
pub enum KvBuf {
    F32(Vec<f32>),
    /// f16 bits.
    F16(Vec<u16>),
    /// bf16 bits.
    Bf16(Vec<u16>),
    Q8_0(Vec<BlockQ8_0>),
    /// Rows of `row` values: bytes (value + 128) and one scale per row.
    Q8Kv {
        row: usize,
        q: Vec<u8>,
        d: Vec<f32>,
    },
}

impl KvBuf {
    /// `n` zero values of type `ty` (`n` whole blocks of it; q8_KV: whole rows of `row`
    /// values, the width its scales cover). Zeroed allocations, so the OS supplies the pages
    /// as they are written.
    pub fn zeroed(ty: KvType, n: usize, row: usize) -> KvBuf {
        assert!(
            n % ty.block() == 0,
            "KvBuf: {n} values of {ty} are not whole blocks"
        );
        if ty == KvType::Q8Kv {
            assert!(
                row > 0 && n % row == 0,
                "KvBuf: {n} values are not whole rows of {row}"
            );
            return KvBuf::Q8Kv {
                row,
                q: vec![128; n],
                d: vec![0.0; n / row],
            };
        }
        match ty {
            KvType::F32 => KvBuf::F32(vec![0.0; n]),
            KvType::F16 => KvBuf::F16(vec![0; n]),
            KvType::Bf16 => KvBuf::Bf16(vec![0; n]),
            KvType::Q8_0 => KvBuf::Q8_0(bytemuck::zeroed_vec(n / QK)),
            KvType::Q8Kv => unreachable!("returned above"),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.len() * 4,
            KvBuf::F16(v) | KvBuf::Bf16(v) => v.len() * 2,
            KvBuf::Q8_0(v) => std::mem::size_of_val(v.as_slice()),
            KvBuf::Q8Kv { q, d, .. } => q.len() + 4 * d.len(),
        }
    }

    /// The values, read-only.
    pub fn data(&self) -> KvData<'_> {
        match self {
            KvBuf::F32(v) => KvData::F32(v),
            KvBuf::F16(v) => KvData::F16(v),
            KvBuf::Bf16(v) => KvData::Bf16(v),
            KvBuf::Q8_0(v) => KvData::Q8_0(v),
            KvBuf::Q8Kv { row, q, d } => KvData::Q8Kv { row: *row, q, d },
        }
    }

    /// Fills values `prefix..to` with copies of values `0..prefix`, over and over (`prefix`
    /// and `to` whole blocks, and q8_KV rows): what a benchmark's synthetic cache fill
    /// stores (see `KvCache::repeat_prefix`).
    pub fn repeat_prefix(&mut self, prefix: usize, to: usize) {
        let unit = match &*self {
            KvBuf::Q8Kv { row, .. } => *row,
            other => other.ty().block(),
        };
        assert!(
            prefix > 0 && prefix % unit == 0 && to % unit == 0,
            "KvBuf: repeats whole blocks and rows"
        );
        match self {
            KvBuf::F32(v) => repeat(v, prefix, to),
            KvBuf::F16(v) | KvBuf::Bf16(v) => repeat(v, prefix, to),
            KvBuf::Q8_0(v) => repeat(v, prefix / QK, to / QK),
            KvBuf::Q8Kv { row, q, d } => {
                let row = *row;
                repeat(q, prefix, to);
                repeat(d, prefix / row, to / row);
            }
        }
    }

    /// The element type.
    pub fn ty(&self) -> KvType {
        self.data().ty()
    }

    /// Stores `src` as values `at..at + src.len()` (q8_0: `at` and the length whole
    /// blocks, each quantized as ggml's `quantize_row_q8_0_ref` does: `d = max|x|/127`).
    pub fn write(&mut self, at: usize, src: &[f32]) {
        let end = at + src.len();
        match self {
            KvBuf::F32(v) => v[at..end].copy_from_slice(src),
            KvBuf::F16(v) => {
                for (d, &x) in v[at..end].iter_mut().zip(src) {
                    *d = half::f16::from_f32(x).to_bits();
                }
            }
            KvBuf::Bf16(v) => {
                for (d, &x) in v[at..end].iter_mut().zip(src) {
                    *d = quant::quantize::f32_to_bf16_bits(x);
                }
            }
            KvBuf::Q8_0(v) => {
                assert!(
                    at % QK == 0 && src.len() % QK == 0,
                    "KvBuf: q8_0 writes whole blocks"
                );
                for (b, x) in v[at / QK..end / QK].iter_mut().zip(src.chunks_exact(QK)) {
                    *b = quant::quantize::quantize_block_q8_0(x.try_into().expect("32 values"));
                }
            }
            KvBuf::Q8Kv { row, q, d } => {
                let row = *row;
                assert!(
                    at % row == 0 && src.len() % row == 0,
                    "KvBuf: q8_KV writes whole rows"
                );
                let (r0, rows) = (at / row, src.len() / row);
                quantize_q8kv_rows(src, row, &mut q[at..at + src.len()], &mut d[r0..r0 + rows]);
            }
        }
    }
}

/// `v[prefix..to]` = `v[0..prefix]` repeated (the filled part doubles with each copy).
pub fn repeat<T: Copy>(v: &mut [T], prefix: usize, to: usize) {
    let mut filled = prefix;
    while filled < to {
        let n = filled.min(to - filled);
        v.copy_within(0..n, filled);
        filled += n;
    }
}

/// Cached values of one type, addressed by value index.
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    Bf16(&'a [u16]),
    Q8_0(&'a [BlockQ8_0]),
    /// Rows of `row` values: value + 128 as bytes, one scale per row.
    Q8Kv {
        row: usize,
        q: &'a [u8],
        d: &'a [f32],
    },
}

impl<'a> From<&'a [f32]> for KvData<'a> {
    fn from(v: &'a [f32]) -> KvData<'a> {
        KvData::F32(v)
    }
}

impl<'a> From<&'a Vec<f32>> for KvData<'a> {
    fn from(v: &'a Vec<f32>) -> KvData<'a> {
        KvData::F32(v)
    }
}

impl<'a> KvData<'a> {
    /// The element type.
    pub fn ty(&self) -> KvType {
        match self {
            KvData::F32(_) => KvType::F32,
            KvData::F16(_) => KvType::F16,
            KvData::Bf16(_) => KvType::Bf16,
            KvData::Q8_0(_) => KvType::Q8_0,
            KvData::Q8Kv { .. } => KvType::Q8Kv,
        }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(v) => v.len(),
            KvData::F16(v) | KvData::Bf16(v) => v.len(),
            KvData::Q8_0(v) => v.len() * QK,
            KvData::Q8Kv { q, .. } => q.len(),
        }
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values from `at` on (q8_0: `at` a whole number of blocks).
    pub fn skip(self, at: usize) -> KvData<'a> {
        match self {
            KvData::F32(v) => KvData::F32(&v[at..]),
            KvData::F16(v) => KvData::F16(&v[at..]),
            KvData::Bf16(v) => KvData::Bf16(&v[at..]),
            KvData::Q8_0(v) => {
                assert!(at % QK == 0, "KvData: a q8_0 view starts on a block");
                KvData::Q8_0(&v[at / QK..])
            }
            KvData::Q8Kv { row, q, d } => {
                assert!(at % row == 0, "KvData: a q8_KV view starts on a row");
                KvData::Q8Kv {
                    row,
                    q: &q[at..],
                    d: &d[at / row..],
                }
            }
        }
    }

    /// Whether `self` and `other` are the same values (same type, start and length): an
    /// MLA cache whose rows are both the keys and the values.
    pub fn same_as(&self, other: &KvData<'_>) -> bool {
        fn same<T>(a: &[T], b: &[T]) -> bool {
            std::ptr::eq(a, b)
        }
        match (self, other) {
            (KvData::F32(a), KvData::F32(b)) => same(a, b),
            (KvData::F16(a), KvData::F16(b)) | (KvData::Bf16(a), KvData::Bf16(b)) => same(a, b),
            (KvData::Q8_0(a), KvData::Q8_0(b)) => same(a, b),
            (KvData::Q8Kv { q: a, .. }, KvData::Q8Kv { q: b, .. }) => same(a, b),
            _ => false,
        }
    }

    /// The f32 values when the type is f32 (the kernel reads them in place).
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match *self {
            KvData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// `dst = values[at .. at + dst.len()]` as f32 (q8_0: `at` and the length whole
    /// blocks). SIMD where the CPU has it; [`KvData::read_scalar`] gives the same bits.
    pub fn read(&self, at: usize, dst: &mut [f32]) {
        let n = dst.len();
        assert!(at + n <= self.len(), "KvData::read: values out of range");
        #[cfg(target_arch = "x86_64")]
        if crate::simd::has_avx2_fma() {
            match self {
                KvData::F16(v) if has_f16c() => {
                    // SAFETY: AVX2 and F16C checked at run time; `v[at..at + n]` is in range.
                    unsafe { avx2::f16_to_f32(&v[at..at + n], dst) };
                    return;
                }
                KvData::Bf16(v) => {
                    // SAFETY: AVX2 checked at run time; `v[at..at + n]` is in range.
                    unsafe { avx2::bf16_to_f32(&v[at..at + n], dst) };
                    return;
                }
                KvData::Q8_0(v) => {
                    assert!(at % QK == 0 && n % QK == 0, "KvData::read: q8_0 blocks");
                    // SAFETY: AVX2 checked at run time; whole blocks in range.
                    unsafe { avx2::q8_0_to_f32(&v[at / QK..(at + n) / QK], dst) };
                    return;
                }
                KvData::Q8Kv { row, q, d } => {
                    // Row by row: each part of dst one scale.
                    let mut i = 0;
                    while i < n {
                        let r = (at + i) / row;
                        let len = ((r + 1) * row - (at + i)).min(n - i);
                        // SAFETY: AVX2 checked at run time; q[at + i..][..len] and
                        // dst[i..][..len] are in range (at + n ≤ len(), asserted above).
                        unsafe {
                            avx2::q8kv_to_f32(&q[at + i..at + i + len], d[r], &mut dst[i..i + len])
                        };
                        i += len;
                    }
                    return;
                }
                _ => {}
            }
        }
        self.read_scalar(at, dst)
    }

    /// [`KvData::read`] without SIMD: the reference.
    pub fn read_scalar(&self, at: usize, dst: &mut [f32]) {
        let n = dst.len();
        match self {
            KvData::F32(v) => dst.copy_from_slice(&v[at..at + n]),
            KvData::F16(v) => {
                for (d, &h) in dst.iter_mut().zip(&v[at..at + n]) {
                    *d = half::f16::from_bits(h).to_f32();
                }
            }
            KvData::Bf16(v) => {
                for (d, &h) in dst.iter_mut().zip(&v[at..at + n]) {
                    *d = f32::from_bits((h as u32) << 16);
                }
            }
            KvData::Q8_0(v) => {
                assert!(at % QK == 0 && n % QK == 0, "KvData::read: q8_0 blocks");
                for (b, d) in v[at / QK..(at + n) / QK]
                    .iter()
                    .zip(dst.chunks_exact_mut(QK))
                {
                    let s = half_to_f32(b.d);
                    for (x, &q) in d.iter_mut().zip(&b.qs) {
                        *x = s * q as f32;
                    }
                }
            }
            KvData::Q8Kv { row, q, d } => {
                for (i, x) in dst.iter_mut().enumerate() {
                    let at = at + i;
                    *x = d[at / row] * (q[at] as i32 - 128) as f32;
                }
            }
        }
    }
}

/// `src`'s rows of `row` values in the q8_KV form: bytes (value + 128) into `q` (as long as
/// `src`), one scale per row into `d`.
pub fn quantize_q8kv_rows(src: &[f32], row: usize, q: &mut [u8], d: &mut [f32]) {
    assert!(
        row > 0 && src.len() % row == 0 && q.len() == src.len() && d.len() == src.len() / row,
        "quantize_q8kv_rows: whole rows"
    );
    for ((x, out), scale) in src.chunks_exact(row).zip(q.chunks_exact_mut(row)).zip(d) {
        (*scale, _) = quantize_i8(x, out, true);
    }
}

/// Quantizes `x` into `out` (as long): `x ≈ d·out` with `d = max|x|/127`, rounding to
/// nearest even. With `offset`, stores `out + 128` as unsigned bytes (the q8_KV form);
/// otherwise the signed values' bytes. Returns `(d, Σ out)` (the signed values' sum). AVX-512
/// where the CPU has it; [`quantize_i8_scalar`] gives the same bytes.
pub fn quantize_i8(x: &[f32], out: &mut [u8], offset: bool) -> (f32, i32) {
    assert_eq!(out.len(), x.len(), "quantize_i8: one byte per value");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512vl() && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 F/VL/BW checked at run time; out holds x.len() bytes.
        return unsafe { avx512::quantize_i8(x, out, offset) };
    }
    quantize_i8_scalar(x, out, offset)
}

/// [`quantize_i8`] without SIMD: the definition.
pub fn quantize_i8_scalar(x: &[f32], out: &mut [u8], offset: bool) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let base = if offset { 128u8 } else { 0 };
    let mut sum = 0i32;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i32;
        sum += q;
        *o = (q as i8 as u8).wrapping_add(base);
    }
    (d, sum)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::quantize_i8`].
    ///
    /// # Safety
    /// AVX-512 F/VL/BW; `out.len() == x.len()`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    pub unsafe fn quantize_i8(x: &[f32], out: &mut [u8], offset: bool) -> (f32, i32) {
        let n = x.len();
        let mask = |i: usize| -> __mmask16 {
            let left = n - i;
            if left >= 16 {
                !0
            } else {
                (1u16 << left) - 1
            }
        };
        // SAFETY: masked loads and stores of the lanes below n.
        unsafe {
            let mut m = _mm512_setzero_ps();
            for i in (0..n).step_by(16) {
                let v = _mm512_maskz_loadu_ps(mask(i), x.as_ptr().add(i));
                m = _mm512_max_ps(m, _mm512_abs_ps(v));
            }
            let amax = _mm512_reduce_max_ps(m);
            let d = amax / 127.0;
            let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let flip = _mm_set1_epi8(if offset { -128 } else { 0 });
            let mut sum = _mm512_setzero_si512();
            for i in (0..n).step_by(16) {
                let k = mask(i);
                let v = _mm512_maskz_loadu_ps(k, x.as_ptr().add(i));
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(v, id));
                sum = _mm512_add_epi32(sum, q);
                let b = _mm_xor_si128(_mm512_cvtsepi32_epi8(q), flip);
                _mm_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), k, b);
            }
            (d, _mm512_reduce_add_epi32(sum))
        }
    }
}

fn half_to_f32(h: Half) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(h.0)).to_f32()
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static F16C: AtomicU8 = AtomicU8::new(0);
    match F16C.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = std::is_x86_feature_detected!("f16c");
            F16C.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{half_to_f32, BlockQ8_0, QK};
    use std::arch::x86_64::*;

    /// # Safety
    /// Needs AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        // SAFETY: 8 values at i ≤ n − 8 of both slices.
        unsafe {
            while i + 8 <= n {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                i += 8;
            }
        }
        for (d, &h) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = half::f16::from_bits(h).to_f32();
        }
    }

    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        // SAFETY: 8 values at i ≤ n − 8 of both slices.
        unsafe {
            while i + 8 <= n {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                let w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(w));
                i += 8;
            }
        }
        for (d, &h) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = f32::from_bits((h as u32) << 16);
        }
    }

    /// # Safety
    /// Needs AVX2; `dst` holds `32 · src.len()` values.
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_0_to_f32(src: &[BlockQ8_0], dst: &mut [f32]) {
        assert!(dst.len() >= src.len() * QK);
        for (b, d) in src.iter().zip(dst.chunks_exact_mut(QK)) {
            let s = _mm256_set1_ps(half_to_f32(b.d));
            // SAFETY: 4 × 8 int8 values of the block's 32, stored to 4 × 8 of `d`'s 32.
            unsafe {
                for k in 0..4 {
                    let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * k) as *const __m128i);
                    let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    _mm256_storeu_ps(d.as_mut_ptr().add(8 * k), _mm256_mul_ps(s, f));
                }
            }
        }
    }

    /// `dst[i] = d · (src[i] − 128)` (q8_KV bytes of one row).
    ///
    /// # Safety
    /// Needs AVX2; `dst` is as long as `src`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8kv_to_f32(src: &[u8], d: f32, dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        let s = _mm256_set1_ps(d);
        let off = _mm256_set1_epi32(128);
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            // SAFETY: 8 bytes at i ≤ len − 8, 8 floats likewise.
            unsafe {
                let q = _mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i);
                let v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(q), off);
                _mm256_storeu_ps(
                    dst.as_mut_ptr().add(i),
                    _mm256_mul_ps(s, _mm256_cvtepi32_ps(v)),
                );
            }
        }
        for i in n8..src.len() {
            dst[i] = d * (src[i] as i32 - 128) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-3.0..3.0)).collect()
    }

    /// A synthetic fill: every value at position p reads as the value at p mod the
    /// prefix, for every type (rows of 64 values, 3 positions repeated to 11).
    #[test]
    fn repeat_prefix_copies_whole_rows_of_every_type() {
        let (row, held, to) = (64, 3, 11);
        for t in KvType::ALL {
            let mut b = KvBuf::zeroed(t, 16 * row, row);
            b.write(0, &values(held * row, 7));
            b.repeat_prefix(held * row, to * row);
            let (mut want, mut got) = (vec![0f32; row], vec![0f32; row]);
            for p in 0..to {
                b.data().read((p % held) * row, &mut want);
                b.data().read(p * row, &mut got);
                assert_eq!(got, want, "{t}: position {p}");
            }
            b.data().read(to * row, &mut got);
            assert!(got.iter().all(|&x| x == 0.0), "{t}: past `to` untouched");
        }
    }

    #[test]
    fn names_parse_and_bad_ones_say_which_exist() {
        for t in KvType::ALL {
            assert_eq!(t.name().parse::<KvType>(), Ok(t));
            assert_eq!(t.name().to_uppercase().parse::<KvType>(), Ok(t));
        }
        let e = "q4_0".parse::<KvType>().unwrap_err();
        assert!(
            e.contains("'q4_0'") && e.contains("f32, f16, bf16, q8_0, q8_KV"),
            "{e}"
        );
    }

    #[test]
    fn bytes_per_value() {
        assert_eq!(KvType::F32.bytes(576, 64), Some(2304));
        assert_eq!(KvType::F16.bytes(576, 64), Some(1152));
        assert_eq!(KvType::Bf16.bytes(576, 64), Some(1152));
        assert_eq!(KvType::Q8_0.bytes(576, 64), Some(612));
        assert_eq!(KvType::Q8_0.bytes(40, 64), None);
        assert_eq!(KvType::F32.bytes(usize::MAX, 64), None);
        // q8_KV: a byte per value and 4 per row; only whole rows.
        assert_eq!(KvType::Q8Kv.bytes(576, 576), Some(580));
        assert_eq!(KvType::Q8Kv.bytes(1024, 128), Some(1056));
        assert_eq!(KvType::Q8Kv.bytes(576, 64), Some(612));
        assert_eq!(KvType::Q8Kv.bytes(100, 64), None);
        assert_eq!(KvType::Q8Kv.bytes(64, 0), None);
        assert_eq!("Q8_kv".parse::<KvType>(), Ok(KvType::Q8Kv));
    }

    /// The int8 row quantizer: the SIMD bytes equal the scalar definition's (odd lengths,
    /// zero rows, both forms), and the values come back within half a step.
    #[test]
    fn quantize_i8_simd_equals_scalar() {
        for n in [1usize, 15, 16, 17, 64, 100, 576] {
            for seed in 0..4 {
                let mut x = values(n, 40 + seed);
                if seed == 3 {
                    x.fill(0.0);
                }
                for offset in [false, true] {
                    let (mut a, mut b) = (vec![7u8; n], vec![9u8; n]);
                    let ra = quantize_i8(&x, &mut a, offset);
                    let rb = quantize_i8_scalar(&x, &mut b, offset);
                    assert_eq!(ra, rb, "n {n} seed {seed}");
                    assert_eq!(a, b, "n {n} seed {seed}");
                    let (d, sum) = ra;
                    let signed: Vec<i32> = a
                        .iter()
                        .map(|&q| {
                            if offset {
                                q as i32 - 128
                            } else {
                                q as i8 as i32
                            }
                        })
                        .collect();
                    assert_eq!(signed.iter().sum::<i32>(), sum);
                    for (&v, &q) in x.iter().zip(&signed) {
                        assert!(
                            (v - d * q as f32).abs() <= d * 0.5001 + 1e-30,
                            "{v} vs {q}·{d}"
                        );
                    }
                }
            }
        }
    }

    /// Written then read back: the SIMD read equals the scalar one bit for bit, and the
    /// values are within each type's rounding of what was written.
    #[test]
    fn round_trip_within_rounding_and_simd_equals_scalar() {
        let n = 32 * 13;
        let src = values(n, 3);
        for ty in KvType::ALL {
            let mut buf = KvBuf::zeroed(ty, n + 64, 32);
            assert_eq!(buf.bytes(), ty.bytes(n + 64, 32).unwrap());
            buf.write(32, &src);
            let data = buf.data();
            assert_eq!(data.ty(), ty);
            // Offsets and lengths that are and are not multiples of 8 (whole blocks for q8_0).
            for (at, len) in [(32, n), (64, 96), (32, 32)] {
                let (mut a, mut b) = (vec![0f32; len], vec![1f32; len]);
                data.read(at, &mut a);
                data.read_scalar(at, &mut b);
                assert_eq!(a, b, "{ty} at {at} len {len}");
            }
            if ty != KvType::Q8_0 {
                let (mut a, mut b) = (vec![0f32; 13], vec![1f32; 13]);
                data.read(35, &mut a);
                data.read_scalar(35, &mut b);
                assert_eq!(a, b, "{ty} unaligned");
            }
            let mut back = vec![0f32; n];
            data.read(32, &mut back);
            for (blk, (x, y)) in src.chunks(32).zip(back.chunks(32)).enumerate() {
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (&a, &b) in x.iter().zip(y) {
                    let tol = match ty {
                        KvType::F32 => 0.0,
                        KvType::F16 => a.abs() * 1.0 / 2048.0,
                        KvType::Bf16 => a.abs() / 256.0,
                        KvType::Q8_0 => amax / 127.0 * 0.5 + amax * 1e-3,
                        // One scale per 32-value row here (the buffer's rows).
                        KvType::Q8Kv => amax / 127.0 * 0.5 + amax * 1e-6,
                    };
                    assert!((a - b).abs() <= tol, "{ty} block {blk}: {a} → {b}");
                }
            }
        }
    }
}
