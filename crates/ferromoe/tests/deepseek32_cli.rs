//! `run`, `chat` and `serve` on the tiny DeepSeek-V3.2 model (tests/data/tiny/deepseek32-tiny:
//! MLA with the lightning indexer selecting top_k = 8 positions, so every prompt here is
//! past the dense start and its queries attend to the indexer's selection). The server's
//! answers must not depend on the other sequences of its batches, nor on whether a prompt's
//! prefix came from the prefix cache (whose truncation must leave the indexer's key cache
//! consistent with the latents).

mod server_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use serde_json::{json, Value};
use server_common::Server;
use testutil::data_dir;

fn tiny() -> PathBuf {
    data_dir().join("tiny/deepseek32-tiny/deepseek32-tiny-Q4_K_M.gguf")
}

/// `ferromoe ARGS` with `stdin`: (stdout, stderr), asserting success.
fn ferromoe(args: &[&str], stdin: &[u8]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// The indexer's top_k in the tiny file: prompts longer than this use its selection.
const TOP_K: usize = 8;

/// `run --temp 0` prints the greedy continuation the library computes in-process
/// (repacked, quantized), with the indexer selecting for every position past the 8th.
#[test]
fn run_greedy_matches_the_library() {
    let path = tiny();
    let file = Arc::new(gguf::Gguf::open(&path).unwrap());
    let tok = text::Tokenizer::from_gguf(file.metadata()).unwrap();
    let prompt =
        "The licence grants you the freedom to share and change all versions of a program.";
    let ids = tok.encode(prompt, false).unwrap();
    assert!(ids.len() > TOP_K, "{} prompt tokens", ids.len());
    let mut m = Model::load(file).unwrap();
    assert!(
        m.config
            .mla
            .as_ref()
            .and_then(|a| a.indexer.as_ref())
            .is_some_and(|ix| ix.top_k == TOP_K),
        "the tiny file's indexer"
    );
    m.weights.repack().unwrap();
    let pool = ThreadPool::new(1);
    let mut st = RunState::new(MatmulMode::Quantized);
    let mut kv = KvCache::new(&m.config, 256).unwrap();
    let mut next = kernels::vector::argmax(
        m.forward(&pool, &mut st, &mut kv, &ids, Logits::Last)
            .unwrap(),
    )
    .unwrap() as u32;
    let mut want = vec![next];
    while want.len() < 12 {
        let logits = m
            .forward(&pool, &mut st, &mut kv, &[next], Logits::Last)
            .unwrap();
        next = kernels::vector::argmax(logits).unwrap() as u32;
        want.push(next);
    }
    let p = path.to_str().unwrap();
    for threads in ["1", "2"] {
        let (out, err) = ferromoe(
            &[
                "run",
                "-m",
                p,
                "-p",
                prompt,
                "-n",
                "12",
                "--temp",
                "0",
                "--ignore-eos",
                "-t",
                threads,
            ],
            b"",
        );
        assert!(err.contains("deepseek32 · "), "{err}");
        assert_eq!(
            out.strip_suffix('\n').unwrap(),
            tok.decode(&want, true),
            "{threads} thread(s)"
        );
    }
}

/// Two greedy turns of `chat`, the second extending the first's cache (its indexer keys
/// included).
#[test]
fn chat_answers_two_turns() {
    let (out, err) = ferromoe(
        &[
            "chat",
            "-m",
            tiny().to_str().unwrap(),
            "-t",
            "1",
            "--temp",
            "0",
            "--max-new-tokens",
            "8",
            "--ignore-eos",
            "--system",
            "Answer briefly.",
        ],
        b"Hello there, how are you today?\nAnd a second turn, a little longer than the first\n",
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("[prefill")).count(),
        2,
        "{err}"
    );
    assert!(out.trim().len() > 2, "{out:?}");
}

/// One greedy chat completion: (content, usage).
fn complete(server: &Server, messages: &Value, tokens: usize) -> (String, Value) {
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": tokens, "temperature": 0,
                "ignore_eos": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    (content, v["usage"].clone())
}

/// The server's greedy chat completion is `run --chat`'s text, and Ollama's API answers.
#[test]
fn serve_answers_as_run_does() {
    let path = tiny();
    let prompt = "Tell me about dragons and the knights who fight them.";
    let (run_text, _) = ferromoe(
        &[
            "run",
            "-m",
            path.to_str().unwrap(),
            "-p",
            prompt,
            "--chat",
            "-n",
            "8",
            "--temp",
            "0",
            "--ignore-eos",
            "-t",
            "1",
        ],
        b"",
    );
    let server = Server::start_with(&path, &["-t", "1"]);
    let (content, usage) = complete(&server, &json!([{"role": "user", "content": prompt}]), 8);
    assert!(usage["prompt_tokens"].as_u64().unwrap() > TOP_K as u64);
    assert_eq!(usage["completion_tokens"], 8);
    assert_eq!(content, run_text.trim_end_matches('\n'));

    let r = server.post_json(
        "/api/chat",
        &json!({"model": "tiny", "messages": [{"role": "user", "content": prompt}],
                "stream": false, "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["message"]["content"].is_string(), "{}", r.body);
}

const PROMPTS: [&str; 4] = [
    "Once upon a time there was a dragon",
    "The quick brown fox jumps over the lazy dog",
    "Write a poem about the sea and the ships on it.",
    "List the planets of the solar system, nearest first.",
];

/// Concurrent requests, batched together, answer exactly as each does alone.
#[test]
fn concurrent_requests_equal_their_solo_runs() {
    let server = Server::start_with(&tiny(), &["-t", "1", "--max-seqs", "4"]);
    let tokens = 24;
    let ask = |p: &str| complete(&server, &json!([{"role": "user", "content": p}]), tokens).0;
    let alone: Vec<String> = PROMPTS.iter().map(|p| ask(p)).collect();
    let before = server.health();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = PROMPTS.iter().map(|p| s.spawn(|| ask(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = server.health();
    for ((p, a), b) in PROMPTS.iter().zip(&alone).zip(&together) {
        assert_eq!(a, b, "prompt {p:?}: the concurrent answer differs");
    }
    let distinct: std::collections::HashSet<&String> = alone.iter().collect();
    assert!(distinct.len() >= 3, "{alone:?}");
    let count = |h: &Value, k: &str| h[k].as_u64().unwrap();
    let passes = count(&after, "steps") - count(&before, "steps");
    let seqs = count(&after, "batched_seqs") - count(&before, "batched_seqs");
    assert!(
        seqs as f64 / passes as f64 > 1.5,
        "the requests were not batched: {seqs} sequences in {passes} passes"
    );
}

/// A second turn whose prefix comes from the prefix cache (truncated to the shared
/// prefix, indexer keys past it overwritten) answers as a cold server does; so does a
/// shorter prompt that reuses part of a longer cached one.
#[test]
fn a_reused_prefix_answers_as_a_cold_one() {
    let first = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me a story about a dragon and a knight."},
    ]);
    let warm = Server::start_with(&tiny(), &["-t", "1", "--max-seqs", "2"]);
    let (answer, _) = complete(&warm, &first, 16);
    let second = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me a story about a dragon and a knight."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And then what happened to them?"},
    ]);
    let (reused, usage) = complete(&warm, &second, 16);
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > TOP_K as u64, "cached {cached}: {usage}");
    // A prompt sharing only the system message: the cache is cut back into the middle
    // of what it holds.
    let third = json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Why is the sky blue, and why are sunsets red?"},
    ]);
    let (cut, usage) = complete(&warm, &third, 16);
    let cached_cut = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached_cut > TOP_K as u64 && cached_cut < cached,
        "cached {cached_cut}: {usage}"
    );
    assert!(
        warm.wait_log("prefix cache: reused", Duration::from_secs(5)),
        "{}",
        warm.log()
    );

    let cold = Server::start_with(&tiny(), &["-t", "1", "--prefix-cache", "0"]);
    for (name, messages, want) in [("second", &second, &reused), ("third", &third, &cut)] {
        let (got, usage) = complete(&cold, messages, 16);
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(&got, want, "{name} turn: cold and cached prefixes differ");
    }
}
