//! Real clients against a real `ferromoe serve` on a tiny model: the official `openai`
//! Python package and Ollama's API through `requests` (tests/python/*.py).

mod server_common;

use std::time::Duration;

use server_common::Server;

#[test]
fn openai_python_package_chat_stream_completion_and_exact_usage() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "256"]);
    let out = server.python("openai_client.py", &[]);
    assert!(out.contains("openai client: all checks passed"), "{out}");
    // One access-log line per generation, with the token counts.
    for line in [
        "POST /v1/chat/completions 200 in=",
        "POST /v1/completions 200 in=",
        "POST /v1/chat/completions 404",
    ] {
        assert!(
            server.wait_log(line, Duration::from_secs(5)),
            "no '{line}' in the log:\n{}",
            server.log()
        );
    }
}

#[test]
fn ollama_api_with_requests_streaming_and_not() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "256", "--api-key", "sk-ollama"]);
    let out = server.python("ollama_client.py", &["--api-key", "sk-ollama"]);
    assert!(out.contains("ollama client: all checks passed"), "{out}");
    assert!(
        server.wait_log("POST /api/chat 200 in=", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}
