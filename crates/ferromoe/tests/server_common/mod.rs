//! A real `ferromoe serve` on a tiny model for the server tests: started on a free
//! port, its log captured, killed when dropped; plus a raw HTTP/1.1 client (so the
//! tests see exactly what goes over the wire) and a runner for the Python client tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MODEL_NAME: &str = "tiny";

/// The tiny model every server test serves (real 1000-token tokenizer, ChatML).
pub fn tiny_model() -> PathBuf {
    testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf")
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct Server {
    child: Child,
    /// "http://127.0.0.1:PORT"
    pub base: String,
    pub addr: String,
    log: Arc<Mutex<String>>,
    /// The `--api-key` it was started with ([`Server::health`] sends it).
    pub api_key: Option<String>,
    /// The GGUF file it serves (the Python tests tokenize with it).
    pub model: PathBuf,
}

impl Server {
    /// Starts `ferromoe serve` on the tiny model with `extra` arguments and waits until
    /// it listens.
    pub fn start(extra: &[&str]) -> Server {
        let mut args = vec!["-t", "1"];
        args.extend_from_slice(extra);
        Server::start_with(&tiny_model(), &args)
    }

    /// Starts `ferromoe serve` on `model` (named [`MODEL_NAME`]) with `extra` arguments.
    pub fn start_with(model: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferromoe"))
            .args([
                "serve",
                "-m",
                model.to_str().unwrap(),
                "--port",
                "0",
                "--model-name",
                MODEL_NAME,
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferromoe serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let addr: String = line[at + 20..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start:\n{}", log.lock().unwrap());
            }
        };
        let api_key = extra
            .iter()
            .position(|&a| a == "--api-key")
            .and_then(|i| extra.get(i + 1))
            .map(|k| k.to_string());
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            api_key,
            model: model.to_path_buf(),
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits for the exit status (at most `timeout`).
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// One HTTP/1.1 request (`Connection: close`); returns (status, headers, body) with a
    /// chunked body already decoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.request_to_host(&self.addr, method, path, headers, body)
    }

    /// [`Server::request`] naming `host` in the `Host` header.
    pub fn request_to_host(
        &self,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the response");
        Response::parse(&raw)
    }

    /// POST a JSON body with `Content-Type: application/json`.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// POST raw bytes as `Content-Type: application/json`.
    pub fn post_json_raw(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("Content-Type", "application/json")], body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// `/health` as JSON, with the counters (the server's API key sent when it has one).
    pub fn health(&self) -> serde_json::Value {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = self.request("GET", "/health", &headers, b"");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Runs `tests/python/<script>` with `--base URL` and more arguments; panics with its
    /// output if it fails. Returns its stdout.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let path = repo_dir().join("tests/python").join(script);
        let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(&path)
            .args([
                "--base",
                &self.base,
                "--ferromoe",
                env!("CARGO_BIN_EXE_ferromoe"),
                "--model-file",
            ])
            .arg(&self.model)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("python3 {}: {e}", path.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} failed (needs `pip install openai requests ollama`, which scripts/test.sh does)\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server log\n{}",
            self.log()
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut body = raw[split + 4..].to_vec();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Response {
            status,
            headers: head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}
