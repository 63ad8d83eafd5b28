//! read → write → read gives identical metadata, tensor table and bytes.

use std::path::PathBuf;

use gguf::{Array, GgmlType, Gguf, GgufWriter, Metadata, TensorSpec, Value};
use proptest::prelude::*;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn rewrite(file: &Gguf) -> Vec<u8> {
    let specs = file
        .tensors()
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            ty: t.ty,
            ne: t.ne.clone(),
        })
        .collect();
    let mut w = GgufWriter::new(Vec::new(), file.metadata(), specs).unwrap();
    for t in file.tensors() {
        w.write_tensor(&t.name, file.view(t).data).unwrap();
    }
    w.finish().unwrap()
}

fn assert_same(a: &Gguf, b: &Gguf) {
    let am: Vec<_> = a.metadata().iter().collect();
    let bm: Vec<_> = b.metadata().iter().collect();
    assert_eq!(am.len(), bm.len());
    for ((ka, va), (kb, vb)) in am.iter().zip(&bm) {
        assert_eq!(ka, kb);
        // Compare through the debug form so NaN floats compare equal bit-wise-ish.
        assert_eq!(format!("{va:?}"), format!("{vb:?}"), "{ka}");
    }
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (ta, tb) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(ta, tb);
        assert_eq!(a.view(ta).data, b.view(tb).data, "{}", ta.name);
    }
}

#[test]
fn shipped_files_round_trip_byte_identical() {
    for rel in [
        "quant/blocks.gguf",
        "tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf",
        "tiny/qwen3moe-tiny/qwen3moe-tiny-Q8_0.gguf",
        "tiny/mixtral-tiny/mixtral-tiny-Q4_0.gguf",
    ] {
        let path = data_dir().join(rel);
        let original = std::fs::read(&path).unwrap();
        let a = Gguf::open(&path).unwrap();
        let bytes = rewrite(&a);
        let b = Gguf::from_bytes(bytes.clone(), "rewritten").unwrap();
        assert_same(&a, &b);
        // gguf-py writes the same canonical layout, so the bytes agree exactly.
        assert_eq!(bytes.len(), original.len(), "{rel}: size");
        assert!(bytes == original, "{rel}: bytes differ");
    }
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>().prop_map(Value::F64),
    ];
    let arrays = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Array::U8),
        prop::collection::vec(any::<i32>(), 0..8).prop_map(Array::I32),
        prop::collection::vec(any::<f32>(), 0..8).prop_map(Array::F32),
        prop::collection::vec(".{0,6}", 0..8).prop_map(Array::String),
        prop::collection::vec(any::<bool>(), 0..8).prop_map(Array::Bool),
        prop::collection::vec(
            prop::collection::vec(any::<u16>(), 0..4).prop_map(Array::U16),
            0..4
        )
        .prop_map(Array::Array),
    ];
    prop_oneof![leaf, arrays.prop_map(Value::Array)]
}

proptest! {
    #[test]
    fn random_metadata_and_tensors_round_trip(
        values in prop::collection::vec(value_strategy(), 0..12),
        rows in 1u64..4,
        align_pow in 0u32..7,
    ) {
        let mut md = Metadata::new("generated");
        md.set("general.architecture", Value::String("test".into()));
        md.set("general.alignment", Value::U32(1 << align_pow));
        for (i, v) in values.into_iter().enumerate() {
            md.set(format!("test.key{i}"), v);
        }
        let specs = vec![
            TensorSpec { name: "a".into(), ty: GgmlType::F32, ne: vec![3, rows] },
            TensorSpec { name: "b".into(), ty: GgmlType::Q4_K, ne: vec![256, rows] },
            TensorSpec { name: "c".into(), ty: GgmlType::Q8_0, ne: vec![32, 2, rows] },
        ];
        let mut w = GgufWriter::new(Vec::new(), &md, specs.clone()).unwrap();
        for s in &specs {
            let n = s.ty.row_bytes(s.ne[0]).unwrap() * s.ne[1..].iter().product::<u64>();
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + s.name.len() as u64) as u8).collect();
            w.write_tensor(&s.name, &data).unwrap();
        }
        let bytes = w.finish().unwrap();
        let a = Gguf::from_bytes(bytes, "a").unwrap();
        prop_assert_eq!(a.alignment(), 1 << align_pow);
        prop_assert_eq!(a.data_offset() % a.alignment(), 0);
        let b = Gguf::from_bytes(rewrite(&a), "b").unwrap();
        assert_same(&a, &b);
        prop_assert_eq!(a.metadata().len(), b.metadata().len());
    }
}

#[test]
fn writer_rejects_misuse() {
    let md = Metadata::new("m");
    let spec = TensorSpec {
        name: "t".into(),
        ty: GgmlType::Q4_K,
        ne: vec![100],
    };
    let e = GgufWriter::new(Vec::new(), &md, vec![spec])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("not a multiple of the Q4_K block size 256"),
        "{e}"
    );

    let spec = TensorSpec {
        name: "t".into(),
        ty: GgmlType::F32,
        ne: vec![4],
    };
    let mut w = GgufWriter::new(Vec::new(), &md, vec![spec.clone()]).unwrap();
    assert!(w
        .write_tensor("u", &[0; 16])
        .unwrap_err()
        .to_string()
        .contains("expected data for tensor 't'"));
    assert!(w
        .write_tensor("t", &[0; 15])
        .unwrap_err()
        .to_string()
        .contains("needs 16 bytes, got 15"));
    let w = GgufWriter::new(Vec::new(), &md, vec![spec]).unwrap();
    assert!(w
        .finish()
        .unwrap_err()
        .to_string()
        .contains("tensor 't' was never written"));
}
