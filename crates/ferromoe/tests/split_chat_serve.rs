//! `chat` and `serve` on a split set (tests/data/split: deepseek-v3-tiny cut into 3 parts
//! by llama.cpp's `llama-gguf-split`), opened by a part that does not hold the metadata:
//! the same greedy answers as on the unsplit file.

mod server_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use server_common::Server;
use testutil::data_dir;

fn whole() -> PathBuf {
    data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf")
}

fn second_part() -> PathBuf {
    data_dir().join(gguf::split_path("split/deepseek-v3-tiny-Q4_K_M", 1, 3))
}

/// Two greedy turns of `chat` with the prompts piped in: (stdout, stderr).
fn chat(model: &std::path::Path) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(["chat", "-m", model.to_str().unwrap(), "-t", "1"])
        .args(["--temp", "0", "--max-new-tokens", "8", "--ignore-eos"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nAnd a second turn\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

#[test]
fn chat_on_a_split_set_answers_as_on_the_whole_file() {
    let (set_out, set_err) = chat(&second_part());
    let (whole_out, _) = chat(&whole());
    assert!(set_err.contains("in 3 parts"), "{set_err}");
    // Two turns answered (8 tokens each: the random tiny model's text may be anything,
    // but the same from the set as from the whole file).
    assert_eq!(
        set_err
            .lines()
            .filter(|l| l.starts_with("[prefill"))
            .count(),
        2,
        "{set_err}"
    );
    assert!(set_out.trim().len() > 2, "{set_out:?}");
    assert_eq!(set_out, whole_out);
}

/// One greedy chat completion: (content, usage.completion_tokens).
fn complete(server: &Server) -> (String, u64) {
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": "Tell me about dragons."}],
            "max_tokens": 6,
            "temperature": 0,
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    (
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        v["usage"]["completion_tokens"].as_u64().unwrap(),
    )
}

#[test]
fn serve_on_a_split_set_answers_as_on_the_whole_file() {
    let set = Server::start_with(&second_part(), &["-t", "1"]);
    let log = set.log();
    assert!(log.contains("in 3 parts"), "{log}");
    // Default context (the model's 256) for 4 running + 4 kept sequences.
    assert!(
        log.contains("  reserved: KV cache 4.50 MiB (8 caches × 256 positions; latent f32: 2.2 KiB per position)"),
        "{log}"
    );
    let (set_text, set_tokens) = complete(&set);
    assert!(set_tokens > 0);
    // Ollama's size: the bytes of all three parts.
    let parts: u64 = (0..3)
        .map(|i| {
            let p = data_dir().join(gguf::split_path("split/deepseek-v3-tiny-Q4_K_M", i, 3));
            std::fs::metadata(p).unwrap().len()
        })
        .sum();
    let tags = set.get("/api/tags");
    assert_eq!(tags.status, 200, "{}", tags.body);
    assert_eq!(tags.json()["models"][0]["size"], parts, "{}", tags.body);
    drop(set);

    let whole = Server::start_with(&whole(), &["-t", "1"]);
    assert_eq!(complete(&whole), (set_text, set_tokens));
}
