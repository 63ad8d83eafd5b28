//! The web chat page at `/`: served as HTML, self-contained (no external resources),
//! talking to the streaming chat endpoint. (scripts/chat_page_check.sh renders it in
//! headless Chromium and checks a streamed answer appears.)

mod server_common;

use server_common::Server;

#[test]
fn chat_page_is_self_contained_html_using_the_streaming_api() {
    let server = Server::start(&["--max-seqs", "1", "--ctx", "128", "--api-key", "k"]);
    let r = server.get("/");
    assert_eq!(r.status, 200, "the page needs no API key");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = &r.body;
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(
            !html.contains(external),
            "the page must work offline, found {external:?}"
        );
    }
    for needed in [
        "/v1/chat/completions",
        "stream: true",
        "include_usage",
        "tok/s",
        "getReader()",
        "history.push",
    ] {
        assert!(html.contains(needed), "the page lacks {needed:?}");
    }
}

/// The page's script run under node against the server (tests/js/chat_page_logic.mjs):
/// `/?q=` only fills the input, and a failed turn (a 503, an error event mid-stream) is
/// not kept in the conversation that the next turn sends.
#[test]
fn chat_page_logic_under_node_drops_failed_turns_and_q_does_not_send() {
    let server = Server::start(&["--max-seqs", "1", "--ctx", "1024"]);
    let script = server_common::repo_dir().join("tests/js/chat_page_logic.mjs");
    let out = std::process::Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()))
        .arg(&script)
        .arg(&server.base)
        .output()
        .unwrap_or_else(|e| panic!("node {} (needs node 18 or later): {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n--- stdout\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(stdout.contains("all chat page checks passed"), "{stdout}");
}
