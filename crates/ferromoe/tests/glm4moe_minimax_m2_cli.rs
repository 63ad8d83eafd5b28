//! `run`, `chat` and `serve` on the tiny GLM-4.5 (`glm4moe`) and MiniMax-M2 (`minimax-m2`)
//! models of tests/data/tiny: each command loads them, says what it left aside (GLM's MTP
//! block) and answers; the server's greedy chat completion is `run --chat`'s text.

mod server_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use server_common::Server;
use testutil::data_dir;

fn model(name: &str) -> PathBuf {
    data_dir().join(format!("tiny/{name}/{name}-Q4_K_M.gguf"))
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

const MTP_NOTE: &str =
    "note: 1 next-token-prediction (MTP) layer(s) (blk.2) recognised, outside the forward pass of 2 layers; blk.2 drafts with --spec-type mtp";

#[test]
fn run_and_chat_answer_on_both_families() {
    for (name, arch) in [
        ("glm4moe-tiny", "glm4moe"),
        ("minimax-m2-tiny", "minimax-m2"),
    ] {
        let path = model(name);
        let m = path.to_str().unwrap();
        let (out, err) = ferromoe(
            &[
                "run", "-m", m, "-p", "Hello", "-n", "8", "--temp", "0", "-t", "1",
            ],
            b"",
        );
        assert!(err.contains(&format!("{arch} · ")), "{err}");
        assert_eq!(err.contains(MTP_NOTE), arch == "glm4moe", "{err}");
        assert!(out.len() > 2, "{name}: {out:?}");
        // Greedy is deterministic.
        let (again, _) = ferromoe(
            &[
                "run", "-m", m, "-p", "Hello", "-n", "8", "--temp", "0", "-t", "2",
            ],
            b"",
        );
        assert_eq!(out, again, "{name}: run differs with 2 threads");

        let (out, err) = ferromoe(
            &[
                "chat",
                "-m",
                m,
                "-t",
                "1",
                "--temp",
                "0",
                "--max-new-tokens",
                "8",
                "--ignore-eos",
            ],
            b"Hello there\nAnd a second turn\n",
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("[prefill")).count(),
            2,
            "{name}: {err}"
        );
        assert!(out.trim().len() > 2, "{name}: {out:?}");
    }
}

#[test]
fn serve_glm4moe_answers_as_run_does() {
    let path = model("glm4moe-tiny");
    let prompt = "Tell me about dragons.";
    let (run_text, _) = ferromoe(
        &[
            "run",
            "-m",
            path.to_str().unwrap(),
            "-p",
            prompt,
            "--chat",
            "-n",
            "6",
            "--temp",
            "0",
            "-t",
            "1",
        ],
        b"",
    );
    let server = Server::start_with(&path, &["-t", "1"]);
    assert!(server.log().contains(MTP_NOTE), "{}", server.log());
    let r = server.post_json(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 6,
            "temperature": 0,
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(content, run_text.trim_end_matches('\n'), "{}", r.body);

    // Ollama's API on the same model.
    let r = server.post_json(
        "/api/chat",
        &json!({
            "model": "tiny", // the name server_common serves under
            "messages": [{"role": "user", "content": prompt}],
            "stream": false,
            "options": {"num_predict": 6, "temperature": 0},
        }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["message"]["content"].as_str().unwrap(), content);
}
