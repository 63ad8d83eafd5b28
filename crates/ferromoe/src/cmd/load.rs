//! Loading a model for a subcommand: a progress bar while it loads, then one summary line.

use std::path::PathBuf;

use engine::{Engine, LoadOptions, LoadProgress};

/// Options every model-running subcommand takes.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// The GGUF model file (of a split set, any part: the others are found by their names).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Worker threads (default: the number of physical cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Run only the top K routed experts per token (KTransformers' "selective experts";
    /// K ≤ the model's experts per token).
    #[arg(long, value_name = "K")]
    pub experts_per_token: Option<usize>,
    /// Keep the weights mmap-only: skip the load-time repack into the kernels'
    /// row-interleaved layouts (less load time and anonymous memory, slower matmuls).
    #[arg(long)]
    pub no_repack: bool,
}

/// Loads the model with a progress bar on stderr and prints the summary line.
pub fn load(args: &ModelArgs, exact: bool, quiet: bool) -> anyhow::Result<Engine> {
    let opts = LoadOptions {
        threads: args.threads,
        exact,
        experts_per_token: args.experts_per_token,
        repack: !args.no_repack,
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(args.model.display().to_string());
    let engine = Engine::load(&args.model, &opts, &mut |p| match p {
        LoadProgress::Layers { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!("{}", engine.summary());
    }
    Ok(engine)
}
