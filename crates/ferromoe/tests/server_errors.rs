//! Bad inputs get the right status in the API's error shape, a client that disconnects
//! mid-stream cancels its sequence and frees its slot at once, a full server answers
//! 503 — and the server keeps serving after each; SIGTERM ends it cleanly (exit 0).

mod server_common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{Response, Server};

const KEY: &str = "sk-test-key";

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {KEY}"))
}

fn post(server: &Server, path: &str, content_type: &str, body: &[u8]) -> Response {
    let (k, v) = auth();
    server.request(
        "POST",
        path,
        &[("Content-Type", content_type), (k, &v)],
        body,
    )
}

fn post_json(server: &Server, path: &str, body: &Value) -> Response {
    post(
        server,
        path,
        "application/json",
        body.to_string().as_bytes(),
    )
}

/// An OpenAI-shaped error with this status; returns the error object.
fn openai_error(r: &Response, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    let e = r.json()["error"].clone();
    assert!(
        e["message"].is_string() && e["type"].is_string() && e.get("code").is_some(),
        "not OpenAI's shape: {}",
        r.body
    );
    e
}

/// A streamed request left open: returns the connection once the first SSE event came.
fn open_stream(server: &Server, body: &Value) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.to_string();
    let (k, v) = auth();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{k}: {v}\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "the stream ended before its first event"
        );
        if line.starts_with("HTTP/1.1 ") {
            assert!(line.contains(" 200 "), "{line}");
        }
        if line.contains("\"content\"") {
            return r;
        }
    }
}

fn healthy_chat(server: &Server) {
    let r = post_json(
        server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    );
    assert_eq!(r.status, 200, "the server must keep serving: {}", r.body);
    assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
}

fn long_request() -> Value {
    json!({"messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 1900, "temperature": 0,
           "ignore_eos": true, "stream": true})
}

#[test]
fn bad_inputs_disconnects_and_overload_then_still_serving() {
    let mut server = Server::start(&[
        "--max-seqs",
        "1",
        "--queue",
        "0",
        "--ctx",
        "2048",
        "--api-key",
        KEY,
        "--grace",
        "0.5",
    ]);
    let chat = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "Hello"}]);

    // Authentication (the page and /health stay open).
    let e = openai_error(&server.post_json(chat, &json!({"messages": msgs})), 401);
    assert_eq!(e["code"], "invalid_api_key");
    let r = server.request("POST", chat, &[("Authorization", "Bearer wrong")], b"{}");
    openai_error(&r, 401);
    let r = server.request("GET", "/api/tags", &[], b"");
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"].is_string(),
        "Ollama's error shape: {}",
        r.body
    );
    let (k, v) = auth();
    assert_eq!(
        server.request("GET", "/v1/models", &[(k, &v)], b"").status,
        200
    );
    assert_eq!(server.get("/health").status, 200);
    // CORS is off by default: another origin's preflight is refused, with no CORS
    // headers (server_hardening.rs tests --cors).
    let r = server.request(
        "OPTIONS",
        chat,
        &[
            ("Origin", "http://elsewhere"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    openai_error(&r, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    healthy_chat(&server);

    // Malformed JSON, missing messages, negative max_tokens, a field of the wrong type.
    let e = openai_error(
        &post(
            &server,
            chat,
            "application/json",
            b"{\"messages\": [{\"role\": \"user\"",
        ),
        400,
    );
    assert!(
        e["message"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );
    let e = openai_error(&post_json(&server, chat, &json!({"model": "tiny"})), 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("'messages' is required"),
        "{e}"
    );
    let e = openai_error(
        &post_json(&server, chat, &json!({"messages": msgs, "max_tokens": -1})),
        400,
    );
    assert!(e["message"].as_str().unwrap().contains("max_tokens"), "{e}");
    let e = openai_error(
        &post_json(
            &server,
            chat,
            &json!({"messages": msgs, "temperature": "hot"}),
        ),
        400,
    );
    assert!(
        e["message"].as_str().unwrap().contains("'temperature'"),
        "{e}"
    );
    let e = openai_error(
        &post_json(&server, chat, &json!({"messages": "hello"})),
        400,
    );
    assert!(e["message"].as_str().unwrap().contains("'messages'"), "{e}");
    openai_error(
        &post_json(&server, chat, &json!({"messages": msgs, "top_p": 7})),
        400,
    );
    openai_error(
        &post_json(&server, "/v1/completions", &json!({"max_tokens": 2})),
        400,
    );
    healthy_chat(&server);

    // A 1 MB prompt: longer than the context.
    let huge = "lorem ipsum dolor sit amet ".repeat(1 << 20 >> 4)[..1 << 20].to_string();
    let t = Instant::now();
    let e = openai_error(
        &post_json(
            &server,
            chat,
            &json!({"messages": [{"role": "user", "content": huge}]}),
        ),
        400,
    );
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
    println!("1 MB prompt rejected in {:.2}s", t.elapsed().as_secs_f64());
    let e = openai_error(
        &post_json(&server, "/v1/completions", &json!({"prompt": huge})),
        400,
    );
    assert_eq!(e["code"], "context_length_exceeded", "{e}");

    // Wrong content type, unknown model, unknown route.
    let e = openai_error(
        &post(
            &server,
            chat,
            "text/plain",
            json!({"messages": msgs}).to_string().as_bytes(),
        ),
        415,
    );
    assert!(
        e["message"].as_str().unwrap().contains("application/json"),
        "{e}"
    );
    let e = openai_error(
        &post_json(&server, chat, &json!({"model": "gpt-4o", "messages": msgs})),
        404,
    );
    assert_eq!(e["code"], "model_not_found");
    let r = server.request("GET", "/v1/nothing", &[(k, &v)], b"");
    openai_error(&r, 404);
    healthy_chat(&server);

    // The only slot busy and no queue: 503 in OpenAI's shape.
    let stream = open_stream(&server, &long_request());
    let e = openai_error(
        &post_json(&server, chat, &json!({"messages": msgs, "max_tokens": 2})),
        503,
    );
    assert_eq!(e["code"], "server_busy");
    assert_eq!(server.health()["active"], 1);

    // The client disconnects mid-stream: the sequence is cancelled and its slot freed
    // right away (long before its 1900 tokens would be done).
    let t = Instant::now();
    drop(stream);
    loop {
        let h = server.health();
        if h["active"] == 0 && h["cancelled"] == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the cancelled sequence still runs: {h}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "disconnect → slot freed in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        server.wait_log("finish=Cancelled", Duration::from_secs(2)),
        "{}",
        server.log()
    );
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("finish=Cancelled"))
        .unwrap();
    let out: usize = line
        .split("out=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(out < 1900, "{line}");
    healthy_chat(&server);

    // The same for a client that gives up waiting for a non-streamed answer.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let body = json!({"prompt": "Count.", "max_tokens": 1900, "ignore_eos": true}).to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{k}: {v}\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let t = Instant::now();
    while server.health()["active"] != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the request never started"
        );
    }
    drop(s);
    let t = Instant::now();
    while !(server.health()["active"] == 0 && server.health()["cancelled"] == 2) {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the abandoned request still runs: {}",
            server.health()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    healthy_chat(&server);

    // SIGTERM during a request: it is finished or cancelled within the grace time, the
    // stream ends properly, and the server exits 0.
    let mut stream = open_stream(&server, &long_request());
    let status = server
        .signal_and_wait("TERM", Duration::from_secs(10))
        .expect("the server did not exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut rest);
    assert!(
        rest.contains("data: [DONE]"),
        "the stream must end cleanly: ...{}",
        &rest[rest.len().saturating_sub(300)..]
    );
    assert!(
        server.wait_log("SIGTERM", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    assert!(
        TcpStream::connect(&server.addr).is_err(),
        "still listening after exit"
    );
}
