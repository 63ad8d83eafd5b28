//! The Anthropic Messages API with the official `anthropic` Python package
//! (tests/python/anthropic_client.py, which also drives `/tokenize` and `/detokenize`)
//! on a tiny MoE model and on the real demo model; a client that goes away mid-stream
//! cancels its generation; an answer cut off by the shutdown ends in an `error` event,
//! never in `message_stop`.

mod server_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{Response, Server};

const KEY: &str = "sk-ant-local";

fn run_client_script(server: &Server) {
    let out = server.python("anthropic_client.py", &["--api-key", KEY]);
    assert!(out.contains("anthropic client: all checks passed"), "{out}");
    // One access-log line per request, with token counts for generations.
    for line in [
        "POST /v1/messages 200 in=",
        "POST /v1/messages/count_tokens 200",
        "POST /v1/messages 400",
        "POST /v1/messages 401",
        "POST /tokenize 200",
        "POST /detokenize 400",
    ] {
        assert!(
            server.wait_log(line, Duration::from_secs(5)),
            "no '{line}' in the log:\n{}",
            server.log()
        );
    }
}

#[test]
fn anthropic_python_package_on_a_tiny_moe_model() {
    let server = Server::start(&["--max-seqs", "2", "--ctx", "512", "--api-key", KEY]);
    run_client_script(&server);
}

#[test]
fn anthropic_python_package_on_the_demo_model() {
    let model = testutil::demo_model();
    let server = Server::start_with(
        &model,
        &["--max-seqs", "2", "--ctx", "512", "--api-key", KEY],
    );
    run_client_script(&server);
}

/// Sends `body` to `/v1/messages` on a new connection and returns it (the answer unread).
fn send(server: &Server, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         anthropic-version: 2023-06-01\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    s
}

/// The events of an SSE body: (name, data as JSON).
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no '{name}' in the event {block:?}"))
                    .to_string()
            };
            let data = field("data:");
            let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            (field("event:"), v)
        })
        .collect()
}

fn long_answer(stream: bool) -> Value {
    json!({"model": "tiny", "max_tokens": 4000, "ignore_eos": true, "stream": stream,
        "messages": [{"role": "user", "content": "Count."}]})
}

#[test]
fn a_client_gone_mid_stream_cancels_and_shutdown_ends_streams_in_an_error_event() {
    let mut server = Server::start(&["--max-seqs", "2", "--ctx", "4096", "--grace", "0.3"]);

    // The client reads its first text delta, then goes away: the generation stops at
    // once, long before its 4000 tokens.
    let mut r = BufReader::new(send(&server, &long_answer(true)));
    let mut line = String::new();
    while !line.starts_with("event: content_block_delta") {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
    }
    let t = Instant::now();
    drop(r);
    loop {
        let h = server.health();
        if h["active"] == 0 && h["cancelled"] == 1 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "still running: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        server.wait_log("POST /v1/messages 200", Duration::from_secs(2)),
        "{}",
        server.log()
    );
    let log = server.log();
    let cancelled = log
        .lines()
        .find(|l| l.contains("finish=Cancelled"))
        .unwrap_or_else(|| panic!("no cancelled generation in the log:\n{log}"));
    let out: usize = cancelled
        .split("out=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(out < 4000, "{cancelled}");

    // Shutdown with two answers running: the stream ends in an error event, the other
    // is a 503 in Anthropic's shape; neither looks like a normal end.
    let mut open = [
        send(&server, &long_answer(true)),
        send(&server, &long_answer(false)),
    ];
    let t = Instant::now();
    while server.health()["active"] != 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", server.health());
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = server
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    let answers: Vec<Response> = open
        .iter_mut()
        .map(|s| {
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            Response::parse(&raw)
        })
        .collect();
    let streamed = &answers[0];
    assert_eq!(streamed.status, 200);
    let events = sse_events(&streamed.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert!(
        names[3..names.len() - 1]
            .iter()
            .all(|&n| n == "content_block_delta"),
        "{names:?}"
    );
    let (last, error) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cut off"),
        "{error}"
    );
    let whole = &answers[1];
    assert_eq!(whole.status, 503, "{}", whole.body);
    let e = whole.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "overloaded_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{e}"
    );
}
