//! Construction and encoding speed of the real tokenizers (printed; bounded loosely so
//! a pathological slowdown fails). Run with `--nocapture` to see the numbers.

mod common;

use std::time::Instant;

use text::Tokenizer;

/// ~200 KB of mixed text: English licence prose, code, CJK, emoji.
fn corpus() -> String {
    let refs = common::load_reference("qwen2.5");
    let mut s = String::new();
    for p in [
        "/usr/share/common-licenses/GPL-3",
        "/usr/share/common-licenses/Apache-2.0",
    ] {
        if let Ok(t) = std::fs::read_to_string(p) {
            s.push_str(&t);
        }
    }
    while s.len() < 200_000 {
        for r in &refs.strings[..40] {
            s.push_str(&r.text);
            s.push('\n');
        }
    }
    s
}

#[test]
fn build_and_encode_speed() {
    let text = corpus();
    for name in ["deepseek-v3", "qwen2.5", "llama3", "mixtral"] {
        let file = common::load_vocab_gguf(name);
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(file.metadata()).unwrap();
        let build = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let ids = tok.encode(&text, false).unwrap();
        let enc = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let back = tok.decode(&ids, false);
        let dec = t2.elapsed().as_secs_f64();
        eprintln!(
            "{name:12} build {:6.1} ms | encode {} KB -> {} tokens in {:6.1} ms ({:.1} MB/s) | decode {:5.1} ms",
            build * 1e3,
            text.len() / 1000,
            ids.len(),
            enc * 1e3,
            text.len() as f64 / enc / 1e6,
            dec * 1e3
        );
        if name != "qwen2.5" && name != "mixtral" {
            assert_eq!(back, text, "{name}: round trip of the corpus");
        }
        // Generous bounds (2 shared cores, debug-free release build): catch regressions
        // by an order of magnitude, not noise.
        assert!(build < 5.0, "{name}: building took {build:.2} s");
        assert!(enc < 10.0, "{name}: encoding took {enc:.2} s");
    }
}
