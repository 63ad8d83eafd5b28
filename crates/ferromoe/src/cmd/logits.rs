//! `ferromoe logits`: the model's output logits for given token ids, as `.npy`.

use std::path::PathBuf;

use anyhow::Context;
use model::Logits;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::load::ModelArgs,
    /// Token ids, comma-separated (e.g. `--tokens 1,2,3`).
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// Logits of every position (`[n, vocab]`) instead of only the last (`[vocab]`).
    #[arg(long)]
    all: bool,
    /// Reference mode: dequantize the weights and compute in f32 (same forward pass,
    /// exact kernels).
    #[arg(long)]
    exact: bool,
    /// Output file (float32 .npy).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let n = args.tokens.len();
    let engine = super::load::load(
        &args.model,
        args.exact,
        false,
        engine::KvReservation::positions(n),
        false,
    )?;
    let mut seq = engine.sequence(n)?;
    let which = if args.all { Logits::All } else { Logits::Last };
    let logits = seq.feed(&args.tokens, which)?;
    let vocab = engine.model.config.n_vocab;
    let shape = if args.all {
        vec![n, vocab]
    } else {
        vec![vocab]
    };
    crate::npy::write_f32(&args.out, &shape, logits)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} {:?}", args.out.display(), shape);
    Ok(())
}
