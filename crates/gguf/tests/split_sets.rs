//! Split sets: the set llama.cpp's `llama-gguf-split` made (tests/data/split/make.sh) reads
//! as the unsplit file, from any part; sets we write read back; a missing, foreign or
//! misnamed part is refused with a message naming it.

use std::path::{Path, PathBuf};

use gguf::{Gguf, SplitWriter, TensorSpec};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

const SET: &str = "split/deepseek-v3-tiny-Q4_K_M";
const WHOLE: &str = "tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf";

fn part(i: usize) -> PathBuf {
    data_dir().join(gguf::split_path(SET, i, 3))
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gguf-split-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies the committed set into `dir`, returning the parts' new paths.
fn copy_set(dir: &Path) -> Vec<PathBuf> {
    (0..3)
        .map(|i| {
            let to = dir.join(part(i).file_name().unwrap());
            std::fs::copy(part(i), &to).unwrap();
            to
        })
        .collect()
}

/// Every tensor of `a` is in `b` with the same type, shape and bytes, and vice versa;
/// the metadata agrees except for the split keys.
fn assert_same_model(a: &Gguf, b: &Gguf) {
    assert_eq!(a.tensors().len(), b.tensors().len());
    for t in a.tensors() {
        let x = a.view(t);
        let y = b.tensor(&t.name).unwrap();
        assert_eq!((x.ty, x.ne), (y.ty, y.ne), "{}", t.name);
        assert!(x.data == y.data, "{}: bytes differ", t.name);
    }
    let keys = |g: &Gguf| -> Vec<(String, String)> {
        g.metadata()
            .iter()
            .filter(|(k, _)| !k.starts_with("split."))
            .map(|(k, v)| (k.to_string(), format!("{v:?}")))
            .collect()
    };
    assert_eq!(keys(a), keys(b));
}

#[test]
fn llama_cpp_set_reads_as_the_whole_file_from_any_part() {
    let whole = Gguf::open(data_dir().join(WHOLE)).unwrap();
    for i in 0..3 {
        let set = Gguf::open(part(i)).unwrap_or_else(|e| panic!("part {i}: {e}"));
        assert_eq!(set.parts().len(), 3);
        assert_eq!(set.name(), part(0).display().to_string());
        let sizes: u64 = set.parts().iter().map(|p| p.file_size()).sum();
        assert_eq!(set.file_size(), sizes);
        assert_eq!(
            set.parts().iter().map(|p| p.tensor_count()).sum::<usize>(),
            whole.tensors().len()
        );
        assert!(set.parts().iter().all(|p| p.tensor_count() > 0));
        assert_same_model(&whole, &set);
    }
    // Tensors really come from the later parts.
    let set = Gguf::open(part(0)).unwrap();
    assert!(set.tensors().iter().any(|t| t.part == 2));
}

#[test]
fn a_missing_part_is_named() {
    let dir = scratch("missing");
    let parts = copy_set(&dir);
    std::fs::remove_file(&parts[1]).unwrap();
    for from in [&parts[0], &parts[2]] {
        let e = Gguf::open(from).unwrap_err().to_string();
        assert!(
            e.contains(&parts[1].display().to_string())
                && e.contains("part 2 of the 3-part split set is missing"),
            "{e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `whole`'s tensors as a split set of parts of at most `max` bytes at `out`.
fn write_set(whole: &Gguf, out: &Path, max: u64) -> Vec<PathBuf> {
    let specs: Vec<TensorSpec> = whole
        .tensors()
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            ty: t.ty,
            ne: t.ne.clone(),
        })
        .collect();
    let mut w = SplitWriter::create(out, whole.metadata(), specs, max).unwrap();
    for t in whole.tensors() {
        w.write_tensor(&t.name, whole.view(t).data).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn a_part_of_another_set_is_named() {
    let dir = scratch("foreign");
    let parts = copy_set(&dir);
    // Another model cut into 3 parts: same names, same count, different tensors.
    let other = Gguf::open(data_dir().join("tiny/mixtral-tiny/mixtral-tiny-Q4_0.gguf")).unwrap();
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other_parts = write_set(&other, &other_dir.join("m.gguf"), 1_000_000);
    assert_eq!(other_parts.len(), 3, "{other_parts:?}");
    std::fs::copy(&other_parts[1], &parts[1]).unwrap();
    let e = Gguf::open(&parts[0]).unwrap_err().to_string();
    assert!(
        e.starts_with(&parts[1].display().to_string()) && e.contains("not to this set of 34"),
        "{e}"
    );

    // A standalone file in a part's place.
    std::fs::copy(data_dir().join(WHOLE), &parts[1]).unwrap();
    let e = Gguf::open(&parts[0]).unwrap_err().to_string();
    assert!(
        e.starts_with(&parts[1].display().to_string()) && e.contains("standalone"),
        "{e}"
    );

    // Parts swapped: each says which it is.
    std::fs::copy(part(2), &parts[1]).unwrap();
    let e = Gguf::open(&parts[0]).unwrap_err().to_string();
    assert!(e.contains("says it is part 3"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_renamed_part_cannot_find_the_others() {
    let dir = scratch("renamed");
    let to = dir.join("model.gguf");
    std::fs::copy(part(1), &to).unwrap();
    let e = Gguf::open(&to).unwrap_err().to_string();
    assert!(
        e.contains("part 2 of a 3-part split set") && e.contains("-00002-of-00003.gguf"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicate_tensors_and_wrong_totals_are_refused() {
    let dir = scratch("dups");
    let whole = Gguf::open(data_dir().join(WHOLE)).unwrap();
    // Two sets of 2 parts each from the same model, cut at different places: mixing their
    // parts repeats a tensor or loses one.
    let a = write_set(&whole, &dir.join("a.gguf"), 1_200_000);
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = write_set(&whole, &b_dir.join("a.gguf"), 1_600_000);
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_ne!(
        std::fs::metadata(&a[0]).unwrap().len(),
        std::fs::metadata(&b[0]).unwrap().len()
    );
    let a0_len = Gguf::open(&a[0]).unwrap().parts()[0].tensor_count();
    let b0_len = Gguf::open(&b[0]).unwrap().parts()[0].tensor_count();
    std::fs::copy(&b[0], &a[0]).unwrap();
    let e = Gguf::open(&a[1]).unwrap_err().to_string();
    if b0_len > a0_len {
        assert!(e.contains("is also in part 1"), "{e}");
    } else {
        assert!(e.contains("split.tensors.count says the set has 34"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sets_we_write_split_like_gguf_split_and_read_back() {
    let dir = scratch("write");
    let whole = Gguf::open(data_dir().join(WHOLE)).unwrap();
    let parts = write_set(&whole, &dir.join("v3.gguf"), 1_000_000);
    let names: Vec<String> = parts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "v3-00001-of-00003.gguf",
            "v3-00002-of-00003.gguf",
            "v3-00003-of-00003.gguf"
        ]
    );
    for p in &parts {
        let g = Gguf::open(p).unwrap();
        assert_same_model(&whole, &g);
        // Every part's tensor data stays within the limit (one 32-byte-padded tensor at a
        // time, as gguf-split counts).
        for part in g.parts() {
            assert!(part.data_bytes() <= 1_000_000, "{}", part.name());
        }
    }
    // Only the first part carries the model's metadata; every part the split keys.
    let raw = |p: &Path| Gguf::from_bytes(std::fs::read(p).unwrap(), "raw").unwrap();
    let keys =
        |g: &Gguf| -> Vec<String> { g.metadata().iter().map(|(k, _)| k.to_string()).collect() };
    assert_eq!(
        keys(&raw(&parts[1])),
        ["split.no", "split.tensors.count", "split.count"]
    );
    let first = raw(&parts[0]);
    assert_eq!(first.metadata().len(), whole.metadata().len() + 3);
    assert_eq!(first.metadata().u32("split.count").unwrap(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tensor_larger_than_the_limit_gets_a_part_of_its_own() {
    let dir = scratch("large");
    let whole = Gguf::open(data_dir().join(WHOLE)).unwrap();
    let parts = write_set(&whole, &dir.join("x.gguf"), 1);
    assert_eq!(parts.len(), whole.tensors().len());
    assert_same_model(&whole, &Gguf::open(&parts[5]).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
