//! Decode-attention benchmark (not a test): one token's absorbed-MLA attention
//! (DeepSeek-V2-Lite/V3 shape: 16 heads per 576-value latent row, values its first 512)
//! over a long cache, per cache type, on 1 and 2 threads. Prints a Markdown table.
//!
//!     cargo bench -p kernels --bench attention              # depths 4096 and 16384
//!     cargo bench -p kernels --bench attention -- 32768     # other depths
//!
//! Each cache type runs with f32 arithmetic (`--exact`) and with the default mode's int8 dots.
//!
//! Method: 27 distinct caches (one per V2-Lite layer, so the whole set does not sit in
//! L2/L3 the way one layer's would) are cycled through; µs per layer-call and the cache
//! bytes read per second; best of 5 passes of ≥ 27 calls.

use kernels::attention::{attention_with, AttnOpts, AttnScratch, AttnShape};
use kernels::kvdata::{KvBuf, KvType};
use kernels::ThreadPool;
use std::time::Instant;

fn main() {
    let depths: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let depths = if depths.is_empty() {
        vec![4096, 16384]
    } else {
        depths
    };
    let (heads, lat_w, lora) = (16, 576, 512);
    let shape = AttnShape {
        n_head: heads,
        n_kv_head: 1,
        dk: lat_w,
        dv: lora,
        k_stride: lat_w,
        v_stride: lat_w,
        v_offset: 0,
        k_head: lat_w,
        v_head: lora,
        scale: 0.07,
    };
    let layers = 27;
    let mut seed = 7u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    println!("| depth | cache | threads | µs per layer | GB/s of cache read | ms per token (27 layers) |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &depth in &depths {
        let n_ctx = depth + 1;
        let src: Vec<f32> = (0..n_ctx * lat_w).map(|_| rnd()).collect();
        let q: Vec<f32> = (0..heads * lat_w).map(|_| rnd()).collect();
        for ty in KvType::ALL {
            let caches: Vec<KvBuf> = (0..layers)
                .map(|_| {
                    let mut b = KvBuf::zeroed(ty, n_ctx * lat_w, lat_w);
                    b.write(0, &src);
                    b
                })
                .collect();
            let bytes = ty.bytes(n_ctx * lat_w, lat_w).unwrap() as f64;
            // q8_KV twice: f32 arithmetic (`--exact`) and int8 dot products (the default
            // mode, where the CPU has AVX-512 VNNI); the other types compute in f32.
            let int8_modes: &[bool] = if ty == KvType::Q8Kv {
                &[false, true]
            } else {
                &[false]
            };
            for &int8 in int8_modes {
                let opts = AttnOpts {
                    int8,
                    ..AttnOpts::default()
                };
                let name = if int8 {
                    format!("{ty} (int8 dots)")
                } else {
                    ty.to_string()
                };
                for threads in [1, 2] {
                    let pool = ThreadPool::new(threads);
                    let mut scratch = AttnScratch::new();
                    scratch.reserve_for(threads, n_ctx, lat_w, lora);
                    let mut out = vec![0f32; heads * lora];
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let t = Instant::now();
                        for c in &caches {
                            let d = c.data();
                            attention_with(
                                &pool,
                                &shape,
                                opts,
                                &q,
                                depth,
                                d,
                                d,
                                &mut out,
                                &mut scratch,
                            );
                        }
                        best = best.min(t.elapsed().as_secs_f64() / layers as f64);
                    }
                    println!(
                        "| {depth} | {name} | {threads} | {:.0} | {:.1} | {:.2} |",
                        best * 1e6,
                        bytes / best / 1e9,
                        best * 1e3 * layers as f64
                    );
                }
            }
        }
    }
}
