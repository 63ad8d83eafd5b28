//! `ferromoe tensor`: one tensor dequantized to float32, written as `.npy`.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (of a split set, any part).
    file: PathBuf,
    /// Tensor name, e.g. `blk.0.ffn_down_exps.weight` (see `ferromoe inspect --tensors`).
    name: String,
    /// Where to write the float32 array (numpy order: shape is the reversed ggml `ne`).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = gguf::Gguf::open(&args.file)?;
    let t = file.tensor(&args.name)?;
    let n = usize::try_from(t.n_elements()).context("tensor too large for this machine")?;
    let mut values = Vec::new();
    values
        .try_reserve_exact(n)
        .with_context(|| format!("cannot allocate {n} floats for '{}'", args.name))?;
    values.resize(n, 0.0f32);
    quant::dequantize(t.ty, t.data, &mut values)
        .with_context(|| format!("tensor '{}'", args.name))?;
    let shape: Vec<usize> = t.ne.iter().rev().map(|&d| d as usize).collect();
    crate::npy::write_f32(&args.out, &shape, &values)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} {:?} → float32 {:?})",
        args.out.display(),
        t.ty,
        t.ne,
        shape
    );
    Ok(())
}
