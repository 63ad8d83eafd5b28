//! `ferromoe tensor` on IQ1_S, IQ1_M, TQ1_0, TQ2_0 and MXFP4 tensors (random valid blocks and
//! real llama-quantize rows, tests/data/quant/lowbit) equals gguf-py's decoding bit for bit.

use std::process::Command;
use testutil::{data_dir, read_npy_f32};

#[test]
fn tensor_command_matches_gguf_py_on_lowbit_types() {
    let dir = data_dir().join("quant/lowbit");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let tmp = std::env::temp_dir().join(format!("ferromoe-cli-lowbit-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut types = Vec::new();
    for (name, m) in manifest.as_object().unwrap() {
        let out_path = tmp.join(format!("{name}.npy"));
        let out = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
            .args([
                "tensor",
                dir.join("blocks.gguf").to_str().unwrap(),
                name,
                "--out",
            ])
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (shape, ours) = read_npy_f32(&out_path);
        let (ref_shape, want) = read_npy_f32(&dir.join(m["npy"].as_str().unwrap()));
        assert_eq!(shape, ref_shape, "{name}");
        assert_eq!(ours.len(), want.len());
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}: value {i}: {a:e} vs {b:e}"
            );
        }
        types.push(m["type"].as_str().unwrap().to_string());
    }
    types.sort();
    types.dedup();
    assert_eq!(types, ["IQ1_M", "IQ1_S", "MXFP4", "TQ1_0", "TQ2_0"]);
    std::fs::remove_dir_all(&tmp).ok();
}
