//! The GPU tier end to end on whatever adapter the tests get (lavapipe in CI): every tiny
//! model and the real 0.5B model give the same logits (within 1e-3, exact mode) and the
//! same greedy continuation with everything on the CPU, with the default hybrid plan
//! (routed experts on the CPU; attention with its KV cache, dense and shared FFNs, the
//! router's logits and the output head on the GPU), with every tensor asked onto the GPU
//! (`-ot .*=gpu`: what it cannot run yet stays on the CPU, with a note) and with the
//! attention kept on the CPU (`-ot attn=cpu`: the FFN-only GPU path).

use accel::DeviceChoice;
use engine::{Engine, LoadOptions};
use model::placement::Rule;
use model::Logits;
use testutil::data_dir;

/// The adapter the tests use (as `accel::testing::test_gpu` chooses it), or `None` after
/// printing why the test is skipped.
fn test_device() -> Option<DeviceChoice> {
    drop(accel::testing::test_gpu()?);
    Some(match std::env::var("FERROMOE_TEST_DEVICE") {
        Ok(s) => s.parse().expect("FERROMOE_TEST_DEVICE"),
        Err(_) => DeviceChoice::GpuIndex(0),
    })
}

fn load(path: &std::path::Path, device: DeviceChoice, rules: &str, exact: bool) -> Engine {
    let placement = if rules.is_empty() {
        Vec::new()
    } else {
        Rule::parse_override(rules).unwrap()
    };
    Engine::load(
        path,
        &LoadOptions {
            threads: Some(2),
            exact,
            device,
            placement,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Last-position logits of `prompt`, then `n` greedy tokens.
fn run(engine: &Engine, prompt: &[u32], n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut seq = engine.sequence(prompt.len() + n + 1).unwrap();
    let first = seq.feed(prompt, Logits::Last).unwrap().to_vec();
    let mut next = kernels::vector::argmax(&first).unwrap() as u32;
    let mut out = vec![next];
    for _ in 1..n {
        let logits = seq.feed(&[next], Logits::Last).unwrap();
        next = kernels::vector::argmax(logits).unwrap() as u32;
        out.push(next);
    }
    (first, out)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// CPU, hybrid and all-GPU agree on `path`; returns the GPU stages.
fn placements_agree(path: &std::path::Path, prompt: &[u32], n: usize) -> Option<String> {
    placements_agree_under(path, prompt, n, &["attn=cpu", ".*=gpu", ""])
}

/// CPU and each of the `rule_sets` (`-ot` rules; "" = the default hybrid plan) agree.
fn placements_agree_under(
    path: &std::path::Path,
    prompt: &[u32],
    n: usize,
    rule_sets: &[&str],
) -> Option<String> {
    let device = test_device()?;
    let cpu = load(path, DeviceChoice::Cpu, "", true);
    assert!(cpu.model.device.is_none());
    let (cpu_logits, cpu_tokens) = run(&cpu, prompt, n);
    drop(cpu);
    let mut stages = String::new();
    for &rules in rule_sets {
        let engine = load(path, device.clone(), rules, true);
        let gpu = engine.load.gpu.as_ref().expect("a GPU plan");
        assert_eq!(gpu.tensors > 0, engine.model.device.is_some());
        let (logits, tokens) = run(&engine, prompt, n);
        let d = max_diff(&cpu_logits, &logits);
        assert!(d <= 1e-3, "{} ({rules:?}): max |Δ| {d}", path.display());
        assert_eq!(cpu_tokens, tokens, "{} ({rules:?})", path.display());
        stages = gpu.stages.clone();
    }
    Some(stages)
}

fn tiny(rel: &str) -> std::path::PathBuf {
    data_dir().join("tiny").join(rel)
}

const PROMPT: [u32; 7] = [51, 353, 612, 332, 962, 69, 92];

#[test]
fn deepseek_v3_tiny() {
    // Dense first layer, shared experts, an untied output head; MLA with q compression
    // (attn_q_a → norm → attn_q_b) and its latent cache on the GPU.
    if let Some(stages) = placements_agree(
        &tiny("deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf"),
        &PROMPT,
        8,
    ) {
        assert!(
            stages.contains("dense FFN")
                && stages.contains("shared-expert")
                && stages.contains("output head")
                && stages.contains("attention(s) with their KV cache"),
            "{stages}"
        );
    }
}

#[test]
fn deepseek_v2_lite_tiny() {
    // MLA without q compression (attn_q), YaRN.
    if let Some(stages) = placements_agree(
        &tiny("deepseek-v2-lite-tiny/deepseek-v2-lite-tiny-Q8_0.gguf"),
        &PROMPT,
        8,
    ) {
        assert!(
            stages.contains("attention(s) with their KV cache"),
            "{stages}"
        );
    }
}

#[test]
fn deepseek_fused_kv_b_tiny() {
    // Files with the fused attn_kv_b: attn_k_b / attn_v_b built at load go to the GPU too.
    for model in ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"] {
        let path = data_dir().join(format!("fused/{model}-fused-kv_b.gguf"));
        if let Some(stages) = placements_agree_under(&path, &PROMPT, 4, &[""]) {
            assert!(
                stages.contains("attention(s) with their KV cache"),
                "{model}: {stages}"
            );
        }
    }
}

#[test]
fn deepseek32_tiny_keeps_its_attention_on_the_cpu() {
    // The lightning indexer has no GPU stage: DeepSeek-V3.2's attention (with its latent
    // cache) stays on the CPU, the load says so, and the rest of the GPU plan agrees.
    let path = tiny("deepseek32-tiny/deepseek32-tiny-Q8_0.gguf");
    let Some(stages) = placements_agree_under(&path, &PROMPT, 4, &[""]) else {
        return;
    };
    assert!(!stages.contains("attention"), "{stages}");
    let e = load(&path, test_device().expect("checked"), "", true);
    let summary = e.load.placement.join("\n");
    assert!(summary.contains("no lightning indexer"), "{summary}");
}

#[test]
fn glm4moe_tiny() {
    // Partial RoPE, q/k biases, a dense first layer and a shared expert.
    if let Some(stages) =
        placements_agree(&tiny("glm4moe-tiny/glm4moe-tiny-Q4_K_M.gguf"), &PROMPT, 8)
    {
        assert!(
            stages.contains("attention(s) with their KV cache"),
            "{stages}"
        );
    }
}

#[test]
fn qwen2moe_tiny() {
    // A sigmoid-gated shared expert: the gate is applied on the CPU to the GPU's output,
    // whose input rows stayed on the GPU after its attention.
    if let Some(stages) =
        placements_agree(&tiny("qwen2moe-tiny/qwen2moe-tiny-Q4_K_M.gguf"), &PROMPT, 8)
    {
        assert!(
            stages.contains("attention(s) with their KV cache") && stages.contains("shared-expert"),
            "{stages}"
        );
    }
}

#[test]
fn qwen3moe_minimax_mixtral_gpt_oss_tiny() {
    // No shared experts or dense layers: attention (per-head or all-head q/k norms,
    // sinks and sliding windows for gpt-oss) with the router's logits, and the output
    // head where it is not tied to the embeddings (looked up on the CPU).
    for rel in [
        "qwen3moe-tiny/qwen3moe-tiny-Q8_0.gguf",
        "minimax-m2-tiny/minimax-m2-tiny-Q8_0.gguf",
        "mixtral-tiny/mixtral-tiny-Q4_0.gguf",
        "gpt-oss-tiny/gpt-oss-tiny-Q8_0.gguf",
    ] {
        if let Some(stages) = placements_agree(&tiny(rel), &PROMPT, 8) {
            assert!(
                stages.contains("2 attention(s) with their KV cache"),
                "{rel}: {stages}"
            );
        }
    }
}

#[test]
fn gpt_oss_long_prompt_past_its_window() {
    // A 150-token prompt, far past gpt-oss-tiny's 8-position window on layer 0: the
    // GPU's positional cache must see only the window, as the CPU does; then greedy steps.
    let prompt: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % 500).collect();
    placements_agree_under(
        &tiny("gpt-oss-tiny/gpt-oss-tiny-Q8_0.gguf"),
        &prompt,
        4,
        &[""],
    );
}

#[test]
fn qwen2_5_coder_0_5b() {
    // The real model: its 24 attentions with their KV caches, 24 dense FFNs and its
    // (untied) output head on the GPU.
    if test_device().is_none() {
        return;
    }
    let prompt = [151644, 872, 198, 7985];
    // Software Vulkan is slow (~25 s here for these 5 steps): a short prompt's logits and
    // two greedy tokens, hybrid only (`.*=gpu` places the same tensors on this model).
    let stages = placements_agree_under(&testutil::demo_model(), &prompt, 2, &[""]).unwrap();
    assert_eq!(
        stages,
        "24 attention(s) with their KV cache, 24 dense FFN(s), the output head"
    );
}

#[test]
fn a_device_that_does_not_exist_is_an_input_error() {
    let e = Engine::load(
        &tiny("qwen3moe-tiny/qwen3moe-tiny-Q8_0.gguf"),
        &LoadOptions {
            device: DeviceChoice::GpuName("no-such-adapter-xyz".into()),
            ..Default::default()
        },
        &mut |_| {},
    )
    .err()
    .expect("an error");
    assert!(e.is_input(), "{e}");
    assert!(
        e.to_string()
            .contains("no GPU adapter matches --device gpu:no-such-adapter-xyz"),
        "{e}"
    );
}

/// Logits of `tokens` in a fresh cache under `form`: the first 5 as a prompt (every
/// position), then one decode step per remaining token.
fn form_logits(e: &Engine, form: model::MlaForm, tokens: &[u32]) -> Vec<f32> {
    let mut st = model::RunState::new(e.mode);
    st.set_mla_form(form);
    let mut kv = model::KvCache::new(&e.model.config, 64).unwrap();
    let m = &e.model;
    let mut out = m
        .forward(&e.pool, &mut st, &mut kv, &tokens[..5], Logits::All)
        .unwrap()
        .to_vec();
    for t in &tokens[5..] {
        out.extend_from_slice(
            m.forward(&e.pool, &mut st, &mut kv, &[*t], Logits::Last)
                .unwrap(),
        );
    }
    out
}

#[test]
fn deepseek_both_mla_forms_on_the_gpu() {
    // Each form forced (the decompressed one at every step, decode included): the GPU's
    // latent attention matches the CPU's in the exact mode, prompt and decode alike.
    let Some(device) = test_device() else { return };
    for rel in [
        "deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf",
        "deepseek-v2-lite-tiny/deepseek-v2-lite-tiny-Q8_0.gguf",
    ] {
        let cpu = load(&tiny(rel), DeviceChoice::Cpu, "", true);
        let gpu = load(&tiny(rel), device.clone(), "", true);
        let stages = &gpu.load.gpu.as_ref().expect("a GPU plan").stages;
        assert!(stages.contains("attention"), "{rel}: {stages}");
        for form in [model::MlaForm::Decompressed, model::MlaForm::Absorbed] {
            let a = form_logits(&cpu, form, &PROMPT);
            let b = form_logits(&gpu, form, &PROMPT);
            let d = max_diff(&a, &b);
            assert!(d <= 1e-3, "{rel} {form:?}: max |Δ| {d}");
        }
    }
}

#[test]
fn deepseek_mixed_forms_in_one_batch_on_the_gpu() {
    // The default mode's rule: a prompt into an empty cache runs decompressed, a decode
    // step absorbed. In one batch (one sequence of each) every sequence gets exactly the
    // logits it gets alone.
    let Some(device) = test_device() else { return };
    let path = tiny("deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf");
    let e = load(&path, device, "", false);
    let c = &e.model.config;
    let d = model::forward::MlaDims::of(c).unwrap();
    assert!(model::forward::mla_decompress_pays(PROMPT.len(), 0, &d));
    assert!(!model::forward::mla_decompress_pays(1, 4, &d));
    let m = &e.model;
    let fresh = || model::KvCache::new(c, 64).unwrap();
    let mut st = model::RunState::new(e.mode);
    // Alone: the decode sequence's 4-token prompt then one step; the other's prompt.
    let mut kv_b = fresh();
    m.forward(&e.pool, &mut st, &mut kv_b, &PROMPT[..4], Logits::Last)
        .unwrap();
    let mut kv_b2 = fresh();
    m.forward(&e.pool, &mut st, &mut kv_b2, &PROMPT[..4], Logits::Last)
        .unwrap();
    let step_alone = m
        .forward(&e.pool, &mut st, &mut kv_b, &[PROMPT[4]], Logits::Last)
        .unwrap()
        .to_vec();
    let mut kv_a = fresh();
    let prompt_alone = m
        .forward(&e.pool, &mut st, &mut kv_a, &PROMPT, Logits::Last)
        .unwrap()
        .to_vec();
    // Together.
    let mut kv_a2 = fresh();
    let both = m
        .forward_batch(
            &e.pool,
            &mut st,
            &mut [
                model::BatchSeq {
                    kv: &mut kv_a2,
                    tokens: &PROMPT,
                    logits: Logits::Last,
                },
                model::BatchSeq {
                    kv: &mut kv_b2,
                    tokens: &[PROMPT[4]],
                    logits: Logits::Last,
                },
            ],
        )
        .unwrap()
        .to_vec();
    let n_vocab = c.n_vocab;
    assert_eq!(&both[..n_vocab], &prompt_alone[..], "the prompt's logits");
    assert_eq!(
        &both[n_vocab..],
        &step_alone[..],
        "the decode step's logits"
    );
}
