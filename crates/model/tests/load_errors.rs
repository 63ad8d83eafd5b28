//! Files that are not runnable models give errors that say why.

use std::sync::Arc;

use gguf::{Array, Gguf, GgufWriter, Metadata, TensorSpec, Value};
use model::{Model, ModelError};
use testutil::data_dir;

fn rewrite(
    src: &str,
    edit: impl Fn(&mut Metadata, &mut Vec<TensorSpec>),
) -> Result<Model, ModelError> {
    let file = Gguf::open(data_dir().join(src)).unwrap();
    let mut md = file.metadata().clone();
    let mut specs: Vec<TensorSpec> = file
        .tensors()
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            ty: t.ty,
            ne: t.ne.clone(),
        })
        .collect();
    edit(&mut md, &mut specs);
    let mut w = GgufWriter::new(Vec::new(), &md, specs.clone()).unwrap();
    for s in &specs {
        w.write_tensor(&s.name, file.tensor(&s.name).unwrap().data)
            .unwrap();
    }
    Model::load(Arc::new(
        Gguf::from_bytes(w.finish().unwrap(), "edited.gguf").unwrap(),
    ))
}

const QWEN3: &str = "tiny/qwen3moe-tiny/qwen3moe-tiny-Q8_0.gguf";

#[test]
fn unsupported_architecture_lists_supported_ones() {
    let e = rewrite(QWEN3, |md, _| {
        md.set("general.architecture", Value::String("gemma3".into()))
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "edited.gguf: unsupported architecture 'gemma3' (supported: {})",
            model::SUPPORTED_ARCHS.join(", ")
        )
    );
    assert!(model::SUPPORTED_ARCHS.contains(&"gpt-oss"));
}

#[test]
fn missing_tensor_is_named() {
    let e = rewrite(QWEN3, |_, specs| {
        specs.retain(|s| s.name != "blk.1.ffn_up_exps.weight")
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "edited.gguf: tensor 'blk.1.ffn_up_exps.weight' not found"
    );
}

#[test]
fn missing_or_mistyped_metadata_is_named() {
    let e = rewrite(QWEN3, |md, _| {
        md.remove("qwen3moe.expert_used_count");
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "edited.gguf: qwen3moe.expert_used_count: missing"
    );
    let e = rewrite(QWEN3, |md, _| {
        md.set("qwen3moe.block_count", Value::String("2".into()))
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "edited.gguf: qwen3moe.block_count: is a string, expected u32"
    );
    let e = rewrite(QWEN3, |md, _| {
        md.set("qwen3moe.expert_used_count", Value::U32(9))
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("expert_used_count 9 must be in 1..=8"),
        "{e}"
    );
    let e = rewrite(QWEN3, |md, _| {
        md.set("qwen3moe.attention.head_count_kv", Value::U32(3))
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("4 attention heads cannot share 3 KV heads"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_are_named() {
    // Claim a wider FFN than the tensors have.
    let e = rewrite(QWEN3, |md, _| {
        md.set("qwen3moe.expert_feed_forward_length", Value::U32(512))
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("tensor 'blk.0.ffn_gate_exps.weight': shape (ne) is [256, 256, 8], expected [256, 512, 8]"), "{e}");
    let _ = Array::U8(vec![]);
}

#[test]
fn deepseek_without_q_lora_key_loads_as_lite() {
    // The real V2-Lite files have no q_lora_rank key; the tiny one neither.
    let f =
        Gguf::open(data_dir().join("tiny/deepseek-v2-lite-tiny/deepseek-v2-lite-tiny-Q8_0.gguf"))
            .unwrap();
    assert!(f
        .metadata()
        .get("deepseek2.attention.q_lora_rank")
        .is_none());
    let m = Model::load(Arc::new(f)).unwrap();
    assert_eq!(m.config.mla.as_ref().unwrap().q_lora_rank, None);
}

#[test]
fn experts_per_token_is_checked() {
    let mut m = Model::load(Arc::new(Gguf::open(data_dir().join(QWEN3)).unwrap())).unwrap();
    assert_eq!(m.experts_per_token(), 2);
    assert!(m
        .set_experts_per_token(3)
        .unwrap_err()
        .to_string()
        .contains("between 1 and the model's 2"));
    assert!(m.set_experts_per_token(0).is_err());
    m.set_experts_per_token(1).unwrap();
    assert_eq!(m.experts_per_token(), 1);
}

const GLM: &str = "tiny/glm4moe-tiny/glm4moe-tiny-Q8_0.gguf";

#[test]
fn glm4moe_and_minimax_m2_settings_are_checked() {
    let e = rewrite(GLM, |md, _| {
        md.set("glm4moe.nextn_predict_layers", Value::U32(3))
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("nextn_predict_layers 3 leaves no layer of the 3 blocks to run"),
        "{e}"
    );
    let e = rewrite(GLM, |md, _| {
        md.set("glm4moe.rope.dimension_count", Value::U32(96))
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("rope.dimension_count 96 must be even and at most the head dim 64"),
        "{e}"
    );
    let e = rewrite(GLM, |md, _| {
        md.set("glm4moe.expert_group_count", Value::U32(3))
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("8 experts cannot be split in 3 groups"),
        "{e}"
    );
    // The MTP block is a whole decoder layer: without the key it would load as a third
    // trunk layer, so the key alone decides what runs.
    let m = rewrite(GLM, |md, _| {
        md.remove("glm4moe.nextn_predict_layers");
    })
    .unwrap();
    assert_eq!((m.config.n_layer, m.config.nextn_layers), (3, 0));
}

#[test]
fn glm4moe_without_qk_norms_loads_as_air_does() {
    // GLM-4.5-Air's files have no attn_q_norm/attn_k_norm (the 355B model's do).
    let m = rewrite(GLM, |_, specs| {
        specs.retain(|s| !s.name.contains("attn_q_norm") && !s.name.contains("attn_k_norm"))
    })
    .unwrap();
    for layer in &m.weights.layers {
        let model::weights::Attention::Gqa(a) = &layer.attn else {
            panic!("GQA attention")
        };
        assert!(a.q_norm.is_none() && a.k_norm.is_none());
    }
    // A file with only one of the two is refused rather than half-normalised.
    let e = rewrite(GLM, |_, specs| {
        specs.retain(|s| s.name != "blk.1.attn_k_norm.weight")
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("attn_k_norm"), "{e}");
}
