//! Matmul benchmarks (not tests): memory read bandwidth, GEMV GB/s per weight type, and
//! GEMM vs GEMV-per-token. Prints Markdown tables (copied into bench/RESULTS.md).
//!
//!     cargo bench -p kernels --bench matmul            # everything (~2 min on 2 cores)
//!     cargo bench -p kernels --bench matmul -- --quick # fewer types and repetitions
//!     ... -- --only bw|pool|gemv|gemm --types Q4_K,Q8_0  # a subset
//!     ... -- --only steps                 # k-token steps (k = 1..16) vs one token
//!     ... -- --shapes 896x4864,4864x896    # other n_in × n_out shapes
//!
//! Method:
//! - Read bandwidth: a 1 GiB buffer (touched first so every page is resident) is summed
//!   with 256-bit loads and four independent accumulators, split into equal parts across
//!   1 or 2 pool threads; best of 5 passes. GB = 10⁹ bytes.
//! - GEMV: one token × a weight matrix, the full op (activation quantization + dots +
//!   barrier). "cold": the matrix is replicated into enough distinct copies to total
//!   ≥ 512 MiB and the op cycles through them, so every byte comes from DRAM (as MoE
//!   experts do at decode); "hot": the same copy every time (cache-resident when it fits
//!   in L2/L3). GB/s = weight bytes / time per op; best of the repetitions (each pass
//!   ≥ 16 ops, and ≥ 512 MiB when cold). Because the 2 cores are shared with other
//!   work, each GEMV pass is interleaved with a 256 MiB read-bandwidth pass on the same
//!   threads and the table compares the best of each (same conditions).
//! - GEMM: 512 tokens in one op vs 512 GEMV ops, same matrix; tok/s and GFLOP/s
//!   (2·n_in·n_out per token); best of 3.
//!
//! Weights are random bytes (the dots' speed does not depend on the values), except the
//! float types, which are quantized from random f32 so no NaN/denormal slows them.

use kernels::matmul::{matmul, quantize_acts, ActScratch, QMatrix, WeightBuffer};
use kernels::ThreadPool;
use quant::repack::{self, PackedType};
use quant::GgmlType;
use std::hint::black_box;
use std::time::Instant;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn gb(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

// ---------------------------------------------------------------------------------------
// Read bandwidth.

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_read_avx2(buf: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let p = buf.as_ptr() as *const __m256i;
    let n = buf.len() / 16; // groups of 4 vectors
    for i in 0..n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: index 4i + k < buf.len() / 4 vectors.
            *a = _mm256_add_epi64(*a, unsafe { _mm256_loadu_si256(p.add(4 * i + k)) });
        }
    }
    let mut out = [0u64; 4];
    let s = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: `out` holds 4 u64.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, s) };
    out.iter().fold(0u64, |a, b| a.wrapping_add(*b))
}

fn sum_read(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 checked.
        return unsafe { sum_read_avx2(buf) };
    }
    buf.iter().fold(0u64, |a, b| a.wrapping_add(*b))
}

/// GB/s of one pass reading `buf`, split into equal parts across the pool's threads.
fn read_pass(pool: &ThreadPool, buf: &[u64]) -> f64 {
    let parts = pool.n_threads();
    let per = buf.len() / parts / 16 * 16;
    let total = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    pool.run_chunked(parts, 1, |r, _| {
        for p in r {
            let s = sum_read(&buf[p * per..(p + 1) * per]);
            total.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let secs = t.elapsed().as_secs_f64();
    black_box(total.into_inner());
    gb(per * parts * 8, secs)
}

/// Best of `passes` read passes over the whole buffer.
fn read_bandwidth(pool: &ThreadPool, buf: &[u64], passes: usize) -> f64 {
    (0..passes)
        .map(|_| read_pass(pool, buf))
        .fold(0.0, f64::max)
}

/// Words in one bandwidth slice: 64 MiB, twice the L3, so every slice read is from DRAM
/// when the slices are visited in turn.
const SLICE_WORDS: usize = (64 << 20) / 8;

/// Reads `n` consecutive 64 MiB slices of `buf` starting at slice `*next` (wrapping),
/// returning (mean GB/s, fastest slice GB/s).
fn read_slices(pool: &ThreadPool, buf: &[u64], next: &mut usize, n: usize) -> (f64, f64) {
    let n_slices = buf.len() / SLICE_WORDS;
    let (mut secs, mut fastest) = (0f64, 0f64);
    for _ in 0..n {
        let s = *next % n_slices;
        *next += 1;
        let g = read_pass(pool, &buf[s * SLICE_WORDS..(s + 1) * SLICE_WORDS]);
        fastest = fastest.max(g);
        secs += (SLICE_WORDS * 8) as f64 / 1e9 / g;
    }
    ((n * SLICE_WORDS * 8) as f64 / 1e9 / secs, fastest)
}

// ---------------------------------------------------------------------------------------
// Weights.

fn make_weights(ty: GgmlType, n_in: usize, n_out: usize, rng: &mut XorShift) -> Vec<u8> {
    let bytes = ty.row_bytes(n_in as u64).unwrap() as usize * n_out;
    let mut w = vec![0u8; bytes];
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let src: Vec<f32> = (0..n_in * n_out).map(|_| rng.f32()).collect();
            quant::quantize(ty, &src, &mut w).unwrap();
        }
        GgmlType::MXFP4 => {
            // Random bytes, but E8M0 scales of ordinary size: a random exponent makes ~1 in
            // 10 blocks' products f32 subnormals, which run several times slower.
            rng.fill(&mut w);
            for (i, b) in w.iter_mut().step_by(17).enumerate() {
                *b = 121 + (i % 12) as u8;
            }
        }
        _ => rng.fill(&mut w),
    }
    w
}

/// Enough distinct copies of one random matrix (in the `packed` layout, or in file order)
/// to total ≥ 512 MiB, so that an op cycling through them reads every byte from DRAM:
/// (the copies, bytes per copy).
fn cold_copies(
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    packed: Option<PackedType>,
    rng: &mut XorShift,
) -> (WeightBuffer, usize) {
    let one = make_weights(ty, n_in, n_out, rng);
    let bytes = match packed {
        Some(p) => p.matrix_bytes(n_in, n_out).unwrap(),
        None => one.len(),
    };
    let copies = (512usize << 20).div_ceil(bytes).max(1);
    let mut all = WeightBuffer::zeroed(bytes * copies).unwrap();
    for c in 0..copies {
        let dst = &mut all[c * bytes..(c + 1) * bytes];
        match packed {
            Some(_) => repack::repack(ty, n_in, n_out, &one, dst).unwrap(),
            None => dst.copy_from_slice(&one),
        }
    }
    (all, bytes)
}

/// The copies of [`cold_copies`] as matrices.
fn copy_mats(
    all: &[u8],
    bytes: usize,
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    packed: Option<PackedType>,
) -> Vec<QMatrix<'_>> {
    all.chunks_exact(bytes)
        .map(|data| match packed {
            Some(p) => QMatrix::packed(p, n_in, n_out, data).unwrap(),
            None => QMatrix::new(ty, n_in, n_out, data).unwrap(),
        })
        .collect()
}

/// One pass over the given copies (cycled; at least 16 ops): (mean seconds per op, fastest
/// single op). The fastest op shows what the kernel does when no other process preempts
/// one of its threads mid-op.
fn gemv_pass(
    pool: &ThreadPool,
    mats: &[QMatrix<'_>],
    x: &[f32],
    out: &mut [f32],
    scratch: &mut ActScratch,
) -> (f64, f64) {
    let per_pass = mats.len().max(16);
    let mut fastest = f64::INFINITY;
    let t = Instant::now();
    for i in 0..per_pass {
        let t_op = Instant::now();
        matmul(pool, &mats[i % mats.len()], x, out, scratch).unwrap();
        fastest = fastest.min(t_op.elapsed().as_secs_f64());
    }
    black_box(&out);
    (t.elapsed().as_secs_f64() / per_pass as f64, fastest)
}

struct Opts {
    quick: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; ignore it.
    let opts = Opts {
        quick: args.iter().any(|a| a == "--quick"),
    };
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let reps = if opts.quick { 5 } else { 11 };

    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    println!("# ferromoe kernels benchmark\n");
    println!(
        "dot path: {}; pool: 2 threads pinned: {}; physical cores detected: {}\n",
        quant::dot::simd_path(),
        pools[1].pinned(),
        kernels::default_threads()
    );

    // Read bandwidth over 1 GiB; the GEMV section re-measures it interleaved with its own
    // passes (a quarter of the buffer per pass), since the machine is shared.
    let words = (1usize << 30) / 8;
    let mut bw_buf = vec![0u64; words];
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for w in bw_buf.iter_mut() {
        *w = rng.next();
    }
    if only.as_deref().is_none_or(|o| o == "bw") {
        println!("## Read bandwidth (1 GiB, AVX2 loads)\n");
        println!("| threads | best full 1 GiB pass (of 5) | fastest 64 MiB slice (of 160) |\n|---|---|---|");
        for pool in &pools {
            let full = read_bandwidth(pool, &bw_buf, 5);
            let mut next = 0;
            let (_, fastest) = read_slices(pool, &bw_buf, &mut next, 160);
            println!(
                "| {} | {full:.1} GB/s | {fastest:.1} GB/s |",
                pool.n_threads()
            );
        }
        println!();
    }

    if only.as_deref().is_none_or(|o| o == "pool") {
        // One op = publish + claim chunks + barrier. 16 items of ~0.5 µs of work each, so
        // the worker has time to join: overhead ≈ t(2 threads) − t(1 thread) / 2.
        println!("## Pool: one op of 16 items (~8 µs of work in total), best of 5 × 5k ops\n");
        println!("| threads | µs per op |\n|---|---|");
        for pool in &pools {
            let sink = std::sync::atomic::AtomicU64::new(0);
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..5_000 {
                    pool.run_chunked(16, 1, |r, _| {
                        let mut h = r.start as u64;
                        for _ in 0..400 {
                            h = black_box(h.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7));
                        }
                        sink.fetch_add(h, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                best = best.min(t.elapsed().as_secs_f64() / 5_000.0);
            }
            black_box(sink.into_inner());
            println!("| {} | {:.2} |", pool.n_threads(), best * 1e6);
        }
        println!();
    }

    let type_filter: Option<Vec<GgmlType>> = args
        .iter()
        .position(|a| a == "--types")
        .and_then(|i| args.get(i + 1))
        .map(|l| l.split(',').filter_map(GgmlType::from_name).collect());
    let types: Vec<GgmlType> = if let Some(t) = type_filter.clone() {
        t
    } else if opts.quick {
        vec![GgmlType::Q4_K, GgmlType::Q8_0]
    } else {
        use GgmlType::*;
        vec![
            Q4_K, Q8_0, Q4_0, Q5_K, Q6_K, Q3_K, Q2_K, IQ4_XS, F16, IQ1_S, IQ1_M, TQ1_0, TQ2_0,
            MXFP4, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
        ]
    };
    // `--shapes 896x4864,4864x896` replaces the default (n_in × n_out) shapes.
    let shapes: Vec<(usize, usize)> = args
        .iter()
        .position(|a| a == "--shapes")
        .and_then(|i| args.get(i + 1))
        .map(|l| {
            l.split(',')
                .filter_map(|s| {
                    let (a, b) = s.split_once('x')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(2048, 1408), (7168, 2048), (2048, 102400)]);
    let mut rng = XorShift(42);
    let mut scratch = ActScratch::new();

    if only.as_deref().is_none_or(|o| o == "gemv") {
        println!("## GEMV (1 token): GB/s of weights streamed, vs read bandwidth measured in the same run\n");
        println!("Cold = weights from DRAM (cycling over ≥ 512 MiB of copies); bw = best 256 MiB read (4 × 64 MiB");
        println!("slices) interleaved with the GEMV passes; hot = one copy, repeatedly (cache-resident if it fits).");
        println!("Best of {reps} passes.\n");
        println!("Fastest op 2t = the quickest single cold op of all passes, against the fastest 64 MiB read slice");
        println!("(both: what runs when no other process interrupts).\n");
        println!("| type | n_in × n_out | MiB | cold 1t | bw 1t | % | cold 2t | bw 2t | % | fastest op 2t | fastest bw 2t | % | hot 1t | hot 2t |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut next_slice = [0usize; 2];
        for &ty in &types {
            // File order, then (where the engine repacks this type at load) the packed
            // layout in huge-page memory, as `ferromoe` runs it by default.
            let mut cases = Vec::new();
            for &shape in &shapes {
                cases.push((shape, None));
                if let Some(p) = PackedType::for_type(ty) {
                    cases.push((shape, Some(p)));
                }
            }
            for ((n_in, n_out), packed) in cases {
                let (all, bytes) = cold_copies(ty, n_in, n_out, packed, &mut rng);
                let mats = copy_mats(&all, bytes, ty, n_in, n_out, packed);
                let label = match packed {
                    Some(p) => format!("{ty} ({})", p.name()),
                    None => ty.to_string(),
                };
                let x: Vec<f32> = (0..n_in).map(|_| rng.f32()).collect();
                let mut out = vec![0f32; n_out];
                // [threads] -> (best cold s/op, best 256 MiB bw, best hot s/op, fastest cold op,
                //              fastest 64 MiB bw slice)
                let mut best = [(f64::INFINITY, 0f64, f64::INFINITY, f64::INFINITY, 0f64); 2];
                for pool in &pools {
                    gemv_pass(pool, &mats, &x, &mut out, &mut scratch); // warm-up
                    gemv_pass(pool, &mats[..1], &x, &mut out, &mut scratch);
                }
                for _ in 0..reps {
                    for (p, pool) in pools.iter().enumerate() {
                        let (mean_bw, fastest_bw) =
                            read_slices(pool, &bw_buf, &mut next_slice[p], 4);
                        best[p].1 = best[p].1.max(mean_bw);
                        best[p].4 = best[p].4.max(fastest_bw);
                        let (mean, fastest) = gemv_pass(pool, &mats, &x, &mut out, &mut scratch);
                        best[p].0 = best[p].0.min(mean);
                        best[p].3 = best[p].3.min(fastest);
                        best[p].2 = best[p]
                            .2
                            .min(gemv_pass(pool, &mats[..1], &x, &mut out, &mut scratch).0);
                    }
                }
                let c1 = gb(bytes, best[0].0);
                let c2 = gb(bytes, best[1].0);
                let f2 = gb(bytes, best[1].3);
                println!(
                    "| {label} | {n_in} × {n_out} | {:.1} | {c1:.1} | {:.1} | {:.0}% | {c2:.1} | {:.1} | {:.0}% | {f2:.1} | {:.1} | {:.0}% | {:.1} | {:.1} |",
                    bytes as f64 / (1 << 20) as f64,
                    best[0].1,
                    100.0 * c1 / best[0].1,
                    best[1].1,
                    100.0 * c2 / best[1].1,
                    best[1].4,
                    100.0 * f2 / best[1].4,
                    gb(bytes, best[0].2),
                    gb(bytes, best[1].2),
                );
            }
        }
        println!();
    }

    if only.as_deref() == Some("steps") {
        // Decode steps of k tokens (speculative verification, several sequences): the cost of
        // a cold k-token matmul relative to one token. Weight bytes are the same for every
        // k, so a kernel at the bandwidth bound keeps the ratio near 1 for small k.
        let ks = [1usize, 2, 3, 4, 6, 8, 12, 16];
        println!("## k-token steps (cold, packed where the engine packs, 2 threads): time per op / time of k = 1\n");
        print!("| type | n_in × n_out | k = 1 GB/s |");
        for k in &ks[1..] {
            print!(" k = {k} |");
        }
        println!("\n|---|---|---|{}", "---|".repeat(ks.len() - 1));
        let step_types = type_filter.clone().unwrap_or_else(|| {
            use GgmlType::*;
            vec![Q4_K, Q5_0, Q8_0, Q6_K, Q4_0]
        });
        let pool = &pools[1];
        for &ty in &step_types {
            for &(n_in, n_out) in &shapes[..shapes.len().min(2)] {
                let packed = PackedType::for_type(ty);
                let (all, bytes) = cold_copies(ty, n_in, n_out, packed, &mut rng);
                let mats = copy_mats(&all, bytes, ty, n_in, n_out, packed);
                let kmax = ks[ks.len() - 1];
                let x: Vec<f32> = (0..n_in * kmax).map(|_| rng.f32()).collect();
                let mut out = vec![0f32; n_out * kmax];
                scratch.reserve(ty, n_in, kmax).unwrap();
                // Best mean seconds per op for each k, the ks interleaved in every round.
                let mut best = vec![f64::INFINITY; ks.len()];
                for _ in 0..reps {
                    for (i, &k) in ks.iter().enumerate() {
                        let (mean, _) = gemv_pass(
                            pool,
                            &mats,
                            &x[..n_in * k],
                            &mut out[..n_out * k],
                            &mut scratch,
                        );
                        best[i] = best[i].min(mean);
                    }
                }
                let label = match packed {
                    Some(p) => format!("{ty} ({})", p.name()),
                    None => ty.to_string(),
                };
                print!("| {label} | {n_in} × {n_out} | {:.1} |", gb(bytes, best[0]));
                for b in &best[1..] {
                    print!(" {:.2} |", b / best[0]);
                }
                println!();
            }
        }
        println!();
    }

    if only.as_deref().is_none_or(|o| o == "gemm") {
        let n_tok = 512;
        println!("## GEMM ({n_tok} tokens, one op) vs GEMV per token (same matrix, 2 threads)\n");
        println!("| type | n_in × n_out | GEMM tok/s | GEMM GFLOP/s | GEMV-per-token tok/s | GEMV GFLOP/s | ratio |");
        println!("|---|---|---|---|---|---|---|");
        let gemm_types: Vec<GgmlType> = if let Some(t) = type_filter.clone() {
            t
        } else if opts.quick {
            vec![GgmlType::Q4_K, GgmlType::Q8_0]
        } else {
            vec![
                GgmlType::Q4_K,
                GgmlType::Q8_0,
                GgmlType::Q6_K,
                GgmlType::Q4_0,
            ]
        };
        let pool = &pools[1];
        for &ty in &gemm_types {
            for &(n_in, n_out) in &shapes[..shapes.len().min(2)] {
                let wb = make_weights(ty, n_in, n_out, &mut rng);
                let w = QMatrix::new(ty, n_in, n_out, &wb).unwrap();
                let x: Vec<f32> = (0..n_in * n_tok).map(|_| rng.f32()).collect();
                scratch.reserve(ty, n_in, n_tok).unwrap();
                let mut out = vec![0f32; n_out * n_tok];
                matmul(pool, &w, &x, &mut out, &mut scratch).unwrap();
                let gemm_reps = if opts.quick { 2 } else { 3 };
                let mut s = Vec::new();
                for _ in 0..gemm_reps {
                    let t = Instant::now();
                    matmul(pool, &w, &x, &mut out, &mut scratch).unwrap();
                    s.push(t.elapsed().as_secs_f64());
                }
                let gemm = s.iter().cloned().fold(f64::INFINITY, f64::min);
                let mut s = Vec::new();
                for _ in 0..gemm_reps {
                    let t = Instant::now();
                    for tok in 0..n_tok {
                        let xt = &x[tok * n_in..(tok + 1) * n_in];
                        let xq = quantize_acts(pool, ty, xt, n_in, &mut scratch).unwrap();
                        kernels::matmul::matmul_acts(
                            pool,
                            &w,
                            &xq,
                            &mut out[tok * n_out..(tok + 1) * n_out],
                        )
                        .unwrap();
                    }
                    s.push(t.elapsed().as_secs_f64());
                }
                let gemv = s.iter().cloned().fold(f64::INFINITY, f64::min);
                let flop = 2.0 * n_in as f64 * n_out as f64 * n_tok as f64;
                println!(
                    "| {ty} | {n_in} × {n_out} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2}× |",
                    n_tok as f64 / gemm,
                    flop / gemm / 1e9,
                    n_tok as f64 / gemv,
                    flop / gemv / 1e9,
                    gemv / gemm
                );
            }
        }
        println!();
    }
}
