//! `ferromoe chat`: an interactive multi-turn chat in the terminal, like KTransformers'
//! local_chat. The conversation stays in the KV cache: each turn re-renders the whole
//! conversation with the model's template and only the new tokens are processed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::{ChatMessage, FinishReason, GenerateRequest};
use text::{ParseOptions, ReplyFormat, ReplyParser, ReplyPart};

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
    #[command(flatten)]
    spec: super::run::SpecArgs,
    /// Keep generating past end-of-generation tokens (for benchmarks and tests).
    #[arg(long)]
    ignore_eos: bool,
    /// Do not show the model's reasoning (`<think>…</think>`, gpt-oss's analysis
    /// channel); by default it is shown dimmed on a terminal.
    #[arg(long)]
    hide_thinking: bool,
    /// Use this Jinja chat template instead of the file's own.
    #[arg(long, value_name = "FILE")]
    chat_template_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let kv = engine::KvReservation {
        ctx: args.ctx,
        default_max: 8192,
        caches: 1,
        types: args.model.kv_types(),
    };
    let mut engine = super::load::load(&args.model, false, false, kv, args.spec.wants_mtp())?;
    super::load::replace_template(&mut engine, args.chat_template_file.as_deref())?;
    let speculation = args.spec.for_engine(&engine)?;
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
    // Reasoning is shown apart from the answer where the template's format has it.
    let format = if template.is_fallback() {
        ReplyFormat::detect("")
    } else {
        ReplyFormat::detect(template.source())
    };
    let keep_special: Vec<u32> = if format.has_reasoning() {
        format
            .markers()
            .into_iter()
            .filter_map(|m| tok.token_id(m))
            .filter(|&id| tok.is_special(id) && !tok.is_eog(id))
            .collect()
    } else {
        Vec::new()
    };
    let dim = std::io::stdout().is_terminal();
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
        let rendered = template.render(&history, true)?;
        let prompt = tok.encode(&rendered, false)?;
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
            keep_special: keep_special.clone(),
            speculation: Some(speculation),
            ..Default::default()
        };
        let mut parser = format.has_reasoning().then(|| {
            let opts = ParseOptions {
                reasoning: true,
                tools: false,
                starts_in_thinking: format.prompt_opens_thinking(&rendered),
            };
            ReplyParser::new(format, opts)
        });
        let mut answer = Answer {
            hide_thinking: args.hide_thinking,
            dim,
            ..Answer::default()
        };
        let mut out = std::io::stdout().lock();
        let flag = interrupted.clone();
        let mut parts = Vec::new();
        let stats = engine.generate(&mut seq, &prompt, &req, &mut |piece| {
            match parser.as_mut() {
                Some(p) => {
                    p.push(piece, &mut parts);
                    answer.show(parts.drain(..), &mut out);
                }
                None => answer.show([ReplyPart::Content(piece.to_string())], &mut out),
            }
            !flag.load(Ordering::SeqCst)
        })?;
        if let Some(p) = parser.as_mut() {
            p.finish(&mut parts);
            answer.show(parts.drain(..), &mut out);
        }
        answer.end(&mut out);
        drop(out);
        println!();
        let how = match stats.finish {
            FinishReason::Cancelled => " (stopped)",
            FinishReason::Length => " (length limit)",
            FinishReason::Stop => "",
        };
        let drafts = match stats.acceptance() {
            Some(a) => format!(
                " · {:.0}% of {} drafted tokens accepted",
                100.0 * a,
                stats.drafted_tokens
            ),
            None => String::new(),
        };
        eprintln!(
            "[prefill {} tokens ({} cached) at {:.1} tok/s · decode {} tokens at {:.1} tok/s{drafts}{how}]",
            stats.prompt_tokens - stats.cached_tokens,
            stats.cached_tokens,
            stats.prefill_tps(),
            stats.generated_tokens,
            stats.decode_tps()
        );
        history.push(ChatMessage {
            reasoning: (!answer.reasoning.is_empty()).then_some(answer.reasoning),
            ..ChatMessage::assistant(answer.content)
        });
    }
    Ok(())
}

/// An answer being printed: the reasoning dimmed (ANSI on a terminal) or hidden, the
/// content as it is.
#[derive(Default)]
struct Answer {
    hide_thinking: bool,
    dim: bool,
    /// Inside the dimmed reasoning (the reset is still to be written).
    dimmed: bool,
    content: String,
    reasoning: String,
}

impl Answer {
    fn show(&mut self, parts: impl IntoIterator<Item = ReplyPart>, out: &mut impl Write) {
        for part in parts {
            match part {
                ReplyPart::Reasoning(t) => {
                    self.reasoning.push_str(&t);
                    if self.hide_thinking {
                        continue;
                    }
                    if self.dim && !self.dimmed {
                        let _ = out.write_all(b"\x1b[2m");
                        self.dimmed = true;
                    }
                    let _ = out.write_all(t.as_bytes());
                }
                ReplyPart::Content(t) => {
                    if !self.reasoning.is_empty() && self.content.is_empty() {
                        self.end_reasoning(out);
                    }
                    self.content.push_str(&t);
                    let _ = out.write_all(t.as_bytes());
                }
                // Not asked for (tools are not offered in the terminal chat).
                ReplyPart::ToolCall(_) => {}
            }
        }
        let _ = out.flush();
    }

    /// Closes the reasoning: the dim reset, and a blank line before the answer.
    fn end_reasoning(&mut self, out: &mut impl Write) {
        if self.dimmed {
            let _ = out.write_all(b"\x1b[0m");
            self.dimmed = false;
        }
        if !self.hide_thinking {
            let _ = out.write_all(b"\n\n");
        }
    }

    fn end(&mut self, out: &mut impl Write) {
        if self.dimmed {
            let _ = out.write_all(b"\x1b[0m");
            self.dimmed = false;
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(hide_thinking: bool, dim: bool, parts: &[ReplyPart]) -> (String, Answer) {
        let mut a = Answer {
            hide_thinking,
            dim,
            ..Answer::default()
        };
        let mut out = Vec::new();
        for p in parts {
            a.show([p.clone()], &mut out);
        }
        a.end(&mut out);
        (String::from_utf8(out).unwrap(), a)
    }

    #[test]
    fn reasoning_is_dimmed_plain_or_hidden_and_kept_apart() {
        let parts = [
            ReplyPart::Reasoning("Let me".into()),
            ReplyPart::Reasoning(" think.".into()),
            ReplyPart::Content("Hi".into()),
            ReplyPart::Content("!".into()),
        ];
        let (out, a) = shown(false, true, &parts);
        assert_eq!(out, "\x1b[2mLet me think.\x1b[0m\n\nHi!");
        assert_eq!(
            (a.reasoning.as_str(), a.content.as_str()),
            ("Let me think.", "Hi!")
        );
        assert_eq!(shown(false, false, &parts).0, "Let me think.\n\nHi!");
        assert_eq!(shown(true, true, &parts).0, "Hi!");
        // Cut off while thinking: the dim is reset all the same.
        assert_eq!(shown(false, true, &parts[..1]).0, "\x1b[2mLet me\x1b[0m");
        assert_eq!(shown(false, true, &parts[2..]).0, "Hi!");
    }
}
