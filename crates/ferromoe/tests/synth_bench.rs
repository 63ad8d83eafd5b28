//! `ferromoe synth` and `ferromoe bench`, run as a user would: a small V2-Lite-shaped file
//! (real widths, 1 MoE layer of 4 experts, small vocabulary) is written, checked against the
//! requested shape, loaded by the engine (finite logits) and benchmarked.

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf::{GgmlType, Gguf};
use testutil::read_npy_f32;

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

/// `ferromoe bench -m model args…`.
fn bench(model: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["bench", "-m", model.to_str().unwrap()];
    all.extend_from_slice(args);
    ferromoe(&all)
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferromoe-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// 1 layer (MoE: 4 routed experts + 2 shared), vocabulary 1000, every other width V2-Lite's.
fn small_v2_lite(path: &Path) {
    let out = ferromoe(&[
        "synth",
        "--arch",
        "deepseek2",
        "--shape",
        "v2-lite",
        "--layers",
        "2",
        "--dense-layers",
        "0",
        "--experts",
        "4",
        "--vocab",
        "1000",
        "--type",
        "Q4_K_M",
        "--seed",
        "3",
        "--out",
        path.to_str().unwrap(),
    ]);
    ok(&out, "synth");
}

#[test]
fn synth_v2_lite_small_has_the_shape_loads_and_runs() {
    let path = scratch("v2lite-small.gguf");
    small_v2_lite(&path);
    let f = Gguf::open(&path).unwrap();
    let md = f.metadata();
    assert_eq!(md.str("general.architecture").unwrap(), "deepseek2");
    assert_eq!(md.u32("deepseek2.block_count").unwrap(), 2);
    assert_eq!(md.u32("deepseek2.leading_dense_block_count").unwrap(), 0);
    assert_eq!(md.u32("deepseek2.embedding_length").unwrap(), 2048);
    assert_eq!(md.u32("deepseek2.attention.head_count").unwrap(), 16);
    assert_eq!(md.u32("deepseek2.attention.kv_lora_rank").unwrap(), 512);
    assert_eq!(md.u32("deepseek2.attention.key_length_mla").unwrap(), 192);
    assert_eq!(md.u32("deepseek2.attention.value_length_mla").unwrap(), 128);
    assert_eq!(md.u32("deepseek2.rope.dimension_count").unwrap(), 64);
    assert_eq!(md.u32("deepseek2.expert_count").unwrap(), 4);
    assert_eq!(md.u32("deepseek2.expert_used_count").unwrap(), 4);
    assert_eq!(md.u32("deepseek2.expert_shared_count").unwrap(), 2);
    assert_eq!(
        md.u32("deepseek2.expert_feed_forward_length").unwrap(),
        1408
    );
    assert_eq!(md.u32("deepseek2.expert_gating_func").unwrap(), 1);
    assert_eq!(md.f32("deepseek2.rope.scaling.factor").unwrap(), 40.0);
    assert_eq!(
        md.u32("deepseek2.rope.scaling.original_context_length")
            .unwrap(),
        4096
    );
    assert!(
        (md.f32("deepseek2.rope.scaling.yarn_log_multiplier")
            .unwrap()
            - 0.0707)
            .abs()
            < 1e-6
    );
    // Not 26/27 layers: q_lora_rank = 0 so that llama.cpp accepts the file; no q_a/q_b.
    assert_eq!(md.u32("deepseek2.attention.q_lora_rank").unwrap(), 0);
    assert_eq!(md.str_array("tokenizer.ggml.tokens").unwrap().len(), 1000);

    let t = |n: &str| f.tensor(n).unwrap();
    assert_eq!(t("blk.0.attn_q.weight").ne, &[2048, 16 * 192]);
    assert!(f.get_tensor("blk.0.attn_q_a.weight").is_none());
    assert_eq!(t("blk.0.attn_kv_a_mqa.weight").ne, &[2048, 576]);
    assert_eq!(t("blk.0.attn_k_b.weight").ne, &[128, 512, 16]);
    assert_eq!(t("blk.0.attn_k_b.weight").ty, GgmlType::Q5_0);
    assert_eq!(t("blk.0.attn_v_b.weight").ne, &[512, 128, 16]);
    assert_eq!(t("blk.0.attn_v_b.weight").ty, GgmlType::Q4_K);
    assert_eq!(t("blk.1.ffn_gate_exps.weight").ne, &[2048, 1408, 4]);
    assert_eq!(t("blk.1.ffn_gate_exps.weight").ty, GgmlType::Q4_K);
    assert_eq!(t("blk.1.ffn_down_exps.weight").ne, &[1408, 2048, 4]);
    // Layer 1 of 2 gets more bits (Q6_K), whose rows of 1408 fall back to Q8_0.
    assert_eq!(t("blk.1.ffn_down_exps.weight").ty, GgmlType::Q8_0);
    assert_eq!(t("blk.1.ffn_down_shexp.weight").ty, GgmlType::Q6_K);
    assert_eq!(t("blk.1.ffn_gate_inp.weight").ty, GgmlType::F32);
    assert_eq!(t("output.weight").ty, GgmlType::Q6_K);
    assert_eq!(
        t("blk.1.ffn_norm.weight").data,
        &1f32.to_le_bytes().repeat(2048)[..]
    );

    // Our engine loads it and produces finite, non-constant logits.
    let npy = scratch("logits.npy");
    let out = ferromoe(&[
        "logits",
        "-m",
        path.to_str().unwrap(),
        "-t",
        "2",
        "--tokens",
        "0,5,300,999",
        "--all",
        "--out",
        npy.to_str().unwrap(),
    ]);
    ok(&out, "logits");
    let (shape, logits) = read_npy_f32(&npy);
    assert_eq!(shape, vec![4, 1000]);
    assert!(logits.iter().all(|v| v.is_finite()));
    let last = &logits[3000..];
    let mean = last.iter().sum::<f32>() / 1000.0;
    let sd = (last.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1000.0).sqrt();
    assert!(sd > 1e-3, "logits are (nearly) constant: sd {sd}");

    // bench --json: llama-bench's fields, one object per test, positive rates.
    let out = bench(
        &path,
        &["-t", "2", "-p", "8", "-n", "4", "-r", "2", "--json"],
    );
    ok(&out, "bench");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = j.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["n_prompt"], 8);
    assert_eq!(arr[0]["n_gen"], 0);
    assert_eq!(arr[1]["n_prompt"], 0);
    assert_eq!(arr[1]["n_gen"], 4);
    for r in arr {
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
        assert!(r["stddev_ts"].as_f64().unwrap() >= 0.0);
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2);
        assert_eq!(r["n_threads"], 2);
    }
    // --experts-per-token reaches the model.
    let out = bench(
        &path,
        &[
            "-t",
            "1",
            "-p",
            "0",
            "-n",
            "2",
            "-r",
            "1",
            "--json",
            "--experts-per-token",
            "2",
        ],
    );
    ok(&out, "bench --experts-per-token");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["n_experts_used"], 2);
    // -d: the tests run after that many cached tokens (named like llama-bench's).
    let out = bench(
        &path,
        &["-t", "2", "-p", "4", "-n", "2", "-d", "24", "-r", "1"],
    );
    ok(&out, "bench -d");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("pp4 @ d24") && table.contains("tg2 @ d24"),
        "{table}"
    );
    // --depth-fill copy: 512 positions processed, the rest copies (MLA latent cache).
    let out = bench(
        &path,
        &[
            "-t",
            "2",
            "-p",
            "4",
            "-n",
            "2",
            "-d",
            "600",
            "-r",
            "1",
            "--depth-fill",
            "copy",
        ],
    );
    ok(&out, "bench -d --depth-fill copy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cache filled: 600 tokens (512 processed, the rest copies of them)"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tg2 @ d600"));
    // Sizes past the model's context are refused with a message, not an allocation abort.
    let huge = bench(&path, &["-p", "100000000000", "-n", "0"]);
    assert_eq!(huge.status.code(), Some(1), "bench -p huge");
    let err = String::from_utf8_lossy(&huge.stderr);
    assert!(err.contains("exceed the model's context length"), "{err}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn synth_rejects_bad_arguments() {
    let out = ferromoe(&["synth", "--shape", "v4", "--out", "/nonexistent/x.gguf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("expected v2-lite, v3, glm-4.5-air, gpt-oss-120b or gpt-oss-20b"));
    let out = ferromoe(&[
        "synth",
        "--arch",
        "deepseek2",
        "--shape",
        "glm-4.5-air",
        "--out",
        "/nonexistent/x.gguf",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--arch deepseek2: shape glm-4.5-air is a glm4moe model"));
    let out = ferromoe(&[
        "synth",
        "--shape",
        "v2-lite",
        "--type",
        "Q2_K",
        "--out",
        "/nonexistent/x.gguf",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Q2_K"));
}
