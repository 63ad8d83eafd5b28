//! `GET /metrics`: counters in Prometheus' text format (version 0.0.4) — requests by
//! route and status, tokens in and out, drafted and accepted tokens, prefill and decode
//! speed, the scheduler's queue and running sequences, KV-cache use and prefix-cache hits.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use engine::GenerationStats;

use crate::AppState;

/// What the server counts itself (the scheduler counts the rest).
#[derive(Default)]
pub(crate) struct Metrics {
    /// Answers by (route, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    generations: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// Prompt tokens processed (not cached) and the time that took, over all requests.
    prefill_tokens: AtomicU64,
    prefill_micros: AtomicU64,
    /// Tokens decoded after the first and the time that took (per sequence: batched
    /// sequences' times overlap).
    decode_tokens: AtomicU64,
    decode_micros: AtomicU64,
    /// Requests that reused a kept sequence's KV cache.
    prefix_hits: AtomicU64,
    /// Speculative decoding: tokens drafted, and of them confirmed.
    draft_tokens: AtomicU64,
    draft_accepted: AtomicU64,
}

/// The routes, as the label says them (a path that is none of them is "other", so a
/// scanner cannot make the label set grow).
const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/tokenize",
    "/detokenize",
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/version",
];

fn route_label(path: &str) -> &'static str {
    if let Some(r) = ROUTES.iter().find(|&&r| r == path) {
        return r;
    }
    match path.strip_prefix("/v1/models/") {
        Some(id) if !id.is_empty() && !id.contains('/') => "/v1/models/{id}",
        _ => "other",
    }
}

impl Metrics {
    /// One answer (its status as sent: a stream that fails later still counts 200).
    pub fn count_request(&self, path: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((route_label(path), status)).or_insert(0) += 1;
    }

    /// A generation that got a slot and found `cached` prompt tokens in the cache.
    pub fn count_start(&self, cached: usize) {
        if cached > 0 {
            self.prefix_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A generation that ended (cancelled ones too: their tokens were computed).
    pub fn count_done(&self, s: &GenerationStats) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        add(&self.generations, 1);
        add(&self.prompt_tokens, s.prompt_tokens as u64);
        add(&self.cached_tokens, s.cached_tokens as u64);
        add(&self.generated_tokens, s.generated_tokens as u64);
        add(
            &self.prefill_tokens,
            s.prompt_tokens.saturating_sub(s.cached_tokens) as u64,
        );
        add(&self.prefill_micros, (s.prefill_seconds * 1e6) as u64);
        add(
            &self.decode_tokens,
            s.generated_tokens.saturating_sub(1) as u64,
        );
        add(&self.decode_micros, (s.decode_seconds * 1e6) as u64);
        add(&self.draft_tokens, s.drafted_tokens as u64);
        add(&self.draft_accepted, s.accepted_tokens as u64);
    }
}

/// Writes one metric: its help, type and samples (`labels` without braces, or "").
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn one(value: f64) -> [(String, f64); 1] {
    [(String::new(), value)]
}

/// The text of `/metrics`.
pub(crate) fn render(st: &AppState) -> String {
    let m = &st.metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    let s = st.scheduler.status();
    let sc = st.scheduler.config();
    let mut out = String::new();
    let requests: Vec<(String, f64)> = m
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|((route, status), n)| (format!("route=\"{route}\",status=\"{status}\""), *n as f64))
        .collect();
    metric(
        &mut out,
        "ferromoe_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
        &requests,
    );
    metric(
        &mut out,
        "ferromoe_generations_total",
        "counter",
        "Generations that ran to their end, were stopped or were cancelled.",
        &one(get(&m.generations)),
    );
    metric(
        &mut out,
        "ferromoe_prompt_tokens_total",
        "counter",
        "Prompt tokens of generations (cached ones included).",
        &one(get(&m.prompt_tokens)),
    );
    metric(
        &mut out,
        "ferromoe_prompt_tokens_cached_total",
        "counter",
        "Prompt tokens found in the prefix cache (not processed again).",
        &one(get(&m.cached_tokens)),
    );
    metric(
        &mut out,
        "ferromoe_generated_tokens_total",
        "counter",
        "Tokens generated.",
        &one(get(&m.generated_tokens)),
    );
    metric(
        &mut out,
        "ferromoe_draft_tokens_total",
        "counter",
        "Speculative decoding: tokens drafted (prompt lookup or the MTP block).",
        &one(get(&m.draft_tokens)),
    );
    metric(
        &mut out,
        "ferromoe_draft_tokens_accepted_total",
        "counter",
        "Speculative decoding: drafted tokens the model confirmed (each one a forward pass saved).",
        &one(get(&m.draft_accepted)),
    );
    let prefill_secs = get(&m.prefill_micros) * 1e-6;
    let decode_secs = get(&m.decode_micros) * 1e-6;
    metric(
        &mut out,
        "ferromoe_prefill_seconds_total",
        "counter",
        "Time sequences spent processing their prompts.",
        &one(prefill_secs),
    );
    metric(
        &mut out,
        "ferromoe_decode_seconds_total",
        "counter",
        "Time sequences spent generating after their first token.",
        &one(decode_secs),
    );
    let rate = |tokens: f64, secs: f64| if secs > 0.0 { tokens / secs } else { 0.0 };
    metric(
        &mut out,
        "ferromoe_prefill_tokens_per_second",
        "gauge",
        "Prompt tokens processed per second of prefill, over all requests so far.",
        &one(rate(get(&m.prefill_tokens), prefill_secs)),
    );
    metric(
        &mut out,
        "ferromoe_decode_tokens_per_second",
        "gauge",
        "Tokens generated per second of decoding by one sequence, over all requests so far.",
        &one(rate(get(&m.decode_tokens), decode_secs)),
    );
    metric(
        &mut out,
        "ferromoe_requests_running",
        "gauge",
        "Sequences generating now.",
        &one(s.active as f64),
    );
    metric(
        &mut out,
        "ferromoe_requests_queued",
        "gauge",
        "Requests waiting for a free sequence.",
        &one(s.queued as f64),
    );
    metric(
        &mut out,
        "ferromoe_max_sequences",
        "gauge",
        "Sequences generated at once at most (--max-seqs).",
        &one(sc.max_seqs as f64),
    );
    metric(
        &mut out,
        "ferromoe_requests_cancelled_total",
        "counter",
        "Generations cancelled (client gone, or cut off at shutdown).",
        &one(s.cancelled as f64),
    );
    // Each running or kept sequence holds a cache of n_ctx positions.
    let per_seq = model::KvCache::bytes_for(
        &st.engine.model.config,
        st.engine.load.kv_types,
        st.config.n_ctx,
    )
    .unwrap_or(0);
    let holding = s.active + s.cached;
    metric(
        &mut out,
        "ferromoe_kv_cache_sequences",
        "gauge",
        "Sequences holding a KV cache (running and kept for prefix reuse).",
        &one(holding as f64),
    );
    metric(
        &mut out,
        "ferromoe_kv_cache_bytes",
        "gauge",
        "Bytes of KV cache those sequences hold.",
        &one((holding * per_seq) as f64),
    );
    metric(
        &mut out,
        "ferromoe_kv_cache_capacity_bytes",
        "gauge",
        "Bytes of KV cache when every running and kept slot is in use.",
        &one(((sc.max_seqs + sc.prefix_cache) * per_seq) as f64),
    );
    metric(
        &mut out,
        "ferromoe_prefix_cache_sequences",
        "gauge",
        "Finished sequences kept for prefix reuse.",
        &one(s.cached as f64),
    );
    metric(
        &mut out,
        "ferromoe_prefix_cache_hits_total",
        "counter",
        "Requests whose prompt started with a kept sequence's tokens.",
        &one(get(&m.prefix_hits)),
    );
    metric(
        &mut out,
        "ferromoe_prefix_cache_reused_tokens_total",
        "counter",
        "Prompt tokens not processed thanks to the prefix cache.",
        &one(s.reused_tokens as f64),
    );
    metric(
        &mut out,
        "ferromoe_forward_passes_total",
        "counter",
        "Batched forward passes run.",
        &one(s.steps as f64),
    );
    metric(
        &mut out,
        "ferromoe_forward_sequences_total",
        "counter",
        "Sequences in those passes (divided by the passes: the mean batch).",
        &one(s.batched_seqs as f64),
    );
    metric(
        &mut out,
        "ferromoe_forward_seconds_total",
        "counter",
        "Time spent in forward passes.",
        &one(s.forward_micros as f64 * 1e-6),
    );
    out
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&st),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(route_label("/v1/messages"), "/v1/messages");
        assert_eq!(route_label("/v1/models/tiny"), "/v1/models/{id}");
        assert_eq!(route_label("/v1/models/a/b"), "other");
        assert_eq!(route_label("/wp-admin"), "other");
    }

    #[test]
    fn a_metric_has_help_type_and_labelled_samples() {
        let mut out = String::new();
        metric(
            &mut out,
            "x_total",
            "counter",
            "X.",
            &[("a=\"1\"".into(), 2.0)],
        );
        metric(&mut out, "y", "gauge", "Y.", &one(0.5));
        assert_eq!(
            out,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\n\
             # HELP y Y.\n# TYPE y gauge\ny 0.5\n"
        );
    }
}
