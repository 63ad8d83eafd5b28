//! What the model test suites share: loading a tiny reference model, the reference
//! prompts, and the distance between two logit rows.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use model::Model;
use testutil::{data_dir, json};

/// `tests/data/tiny/{model}/{model}-{variant}.gguf`, loaded (not repacked).
pub fn load(model: &str, variant: &str) -> Model {
    let path = data_dir().join(format!("tiny/{model}/{model}-{variant}.gguf"));
    Model::load(Arc::new(gguf::Gguf::open(path).unwrap())).unwrap()
}

/// The reference prompts of `tests/data/tiny/manifest.json` (token ids).
pub fn prompts() -> Vec<Vec<u32>> {
    json("tiny/manifest.json")["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// Index of the largest logit (the first on ties).
pub fn argmax(x: &[f32]) -> usize {
    kernels::vector::argmax(x).expect("a row of logits")
}

/// `log softmax(x)` in f64.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let mx = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = x.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln() + mx;
    x.iter().map(|&v| v as f64 - z).collect()
}

/// KL(softmax(p) ‖ softmax(q)) of two logit rows.
pub fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(x, y)| x.exp() * (x - y)).sum()
}
