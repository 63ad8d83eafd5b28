//! End to end on low-bit files: the tiny DeepSeek-V3 quantized by llama.cpp's llama-quantize
//! (with an importance matrix) to the i-quants, our logits (production kernels) against
//! llama.cpp's on the same files, all positions of the three reference prompts: top-1
//! agreement ≥ 90%, KL(llama.cpp ‖ ours) reported (`--no-capture`) and bounded.
//! Files and scripts: tests/data/lowbit (README.md there). To cover a new type, add its file
//! to `VARIANTS` (and to `quantize.sh`).

mod common;

use std::sync::Arc;

use common::argmax;
use common::{kl, prompts};
use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use testutil::{data_dir, read_npy_f32};

/// `tests/data/lowbit/deepseek-v3-tiny-<name>.gguf` and the ggml types it must contain.
const VARIANTS: [(&str, &[gguf::GgmlType]); 3] = {
    use gguf::GgmlType::*;
    [
        ("IQ2_XXS", &[IQ2_XXS]),
        ("IQ3_S", &[IQ3_S]),
        ("mix", &[IQ2_XS, IQ2_S, IQ3_XXS]),
    ]
};

fn check(name: &str, types: &[gguf::GgmlType]) {
    let path = data_dir().join(format!("lowbit/deepseek-v3-tiny-{name}.gguf"));
    let file = Arc::new(gguf::Gguf::open(path).unwrap());
    for ty in types {
        assert!(
            file.tensors().iter().any(|t| t.ty == *ty),
            "{name}: no {ty} tensor"
        );
    }
    let m = Model::load(file).unwrap();
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    let (mut agree, mut total, mut kl_sum, mut kl_max) = (0, 0, 0f64, 0f64);
    for (i, ids) in prompts().iter().enumerate() {
        let mut st = RunState::new(MatmulMode::Quantized);
        let mut kv = KvCache::new(&m.config, 64).unwrap();
        let ours = m
            .forward(&pool, &mut st, &mut kv, ids, Logits::All)
            .unwrap()
            .to_vec();
        let (shape, theirs) =
            read_npy_f32(&data_dir().join(format!("lowbit/lcpp_{name}_logits_all_p{i}.npy")));
        assert_eq!(shape, vec![ids.len(), vocab]);
        for p in 0..ids.len() {
            let (o, t) = (
                &ours[p * vocab..(p + 1) * vocab],
                &theirs[p * vocab..(p + 1) * vocab],
            );
            total += 1;
            agree += usize::from(argmax(o) == argmax(t));
            let d = kl(t, o);
            kl_sum += d;
            kl_max = kl_max.max(d);
        }
    }
    let kl_mean = kl_sum / total as f64;
    eprintln!(
        "{name}: top-1 {agree}/{total}, KL(llama.cpp || ours) mean {kl_mean:.2e} max {kl_max:.2e}"
    );
    assert!(
        agree * 10 >= total * 9,
        "{name}: top-1 agreement {agree}/{total} < 90%"
    );
    // Same weights, same activation quantization (Q8_K): only f32 rounding and rare routing
    // flips separate the two; a wrong kernel gives KL of order 1.
    assert!(kl_mean < 1e-2, "{name}: mean KL {kl_mean}");
}

#[test]
fn low_bit_tiny_models_agree_with_llama_cpp() {
    for (name, types) in VARIANTS {
        check(name, types);
    }
}
