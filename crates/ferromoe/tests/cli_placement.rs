//! Placement rules on the command line (`--override-tensor`/`-ot`, `--placement`,
//! `--cpu-moe`, `--no-repack`) and `inspect --plan`, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

use testutil::{data_dir, read_npy_f32};

fn ferromoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn model() -> String {
    data_dir()
        .join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf")
        .to_str()
        .unwrap()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ferromoe-placement-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

/// Runs `ferromoe ARGS` expecting a clean refusal; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = ferromoe(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Last-position logits of a fixed prompt under extra load options, and stderr.
fn logits(dir: &std::path::Path, tag: &str, extra: &[&str]) -> (Vec<f32>, String) {
    let out_path = dir.join(format!("{tag}.npy"));
    let m = model();
    let mut args = vec![
        "logits",
        "-m",
        &m,
        "--tokens",
        "51,353,612,332,962,69,92",
        "-t",
        "2",
        "-o",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (_, stderr) = ok(&ferromoe(&args));
    (read_npy_f32(&out_path).1, stderr)
}

#[test]
fn inspect_plan_prints_groups_tiers_and_rules() {
    let (stdout, _) = ok(&ferromoe(&["inspect", "--plan", &model()]));
    for want in [
        "deepseek2 (2.16 MiB in 34 tensors)",
        "placement (1 rule(s), the first match decides):",
        "rule 1: .* → cpu:repacked (default for deepseek2): decides 36 tensor(s)",
        "attention: cpu · repacked · 10 tensor(s)",
        "attention: cpu · mapped (no repacked layout) · 2 tensor(s)",
        "routed experts: cpu · repacked · 3 tensor(s), 996.0 KiB · rule 1",
        "other (embeddings, norms, routers): cpu · mapped · 12 tensor(s)",
        "cpu tier: ",
        "gpu tier: none (no GPU open: see --device)",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }

    // Both spellings of the override, and the same rule from a file, give the same plan.
    let dir = scratch("inspect");
    let toml = dir.join("plan.toml");
    std::fs::write(
        &toml,
        "[[rule]]\ntensors = \"ffn_.*_exps\"\ntier = \"cpu\"\nstorage = \"mapped\"\n",
    )
    .unwrap();
    let long = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--override-tensor",
        "ffn_.*_exps=cpu:mapped",
    ]))
    .0;
    let short = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "-ot",
        "ffn_.*_exps=CPU:mapped",
    ]))
    .0;
    let file = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--placement",
        toml.to_str().unwrap(),
    ]))
    .0;
    let groups = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("rule 1:"))
            .map(String::from)
            .collect()
    };
    assert!(
        long.contains("routed experts: cpu · mapped · 3 tensor(s), 996.0 KiB · rule 1"),
        "{long}"
    );
    assert_eq!(groups(&long), groups(&short));
    assert_eq!(groups(&long), groups(&file));
    assert!(
        file.contains("plan.toml rule 1 (tensors = \"ffn_.*_exps\")"),
        "{file}"
    );

    // --cpu-moe is accepted and says what it means without an accelerator.
    let cpu_moe = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--cpu-moe",
        "--n-cpu-moe",
        "2",
    ]))
    .0;
    assert!(
        cpu_moe.contains(
            "note: --cpu-moe: routed experts stay on the CPU (every tensor does: no GPU is open)"
        ) && cpu_moe.contains("note: --n-cpu-moe 2: routed experts stay on the CPU"),
        "{cpu_moe}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn experts_mapped_rest_repacked_gives_the_default_logits() {
    let dir = scratch("mapped");
    let (default, _) = logits(&dir, "default", &[]);
    let (mapped, stderr) = logits(
        &dir,
        "mapped",
        &["--override-tensor", "ffn_.*_exps=cpu:mapped"],
    );
    // The same numbers up to the float summation order of the repacked tile kernels vs the
    // file-layout ones (~1e-6 here; bit-identical for short prompts).
    let max = default
        .iter()
        .zip(&mapped)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-4, "max |Δ| {max}");
    assert_eq!(
        kernels::vector::argmax(&default),
        kernels::vector::argmax(&mapped)
    );
    assert!(
        stderr.contains("routed experts: cpu · mapped · 3 tensor(s)")
            && stderr.contains("dense FFN: cpu · repacked · 3 tensor(s)"),
        "{stderr}"
    );
    // --no-repack still works, as the rule `.*=cpu:mapped`; an earlier rule overrides it.
    let (_, stderr) = logits(
        &dir,
        "norepack",
        &["--no-repack", "-ot", "output=cpu:repacked"],
    );
    assert!(
        stderr.contains("--no-repack): decides")
            && stderr.contains("routed experts: cpu · mapped · 3 tensor(s)")
            && stderr.contains("output: cpu · repacked · 1 tensor(s)"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn requantized_q8_0_attention_gives_close_logits() {
    let dir = scratch("requant");
    let (default, _) = logits(&dir, "default", &[]);
    let rule = r"attn_(q_a|q_b|kv_a_mqa|output)\.=cpu:requantized:Q8_0";
    let (q8, stderr) = logits(&dir, "q8", &["--override-tensor", rule]);
    assert!(
        stderr.contains("requantized at load: 8 tensors")
            && stderr.contains("attention: cpu · requantized:Q8_0, repacked · 8 tensor(s)"),
        "{stderr}"
    );
    let max = default
        .iter()
        .zip(&q8)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Q4_K → Q8_0 changes the weights a little and the activations' quantization:
    // close (logits have std ≈ 1.7), not identical.
    assert!(max > 0.0 && max < 0.5, "max |Δ| {max}");
    assert_eq!(
        kernels::vector::argmax(&default),
        kernels::vector::argmax(&q8)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_rules_are_refused_by_name() {
    let m = model();
    for (args, want) in [
        (
            vec!["logits", "-m", &m, "--tokens", "1", "-o", "/dev/null", "-ot", "ffn_gate_inp_shexp=cpu"],
            "error: placement rule --override-tensor 'ffn_gate_inp_shexp=cpu': matches no tensor of this model",
        ),
        (
            vec!["inspect", "--plan", &m, "--override-tensor", "exps=CUDA0"],
            "'exps=CUDA0': no GPU is open",
        ),
        (
            vec!["inspect", "--plan", &m, "--override-tensor", "exps=cpu:requantized:IQ1_S"],
            "cannot requantize to 'iq1_s'",
        ),
        (vec!["inspect", "--plan", &m, "-ot", "exps=ssd"], "unknown tier 'ssd'"),
        (vec!["inspect", "--plan", &m, "-ot", "exps(=cpu"], "'exps(=cpu': invalid regex"),
        (vec!["inspect", "--plan", &m, "--placement", "/nonexistent/plan.toml"], "--placement /nonexistent/plan.toml"),
    ] {
        let stderr = refused(&args);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn a_repack_the_memory_plan_refuses_is_warned_by_rule() {
    // 16 MiB of usable memory: the KV cache and scratch alone do not fit, nothing is repacked.
    let out = ferromoe(&[
        "logits",
        "-m",
        &model(),
        "--tokens",
        "1,2",
        "-o",
        "/dev/null",
        "--memory-budget",
        "16M",
        "-ot",
        "attn_q_b=cpu:repacked",
    ]);
    let (_, stderr) = ok(&out);
    assert!(
        stderr.contains("warning: placement: --override-tensor 'attn_q_b=cpu:repacked' asks to repack 2 tensor(s) that the memory plan left mapped")
            && stderr.contains("attention: cpu · mapped (did not fit in memory)"),
        "{stderr}"
    );
}
