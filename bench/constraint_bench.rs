//! Micro-benchmark of constrained decoding (issue 18): what one step of a JSON-schema
//! constraint costs, without a model. A valid JSON document is tokenized with the file's
//! own tokenizer and replayed through a compiled constraint; per token: computing the
//! allowed set, writing the masked logits row (a copy with −∞ for the forbidden tokens), committing the
//! token. Also the one-time costs: the vocabulary's token trie, compiling the schema.
//!
//! `cargo bench -p engine --bench constraint [-- MODEL.gguf]` (default: the tiny
//! qwen2moe model's 1000-token vocabulary)

use std::time::{Duration, Instant};

use engine::{ConstraintCompiler, ConstraintSpec, Tokenizer};

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| a.ends_with(".gguf"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/data/tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf")
        });
    let file = gguf::Gguf::open(&path).expect("open the model file");
    let tok = Tokenizer::from_gguf(file.metadata()).expect("its tokenizer");
    let t = Instant::now();
    let compiler = ConstraintCompiler::new(&tok).expect("token trie");
    let trie = t.elapsed();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "bio": {"type": "string"},
            "languages": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["name", "age", "bio", "languages"],
        "additionalProperties": false
    });
    let doc = r#"{"name": "Ada Quill", "age": 34, "bio": "Ada writes compilers by day and tends a small orchard by night. She learned to program on a borrowed laptop, rewrote her first interpreter three times, and now maintains a parser generator used by thousands of projects. Her favourite bug was a race condition that only appeared on Tuesdays.", "languages": ["Rust", "OCaml", "C", "Python"]}"#;
    let ids = tok.encode(doc, false).expect("tokenize");
    let spec = ConstraintSpec::JsonSchema(schema);
    let t = Instant::now();
    let fresh = compiler.compile(&spec).expect("compile");
    let compile = t.elapsed();
    println!(
        "{}: vocabulary {} tokens · token trie {:.1} ms · schema compile {:.2} ms · document {} tokens",
        path.file_name().unwrap_or_default().to_string_lossy(),
        tok.vocab_size(),
        trie.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
        ids.len()
    );
    let logits: Vec<f32> = (0..tok.vocab_size())
        .map(|i| (i % 97) as f32 * 0.01)
        .collect();
    let mut out = Vec::new();
    let (mut allowed, mut apply, mut commit) = (Vec::new(), Vec::new(), Vec::new());
    for _pass in 0..5 {
        let mut c = fresh.clone();
        for &id in &ids {
            let t = Instant::now();
            let mask = c.allowed().expect("mask");
            allowed.push(t.elapsed());
            assert!(mask.is_allowed(id), "the document leaves the grammar");
            let t = Instant::now();
            c.apply(&mask, &logits, &mut out);
            apply.push(t.elapsed());
            let t = Instant::now();
            c.commit(id).expect("commit");
            commit.push(t.elapsed());
        }
        assert!(c.is_accepting(), "the document is complete");
    }
    let stats = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        let mean = v.iter().sum::<Duration>().as_secs_f64() / v.len() as f64;
        println!(
            "  {name:<8} mean {:7.1} µs · median {:7.1} µs · p90 {:7.1} µs",
            mean * 1e6,
            v[v.len() / 2].as_secs_f64() * 1e6,
            v[v.len() * 9 / 10].as_secs_f64() * 1e6
        );
    };
    println!("per token, 5 passes:");
    stats("allowed", &mut allowed);
    stats("apply", &mut apply);
    stats("commit", &mut commit);
}
