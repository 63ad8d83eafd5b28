//! `ferromoe synth`: a random-weight GGUF with a real model's exact shapes, quantized
//! with our own quantizers, that both ferromoe and llama.cpp load — the file the
//! benchmarks run on (we do not ship or download 10 GB of real weights for a speed test).
//!
//! Shapes: DeepSeek-V2-Lite (`deepseek2`, all 27 layers, ~16 B parameters), DeepSeek-V3
//! (`deepseek2`, for a few layers, to measure the per-layer cost at the real V3 widths),
//! GLM-4.5-Air (`glm4moe`: GQA with q/k/v biases and partial RoPE, 128 experts + a shared
//! one; for a few layers too, with `--nextn-layers` its MTP block) and gpt-oss-120b / gpt-oss-20b (`gpt-oss`,
//! `synth_gpt_oss.rs`). Tensor names, shapes and metadata keys are the ones llama.cpp's
//! converter writes (see tests/data/tiny/deepseek-*, glm4moe-tiny and gpt-oss-tiny),
//! including deepseek2's split MLA tensors `attn_k_b` / `attn_v_b`.
//!
//! The file is streamed: one tensor at a time is generated, quantized (rows split over
//! all threads) and written, so memory stays at one quantized tensor.

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use gguf::{Array, GgmlType, GgufWriter, Metadata, TensorSpec, Value};
use model::Gating;

#[path = "synth_gpt_oss.rs"]
mod gpt_oss;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture; the shape decides it (`deepseek2` for v2-lite/v3, `glm4moe` for
    /// glm-4.5-air, `gpt-oss` for the gpt-oss shapes), so this only checks it.
    #[arg(long)]
    arch: Option<String>,
    /// Which model's shapes: `v2-lite` (DeepSeek-V2-Lite), `v3` (DeepSeek-V3/R1),
    /// `glm-4.5-air` (GLM-4.5-Air), `gpt-oss-120b` or `gpt-oss-20b`.
    #[arg(long)]
    shape: String,
    /// Number of layers (default: the real model's, 27 / 61).
    #[arg(long)]
    layers: Option<usize>,
    /// Leading dense-FFN layers (default: the real model's 1 / 3, at most layers − 1).
    #[arg(long)]
    dense_layers: Option<usize>,
    /// Routed experts per MoE layer (default: the real model's 64 / 256).
    #[arg(long)]
    experts: Option<usize>,
    /// Next-token-prediction (MTP) blocks after the trunk, as llama.cpp's converter writes
    /// GLM-4.5's (`blk.{layers}.*` with its `nextn.*` tensors, counted in `block_count`):
    /// glm-4.5-air only (the converter drops DeepSeek-V2/V3's).
    #[arg(long, default_value_t = 0)]
    nextn_layers: usize,
    /// Vocabulary size (default: the real model's 102400 / 129280).
    #[arg(long)]
    vocab: Option<usize>,
    /// Weight type mix: `Q4_K_M` (llama-quantize's choices), `Q8_0`, `Q4_0`, `MXFP4`
    /// (llama-quantize's `MXFP4_MOE`: 3-D tensors MXFP4, every other matrix Q8_0), or
    /// `IQ1_S_MOE` / `IQ2_XXS_MOE` (the routed experts IQ1_S / IQ2_XXS where their rows are
    /// whole 256-value blocks, as in the DeepSeek "1.58-bit" files, else IQ4_NL as
    /// llama-quantize falls back to; the rest as Q4_K_M; the low-bit blocks random, not
    /// quantized).
    #[arg(long = "type", default_value = "Q4_K_M")]
    ty: String,
    /// Seed of the random weights (same seed, same file, whatever the thread count).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads quantizing rows (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Output file. With `--split-max-size`, the name of the set: `-o m.gguf` writes
    /// `m-00001-of-0000N.gguf`, …
    #[arg(long, short)]
    out: PathBuf,
    /// Write a split set, as `llama-gguf-split --split --split-max-size` does: parts of at
    /// most SIZE bytes of tensor data (`500M`, `50G`: decimal units, like gguf-split; a
    /// bare number is bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    split_max_size: Option<u64>,
}

/// `500M` → 500·10⁶, `50G` → 50·10⁹, `4096` → 4096 (gguf-split's units).
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.strip_suffix(['M', 'm']) {
        Some(d) => (d, 1_000_000),
        None => match s.strip_suffix(['G', 'g']) {
            Some(d) => (d, 1_000_000_000),
            None => (s, 1),
        },
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{s}' is not a positive size like 500M, 50G or 4096"))
}

/// Where the tensors go: one file, or the parts of a split set.
enum Output {
    File(GgufWriter<BufWriter<std::fs::File>>),
    Set(gguf::SplitWriter),
}

impl Output {
    fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), gguf::GgufError> {
        match self {
            Output::File(w) => w.write_tensor(name, data),
            Output::Set(w) => w.write_tensor(name, data),
        }
    }

    /// Finishes the file(s); returns what was written, for the closing line.
    fn finish(self, out: &std::path::Path) -> Result<String, gguf::GgufError> {
        match self {
            Output::File(w) => {
                w.finish()?;
                Ok(out.display().to_string())
            }
            Output::Set(w) => {
                let paths = w.finish()?;
                Ok(format!(
                    "{} parts: {} … {}",
                    paths.len(),
                    paths[0].display(),
                    paths[paths.len() - 1].display()
                ))
            }
        }
    }
}

/// Grouped-query attention, for the shapes that are not deepseek2 (whose MLA widths are
/// the `q_lora` … `v_head` fields of [`Shape`]).
#[derive(Clone, Debug)]
struct GqaShape {
    n_head_kv: usize,
    head_dim: usize,
    /// Rotated values per head (less than `head_dim`: partial RoPE).
    rope_dim: usize,
    rope_base: f32,
    qkv_bias: bool,
}

/// Everything that fixes a model's tensors and metadata.
#[derive(Clone, Debug)]
pub struct Shape {
    name: &'static str,
    /// `general.architecture`.
    arch: &'static str,
    /// The attention when it is GQA; `None`: deepseek2's MLA.
    gqa: Option<GqaShape>,
    hidden: usize,
    n_layer: usize,
    /// MTP blocks after the trunk (`nextn_predict_layers`).
    n_nextn: usize,
    n_dense: usize,
    dense_ffn: usize,
    n_expert: usize,
    n_expert_used: usize,
    expert_ffn: usize,
    n_shared: usize,
    n_group: usize,
    n_group_used: usize,
    gating: Gating,
    weights_scale: f32,
    weights_norm: Option<bool>,
    n_head: usize,
    q_lora: Option<usize>,
    kv_lora: usize,
    qk_nope: usize,
    qk_rope: usize,
    v_head: usize,
    vocab: usize,
    context: usize,
    yarn_factor: f32,
    yarn_orig: usize,
    /// `rope.scaling.yarn_log_multiplier` as the converter stores it (0.1 · mscale_all_dim).
    yarn_log_mul: f32,
}

impl Shape {
    /// DeepSeek-V2-Lite (config.json of deepseek-ai/DeepSeek-V2-Lite).
    fn v2_lite() -> Shape {
        Shape {
            name: "DeepSeek-V2-Lite (synthetic)",
            arch: "deepseek2",
            gqa: None,
            hidden: 2048,
            n_layer: 27,
            n_nextn: 0,
            n_dense: 1,
            dense_ffn: 10944,
            n_expert: 64,
            n_expert_used: 6,
            expert_ffn: 1408,
            n_shared: 2,
            n_group: 1,
            n_group_used: 1,
            gating: Gating::Softmax,
            weights_scale: 1.0,
            weights_norm: None,
            n_head: 16,
            q_lora: None,
            kv_lora: 512,
            qk_nope: 128,
            qk_rope: 64,
            v_head: 128,
            vocab: 102400,
            context: 163840,
            yarn_factor: 40.0,
            yarn_orig: 4096,
            yarn_log_mul: 0.0707,
        }
    }

    /// DeepSeek-V3 / R1 (config.json of deepseek-ai/DeepSeek-V3).
    fn v3() -> Shape {
        Shape {
            name: "DeepSeek-V3 (synthetic)",
            arch: "deepseek2",
            gqa: None,
            hidden: 7168,
            n_layer: 61,
            n_nextn: 0,
            n_dense: 3,
            dense_ffn: 18432,
            n_expert: 256,
            n_expert_used: 8,
            expert_ffn: 2048,
            n_shared: 1,
            n_group: 8,
            n_group_used: 4,
            gating: Gating::Sigmoid,
            weights_scale: 2.5,
            weights_norm: Some(true),
            n_head: 128,
            q_lora: Some(1536),
            kv_lora: 512,
            qk_nope: 128,
            qk_rope: 64,
            v_head: 128,
            vocab: 129280,
            context: 163840,
            yarn_factor: 40.0,
            yarn_orig: 4096,
            yarn_log_mul: 0.1,
        }
    }

    /// GLM-4.5-Air (config.json of zai-org/GLM-4.5-Air), without its MTP block.
    fn glm_4_5_air() -> Shape {
        Shape {
            name: "GLM-4.5-Air (synthetic)",
            arch: "glm4moe",
            gqa: Some(GqaShape {
                n_head_kv: 8,
                head_dim: 128,
                rope_dim: 64,
                rope_base: 1_000_000.0,
                qkv_bias: true,
            }),
            hidden: 4096,
            n_layer: 46,
            n_nextn: 0,
            n_dense: 1,
            dense_ffn: 10944,
            n_expert: 128,
            n_expert_used: 8,
            expert_ffn: 1408,
            n_shared: 1,
            n_group: 1,
            n_group_used: 1,
            gating: Gating::Sigmoid,
            weights_scale: 1.0,
            weights_norm: Some(true),
            n_head: 96,
            // MLA widths: unused by a GQA shape.
            q_lora: None,
            kv_lora: 0,
            qk_nope: 0,
            qk_rope: 0,
            v_head: 0,
            vocab: 151552,
            context: 131072,
            yarn_factor: 1.0,
            yarn_orig: 0,
            yarn_log_mul: 0.0,
        }
    }

    /// The named shape with the command line's overrides applied and checked.
    fn from_args(args: &Args) -> anyhow::Result<Shape> {
        let mut s = match args.shape.as_str() {
            "v2-lite" => Shape::v2_lite(),
            "v3" => Shape::v3(),
            "glm-4.5-air" => Shape::glm_4_5_air(),
            other => bail!(
                "--shape {other}: expected v2-lite, v3, glm-4.5-air, gpt-oss-120b or gpt-oss-20b"
            ),
        };
        if let Some(a) = &args.arch {
            if a != s.arch {
                bail!("--arch {a}: shape {} is a {} model", args.shape, s.arch);
            }
        }
        if let Some(l) = args.layers {
            if l == 0 {
                bail!("--layers must be at least 1");
            }
            s.n_layer = l;
            s.n_dense = s.n_dense.min(l.saturating_sub(1));
        }
        if args.nextn_layers > 0 {
            if s.arch != "glm4moe" {
                bail!(
                    "--nextn-layers: shape {} has no MTP block in llama.cpp's files (glm-4.5-air has)",
                    args.shape
                );
            }
            s.n_nextn = args.nextn_layers;
        }
        if let Some(d) = args.dense_layers {
            if d > s.n_layer {
                bail!("--dense-layers {d} exceeds --layers {}", s.n_layer);
            }
            s.n_dense = d;
        }
        if let Some(e) = args.experts {
            if e == 0 {
                bail!("--experts must be at least 1");
            }
            s.n_expert = e;
            s.n_expert_used = s.n_expert_used.min(e);
            // Keep group-limited routing only where it still means something.
            if e % s.n_group != 0
                || e / s.n_group < 2
                || s.n_group_used * (e / s.n_group) < s.n_expert_used
            {
                s.n_group = 1;
                s.n_group_used = 1;
            }
        }
        if let Some(v) = args.vocab {
            if v < MIN_VOCAB {
                bail!("--vocab {v}: the synthetic tokenizer needs at least {MIN_VOCAB} tokens");
            }
            s.vocab = v;
        }
        Ok(s)
    }

    fn is_moe_layer(&self, il: usize) -> bool {
        il >= self.n_dense
    }
}

/// How the weights of one tensor are drawn.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// Every value 1 (norm weights).
    Ones,
    /// Approximately N(0, σ²).
    Normal(f32),
}

/// One tensor of the plan: name, ggml shape, stored type, how to fill it.
struct Planned {
    spec: TensorSpec,
    init: Init,
}

impl Planned {
    /// The tensor `name` of shape `ne` (ne order) as `kind` says: norms of ones, f32
    /// vectors of `std`, weights of `weight_ty` (the mix's choice) and [`WEIGHT_STD`].
    fn new(
        name: String,
        ne: &[usize],
        kind: Kind,
        weight_ty: impl FnOnce(&str) -> anyhow::Result<GgmlType>,
    ) -> anyhow::Result<Planned> {
        let (ty, init) = match kind {
            Kind::Norm => (GgmlType::F32, Init::Ones),
            Kind::F32(std) => (GgmlType::F32, Init::Normal(std)),
            Kind::Weight => (weight_ty(&name)?, Init::Normal(WEIGHT_STD)),
        };
        Ok(Planned {
            spec: TensorSpec {
                name,
                ty,
                ne: ne.iter().map(|&d| d as u64).collect(),
            },
            init,
        })
    }
}

/// Standard deviation of the random weights (like a freshly initialised transformer).
const WEIGHT_STD: f32 = 0.02;

/// Q4_K_M's choice for one weight tensor, following llama-quantize's rules for
/// `LLAMA_FTYPE_MOSTLY_Q4_K_M` as they apply to deepseek2 tensors: Q4_K by default,
/// Q6_K for `output.weight` and for the `ffn_down*` tensors of the "more bits" layers,
/// Q5_K for `attn_output` when the model has exactly 8 experts; then the fallback for
/// rows that are not a multiple of 256 (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0).
fn q4_k_m_type(name: &str, ne0: usize, layer: Option<usize>, s: &Shape) -> GgmlType {
    let use_more_bits = |i: usize, n: usize| {
        i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
    };
    let mut ty = GgmlType::Q4_K;
    if name == "output.weight" {
        return if ne0.is_multiple_of(256) {
            GgmlType::Q6_K
        } else {
            GgmlType::Q8_0
        };
    }
    if name.contains("ffn_down") {
        if let Some(il) = layer {
            if use_more_bits(il, s.n_layer) {
                ty = GgmlType::Q6_K;
            }
        }
    } else if name.contains("attn_output.weight") && s.n_expert == 8 {
        ty = GgmlType::Q5_K;
    } else if name.contains("attn_v.weight") {
        // GQA values: Q6_K in the "more bits" layers, Q8_0 for 8-expert models.
        if s.n_expert == 8 {
            ty = GgmlType::Q8_0;
        } else if layer.is_some_and(|il| use_more_bits(il, s.n_layer)) {
            ty = GgmlType::Q6_K;
        }
    } else if name.contains("attn_k.weight") && s.n_expert == 8 {
        ty = GgmlType::Q8_0;
    }
    if !ne0.is_multiple_of(256) {
        ty = match ty {
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            _ => GgmlType::Q8_0,
        };
    }
    ty
}

/// The stored type of a weight matrix for the requested mix.
fn weight_type(
    mix: &str,
    name: &str,
    ne: &[usize],
    layer: Option<usize>,
    s: &Shape,
) -> anyhow::Result<GgmlType> {
    let ne0 = ne[0];
    // The low-bit expert mixes of the DeepSeek "1.58-bit" / "2-bit" files: the routed
    // experts' matrices in the low-bit type where their rows are whole 256-value blocks,
    // else (V2-Lite's and GLM-4.5-Air's 1408-wide `ffn_down_exps`) IQ4_NL as llama-quantize
    // falls back to; the rest Q4_K_M's choice.
    if let Some(low) = random_block_type(mix) {
        return Ok(match name.contains("_exps") {
            true if ne0.is_multiple_of(256) => low,
            true => GgmlType::IQ4_NL,
            false => q4_k_m_type(name, ne0, layer, s),
        });
    }
    Ok(match mix {
        "Q4_K_M" => q4_k_m_type(name, ne0, layer, s),
        "Q8_0" => GgmlType::Q8_0,
        // llama-quantize's MXFP4_MOE: tensors with a third dimension (the stacked experts,
        // and deepseek2's per-head attn_k_b/attn_v_b) MXFP4, the rest Q8_0.
        "MXFP4" if ne.get(2).is_some_and(|&n| n > 1) => GgmlType::MXFP4,
        "MXFP4" => GgmlType::Q8_0,
        // llama-quantize's Q4_0 keeps the output matrix at Q6_K.
        "Q4_0" if name == "output.weight" && ne0.is_multiple_of(256) => GgmlType::Q6_K,
        "Q4_0" => GgmlType::Q4_0,
        other => {
            bail!("--type {other}: expected Q4_K_M, Q8_0, Q4_0, MXFP4, IQ1_S_MOE or IQ2_XXS_MOE")
        }
    })
}

/// The low-bit type of a `*_MOE` mix, whose blocks synth writes at random (it has no
/// quantizer for them; see [`random_blocks`]).
fn random_block_type(mix: &str) -> Option<GgmlType> {
    match mix {
        "IQ1_S_MOE" => Some(GgmlType::IQ1_S),
        "IQ2_XXS_MOE" => Some(GgmlType::IQ2_XXS),
        _ => None,
    }
}

/// Random valid blocks of IQ1_S, IQ2_XXS or IQ4_NL for one row, drawn from the row's random
/// values (so the same seed gives the same file): every grid index, sign, nibble and scale
/// pattern of these types is valid, so random bytes are a random weight matrix once each
/// block's f16 `d` (its first two bytes in all three) is set to give weights of about
/// [`WEIGHT_STD`] (IQ1_S: `d·(2s + 1)·(g ± 1/8)`, g ∈ {−1, 0, 1}, mean scale ~8;
/// IQ2_XXS: `d·(0.5 + s)·0.25·g`, |g| 8..43, mean scale ~8·0.25·25 = 50; IQ4_NL: `d·v`,
/// |v| ≤ 127, mean ~55).
fn random_blocks(ty: GgmlType, row: &[f32], dst: &mut [u8]) {
    let mut st = row.iter().take(4).fold(0x5bd1_e995_u64, |h, v| {
        h.rotate_left(17) ^ v.to_bits() as u64
    });
    for chunk in dst.chunks_mut(8) {
        let r = splitmix64(&mut st).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let d = match ty {
        GgmlType::IQ1_S => WEIGHT_STD / (8.0 * 0.8),
        GgmlType::IQ4_NL => WEIGHT_STD / 55.0,
        _ => WEIGHT_STD / 50.0,
    };
    let d = half::f16::from_f32(d).to_le_bytes();
    for block in dst.chunks_exact_mut(ty.type_size()) {
        block[..2].copy_from_slice(&d);
    }
}

/// llama.cpp's `general.file_type` for the mix.
fn file_type(mix: &str) -> u32 {
    match mix {
        "Q4_K_M" => 15,
        "Q8_0" => 7,
        "MXFP4" => 38,       // MXFP4_MOE
        "IQ1_S_MOE" => 24,   // the file's main type, as llama-quantize's IQ1_S
        "IQ2_XXS_MOE" => 19, // IQ2_XXS
        _ => 2,              // Q4_0
    }
}

/// Every tensor of the model, in file order.
fn plan(s: &Shape, mix: &str) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    let mut add =
        |name: String, ne: Vec<usize>, layer: Option<usize>, kind: Kind| -> anyhow::Result<()> {
            out.push(Planned::new(name, &ne, kind, |name| {
                weight_type(mix, name, &ne, layer, s)
            })?);
            Ok(())
        };
    let h = s.hidden;
    // Router logits = w·x with x RMS-normalised (|x|² ≈ hidden): σ = 1/√hidden gives logits
    // of unit spread, so softmax/sigmoid scores differ between experts and top-k is not a tie.
    let router_std = 1.0 / (h as f32).sqrt();
    add(
        "token_embd.weight".into(),
        vec![h, s.vocab],
        None,
        Kind::Weight,
    )?;
    for il in 0..s.n_layer + s.n_nextn {
        let b = |t: &str| format!("blk.{il}.{t}");
        let l = Some(il);
        if il >= s.n_layer {
            // An MTP block: its input projection and norms, then a layer like the trunk's.
            add(b("nextn.eh_proj.weight"), vec![2 * h, h], l, Kind::Weight)?;
            for t in ["enorm", "hnorm", "shared_head_norm"] {
                add(b(&format!("nextn.{t}.weight")), vec![h], l, Kind::Norm)?;
            }
        }
        add(b("attn_norm.weight"), vec![h], l, Kind::Norm)?;
        if let Some(g) = &s.gqa {
            let (q, kv) = (s.n_head * g.head_dim, g.n_head_kv * g.head_dim);
            for (t, width) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                add(b(&format!("{t}.weight")), vec![h, width], l, Kind::Weight)?;
                if g.qkv_bias {
                    add(b(&format!("{t}.bias")), vec![width], l, Kind::F32(0.02))?;
                }
            }
            add(b("attn_output.weight"), vec![q, h], l, Kind::Weight)?;
        } else {
            mla_tensors(&mut add, s, il)?;
        }
        // GLM's pre-FFN norm has llama.cpp's post-attention name.
        let ffn_norm = if s.arch == "glm4moe" {
            "post_attention_norm.weight"
        } else {
            "ffn_norm.weight"
        };
        add(b(ffn_norm), vec![h], l, Kind::Norm)?;
        if !s.is_moe_layer(il) {
            add(b("ffn_gate.weight"), vec![h, s.dense_ffn], l, Kind::Weight)?;
            add(b("ffn_up.weight"), vec![h, s.dense_ffn], l, Kind::Weight)?;
            add(b("ffn_down.weight"), vec![s.dense_ffn, h], l, Kind::Weight)?;
        } else {
            let (e, f) = (s.n_expert, s.expert_ffn);
            add(
                b("ffn_gate_inp.weight"),
                vec![h, e],
                l,
                Kind::F32(router_std),
            )?;
            if s.gating == Gating::Sigmoid {
                // e_score_correction_bias: small, so it nudges selection without deciding it.
                add(b("exp_probs_b.bias"), vec![e], l, Kind::F32(0.05))?;
            }
            add(b("ffn_gate_exps.weight"), vec![h, f, e], l, Kind::Weight)?;
            add(b("ffn_up_exps.weight"), vec![h, f, e], l, Kind::Weight)?;
            add(b("ffn_down_exps.weight"), vec![f, h, e], l, Kind::Weight)?;
            if s.n_shared > 0 {
                let fs = f * s.n_shared;
                add(b("ffn_gate_shexp.weight"), vec![h, fs], l, Kind::Weight)?;
                add(b("ffn_up_shexp.weight"), vec![h, fs], l, Kind::Weight)?;
                add(b("ffn_down_shexp.weight"), vec![fs, h], l, Kind::Weight)?;
            }
        }
    }
    add("output_norm.weight".into(), vec![h], None, Kind::Norm)?;
    add("output.weight".into(), vec![h, s.vocab], None, Kind::Weight)?;
    Ok(out)
}

/// deepseek2's MLA tensors of layer `il`.
fn mla_tensors(
    add: &mut impl FnMut(String, Vec<usize>, Option<usize>, Kind) -> anyhow::Result<()>,
    s: &Shape,
    il: usize,
) -> anyhow::Result<()> {
    let (h, head_k) = (s.hidden, s.qk_nope + s.qk_rope);
    let b = |t: &str| format!("blk.{il}.{t}");
    let l = Some(il);
    match s.q_lora {
        Some(r) => {
            add(b("attn_q_a_norm.weight"), vec![r], l, Kind::Norm)?;
            add(b("attn_q_a.weight"), vec![h, r], l, Kind::Weight)?;
            add(
                b("attn_q_b.weight"),
                vec![r, s.n_head * head_k],
                l,
                Kind::Weight,
            )?;
        }
        None => add(
            b("attn_q.weight"),
            vec![h, s.n_head * head_k],
            l,
            Kind::Weight,
        )?,
    }
    add(b("attn_kv_a_norm.weight"), vec![s.kv_lora], l, Kind::Norm)?;
    add(
        b("attn_kv_a_mqa.weight"),
        vec![h, s.kv_lora + s.qk_rope],
        l,
        Kind::Weight,
    )?;
    add(
        b("attn_k_b.weight"),
        vec![s.qk_nope, s.kv_lora, s.n_head],
        l,
        Kind::Weight,
    )?;
    add(
        b("attn_v_b.weight"),
        vec![s.kv_lora, s.v_head, s.n_head],
        l,
        Kind::Weight,
    )?;
    add(
        b("attn_output.weight"),
        vec![s.n_head * s.v_head, h],
        l,
        Kind::Weight,
    )?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Norm,
    F32(f32),
    Weight,
}

/// Smallest vocabulary the synthetic tokenizer fits in (specials + bytes + merges).
const MIN_VOCAB: usize = 2 + 256 + 26 + 26 * 26;

/// A small but real byte-level BPE tokenizer (`gpt2` model, `gpt-2` pre-tokenizer):
/// `<|bos|>`, `<|eos|>`, the 256 byte tokens, merges for "Ġ"+letter and every pair of
/// lowercase letters, then `[PADn]` tokens (type UNUSED) up to the vocabulary size,
/// like converters pad real vocabularies to the embedding size.
fn tokenizer_metadata(md: &mut Metadata, vocab: usize) {
    // GPT-2's byte → printable character map, so byte-level token strings are UTF-8.
    let bytes = text::byte_to_char_table();
    let mut tokens: Vec<String> = vec!["<|bos|>".into(), "<|eos|>".into()];
    let mut types: Vec<i32> = vec![3, 3]; // CONTROL
    for &c in &bytes {
        tokens.push(c.to_string());
        types.push(1); // NORMAL
    }
    let space = bytes[b' ' as usize];
    let mut merges = Vec::new();
    for a in b'a'..=b'z' {
        merges.push(format!("{space} {}", a as char));
        tokens.push(format!("{space}{}", a as char));
        types.push(1);
    }
    for a in b'a'..=b'z' {
        for b in b'a'..=b'z' {
            merges.push(format!("{} {}", a as char, b as char));
            tokens.push(format!("{}{}", a as char, b as char));
            types.push(1);
        }
    }
    let mut i = 0;
    while tokens.len() < vocab {
        tokens.push(format!("[PAD{i}]"));
        types.push(5); // UNUSED
        i += 1;
    }
    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    md.set("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    md.set("tokenizer.ggml.bos_token_id", Value::U32(0));
    md.set("tokenizer.ggml.eos_token_id", Value::U32(1));
    md.set("tokenizer.ggml.padding_token_id", Value::U32(1));
    md.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    md.set("tokenizer.ggml.add_eos_token", Value::Bool(false));
}

/// The metadata llama.cpp's converter writes for a model of shape `s`.
fn metadata(s: &Shape, mix: &str, seed: u64) -> Metadata {
    let mut md = Metadata::new("synth");
    let a = |k: &str| format!("{}.{k}", s.arch);
    let u = |v: usize| Value::U32(v as u32);
    md.set("general.architecture", Value::String(s.arch.into()));
    md.set("general.type", Value::String("model".into()));
    md.set(
        "general.name",
        Value::String(format!("{} seed {seed}", s.name)),
    );
    md.set(a("block_count"), u(s.n_layer + s.n_nextn));
    if s.n_nextn > 0 {
        md.set(a("nextn_predict_layers"), u(s.n_nextn));
    }
    md.set(a("context_length"), u(s.context));
    md.set(a("embedding_length"), u(s.hidden));
    md.set(a("feed_forward_length"), u(s.dense_ffn));
    md.set(a("attention.head_count"), u(s.n_head));
    if let Some(g) = &s.gqa {
        md.set(a("attention.head_count_kv"), u(g.n_head_kv));
        md.set(a("attention.key_length"), u(g.head_dim));
        md.set(a("attention.value_length"), u(g.head_dim));
        md.set(a("rope.dimension_count"), u(g.rope_dim));
        md.set(a("rope.freq_base"), Value::F32(g.rope_base));
        md.set(a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    } else {
        md.set(a("attention.head_count_kv"), u(1));
        md.set(a("rope.scaling.type"), Value::String("yarn".into()));
        md.set(a("rope.scaling.factor"), Value::F32(s.yarn_factor));
        md.set(a("rope.scaling.original_context_length"), u(s.yarn_orig));
        md.set(a("rope.scaling.yarn_beta_fast"), Value::F32(32.0));
        md.set(a("rope.scaling.yarn_beta_slow"), Value::F32(1.0));
        md.set(a("rope.freq_base"), Value::F32(10000.0));
        md.set(a("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    }
    md.set(a("expert_count"), u(s.n_expert));
    md.set(a("expert_used_count"), u(s.n_expert_used));
    md.set(a("expert_group_count"), u(s.n_group));
    md.set(a("expert_group_used_count"), u(s.n_group_used));
    md.set(a("expert_gating_func"), u(s.gating.gguf_value()));
    md.set(a("leading_dense_block_count"), u(s.n_dense));
    md.set(a("vocab_size"), u(s.vocab));
    if s.gqa.is_none() {
        md.set(a("attention.key_length"), u(s.kv_lora + s.qk_rope));
        md.set(a("attention.value_length"), u(s.kv_lora));
        match s.q_lora {
            Some(r) => md.set(a("attention.q_lora_rank"), u(r)),
            // Real V2-Lite files have no q_lora_rank key. llama.cpp only accepts that for
            // 26/27-layer models ("lite" by layer count); for other layer counts write 0,
            // which it and ferromoe both read as "no q_lora" (tests/data/README.md).
            None if s.n_layer == 26 || s.n_layer == 27 => {}
            None => md.set(a("attention.q_lora_rank"), u(0)),
        }
        md.set(a("attention.kv_lora_rank"), u(s.kv_lora));
        md.set(a("attention.key_length_mla"), u(s.qk_nope + s.qk_rope));
        md.set(a("attention.value_length_mla"), u(s.v_head));
        md.set(a("rope.dimension_count"), u(s.qk_rope));
        md.set(
            a("rope.scaling.yarn_log_multiplier"),
            Value::F32(s.yarn_log_mul),
        );
    }
    md.set(a("expert_feed_forward_length"), u(s.expert_ffn));
    md.set(a("expert_shared_count"), u(s.n_shared));
    md.set(a("expert_weights_scale"), Value::F32(s.weights_scale));
    if let Some(n) = s.weights_norm {
        md.set(a("expert_weights_norm"), Value::Bool(n));
    }
    tokenizer_metadata(&mut md, s.vocab);
    md.set("general.quantization_version", Value::U32(2));
    md.set("general.file_type", Value::U32(file_type(mix)));
    md
}

/// splitmix64: the per-row seed mixer and generator (fast, good enough for weights).
#[inline]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `row` with the row's values. Normal values are the Irwin–Hall sum of four 16-bit
/// uniforms (one 64-bit draw per value), rescaled to mean 0 and standard deviation σ:
/// close to a Gaussian (bounded at ±3.46σ) and ~20× cheaper than Box–Muller, which
/// matters at 16 G values.
fn fill_row(row: &mut [f32], init: Init, seed: u64, tensor: usize, index: usize) {
    match init {
        Init::Ones => row.fill(1.0),
        Init::Normal(std) => {
            let mut st = seed
                ^ (tensor as u64).wrapping_mul(0xd6e8_feb8_6659_fd93)
                ^ (index as u64).wrapping_mul(0xa076_1d64_78bd_642f);
            splitmix64(&mut st);
            // Sum of 4 U(0,1): mean 2, variance 4/12.
            let scale = std * 3f32.sqrt() / 65536.0;
            for v in row.iter_mut() {
                let r = splitmix64(&mut st);
                let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
                *v = (sum as f32 - 2.0 * 65535.0) * scale;
            }
        }
    }
}

/// One row, f32 → stored type.
fn encode_row(ty: GgmlType, row: &[f32], dst: &mut [u8]) -> anyhow::Result<()> {
    if matches!(ty, GgmlType::IQ1_S | GgmlType::IQ2_XXS | GgmlType::IQ4_NL) {
        random_blocks(ty, row, dst);
        return Ok(());
    }
    quant::quantize(ty, row, dst).with_context(|| format!("quantizing a row to {ty}"))
}

/// Generates and encodes tensor `index` (all its rows, split over `threads`).
fn build_tensor(p: &Planned, index: usize, seed: u64, threads: usize) -> anyhow::Result<Vec<u8>> {
    let ne0 = p.spec.ne[0] as usize;
    let rows: usize = p.spec.ne[1..].iter().map(|&d| d as usize).product();
    let row_bytes = p.spec.ty.row_bytes(ne0 as u64).with_context(|| {
        format!(
            "{}: rows of {ne0} are not a whole number of {} blocks",
            p.spec.name, p.spec.ty
        )
    })? as usize;
    let mut data = vec![0u8; row_bytes * rows];
    let per = rows.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = data
            .chunks_mut(per * row_bytes)
            .enumerate()
            .map(|(c, chunk)| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut row = vec![0f32; ne0];
                    for (r, dst) in chunk.chunks_exact_mut(row_bytes).enumerate() {
                        fill_row(&mut row, p.init, seed, index, c * per + r);
                        encode_row(p.spec.ty, &row, dst)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a quantizing thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(data)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (tensors, md, what) = match gpt_oss::Shape::named(&args.shape) {
        Some(s) => {
            let s = s.with_args(&args)?;
            let summary = s.summary();
            (
                gpt_oss::plan(&s, &args.ty)?,
                gpt_oss::metadata(&s, &args.ty, args.seed),
                summary,
            )
        }
        None => {
            let shape = Shape::from_args(&args)?;
            let summary = format!(
                "{} · {} layers ({} dense) · {} experts (top {}) · vocab {}",
                shape.name,
                shape.n_layer,
                shape.n_dense,
                shape.n_expert,
                shape.n_expert_used,
                shape.vocab
            );
            (
                plan(&shape, &args.ty)?,
                metadata(&shape, &args.ty, args.seed),
                summary,
            )
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let total_values: u64 = tensors
        .iter()
        .map(|t| t.spec.ne.iter().product::<u64>())
        .sum();
    let total_bytes: u64 = tensors
        .iter()
        .map(|t| {
            t.spec.ty.row_bytes(t.spec.ne[0]).unwrap_or(0) * t.spec.ne[1..].iter().product::<u64>()
        })
        .sum();
    eprintln!(
        "synth: {what} · {} · {:.2} G params · {:.2} GB · {threads} threads",
        args.ty,
        total_values as f64 / 1e9,
        total_bytes as f64 / 1e9
    );
    let specs = tensors.iter().map(|t| t.spec.clone()).collect();
    let mut w = match args.split_max_size {
        None => {
            let file = std::fs::File::create(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?;
            Output::File(GgufWriter::new(
                BufWriter::with_capacity(8 << 20, file),
                &md,
                specs,
            )?)
        }
        Some(max) => Output::Set(gguf::SplitWriter::create(&args.out, &md, specs, max)?),
    };
    let start = Instant::now();
    let mut done = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let data = build_tensor(t, i, args.seed, threads)?;
        w.write_tensor(&t.spec.name, &data)
            .with_context(|| format!("writing {}", args.out.display()))?;
        done += t.spec.ne.iter().product::<u64>();
        if t.spec.ne.iter().product::<u64>() > 50_000_000 {
            let s = start.elapsed().as_secs_f64();
            eprintln!(
                "synth: {:>6.1}% {:<28} {:<5} {:.0} s, {:.1} M values/s",
                100.0 * done as f64 / total_values as f64,
                t.spec.name,
                t.spec.ty.name(),
                s,
                done as f64 / s / 1e6
            );
        }
    }
    let written = w
        .finish(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let s = start.elapsed().as_secs_f64();
    eprintln!(
        "synth: wrote {written} ({:.2} GB) in {:.1} s ({:.1} M values/s on {threads} threads)",
        total_bytes as f64 / 1e9,
        s,
        total_values as f64 / s / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sizes_use_gguf_splits_decimal_units() {
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("50G"), Ok(50_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "0", "0M", "-5M", "1.5G", "12K", "G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn q5_0_round_trips_within_half_a_step() {
        let mut row = vec![0f32; 256];
        fill_row(&mut row, Init::Normal(0.02), 7, 0, 0);
        let mut q = vec![0u8; GgmlType::Q5_0.row_bytes(256).unwrap() as usize];
        quant::quantize(GgmlType::Q5_0, &row, &mut q).unwrap();
        let mut back = vec![0f32; 256];
        quant::dequantize(GgmlType::Q5_0, &q, &mut back).unwrap();
        for (blk, (x, y)) in row.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = amax / 16.0;
            for (a, b) in x.iter().zip(y) {
                assert!(
                    (a - b).abs() <= 0.5 * step + 1e-6,
                    "block {blk}: {a} vs {b} (step {step})"
                );
            }
        }
    }

    #[test]
    fn normal_init_has_the_requested_moments() {
        let mut row = vec![0f32; 1 << 16];
        fill_row(&mut row, Init::Normal(0.02), 1, 3, 5);
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 3e-4, "mean {mean}");
        assert!((sd - 0.02).abs() < 4e-4, "sd {sd}");
    }

    #[test]
    fn q4_k_m_types_follow_llama_quantize() {
        let s = Shape::v2_lite();
        assert_eq!(q4_k_m_type("output.weight", 2048, None, &s), GgmlType::Q6_K);
        assert_eq!(
            q4_k_m_type("token_embd.weight", 2048, None, &s),
            GgmlType::Q4_K
        );
        assert_eq!(
            q4_k_m_type("blk.3.attn_k_b.weight", 128, Some(3), &s),
            GgmlType::Q5_0
        );
        assert_eq!(
            q4_k_m_type("blk.3.attn_output.weight", 2048, Some(3), &s),
            GgmlType::Q4_K
        );
        // 27 layers: more bits for layers < 3, ≥ 23 and (i − 3) % 3 == 2.
        assert_eq!(
            q4_k_m_type("blk.1.ffn_down_shexp.weight", 2816, Some(1), &s),
            GgmlType::Q6_K
        );
        assert_eq!(
            q4_k_m_type("blk.5.ffn_down_shexp.weight", 2816, Some(5), &s),
            GgmlType::Q6_K
        );
        assert_eq!(
            q4_k_m_type("blk.6.ffn_down_shexp.weight", 2816, Some(6), &s),
            GgmlType::Q4_K
        );
        // Expert rows of 1408 are not a multiple of 256: Q6_K → Q8_0, Q4_K → Q5_0.
        assert_eq!(
            q4_k_m_type("blk.1.ffn_down_exps.weight", 1408, Some(1), &s),
            GgmlType::Q8_0
        );
        assert_eq!(
            q4_k_m_type("blk.6.ffn_down_exps.weight", 1408, Some(6), &s),
            GgmlType::Q5_0
        );
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_thread_count() {
        let p = Planned {
            spec: TensorSpec {
                name: "blk.0.ffn_up_exps.weight".into(),
                ty: GgmlType::Q4_K,
                ne: vec![256, 7, 3],
            },
            init: Init::Normal(0.02),
        };
        let one = build_tensor(&p, 4, 11, 1).unwrap();
        assert_eq!(one, build_tensor(&p, 4, 11, 3).unwrap());
        assert_eq!(one, build_tensor(&p, 4, 11, 64).unwrap());
        assert_ne!(
            one,
            build_tensor(&p, 4, 12, 1).unwrap(),
            "the seed must matter"
        );
    }

    #[test]
    fn glm_4_5_air_plan_names_tensors_and_keys_as_the_converter_does() {
        let mut s = Shape::glm_4_5_air();
        s.n_layer = 2;
        let t = plan(&s, "Q4_K_M").unwrap();
        let get = |n: &str| {
            t.iter()
                .find(|p| p.spec.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(get("blk.0.attn_q.weight").spec.ne, vec![4096, 96 * 128]);
        assert_eq!(get("blk.0.attn_k.weight").spec.ne, vec![4096, 8 * 128]);
        assert_eq!(get("blk.0.attn_v.bias").spec.ne, vec![8 * 128]);
        assert_eq!(
            get("blk.0.attn_output.weight").spec.ne,
            vec![96 * 128, 4096]
        );
        assert_eq!(get("blk.0.ffn_down.weight").spec.ne, vec![10944, 4096]);
        assert_eq!(
            get("blk.1.ffn_up_exps.weight").spec.ne,
            vec![4096, 1408, 128]
        );
        assert_eq!(get("blk.1.ffn_gate_shexp.weight").spec.ne, vec![4096, 1408]);
        // Layer 1 of 2 gets more bits: attn_v Q6_K, ffn_down* Q6_K, whose rows of 1408 fall
        // back to Q8_0.
        assert_eq!(get("blk.0.attn_v.weight").spec.ty, GgmlType::Q4_K);
        assert_eq!(get("blk.1.attn_v.weight").spec.ty, GgmlType::Q6_K);
        assert_eq!(get("blk.1.ffn_down_shexp.weight").spec.ty, GgmlType::Q8_0);
        assert_eq!(get("blk.1.ffn_up_shexp.weight").spec.ty, GgmlType::Q4_K);

        // The same tensor names and metadata keys as llama.cpp's converter wrote for the
        // tiny GLM model (2 trunk layers, the first dense, and an MTP block), less its q/k
        // norms (GLM-4.5 355B has them, Air not).
        s.n_nextn = 1;
        let t = plan(&s, "Q4_K_M").unwrap();
        let tiny =
            gguf::Gguf::open(testutil::data_dir().join("tiny/glm4moe-tiny/glm4moe-tiny-Q8_0.gguf"))
                .unwrap();
        let mut want: Vec<&str> = tiny
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !n.contains("attn_q_norm") && !n.contains("attn_k_norm"))
            .collect();
        want.sort_unstable();
        let mut got: Vec<&str> = t.iter().map(|p| p.spec.name.as_str()).collect();
        got.sort_unstable();
        assert_eq!(got, want);
        let md = metadata(&s, "Q4_K_M", 1);
        for (key, _) in tiny.metadata().iter() {
            if key.starts_with("glm4moe.") {
                assert!(md.get(key).is_some(), "{key} missing");
            }
        }
        assert_eq!(md.u32("glm4moe.block_count").unwrap(), 3);
        assert_eq!(md.u32("glm4moe.nextn_predict_layers").unwrap(), 1);
        let eh_proj = t
            .iter()
            .find(|p| p.spec.name == "blk.2.nextn.eh_proj.weight");
        assert_eq!(eh_proj.unwrap().spec.ne, vec![8192, 4096]);
        assert_eq!(md.u32("glm4moe.rope.dimension_count").unwrap(), 64);
        assert_eq!(md.u32("glm4moe.attention.head_count_kv").unwrap(), 8);
        assert!(md.get("glm4moe.attention.kv_lora_rank").is_none());
    }

    #[test]
    fn v3_plan_has_q_lora_groups_and_the_score_bias() {
        let mut s = Shape::v3();
        s.n_layer = 4;
        let t = plan(&s, "Q4_K_M").unwrap();
        let get = |n: &str| {
            t.iter()
                .find(|p| p.spec.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(get("blk.0.attn_q_a.weight").spec.ne, vec![7168, 1536]);
        assert_eq!(get("blk.0.attn_q_b.weight").spec.ne, vec![1536, 128 * 192]);
        assert_eq!(get("blk.2.ffn_down.weight").spec.ne, vec![18432, 7168]);
        assert_eq!(
            get("blk.3.ffn_gate_exps.weight").spec.ne,
            vec![7168, 2048, 256]
        );
        assert_eq!(get("blk.3.exp_probs_b.bias").spec.ne, vec![256]);
        assert_eq!(get("blk.3.ffn_down_shexp.weight").spec.ne, vec![2048, 7168]);
        assert!(t.iter().all(|p| p.spec.name != "blk.0.attn_q.weight"));
        let md = metadata(&s, "Q4_K_M", 1);
        assert_eq!(md.u32("deepseek2.attention.q_lora_rank").unwrap(), 1536);
        assert_eq!(md.u32("deepseek2.expert_group_count").unwrap(), 8);
        assert_eq!(md.u32("deepseek2.expert_group_used_count").unwrap(), 4);
        assert_eq!(md.u32("deepseek2.expert_gating_func").unwrap(), 2);
        assert!(md.bool("deepseek2.expert_weights_norm").unwrap());
        // Real V2-Lite (27 layers) has no q_lora_rank key at all.
        let md = metadata(&Shape::v2_lite(), "Q4_K_M", 1);
        assert!(md.get("deepseek2.attention.q_lora_rank").is_none());
    }

    #[test]
    fn mxfp4_mix_follows_llama_quantize_mxfp4_moe() {
        let mut s = Shape::v2_lite();
        s.n_layer = 2;
        let t = plan(&s, "MXFP4").unwrap();
        for p in &t {
            let three_d = p.spec.ne.get(2).is_some_and(|&n| n > 1);
            let want = match p.spec.ty {
                GgmlType::F32 => continue,
                _ if three_d => GgmlType::MXFP4,
                _ => GgmlType::Q8_0,
            };
            assert_eq!(p.spec.ty, want, "{}", p.spec.name);
        }
        let ty = |n: &str| t.iter().find(|p| p.spec.name == n).unwrap().spec.ty;
        assert_eq!(ty("blk.1.ffn_down_exps.weight"), GgmlType::MXFP4);
        assert_eq!(ty("blk.1.ffn_down_shexp.weight"), GgmlType::Q8_0);
        assert_eq!(ty("output.weight"), GgmlType::Q8_0);
        assert_eq!(file_type("MXFP4"), 38);
        assert!(plan(&s, "IQ1_S").is_err(), "no quantizer: refused");
    }

    #[test]
    fn iq1_s_moe_mix_puts_whole_block_expert_rows_in_iq1_s() {
        let mut s = Shape::v2_lite();
        s.n_layer = 2;
        let t = plan(&s, "IQ1_S_MOE").unwrap();
        let ty = |n: &str| t.iter().find(|p| p.spec.name == n).unwrap().spec.ty;
        assert_eq!(ty("blk.1.ffn_gate_exps.weight"), GgmlType::IQ1_S);
        assert_eq!(ty("blk.1.ffn_up_exps.weight"), GgmlType::IQ1_S);
        // 1408-wide rows: not whole IQ1_S blocks, so llama-quantize's IQ4_NL.
        assert_eq!(ty("blk.1.ffn_down_exps.weight"), GgmlType::IQ4_NL);
        assert_eq!(ty("blk.1.ffn_gate_shexp.weight"), GgmlType::Q4_K);
        assert_eq!(file_type("IQ1_S_MOE"), 24);
        // Random valid blocks: the same row gives the same bytes, d is the one chosen, and
        // the weights decode to finite values of about WEIGHT_STD.
        let row: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin() * 0.02).collect();
        for (ty, bytes) in [
            (GgmlType::IQ1_S, 100),
            (GgmlType::IQ2_XXS, 132),
            (GgmlType::IQ4_NL, 288),
        ] {
            let (mut a, mut b) = (vec![0u8; bytes], vec![0u8; bytes]);
            encode_row(ty, &row, &mut a).unwrap();
            encode_row(ty, &row, &mut b).unwrap();
            assert_eq!(a, b);
            let mut w = vec![0f32; 512];
            quant::dequantize(ty, &a, &mut w).unwrap();
            let rms = (w.iter().map(|v| v * v).sum::<f32>() / 512.0).sqrt();
            assert!(
                w.iter().all(|v| v.is_finite()) && (0.005..0.08).contains(&rms),
                "{ty}: rms {rms}"
            );
        }
    }

    #[test]
    fn tokenizer_is_padded_to_the_vocabulary() {
        let mut md = Metadata::new("t");
        tokenizer_metadata(&mut md, 5000);
        let tokens = md.str_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.len(), 5000);
        let unique: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), 5000, "token strings must be unique");
        assert_eq!(
            md.i32_array("tokenizer.ggml.token_type").unwrap().len(),
            5000
        );
    }
}
