//! The `inspect` and `tensor` subcommands, run as a user would run them.

use std::path::{Path, PathBuf};

use std::process::Command;
use testutil::read_npy_f32;

fn data_dir() -> PathBuf {
    testutil::data_dir()
}

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn all_ggufs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_ggufs(&p, out);
        } else if p.extension().is_some_and(|x| x == "gguf") {
            out.push(p);
        }
    }
}

#[test]
fn inspect_json_on_every_test_gguf_matches_manifest() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("tiny/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut files = Vec::new();
    all_ggufs(&data_dir(), &mut files);
    assert!(files.len() >= 13, "found {files:?}");
    let mut tiny_checked = 0;
    for f in &files {
        let out = ferromoe(&["inspect", "--json", "--tensors", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let tensors = j["tensors"].as_array().unwrap();
        assert_eq!(j["tensor_count"].as_u64().unwrap() as usize, tensors.len());
        let params: u64 = tensors
            .iter()
            .map(|t| {
                t["ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product::<u64>()
            })
            .sum();
        assert_eq!(j["parameter_count"].as_u64().unwrap(), params);
        // Every tiny model's tensor count and types agree with the manifest.
        for (_, m) in manifest["models"].as_object().unwrap() {
            for (_, g) in m["gguf"].as_object().unwrap() {
                if f.ends_with(g["file"].as_str().unwrap()) {
                    assert_eq!(
                        tensors.len(),
                        g["tensors"].as_object().unwrap().len(),
                        "{}",
                        f.display()
                    );
                    for (ty, n) in g["tensor_type_counts"].as_object().unwrap() {
                        assert_eq!(j["tensor_types"][ty]["tensors"], *n, "{} {ty}", f.display());
                    }
                    tiny_checked += 1;
                }
            }
        }
        // Long arrays are summarised, never dumped.
        if let Some(tokens) = j["metadata"].get("tokenizer.ggml.tokens") {
            assert_eq!(tokens["array_of"], "string");
            assert!(tokens["length"].as_u64().unwrap() >= 1000);
        }
    }
    assert_eq!(tiny_checked, 12);
}

#[test]
fn inspect_human_summary() {
    let f = data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf");
    let out = ferromoe(&["inspect", f.to_str().unwrap()]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "architecture:  deepseek2",
        "file type:     Q4_K_M (15)",
        "expert_count                             8",
        "tokenizer:     gpt2 (pre gpt-2), 1000 tokens, bos 0 \"<|bos|>\", eos 1 \"<|eos|>\"",
        "tensors:       34",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}

#[test]
fn tensor_command_reproduces_reference_dequantization() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("quant/manifest.json")).unwrap(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ferromoe-cli-tensor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (ty, m) in manifest.as_object().unwrap() {
        let out_path = dir.join(format!("{ty}.npy"));
        let blocks = data_dir().join("quant/blocks.gguf");
        let out = ferromoe(&[
            "tensor",
            blocks.to_str().unwrap(),
            m["tensor"].as_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{ty}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (shape, ours) = read_npy_f32(&out_path);
        let (ref_shape, reference) =
            read_npy_f32(&data_dir().join("quant").join(m["npy"].as_str().unwrap()));
        assert_eq!(shape, ref_shape, "{ty}");
        let ne: Vec<usize> = m["ne"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, ne, "{ty}: numpy shape is the reversed ne");
        assert!(
            ours.iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty}: values differ"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_gives_clear_error_and_nonzero_exit() {
    let dir = std::env::temp_dir().join(format!("ferromoe-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"GGML\x03\x00\x00\x00").unwrap();
    let out = ferromoe(&["inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("wrong magic"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = ferromoe(&["inspect", "/nonexistent/x.gguf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.gguf"));

    let blocks = data_dir().join("quant/blocks.gguf");
    let npy = dir.join("x.npy");
    let out = ferromoe(&[
        "tensor",
        blocks.to_str().unwrap(),
        "no.such.tensor",
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tensor 'no.such.tensor' not found"));

    // Unknown subcommand / missing arguments: clap's usage error, exit code 2.
    assert_eq!(ferromoe(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(ferromoe(&["tensor"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
