//! `ferromoe tensor` on the low-bit types equals gguf-py bit for bit: per type, the real
//! llama-quantize rows and the random blocks of tests/data/lowbit/blocks-<TYPE>.gguf against
//! gguf-py's `<TYPE>.{real,random}.npy` (made by tests/data/lowbit/make_blocks.py). To cover a
//! new type, add its name to `TYPES`.

use std::process::Command;
use testutil::read_npy_f32;

const TYPES: [&str; 5] = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"];

#[test]
fn tensor_command_matches_gguf_py_on_low_bit_types() {
    let dir = testutil::data_dir().join("lowbit");
    let tmp = std::env::temp_dir().join(format!("ferromoe-cli-lowbit-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for ty in TYPES {
        for tag in ["real", "random"] {
            let out_path = tmp.join(format!("{ty}.{tag}.npy"));
            let blocks = dir.join(format!("blocks-{ty}.gguf"));
            let out = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
                .args([
                    "tensor",
                    blocks.to_str().unwrap(),
                    tag,
                    "--out",
                    out_path.to_str().unwrap(),
                ])
                .output()
                .expect("run ferromoe");
            assert!(
                out.status.success(),
                "{ty} {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (shape, ours) = read_npy_f32(&out_path);
            let (ref_shape, reference) = read_npy_f32(&dir.join(format!("{ty}.{tag}.npy")));
            assert_eq!(shape, ref_shape, "{ty} {tag}");
            assert_eq!(ours.len(), reference.len());
            for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{ty} {tag}: value {i}: {a} vs {b}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}
