//! `ferromoe serve`: an HTTP server that OpenAI, Ollama and Anthropic clients accept.
//!
//! - OpenAI: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`
//!   (JSON or SSE streaming), errors as `{"error":{"message","type","code"}}`.
//! - Ollama: `POST /api/chat`, `POST /api/generate` (NDJSON streaming by default),
//!   `GET /api/tags`, `GET /api/ps`, `POST /api/show`, `GET /api/version`.
//! - Anthropic: `POST /v1/messages` (JSON or SSE events), `POST /v1/messages/count_tokens`,
//!   errors as `{"type":"error","error":{"type","message"}}`.
//! - llama-server's `POST /tokenize` and `POST /detokenize`.
//! - `GET /`: a self-contained web chat page; `GET /health`: up or not (and counters);
//!   `GET /metrics`: Prometheus text format (needs the key when one is set).
//!
//! Every request runs on the [`engine::scheduler::Scheduler`]: concurrent requests are
//! batched into one forward pass per step, and a prompt that extends a finished
//! sequence (the next turn of a chat) reuses its KV cache. One access-log line per
//! request goes to `tracing` (target `access`), with token counts for generations.
//!
//! ```no_run
//! # async fn demo(engine: std::sync::Arc<engine::Engine>) -> std::io::Result<()> {
//! let config = server::ServerConfig::new("my-model", 4096);
//! let state = server::AppState::new(engine, config, 4);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let grace = std::time::Duration::from_secs(10);
//! server::serve(listener, state, std::future::pending(), grace).await
//! # }
//! ```

mod anthropic;
mod digest;
mod error;
mod gen;
mod listen;
mod logprobs;
mod metrics;
mod ollama;
mod openai;
mod origin;
mod page;
mod structured;
mod tokenize;
mod tools;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::scheduler::{Scheduler, SchedulerConfig};
use engine::Engine;
use serde::de::DeserializeOwned;

pub use error::{ApiError, Flavor};
pub use listen::serve;
pub use tools::ReasoningFormat;

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 2 << 20;

/// What the server says about itself and enforces.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The name clients use for the model (`model` field, `/v1/models`, `/api/tags`).
    pub model_name: String,
    /// Required as `Authorization: Bearer KEY` (or `x-api-key: KEY`) on `/v1/*`,
    /// `/api/*`, `/metrics`, `/tokenize` and `/detokenize` when set.
    pub api_key: Option<String>,
    /// Context size of each sequence.
    pub n_ctx: usize,
    /// Requests waiting beyond the running ones before 503 (None: 4 × max_seqs).
    pub queue: Option<usize>,
    /// Finished sequences kept for prefix reuse (None: as many as `max_seqs`).
    pub prefix_cache: Option<usize>,
    /// Size of the model file in bytes (for `/api/tags`).
    pub file_size: u64,
    /// Special-token text in message contents is read as control tokens (the old,
    /// unsafe behaviour: a user's `<|im_end|>` can forge a turn); off by default.
    pub special_in_content: bool,
    /// What happens to a model's reasoning (`--reasoning-format`): separated into
    /// `reasoning_content` / `thinking` (default), or left in the content.
    pub reasoning_format: ReasoningFormat,
    /// Origins whose pages may call the API (`--cors`; `*`: any). Empty: none but the
    /// server's own page.
    pub cors: Vec<String>,
    /// Names the `Host` header may carry besides the listen address, loopback names and
    /// IP addresses (`--allowed-hosts`; `*`: any).
    pub allowed_hosts: Vec<String>,
    /// The address the server listens on (a `Host` naming it is accepted).
    pub listen_host: String,
    /// A request's headers must arrive within this (else the connection is closed).
    pub header_timeout: std::time::Duration,
    /// A request's body must arrive within this (else 408).
    pub body_timeout: std::time::Duration,
    /// Speculative decoding of every request (`--spec-type`, `--draft-max`, `--draft-min`).
    pub speculation: engine::Speculation,
}

impl ServerConfig {
    /// A config with no API key.
    pub fn new(model_name: impl Into<String>, n_ctx: usize) -> ServerConfig {
        ServerConfig {
            model_name: model_name.into(),
            api_key: None,
            n_ctx,
            queue: None,
            prefix_cache: None,
            file_size: 0,
            special_in_content: false,
            reasoning_format: ReasoningFormat::DeepSeek,
            cors: Vec::new(),
            allowed_hosts: Vec::new(),
            listen_host: "127.0.0.1".into(),
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(60),
            speculation: engine::Speculation::default(),
        }
    }
}

/// Everything a handler needs: the engine, its scheduler and the config.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub scheduler: Scheduler,
    pub config: ServerConfig,
    /// Unix time the server started (OpenAI's `created` of the model).
    pub started: u64,
    /// Counters for `/metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The model file's SHA-256 (Ollama's `digest`), computed when first asked for.
    pub(crate) digest: digest::FileDigest,
}

impl AppState {
    /// Starts a scheduler running up to `max_seqs` sequences at once.
    pub fn new(engine: Arc<Engine>, config: ServerConfig, max_seqs: usize) -> Arc<AppState> {
        let mut sc = SchedulerConfig::new(max_seqs, config.n_ctx);
        if let Some(q) = config.queue {
            sc.queue = q;
        }
        if let Some(c) = config.prefix_cache {
            sc.prefix_cache = c;
        }
        sc.speculation = config.speculation;
        let scheduler = Scheduler::start(engine.clone(), sc);
        let paths = engine
            .model
            .file
            .parts()
            .iter()
            .map(|p| std::path::PathBuf::from(p.name()))
            .collect();
        Arc::new(AppState {
            digest: digest::FileDigest::new(paths),
            engine,
            scheduler,
            config,
            started: unix_now(),
            metrics: Arc::default(),
        })
    }

    /// The model's name as Ollama lists it: with a tag (`NAME:latest` unless the name
    /// has one).
    pub fn ollama_name(&self) -> String {
        let name = &self.config.model_name;
        if name.contains(':') {
            name.clone()
        } else {
            format!("{name}:latest")
        }
    }

    /// Accepts a request's `model` when it names this server's model (or is empty);
    /// Ollama-style `NAME:latest` is the same model.
    pub fn check_model(&self, asked: Option<&str>, flavor: Flavor) -> Result<(), ApiError> {
        let served = &self.config.model_name;
        match asked {
            None | Some("") => Ok(()),
            Some(m) if m == served || m.strip_suffix(":latest") == Some(served) => Ok(()),
            Some(m) => Err(ApiError::unknown_model(m, served).with_flavor(flavor)),
        }
    }
}

/// The routes, with authentication and the access log around them.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/", get(page::index))
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/version", get(ollama::version))
        .fallback(no_route)
        .with_state(state.clone());
    // The middleware wraps the whole router (not each route), so it sees the final
    // response of every request, a 405's `Allow` header included.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(state, access_and_auth))
}

/// `GET /health`: needs no key, so with a key set it says only that the server is up;
/// the model's name and the counters are for those who send the key.
async fn health(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Json<serde_json::Value> {
    if let Some(key) = &st.config.api_key {
        if !authorized(&headers, key) {
            return Json(serde_json::json!({"status": "ok"}));
        }
    }
    let s = st.scheduler.status();
    Json(serde_json::json!({
        "status": "ok",
        "model": st.config.model_name,
        "n_ctx": st.config.n_ctx,
        "max_seqs": st.scheduler.config().max_seqs,
        "active": s.active,
        "queued": s.queued,
        "cached": s.cached,
        "completed": s.completed,
        "cancelled": s.cancelled,
        "reused_tokens": s.reused_tokens,
        "steps": s.steps,
        "batched_seqs": s.batched_seqs,
        "forward_seconds": s.forward_micros as f64 * 1e-6,
    }))
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path()).with_flavor(ApiError::flavor_of(uri.path()))
}

/// Every error is JSON in its API's shape: an error that the HTTP layer answered
/// itself (405 with an empty body, 413 or an extractor's 400 as text) is rewritten,
/// keeping its status and headers such as `Allow`.
async fn json_error_body(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(axum::http::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("method {method} is not allowed on {path} (allowed: {allowed})")
    } else {
        text
    };
    let mut r = ApiError::from_status(status, message)
        .with_flavor(ApiError::flavor_of(path))
        .into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            r.headers_mut().insert(name.clone(), value.clone());
        }
    }
    r
}

/// Set by the middleware on every request: a generation handler takes over the access
/// log line (written when the generation ends, with token counts).
#[derive(Clone)]
pub(crate) struct AccessLog {
    pub method: Method,
    pub path: String,
    pub start: Instant,
    deferred: Arc<AtomicBool>,
}

impl AccessLog {
    /// The handler will write the line itself.
    pub fn defer(&self) {
        self.deferred.store(true, Ordering::SeqCst);
    }

    /// The line of a generation.
    pub fn generation(&self, status: u16, stats: &engine::GenerationStats) {
        tracing::info!(
            target: "access",
            "{} {} {} in={} cached={} out={} finish={:?} {:.3}s",
            self.method,
            self.path,
            status,
            stats.prompt_tokens,
            stats.cached_tokens,
            stats.generated_tokens,
            stats.finish,
            self.start.elapsed().as_secs_f64()
        );
    }
}

async fn access_and_auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let log = AccessLog {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        start: Instant::now(),
        deferred: Arc::new(AtomicBool::new(false)),
    };
    let protected = log.path.starts_with("/v1/")
        || log.path.starts_with("/api/")
        || ["/metrics", "/tokenize", "/detokenize"].contains(&log.path.as_str());
    let flavor = ApiError::flavor_of(&log.path);
    let cfg = &st.config;
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let origin = origin::check_origin(req.headers(), &cfg.cors);
    let response = match (&host, &origin, &cfg.api_key) {
        // A request without `Host` is not from a browser (they always send it).
        (Some(h), _, _) if !origin::host_allowed(h, &cfg.listen_host, &cfg.allowed_hosts) => {
            ApiError::forbidden(format!(
                "Host '{h}' does not name this server; start it with --allowed-hosts NAME to \
                 accept other names"
            ))
            .with_flavor(flavor)
            .into_response()
        }
        (_, origin::OriginCheck::Refused(o), _) => ApiError::forbidden(format!(
            "cross-origin requests from '{o}' are not allowed; start the server with --cors {o} \
             to allow them"
        ))
        .with_flavor(flavor)
        .into_response(),
        // CORS preflight (browser clients on allowed origins): never carries the key.
        _ if req.method() == Method::OPTIONS => cors_preflight(&origin),
        (_, _, Some(key)) if protected && !authorized(req.headers(), key) => {
            ApiError::unauthorized().with_flavor(flavor).into_response()
        }
        _ => match read_body(req, cfg.body_timeout, flavor).await {
            Ok(mut req) => {
                req.extensions_mut().insert(log.clone());
                next.run(req).await
            }
            Err(refused) => refused,
        },
    };
    let mut response = json_error_body(response, &log.method, &log.path).await;
    st.metrics
        .count_request(&log.path, response.status().as_u16());
    if let origin::OriginCheck::Allowed(o) = &origin {
        if let Ok(v) = HeaderValue::from_str(o) {
            response
                .headers_mut()
                .insert("access-control-allow-origin", v);
        }
    }
    if !cfg.cors.is_empty() {
        // The answer depends on the Origin: caches must not hand it to another page.
        response
            .headers_mut()
            .insert("vary", HeaderValue::from_static("Origin"));
    }
    if !log.deferred.load(Ordering::SeqCst) || !response.status().is_success() {
        tracing::info!(
            target: "access",
            "{} {} {} {:.3}s",
            log.method,
            log.path,
            response.status().as_u16(),
            log.start.elapsed().as_secs_f64()
        );
    }
    response
}

/// 204 to a preflight: an origin allowed by `--cors` may call the API with JSON and a
/// key; for any other the answer carries no CORS headers (the browser refuses).
fn cors_preflight(origin: &origin::OriginCheck) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let origin::OriginCheck::Allowed(_) = origin {
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static(
                "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, \
                 anthropic-dangerous-direct-browser-access",
            ),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    }
    r
}

/// Reads the whole body within `timeout` (a client that sends its headers and then
/// stalls must not hold a connection and a task forever): 408 when it does not arrive
/// in time (and the connection is closed: what is left of the body is not waited
/// for), 413 beyond [`BODY_LIMIT`], 400 when the client breaks off.
async fn read_body(
    req: Request,
    timeout: std::time::Duration,
    flavor: Flavor,
) -> Result<Request, Response> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let refuse = |e: ApiError| e.with_flavor(flavor).into_response();
    let too_large = || {
        ApiError::from_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {BODY_LIMIT} bytes"),
        )
    };
    // A body declared too large is read up to the limit all the same (as one that
    // turns out too large): a client still writing it would get a broken pipe, not
    // the answer, if the connection were closed now.
    let limited = http_body_util::Limited::new(body, BODY_LIMIT);
    let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => {
            let mut r = refuse(ApiError::from_status(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            ));
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
            return Err(r);
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refuse(too_large()))
        }
        Ok(Err(e)) => {
            return Err(refuse(ApiError::bad_request(format!(
                "reading the request body: {e}"
            ))))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    // RFC 9110: the scheme name is case-insensitive ("bearer KEY" is as good).
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key);
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer.map(str::trim) == Some(key) || x_api_key == Some(key)
}

/// Parses a JSON body: 415 for another content type (OpenAI and Anthropic routes;
/// Ollama's clients often send none or a form type), 400 naming the problem and where
/// it is.
pub(crate) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    flavor: Flavor,
) -> Result<T, ApiError> {
    if flavor != Flavor::Ollama {
        if let Some(ct) = headers.get("content-type") {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::unsupported_media(ct).with_flavor(flavor));
            }
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("malformed JSON body: {inner}")
            }
            _ if path == "." => format!("invalid request body: {inner}"),
            _ => format!("invalid value for '{path}': {inner}"),
        };
        ApiError::bad_request(msg).with_flavor(flavor)
    })?;
    // Bytes after the JSON value (only whitespace may follow) make the body malformed.
    de.end().map_err(|e| {
        ApiError::bad_request(format!("malformed JSON body: {e}")).with_flavor(flavor)
    })?;
    Ok(value)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 200 with a JSON body.
pub(crate) fn json_ok(v: serde_json::Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

/// How [`run`] listens and shuts down.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub host: String,
    /// 0 = any free port (the log line says which).
    pub port: u16,
    /// Sequences generated at once.
    pub max_seqs: usize,
    /// After SIGINT/SIGTERM, how long running requests may go on before they are
    /// cancelled.
    pub grace: std::time::Duration,
}

/// Sends `tracing` output (the access log) to stderr, at `info` unless `RUST_LOG` says
/// otherwise.
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Serves until SIGINT/SIGTERM: then stops accepting, lets running requests finish for
/// `grace`, cancels what is left and returns.
pub fn run(engine: Arc<Engine>, config: ServerConfig, options: &RunOptions) -> std::io::Result<()> {
    let name = config.model_name.clone();
    let n_ctx = config.n_ctx;
    let keyed = config.api_key.is_some();
    let state = AppState::new(engine, config, options.max_seqs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}:{}: {e}", options.host, options.port)))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            "listening on http://{addr} · model '{name}' · {} sequences × {n_ctx} tokens{} · chat page at /, OpenAI API at /v1, Ollama API at /api, Anthropic API at /v1/messages",
            options.max_seqs,
            if keyed { " · API key required" } else { "" }
        );
        let grace = options.grace;
        let shutdown = async move {
            let signal = wait_for_signal().await;
            tracing::info!(
                "{signal}: finishing in-flight requests (at most {:.0}s), then exiting",
                grace.as_secs_f64()
            );
        };
        serve(listener, state.clone(), shutdown, grace).await
    })?;
    state.scheduler.cancel_all();
    // Connections still open (a stalled upload) are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    tracing::info!("server stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; says which.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
