//! `tokenize`, `run` and `chat`, run as a user would.

use std::io::Write;
use std::process::{Command, Stdio};

use testutil::{data_dir, json};

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn tiny(model: &str, variant: &str) -> String {
    data_dir()
        .join(format!("tiny/{model}/{model}-{variant}.gguf"))
        .to_str()
        .unwrap()
        .to_string()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenize_vocab_only_gguf_matches_hf() {
    let gz = std::fs::read(data_dir().join("tokenizers/qwen2.5-vocab.gguf.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    let path =
        std::env::temp_dir().join(format!("ferromoe-qwen-vocab-{}.gguf", std::process::id()));
    std::fs::write(&path, raw).unwrap();
    let reference = json("tokenizers/qwen2.5.tokenizer-ref.json");
    let cases = reference["cases"]
        .as_array()
        .or(reference["strings"].as_array())
        .expect("reference cases");
    let mut checked = 0;
    // A few strings through the binary (the text crate checks all 43 in-process).
    for case in cases.iter().step_by(11) {
        let text = case["text"].as_str().unwrap();
        let out = ferromoe(&["tokenize", "-m", path.to_str().unwrap(), text]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, ids(&case["ids_add_special_false"]), "{text:?}");
        checked += 1;
    }
    assert_eq!(checked, 4);
    // Special-token text is parsed as the special token.
    let out = ferromoe(&["tokenize", "-m", path.to_str().unwrap(), "<|im_start|>user"]);
    let got: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got[0], 151644);
    std::fs::remove_file(&path).ok();
}

#[test]
fn run_greedy_continues_like_the_reference() {
    let model = tiny("deepseek-v3-tiny", "BF16");
    let file = gguf::Gguf::open(&model).unwrap();
    let tok = text::Tokenizer::from_gguf(file.metadata()).unwrap();
    let manifest = json("tiny/manifest.json");
    let prompt_ids = ids(&manifest["prompts"][1]["ids"]);
    let prompt = tok.decode(&prompt_ids, false);
    // The prompt text tokenizes back to the reference prompt.
    let out = ferromoe(&["tokenize", "-m", &model, &prompt]);
    assert_eq!(
        serde_json::from_slice::<Vec<u32>>(&out.stdout).unwrap(),
        prompt_ids
    );

    let want_ids = ids(
        &manifest["models"]["deepseek-v3-tiny"]["references"]["hf_float32_eager"][1]["greedy_ids"],
    );
    let want = tok.decode(&want_ids, true);
    let out = ferromoe(&[
        "run", "-m", &model, "-p", &prompt, "-n", "16", "--temp", "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.strip_suffix('\n').unwrap(), want);
    // The prompt is not echoed, and the load summary goes to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("deepseek2 · "));
}

#[test]
fn run_rejects_bad_sampling_and_oversized_prompts() {
    let model = tiny("qwen3moe-tiny", "Q8_0");
    let out = ferromoe(&["run", "-m", &model, "-p", "hi", "--temp=-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("temperature must be ≥ 0"));
    let long = "word ".repeat(400);
    let out = ferromoe(&["run", "-m", &model, "-p", &long, "--ctx", "64"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than the context size 64"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A context whose KV cache cannot exist (0 positions, more bytes than the machine has,
/// more than an address space) is refused with a message by every command that
/// allocates one, before any allocation aborts the process.
#[test]
fn impossible_contexts_are_refused_with_a_message() {
    let model = tiny("deepseek-v2-lite-tiny", "Q8_0");
    let cases: [(&[&str], &str); 5] = [
        (&["run", "-p", "hi", "--ctx", "0"], "at least one position"),
        (
            &["run", "-p", "hi", "--ctx", "5000000000000"],
            "of KV cache",
        ),
        (&["chat", "--ctx", "18446744073709551615"], "size overflows"),
        (
            &["serve", "--ctx", "5000000000000", "--port", "0"],
            "use a smaller --ctx",
        ),
        // One cache fits, the 64 running + 64 kept ones (590 GB) do not.
        (
            &[
                "serve",
                "--ctx",
                "2000000",
                "--max-seqs",
                "64",
                "--port",
                "0",
            ],
            "128 KV caches",
        ),
    ];
    for (args, want) in cases {
        let mut all = args.to_vec();
        all.extend(["-m", &model]);
        let out = ferromoe(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("memory allocation"),
            "{err}"
        );
    }
}

#[test]
fn chat_keeps_history_in_the_cache_and_clears() {
    let model = tiny("qwen2moe-tiny", "Q4_K_M");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args([
            "chat",
            "-m",
            &model,
            "--temp",
            "0",
            "--max-new-tokens",
            "6",
            "--system",
            "Be brief.",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nAnd a second turn\n/clear\nHello there\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("[prefill")).collect();
    assert_eq!(stats.len(), 3, "{err}");
    assert!(stats[0].contains("(0 cached)"), "{}", stats[0]);
    // The second turn reuses the first turn's KV (system + first exchange).
    let cached: usize = stats[1]
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cached > 10, "{}", stats[1]);
    assert!(err.contains("(conversation cleared)"));
    assert!(stats[2].contains("(0 cached)"), "{}", stats[2]);
    // After /clear the same first message gives the same (greedy) answer.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<&str> = stdout.lines().map(|l| l.trim_start_matches("> ")).collect();
    assert_eq!(answers.len(), 4, "{stdout:?}");
    assert!(!answers[0].is_empty());
    assert_eq!(answers[0], answers[2]);
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    let model = tiny("deepseek-v2-lite-tiny", "Q8_0");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args([
            "chat",
            "-m",
            &model,
            "--temp",
            "0",
            "--ctx",
            "60000",
            "--max-new-tokens",
            "59000",
            "-t",
            "1",
            "--ignore-eos",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Tell me a very long story\n").unwrap();
    stdin.flush().unwrap();
    // Let it generate for a moment, then press Ctrl-C.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The chat is still there: it takes another question and exits cleanly.
    stdin.write_all(b"/exit\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(stopped)]"), "{err}");
}

#[test]
fn chat_shows_or_hides_the_reasoning() {
    // The template opens <think> and the random weights never close it: the whole
    // answer is reasoning, printed (plain: stdout is not a terminal) or hidden.
    let model = tiny("qwen2moe-tiny", "Q8_0");
    let template = data_dir().join("templates/chatml-think.jinja");
    let chat = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
            .args(["chat", "-m", &model, "--temp", "0", "--max-new-tokens", "6"])
            .args([
                "--ignore-eos",
                "--chat-template-file",
                template.to_str().unwrap(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Hello there\n/exit\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = chat(&[]);
    let answer = shown.lines().next().unwrap().trim_start_matches("> ");
    assert!(!answer.trim().is_empty(), "{shown:?}");
    assert!(
        !shown.contains('\x1b'),
        "no ANSI codes off a terminal: {shown:?}"
    );
    let hidden = chat(&["--hide-thinking"]);
    assert_eq!(
        hidden.lines().next().unwrap().trim_start_matches("> "),
        "",
        "{hidden:?}"
    );
}
