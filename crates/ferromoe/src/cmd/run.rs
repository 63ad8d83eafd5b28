//! `ferromoe run`: one prompt, the continuation streamed to stdout.

use std::io::Write;

use engine::{ChatMessage, GenerateRequest};

/// Sampling options shared by `run` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the best one.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last 64 (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed (default: a fresh one each run).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> engine::SamplingParams {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        engine::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed,
            ..Default::default()
        }
    }
}

/// Speculative decoding options shared by `run`, `chat` and `serve` (llama.cpp's names).
#[derive(clap::Args, Clone, Debug)]
pub struct SpecArgs {
    /// Speculative decoding: `ngram` (prompt lookup: drafts copied from the context),
    /// `mtp` (the model's own next-token-prediction layer: DeepSeek-V3.2, GLM-4.5) or
    /// `off`. Drafts are verified in one forward pass: lossless.
    #[arg(long = "spec-type", default_value = "ngram")]
    pub spec_type: engine::SpecType,
    /// Most tokens drafted per step (the length follows the acceptance rate).
    #[arg(long, default_value_t = engine::speculate::DRAFT_MAX)]
    pub draft_max: usize,
    /// Fewer drafted tokens than this are not verified.
    #[arg(long, default_value_t = 1)]
    pub draft_min: usize,
}

impl SpecArgs {
    /// The settings, checked.
    pub fn speculation(&self) -> anyhow::Result<engine::Speculation> {
        let s = engine::Speculation {
            kind: self.spec_type,
            draft_max: self.draft_max,
            draft_min: self.draft_min,
        };
        s.validate().map_err(|e| anyhow::anyhow!("--{e}"))?;
        Ok(s)
    }

    /// Whether the command drafts with the model's MTP block (`--spec-type mtp`, drafts
    /// on): the load prepares the block then.
    pub fn wants_mtp(&self) -> bool {
        self.speculation().is_ok_and(|s| s.drafts_with_mtp())
    }

    /// [`speculation`](Self::speculation), checked against the loaded model (MTP drafts
    /// need its next-token-prediction layer).
    pub fn for_engine(&self, engine: &engine::Engine) -> anyhow::Result<engine::Speculation> {
        let s = self.speculation()?;
        s.check_model(&engine.model).map_err(anyhow::Error::msg)?;
        Ok(s)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::load::ModelArgs,
    /// The prompt. Special-token text (e.g. `<|im_start|>`) is parsed as special tokens.
    #[arg(long, short = 'p')]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Wrap the prompt as one user turn with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Context size in tokens (default: prompt + max new tokens).
    #[arg(long)]
    ctx: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// Keep generating past end-of-generation tokens (for benchmarks and tests).
    #[arg(long)]
    ignore_eos: bool,
    /// Print prefill/decode speed to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Constrain the output to this JSON schema (a file; `{"type":"object"}` for any
    /// object).
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    json_schema: Option<std::path::PathBuf>,
    /// Constrain the output to this grammar (a file: GBNF as llama.cpp's `--grammar-file`,
    /// or llguidance's Lark).
    #[arg(long, value_name = "FILE")]
    grammar: Option<std::path::PathBuf>,
}

/// The constraint `--json-schema` or `--grammar` asks for.
fn constraint_spec(args: &Args) -> anyhow::Result<Option<engine::ConstraintSpec>> {
    use anyhow::Context;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    if let Some(p) = &args.json_schema {
        let schema = serde_json::from_str(&read(p)?)
            .with_context(|| format!("{}: not JSON", p.display()))?;
        return Ok(Some(engine::ConstraintSpec::JsonSchema(schema)));
    }
    match &args.grammar {
        Some(p) => Ok(Some(engine::ConstraintSpec::grammar(&read(p)?))),
        None => Ok(None),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The plan reserves --ctx, or room for the prompt and the answer: the prompt's tokens
    // are not known before the tokenizer is loaded, so its bytes (at least one per token)
    // plus room for a chat template and BOS bound them.
    let kv = engine::KvReservation {
        ctx: args.ctx,
        default_max: args
            .prompt
            .len()
            .saturating_add(args.max_new_tokens)
            .saturating_add(if args.chat { 1024 } else { 1 }),
        caches: 1,
        types: args.model.kv_types(),
    };
    let engine = super::load::load(&args.model, false, false, kv, args.spec.wants_mtp())?;
    let tok = engine.tokenizer.as_ref().ok_or_else(|| {
        anyhow::anyhow!("{}: the file has no tokenizer", args.model.model.display())
    })?;
    let text = if args.chat {
        let template = engine
            .template
            .as_ref()
            .expect("a tokenizer implies a template (or the ChatML fallback)");
        template.render(&[ChatMessage::user(args.prompt.clone())], true)?
    } else {
        args.prompt.clone()
    };
    // A chat template writes its own BOS; plain prompts get what the metadata asks for.
    let prompt = tok.encode(&text, !args.chat)?;
    // Default: room for the prompt and the answer, within what the model was trained for.
    let ctx = args.ctx.unwrap_or_else(|| {
        (prompt.len() + args.max_new_tokens).min(engine.model.config.n_ctx_train.max(1))
    });
    let mut seq = engine.sequence(ctx)?;
    let constraint = match constraint_spec(&args)? {
        Some(spec) => Some(engine.compile_constraint(&spec)?),
        None => None,
    };
    let req = GenerateRequest {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.params(),
        stop: vec![],
        ignore_eos: args.ignore_eos,
        constraint,
        keep_special: vec![],
        speculation: Some(args.spec.for_engine(&engine)?),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let stats = engine.generate(&mut seq, &prompt, &req, &mut |piece| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
        true
    })?;
    let _ = writeln!(out);
    if args.stats {
        eprintln!(
            "prompt {} tokens, {:.1} tok/s · generated {} tokens, {:.1} tok/s",
            stats.prompt_tokens,
            stats.prefill_tps(),
            stats.generated_tokens,
            stats.decode_tps()
        );
        if let Some(a) = stats.acceptance() {
            eprintln!(
                "speculation: {} of {} drafted tokens accepted ({:.0}%)",
                stats.accepted_tokens,
                stats.drafted_tokens,
                100.0 * a
            );
        }
        if args.json_schema.is_some() || args.grammar.is_some() {
            eprintln!(
                "grammar {:.1} ms in all, {:.0} µs per generated token ({:.2}% of the decode time)",
                stats.grammar_seconds * 1e3,
                stats.grammar_seconds * 1e6 / stats.generated_tokens.max(1) as f64,
                100.0 * stats.grammar_seconds / stats.decode_seconds.max(1e-9)
            );
        }
    }
    Ok(())
}
