//! Repacked vs file-order weights: GEMM GFLOP/s and GEMV GB/s of `matmul_acts` (activations
//! quantized once, outside the timing) for the DeepSeek-V2-Lite expert shapes.
//!
//! `cargo run -p kernels --release --example repack_bench -- [--threads N] [--reps R]
//! [--tokens 1,4,16,48,64] [--types Q4_K] [--shapes 2048x1408,1408x2048] [--cold MiB]`
//!
//! `--cold MiB`: instead, GEMV (1 token) from DRAM: the packed 2048 × 1408 matrix copied
//! until the copies total MiB, ops cycling through them, copies in a `Vec` (4 KiB pages)
//! vs a `WeightBuffer` (transparent huge pages), alternating; best of R passes each.
//!
//! Each case: best of R timed runs (after a warm-up), weights cache-resident (one expert's
//! matrix, as a prefill tile sees it). GFLOP/s = 2·n_in·n_out·tokens / time; GB/s = weight
//! bytes / time (meaningful for 1 token).

use kernels::matmul::{matmul_acts, quantize_acts, ActScratch, QMatrix, WeightBuffer};
use kernels::ThreadPool;
use quant::repack::{self, PackedType};
use quant::GgmlType;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").map_or(1, |v| v.parse().expect("--threads N"));
    let reps: usize = arg(&args, "--reps").map_or(20, |v| v.parse().expect("--reps R"));
    let tokens: Vec<usize> = arg(&args, "--tokens")
        .unwrap_or_else(|| "1,2,4,8,16,32,48,64".into())
        .split(',')
        .map(|v| v.parse().expect("--tokens list"))
        .collect();
    let types: Vec<GgmlType> = arg(&args, "--types")
        .unwrap_or_else(|| "Q4_K,Q5_0,Q8_0".into())
        .split(',')
        .map(|v| GgmlType::from_name(v).expect("--types: a ggml type name"))
        .collect();
    // `--shapes 2048x128,...`: n_in × n_out pairs (default: the V2-Lite expert shapes).
    let shapes: Vec<(usize, usize)> = arg(&args, "--shapes")
        .unwrap_or_else(|| "2048x1408,1408x2048".into())
        .split(',')
        .map(|v| {
            let (a, b) = v.split_once('x').expect("--shapes: NxM,...");
            (
                a.parse().expect("--shapes: n_in"),
                b.parse().expect("--shapes: n_out"),
            )
        })
        .collect();
    let pool = ThreadPool::new(threads);
    if let Some(mib) = arg(&args, "--cold") {
        cold(&pool, &types, mib.parse().expect("--cold MiB"), reps);
        return;
    }
    println!(
        "threads {threads}, best of {reps}; path {}",
        quant::dot::simd_path()
    );
    println!("| type | n_in × n_out | tokens | file GFLOP/s | packed GFLOP/s | speed-up | file GB/s | packed GB/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for &ty in &types {
        let Some(pt) = PackedType::for_type(ty) else {
            println!("{ty}: no packed layout");
            continue;
        };
        for &(n_in, n_out) in &shapes {
            if n_in % ty.block_size() != 0 {
                println!("| {ty} | {n_in} × {n_out} | – | rows of {n_in} are not whole {ty} blocks (files store Q5_0/Q8_0 here) | | | | |");
                continue;
            }
            let mut s = 0x1234_5678u64;
            let src: Vec<f32> = (0..n_in * n_out)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
                })
                .collect();
            let mut file = vec![0u8; ty.row_bytes((n_in * n_out) as u64).unwrap() as usize];
            if quant::quantize(ty, &src, &mut file).is_err() {
                // No quantizer for this type (Q5_0): random quants, d = 0.01 per block.
                for (i, b) in file.iter_mut().enumerate() {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407 + i as u64);
                    *b = (s >> 56) as u8;
                }
                let d = quant::Half::from_f32(0.01).0;
                for blk in file.chunks_exact_mut(ty.type_size()) {
                    blk[..2].copy_from_slice(&d);
                }
            }
            let mut packed = vec![0u8; pt.matrix_bytes(n_in, n_out).unwrap()];
            repack::repack(ty, n_in, n_out, &file, &mut packed).unwrap();
            let t = Instant::now();
            repack::repack(ty, n_in, n_out, &file, &mut packed).unwrap();
            println!(
                "repack {ty} {n_in} × {n_out}: {:.2} GB/s (one thread)",
                file.len() as f64 / t.elapsed().as_secs_f64() / 1e9
            );
            let wf = QMatrix::new(ty, n_in, n_out, &file).unwrap();
            let wp = QMatrix::packed(pt, n_in, n_out, &packed).unwrap();
            for &nt in &tokens {
                let x: Vec<f32> = (0..n_in * nt)
                    .map(|i| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0)
                    .collect();
                let mut scratch = ActScratch::new();
                let xq = quantize_acts(&pool, ty, &x, n_in, &mut scratch).unwrap();
                let mut out = vec![0f32; nt * n_out];
                let mut time = |w: &QMatrix| {
                    matmul_acts(&pool, w, &xq, &mut out).unwrap();
                    let mut best = f64::INFINITY;
                    for _ in 0..reps {
                        let t = Instant::now();
                        matmul_acts(&pool, w, &xq, &mut out).unwrap();
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    best
                };
                let (tf, tp) = (time(&wf), time(&wp));
                let flops = 2.0 * (n_in * n_out * nt) as f64;
                println!(
                    "| {ty} | {n_in} × {n_out} | {nt} | {:.1} | {:.1} | {:.2}× | {:.1} | {:.1} |",
                    flops / tf / 1e9,
                    flops / tp / 1e9,
                    tf / tp,
                    file.len() as f64 / tf / 1e9,
                    packed.len() as f64 / tp / 1e9
                );
            }
        }
    }
}

/// GEMV from DRAM over many copies of one packed matrix: 4 KiB pages vs huge pages.
fn cold(pool: &ThreadPool, types: &[GgmlType], mib: usize, reps: usize) {
    println!("| type | pages | GEMV GB/s (cold, best pass) |");
    println!("|---|---|---|");
    for &ty in types {
        let Some(pt) = PackedType::for_type(ty) else {
            continue;
        };
        let (n_in, n_out) = (2048usize, 1408usize);
        let bytes = pt.matrix_bytes(n_in, n_out).unwrap();
        let copies = (mib << 20).div_ceil(bytes);
        let mut file = vec![0u8; ty.row_bytes((n_in * n_out) as u64).unwrap() as usize];
        for (i, b) in file.iter_mut().enumerate() {
            *b = (i * 131 % 251) as u8;
        }
        let d = quant::Half::from_f32(0.01).0;
        for blk in file.chunks_exact_mut(ty.type_size()) {
            blk[..2].copy_from_slice(&d);
        }
        let mut small = vec![0u8; copies * bytes];
        let mut huge = WeightBuffer::zeroed(copies * bytes).unwrap();
        for c in 0..copies {
            repack::repack(
                ty,
                n_in,
                n_out,
                &file,
                &mut small[c * bytes..(c + 1) * bytes],
            )
            .unwrap();
            repack::repack(
                ty,
                n_in,
                n_out,
                &file,
                &mut huge[c * bytes..(c + 1) * bytes],
            )
            .unwrap();
        }
        let x: Vec<f32> = (0..n_in).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let mut scratch = ActScratch::new();
        let xq = quantize_acts(pool, ty, &x, n_in, &mut scratch).unwrap();
        let mut out = vec![0f32; n_out];
        let mut pass = |buf: &[u8]| {
            let t = Instant::now();
            for c in 0..copies {
                let w = QMatrix::packed(pt, n_in, n_out, &buf[c * bytes..(c + 1) * bytes]).unwrap();
                matmul_acts(pool, &w, &xq, &mut out).unwrap();
            }
            (copies * bytes) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let (mut best_small, mut best_huge) = (0f64, 0f64);
        for _ in 0..reps {
            best_small = best_small.max(pass(&small));
            best_huge = best_huge.max(pass(&huge));
        }
        println!("| {ty} | 4 KiB (Vec) | {best_small:.1} |");
        println!("| {ty} | 2 MiB (WeightBuffer) | {best_huge:.1} |");
    }
}
