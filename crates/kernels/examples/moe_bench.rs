//! The routed experts of one MoE layer over a prompt, as the forward pass runs them
//! ([`moe_experts`]: grouping, activation quantization, gate/up, GLU, down, weighted sum),
//! with packed weights and uniformly random routing: where a prompt's expert time goes,
//! without loading a model.
//!
//! `cargo run -p kernels --release --example moe_bench -- [--type MXFP4] [--down-type T]
//! [--experts 128] [--k 4] [--dim 2880] [--hidden 2880] [--tokens 512] [--threads 2]
//! [--reps 3]`
//!
//! (DeepSeek-V2-Lite's experts in a Q4_K_M file: `--type Q4_K --down-type Q5_0 --experts 64
//! --k 6 --dim 2048 --hidden 1408`.)
//!
//! Defaults: one gpt-oss-120b layer (128 MXFP4 experts of 2880 → 2880, top-4, 1.7 GB of
//! weights: read from DRAM, as in a real prompt). Prints the best of `--reps` runs, the
//! rate in G multiply-adds per second (3·dim·hidden per routed token) and the weight bytes
//! per second.

use kernels::matmul::{MatmulError, QMatrix};
use kernels::moe::{moe_experts, ExpertStack, Experts, MoeScratch, Routing};
use kernels::{activation::Glu, ThreadPool};
use quant::repack::{self, PackedType};
use quant::GgmlType;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name).map(|i| args.get(i + 1)) {
        None => Ok(default),
        Some(None) => Err(format!("{name}: missing value")),
        Some(Some(v)) => v.parse().map_err(|_| format!("{name}: bad value {v}")),
    }
}

/// `n_expert` packed slabs of `n_out × n_in` in one buffer.
struct Stack {
    packed: PackedType,
    n_in: usize,
    n_out: usize,
    bytes: Vec<u8>,
}

impl Stack {
    fn random(
        ty: GgmlType,
        n_in: usize,
        n_out: usize,
        n_expert: usize,
        seed: u64,
    ) -> Result<Stack, String> {
        let packed = PackedType::for_type(ty).ok_or(format!("{ty} has no packed layout"))?;
        let slab = packed
            .matrix_bytes(n_in, n_out)
            .ok_or(format!("{ty}: {n_out} rows of {n_in} cannot be repacked"))?;
        let file_len = ty.row_bytes(n_in as u64).ok_or("row size")? as usize * n_out;
        let mut s = seed;
        let mut file = vec![0u8; file_len];
        let mut bytes = vec![0u8; slab * n_expert];
        for out in bytes.chunks_exact_mut(slab) {
            // Random quants; then every block's scale field set to a moderate value so the
            // sums stay finite (the first byte(s) of each block hold its scale).
            for b in file.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (s >> 56) as u8;
            }
            for blk in file.chunks_exact_mut(ty.type_size()) {
                match ty {
                    GgmlType::MXFP4 => blk[0] = 120 + blk[0] % 8,
                    _ => blk[..2].copy_from_slice(&quant::Half::from_f32(0.01).0),
                }
            }
            repack::repack(ty, n_in, n_out, &file, out).map_err(|e| e.to_string())?;
        }
        Ok(Stack {
            packed,
            n_in,
            n_out,
            bytes,
        })
    }
}

impl ExpertStack for Stack {
    fn ty(&self) -> GgmlType {
        self.packed.source()
    }
    fn expert(&self, e: usize) -> Result<QMatrix<'_>, MatmulError> {
        let slab = self.packed.matrix_bytes(self.n_in, self.n_out).unwrap();
        let data = self
            .bytes
            .get(e * slab..(e + 1) * slab)
            .ok_or_else(|| MatmulError::Shape(format!("no expert {e}")))?;
        QMatrix::packed(self.packed, self.n_in, self.n_out, data)
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("moe_bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let ty_arg = |name: &str, default: &str| {
        let v = arg(&args, name, default.to_string())?;
        GgmlType::from_name(&v).ok_or(format!("{name}: {v} is not a ggml type name"))
    };
    let ty = ty_arg("--type", "MXFP4")?;
    let down_ty = ty_arg("--down-type", ty.name())?;
    let n_expert: usize = arg(&args, "--experts", 128)?;
    let k: usize = arg(&args, "--k", 4)?;
    let dim: usize = arg(&args, "--dim", 2880)?;
    let hidden: usize = arg(&args, "--hidden", 2880)?;
    let n: usize = arg(&args, "--tokens", 512)?;
    let threads: usize = arg(&args, "--threads", 2)?;
    let reps: usize = arg(&args, "--reps", 3)?;
    if k == 0 || k > n_expert || n == 0 || threads == 0 {
        return Err(format!(
            "need 1 ≤ k ({k}) ≤ experts ({n_expert}), tokens ({n}) and threads ({threads}) ≥ 1"
        ));
    }
    let pool = ThreadPool::new(threads);
    let gate = Stack::random(ty, dim, hidden, n_expert, 1)?;
    let up = Stack::random(ty, dim, hidden, n_expert, 2)?;
    let down = Stack::random(down_ty, hidden, dim, n_expert, 3)?;
    let w = Experts {
        gate: &gate,
        up: &up,
        down: &down,
        dim,
        hidden,
        n_expert,
        act: Glu::GPT_OSS,
        bias: None,
    };
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let x: Vec<f32> = (0..n * dim)
        .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    // k distinct experts per token, uniformly.
    let mut ids = Vec::with_capacity(n * k);
    for _ in 0..n {
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        while picked.len() < k {
            let e = (next() % n_expert as u64) as usize;
            if !picked.contains(&e) {
                picked.push(e);
            }
        }
        ids.extend(picked);
    }
    let weights = vec![1.0 / k as f32; n * k];
    let routing = Routing {
        ids: &ids,
        weights: &weights,
        k,
    };
    let mut scratch = MoeScratch::new();
    let mut out = vec![0f32; n * dim];
    moe_experts(&pool, &w, &x, routing, &mut scratch, &mut out).map_err(|e| e.to_string())?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        moe_experts(&pool, &w, &x, routing, &mut scratch, &mut out).map_err(|e| e.to_string())?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let macs = 3.0 * (dim * hidden * n * k) as f64;
    let bytes = (gate.bytes.len() + up.bytes.len() + down.bytes.len()) as f64;
    println!(
        "moe_bench {ty}/{down_ty} ({}): {n_expert} experts {dim} → {hidden}, top-{k}, {n} tokens, {threads} threads, path {}: best of {reps} {:.1} ms, {:.1} G MAC/s, weights {:.2} GB at {:.1} GB/s",
        gate.packed.name(),
        quant::dot::simd_path(),
        best * 1e3,
        macs / best / 1e9,
        bytes / 1e9,
        bytes / best / 1e9
    );
    Ok(())
}
