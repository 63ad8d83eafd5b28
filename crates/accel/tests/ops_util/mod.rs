//! Shared by the ops tests: random data, uploads, read-backs and comparisons.
#![allow(dead_code)]

use accel::{Gpu, GpuBuffer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> GpuBuffer {
    gpu.upload(label, bytemuck::cast_slice(data)).unwrap()
}

pub fn read(gpu: &Gpu, buf: &GpuBuffer) -> Vec<f32> {
    gpu.read_f32(buf, buf.len as usize / 4).unwrap()
}

/// Every `got[i]` within `abs + rel·|want[i]|` of `want[i]`.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= abs + rel * w.abs()
        } else {
            g == w
        };
        assert!(ok, "{what}[{i}]: GPU {g} vs CPU {w}");
    }
}

/// `y = W·x` for a row-major `W` of `n_out × n_in` (the projections the CPU does with
/// its quantized matmul; here plain f32).
pub fn matvec(w: &[f32], x: &[f32], n_out: usize) -> Vec<f32> {
    let n_in = x.len();
    assert_eq!(w.len(), n_out * n_in);
    (0..n_out)
        .map(|o| {
            w[o * n_in..(o + 1) * n_in]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}
