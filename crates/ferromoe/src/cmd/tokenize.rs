//! `ferromoe tokenize`: text → token ids with the file's own tokenizer.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF model or vocabulary-only file.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Add BOS/EOS as the file's metadata says (`tokenizer.ggml.add_bos_token`, ...).
    #[arg(long)]
    add_special: bool,
    /// The text. Special-token text such as `<|im_start|>` is parsed as the special token.
    text: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = gguf::Gguf::open(&args.model)?;
    let tok = text::Tokenizer::from_gguf(file.metadata())?;
    let ids = tok.encode(&args.text, args.add_special)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
