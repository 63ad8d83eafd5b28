//! DeepSeek files converted before llama.cpp split `attn_kv_b` (tests/data/fused, made by
//! its make.py from the tiny Q4_K_M files: `attn_kv_b` in F16, the pre-split metadata with
//! as many KV heads as heads and per-head key/value lengths). They load, and give exactly
//! the logits of the same weights stored split: `attn_k_b`/`attn_v_b`, modern metadata.

mod common;

use std::sync::Arc;

use gguf::{GgmlType, Gguf, GgufWriter, TensorSpec, Value};
use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use testutil::data_dir;

const MODELS: [&str; 2] = ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"];

fn fused(model: &str) -> Gguf {
    Gguf::open(data_dir().join(format!("fused/{model}-fused-kv_b.gguf"))).unwrap()
}

/// The same weights as `fused`, stored as a current llama.cpp writes them: `attn_kv_b`'s
/// key rows transposed per head into `attn_k_b`, its value rows into `attn_v_b` (F16 values
/// moved, not recomputed), and the MLA metadata of split files.
fn split_twin(fused: &Gguf) -> Gguf {
    let md = fused.metadata();
    let n_head = md.u64("deepseek2.attention.head_count").unwrap() as usize;
    let head_k = md.u64("deepseek2.attention.key_length").unwrap() as usize;
    let v_head = md.u64("deepseek2.attention.value_length").unwrap() as usize;
    let rope = md.u64("deepseek2.rope.dimension_count").unwrap() as usize;
    let lora = md.u64("deepseek2.attention.kv_lora_rank").unwrap() as usize;
    let nope = head_k - rope;
    let mut out_md = md.clone();
    for (k, v) in [
        ("head_count_kv", 1),
        ("key_length", lora + rope),
        ("value_length", lora),
        ("key_length_mla", head_k),
        ("value_length_mla", v_head),
    ] {
        out_md.set(format!("deepseek2.attention.{k}"), Value::U32(v as u32));
    }
    let mut tensors: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
    for t in fused.tensors() {
        let data = fused.view(t).data;
        let Some(layer) = t.name.strip_suffix("attn_kv_b.weight") else {
            let spec = TensorSpec {
                name: t.name.clone(),
                ty: t.ty,
                ne: t.ne.clone(),
            };
            tensors.push((spec, data.to_vec()));
            continue;
        };
        assert_eq!(t.ty, GgmlType::F16);
        assert_eq!(t.ne, [lora as u64, (n_head * (nope + v_head)) as u64]);
        let at = |row: usize, col: usize| {
            let i = 2 * (row * lora + col);
            [data[i], data[i + 1]]
        };
        let (mut k_b, mut v_b) = (Vec::new(), Vec::new());
        for h in 0..n_head {
            let base = h * (nope + v_head);
            for r in 0..lora {
                for i in 0..nope {
                    k_b.extend_from_slice(&at(base + i, r));
                }
            }
            for j in 0..v_head {
                for r in 0..lora {
                    v_b.extend_from_slice(&at(base + nope + j, r));
                }
            }
        }
        let spec = |name: &str, ne: [usize; 3]| TensorSpec {
            name: format!("{layer}{name}"),
            ty: GgmlType::F16,
            ne: ne.iter().map(|&d| d as u64).collect(),
        };
        tensors.push((spec("attn_k_b.weight", [nope, lora, n_head]), k_b));
        tensors.push((spec("attn_v_b.weight", [lora, v_head, n_head]), v_b));
    }
    let specs = tensors.iter().map(|t| t.0.clone()).collect();
    let mut w = GgufWriter::new(Vec::new(), &out_md, specs).unwrap();
    for (spec, data) in &tensors {
        w.write_tensor(&spec.name, data).unwrap();
    }
    Gguf::from_bytes(w.finish().unwrap(), "split twin").unwrap()
}

fn logits_all(m: &Model, mode: MatmulMode, ids: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut st = RunState::new(mode);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(&pool, &mut st, &mut kv, ids, Logits::All)
        .unwrap()
        .to_vec()
}

fn load(file: Gguf, repack: bool) -> Model {
    let mut m = Model::load(Arc::new(file)).unwrap();
    if repack {
        m.weights.repack().unwrap();
    }
    m
}

#[test]
fn fused_files_give_the_split_files_logits_exactly() {
    for model in MODELS {
        let f = fused(model);
        assert!(f.get_tensor("blk.0.attn_k_b.weight").is_none());
        assert_eq!(
            f.metadata()
                .u32("deepseek2.attention.head_count_kv")
                .unwrap(),
            4
        );
        for (mode, repack) in [
            (MatmulMode::Exact, false),
            (MatmulMode::Quantized, false),
            (MatmulMode::Quantized, true),
        ] {
            let a = load(fused(model), repack);
            let b = load(split_twin(&f), repack);
            assert_eq!(a.config.mla, b.config.mla, "{model}");
            assert_eq!(a.config.kq_scale, b.config.kq_scale, "{model}");
            for ids in common::prompts() {
                let x = logits_all(&a, mode, &ids);
                let y = logits_all(&b, mode, &ids);
                assert!(x == y, "{model} {mode:?} repack {repack}: logits differ");
            }
        }
    }
}

/// Independent of how the twin was built: the fused file's weights are the tiny Q4_K_M
/// file's (k_b and v_b dequantized, stored as F16), so the f32 reference forward passes
/// agree to F16 rounding, and the rebuilt tensors hold the original values.
#[test]
fn fused_files_match_the_original_split_files() {
    for model in MODELS {
        let a = load(fused(model), false);
        let b = common::load(model, "Q4_K_M");
        let mla = b.config.mla.clone().unwrap();
        assert_eq!(a.config.mla, Some(mla.clone()), "{model}");
        assert_eq!(a.config.kq_scale, b.config.kq_scale, "{model}");
        for ids in common::prompts() {
            let x = logits_all(&a, MatmulMode::Exact, &ids);
            let y = logits_all(&b, MatmulMode::Exact, &ids);
            let max = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(max < 5e-3, "{model}: max |Δ| {max}");
        }
        let (ma, mb) = match (&a.weights.layers[0].attn, &b.weights.layers[0].attn) {
            (model::weights::Attention::Mla(x), model::weights::Attention::Mla(y)) => (x, y),
            _ => panic!("MLA expected"),
        };
        for (p, q) in [(&ma.k_b, &mb.k_b), (&ma.v_b, &mb.v_b)] {
            assert_eq!((p.n_in, p.n_out, p.n_slab), (q.n_in, q.n_out, q.n_slab));
            let deq = |m: &model::weights::Matrix| {
                let mut v = vec![0f32; m.n_in * m.n_out * m.n_slab];
                quant::dequantize(m.ty, m.data(), &mut v).unwrap();
                v
            };
            let (x, y) = (deq(p), deq(q));
            for (u, w) in x.iter().zip(&y) {
                assert!(
                    (u - w).abs() <= 1e-3 * w.abs().max(1e-2),
                    "{model} {}",
                    p.name()
                );
            }
        }
    }
}
