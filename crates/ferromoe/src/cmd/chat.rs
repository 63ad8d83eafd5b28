//! `ferromoe chat`: an interactive multi-turn chat in the terminal, like KTransformers'
//! local_chat. The conversation stays in the KV cache: each turn re-renders the whole
//! conversation with the model's template and only the new tokens are processed.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::{ChatMessage, FinishReason, GenerateRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::load::ModelArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Read the first user message from this file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Tokens per answer at most.
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
    /// Context size in tokens (default: the model's, capped at 8192).
    #[arg(long)]
    ctx: Option<usize>,
    #[command(flatten)]
    sampling: super::run::SamplingArgs,
    /// Keep generating past end-of-generation tokens (for benchmarks and tests).
    #[arg(long)]
    ignore_eos: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kv = engine::KvReservation {
        ctx: args.ctx,
        default_max: 8192,
        caches: 1,
    };
    let engine = super::load::load(&args.model, false, false, kv)?;
    let tok = engine
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the file has no tokenizer"))?;
    let template = engine
        .template
        .as_ref()
        .expect("a tokenizer implies a template");
    if template.is_fallback() {
        eprintln!("note: the file has no chat template; using ChatML");
    }
    let mut seq = engine.sequence(engine.load.kv_ctx)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    }

    let mut history: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::system(s.clone()))
        .collect();
    let mut first = match &args.prompt_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    eprintln!(
        "chat with {} — /clear starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer",
        args.model.model.display()
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut seed_offset = 0u64;
    loop {
        let user = match first.take() {
            Some(text) => {
                println!("> {}", text.trim_end());
                text
            }
            None => {
                print!("> ");
                std::io::stdout().flush()?;
                match lines.next() {
                    Some(line) => line?,
                    None => break,
                }
            }
        };
        interrupted.store(false, Ordering::SeqCst);
        match user.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                history.truncate(usize::from(args.system.is_some()));
                seq.truncate(0);
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(user));
        let prompt = tok.encode(&template.render(&history, true)?, false)?;
        if prompt.len() + 1 >= seq.kv.n_ctx() {
            eprintln!(
                "(the conversation no longer fits in the {}-token context; /clear to start over)",
                seq.kv.n_ctx()
            );
            history.pop();
            continue;
        }
        let mut sampling = args.sampling.params();
        sampling.seed = sampling.seed.wrapping_add(seed_offset);
        seed_offset += 1;
        let req = GenerateRequest {
            max_new_tokens: args.max_new_tokens.min(seq.kv.n_ctx() - prompt.len()),
            sampling,
            stop: vec![],
            ignore_eos: args.ignore_eos,
            ..Default::default()
        };
        let mut answer = String::new();
        let mut out = std::io::stdout().lock();
        let flag = interrupted.clone();
        let stats = engine.generate(&mut seq, &prompt, &req, &mut |piece| {
            answer.push_str(piece);
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            !flag.load(Ordering::SeqCst)
        })?;
        drop(out);
        println!();
        let how = match stats.finish {
            FinishReason::Cancelled => " (stopped)",
            FinishReason::Length => " (length limit)",
            FinishReason::Stop => "",
        };
        eprintln!(
            "[prefill {} tokens ({} cached) at {:.1} tok/s · decode {} tokens at {:.1} tok/s{how}]",
            stats.prompt_tokens - stats.cached_tokens,
            stats.cached_tokens,
            stats.prefill_tps(),
            stats.generated_tokens,
            stats.decode_tps()
        );
        history.push(ChatMessage::assistant(answer));
    }
    Ok(())
}
