//! Loading a model for a subcommand: a progress bar while it loads, then one summary line.

use std::path::PathBuf;

use engine::{Engine, KvReservation, LoadOptions, LoadProgress};

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
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Plan memory as if this process could use only SIZE bytes (`20G`, `512M`; default:
    /// MemAvailable and the cgroup limit): what does not fit stays memory-mapped.
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    pub memory_budget: Option<u64>,
    /// Element type of the cached keys (and of an MLA model's latent cache): f32, f16,
    /// bf16, q8_0 or q8_KV (int8 rows with one scale each: about a byte per value, and the
    /// fastest decode at long contexts — attention runs in int8 over it; ik_llama.cpp's
    /// name). `-ctk` (llama.cpp's spelling) is read as this option.
    #[arg(long, value_name = "TYPE", default_value = "f32")]
    pub cache_type_k: model::KvType,
    /// Element type of the cached values (GQA models; an MLA cache has none): f32, f16,
    /// bf16, q8_0 or q8_KV. `-ctv` is read as this option.
    #[arg(long, value_name = "TYPE", default_value = "f32")]
    pub cache_type_v: model::KvType,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// The KV cache's key and value types.
    pub fn kv_types(&self) -> model::KvTypes {
        model::KvTypes {
            k: self.cache_type_k,
            v: self.cache_type_v,
        }
    }
}

/// Which GPU runs the GPU tier, and how much of its memory the plan may use.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// auto (a discrete GPU if there is one, else the CPU), cpu, gpu (the best hardware
    /// GPU), gpu:N (adapter N of `ferromoe devices`) or gpu:NAME (a part of its name).
    /// Software adapters (lavapipe) are used only when named by index or name.
    #[arg(long, value_name = "DEVICE", default_value = "auto", value_parser = parse_device)]
    pub device: accel::DeviceChoice,
    /// GPU memory the plan may fill with weights and the KV cache (`8G`, `512M`). wgpu
    /// reports no memory size: the default is a guess per adapter type (8G for a discrete
    /// GPU, 2G integrated, 4G software), printed at load.
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    pub gpu_memory: Option<u64>,
}

fn parse_device(s: &str) -> Result<accel::DeviceChoice, String> {
    s.parse().map_err(|e: accel::AccelError| e.to_string())
}

/// Where each tensor runs and how it is stored (see `model::placement`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PlacementArgs {
    /// Keep the weights mmap-only: skip the load-time repack into the kernels'
    /// row-interleaved layouts (less load time and anonymous memory, slower matmuls). A
    /// placement rule `.*=cpu:mapped` after the --override-tensor and --placement rules.
    #[arg(long)]
    pub no_repack: bool,
    /// Place tensors whose name matches REGEX: TIER is cpu or gpu (llama.cpp's CPU, CUDA0,
    /// Vulkan0, ... accepted; gpu needs a --device), STORAGE mapped, repacked or
    /// requantized:TYPE (e.g. `ffn_.*_exps=cpu:mapped`). Repeatable, or comma-separated;
    /// the first matching rule wins.
    /// `-ot` (llama.cpp's spelling) is read as this option.
    #[arg(long = "override-tensor", value_name = "REGEX=TIER[:STORAGE]")]
    pub override_tensor: Vec<String>,
    /// Placement rules from a TOML file (`[[rule]]` tables with tensors, tier, storage),
    /// after the --override-tensor rules.
    #[arg(long, value_name = "FILE.toml")]
    pub placement: Option<PathBuf>,
    /// Keep every routed expert on the CPU (llama.cpp's meaning; the default with a GPU).
    #[arg(long)]
    pub cpu_moe: bool,
    /// Keep the routed experts of the first N layers on the CPU (llama.cpp's meaning).
    #[arg(long, value_name = "N")]
    pub n_cpu_moe: Option<usize>,
}

impl PlacementArgs {
    /// The user's rules in order: --override-tensor, --placement, --cpu-moe, --n-cpu-moe
    /// (`--no-repack` and the defaults follow them at load).
    pub fn rules(&self) -> anyhow::Result<Vec<model::placement::Rule>> {
        use model::placement::Rule;
        let mut rules = Vec::new();
        for spec in &self.override_tensor {
            rules.extend(Rule::parse_override(spec)?);
        }
        if let Some(path) = &self.placement {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--placement {}: {e}", path.display()))?;
            rules.extend(Rule::parse_toml(&path.display().to_string(), &text)?);
        }
        if self.cpu_moe {
            rules.push(Rule::cpu_moe());
        }
        if let Some(n) = self.n_cpu_moe {
            rules.extend(Rule::n_cpu_moe(n)?);
        }
        Ok(rules)
    }
}

/// `20G` → 20 GiB, `512M` → 512 MiB, a bare number is bytes.
pub fn parse_budget(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.strip_suffix(['G', 'g']) {
        Some(d) => (d, 30),
        None => match s.strip_suffix(['M', 'm']) {
            Some(d) => (d, 20),
            None => (s, 0),
        },
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{s}' is not a positive size like 20G, 512M or 4096"))
}

/// Loads the model with a progress bar on stderr and prints the summary line. The memory
/// plan reserves the KV caches `kv` says the command will allocate; the command sizes
/// them with `engine.load.kv_ctx`, the context the plan reserved. `mtp`: the command
/// drafts with the model's MTP block (see [`LoadOptions::mtp`]).
pub fn load(
    args: &ModelArgs,
    exact: bool,
    quiet: bool,
    kv: KvReservation,
    mtp: bool,
) -> anyhow::Result<Engine> {
    let opts = LoadOptions {
        threads: args.threads,
        exact,
        experts_per_token: args.experts_per_token,
        repack: !args.placement.no_repack,
        placement: args.placement.rules()?,
        memory_budget: args.memory_budget,
        kv: KvReservation {
            types: args.kv_types(),
            ..kv
        },
        device: args.device.device.clone(),
        gpu_memory: args.device.gpu_memory,
        mtp,
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
    let mut by_bytes = false;
    let engine = Engine::load(&args.model, &opts, &mut |p| match p {
        LoadProgress::Layers { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        LoadProgress::Bytes { done, total } => {
            if !by_bytes {
                // One bar by bytes over all parts, with the rate and the time left.
                by_bytes = true;
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "loading {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.reset_elapsed();
            }
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    bar.finish_and_clear();
    // Which device runs what, even when quiet: it says why a run is fast or slow.
    eprintln!("{}", engine.devices.line);
    if !quiet {
        eprintln!("{}", engine.summary());
        for line in engine.model.load_notes() {
            eprintln!("{line}");
        }
        for line in engine.load.lines() {
            eprintln!("{line}");
        }
    } else {
        // Warnings are printed even when quiet: they say why a run will be slow.
        for line in engine
            .load
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("warning:"))
        {
            eprintln!("{line}");
        }
    }
    Ok(engine)
}

/// `--chat-template-file`: serve or chat with this Jinja template instead of the file's
/// own (keeping the file's BOS/EOS texts).
pub fn replace_template(
    engine: &mut engine::Engine,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let source = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--chat-template-file {}: {e}", path.display()))?;
    let (bos, eos) = match &engine.template {
        Some(t) => (t.bos_token().to_string(), t.eos_token().to_string()),
        None => (String::new(), String::new()),
    };
    let template = text::ChatTemplate::new(source, bos, eos)
        .map_err(|e| anyhow::anyhow!("--chat-template-file {}: {e}", path.display()))?;
    engine.template = Some(template);
    Ok(())
}
