//! `ferromoe logits`, run as a user would.

use std::process::Command;

use testutil::{data_dir, read_npy_f32};

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

#[test]
fn logits_all_exact_matches_reference_and_last_matches_all() {
    let dir = std::env::temp_dir().join(format!("ferromoe-cli-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
    let all = dir.join("all.npy");
    let tokens = "51,353,612,332,962,69,92";
    let out = ferromoe(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "--all",
        "--exact",
        "-o",
        all.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("qwen2moe · ") && stderr.contains("threads") && stderr.contains("exact"),
        "{stderr}"
    );
    let (shape, ours) = read_npy_f32(&all);
    assert_eq!(shape, vec![7, 1000]);
    let (_, reference) = read_npy_f32(
        &data_dir().join("tiny/qwen2moe-tiny/ref/lcpp_Q8_0_dequant_logits_all_p1.npy"),
    );
    let max = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-3, "max |Δ| {max}");

    let last = dir.join("last.npy");
    let out = ferromoe(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "-t",
        "1",
        "-o",
        last.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let (shape, last_logits) = read_npy_f32(&last);
    assert_eq!(shape, vec![1000]);
    let (_, reference) =
        read_npy_f32(&data_dir().join("tiny/qwen2moe-tiny/ref/lcpp_Q8_0_logits_last_p1.npy"));
    assert_eq!(
        kernels::vector::argmax(&last_logits),
        kernels::vector::argmax(&reference)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn logits_rejects_bad_token_ids_and_unsupported_files() {
    let model = data_dir().join("tiny/mixtral-tiny/mixtral-tiny-Q4_0.gguf");
    let out = ferromoe(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "--tokens",
        "5,1000",
        "-o",
        "/tmp/never.npy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("token id 1000 is outside the vocabulary (size 1000)"));
    // A file without model tensors (the block-type sample) is not a model.
    let blocks = data_dir().join("quant/blocks.gguf");
    let out = ferromoe(&[
        "logits",
        "-m",
        blocks.to_str().unwrap(),
        "--tokens",
        "1",
        "-o",
        "/tmp/never.npy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tensor 'token_embd.weight' not found"));
}

/// `--cache-type-k/-v` (and llama.cpp's `-ctk`/`-ctv`): the load line prints the type and
/// the bytes per position; the logits stay close to the f32 cache's; a bad name is a clear
/// error.
#[test]
fn cache_types_print_their_size_and_bad_names_are_refused() {
    let dir = std::env::temp_dir().join(format!("ferromoe-cli-ctk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = data_dir().join("tiny/deepseek-v2-lite-tiny/deepseek-v2-lite-tiny-Q4_K_M.gguf");
    let model = model.to_str().unwrap();
    let run = |extra: &[&str], name: &str| {
        let path = dir.join(name);
        let mut args = vec![
            "logits",
            "-m",
            model,
            "--tokens",
            "51,353,612,332,962,69,92",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", path.to_str().unwrap()]);
        let out = ferromoe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        (read_npy_f32(&path).1, stderr)
    };
    let (f32_logits, stderr) = run(&[], "f32.npy");
    // The tiny MLA model: 2 layers × (256 + 32) latent values.
    assert!(
        stderr.contains("latent f32: 2.2 KiB per position"),
        "{stderr}"
    );
    let (q8_logits, stderr) = run(&["-ctk", "q8_0"], "q8.npy");
    // 2 layers × 9 blocks of 34 bytes.
    assert!(
        stderr.contains("latent q8_0: 612 B per position"),
        "{stderr}"
    );
    let (f16_logits, stderr) = run(&["--cache-type-k=f16", "-ctv=f16"], "f16.npy");
    assert!(
        stderr.contains("latent f16: 1.1 KiB per position"),
        "{stderr}"
    );
    for (name, got) in [("q8_0", &q8_logits), ("f16", &f16_logits)] {
        let max = f32_logits
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // A sanity bound (the tiny MoE model flips near-tied experts; kv_types_logits
        // holds each type to its KL).
        assert!(max > 0.0 && max < 0.5, "{name}: max |Δlogit| {max}");
    }
    let out = ferromoe(&[
        "logits", "-m", model, "--tokens", "1", "-ctk", "q4_0", "-o", "x.npy",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("'q4_0' is not a KV-cache type")
            && stderr.contains("f32, f16, bf16, q8_0, q8_KV"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
