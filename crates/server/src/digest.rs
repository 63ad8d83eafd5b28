//! The model file's SHA-256, Ollama's `digest`: computed once, on the first request
//! that shows it, on a background thread (a 400 GB file takes minutes to read, and the
//! server must not wait for it at startup nor make a client wait); until it is done the
//! digest is empty. Of a split set, the hash is of all parts' bytes in order — the
//! file the parts were split from, were they joined (Ollama's own digest is of its
//! manifest, which a GGUF file does not have).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

enum State {
    NotStarted,
    Running,
    Done(String),
    Failed,
}

/// The lazily computed digest of the model's files.
pub(crate) struct FileDigest {
    paths: Vec<PathBuf>,
    state: std::sync::Arc<Mutex<State>>,
}

impl FileDigest {
    pub fn new(paths: Vec<PathBuf>) -> FileDigest {
        FileDigest {
            paths,
            state: std::sync::Arc::new(Mutex::new(State::NotStarted)),
        }
    }

    /// The hex SHA-256 when it is known; starts computing it the first time.
    pub fn get(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Done(hex) => return Some(hex.clone()),
            State::Running | State::Failed => return None,
            State::NotStarted => *state = State::Running,
        }
        drop(state);
        let paths = self.paths.clone();
        let shared = self.state.clone();
        let spawned = std::thread::Builder::new()
            .name("ferromoe-digest".into())
            .spawn(move || {
                let t = std::time::Instant::now();
                let result = sha256_of(&paths);
                let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
                *state = match result {
                    Ok(hex) => {
                        tracing::info!(
                            "sha256 of the model file: {hex} ({:.1} s)",
                            t.elapsed().as_secs_f64()
                        );
                        State::Done(hex)
                    }
                    Err(e) => {
                        tracing::warn!("cannot hash the model file for Ollama's digest: {e}");
                        State::Failed
                    }
                };
            });
        if spawned.is_err() {
            *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Failed;
        }
        None
    }
}

/// SHA-256 of the files' bytes, one after the other, as lower-case hex.
fn sha256_of(paths: &[PathBuf]) -> std::io::Result<String> {
    if paths.is_empty() {
        return Err(std::io::Error::other("the model was not read from a file"));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let mut f = std::fs::File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_hashed_as_one_file() {
        let dir = std::env::temp_dir().join(format!("ferromoe-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"ab").unwrap();
        std::fs::write(&b, b"c").unwrap();
        // SHA-256("abc"), FIPS 180-2's example.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_of(&[a.clone(), b.clone()]).unwrap(), abc);
        let d = FileDigest::new(vec![a, b]);
        let t = std::time::Instant::now();
        let got = loop {
            if let Some(hex) = d.get() {
                break hex;
            }
            assert!(t.elapsed().as_secs() < 10);
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(got, abc);
        assert!(sha256_of(&[dir.join("missing")]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
