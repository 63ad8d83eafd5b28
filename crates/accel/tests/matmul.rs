//! The GPU matmul against the CPU reference (`quant::dequantize`, then a dot in f64) on whatever
//! adapter the tests get (lavapipe in CI): every type, GEMV and GEMM, ragged shapes, split
//! matrices, offsets, the reduction without subgroups, router logits, batches of matrices in one
//! dispatch, and bad input.

use accel::matmul::{gpu_supports, GEMV_MAX_TOKENS, GPU_MATMUL_TYPES};
use accel::testing::test_gpu;
use accel::{AccelError, Gpu, GpuMatrix, MatmulKernels, MatmulPath, Strided};
use quant::{GgmlType, Half};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Byte offsets of the f16 scale fields inside one block: random bytes there could be
/// Inf/NaN, which no quantizer writes.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random valid weights: rows × cols values of `ty` in file layout.
fn random_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.random_range(-2.0f32..2.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| Half::from_f32(rng.random_range(-2.0f32..2.0)).0)
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| {
                let v: f32 = rng.random_range(-2.0..2.0);
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect(),
        _ => {
            let size = ty.type_size();
            let mut out: Vec<u8> = (0..n / ty.block_size() * size)
                .map(|_| rng.random())
                .collect();
            for block in out.chunks_exact_mut(size) {
                for &o in f16_fields(ty) {
                    let m: f32 = rng.random_range(1e-3..0.5);
                    let s = if rng.random::<bool>() { m } else { -m };
                    block[o..o + 2].copy_from_slice(&Half::from_f32(s).0);
                }
            }
            out
        }
    }
}

fn random_f32(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// y[t][r] in f64 from the CPU's dequantized weights, and Σ|w·x| (the scale of the rounding).
fn reference(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &[u8],
    x: &[f32],
    n_tokens: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut w = vec![0f32; rows * cols];
    quant::dequantize(ty, data, &mut w).unwrap();
    let mut y = vec![0f64; n_tokens * rows];
    let mut mag = vec![0f64; n_tokens * rows];
    for t in 0..n_tokens {
        for r in 0..rows {
            let (mut s, mut m) = (0f64, 0f64);
            for c in 0..cols {
                let p = w[r * cols + c] as f64 * x[t * cols + c] as f64;
                s += p;
                m += p.abs();
            }
            y[t * rows + r] = s;
            mag[t * rows + r] = m;
        }
    }
    (y, mag)
}

/// What one matmul on the GPU is checked with.
struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    n_tokens: usize,
    path: MatmulPath,
    /// Largest bytes per part (forces a split when small).
    max_part: u64,
    x_offset: usize,
    y_offset: usize,
    seed: u64,
}

impl Case {
    fn new(ty: GgmlType, rows: usize, cols: usize, n_tokens: usize, path: MatmulPath) -> Case {
        Case {
            ty,
            rows,
            cols,
            n_tokens,
            path,
            max_part: u64::MAX,
            x_offset: 0,
            y_offset: 0,
            seed: (rows * 31 + cols * 7 + n_tokens) as u64,
        }
    }

    /// Runs it and compares with the reference to 1e-5 of Σ|w·x|; elements of y outside the
    /// output range must keep their sentinel. Returns how many parts the matrix had.
    fn check(&self, gpu: &Gpu, kernels: &MatmulKernels) -> usize {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let data = random_weights(self.ty, self.rows, self.cols, &mut rng);
        let x = random_f32(self.n_tokens * self.cols, &mut rng);
        let w = GpuMatrix::upload_with_limit(
            gpu,
            "w",
            self.ty,
            self.rows,
            self.cols,
            &data,
            self.max_part,
        )
        .unwrap();
        let mut x_host = vec![7.5f32; self.x_offset];
        x_host.extend_from_slice(&x);
        x_host.extend_from_slice(&[-3.25; 3]);
        const SENTINEL: f32 = 12345.0;
        let n_out = self.n_tokens * self.rows;
        let y_host = vec![SENTINEL; self.y_offset + n_out + 5];
        let xb = gpu.upload("x", bytemuck::cast_slice(&x_host)).unwrap();
        let yb = gpu.upload("y", bytemuck::cast_slice(&y_host)).unwrap();
        let mut rec = gpu.record("matmul test");
        kernels
            .record_path(
                self.path,
                &mut rec,
                &w,
                &xb,
                self.x_offset as u32,
                &yb,
                self.y_offset as u32,
                self.n_tokens as u32,
            )
            .unwrap();
        rec.submit_and_wait().unwrap();
        let got = gpu.read_f32(&yb, y_host.len()).unwrap();
        let (want, mag) = reference(self.ty, self.rows, self.cols, &data, &x, self.n_tokens);
        let label = format!(
            "{} {}×{} tokens {} {:?} parts {} x+{} y+{}",
            self.ty,
            self.rows,
            self.cols,
            self.n_tokens,
            self.path,
            w.parts(),
            self.x_offset,
            self.y_offset
        );
        for (i, &v) in got[..self.y_offset].iter().enumerate() {
            assert_eq!(v, SENTINEL, "{label}: y[{i}] before the output was written");
        }
        for (i, &v) in got[self.y_offset + n_out..].iter().enumerate() {
            assert_eq!(v, SENTINEL, "{label}: y[{i}] after the output was written");
        }
        for (i, (&g, (&r, &m))) in got[self.y_offset..self.y_offset + n_out]
            .iter()
            .zip(want.iter().zip(&mag))
            .enumerate()
        {
            let err = (g as f64 - r).abs();
            assert!(
                err <= 1e-5 * m + 1e-30,
                "{label}: token {} row {}: gpu {g} cpu {r} (|err| {err:e}, Σ|w·x| {m:e})",
                i / self.rows,
                i % self.rows
            );
        }
        w.parts()
    }
}

/// Row lengths with one and several blocks (floats: also lengths that end inside a chunk of 8).
fn col_cases(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 7, 37, 96],
        bs => vec![bs, 3 * bs],
    }
}

/// Every row/col/token shape of one type, both kernels and the automatic choice.
fn check_type(ty: GgmlType) {
    let Some(gpu) = test_gpu() else { return };
    let kernels = MatmulKernels::for_types(&gpu, &[ty]).unwrap();
    eprintln!(
        "{}: subgroup reduction {}",
        gpu.name(),
        kernels.uses_subgroups()
    );
    for cols in col_cases(ty) {
        for rows in [1, 3, 67] {
            for n_tokens in [1, 2, 7, 64] {
                Case::new(ty, rows, cols, n_tokens, MatmulPath::Auto).check(&gpu, &kernels);
            }
            // Each kernel away from its usual range: GEMV over several groups of tokens
            // (17 = 8 + 8 + 1), GEMM over one token and a ragged token tile.
            Case::new(ty, rows, cols, 17, MatmulPath::Gemv).check(&gpu, &kernels);
            Case::new(ty, rows, cols, 1, MatmulPath::Gemm).check(&gpu, &kernels);
            Case::new(ty, rows, cols, 7, MatmulPath::Gemm).check(&gpu, &kernels);
        }
    }
}

#[test]
fn f32_matches_the_cpu() {
    check_type(GgmlType::F32);
}

#[test]
fn f16_matches_the_cpu() {
    check_type(GgmlType::F16);
}

#[test]
fn bf16_matches_the_cpu() {
    check_type(GgmlType::BF16);
}

#[test]
fn q8_0_matches_the_cpu() {
    check_type(GgmlType::Q8_0);
}

#[test]
fn q4_0_matches_the_cpu() {
    check_type(GgmlType::Q4_0);
}

#[test]
fn q4_1_matches_the_cpu() {
    check_type(GgmlType::Q4_1);
}

#[test]
fn q5_0_matches_the_cpu() {
    check_type(GgmlType::Q5_0);
}

#[test]
fn q5_1_matches_the_cpu() {
    check_type(GgmlType::Q5_1);
}

#[test]
fn q2_k_matches_the_cpu() {
    check_type(GgmlType::Q2_K);
}

#[test]
fn q3_k_matches_the_cpu() {
    check_type(GgmlType::Q3_K);
}

#[test]
fn iq4_nl_matches_the_cpu() {
    check_type(GgmlType::IQ4_NL);
}

#[test]
fn iq4_xs_matches_the_cpu() {
    check_type(GgmlType::IQ4_XS);
}

#[test]
fn q4_k_matches_the_cpu() {
    check_type(GgmlType::Q4_K);
}

#[test]
fn q5_k_matches_the_cpu() {
    check_type(GgmlType::Q5_K);
}

#[test]
fn q6_k_matches_the_cpu() {
    check_type(GgmlType::Q6_K);
}

#[test]
fn every_listed_type_is_supported_and_tested() {
    // The per-type tests above cover exactly GPU_MATMUL_TYPES.
    assert_eq!(GPU_MATMUL_TYPES.len(), 15);
    for ty in GPU_MATMUL_TYPES {
        assert!(gpu_supports(ty), "{ty}");
    }
    assert!(!gpu_supports(GgmlType::IQ2_XXS));
    assert!(!gpu_supports(GgmlType::MXFP4));
}

#[test]
fn a_matrix_split_over_several_bindings_gives_the_same_result() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::F16];
    let kernels = MatmulKernels::for_types(&gpu, &types).unwrap();
    for ty in types {
        let cols = if ty.block_size() == 1 { 37 } else { 2 * 256 };
        let row_bytes = ty.row_bytes(cols as u64).unwrap();
        for n_tokens in [1, 3, 40] {
            let mut case = Case::new(ty, 67, cols, n_tokens, MatmulPath::Auto);
            // 10 rows per part: 7 parts, the last of 7 rows.
            case.max_part = 10 * row_bytes + row_bytes / 2;
            assert_eq!(case.check(&gpu, &kernels), 7, "{ty}");
        }
    }
    // One part when everything fits.
    let case = Case::new(GgmlType::Q6_K, 67, 256, 1, MatmulPath::Auto);
    assert_eq!(case.check(&gpu, &kernels), 1);
}

#[test]
fn offsets_into_shared_activation_buffers() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::Q4_K, GgmlType::F32];
    let kernels = MatmulKernels::for_types(&gpu, &types).unwrap();
    for ty in types {
        let cols = if ty.block_size() == 1 { 13 } else { 256 };
        for path in [MatmulPath::Gemv, MatmulPath::Gemm] {
            for n_tokens in [1, 5, 33] {
                let mut case = Case::new(ty, 70, cols, n_tokens, path);
                case.x_offset = 3;
                case.y_offset = 11;
                case.max_part = 40 * ty.row_bytes(cols as u64).unwrap();
                case.check(&gpu, &kernels);
            }
        }
    }
}

#[test]
fn the_reduction_without_subgroups_matches_the_cpu() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F32];
    let kernels = MatmulKernels::with_subgroups(&gpu, &types, false).unwrap();
    assert!(!kernels.uses_subgroups());
    for ty in types {
        for cols in col_cases(ty) {
            for n_tokens in [1, 2, 7, 8, 17] {
                Case::new(ty, 67, cols, n_tokens, MatmulPath::Gemv).check(&gpu, &kernels);
            }
        }
    }
    // Asking for subgroups on an adapter without them is an error, not a broken shader.
    if !gpu.features.subgroup {
        let e = MatmulKernels::with_subgroups(&gpu, &types, true).unwrap_err();
        assert!(e.to_string().contains("subgroup"), "{e}");
    }
}

/// The MoE router: 64 experts × a hidden size of 2048, F32 and F16 gate weights, one token
/// (decode) and a prompt.
#[test]
fn router_logits_are_a_matmul() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::F32, GgmlType::F16];
    let kernels = MatmulKernels::for_types(&gpu, &types).unwrap();
    for ty in types {
        for n_tokens in [1, GEMV_MAX_TOKENS as usize, 20] {
            Case::new(ty, 64, 2048, n_tokens, MatmulPath::Auto).check(&gpu, &kernels);
        }
    }
}

/// The shaders decode f16 with integer operations, exactly: every finite f16 (subnormals
/// included, which a GPU's float path may flush) comes out as the CPU's value. Eight tokens pick
/// out one column each (x = unit vectors), so y is the weights themselves.
#[test]
fn every_finite_f16_decodes_exactly() {
    let Some(gpu) = test_gpu() else { return };
    let kernels = MatmulKernels::for_types(&gpu, &[GgmlType::F16]).unwrap();
    let values: Vec<u16> = (0..=u16::MAX).filter(|&b| b & 0x7c00 != 0x7c00).collect();
    let (rows, cols) = (values.len() / 8, 8);
    assert_eq!(rows * cols, values.len());
    let data: Vec<u8> = values.iter().flat_map(|b| b.to_le_bytes()).collect();
    let w = GpuMatrix::upload(&gpu, "all f16", GgmlType::F16, rows, cols, &data).unwrap();
    let mut x = vec![0f32; cols * cols];
    for t in 0..cols {
        x[t * cols + t] = 1.0;
    }
    let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
    let yb = gpu.zeroed("y", (cols * rows * 4) as u64).unwrap();
    let mut rec = gpu.record("f16");
    kernels
        .record(&mut rec, &w, &xb, 0, &yb, 0, cols as u32)
        .unwrap();
    rec.submit_and_wait().unwrap();
    let y = gpu.read_f32(&yb, cols * rows).unwrap();
    for r in 0..rows {
        for t in 0..cols {
            let bits = values[r * cols + t];
            let want = Half(bits.to_le_bytes()).to_f32();
            assert!(
                y[t * rows + r] == want,
                "f16 {bits:#06x}: gpu {} cpu {want}",
                y[t * rows + r]
            );
        }
    }
}

/// An output head's row count: more GEMV workgroups than one grid dimension allows (65535 on
/// most adapters), folded into two.
#[test]
fn a_tall_matrix_folds_its_grid() {
    let Some(gpu) = test_gpu() else { return };
    let kernels = MatmulKernels::for_types(&gpu, &[GgmlType::F16]).unwrap();
    let rows = gpu.limits.max_compute_workgroups_per_dimension as usize + 1000;
    Case::new(GgmlType::F16, rows, 8, 1, MatmulPath::Gemv).check(&gpu, &kernels);
}

#[test]
fn every_kernel_compiles_at_once() {
    let Some(gpu) = test_gpu() else { return };
    let kernels = MatmulKernels::new(&gpu).unwrap();
    for ty in GPU_MATMUL_TYPES {
        assert!(kernels.has(ty), "{ty}");
    }
    assert_eq!(kernels.uses_subgroups(), gpu.features.subgroup);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(gpu) = test_gpu() else { return };
    let mut rng = StdRng::seed_from_u64(1);
    let q4k = random_weights(GgmlType::Q4_K, 4, 256, &mut rng);

    let e = GpuMatrix::upload(
        &gpu,
        "blk.0.attn_q.weight",
        GgmlType::TQ2_0,
        4,
        256,
        &q4k[..264],
    )
    .unwrap_err();
    assert!(matches!(e, AccelError::UnsupportedType { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("TQ2_0"),
        "{msg}"
    );
    assert!(msg.contains("Q4_K") && msg.contains("CPU"), "{msg}");

    let e = GpuMatrix::upload(&gpu, "w", GgmlType::Q4_K, 4, 256, &q4k[..500]).unwrap_err();
    assert!(matches!(e, AccelError::BadShape { .. }), "{e}");
    let e = GpuMatrix::upload(&gpu, "w", GgmlType::Q4_K, 4, 100, &q4k).unwrap_err();
    assert!(matches!(e, AccelError::BadShape { .. }), "{e}");
    let e = GpuMatrix::upload(&gpu, "w", GgmlType::Q4_K, 0, 256, &[]).unwrap_err();
    assert!(matches!(e, AccelError::BadShape { .. }), "{e}");
    // A row larger than a part cannot be split.
    let e = GpuMatrix::upload_with_limit(&gpu, "w", GgmlType::Q4_K, 4, 256, &q4k, 100).unwrap_err();
    assert!(matches!(e, AccelError::TooLarge { .. }), "{e}");

    let w = GpuMatrix::upload(&gpu, "w", GgmlType::Q4_K, 4, 256, &q4k).unwrap();
    assert_eq!(w.bytes(), 4 * 144);
    let x = gpu.zeroed("x", 2 * 256 * 4).unwrap();
    let y = gpu.zeroed("y", 2 * 4 * 4).unwrap();
    let only_f32 = MatmulKernels::for_types(&gpu, &[GgmlType::F32]).unwrap();
    let mut rec = gpu.record("bad");
    let e = only_f32.record(&mut rec, &w, &x, 0, &y, 0, 1).unwrap_err();
    assert!(matches!(e, AccelError::UnsupportedType { .. }), "{e}");

    let kernels = MatmulKernels::for_types(&gpu, &[GgmlType::Q4_K]).unwrap();
    // x holds two tokens: three, or two from an offset, run past its end.
    let e = kernels.record(&mut rec, &w, &x, 0, &y, 0, 3).unwrap_err();
    assert!(e.to_string().contains("run past"), "{e}");
    let e = kernels.record(&mut rec, &w, &x, 1, &y, 0, 2).unwrap_err();
    assert!(e.to_string().contains("run past"), "{e}");
    let e = kernels.record(&mut rec, &w, &x, 0, &y, 1, 2).unwrap_err();
    assert!(e.to_string().contains("run past"), "{e}");
    let e = kernels.record(&mut rec, &w, &x, 0, &x, 0, 1).unwrap_err();
    assert!(e.to_string().contains("same buffer"), "{e}");
    // Nothing bad was recorded: the recording still submits, and two tokens fit.
    kernels.record(&mut rec, &w, &x, 0, &y, 0, 2).unwrap();
    rec.submit_and_wait().unwrap();
    assert_eq!(gpu.read_f32(&y, 8).unwrap(), vec![0.0; 8]);
}

/// Batch invariance: a token's outputs are bit for bit the same whether it runs alone (GEMV),
/// in a small batch (GEMV, several token groups) or in a prompt (GEMM), with either GEMV
/// reduction, for row lengths that give one slice per run and several.
#[test]
fn gemv_and_gemm_give_the_same_bits() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16, GgmlType::F32];
    let mut all = vec![MatmulKernels::with_subgroups(&gpu, &types, false).unwrap()];
    if gpu.features.subgroup {
        all.push(MatmulKernels::for_types(&gpu, &types).unwrap());
    }
    let mut rng = StdRng::seed_from_u64(99);
    const SOLO: [usize; 3] = [0, 9, 35];
    for ty in types {
        // Rows of 8 slices of 32 values (one per run), 72 (2 per run, 36 runs) or 130 (3 per
        // run, 44 runs).
        let cols_cases: &[usize] = match ty.block_size() {
            1 => &[37, 4150],
            32 => &[256, 2304, 4160],
            _ => &[256, 2304],
        };
        for &cols in cols_cases {
            // Two token tiles of the GEMM, five token groups of the GEMV.
            let rows = 19;
            let n = 36;
            let data = random_weights(ty, rows, cols, &mut rng);
            let x = random_f32(n * cols, &mut rng);
            let w = GpuMatrix::upload(&gpu, "w", ty, rows, cols, &data).unwrap();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
            let mut outputs = Vec::new();
            for kernels in &all {
                for path in [MatmulPath::Gemm, MatmulPath::Gemv] {
                    let yb = gpu.zeroed("y", (n * rows * 4) as u64).unwrap();
                    let mut rec = gpu.record("batch");
                    kernels
                        .record_path(path, &mut rec, &w, &xb, 0, &yb, 0, n as u32)
                        .unwrap();
                    rec.submit_and_wait().unwrap();
                    outputs.push(gpu.read_f32(&yb, n * rows).unwrap());
                }
                // Some tokens alone, as decode runs them (the rest stay zero).
                let yb = gpu.zeroed("y", (n * rows * 4) as u64).unwrap();
                let mut rec = gpu.record("solo");
                for t in SOLO {
                    let (xo, yo) = ((t * cols) as u32, (t * rows) as u32);
                    kernels.record(&mut rec, &w, &xb, xo, &yb, yo, 1).unwrap();
                }
                rec.submit_and_wait().unwrap();
                let mut solo = gpu.read_f32(&yb, n * rows).unwrap();
                for t in (0..n).filter(|t| !SOLO.contains(t)) {
                    let r = t * rows..(t + 1) * rows;
                    solo[r.clone()].copy_from_slice(&outputs[0][r]);
                }
                outputs.push(solo);
            }
            for (k, out) in outputs.iter().enumerate().skip(1) {
                for (i, (a, b)) in outputs[0].iter().zip(out).enumerate() {
                    assert!(
                        a == b,
                        "{ty} {rows}×{cols}: way {k} differs at token {} row {}: {a} vs {b}",
                        i / rows,
                        i % rows
                    );
                }
            }
        }
    }
}

/// A batch of matrices (DeepSeek's per-head `attn_k_b`/`attn_v_b`) in one dispatch per part
/// gives each matrix's product bit for bit as its own `record_path` does: GEMV and GEMM token
/// counts, packed and padded strides, a shared x (stride 0), a batch split over several
/// bindings, with either GEMV reduction. Outputs between and around the products keep their
/// sentinel.
#[test]
fn a_batched_matmul_is_its_matrices_one_by_one() {
    let Some(gpu) = test_gpu() else { return };
    let types = [GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16, GgmlType::F32];
    let mut all = vec![MatmulKernels::with_subgroups(&gpu, &types, false).unwrap()];
    if gpu.features.subgroup {
        all.push(MatmulKernels::for_types(&gpu, &types).unwrap());
    }
    let mut rng = StdRng::seed_from_u64(17);
    const SENTINEL: f32 = -777.0;
    for ty in types {
        let cols = if ty.block_size() == 1 { 37 } else { 512 };
        let (batch, rows) = (5, 70);
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let data = random_weights(ty, batch * rows, cols, &mut rng);
        let one_by_one: Vec<GpuMatrix> = (0..batch)
            .map(|z| {
                let bytes = &data[z * rows * row_bytes..(z + 1) * rows * row_bytes];
                GpuMatrix::upload(&gpu, "w", ty, rows, cols, bytes).unwrap()
            })
            .collect();
        let w_one = GpuMatrix::upload_batched(&gpu, "w", ty, batch, rows, cols, &data).unwrap();
        // Two matrices per binding: three parts.
        let split = 2 * rows * row_bytes + row_bytes;
        let w_split = GpuMatrix::upload_batched_with_limit(
            &gpu,
            "w",
            ty,
            batch,
            rows,
            cols,
            &data,
            split as u64,
        )
        .unwrap();
        assert_eq!(
            (w_one.batch(), w_one.rows(), w_one.cols()),
            (batch, rows, cols)
        );
        assert_eq!((w_one.parts(), w_split.parts()), (1, 3));
        #[derive(Clone, Copy)]
        enum Strides {
            Packed,
            Padded,
            SharedX,
        }
        for (w, n_tokens, strides) in [
            (&w_one, 1, Strides::Packed),
            (&w_one, 9, Strides::SharedX),
            (&w_one, 40, Strides::Padded),
            (&w_split, 3, Strides::Padded),
            (&w_split, 40, Strides::SharedX),
        ] {
            let x_len = n_tokens * cols;
            let y_len = n_tokens * rows;
            let (xo, xs, yo, ys) = match strides {
                Strides::Packed => (0, x_len, 0, y_len),
                Strides::Padded => (3, x_len + 5, 7, y_len + 11),
                Strides::SharedX => (1, 0, 2, y_len + 1),
            };
            let x = random_f32(xo + (batch - 1) * xs + x_len + 3, &mut rng);
            let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
            let y_total = yo + (batch - 1) * ys + y_len + 4;
            let y_init = vec![SENTINEL; y_total];
            for kernels in &all {
                for path in [MatmulPath::Gemv, MatmulPath::Gemm] {
                    let yb = gpu.upload("y", bytemuck::cast_slice(&y_init)).unwrap();
                    let mut rec = gpu.record("batched");
                    kernels
                        .record_batched(
                            path,
                            &mut rec,
                            w,
                            Strided::at(&xb, xo as u32, xs as u32),
                            Strided::at(&yb, yo as u32, ys as u32),
                            n_tokens as u32,
                        )
                        .unwrap();
                    // One dispatch per part, whatever the batch.
                    assert_eq!(rec.dispatches(), w.parts() as u64);
                    rec.submit_and_wait().unwrap();
                    let got = gpu.read_f32(&yb, y_total).unwrap();
                    let yb = gpu.upload("y", bytemuck::cast_slice(&y_init)).unwrap();
                    let mut rec = gpu.record("one by one");
                    for (z, m) in one_by_one.iter().enumerate() {
                        let (x0, y0) = ((xo + z * xs) as u32, (yo + z * ys) as u32);
                        kernels
                            .record_path(path, &mut rec, m, &xb, x0, &yb, y0, n_tokens as u32)
                            .unwrap();
                    }
                    rec.submit_and_wait().unwrap();
                    let want = gpu.read_f32(&yb, y_total).unwrap();
                    let label = format!(
                        "{ty} batch {batch}×{rows}×{cols} parts {} tokens {n_tokens} \
                                 x {xo}+z·{xs} y {yo}+z·{ys} {path:?}",
                        w.parts()
                    );
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            a.to_bits() == b.to_bits(),
                            "{label}: y[{i}] batched {a} one by one {b}"
                        );
                    }
                    let written = (0..batch)
                        .map(|z| yo + z * ys..yo + z * ys + y_len)
                        .collect::<Vec<_>>();
                    for (i, v) in got.iter().enumerate() {
                        let inside = written.iter().any(|r| r.contains(&i));
                        assert_eq!(*v == SENTINEL, !inside, "{label}: y[{i}] = {v}");
                    }
                }
            }
        }
    }
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let Some(gpu) = test_gpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let (batch, rows, cols) = (4, 6, 32);
    let data = random_weights(GgmlType::Q8_0, batch * rows, cols, &mut rng);
    let q8 = GgmlType::Q8_0;
    let e = GpuMatrix::upload_batched(&gpu, "k_b", q8, batch, rows, cols, &data[..34 * 23])
        .unwrap_err();
    assert!(matches!(e, AccelError::BadShape { .. }), "{e}");
    assert!(e.to_string().contains("4 matrices"), "{e}");
    let e = GpuMatrix::upload_batched(&gpu, "k_b", q8, 0, rows, cols, &[]).unwrap_err();
    assert!(matches!(e, AccelError::BadShape { .. }), "{e}");
    // One matrix (6 rows of 34 bytes) larger than a part: a batch is split at whole matrices.
    let e = GpuMatrix::upload_batched_with_limit(&gpu, "k_b", q8, batch, rows, cols, &data, 200)
        .unwrap_err();
    assert!(matches!(e, AccelError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("one matrix"), "{e}");

    let w = GpuMatrix::upload_batched(&gpu, "k_b", q8, batch, rows, cols, &data).unwrap();
    assert_eq!(w.bytes(), (batch * rows * 34).next_multiple_of(4) as u64);
    let kernels = MatmulKernels::for_types(&gpu, &[q8]).unwrap();
    let x = gpu.zeroed("x", (batch * 2 * cols * 4) as u64).unwrap();
    let y = gpu.zeroed("y", (batch * 2 * rows * 4) as u64).unwrap();
    let mut rec = gpu.record("bad batches");
    let (xs, ys) = ((2 * cols) as u32, (2 * rows) as u32);
    let mut run = |x0, xs, y0, ys, n| {
        kernels
            .record_batched(
                MatmulPath::Auto,
                &mut rec,
                &w,
                Strided::at(&x, x0, xs),
                Strided::at(&y, y0, ys),
                n,
            )
            .map_err(|e| e.to_string())
    };
    // Outputs that overlap (a plain `record` of a batch, stride 0, included).
    let e = run(0, xs, 0, ys - 1, 2).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    let e = run(0, xs, 0, 0, 1).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    // The last matrix's rows past the end of x or y.
    let e = run(1, xs, 0, ys, 2).unwrap_err();
    assert!(e.contains("run past"), "{e}");
    let e = run(0, xs, 0, ys + 1, 2).unwrap_err();
    assert!(e.contains("run past"), "{e}");
    // Nothing bad was recorded: the good one runs.
    run(0, xs, 0, ys, 2).unwrap();
    rec.submit_and_wait().unwrap();
    let e = kernels
        .record(&mut gpu.record("plain"), &w, &x, 0, &y, 0, 1)
        .unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");

    // More matrices in one binding than a grid dimension allows (z of the dispatch).
    let n = gpu.limits.max_compute_workgroups_per_dimension as usize + 1;
    let zeros = vec![0u8; n * 4];
    let w = GpuMatrix::upload_batched(&gpu, "tiny", GgmlType::F32, n, 1, 1, &zeros).unwrap();
    assert_eq!(w.parts(), 1);
    let f32k = MatmulKernels::for_types(&gpu, &[GgmlType::F32]).unwrap();
    let x = gpu.zeroed("x", (n * 4) as u64).unwrap();
    let y = gpu.zeroed("y", (n * 4) as u64).unwrap();
    let e = f32k
        .record_batched(
            MatmulPath::Auto,
            &mut gpu.record("tall batch"),
            &w,
            Strided::at(&x, 0, 1),
            Strided::at(&y, 0, 1),
            1,
        )
        .unwrap_err();
    assert!(e.to_string().contains("per dimension"), "{e}");
}
