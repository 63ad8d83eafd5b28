//! `ferromoe`: the command-line front end. Each subcommand lives in `cmd/`; this file
//! only parses arguments and reports errors.

mod cmd;
mod npy;

use clap::{Parser, Subcommand};

/// Run Mixture-of-Experts language models (DeepSeek-V3/R1, Kimi-K2, Qwen3-MoE, Mixtral, ...)
/// from GGUF files on one workstation.
#[derive(Parser)]
#[command(name = "ferromoe", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model in the terminal (multi-turn; the conversation stays in the KV cache).
    Chat(cmd::chat::Args),
    /// Generate a continuation of one prompt, streamed to stdout.
    Run(cmd::run::Args),
    /// Print the token ids of a text (as a JSON array) with the file's own tokenizer.
    Tokenize(cmd::tokenize::Args),
    /// Show what a GGUF file holds: architecture, hyper-parameters, tokenizer, tensors.
    Inspect(cmd::inspect::Args),
    /// Dequantize one tensor to float32 and write it as a .npy file.
    Tensor(cmd::tensor::Args),
    /// Write the model's logits for given token ids as a .npy file.
    Logits(cmd::logits::Args),
    /// Write a random-weight GGUF with a real model's shapes (for benchmarks).
    Synth(cmd::synth::Args),
    /// Measure prompt processing and generation speed (llama-bench's method).
    Bench(cmd::bench::Args),
    /// List the GPU adapters --device can name (software ones marked), with their limits.
    Devices(cmd::devices::Args),
    /// Serve the OpenAI and Ollama APIs and a web chat page (continuous batching).
    Serve(cmd::serve::Args),
}

/// llama.cpp's multi-letter short options, which clap does not have: `-ot REGEX=TYPE` is
/// `--override-tensor`, `-ctk`/`-ctv TYPE` are `--cache-type-k`/`--cache-type-v`.
fn llama_cpp_spelling(arg: std::ffi::OsString) -> std::ffi::OsString {
    const SPELLINGS: [(&str, &str); 3] = [
        ("-ot", "--override-tensor"),
        ("-ctk", "--cache-type-k"),
        ("-ctv", "--cache-type-v"),
    ];
    let Some(a) = arg.to_str() else {
        return arg;
    };
    for (short, long) in SPELLINGS {
        if a == short {
            return long.into();
        }
        if let Some(value) = a.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
            return format!("{long}={value}").into();
        }
    }
    arg
}

fn main() {
    let cli = Cli::parse_from(std::env::args_os().map(llama_cpp_spelling));
    let result = match cli.command {
        Command::Chat(args) => cmd::chat::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Tensor(args) => cmd::tensor::run(args),
        Command::Logits(args) => cmd::logits::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Devices(args) => cmd::devices::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
