//! `ferromoe serve`: loads the model once and serves the OpenAI and Ollama APIs and a
//! web chat page until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::load::ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require this key as `Authorization: Bearer KEY` on /v1 and /api.
    #[arg(long)]
    api_key: Option<String>,
    /// Sequences generated at once (continuous batching).
    #[arg(long, default_value_t = 4)]
    max_seqs: usize,
    /// Requests waiting for a free sequence before the server answers 503
    /// (default: 4 × --max-seqs).
    #[arg(long)]
    queue: Option<usize>,
    /// Finished conversations kept for prefix reuse (default: --max-seqs; 0 = off).
    #[arg(long)]
    prefix_cache: Option<usize>,
    /// Context size of each sequence (default: the model's, capped at 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// The model name clients see and send (default: the file name without .gguf).
    #[arg(long)]
    model_name: Option<String>,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM before they are
    /// cancelled.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Read special-token text in chat message contents (e.g. `<|im_end|>`) as control
    /// tokens, as llama.cpp does. Off: contents are plain text, so a user cannot forge
    /// turns or system messages.
    #[arg(long)]
    special_in_content: bool,
    /// What happens to a model's reasoning (`<think>…</think>`, gpt-oss's analysis
    /// channel): `deepseek` separates it into `reasoning_content` (OpenAI) and `thinking`
    /// (Ollama); `none` leaves it in the content as written.
    #[arg(long, default_value = "deepseek", value_parser = ["none", "deepseek"])]
    reasoning_format: String,
    /// Use this Jinja chat template instead of the file's own (llama-server's flag): its
    /// tool-call and reasoning markers decide how replies are parsed.
    #[arg(long, value_name = "FILE")]
    chat_template_file: Option<std::path::PathBuf>,
    /// Let web pages from these origins call the API (e.g. `--cors
    /// https://app.example`; `*`: any). Default: only the server's own chat page.
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "ORIGIN")]
    cors: Vec<String>,
    /// Accept these names in the `Host` header besides the listen address, localhost
    /// and IP addresses (`*`: any). Refusing other names stops DNS-rebinding pages.
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Seconds a client has to send a request's body once its headers are in (408
    /// after); llama-server's flag name.
    #[arg(
        long,
        visible_alias = "read-timeout",
        default_value_t = 60.0,
        value_name = "SECS"
    )]
    timeout: f64,
    /// Seconds a client has to send a request's headers (the connection is closed
    /// after; also how long an idle keep-alive connection stays open).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    timeout_header: f64,
    #[command(flatten)]
    spec: super::run::SpecArgs,
}

/// A positive, finite number of seconds.
fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        anyhow::bail!("{flag} must be a positive number of seconds, got {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The access log and server messages go to stderr; RUST_LOG overrides the level.
    server::init_logging();
    args.spec.speculation()?;
    // Up to max_seqs running and prefix_cache kept sequences hold a cache each: the
    // memory plan reserves them all.
    let kept = args.prefix_cache.unwrap_or(args.max_seqs);
    let kv = engine::KvReservation {
        ctx: args.ctx,
        default_max: 4096,
        caches: args.max_seqs.saturating_add(kept),
        types: args.model.kv_types(),
    };
    let mut engine = super::load::load(&args.model, false, false, kv, args.spec.wants_mtp())?;
    if engine.tokenizer.is_none() {
        anyhow::bail!(
            "{}: the file has no tokenizer; the server needs one",
            args.model.model.display()
        );
    }
    super::load::replace_template(&mut engine, args.chat_template_file.as_deref())?;
    let n_ctx = engine.load.kv_ctx;
    // Every sequence gets a cache of n_ctx positions: a size that cannot be allocated is
    // refused here, with its message, rather than on the first request. Up to max_seqs
    // running and prefix_cache kept sequences hold one each (the OS supplies the pages as
    // they are written, so this is the worst case; cgroup limits are not seen).
    let model_config = &engine.model.config;
    let kv_types = engine.load.kv_types;
    model::KvCache::check_size(model_config, kv_types, n_ctx, 1)?;
    model::KvCache::check_size(model_config, kv_types, n_ctx, args.max_seqs + kept).map_err(
        |e| {
            anyhow::anyhow!(
                "{e}, or fewer sequences (--max-seqs {} running + --prefix-cache {kept} kept)",
                args.max_seqs
            )
        },
    )?;
    let split_set = engine.model.file.parts().len() > 1;
    let name = args.model_name.clone().unwrap_or_else(|| {
        let stem = args
            .model
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let stem = stem.unwrap_or_else(|| "model".into());
        if split_set {
            set_name(&stem).to_string()
        } else {
            stem
        }
    });
    let config = server::ServerConfig {
        model_name: name,
        api_key: args.api_key.clone(),
        n_ctx,
        queue: args.queue,
        prefix_cache: args.prefix_cache,
        // All parts of a split set.
        file_size: engine.model.file.file_size(),
        special_in_content: args.special_in_content,
        reasoning_format: server::ReasoningFormat::parse(&args.reasoning_format)
            .unwrap_or_default(),
        cors: args.cors.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        listen_host: args.host.clone(),
        header_timeout: seconds("--timeout-header", args.timeout_header)?,
        body_timeout: seconds("--timeout", args.timeout)?,
        speculation: args.spec.for_engine(&engine)?,
    };
    let options = server::RunOptions {
        host: args.host.clone(),
        port: args.port,
        max_seqs: args.max_seqs,
        grace: Duration::from_secs_f64(args.grace.max(0.0)),
    };
    server::run(Arc::new(engine), config, &options)?;
    Ok(())
}

/// The name of a split set from one part's file stem: `m-00001-of-00003` → `m` (a stem not
/// named like a part is kept as it is).
fn set_name(stem: &str) -> &str {
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    match stem.rsplit_once("-of-") {
        Some((head, count)) if digits(count) => match head.rsplit_once('-') {
            Some((name, no)) if digits(no) && !name.is_empty() => name,
            _ => stem,
        },
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::set_name;

    #[test]
    fn a_split_sets_name_drops_the_part_number() {
        assert_eq!(
            set_name("DeepSeek-R1-Q4_K_M-00001-of-00009"),
            "DeepSeek-R1-Q4_K_M"
        );
        assert_eq!(set_name("m-00003-of-00003"), "m");
        for kept in [
            "m",
            "m-of-00003",
            "m-1-of-00003",
            "-00001-of-00003",
            "m-00001-of-3",
        ] {
            assert_eq!(set_name(kept), kept);
        }
    }
}
