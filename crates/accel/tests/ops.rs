//! The elementwise and row ops (norm, add, activations, softmax, RoPE, row copies) against
//! their CPU references in `kernels`, on whatever adapter the tests get (lavapipe in CI).

mod ops_util;

use accel::ops::{Ops, RopeTable, Rows};
use accel::testing::test_gpu;
use accel::AccelError;
use kernels::activation::{glu_inplace, Glu};
use kernels::norm::{rms_norm, rms_norm_unweighted_inplace};
use kernels::rope::{rope_heads, RopeMode, RopeParams};
use kernels::softmax::{softmax_scaled_masked_inplace, softmax_with_sink_inplace};
use ops_util::*;

#[test]
fn rms_norm_matches_the_cpu_weighted_unweighted_in_place_and_strided() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut r = rng(1);
    for (n_rows, width) in [(1usize, 1usize), (3, 7), (4, 300), (2, 1000)] {
        let eps = 1e-6;
        let x = random(&mut r, n_rows * width, -3.0, 3.0);
        let w = random(&mut r, width, -2.0, 2.0);
        let xb = upload(&gpu, "x", &x);
        let wb = upload(&gpu, "w", &w);
        let out = gpu.zeroed("out", (n_rows * width * 4) as u64).unwrap();
        let inplace = upload(&gpu, "x in place", &x);
        let mut rec = gpu.record("norm");
        let dense = |b| Rows::dense(b, width);
        ops.rms_norm(
            &mut rec,
            dense(&xb),
            Some(dense(&out)),
            n_rows,
            width,
            Some(&wb),
            eps,
        )
        .unwrap();
        ops.rms_norm(&mut rec, dense(&inplace), None, n_rows, width, None, eps)
            .unwrap();
        rec.submit_and_wait().unwrap();
        let mut want = vec![0f32; n_rows * width];
        let mut want_unw = x.clone();
        for t in 0..n_rows {
            let s = t * width..(t + 1) * width;
            rms_norm(&x[s.clone()], &w, eps, &mut want[s.clone()]);
            rms_norm_unweighted_inplace(&mut want_unw[s], eps);
        }
        assert_close(&read(&gpu, &out), &want, 1e-6, 2e-6, "weighted");
        assert_close(&read(&gpu, &inplace), &want_unw, 1e-6, 2e-6, "unweighted");
    }
    // A part of each row (DeepSeek's latent: the first 24 of 40), into another layout.
    let (n_rows, width, stride) = (5, 24, 40);
    let x = random(&mut r, n_rows * stride, -3.0, 3.0);
    let w = random(&mut r, width, 0.5, 1.5);
    let (xb, wb) = (upload(&gpu, "x", &x), upload(&gpu, "w", &w));
    let out = upload(&gpu, "out", &vec![7.0; 2 + n_rows * 30]);
    let mut rec = gpu.record("strided norm");
    ops.rms_norm(
        &mut rec,
        Rows::at(&xb, 0, stride),
        Some(Rows::at(&out, 2, 30)),
        n_rows,
        width,
        Some(&wb),
        1e-5,
    )
    .unwrap();
    rec.submit_and_wait().unwrap();
    let got = read(&gpu, &out);
    for t in 0..n_rows {
        let mut want = vec![0f32; width];
        rms_norm(&x[t * stride..t * stride + width], &w, 1e-5, &mut want);
        assert_close(
            &got[2 + t * 30..2 + t * 30 + width],
            &want,
            1e-6,
            2e-6,
            "strided",
        );
        // The rest of the destination row is untouched.
        assert!(got[2 + t * 30 + width..2 + (t + 1) * 30]
            .iter()
            .all(|&v| v == 7.0));
    }
    assert_eq!(&got[..2], &[7.0, 7.0]);
}

#[test]
fn add_is_the_residual_and_the_bias() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut r = rng(2);
    let (n_rows, width) = (3, 517);
    let x = random(&mut r, n_rows * width, -1.0, 1.0);
    let y = random(&mut r, n_rows * width, -1.0, 1.0);
    let bias = random(&mut r, width, -1.0, 1.0);
    let (xb, yb, bb) = (
        upload(&gpu, "x", &x),
        upload(&gpu, "y", &y),
        upload(&gpu, "bias", &bias),
    );
    let mut rec = gpu.record("add");
    ops.add(
        &mut rec,
        Rows::dense(&xb, width),
        Rows::dense(&yb, width),
        n_rows,
        width,
    )
    .unwrap();
    ops.add(
        &mut rec,
        Rows::dense(&xb, width),
        Rows::at(&bb, 0, 0),
        n_rows,
        width,
    )
    .unwrap();
    rec.submit_and_wait().unwrap();
    let mut want = x.clone();
    for t in 0..n_rows {
        let row = &mut want[t * width..(t + 1) * width];
        kernels::vector::add_inplace(row, &y[t * width..(t + 1) * width]);
        kernels::vector::add_inplace(row, &bias);
    }
    assert_eq!(read(&gpu, &xb), want, "adds are exact");
}

#[test]
fn glu_matches_silu_and_swiglu_oai_with_a_fused_gate_up() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut r = rng(3);
    let (n_rows, width) = (3, 301);
    for act in [Glu::Silu, Glu::GPT_OSS] {
        // One fused projection: each row is [gate | up].
        let mut fused = random(&mut r, n_rows * 2 * width, -30.0, 30.0);
        // The extremes: exp overflows, and gpt-oss's clamps.
        fused[..6].copy_from_slice(&[-1000.0, -100.0, 0.0, 100.0, 1000.0, -90.0]);
        let fb = upload(&gpu, "gate+up", &fused);
        let out = gpu.zeroed("out", (n_rows * width * 4) as u64).unwrap();
        let mut rec = gpu.record("glu");
        ops.glu(
            &mut rec,
            act,
            Rows::at(&fb, 0, 2 * width),
            Rows::at(&fb, width, 2 * width),
            Rows::dense(&out, width),
            n_rows,
            width,
        )
        .unwrap();
        rec.submit_and_wait().unwrap();
        let mut want = Vec::new();
        for t in 0..n_rows {
            let row = &fused[t * 2 * width..(t + 1) * 2 * width];
            let mut g = row[..width].to_vec();
            glu_inplace(act, &mut g, &row[width..]);
            want.extend(g);
        }
        let got = read(&gpu, &out);
        assert!(got.iter().all(|v| v.is_finite()), "{act:?}: no inf/NaN");
        assert_close(&got, &want, 1e-5, 1e-5, &format!("{act:?}"));
    }
}

#[test]
fn softmax_matches_the_scaled_masked_and_sink_forms() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut r = rng(4);
    let ninf = f32::NEG_INFINITY;
    for n in [1usize, 17, 300, 1000] {
        let n_rows = 4;
        let x = random(&mut r, n_rows * n, -20.0, 20.0);
        // Row 0 unmasked, row 1 partly −inf, row 2 fully −inf, row 3 an additive mask.
        let mut mask = random(&mut r, n_rows * n, -1.0, 0.0);
        mask[..n].fill(0.0);
        for (c, m) in mask[n..2 * n].iter_mut().enumerate() {
            if c % 3 == 1 {
                *m = ninf;
            }
        }
        mask[2 * n..3 * n].fill(ninf);
        let (xb, mb) = (upload(&gpu, "x", &x), upload(&gpu, "mask", &mask));
        let mut rec = gpu.record("softmax");
        ops.softmax(
            &mut rec,
            Rows::dense(&xb, n),
            n_rows,
            n,
            0.125,
            Some(Rows::dense(&mb, n)),
            None,
        )
        .unwrap();
        rec.submit_and_wait().unwrap();
        let mut want = x.clone();
        for t in 0..n_rows {
            let s = t * n..(t + 1) * n;
            softmax_scaled_masked_inplace(&mut want[s.clone()], 0.125, Some(&mask[s]));
        }
        let got = read(&gpu, &xb);
        assert_close(&got, &want, 1e-6, 1e-5, &format!("masked n={n}"));
        assert!(
            got[2 * n..3 * n].iter().all(|&v| v == 0.0),
            "fully masked row"
        );

        // Sinks, cycling over 3 "heads"; one is −inf (no sink at all).
        let sinks = [2.5f32, ninf, -3.0];
        let sb = upload(&gpu, "sinks", &sinks);
        let xb = upload(&gpu, "x", &x);
        let mut rec = gpu.record("softmax with sinks");
        ops.softmax(
            &mut rec,
            Rows::dense(&xb, n),
            n_rows,
            n,
            1.0,
            None,
            Some((&sb, 3)),
        )
        .unwrap();
        rec.submit_and_wait().unwrap();
        let mut want = x.clone();
        for t in 0..n_rows {
            softmax_with_sink_inplace(&mut want[t * n..(t + 1) * n], sinks[t % 3]);
        }
        assert_close(&read(&gpu, &xb), &want, 1e-6, 1e-5, &format!("sinks n={n}"));
    }
}

fn rope_case(
    gpu: &accel::Gpu,
    ops: &Ops,
    p: RopeParams,
    head_dim: usize,
    offset: usize,
    positions: &[usize],
    ff: Option<&[f32]>,
) {
    let mut r = rng(5);
    let (n_heads, n) = (3, positions.len());
    // A token row holds the heads plus 5 floats of something else (stride > width).
    let stride = n_heads * head_dim + 5;
    let x = random(&mut r, n * stride + 2, -1.0, 1.0);
    let xb = upload(gpu, "x", &x);
    let mut table = RopeTable::new(gpu, n + 1, p.n_dims).unwrap();
    // Row 0 of the table is a dummy: the op reads from table_row0 = 1.
    let mut at = vec![0usize];
    at.extend_from_slice(positions);
    table.fill(gpu, &p, &at, ff).unwrap();
    let mut rec = gpu.record("rope");
    ops.rope(
        &mut rec,
        Rows::at(&xb, 2, stride),
        n,
        n_heads,
        head_dim,
        offset,
        &table,
        1,
        p.mode,
    )
    .unwrap();
    rec.submit_and_wait().unwrap();
    let mut want = x.clone();
    let mut cache = vec![0f32; p.n_dims];
    for (t, &pos) in positions.iter().enumerate() {
        p.cache(pos as i32, ff, &mut cache);
        let row = &mut want[2 + t * stride..2 + t * stride + n_heads * head_dim];
        rope_heads(row, head_dim, offset, &cache, p.mode);
    }
    // The same angles and the same two products per value: at most an FMA's rounding.
    assert_close(
        &read(gpu, &xb),
        &want,
        2e-7,
        1e-6,
        &format!("{p:?} offset {offset}"),
    );
}

#[test]
fn rope_matches_rope_heads_in_every_mode() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    for mode in [RopeMode::Norm, RopeMode::Neox] {
        let plain = RopeParams::new(64, mode, 10000.0);
        rope_case(&gpu, &ops, plain, 64, 0, &[0, 1, 7, 1000, 60000], None);
        // Partial rotary (the first 32 of 128) and DeepSeek's q_pe (the last 64 of 192).
        rope_case(
            &gpu,
            &ops,
            RopeParams::new(32, mode, 10000.0),
            128,
            0,
            &[9, 77],
            None,
        );
        rope_case(&gpu, &ops, plain, 192, 128, &[0, 5, 300], None);
        // YaRN (gpt-oss's untruncated correction range too) and frequency factors.
        let yarn = RopeParams {
            freq_scale: 1.0 / 40.0,
            ext_factor: 1.0,
            n_ctx_orig: 4096,
            ..plain
        };
        rope_case(&gpu, &ops, yarn, 64, 0, &[3, 4095, 65000], None);
        let oss = RopeParams {
            truncate_corr: false,
            ..yarn
        };
        rope_case(&gpu, &ops, oss, 64, 0, &[17, 20000], None);
        let ff: Vec<f32> = (0..32).map(|j| 1.0 + j as f32 * 0.25).collect();
        rope_case(&gpu, &ops, plain, 64, 0, &[1, 250], Some(&ff));
    }
}

#[test]
fn copy_rows_gathers_and_broadcasts() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let src: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let sb = upload(&gpu, "src", &src);
    let db = upload(&gpu, "dst", &[-1.0; 31]);
    let mut rec = gpu.record("copy");
    // Source rows of 10 from offset 3, 2 floats each, each written to 3 rows of 5.
    ops.copy_rows(&mut rec, Rows::at(&sb, 3, 10), Rows::at(&db, 1, 5), 6, 2, 3)
        .unwrap();
    rec.submit_and_wait().unwrap();
    let got = read(&gpu, &db);
    for r in 0..6 {
        let s = 3 + (r / 3) * 10;
        assert_eq!(
            &got[1 + r * 5..3 + r * 5],
            &[s as f32, s as f32 + 1.0],
            "row {r}"
        );
        assert_eq!(&got[3 + r * 5..6 + r * 5], &[-1.0; 3]);
    }
}

#[test]
fn bad_shapes_are_errors_before_the_gpu_sees_them() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let small = upload(&gpu, "small", &[0.0; 10]);
    let other = upload(&gpu, "other", &[0.0; 100]);
    let mut rec = gpu.record("bad");
    let e = ops
        .rms_norm(&mut rec, Rows::dense(&small, 8), None, 2, 8, None, 1e-6)
        .unwrap_err();
    assert!(matches!(e, AccelError::Validation { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("need 16 floats, the buffer holds 10"),
        "{e}"
    );
    let e = ops
        .glu(
            &mut rec,
            Glu::Silu,
            Rows::dense(&other, 10),
            Rows::dense(&other, 10),
            Rows::dense(&other, 10),
            2,
            10,
        )
        .unwrap_err();
    assert!(e.to_string().contains("both read and written"), "{e}");
    let e = ops
        .copy_rows(
            &mut rec,
            Rows::dense(&other, 10),
            Rows::dense(&small, 10),
            2,
            10,
            1,
        )
        .unwrap_err();
    assert!(e.to_string().contains("destination"), "{e}");
    let table = RopeTable::new(&gpu, 4, 8).unwrap();
    let e = ops
        .rope(
            &mut rec,
            Rows::dense(&other, 8),
            1,
            1,
            8,
            0,
            &table,
            0,
            RopeMode::Norm,
        )
        .unwrap_err();
    assert!(e.to_string().contains("filled for 0"), "{e}");
    let e = ops
        .rope(
            &mut rec,
            Rows::dense(&other, 8),
            1,
            1,
            8,
            4,
            &table,
            0,
            RopeMode::Norm,
        )
        .unwrap_err();
    assert!(e.to_string().contains("exceed a head"), "{e}");
    let mut table = table;
    let p = RopeParams::new(8, RopeMode::Norm, 1e4);
    let e = table.fill(&gpu, &p, &[0; 5], None).unwrap_err();
    assert!(
        e.to_string().contains("5 positions for a table of 4"),
        "{e}"
    );
    let e = table.fill(&gpu, &p, &[0], Some(&[1.0; 3])).unwrap_err();
    assert!(
        e.to_string().contains("3 frequency factors for 4 pairs"),
        "{e}"
    );
    assert!(RopeTable::new(&gpu, 4, 7).is_err());
    // Nothing bad was recorded: the recording still submits.
    rec.submit_and_wait().unwrap();
}
