//! Micro-benchmark of `quant::dot`: GB/s of weight bytes per weight type, one thread.
//!
//! `cargo bench -p quant --bench dot [-- FILTER]`
//!
//! Columns:
//! - `l2 x1`: `dot` over 16 weight rows of 4096 values that stay in L1/L2 (kernel speed),
//!   on the best path of this CPU;
//! - `l2 x4`: `dot_multi` with 4 activation rows (GEMM path), counting each weight byte
//!   once per activation row (so 4x the bytes of `x1` for the same weight traffic);
//! - `avx2 x1`, `avx2 x4`: the same on the plain AVX2 path (when the best one is VNNI);
//! - `dram x1`: `dot` streaming a 64 MiB weight matrix from memory (GEMV-like);
//! - `scalar`: the reference path, in-cache, for comparison.

use quant::dot::{self, vec_dot_with, SimdPath, VecDot};
use quant::GgmlType;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Offsets of the f16 scale fields within one weight block (set to a sane value so no
/// NaN/subnormal slows the float parts).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ1_S => &[0],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

fn weights(ty: GgmlType, n: usize, rows: usize, rng: &mut Lcg) -> Vec<u8> {
    let row = ty.row_bytes(n as u64).unwrap() as usize;
    let mut out = vec![0u8; row * rows];
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&((rng.next() as f32 - 128.0) / 64.0).to_le_bytes());
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&[0, 0x3c ^ (rng.next() & 0x83)]);
            }
        }
        _ => {
            out.iter_mut().for_each(|b| *b = rng.next());
            let bs = ty.type_size();
            let h = half::f16::from_f32(0.01).to_bits().to_le_bytes();
            for blk in out.chunks_exact_mut(bs) {
                for &o in f16_fields(ty) {
                    blk[o..o + 2].copy_from_slice(&h);
                }
                // Scales stored outside an f16 field: MXFP4's E8M0 byte (2^(e − 128)), IQ1_M's
                // f16 spread over the top nibbles of its 4 scale words.
                if ty == GgmlType::MXFP4 {
                    blk[0] = 121;
                }
                if ty == GgmlType::IQ1_M {
                    for k in 0..4 {
                        let nib = (u16::from_le_bytes(h) >> (4 * k)) as u8 & 0xf;
                        blk[49 + 2 * k] = (blk[49 + 2 * k] & 0x0f) | (nib << 4);
                    }
                }
                if ty == GgmlType::Q8_0 {
                    blk[2..]
                        .iter_mut()
                        .filter(|b| **b == 0x80)
                        .for_each(|b| *b = 0x81);
                }
            }
        }
    }
    out
}

fn acts(act: GgmlType, n: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut out = Vec::new();
    match act {
        GgmlType::F32 => (0..n).for_each(|_| {
            out.extend_from_slice(&((rng.next() as f32 - 128.0) / 64.0).to_le_bytes())
        }),
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            for _ in 0..n / 32 {
                out.extend_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
                if act == GgmlType::Q8_1 {
                    out.extend_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
                }
                (0..32).for_each(|_| out.push(rng.next()));
            }
        }
        GgmlType::Q8_K => {
            for _ in 0..n / 256 {
                out.extend_from_slice(&0.01f32.to_le_bytes());
                let qs: Vec<u8> = (0..256).map(|_| rng.next()).collect();
                out.extend_from_slice(&qs);
                for g in qs.chunks_exact(16) {
                    let s: i32 = g.iter().map(|&q| q as i8 as i32).sum();
                    out.extend_from_slice(&(s as i16).to_le_bytes());
                }
            }
        }
        _ => unreachable!(),
    }
    out
}

/// Nanoseconds this thread has been on a CPU (Linux `schedstat`), so that the rates are not
/// diluted when other processes share the cores; falls back to wall time elsewhere.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The best of 5 runs of [`rate_once`] (the machine is shared: the best run is the one least
/// disturbed by other processes evicting our caches).
fn rate(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| rate_once(bytes, budget / 5, &mut f))
        .fold(0.0, f64::max)
}

/// Runs `f` (which processes `bytes` weight bytes) for about `budget` of CPU time; GB/s.
fn rate_once(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let wall = Instant::now();
    let cpu0 = cpu_ns();
    let mut iters = 0u64;
    let elapsed = || match (cpu0, cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b - a),
        _ => wall.elapsed(),
    };
    // Batches of calls between clock reads (reading schedstat is a few syscalls).
    let mut batch = 1u64;
    while elapsed() < budget && wall.elapsed() < 20 * budget {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        iters += batch;
        if t.elapsed() < Duration::from_millis(1) {
            batch *= 2;
        }
    }
    bytes as f64 * iters as f64 / elapsed().as_secs_f64() / 1e9
}

fn in_cache(vd: &VecDot, n: usize, w: &[u8], a: &[Vec<u8>], multi: bool, budget: Duration) -> f64 {
    let row = vd.weight_row_bytes(n).unwrap();
    let rows = w.len() / row;
    if multi {
        let ar: Vec<&[u8]> = a.iter().map(|v| v.as_slice()).collect();
        let mut out = [0f32; 4];
        rate(w.len() * 4, budget, || {
            for r in 0..rows {
                vd.dot_multi(n, &w[r * row..(r + 1) * row], black_box(&ar), &mut out);
                black_box(&out);
            }
        })
    } else {
        rate(w.len(), budget, || {
            for r in 0..rows {
                black_box(vd.dot(n, &w[r * row..(r + 1) * row], black_box(&a[0])));
            }
        })
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // Row length: 4096 by default, `DOT_BENCH_N=256` to see the per-call overhead.
    let n: usize = std::env::var("DOT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let budget = Duration::from_millis(300);
    println!("simd path: {}", dot::simd_path());
    println!(
        "{:<8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   (GB/s of weight bytes, n = {n})",
        "type", "l2 x1", "l2 x4", "avx2 x1", "avx2 x4", "dram x1", "scalar"
    );
    let mut rng = Lcg(0x1234);
    for ty in dot::DOT_TYPES {
        if !filter.is_empty() && !filter.iter().any(|f| ty.name().eq_ignore_ascii_case(f)) {
            continue;
        }
        let best = dot::vec_dot_for(ty).unwrap();
        let scalar = vec_dot_with(ty, SimdPath::Scalar).unwrap();
        let a: Vec<Vec<u8>> = (0..4).map(|_| acts(best.act, n, &mut rng)).collect();
        let w = weights(ty, n, 16, &mut rng);
        let x1 = in_cache(&best, n, &w, &a, false, budget);
        let x4 = in_cache(&best, n, &w, &a, true, budget);
        let sc = in_cache(&scalar, n, &w, &a, false, budget / 3);
        let avx2 = vec_dot_with(ty, SimdPath::Avx2).unwrap();
        let (a1, a4) = if avx2.path != best.path {
            (
                in_cache(&avx2, n, &w, &a, false, budget),
                in_cache(&avx2, n, &w, &a, true, budget),
            )
        } else {
            (x1, x4)
        };
        let row = best.weight_row_bytes(n).unwrap();
        let big = weights(ty, n, (64 << 20) / row, &mut rng);
        let dram = in_cache(&best, n, &big, &a, false, budget);
        println!(
            "{:<8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            ty.name(),
            x1,
            x4,
            a1,
            a4,
            dram,
            sc
        );
    }
}
