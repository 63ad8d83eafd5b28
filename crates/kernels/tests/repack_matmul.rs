//! Matmuls over repacked (Q4_Kx8) weights against the file-order path:
//! - GEMV and GEMM outputs within f32 rounding of the unrepacked `VecDot` results (same
//!   integers, different f32 summation order);
//! - batch invariance: a token's output is bit-identical whether it runs alone, in a
//!   batch, through `matmul_batch` with a routed token subset, or on 1 or 2 threads;
//! - row slices of packed matrices and shape errors.

use kernels::matmul::{
    matmul, matmul_acts, matmul_batch, quantize_acts, ActScratch, MatmulOp, QMatrix,
};
use kernels::ThreadPool;
use quant::repack::{self, PackedType};
use quant::GgmlType;

const TY: GgmlType = GgmlType::Q4_K;

fn weights(n_in: usize, n_out: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut x = seed;
    let src: Vec<f32> = (0..n_in * n_out)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let mut file = vec![0u8; TY.row_bytes((n_in * n_out) as u64).unwrap() as usize];
    quant::quantize(TY, &src, &mut file).unwrap();
    let mut packed = vec![0u8; PackedType::Q4Kx8.matrix_bytes(n_in, n_out).unwrap()];
    repack::repack(TY, n_in, n_out, &file, &mut packed).unwrap();
    (file, packed)
}

fn acts(n_in: usize, n_tok: usize) -> Vec<f32> {
    (0..n_in * n_tok)
        .map(|i| (((i * 7919) % 2003) as f32 / 1001.0 - 1.0) * 1.5)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn packed_matches_file_order_and_is_batch_invariant() {
    let (n_in, n_out, n_tok) = (512usize, 48usize, 11usize);
    let (file, packed) = weights(n_in, n_out, 1);
    let wf = QMatrix::new(TY, n_in, n_out, &file).unwrap();
    let wp = QMatrix::packed(PackedType::Q4Kx8, n_in, n_out, &packed).unwrap();
    let x = acts(n_in, n_tok);
    let mut scratch = ActScratch::new();
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        let mut want = vec![0f32; n_tok * n_out];
        matmul(&pool, &wf, &x, &mut want, &mut scratch).unwrap();
        let mut got = vec![0f32; n_tok * n_out];
        matmul(&pool, &wp, &x, &mut got, &mut scratch).unwrap();
        for t in 0..n_tok {
            let xt = &x[t * n_in..(t + 1) * n_in];
            let mag: f32 = xt.iter().map(|v| v.abs()).sum::<f32>() * 0.1;
            for r in 0..n_out {
                let (a, b) = (got[t * n_out + r], want[t * n_out + r]);
                assert!(
                    (a - b).abs() <= 1e-5 * mag,
                    "{threads} threads, token {t} row {r}: packed {a} vs file {b}"
                );
            }
            // Alone (GEMV) vs in the batch: bit-identical.
            let mut one = vec![0f32; n_out];
            matmul(&pool, &wp, xt, &mut one, &mut scratch).unwrap();
            assert_eq!(
                bits(&one),
                bits(&got[t * n_out..(t + 1) * n_out]),
                "{threads} threads, token {t}"
            );
        }
        // A routed subset through matmul_batch, with a row slice as a second product.
        let xq = quantize_acts(&pool, TY, &x, n_in, &mut scratch).unwrap();
        let tokens = [9u32, 2, 2, 5, 0];
        let mut sub = vec![0f32; tokens.len() * n_out];
        let slice = wp.rows(16..40).unwrap();
        let mut sub2 = vec![0f32; n_tok * 24];
        {
            let mut ops = [
                MatmulOp {
                    w: wp,
                    xq,
                    tokens: Some(&tokens),
                    out: &mut sub,
                },
                MatmulOp {
                    w: slice,
                    xq,
                    tokens: None,
                    out: &mut sub2,
                },
            ];
            matmul_batch(&pool, &mut ops).unwrap();
        }
        for (i, &t) in tokens.iter().enumerate() {
            let t = t as usize;
            assert_eq!(
                bits(&sub[i * n_out..(i + 1) * n_out]),
                bits(&got[t * n_out..(t + 1) * n_out]),
                "subset {i}"
            );
        }
        for t in 0..n_tok {
            assert_eq!(
                bits(&sub2[t * 24..(t + 1) * 24]),
                bits(&got[t * n_out + 16..t * n_out + 40]),
                "slice, token {t}"
            );
        }
        let mut again = vec![0f32; n_tok * n_out];
        matmul_acts(&pool, &wp, &xq, &mut again).unwrap();
        assert_eq!(bits(&again), bits(&got));
    }
}

#[test]
fn packed_shape_errors() {
    let (n_in, n_out) = (256usize, 16usize);
    let (_, packed) = weights(n_in, n_out, 2);
    assert!(QMatrix::packed(PackedType::Q4Kx8, n_in, n_out, &packed[1..]).is_err());
    assert!(QMatrix::packed(PackedType::Q4Kx8, n_in, 12, &packed).is_err());
    let wp = QMatrix::packed(PackedType::Q4Kx8, n_in, n_out, &packed).unwrap();
    let e = wp.rows(4..12).unwrap_err();
    assert!(e.to_string().contains("groups of 8"), "{e}");
    let pool = ThreadPool::new(1);
    let mut out = vec![0f32; n_out];
    let e = kernels::matmul::matmul_exact(
        &pool,
        &wp,
        &vec![0f32; n_in],
        &mut out,
        &mut Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exact mode"), "{e}");
}

/// `n_out` rows of `ty` from any bytes, the scales set to small sane values (d = 0.01, or
/// MXFP4's E8M0 2^−7), as the loader would hand them to the kernels.
fn any_weights(ty: GgmlType, n_in: usize, n_out: usize) -> Vec<u8> {
    let mut file: Vec<u8> = (0..ty.row_bytes((n_in * n_out) as u64).unwrap() as usize)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let d = quant::Half::from_f32(0.01).0;
    for blk in file.chunks_exact_mut(ty.type_size()) {
        match ty {
            GgmlType::MXFP4 => blk[0] = 121,
            GgmlType::Q2_K => {
                blk[80..82].copy_from_slice(&d);
                blk[82..84].copy_from_slice(&d);
            }
            GgmlType::Q3_K => blk[108..110].copy_from_slice(&d),
            GgmlType::TQ1_0 => blk[52..54].copy_from_slice(&d),
            GgmlType::TQ2_0 => blk[64..66].copy_from_slice(&d),
            // d in the top nibbles of the 4 scale words (bytes 48..56).
            GgmlType::IQ1_M => {
                let bits = u16::from_le_bytes(d);
                for k in 0..4 {
                    let b = &mut blk[49 + 2 * k];
                    *b = (*b & 0x0f) | (((bits >> (4 * k)) & 0xf) as u8) << 4;
                }
            }
            _ => blk[..2].copy_from_slice(&d),
        }
    }
    file
}

/// The layouts added for the low-bit types (Q4_0x8, IQ4_NLx8, Q2_Kx8, Q3_Kx8, IQ4_XSx8, MXFP4x8,
/// IQ2_XXSx8, IQ3_XXSx8, IQ1_Sx8, IQ1_Mx8, IQ2_Sx8, IQ2_XSx8, IQ3_Sx8, TQ1_0x8, TQ2_0x8) through the same matmul entry points: GEMV and GEMM within f32 rounding of
/// file order, a token's GEMV bit-identical to its row of the GEMM, on 1 and 2 threads.
/// (The codebook layouts run their VBMI tiles where the CPU has them, else the scalar
/// definition.)
#[test]
fn low_bit_layouts_match_file_order() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::IQ4_NL,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::IQ4_XS,
        GgmlType::MXFP4,
        GgmlType::IQ2_XXS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
        GgmlType::IQ2_S,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_S,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
    ] {
        let (n_in, n_out, n_tok) = (512usize, 40usize, 11usize);
        let file = any_weights(ty, n_in, n_out);
        let pt = PackedType::layout_of(ty).unwrap();
        let mut packed = vec![0u8; pt.matrix_bytes(n_in, n_out).unwrap()];
        repack::repack(ty, n_in, n_out, &file, &mut packed).unwrap();
        let wf = QMatrix::new(ty, n_in, n_out, &file).unwrap();
        let wp = QMatrix::packed(pt, n_in, n_out, &packed).unwrap();
        let x = acts(n_in, n_tok);
        let mut scratch = ActScratch::new();
        for threads in [1, 2] {
            let pool = ThreadPool::new(threads);
            let mut want = vec![0f32; n_tok * n_out];
            matmul(&pool, &wf, &x, &mut want, &mut scratch).unwrap();
            let mut got = vec![0f32; n_tok * n_out];
            matmul(&pool, &wp, &x, &mut got, &mut scratch).unwrap();
            let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(scale > 0.0, "{ty}: all-zero products test nothing");
            for t in 0..n_tok {
                for r in 0..n_out {
                    let (a, b) = (got[t * n_out + r], want[t * n_out + r]);
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{ty} {threads} threads, token {t} row {r}: packed {a} vs file {b}"
                    );
                }
                let mut one = vec![0f32; n_out];
                matmul(
                    &pool,
                    &wp,
                    &x[t * n_in..(t + 1) * n_in],
                    &mut one,
                    &mut scratch,
                )
                .unwrap();
                assert_eq!(
                    bits(&one),
                    bits(&got[t * n_out..(t + 1) * n_out]),
                    "{ty} {threads} threads, token {t}"
                );
            }
        }
    }
}
