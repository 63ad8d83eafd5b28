//! GQA attention over a KV cache in GPU memory against `kernels::attention::attention_with`
//! on the same keys and values: prompts (several blocks of 64 positions) and decode steps,
//! grouped heads, MQA with dk ≠ dv, a sliding window with sinks (gpt-oss), a sequence's
//! rows inside a batch (token0), and the host-side checks.

mod ops_util;

use accel::ops::{AttnSplit, GpuKvCache, GqaHeads, Ops, Rows};
use accel::testing::test_gpu;
use accel::{AccelError, Gpu};
use kernels::attention::{attention_with, AttnOpts, AttnScratch, AttnShape};
use kernels::ThreadPool;
use ops_util::*;

/// A GQA layer's geometry and the host copy of its cache.
struct Case {
    n_head: usize,
    n_kv: usize,
    hd: usize,
    hdv: usize,
    scale: f32,
    window: Option<usize>,
    sinks: Option<Vec<f32>>,
    /// Split attention with this chunk of positions.
    split: Option<usize>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn shape(&self) -> AttnShape {
        AttnShape {
            n_head: self.n_head,
            n_kv_head: self.n_kv,
            dk: self.hd,
            dv: self.hdv,
            k_stride: self.n_kv * self.hd,
            v_stride: self.n_kv * self.hdv,
            v_offset: 0,
            k_head: self.hd,
            v_head: self.hdv,
            scale: self.scale,
        }
    }

    /// `m` new tokens at `pos0`: appends random keys and values to both caches (layer
    /// `il` on the GPU) and checks the GPU's attention against the CPU's. The GPU queries
    /// sit at rows `token0..` of a larger batch buffer.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        gpu: &Gpu,
        ops: &Ops,
        cache: &GpuKvCache,
        il: usize,
        pos0: usize,
        m: usize,
        token0: usize,
        seed: u64,
    ) {
        let mut r = rng(seed);
        let (kw, vw, qw, ow) = (
            self.n_kv * self.hd,
            self.n_kv * self.hdv,
            self.n_head * self.hd,
            self.n_head * self.hdv,
        );
        let new_k = random(&mut r, m * kw, -1.0, 1.0);
        let new_v = random(&mut r, m * vw, -1.0, 1.0);
        let q = random(&mut r, (token0 + m) * qw, -1.0, 1.0);
        self.k.truncate(pos0 * kw);
        self.v.truncate(pos0 * vw);
        self.k.extend_from_slice(&new_k);
        self.v.extend_from_slice(&new_v);

        let (kb, vb, qb) = (
            upload(gpu, "new keys", &new_k),
            upload(gpu, "new values", &new_v),
            upload(gpu, "queries", &q),
        );
        let sinks = self.sinks.as_ref().map(|s| upload(gpu, "sinks", s));
        let out = gpu.zeroed("out", ((token0 + m) * ow * 4) as u64).unwrap();
        let scratch = self.split.map(|chunk| {
            let floats =
                AttnSplit::scratch_floats(chunk, m, pos0, self.window, self.n_head, self.hdv);
            (
                chunk,
                gpu.zeroed("split scratch", (floats * 4) as u64).unwrap(),
            )
        });
        let mut rec = gpu.record("attention step");
        cache
            .append(
                ops,
                &mut rec,
                il,
                pos0,
                m,
                Rows::dense(&kb, kw),
                Rows::dense(&vb, vw),
            )
            .unwrap();
        let heads = GqaHeads {
            n_head: self.n_head,
            n_kv_head: self.n_kv,
            head_dim: self.hd,
            head_dim_v: self.hdv,
            scale: self.scale,
            window: self.window,
            sinks: sinks.as_ref(),
            split: scratch.as_ref().map(|(chunk, b)| AttnSplit {
                chunk: *chunk,
                scratch: b,
            }),
        };
        cache
            .attend(ops, &mut rec, il, heads, &qb, token0, m, pos0, &out)
            .unwrap();
        rec.submit_and_wait().unwrap();

        // The cache holds exactly what was appended.
        let k_gpu = gpu.read_f32(cache.k(il).unwrap(), (pos0 + m) * kw).unwrap();
        assert_eq!(k_gpu, self.k, "cached keys");
        let v_gpu = gpu.read_f32(cache.v(il).unwrap(), (pos0 + m) * vw).unwrap();
        assert_eq!(v_gpu, self.v, "cached values");

        let pool = ThreadPool::new(2);
        let mut want = vec![0f32; m * ow];
        let opts = AttnOpts {
            window: self.window,
            sinks: self.sinks.as_deref(),
            origin: 0,
            int8: false,
        };
        attention_with(
            &pool,
            &self.shape(),
            opts,
            &q[token0 * qw..],
            pos0,
            self.k.as_slice().into(),
            self.v.as_slice().into(),
            &mut want,
            &mut AttnScratch::new(),
        );
        let got = read(gpu, &out);
        assert!(
            got[..token0 * ow].iter().all(|&x| x == 0.0),
            "rows before token0"
        );
        assert_close(
            &got[token0 * ow..],
            &want,
            2e-6,
            2e-5,
            &format!("pos0 {pos0} m {m}"),
        );
    }
}

fn case(n_head: usize, n_kv: usize, hd: usize, hdv: usize) -> Case {
    Case {
        n_head,
        n_kv,
        hd,
        hdv,
        scale: 1.0 / (hd as f32).sqrt(),
        window: None,
        sinks: None,
        split: None,
        k: Vec::new(),
        v: Vec::new(),
    }
}

#[test]
fn gqa_prompt_then_decode_matches_the_cpu() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut c = case(4, 2, 64, 64);
    let cache = GpuKvCache::new(&gpu, 2, 100, 2 * 64, 2 * 64).unwrap();
    // A 66-token prompt (two blocks of positions), one decode step, then two tokens that
    // sit at rows 1..3 of their batch.
    c.step(&gpu, &ops, &cache, 1, 0, 66, 0, 10);
    c.step(&gpu, &ops, &cache, 1, 66, 1, 0, 11);
    c.step(&gpu, &ops, &cache, 1, 67, 2, 1, 12);
    // Layer 0 was never written.
    assert!(read(&gpu, cache.k(0).unwrap()).iter().all(|&x| x == 0.0));
}

#[test]
fn mqa_with_wide_values_over_three_blocks() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    // One KV head, dk 48 ≠ dv 80 (two value elements per thread), large scores.
    let mut c = case(2, 1, 48, 80);
    c.scale = 0.9;
    let cache = GpuKvCache::new(&gpu, 1, 140, 48, 80).unwrap();
    c.step(&gpu, &ops, &cache, 0, 0, 131, 0, 20);
    c.step(&gpu, &ops, &cache, 0, 131, 1, 0, 21);
}

#[test]
fn sliding_window_and_sinks_like_gpt_oss() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut c = case(4, 2, 32, 32);
    c.window = Some(16);
    c.sinks = Some(vec![0.5, -2.0, 3.0, f32::NEG_INFINITY]);
    let cache = GpuKvCache::new(&gpu, 1, 100, 64, 64).unwrap();
    c.step(&gpu, &ops, &cache, 0, 0, 40, 0, 30);
    c.step(&gpu, &ops, &cache, 0, 40, 1, 0, 31);
    // A window wider than a block of positions, with sinks.
    c.window = Some(70);
    c.step(&gpu, &ops, &cache, 0, 41, 50, 0, 32);
}

#[test]
fn attention_errors_are_reported_on_the_host() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let cache = GpuKvCache::new(&gpu, 1, 8, 16, 16).unwrap();
    let rows = upload(&gpu, "rows", &[0.0; 16 * 9]);
    let q = upload(&gpu, "q", &[0.0; 64]);
    let out = gpu.zeroed("out", 64 * 4).unwrap();
    let mut rec = gpu.record("bad attention");
    let e = cache
        .append(
            &ops,
            &mut rec,
            0,
            4,
            5,
            Rows::dense(&rows, 16),
            Rows::dense(&rows, 16),
        )
        .unwrap_err();
    assert!(e.to_string().contains("past the cache's 8 (--ctx)"), "{e}");
    let e = cache.k(1).unwrap_err();
    assert!(
        e.to_string().contains("layer 1 of a cache of 1 layers"),
        "{e}"
    );
    let heads = GqaHeads {
        n_head: 3,
        n_kv_head: 2,
        head_dim: 8,
        head_dim_v: 8,
        scale: 1.0,
        window: None,
        sinks: None,
        split: None,
    };
    let e = cache
        .attend(&ops, &mut rec, 0, heads, &q, 0, 1, 0, &out)
        .unwrap_err();
    assert!(e.to_string().contains("do not split into groups"), "{e}");
    let heads = GqaHeads { n_head: 4, ..heads };
    // Queries for 2 tokens of 4 × 8 floats: 64 floats, so token0 1 with 2 tokens is short.
    let e = cache
        .attend(&ops, &mut rec, 0, heads, &q, 1, 2, 0, &out)
        .unwrap_err();
    assert!(e.to_string().contains("queries"), "{e}");
    // Keys past the cache: positions 7..9.
    let e = cache
        .attend(&ops, &mut rec, 0, heads, &q, 0, 2, 7, &out)
        .unwrap_err();
    assert!(e.to_string().contains("keys"), "{e}");
    let e = cache
        .attend(
            &ops,
            &mut rec,
            0,
            GqaHeads {
                window: Some(0),
                ..heads
            },
            &q,
            0,
            1,
            0,
            &out,
        )
        .unwrap_err();
    assert!(e.to_string().contains("window of 0"), "{e}");
    // A split whose scratch is too small for its 2 splits × 4 heads × (8 + 2) floats.
    let small = gpu.zeroed("small scratch", 4 * 79).unwrap();
    let split = Some(AttnSplit {
        chunk: 4,
        scratch: &small,
    });
    let e = cache
        .attend(
            &ops,
            &mut rec,
            0,
            GqaHeads { split, ..heads },
            &q,
            0,
            1,
            7,
            &out,
        )
        .unwrap_err();
    assert!(e.to_string().contains("split scratch"), "{e}");
    assert_eq!(AttnSplit::scratch_floats(4, 1, 7, None, 4, 8), 80);
    let zero = Some(AttnSplit {
        chunk: 0,
        scratch: &small,
    });
    let e = cache
        .attend(
            &ops,
            &mut rec,
            0,
            GqaHeads {
                split: zero,
                ..heads
            },
            &q,
            0,
            1,
            0,
            &out,
        )
        .unwrap_err();
    assert!(e.to_string().contains("split of 0"), "{e}");
    rec.submit_and_wait().unwrap();
    // A cache past one storage binding names --ctx and is never allocated.
    let too_long = (gpu.max_binding() / 4 / 16) as usize + 1;
    let e = GpuKvCache::new(&gpu, 1, too_long, 16, 16).unwrap_err();
    assert!(matches!(e, AccelError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("a smaller --ctx fits"), "{e}");
}

#[test]
fn the_widest_rows_mla_latents_and_the_limit() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    // DeepSeek-V3's absorbed form reads 576-wide rows and 512-wide values; 1024 is the
    // kernel's limit (16 value elements per thread).
    for (dk, dv) in [(576, 512), (1024, 1024)] {
        let mut c = case(2, 1, dk, dv);
        let cache = GpuKvCache::new(&gpu, 1, 70, dk, dv).unwrap();
        c.step(&gpu, &ops, &cache, 0, 0, 3, 0, 50);
        c.step(&gpu, &ops, &cache, 0, 3, 1, 0, 51);
    }
    let cache = GpuKvCache::new(&gpu, 1, 4, 1025, 8).unwrap();
    let q = upload(&gpu, "q", &[0.0; 1025]);
    let out = gpu.zeroed("out", 64).unwrap();
    let mut rec = gpu.record("too wide");
    let heads = GqaHeads {
        n_head: 1,
        n_kv_head: 1,
        head_dim: 1025,
        head_dim_v: 8,
        scale: 1.0,
        window: None,
        sinks: None,
        split: None,
    };
    let e = cache
        .attend(&ops, &mut rec, 0, heads, &q, 0, 1, 0, &out)
        .unwrap_err();
    assert!(e.to_string().contains("must be within 1..=1024"), "{e}");
}

#[test]
fn split_attention_matches_the_cpu_for_decode_and_short_prompts() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let mut c = case(4, 2, 32, 48);
    let cache = GpuKvCache::new(&gpu, 1, 220, 64, 96).unwrap();
    c.step(&gpu, &ops, &cache, 0, 0, 190, 0, 60);
    // Decode over 191 positions in 3 splits of 64 (the last one short), then 4 tokens
    // whose rows end in different splits, at rows 2..6 of their batch.
    c.split = Some(64);
    c.step(&gpu, &ops, &cache, 0, 190, 1, 0, 61);
    c.step(&gpu, &ops, &cache, 0, 191, 4, 2, 62);
    // A split longer than the context: one split, the plain kernel.
    c.split = Some(4096);
    c.step(&gpu, &ops, &cache, 0, 195, 1, 0, 63);
    // Sinks and a window across two splits; chunks not a multiple of 64.
    c.sinks = Some(vec![0.5, -2.0, 3.0, f32::NEG_INFINITY]);
    c.window = Some(70);
    c.split = Some(40);
    c.step(&gpu, &ops, &cache, 0, 196, 2, 0, 64);
}

#[test]
fn a_row_is_computed_the_same_in_any_item() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    // Group 4: a 10-token prompt runs items of 4 heads × 2 tokens, a single token items of
    // 4 heads × 1; with a window, rows of one item start at different positions. The last
    // token's rows must come out bit for bit the same either way.
    let mut r = rng(70);
    let (n_head, n_kv, hd, n) = (8, 2, 32, 10);
    let (kw, qw) = (n_kv * hd, n_head * hd);
    let cache = GpuKvCache::new(&gpu, 1, 100, kw, kw).unwrap();
    let k = random(&mut r, 90 * kw, -1.0, 1.0);
    let v = random(&mut r, 90 * kw, -1.0, 1.0);
    let q = random(&mut r, n * qw, -1.0, 1.0);
    let (kb, vb, qb) = (
        upload(&gpu, "k", &k),
        upload(&gpu, "v", &v),
        upload(&gpu, "q", &q),
    );
    let last = upload(&gpu, "last q", &q[(n - 1) * qw..]);
    for window in [None, Some(67)] {
        let heads = GqaHeads {
            n_head,
            n_kv_head: n_kv,
            head_dim: hd,
            head_dim_v: hd,
            scale: 0.3,
            window,
            sinks: None,
            split: None,
        };
        let all = gpu.zeroed("all", (n * qw * 4) as u64).unwrap();
        let one = gpu.zeroed("one", (qw * 4) as u64).unwrap();
        let mut rec = gpu.record("invariance");
        cache
            .append(
                &ops,
                &mut rec,
                0,
                0,
                90,
                Rows::dense(&kb, kw),
                Rows::dense(&vb, kw),
            )
            .unwrap();
        cache
            .attend(&ops, &mut rec, 0, heads, &qb, 0, n, 80, &all)
            .unwrap();
        cache
            .attend(&ops, &mut rec, 0, heads, &last, 0, 1, 80 + n - 1, &one)
            .unwrap();
        rec.submit_and_wait().unwrap();
        assert_eq!(
            read(&gpu, &all)[(n - 1) * qw..],
            read(&gpu, &one)[..],
            "{window:?}"
        );
    }
}
