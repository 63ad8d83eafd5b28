//! `ferromoe synth --shape gpt-oss-120b | gpt-oss-20b`: gpt-oss's exact widths (hidden
//! 2880, 64 query / 8 KV heads of 64, experts of 2880, vocabulary 201088, sliding window
//! 128 on every other layer, YaRN 32× over 4096), with the tensor names, shapes and
//! metadata keys llama.cpp's converter writes (see tests/data/tiny/gpt-oss-tiny): biases
//! on q/k/v/o, the router and every expert product, per-head `attn_sinks`, the FFN norm
//! named `post_attention_norm`. `--type MXFP4` writes the real files' mix (experts MXFP4,
//! other matrices Q8_0).

use anyhow::bail;
use gguf::{Metadata, Value};

use super::{file_type, tokenizer_metadata, weight_type, Args, Kind, Planned, MIN_VOCAB};
use gguf::GgmlType;

/// A gpt-oss model's shapes.
#[derive(Clone, Debug)]
pub struct Shape {
    name: &'static str,
    hidden: usize,
    n_layer: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    n_expert: usize,
    n_expert_used: usize,
    expert_ffn: usize,
    vocab: usize,
    window: usize,
}

impl Shape {
    /// The shape `--shape` names, if it is a gpt-oss one (HF config.json of
    /// openai/gpt-oss-120b and openai/gpt-oss-20b).
    pub fn named(name: &str) -> Option<Shape> {
        let base = Shape {
            name: "gpt-oss-120b (synthetic)",
            hidden: 2880,
            n_layer: 36,
            n_head: 64,
            n_head_kv: 8,
            head_dim: 64,
            n_expert: 128,
            n_expert_used: 4,
            expert_ffn: 2880,
            vocab: 201088,
            window: 128,
        };
        match name {
            "gpt-oss-120b" => Some(base),
            "gpt-oss-20b" => Some(Shape {
                name: "gpt-oss-20b (synthetic)",
                n_layer: 24,
                n_expert: 32,
                ..base
            }),
            _ => None,
        }
    }

    /// With the command line's overrides (`--layers`, `--experts`, `--vocab`).
    pub fn with_args(mut self, args: &Args) -> anyhow::Result<Shape> {
        if let Some(a) = &args.arch {
            if a != "gpt-oss" {
                bail!(
                    "--arch {a} with --shape {}: the shape is gpt-oss's",
                    args.shape
                );
            }
        }
        if args.dense_layers.is_some() {
            bail!("--dense-layers: gpt-oss has no dense layers");
        }
        if let Some(l) = args.layers {
            if l == 0 {
                bail!("--layers must be at least 1");
            }
            self.n_layer = l;
        }
        if let Some(e) = args.experts {
            if e == 0 {
                bail!("--experts must be at least 1");
            }
            self.n_expert = e;
            self.n_expert_used = self.n_expert_used.min(e);
        }
        if let Some(v) = args.vocab {
            if v < MIN_VOCAB {
                bail!("--vocab {v}: the synthetic tokenizer needs at least {MIN_VOCAB} tokens");
            }
            self.vocab = v;
        }
        Ok(self)
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} · {} layers (every other one a {}-position window) · {} experts (top {}) · vocab {}",
            self.name, self.n_layer, self.window, self.n_expert, self.n_expert_used, self.vocab
        )
    }
}

/// Every tensor of the model, in file order, for the weight mix `mix`.
pub fn plan(s: &Shape, mix: &str) -> anyhow::Result<Vec<Planned>> {
    // Stand-in for the base module's `plan` with a gpt-oss tensor list; the shapes are
    // the converter's (ne order).
    let mut out = Vec::new();
    let mut add = |name: String, ne: Vec<usize>, kind: Kind| -> anyhow::Result<()> {
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse().ok());
        out.push(Planned::new(name, &ne, kind, |name| {
            gpt_oss_weight_type(mix, name, &ne, layer, s)
        })?);
        Ok(())
    };
    let h = s.hidden;
    let (q, kv) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
    let (e, f) = (s.n_expert, s.expert_ffn);
    // Router logits of unit spread on RMS-normalised inputs (see the deepseek2 plan).
    let router_std = 1.0 / (h as f32).sqrt();
    const BIAS_STD: f32 = 0.02;
    add("token_embd.weight".into(), vec![h, s.vocab], Kind::Weight)?;
    for il in 0..s.n_layer {
        let b = |t: &str| format!("blk.{il}.{t}");
        add(b("attn_norm.weight"), vec![h], Kind::Norm)?;
        add(b("attn_q.weight"), vec![h, q], Kind::Weight)?;
        add(b("attn_q.bias"), vec![q], Kind::F32(BIAS_STD))?;
        add(b("attn_k.weight"), vec![h, kv], Kind::Weight)?;
        add(b("attn_k.bias"), vec![kv], Kind::F32(BIAS_STD))?;
        add(b("attn_v.weight"), vec![h, kv], Kind::Weight)?;
        add(b("attn_v.bias"), vec![kv], Kind::F32(BIAS_STD))?;
        add(b("attn_output.weight"), vec![q, h], Kind::Weight)?;
        add(b("attn_output.bias"), vec![h], Kind::F32(BIAS_STD))?;
        add(b("attn_sinks.weight"), vec![s.n_head], Kind::F32(1.0))?;
        add(b("post_attention_norm.weight"), vec![h], Kind::Norm)?;
        add(b("ffn_gate_inp.weight"), vec![h, e], Kind::F32(router_std))?;
        add(b("ffn_gate_inp.bias"), vec![e], Kind::F32(BIAS_STD))?;
        add(b("ffn_gate_exps.weight"), vec![h, f, e], Kind::Weight)?;
        add(b("ffn_gate_exps.bias"), vec![f, e], Kind::F32(BIAS_STD))?;
        add(b("ffn_up_exps.weight"), vec![h, f, e], Kind::Weight)?;
        add(b("ffn_up_exps.bias"), vec![f, e], Kind::F32(BIAS_STD))?;
        add(b("ffn_down_exps.weight"), vec![f, h, e], Kind::Weight)?;
        add(b("ffn_down_exps.bias"), vec![h, e], Kind::F32(BIAS_STD))?;
    }
    add("output_norm.weight".into(), vec![h], Kind::Norm)?;
    add("output.weight".into(), vec![h, s.vocab], Kind::Weight)?;
    Ok(out)
}

/// The mix's type for one matrix. Rows of 2880 are not whole k-quant super-blocks (256),
/// so the k-quant mix falls back as llama-quantize does (`weight_type` applies that).
fn gpt_oss_weight_type(
    mix: &str,
    name: &str,
    ne: &[usize],
    layer: Option<usize>,
    s: &Shape,
) -> anyhow::Result<GgmlType> {
    // `weight_type` consults a deepseek2 shape only for Q4_K_M's layer rules (the layer
    // count, 8 experts): hand it one with these.
    let mut ds = super::Shape::v2_lite();
    ds.n_layer = s.n_layer;
    ds.n_expert = s.n_expert;
    weight_type(mix, name, ne, layer, &ds)
}

/// The metadata llama.cpp's converter writes for a gpt-oss model of shape `s`.
pub fn metadata(s: &Shape, mix: &str, seed: u64) -> Metadata {
    let mut md = Metadata::new("synth");
    let a = |k: &str| format!("gpt-oss.{k}");
    let u = |v: usize| Value::U32(v as u32);
    md.set("general.architecture", Value::String("gpt-oss".into()));
    md.set("general.type", Value::String("model".into()));
    md.set(
        "general.name",
        Value::String(format!("{} seed {seed}", s.name)),
    );
    md.set(a("block_count"), u(s.n_layer));
    md.set(a("context_length"), u(131072));
    md.set(a("embedding_length"), u(s.hidden));
    md.set(a("feed_forward_length"), u(s.expert_ffn));
    md.set(a("attention.head_count"), u(s.n_head));
    md.set(a("attention.head_count_kv"), u(s.n_head_kv));
    md.set(a("rope.freq_base"), Value::F32(150000.0));
    md.set(a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    md.set(a("expert_count"), u(s.n_expert));
    md.set(a("expert_used_count"), u(s.n_expert_used));
    md.set(a("attention.key_length"), u(s.head_dim));
    md.set(a("attention.value_length"), u(s.head_dim));
    md.set(a("rope.scaling.type"), Value::String("yarn".into()));
    md.set(a("rope.scaling.factor"), Value::F32(32.0));
    md.set(a("rope.scaling.original_context_length"), u(4096));
    md.set(a("rope.scaling.yarn_beta_fast"), Value::F32(32.0));
    md.set(a("rope.scaling.yarn_beta_slow"), Value::F32(1.0));
    md.set(a("attention.sliding_window"), u(s.window));
    md.set(a("expert_feed_forward_length"), u(s.expert_ffn));
    tokenizer_metadata(&mut md, s.vocab);
    md.set("general.quantization_version", Value::U32(2));
    md.set("general.file_type", Value::U32(file_type(mix)));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_has_gpt_oss_tensors_and_types() {
        let mut s = Shape::named("gpt-oss-120b").unwrap();
        s.n_layer = 2;
        s.n_expert = 4;
        let p = plan(&s, "MXFP4").unwrap();
        assert_eq!(
            p.len(),
            1 + 2 * 19 + 2,
            "token_embd, 19 per layer, output_norm, output"
        );
        let find = |n: &str| p.iter().find(|t| t.spec.name == n).unwrap();
        assert_eq!(find("blk.1.ffn_down_exps.weight").spec.ty, GgmlType::MXFP4);
        assert_eq!(
            find("blk.1.ffn_down_exps.weight").spec.ne,
            vec![2880, 2880, 4]
        );
        assert_eq!(find("blk.0.attn_q.weight").spec.ty, GgmlType::Q8_0);
        assert_eq!(find("blk.0.attn_q.weight").spec.ne, vec![2880, 4096]);
        assert_eq!(find("blk.0.attn_sinks.weight").spec.ne, vec![64]);
        assert_eq!(find("blk.0.ffn_up_exps.bias").spec.ne, vec![2880, 4]);
        // Q4_K_M: 2880-wide rows are not whole 256-blocks, so Q4_K falls back to Q5_0.
        let p = plan(&s, "Q4_K_M").unwrap();
        let find = |n: &str| p.iter().find(|t| t.spec.name == n).unwrap();
        assert_eq!(find("blk.0.attn_k.weight").spec.ty, GgmlType::Q5_0);
        let md = metadata(&s, "MXFP4", 1);
        assert_eq!(md.u32("gpt-oss.attention.sliding_window").unwrap(), 128);
        assert_eq!(md.u32("general.file_type").unwrap(), 38);
        assert_eq!(Shape::named("gpt-oss-20b").unwrap().n_expert, 32);
        assert!(Shape::named("v3").is_none());
    }
}
