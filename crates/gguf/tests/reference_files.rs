//! Every GGUF shipped under tests/data parses, and its tensor table matches the manifest.

use std::path::PathBuf;

use gguf::{GgmlType, Gguf};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

#[test]
fn tiny_models_match_manifest() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("tiny/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for (model, m) in manifest["models"].as_object().unwrap() {
        for (variant, g) in m["gguf"].as_object().unwrap() {
            let path = data_dir().join("tiny").join(g["file"].as_str().unwrap());
            let file = Gguf::open(&path).unwrap_or_else(|e| panic!("{model} {variant}: {e}"));
            assert_eq!(file.file_size(), g["size"].as_u64().unwrap());
            let expected = g["tensors"].as_object().unwrap();
            assert_eq!(
                file.tensors().len(),
                expected.len(),
                "{model} {variant}: tensor count"
            );
            for (name, t) in expected {
                let view = file.tensor(name).unwrap();
                assert_eq!(view.ty.name(), t["type"].as_str().unwrap(), "{name}");
                let ne: Vec<u64> = t["shape_ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                assert_eq!(view.ne, &ne[..], "{name}");
                assert_eq!(
                    view.data.len() as u64,
                    view.ty.row_bytes(ne[0]).unwrap() * ne[1..].iter().product::<u64>()
                );
            }
            assert_eq!(
                file.architecture().unwrap(),
                m["llama_cpp_arch"].as_str().unwrap()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "all 12 shipped tiny GGUFs checked");
}

#[test]
fn block_types_file_has_every_supported_type() {
    let file = Gguf::open(data_dir().join("quant/blocks.gguf")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir().join("quant/manifest.json")).unwrap(),
    )
    .unwrap();
    for (ty, m) in manifest.as_object().unwrap() {
        let t = file.tensor(m["tensor"].as_str().unwrap()).unwrap();
        assert_eq!(t.ty, GgmlType::from_name(ty).unwrap());
        assert_eq!(t.data.len() as u64, m["bytes"].as_u64().unwrap());
    }
}

#[test]
fn typed_accessors_name_key_and_types() {
    let file =
        Gguf::open(data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf")).unwrap();
    let md = file.metadata();
    assert_eq!(md.u32("deepseek2.expert_count").unwrap(), 8);
    let e = md.u32("deepseek2.no_such_key").unwrap_err().to_string();
    assert!(e.ends_with("deepseek2.no_such_key: missing"), "{e}");
    assert!(e.contains("deepseek-v3-tiny-Q4_K_M.gguf"), "{e}");
    let e = md.u32("general.architecture").unwrap_err().to_string();
    assert!(
        e.ends_with("general.architecture: is a string, expected u32"),
        "{e}"
    );
    let e = md
        .str_array("tokenizer.ggml.token_type")
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("tokenizer.ggml.token_type: is an array of i32, expected an array of string"),
        "{e}"
    );
    assert_eq!(md.opt_u32("deepseek2.no_such_key").unwrap(), None);
    assert!(md.opt_u32("general.architecture").is_err());
    let tokens = md.str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 1000);
    assert_eq!(tokens[0], "<|bos|>");
    let e = file.tensor("blk.9.nothing").unwrap_err().to_string();
    assert!(e.contains("tensor 'blk.9.nothing' not found"), "{e}");
}
