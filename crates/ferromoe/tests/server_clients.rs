//! Real clients against a real `ferromoe serve` on a tiny model: the official `openai`
//! Python package and Ollama's API through `requests` (tests/python/*.py).

mod server_common;

use server_common::Server;

#[test]
fn openai_python_package_chat_stream_completion_and_exact_usage() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "256"]);
    let out = server.python("openai_client.py", &[]);
    assert!(out.contains("openai client: all checks passed"), "{out}");
    // One access-log line per generation, with the token counts.
    let log = server.log();
    assert!(log.contains("POST /v1/chat/completions 200 in="), "{log}");
    assert!(log.contains("POST /v1/completions 200 in="), "{log}");
    assert!(log.contains("POST /v1/chat/completions 404"), "{log}");
}

#[test]
fn ollama_api_with_requests_streaming_and_not() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "256", "--api-key", "sk-ollama"]);
    let out = server.python("ollama_client.py", &["--api-key", "sk-ollama"]);
    assert!(out.contains("ollama client: all checks passed"), "{out}");
    assert!(server.log().contains("POST /api/chat 200 in="));
}
