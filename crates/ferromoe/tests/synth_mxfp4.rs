//! `ferromoe synth --type MXFP4` (llama-quantize's MXFP4_MOE mix: MXFP4 experts, Q8_0
//! elsewhere) writes a file the engine loads and runs: the MXFP4 quantizer, dequantizer and
//! dot products through the real matmul paths.

use gguf::{GgmlType, Gguf};
use std::process::Command;

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

#[test]
fn synth_mxfp4_writes_mxfp4_experts_that_run() {
    let dir = std::env::temp_dir().join(format!("ferromoe-synth-mxfp4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mxfp4.gguf");
    let p = path.to_str().unwrap();
    let out = ferromoe(&[
        "synth",
        "--arch",
        "deepseek2",
        "--shape",
        "v2-lite",
        "--layers",
        "2",
        "--dense-layers",
        "1",
        "--experts",
        "4",
        "--vocab",
        "1000",
        "--type",
        "MXFP4",
        "--seed",
        "5",
        "--out",
        p,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Gguf::open(&path).unwrap();
    assert_eq!(f.metadata().u32("general.file_type").unwrap(), 38);
    let ty = |n: &str| f.tensor(n).unwrap().ty;
    assert_eq!(ty("blk.1.ffn_up_exps.weight"), GgmlType::MXFP4);
    assert_eq!(ty("blk.1.ffn_down_exps.weight"), GgmlType::MXFP4);
    assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::Q8_0);
    assert_eq!(ty("output.weight"), GgmlType::Q8_0);
    // The engine loads it and produces finite, non-constant logits.
    let npy = dir.join("logits.npy");
    let out = ferromoe(&[
        "logits",
        "-m",
        p,
        "-t",
        "2",
        "--tokens",
        "0,5,300,999",
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, logits) = testutil::read_npy_f32(&npy);
    assert!(logits.iter().all(|v| v.is_finite()));
    let mean = logits.iter().sum::<f32>() / logits.len() as f32;
    let var = logits.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / logits.len() as f32;
    assert!(var.sqrt() > 1e-3, "constant logits");
    std::fs::remove_dir_all(&dir).ok();
}

/// `synth --shape gpt-oss-120b` (two layers at the real widths, four experts) writes the
/// real files' mix, and the engine runs it in both modes with logits that agree.
#[test]
fn synth_gpt_oss_120b_shape_runs() {
    let dir = std::env::temp_dir().join(format!("ferromoe-synth-gpt-oss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpt-oss.gguf");
    let p = path.to_str().unwrap();
    let out = ferromoe(&[
        "synth",
        "--shape",
        "gpt-oss-120b",
        "--layers",
        "2",
        "--experts",
        "4",
        "--vocab",
        "1000",
        "--type",
        "MXFP4",
        "--out",
        p,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Gguf::open(&path).unwrap();
    assert_eq!(f.architecture().unwrap(), "gpt-oss");
    assert_eq!(
        f.tensor("blk.1.ffn_up_exps.weight").unwrap().ty,
        GgmlType::MXFP4
    );
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty, GgmlType::Q8_0);
    let logits = |exact: bool| {
        let npy = dir.join(format!("logits-{exact}.npy"));
        let mut args = vec![
            "logits",
            "-m",
            p,
            "-t",
            "2",
            "--tokens",
            "0,5,300,999",
            "--all",
        ];
        if exact {
            args.push("--exact");
        }
        args.extend(["--out", npy.to_str().unwrap()]);
        let out = ferromoe(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        testutil::read_npy_f32(&npy).1
    };
    let (quantized, exact) = (logits(false), logits(true));
    assert!(quantized.iter().all(|v| v.is_finite()));
    let spread = exact.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let diff = quantized
        .iter()
        .zip(&exact)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(spread > 1e-3, "constant logits");
    assert!(
        diff < 0.05 * spread.max(1.0),
        "quantized vs exact: {diff} (spread {spread})"
    );
    std::fs::remove_dir_all(&dir).ok();
}
