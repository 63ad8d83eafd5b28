//! DeepSeek's MLA on the GPU against the CPU stage's arithmetic (`model::stage::mla`,
//! restated here with `kernels`' functions and f32 reference matmuls for the projections):
//! the latent cache append (RMSNorm of the latent, RoPE of the shared key), the absorbed
//! form's attention core and the decompressed form's keys and attention, for a prompt
//! (two blocks of positions) and a decode step after it. The projections between the GPU
//! steps run on the host here (G1's matmuls do them in the engine).

mod ops_util;

use accel::ops::{AttnSplit, MlaDims, MlaLatentCache, Ops, RopeTable, Rows};
use accel::testing::test_gpu;
use accel::Gpu;
use kernels::attention::{attention, AttnScratch, AttnShape};
use kernels::norm::rms_norm_inplace;
use kernels::rope::{rope_heads, RopeMode, RopeParams};
use kernels::ThreadPool;
use ops_util::*;

const D: MlaDims = MlaDims {
    heads: 4,
    nope: 16,
    rope: 8,
    lora: 32,
    v: 16,
};
const EPS: f32 = 1e-6;
const SCALE: f32 = 0.2;

struct Model {
    rope: RopeParams,
    kv_norm: Vec<f32>,
    /// Per head: W_UK (`lora × nope`, q_nope → latent space) and W_UV (`v × lora`).
    w_uk: Vec<Vec<f32>>,
    w_uv: Vec<Vec<f32>>,
}

impl Model {
    fn new() -> Model {
        let mut r = rng(40);
        Model {
            // DeepSeek-V2's YaRN on the NORM layout.
            rope: RopeParams {
                freq_scale: 1.0 / 40.0,
                ext_factor: 1.0,
                n_ctx_orig: 4096,
                ..RopeParams::new(D.rope, RopeMode::Norm, 10000.0)
            },
            kv_norm: random(&mut r, D.lora, 0.5, 1.5),
            w_uk: (0..D.heads)
                .map(|_| random(&mut r, D.lora * D.nope, -0.3, 0.3))
                .collect(),
            w_uv: (0..D.heads)
                .map(|_| random(&mut r, D.v * D.lora, -0.3, 0.3))
                .collect(),
        }
    }

    /// `W_UKᵀ · latent` for head h: the decompressed no-RoPE key (`nope`).
    fn k_nope(&self, h: usize, latent: &[f32]) -> Vec<f32> {
        let w = &self.w_uk[h];
        (0..D.nope)
            .map(|i| (0..D.lora).map(|l| w[l * D.nope + i] * latent[l]).sum())
            .collect()
    }
}

/// The CPU stage's results for one step.
struct CpuStep {
    q: Vec<f32>,
    attended: Vec<f32>,
    out_absorbed: Vec<f32>,
    out_decompressed: Vec<f32>,
}

/// The CPU stage for `m` tokens at `pos0` (raw queries `q`, raw `kv_a` rows `kv`),
/// extending `cache` (rows of lora + rope).
fn cpu_step(md: &Model, cache: &mut Vec<f32>, q: &[f32], kv: &[f32], pos0: usize) -> CpuStep {
    let (hq, lw) = (D.head_q(), D.latent_row());
    let m = kv.len() / lw;
    let mut q = q.to_vec();
    let mut rc = vec![0f32; D.rope];
    cache.truncate(pos0 * lw);
    for t in 0..m {
        md.rope.cache((pos0 + t) as i32, None, &mut rc);
        rope_heads(
            &mut q[t * D.heads * hq..(t + 1) * D.heads * hq],
            hq,
            D.nope,
            &rc,
            md.rope.mode,
        );
        let mut row = kv[t * lw..(t + 1) * lw].to_vec();
        rms_norm_inplace(&mut row[..D.lora], &md.kv_norm, EPS);
        rope_heads(&mut row[D.lora..], D.rope, 0, &rc, md.rope.mode);
        cache.extend_from_slice(&row);
    }
    let pool = ThreadPool::new(2);
    let ctx = pos0 + m;

    // Absorbed: [W_UK·q_nope, q_pe] against the cached rows, W_UV after.
    let mut q_attn = Vec::with_capacity(m * D.heads * lw);
    for t in 0..m {
        for h in 0..D.heads {
            let qh = &q[(t * D.heads + h) * hq..(t * D.heads + h + 1) * hq];
            q_attn.extend(matvec(&md.w_uk[h], &qh[..D.nope], D.lora));
            q_attn.extend_from_slice(&qh[D.nope..]);
        }
    }
    let absorbed = AttnShape {
        n_head: D.heads,
        n_kv_head: 1,
        dk: lw,
        dv: D.lora,
        k_stride: lw,
        v_stride: lw,
        v_offset: 0,
        k_head: lw,
        v_head: D.lora,
        scale: SCALE,
    };
    let mut attended = vec![0f32; m * D.heads * D.lora];
    let mut scratch = AttnScratch::new();
    attention(
        &pool,
        &absorbed,
        &q_attn,
        pos0,
        cache.as_slice().into(),
        cache.as_slice().into(),
        &mut attended,
        &mut scratch,
    );
    let mut out_absorbed = Vec::new();
    for (i, a) in attended.chunks_exact(D.lora).enumerate() {
        out_absorbed.extend(matvec(&md.w_uv[i % D.heads], a, D.v));
    }

    // Decompressed: head-major keys [W_UKᵀ·latent, k_pe] and values W_UV·latent.
    let mut keys = vec![0f32; D.heads * ctx * hq];
    let mut values = vec![0f32; D.heads * ctx * D.v];
    for p in 0..ctx {
        let row = &cache[p * lw..(p + 1) * lw];
        for h in 0..D.heads {
            let k = &mut keys[(h * ctx + p) * hq..(h * ctx + p + 1) * hq];
            k[..D.nope].copy_from_slice(&md.k_nope(h, &row[..D.lora]));
            k[D.nope..].copy_from_slice(&row[D.lora..]);
            values[(h * ctx + p) * D.v..(h * ctx + p + 1) * D.v].copy_from_slice(&matvec(
                &md.w_uv[h],
                &row[..D.lora],
                D.v,
            ));
        }
    }
    let decompressed = AttnShape {
        n_head: D.heads,
        n_kv_head: D.heads,
        dk: hq,
        dv: D.v,
        k_stride: hq,
        v_stride: D.v,
        v_offset: 0,
        k_head: ctx * hq,
        v_head: ctx * D.v,
        scale: SCALE,
    };
    let mut out_decompressed = vec![0f32; m * D.heads * D.v];
    attention(
        &pool,
        &decompressed,
        &q,
        pos0,
        keys.as_slice().into(),
        values.as_slice().into(),
        &mut out_decompressed,
        &mut scratch,
    );
    CpuStep {
        q,
        attended,
        out_absorbed,
        out_decompressed,
    }
}

/// The same step on the GPU, both forms, checked against `want`.
#[allow(clippy::too_many_arguments)]
fn gpu_step(
    gpu: &Gpu,
    ops: &Ops,
    md: &Model,
    cache: &MlaLatentCache,
    il: usize,
    q_raw: &[f32],
    kv: &[f32],
    pos0: usize,
    want: &CpuStep,
    cpu_cache: &[f32],
) {
    let (hq, lw) = (D.head_q(), D.latent_row());
    let m = kv.len() / lw;
    let ctx = pos0 + m;
    let qb = upload(gpu, "q", q_raw);
    let kvb = upload(gpu, "kv_a", kv);
    let norm = upload(gpu, "kv_a_norm", &md.kv_norm);
    let mut table = RopeTable::new(gpu, m, D.rope).unwrap();
    let positions: Vec<usize> = (pos0..ctx).collect();
    table.fill(gpu, &md.rope, &positions, None).unwrap();
    let q_nope = gpu
        .zeroed("q_nope", (m * D.heads * D.nope * 4) as u64)
        .unwrap();
    let latents = gpu.zeroed("latents", (ctx * D.lora * 4) as u64).unwrap();

    // Rotate q, store the step's latents, gather what the matmuls need.
    let mut rec = gpu.record("mla: rope, cache, gathers");
    ops.rope(
        &mut rec,
        Rows::dense(&qb, D.heads * hq),
        m,
        D.heads,
        hq,
        D.nope,
        &table,
        0,
        md.rope.mode,
    )
    .unwrap();
    cache
        .append(
            ops,
            &mut rec,
            il,
            pos0,
            m,
            Rows::dense(&kvb, lw),
            &norm,
            EPS,
            &table,
            0,
            md.rope.mode,
        )
        .unwrap();
    ops.mla_q_nope(&mut rec, D, &qb, m, &q_nope).unwrap();
    cache
        .gather_latents(ops, &mut rec, il, ctx, &latents)
        .unwrap();
    rec.submit_and_wait().unwrap();
    assert_close(&read(gpu, &qb), &want.q, 2e-7, 1e-6, "rotated q");
    let cached = gpu.read_f32(cache.layer(il).unwrap(), ctx * lw).unwrap();
    assert_close(&cached, cpu_cache, 1e-6, 2e-6, "latent cache");

    // The projections, on the host.
    // q_nope is head-major: head h's m rows back to back, and so is W_UK's output.
    let q_nope = read(gpu, &q_nope);
    let mut absorbed = Vec::new();
    for (i, qn) in q_nope.chunks_exact(D.nope).enumerate() {
        absorbed.extend(matvec(&md.w_uk[i / m], qn, D.lora));
    }
    let latents = read(gpu, &latents);
    let (mut k_nope, mut values) = (Vec::new(), Vec::new());
    for lat in latents.chunks_exact(D.lora) {
        for h in 0..D.heads {
            k_nope.extend(md.k_nope(h, lat));
            values.extend(matvec(&md.w_uv[h], lat, D.v));
        }
    }

    // Both attention cores.
    let absorbed = upload(gpu, "q·W_UK", &absorbed);
    let q_attn = gpu.zeroed("q_attn", (m * D.heads * lw * 4) as u64).unwrap();
    let attended = gpu
        .zeroed("attended", (m * D.heads * D.lora * 4) as u64)
        .unwrap();
    let k_nope = upload(gpu, "k_nope", &k_nope);
    let values = upload(gpu, "values", &values);
    let keys = gpu.zeroed("keys", (ctx * D.heads * hq * 4) as u64).unwrap();
    let out = gpu.zeroed("out", (m * D.heads * D.v * 4) as u64).unwrap();
    // Decode steps split their positions (chunks of 32: 3 splits at position 66).
    let chunk = 32;
    let scratch = gpu
        .zeroed(
            "split scratch",
            (AttnSplit::scratch_floats(chunk, m, pos0, None, D.heads, D.lora) * 4) as u64,
        )
        .unwrap();
    let split = (m == 1).then_some(AttnSplit {
        chunk,
        scratch: &scratch,
    });
    let mut rec = gpu.record("mla: attention");
    ops.mla_absorbed_queries(&mut rec, D, &absorbed, &qb, m, &q_attn)
        .unwrap();
    cache
        .absorbed_attention(
            ops, &mut rec, il, SCALE, split, &q_attn, 0, m, pos0, &attended,
        )
        .unwrap();
    cache
        .decompressed_keys(ops, &mut rec, il, ctx, &k_nope, &keys)
        .unwrap();
    ops.mla_decompressed_attention(&mut rec, D, SCALE, &qb, 0, m, pos0, &keys, &values, &out)
        .unwrap();
    rec.submit_and_wait().unwrap();

    assert_close(
        &read(gpu, &attended),
        &want.attended,
        2e-6,
        2e-5,
        "absorbed: attended latents",
    );
    // W_UV per head: attended → head-major, the matmuls, back to token-major.
    let by_head = gpu
        .zeroed("attended by head", (m * D.heads * D.lora * 4) as u64)
        .unwrap();
    let mut rec = gpu.record("mla: to heads");
    ops.transpose_heads(&mut rec, &attended, &by_head, m, D.heads, D.lora, true)
        .unwrap();
    rec.submit_and_wait().unwrap();
    let mut values_by_head = Vec::new();
    for (i, a) in read(gpu, &by_head).chunks_exact(D.lora).enumerate() {
        values_by_head.extend(matvec(&md.w_uv[i / m], a, D.v));
    }
    let values_by_head = upload(gpu, "values by head", &values_by_head);
    let att_out = gpu
        .zeroed("att_out", (m * D.heads * D.v * 4) as u64)
        .unwrap();
    let mut rec = gpu.record("mla: to tokens");
    ops.transpose_heads(&mut rec, &values_by_head, &att_out, m, D.heads, D.v, false)
        .unwrap();
    rec.submit_and_wait().unwrap();
    assert_close(
        &read(gpu, &att_out),
        &want.out_absorbed,
        2e-6,
        2e-5,
        "absorbed: output",
    );
    assert_close(
        &read(gpu, &out),
        &want.out_decompressed,
        2e-6,
        2e-5,
        "decompressed: output",
    );
}

#[test]
fn both_mla_forms_match_the_cpu_stage_for_a_prompt_and_a_decode_step() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let md = Model::new();
    let (hq, lw) = (D.head_q(), D.latent_row());
    let cache = MlaLatentCache::new(&gpu, 2, 80, D).unwrap();
    let mut cpu_cache = Vec::new();
    let mut r = rng(41);
    for (pos0, m) in [(0usize, 66usize), (66, 1)] {
        let q = random(&mut r, m * D.heads * hq, -1.0, 1.0);
        let kv = random(&mut r, m * lw, -2.0, 2.0);
        let want = cpu_step(&md, &mut cpu_cache, &q, &kv, pos0);
        // The two forms are the same attention (a check of this test's arithmetic).
        assert_close(
            &want.out_absorbed,
            &want.out_decompressed,
            1e-5,
            1e-4,
            "CPU forms",
        );
        gpu_step(&gpu, &ops, &md, &cache, 1, &q, &kv, pos0, &want, &cpu_cache);
    }
}

#[test]
fn mla_checks_positions_and_tables_on_the_host() {
    let Some(gpu) = test_gpu() else { return };
    let ops = Ops::new(&gpu).unwrap();
    let cache = MlaLatentCache::new(&gpu, 1, 4, D).unwrap();
    let kv = upload(&gpu, "kv", &[0.0; 40 * 5]);
    let norm = upload(&gpu, "norm", &[1.0; 32]);
    let mut table = RopeTable::new(&gpu, 5, D.rope).unwrap();
    table
        .fill(
            &gpu,
            &RopeParams::new(D.rope, RopeMode::Norm, 1e4),
            &[0, 1, 2, 3, 4],
            None,
        )
        .unwrap();
    let out = gpu.zeroed("out", 4096).unwrap();
    let mut rec = gpu.record("bad mla");
    let e = cache
        .append(
            &ops,
            &mut rec,
            0,
            0,
            5,
            Rows::dense(&kv, 40),
            &norm,
            EPS,
            &table,
            0,
            RopeMode::Norm,
        )
        .unwrap_err();
    assert!(e.to_string().contains("past the cache's 4 (--ctx)"), "{e}");
    let wrong = RopeTable::new(&gpu, 5, 16).unwrap();
    let e = cache
        .append(
            &ops,
            &mut rec,
            0,
            0,
            1,
            Rows::dense(&kv, 40),
            &norm,
            EPS,
            &wrong,
            0,
            RopeMode::Norm,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("a rope table of 16 values for 8 RoPE dims"),
        "{e}"
    );
    let e = cache
        .gather_latents(&ops, &mut rec, 0, 5, &out)
        .unwrap_err();
    assert!(e.to_string().contains("past the cache's 4"), "{e}");
    let e = cache
        .absorbed_attention(&ops, &mut rec, 2, SCALE, None, &out, 0, 1, 0, &kv)
        .unwrap_err();
    assert!(
        e.to_string().contains("layer 2 of a cache of 1 layers"),
        "{e}"
    );
    rec.submit_and_wait().unwrap();
}
