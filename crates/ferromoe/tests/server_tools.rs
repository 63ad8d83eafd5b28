//! Tool calling and reasoning through the official `openai` and `ollama` Python
//! packages (tests/python/tools.py, reasoning.py), and the requests that are refused.

mod server_common;

use server_common::{repo_dir, Server};

#[test]
fn reasoning_is_separated_switched_off_or_left_in_the_content() {
    let template = repo_dir().join("tests/data/templates/chatml-think.jinja");
    let server = Server::start(&[
        "--max-seqs",
        "2",
        "--ctx",
        "256",
        "--chat-template-file",
        template.to_str().unwrap(),
    ]);
    let out = server.python("reasoning.py", &[]);
    assert!(out.contains("reasoning: all checks passed"), "{out}");
}

#[test]
fn tool_call_round_trips_on_the_demo_model_with_both_clients() {
    let model = testutil::demo_model();
    let server = Server::start_with(&model, &["-t", "2", "--max-seqs", "2", "--ctx", "1024"]);
    let out = server.python("tools.py", &["--model", server_common::MODEL_NAME]);
    assert!(out.contains("tools: all checks passed"), "{out}");
}

#[test]
fn forced_calls_on_a_tiny_moe_model_in_each_call_syntax() {
    // Random weights never call a tool by themselves: tool_choice must force it, in the
    // syntax of the real template the model is served with (the tiny vocabulary has none
    // of their markers as tokens, so they are spelt out: hence the long max_tokens).
    for template in [
        "Qwen-Qwen3-0.6B",                          // Hermes <tool_call>
        "deepseek-ai-DeepSeek-V3.1",                // NAME<｜tool▁sep｜>{..}
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", // function<｜tool▁sep｜>NAME + ```json
        "moonshotai-Kimi-K2",                       // functions.NAME:0
        "openai-gpt-oss-120b",                      // harmony commentary to=functions.NAME
    ] {
        let path = repo_dir().join(format!("tests/data/templates/real/{template}.jinja"));
        let server = Server::start(&[
            "--max-seqs",
            "2",
            "--ctx",
            "4096",
            "--chat-template-file",
            path.to_str().unwrap(),
        ]);
        let out = server.python("tools_forced.py", &[]);
        assert!(
            out.contains("forced tools: all checks passed"),
            "{template}: {out}"
        );
    }
}

#[test]
fn tools_for_a_template_without_a_tool_format_are_refused() {
    // The tiny model's ChatML template shows no tool calls.
    let server = Server::start(&["--ctx", "128"]);
    let tools = r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
    for (body, needle) in [
        (
            format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"tools":{tools}}}"#),
            "no tool-call format",
        ),
        (
            format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"tools":{tools},"tool_choice":"required"}}"#),
            "no tool-call format",
        ),
        (
            format!(r#"{{"messages":[{{"role":"user","content":"hi"}}],"tools":{tools},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#),
            "no tool-call format",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"retrieval"}]}"#.to_string(),
            "function only",
        ),
        (
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}"#.to_string(),
            "JSON Schema object",
        ),
        (
            r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#.to_string(),
            "is not JSON",
        ),
    ] {
        let r = server.post_json_raw("/v1/chat/completions", body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(needle), "{body}: {}", r.body);
    }
    let r = server.post_json_raw(
        "/api/chat",
        format!(
            r#"{{"model":"tiny","messages":[{{"role":"user","content":"hi"}}],"tools":{tools}}}"#
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = server.post_json_raw(
        "/api/chat",
        br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"think":"maybe"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
}
