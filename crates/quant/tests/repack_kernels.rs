//! Property tests of the repacked layouts (`quant::repack`: Q4_Kx8, Q6_Kx8, Q2_Kx8,
//! Q3_Kx8, IQ4_XSx8, Q8_0x8, Q5_0x8, Q4_0x8, IQ4_NLx8, MXFP4x8, IQ2_XXSx8, IQ3_XXSx8, IQ1_Sx8,
//! IQ1_Mx8, IQ2_Sx8, IQ2_XSx8, IQ3_Sx8, TQ1_0x8, TQ2_0x8):
//! - `unpack(repack(x)) == x` for any bytes (the scale re-packing is a bijection);
//! - the SIMD block code's integers (`isum`, `msum` per row and block) equal the scalar
//!   definition's, on every path this CPU has;
//! - the tile kernel's f32 results are bit-identical to the scalar definition for 1..=7
//!   tokens per call (batch invariance: a token's value never depends on its neighbours);
//! - each result is within 1e-5·Σ|terms| of an independent f64 evaluation and of the
//!   unrepacked `VecDot` path on the same rows.
//!
//! Rows mix ordinary data, all-zero quants, max-magnitude quants (all-15 nibbles with
//! activations −128 / 127) and extreme scales.

#[path = "dot_common/mod.rs"]
mod dot_common;

use dot_common::*;
use proptest::prelude::*;
use quant::dot::{vec_dot_with, SimdPath};
use quant::repack::{self, testing, PackedDot, PackedType, ROWS};
use quant::GgmlType;

const REL_TOL: f64 = 1e-5;

fn paths(pt: PackedType) -> Vec<PackedDot> {
    let mut v = vec![PackedDot::with_path(pt, SimdPath::Avx2)];
    let vnni = PackedDot::with_path(pt, SimdPath::Avx512Vnni);
    if vnni.path != v[0].path {
        v.push(vnni);
    }
    v
}

/// `n_out` random rows of `nb` blocks (one row-major matrix).
fn matrix(
    ty: GgmlType,
    n_out: usize,
    nb: usize,
    rng: &mut rand::rngs::StdRng,
    mode: Mode,
) -> Vec<u8> {
    (0..n_out)
        .flat_map(|_| weight_row(ty, nb, rng, mode))
        .collect()
}

/// `file` (`n_out` rows of `n_in` values of `ty`) repacked.
fn repacked(ty: GgmlType, n_in: usize, n_out: usize, file: &[u8]) -> Vec<u8> {
    let pt = PackedType::layout_of(ty).unwrap();
    let mut packed = vec![0u8; pt.matrix_bytes(n_in, n_out).unwrap()];
    repack::repack(ty, n_in, n_out, file, &mut packed).unwrap();
    packed
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_case(
    ty: GgmlType,
    seed: u64,
    mode: usize,
    nb: usize,
    groups: usize,
) -> Result<(), TestCaseError> {
    let mode = MODES[mode];
    let mut rng = rng(seed);
    let act = quant::dot::act_type_for(ty).unwrap();
    let (n_in, n_out) = (nb * ty.block_size(), groups * ROWS);
    let file = matrix(ty, n_out, nb, &mut rng, mode);
    let pt = PackedType::layout_of(ty).unwrap();
    let packed = repacked(ty, n_in, n_out, &file);
    let mut back = vec![0u8; file.len()];
    repack::unpack(ty, n_in, n_out, &packed, &mut back).unwrap();
    prop_assert!(back == file, "unpack(repack(x)) != x");

    // 9 tokens: the 8-token kernels and a split into 8 + 1.
    let acts: Vec<Vec<u8>> = (0..9).map(|_| act_row(act, n_in, &mut rng, mode)).collect();
    let gb = pt.group_bytes(n_in).unwrap();
    let scalar = PackedDot::with_path(pt, SimdPath::Scalar);
    let vd = vec_dot_with(ty, SimdPath::Avx512Vnni).unwrap();
    let rb = file.len() / n_out;
    for (g, group) in packed.chunks_exact(gb).enumerate() {
        // Integers: SIMD block code == scalar definition.
        for a in &acts {
            let want = testing::block_ints_scalar(pt, n_in, group, a);
            // (A layout without a tile on some path falls back to the scalar definition
            // there: IQ2_XXSx8 without VBMI.)
            for p in paths(pt).into_iter().filter(|p| p.path != SimdPath::Scalar) {
                let got = testing::block_ints_simd(pt, p.path, n_in, group, a);
                prop_assert!(
                    got.as_ref() == Some(&want),
                    "{:?} ints differ (group {g})",
                    p.path
                );
            }
        }
        // f32: the scalar definition per token.
        let refs: Vec<&[u8]> = acts.iter().map(|a| a.as_slice()).collect();
        let mut want = vec![[0f32; ROWS]; acts.len()];
        scalar.tile(n_in, group, &refs, &mut want);
        for p in paths(pt) {
            for count in 1..=acts.len() {
                let mut got = vec![[0f32; ROWS]; count];
                p.tile(n_in, group, &refs[..count], &mut got);
                for t in 0..count {
                    for r in 0..ROWS {
                        prop_assert!(
                            same_f32(got[t][r], want[t][r]),
                            "{:?} {count} tokens: token {t} row {r}: {} vs scalar {}",
                            p.path,
                            got[t][r],
                            want[t][r]
                        );
                    }
                }
            }
        }
        // Against f64 and the unrepacked path.
        for (t, a) in acts.iter().enumerate() {
            for r in 0..ROWS {
                let row = &file[(g * ROWS + r) * rb..(g * ROWS + r + 1) * rb];
                let (exact, mag) = reference_dot(ty, act, row, a);
                let got = want[t][r] as f64;
                let old = vd.dot(n_in, row, a) as f64;
                if !exact.is_finite() || !mag.is_finite() || mag > 1e30 {
                    continue;
                }
                let tol = REL_TOL * mag + 1e-30;
                prop_assert!(
                    (got - exact).abs() <= tol,
                    "token {t} row {r}: {got} vs f64 {exact} (mag {mag})"
                );
                prop_assert!(
                    (got - old).abs() <= 2.0 * tol,
                    "token {t} row {r}: {got} vs VecDot {old} (mag {mag})"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn q4kx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..5, groups in 1usize..3) {
        check_case(GgmlType::Q4_K, seed, mode, nb, groups)?;
    }
    #[test]
    fn q6kx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::Q6_K, seed, mode, nb, groups)?;
    }
    #[test]
    fn q8_0x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..12, groups in 1usize..3) {
        check_case(GgmlType::Q8_0, seed, mode, nb, groups)?;
    }
    #[test]
    fn q5_0x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..12, groups in 1usize..3) {
        check_case(GgmlType::Q5_0, seed, mode, nb, groups)?;
    }
    #[test]
    fn q2kx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::Q2_K, seed, mode, nb, groups)?;
    }
    #[test]
    fn q3kx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::Q3_K, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq4xsx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ4_XS, seed, mode, nb, groups)?;
    }
    #[test]
    fn mxfp4x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..12, groups in 1usize..3) {
        check_case(GgmlType::MXFP4, seed, mode, nb, groups)?;
    }
    #[test]
    fn q4_0x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..12, groups in 1usize..3) {
        check_case(GgmlType::Q4_0, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq4_nlx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..12, groups in 1usize..3) {
        check_case(GgmlType::IQ4_NL, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq2xxsx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ2_XXS, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq3xxsx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ3_XXS, seed, mode, nb, groups)?;
    }

    #[test]
    fn iq1sx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ1_S, seed, mode, nb, groups)?;
    }

    #[test]
    fn iq1mx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ1_M, seed, mode, nb, groups)?;
    }

    #[test]
    fn iq2sx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ2_S, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq2xsx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ2_XS, seed, mode, nb, groups)?;
    }
    #[test]
    fn iq3sx8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::IQ3_S, seed, mode, nb, groups)?;
    }
    #[test]
    fn tq1_0x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::TQ1_0, seed, mode, nb, groups)?;
    }
    #[test]
    fn tq2_0x8_matches_definition(seed in any::<u64>(), mode in 0usize..5, nb in 1usize..4, groups in 1usize..3) {
        check_case(GgmlType::TQ2_0, seed, mode, nb, groups)?;
    }
}

/// A whole matrix of `groups` groups through one `tiles_unchecked` call on every path,
/// against the scalar definition group by group: on AVX-512 VNNI the 32-value layouts run
/// pairs of groups in 512-bit vectors and an odd last group in the 256-bit tile, so the
/// results must not depend on a group's position (pair half or odd one out), on the
/// tokens per call, or on how many passes a row takes (of 16384 values: 512 blocks of 32).
fn check_matrix_case(
    ty: GgmlType,
    seed: u64,
    mode: usize,
    nb: usize,
    groups: usize,
    count: usize,
) -> Result<(), TestCaseError> {
    let mode = MODES[mode];
    let mut rng = rng(seed);
    let act = quant::dot::act_type_for(ty).unwrap();
    let (n_in, n_out) = (nb * ty.block_size(), groups * ROWS);
    let file = matrix(ty, n_out, nb, &mut rng, mode);
    let pt = PackedType::for_type(ty).unwrap();
    let packed = repacked(ty, n_in, n_out, &file);
    let gb = pt.group_bytes(n_in).unwrap();
    let acts: Vec<Vec<u8>> = (0..count)
        .map(|_| act_row(act, n_in, &mut rng, mode))
        .collect();
    let refs: Vec<&[u8]> = acts.iter().map(|a| a.as_slice()).collect();
    let scalar = PackedDot::with_path(pt, SimdPath::Scalar);
    let ld = n_out + 3;
    for p in paths(pt) {
        let mut got = vec![f32::NAN; count * ld];
        // SAFETY: `packed` is whole groups of n_in values, every row an activation row of
        // n_in values of `act`, and `got` holds count rows of ld ≥ n_out values.
        unsafe { p.tiles_unchecked(n_in, &packed, &refs, got.as_mut_ptr(), ld) };
        for (g, group) in packed.chunks_exact(gb).enumerate() {
            let mut want = vec![[0f32; ROWS]; count];
            scalar.tile(n_in, group, &refs, &mut want);
            for t in 0..count {
                for r in 0..ROWS {
                    let v = got[t * ld + g * ROWS + r];
                    prop_assert!(
                        same_f32(v, want[t][r]),
                        "{ty} {:?} {groups} groups × {count} tokens: group {g} token {t} row {r}: {v} vs scalar {}",
                        p.path,
                        want[t][r]
                    );
                }
            }
        }
        for t in 0..count {
            prop_assert!(got[t * ld + n_out..(t + 1) * ld].iter().all(|v| v.is_nan()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn legacy_matrices_match_definition(
        kind in 0usize..5,
        seed in any::<u64>(),
        mode in 0usize..5,
        nb in prop_oneof![1usize..6, 60usize..70, 511usize..515],
        groups in 1usize..6,
        count in 1usize..12,
    ) {
        let ty = [GgmlType::MXFP4, GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::IQ4_NL][kind];
        check_matrix_case(ty, seed, mode, nb, groups, count)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]
    /// The decoded-strip prompt GEMMs (calls of ≥ 8, 12 or 16 tokens on AVX-512 VNNI: pairs
    /// of groups decoded once per strip of 32 blocks, 4-token tiles, an odd last group in
    /// the layout's own tile): bit-identical to the scalar definition, for rows of one
    /// strip, of a strip and a bit, and of several, and token counts on both sides of each
    /// layout's threshold that leave 0..3 for the last tile.
    #[test]
    fn prompt_strip_matrices_match_definition(
        kind in 0usize..9,
        seed in any::<u64>(),
        mode in 0usize..5,
        nb in prop_oneof![1usize..3, 31usize..34, 64usize..66],
        groups in 1usize..6,
        count in 6usize..24,
    ) {
        let ty = [
            GgmlType::IQ1_S,
            GgmlType::IQ1_M,
            GgmlType::Q3_K,
            GgmlType::IQ2_S,
            GgmlType::IQ2_XS,
            GgmlType::IQ3_S,
            GgmlType::IQ2_XXS,
            GgmlType::IQ3_XXS,
            GgmlType::Q6_K,
        ][kind];
        check_matrix_case(ty, seed, mode, nb, groups, count)?;
    }
}

const TY: GgmlType = GgmlType::Q4_K;

#[test]
fn unpack_is_inverse_on_any_bytes() {
    for (ty, n_in) in [
        (GgmlType::Q8_0, 96),
        (GgmlType::Q5_0, 96),
        (GgmlType::Q4_0, 96),
        (GgmlType::MXFP4, 96),
        (GgmlType::IQ4_NL, 96),
        (GgmlType::Q6_K, 512),
        (GgmlType::Q2_K, 512),
        (GgmlType::Q3_K, 512),
        (GgmlType::IQ4_XS, 512),
        (GgmlType::IQ2_XXS, 512),
        (GgmlType::IQ3_XXS, 512),
        (GgmlType::IQ1_S, 512),
        (GgmlType::IQ1_M, 512),
        (GgmlType::IQ2_S, 512),
        (GgmlType::IQ2_XS, 512),
        (GgmlType::IQ3_S, 512),
        (GgmlType::TQ1_0, 512),
        (GgmlType::TQ2_0, 512),
    ] {
        let mut rng = rng(11);
        let n_out = 16;
        let file: Vec<u8> = (0..n_out * (n_in / ty.block_size()) * ty.type_size())
            .map(|_| rand::Rng::random::<u8>(&mut rng))
            .collect();
        let packed = repacked(ty, n_in, n_out, &file);
        let mut back = vec![0u8; file.len()];
        repack::unpack(ty, n_in, n_out, &packed, &mut back).unwrap();
        assert!(back == file, "{ty}");
    }
}

#[test]
fn q4kx8_unpack_is_inverse_on_any_bytes() {
    let mut rng = rng(7);
    let (n_in, n_out) = (512, 16);
    let file: Vec<u8> = (0..n_out * 2 * 144)
        .map(|_| rand::Rng::random::<u8>(&mut rng))
        .collect();
    let packed = repacked(TY, n_in, n_out, &file);
    let mut back = vec![0u8; file.len()];
    repack::unpack(TY, n_in, n_out, &packed, &mut back).unwrap();
    assert!(back == file);
}

#[test]
fn q4kx8_rejects_bad_shapes() {
    let src = vec![0u8; 8 * 144];
    let mut dst = vec![0u8; 8 * 148];
    assert!(repack::repack(TY, 256, 8, &src, &mut dst).is_ok());
    let e = repack::repack(TY, 256, 4, &src[..4 * 144], &mut dst[..4 * 148]).unwrap_err();
    assert!(e.to_string().contains("not a multiple of 8"), "{e}");
    let e = repack::repack(TY, 256, 8, &src[..100], &mut dst).unwrap_err();
    assert!(e.to_string().contains("source holds 100 bytes"), "{e}");
    let e = repack::repack(TY, 256, 8, &src, &mut dst[..10]).unwrap_err();
    assert!(
        e.to_string().contains("packed buffer holds 10 bytes"),
        "{e}"
    );
    let e = repack::repack(TY, 200, 8, &src, &mut dst).unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    let e = repack::repack(GgmlType::Q5_K, 256, 8, &src, &mut dst).unwrap_err();
    assert!(matches!(
        e,
        repack::RepackError::Unsupported(GgmlType::Q5_K)
    ));
}

/// `tiles_unchecked` over several groups at once (the matmul's call) gives, bit for bit,
/// the scalar definition group by group, for token counts across the tile width and for
/// rows of one pass, exactly two (128 Q4_K blocks, 1024 Q8_0 blocks: passes of 16384
/// values) and more than one pass (the accumulators then wait in `out` between passes);
/// it writes only its own elements of a strided output.
#[test]
fn multi_group_tiles_match_single_group() {
    for (ty, nb) in [
        (GgmlType::Q4_K, 67),
        (GgmlType::Q4_K, 128),
        (GgmlType::Q6_K, 66),
        (GgmlType::Q8_0, 1030),
        (GgmlType::Q8_0, 1024),
        (GgmlType::Q5_0, 70),
        (GgmlType::Q5_0, 513),
        (GgmlType::Q4_0, 129),
        (GgmlType::Q4_0, 514),
        (GgmlType::MXFP4, 515),
        (GgmlType::Q2_K, 65),
        (GgmlType::Q3_K, 67),
        (GgmlType::IQ4_XS, 66),
        (GgmlType::Q4_K, 3),
        // Passes of 28 blocks for 4 tokens, 64 for 1 (288 prepared bytes per block).
        (GgmlType::IQ2_XXS, 31),
        (GgmlType::IQ2_XXS, 66),
        // 25 blocks per pass for 4 tokens (320 prepared bytes per block).
        (GgmlType::IQ3_XXS, 27),
        // 64 (IQ1_S) and 128 (IQ1_M) prepared bytes per block: passes of 64 and 32 blocks.
        (GgmlType::IQ1_S, 65),
        (GgmlType::IQ1_M, 70),
        // 25 blocks per pass for 4 tokens (320 prepared bytes per block).
        (GgmlType::IQ2_S, 26),
        (GgmlType::IQ2_S, 65),
        (GgmlType::IQ2_XS, 33),
        (GgmlType::IQ3_S, 29),
        // 4 prepared bytes per block: passes of 64 blocks.
        (GgmlType::TQ1_0, 66),
        (GgmlType::TQ2_0, 65),
    ] {
        let mut rng = rng(nb as u64);
        let groups = 3;
        let act = quant::dot::act_type_for(ty).unwrap();
        let (n_in, n_out) = (nb * ty.block_size(), groups * ROWS);
        let file = matrix(ty, n_out, nb, &mut rng, Mode::Random);
        let pt = PackedType::layout_of(ty).unwrap();
        let packed = repacked(ty, n_in, n_out, &file);
        let gb = pt.group_bytes(n_in).unwrap();
        let acts: Vec<Vec<u8>> = (0..11)
            .map(|_| act_row(act, n_in, &mut rng, Mode::Random))
            .collect();
        let refs: Vec<&[u8]> = acts.iter().map(|a| a.as_slice()).collect();
        let ld = n_out + 5;
        let scalar = PackedDot::with_path(pt, SimdPath::Scalar);
        for p in paths(pt)
            .into_iter()
            .chain([PackedDot::with_path(pt, SimdPath::Scalar)])
        {
            for count in [1, 4, 8, 9, 11] {
                let mut got = vec![f32::NAN; count * ld];
                // SAFETY: `packed` is whole groups of n_in, the rows are activation rows of
                // n_in values of `act`, and `got` has count rows of ld ≥ n_out values.
                unsafe { p.tiles_unchecked(n_in, &packed, &refs[..count], got.as_mut_ptr(), ld) };
                for (g, group) in packed.chunks_exact(gb).enumerate() {
                    let mut want = vec![[0f32; ROWS]; count];
                    scalar.tile(n_in, group, &refs[..count], &mut want);
                    for t in 0..count {
                        for r in 0..ROWS {
                            let v = got[t * ld + g * ROWS + r];
                            assert!(
                                same_f32(v, want[t][r]),
                                "{ty} nb {nb} {:?} {count} tokens: group {g} token {t} row {r}: {v} vs {}",
                                p.path,
                                want[t][r]
                            );
                        }
                    }
                }
                for t in 0..count {
                    assert!(got[t * ld + n_out..(t + 1) * ld].iter().all(|v| v.is_nan()));
                }
            }
        }
    }
}
