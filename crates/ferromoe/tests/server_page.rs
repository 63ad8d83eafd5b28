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
