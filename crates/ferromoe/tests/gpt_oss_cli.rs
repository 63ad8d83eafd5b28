//! `run`, `chat` and `serve` on the tiny gpt-oss model (tests/data/tiny/gpt-oss-tiny: MXFP4
//! experts, a sliding-window layer, the real harmony chat template), with contexts long
//! enough that the sliding layer's KV cache is a ring (see `model::kv`).

mod server_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use serde_json::json;
use server_common::Server;
use testutil::data_dir;

fn tiny() -> PathBuf {
    data_dir().join("tiny/gpt-oss-tiny/gpt-oss-tiny-MXFP4_MOE.gguf")
}

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

/// `run --temp 0` prints the greedy continuation the model computes in-process (repacked
/// and quantized, as the command runs it), through the ring.
#[test]
fn run_greedy_matches_the_library() {
    let path = tiny();
    let file = Arc::new(gguf::Gguf::open(&path).unwrap());
    let tok = text::Tokenizer::from_gguf(file.metadata()).unwrap();
    let prompt =
        "The licence grants you the freedom to share and change all versions of a program.";
    let ids = tok.encode(prompt, false).unwrap();
    let mut m = Model::load(file).unwrap();
    m.weights.repack().unwrap();
    let pool = ThreadPool::new(1);
    let mut st = RunState::new(MatmulMode::Quantized);
    let mut kv = KvCache::new(&m.config, 8192).unwrap();
    assert_eq!(kv.ring_step(), Some(model::kv::RING_STEP));
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
    let out = ferromoe(&[
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
        "1",
        "--ctx",
        "8192",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("gpt-oss · "), "{err}");
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.strip_suffix('\n').unwrap(), tok.decode(&want, true));

    // --chat wraps the prompt in the harmony template and answers.
    let out = ferromoe(&[
        "run", "-m", p, "-p", "Hello", "-n", "6", "--temp", "0", "--chat", "-t", "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

/// Two greedy turns of `chat`, the second extending the first's cache.
#[test]
fn chat_answers_two_turns() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(["chat", "-m", tiny().to_str().unwrap(), "-t", "1"])
        .args(["--temp", "0", "--max-new-tokens", "8", "--ignore-eos"])
        .args(["--ctx", "8192", "--system", "Answer briefly."])
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("[prefill")).count(),
        2,
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).trim().len() > 2);
}

/// The OpenAI and Ollama endpoints answer; the next turn of the conversation reuses the
/// cached prefix (going back into the sliding layer's ring).
#[test]
fn serve_answers_and_reuses_the_prefix() {
    let server = Server::start_with(&tiny(), &["-t", "1", "--ctx", "8192"]);
    let first = json!([{"role": "user", "content": "Tell me about dragons."}]);
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({"messages": first, "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let second = json!([
        {"role": "user", "content": "Tell me about dragons."},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And about griffins?"},
    ]);
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({"messages": second, "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        server.wait_log("prefix cache: reused", Duration::from_secs(5)),
        "{}",
        server.log()
    );

    let r = server.post_json(
        "/api/chat",
        &json!({"model": "tiny", "messages": first, "stream": false,
                "options": {"num_predict": 4, "temperature": 0}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["message"]["content"].is_string(), "{}", r.body);
}
