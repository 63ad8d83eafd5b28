//! Every kind of malformed file gives a precise error — never a panic, hang or huge allocation.

// `is_multiple_of` is newer than our MSRV (1.85).
#![allow(clippy::manual_is_multiple_of)]

use gguf::{GgmlType, Gguf, GgufWriter, Metadata, TensorSpec, Value};

/// Builds raw GGUF bytes by hand so that any field can be corrupted.
#[derive(Default)]
struct Raw {
    buf: Vec<u8>,
}

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.bytes(&x.to_le_bytes())
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.bytes(&x.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
    fn parse(&self) -> Result<Gguf, String> {
        Gguf::from_bytes(self.buf.clone(), "bad.gguf").map_err(|e| e.to_string())
    }
}

fn expect_err(r: &Raw, needle: &str) {
    match r.parse() {
        Ok(_) => panic!("parsed, expected an error containing {needle:?}"),
        Err(e) => {
            assert!(e.starts_with("bad.gguf: not a valid GGUF file: "), "{e}");
            assert!(
                e.contains(needle),
                "error {e:?} does not contain {needle:?}"
            );
        }
    }
}

/// A small valid file with metadata of several kinds and two tensors.
fn valid_file() -> Vec<u8> {
    let mut md = Metadata::new("x");
    md.set("general.architecture", Value::String("llama".into()));
    md.set("llama.block_count", Value::U32(2));
    md.set(
        "tokenizer.ggml.tokens",
        Value::Array(gguf::Array::String(vec!["a".into(), "bc".into()])),
    );
    md.set(
        "nested",
        Value::Array(gguf::Array::Array(vec![gguf::Array::I32(vec![1, 2])])),
    );
    let specs = vec![
        TensorSpec {
            name: "w".into(),
            ty: GgmlType::Q8_0,
            ne: vec![64, 2],
        },
        TensorSpec {
            name: "n".into(),
            ty: GgmlType::F32,
            ne: vec![8],
        },
    ];
    let mut w = GgufWriter::new(Vec::new(), &md, specs).unwrap();
    w.write_tensor("w", &[1u8; 136]).unwrap();
    w.write_tensor("n", &[2u8; 32]).unwrap();
    w.finish().unwrap()
}

#[test]
fn valid_file_parses() {
    let f = Gguf::from_bytes(valid_file(), "ok").unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("n").unwrap().data, &[2u8; 32]);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = valid_file();
    for len in 0..full.len() {
        // The final padding after the last tensor is optional; anything shorter than
        // the last tensor's end must fail.
        let r = Gguf::from_bytes(full[..len].to_vec(), "cut");
        let last_end = {
            let f = Gguf::from_bytes(full.clone(), "ok").unwrap();
            let t = f
                .tensors()
                .iter()
                .map(|t| f.data_offset() + t.offset + t.size)
                .max()
                .unwrap();
            t as usize
        };
        if len < last_end {
            let e = r.expect_err("truncated file parsed").to_string();
            assert!(e.contains("not a valid GGUF file"), "len {len}: {e}");
        }
    }
}

#[test]
fn empty_file() {
    expect_err(&Raw::default(), "the file is empty");
    let dir = std::env::temp_dir().join(format!("ferromoe-empty-{}.gguf", std::process::id()));
    std::fs::write(&dir, b"").unwrap();
    let e = Gguf::open(&dir).unwrap_err().to_string();
    std::fs::remove_file(&dir).ok();
    assert!(e.contains("the file is empty"), "{e}");
}

#[test]
fn missing_file_names_path() {
    let e = Gguf::open("/nonexistent/model.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/model.gguf: "), "{e}");
}

#[test]
fn truncated_header() {
    let mut r = Raw::default();
    r.bytes(b"GGU");
    expect_err(&r, "truncated magic");
    let mut r = Raw::default();
    r.bytes(b"GGUF").u32(3).u64(0);
    expect_err(&r, "truncated metadata count");
}

#[test]
fn wrong_magic() {
    let mut r = Raw::header(3, 0, 0);
    r.buf[..4].copy_from_slice(b"GGML");
    expect_err(&r, "wrong magic \"GGML\"");
}

#[test]
fn versions() {
    expect_err(&Raw::header(99, 0, 0), "unknown GGUF version 99");
    expect_err(&Raw::header(1, 0, 0), "version 1 is obsolete");
    expect_err(&Raw::header(3u32.swap_bytes(), 0, 0), "big-endian");
    assert!(Raw::header(2, 0, 0).parse().is_ok());
    assert!(Raw::header(3, 0, 0).parse().is_ok());
}

#[test]
fn absurd_counts_and_lengths() {
    expect_err(
        &Raw::header(3, 0, 1 << 60),
        "metadata key/value count 1152921504606846976",
    );
    expect_err(
        &Raw::header(3, 1 << 60, 0),
        "tensor count 1152921504606846976",
    );
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 60).bytes(b"abc").zeros(64);
    expect_err(&r, "claims length 1152921504606846976");
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(u64::MAX).zeros(64);
    expect_err(&r, "k at byte");
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(4).u64(1 << 60).zeros(64);
    expect_err(&r, "arr: array count 1152921504606846976");
    let mut r = Raw::header(3, 0, 1);
    r.str("strs").u32(9).u32(8).u64(1 << 40).zeros(64);
    expect_err(&r, "strs: array count");
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    expect_err(&r, "unknown value type 13 for k");
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(77).u64(0);
    expect_err(&r, "unknown value type 77 for k");
}

#[test]
fn invalid_bool_and_empty_key_and_duplicates() {
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7).bytes(&[2]);
    expect_err(&r, "b: invalid bool byte 2");
    let mut r = Raw::header(3, 0, 1);
    r.str("").u32(4).u32(1);
    expect_err(&r, "metadata key #0 is empty");
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a", 1).kv_u32("a", 2);
    expect_err(&r, "duplicate metadata key 'a'");
}

#[test]
fn deeply_nested_arrays() {
    let mut r = Raw::header(3, 0, 1);
    r.str("deep");
    r.u32(9);
    for _ in 0..20 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    expect_err(&r, "deep: arrays nested more than 8 deep");
}

#[test]
fn bad_alignment() {
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 24);
    expect_err(
        &r,
        "general.alignment must be a non-zero power of two u32, found 24",
    );
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 0);
    expect_err(&r, "found 0");
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    expect_err(&r, "found a string");
}

#[test]
fn unknown_tensor_type() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[32], 4, 0).pad_to(32).zeros(32);
    expect_err(&r, "tensor 't' has unknown tensor type id 4");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[32], 1000, 0).pad_to(32).zeros(32);
    expect_err(&r, "unknown tensor type id 1000");
}

#[test]
fn bad_dimensions() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad_to(32).zeros(32);
    expect_err(&r, "tensor 't' has 5 dimensions");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[], 0, 0).pad_to(32).zeros(32);
    expect_err(&r, "tensor 't' has 0 dimensions");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[100], GgmlType::Q4_K.id(), 0)
        .pad_to(32)
        .zeros(1024);
    expect_err(
        &r,
        "row length 100 is not a multiple of the Q4_K block size 256",
    );
}

#[test]
fn shape_overflow() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .pad_to(32)
        .zeros(32);
    expect_err(
        &r,
        "element count of shape [4294967296, 4294967296, 4294967296] overflows",
    );
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1 << 31, 1 << 31], 0, 0)
        .pad_to(32)
        .zeros(32);
    expect_err(&r, "size of shape [2147483648, 2147483648] overflows");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[u64::MAX], 0, 0).pad_to(32).zeros(32);
    expect_err(&r, "negative or absurd dimension");
    // Found by the fuzzer: a zero-length row makes the byte size 0, but the row count
    // (product of the other dimensions) still overflows.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[0, 1 << 40, 1 << 40], 0, 0)
        .pad_to(32)
        .zeros(32);
    expect_err(
        &r,
        "element count of shape [0, 1099511627776, 1099511627776] overflows",
    );
}

#[test]
fn tensor_data_past_end() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[16], 0, 0).pad_to(32).zeros(63);
    expect_err(
        &r,
        "tensor 't' data (64 bytes at offset 0) is not within the file",
    );
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[16], 0, u64::MAX - 31).pad_to(32).zeros(64);
    expect_err(&r, "is not within the file");
    // A tensor table but the data section starts past the end of the file.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], 0, 0);
    expect_err(&r, "past the end of the file");
}

#[test]
fn overlapping_and_duplicate_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .pad_to(32)
        .zeros(128);
    expect_err(&r, "tensors 'a' and 'b' overlap");
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .pad_to(32)
        .zeros(128);
    expect_err(&r, "duplicate tensor name 'a'");
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[4], 0, 8).pad_to(32).zeros(64);
    expect_err(&r, "offset 8 is not a multiple of the alignment 32");
}

#[test]
fn random_byte_flips_never_panic() {
    // A cheap in-suite stand-in for the fuzzer: flip bytes of a valid file at every
    // position and make sure parsing either succeeds or errors.
    let full = valid_file();
    for pos in 0..full.len().min(600) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = full.clone();
            b[pos] ^= flip;
            if let Ok(f) = Gguf::from_bytes(b, "flip") {
                for t in f.tensors() {
                    let _ = f.view(t).data.len();
                }
            }
        }
    }
}
