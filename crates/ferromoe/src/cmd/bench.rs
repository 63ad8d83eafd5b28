//! `ferromoe bench`: prompt-processing (pp) and generation (tg) speed, measured the way
//! llama.cpp's `llama-bench` measures it, so the two numbers can be compared directly:
//!
//! - **pp N**: one batch of N tokens fed into an empty KV cache (logits of the last position
//!   only, as `llama_batch_get_one` asks for);
//! - **tg N**: N single-token steps starting from an empty cache;
//! - with `-d D`, both start instead after D cached tokens (filled once, untimed; each
//!   repetition truncates the cache back to D), like llama-bench's `-d`: the speed at a
//!   context depth, where attention's cost shows;
//! - random token ids (no tokenizer), no sampling; one warm-up run of each test (a full pp,
//!   a 1-token tg), then `-r` timed repetitions; tokens/s = mean ± sample standard deviation
//!   of the per-repetition rates (llama-bench's `avg_ts` / `stddev_ts`).
//!
//! - **step K** (`--steps 1,2,4,8,16`): one forward pass of K tokens of one sequence with
//!   every position's logits — what verifying a speculative draft of K − 1 tokens costs —
//!   after the `-d` cached tokens, repeated (8 passes per repetition, each truncated back);
//!   the table then adds each K's time per pass relative to K = 1. llama-bench has no such
//!   test; llama.cpp's `llama-batched-bench` measures the same for parallel sequences.
//!
//! - **parallel B** (`--parallel 1,2,4,8`, llama-batched-bench's `-npl`): B sequences,
//!   each prefilled with its own `-p`-token prompt (timed once), then `-n` decode steps of
//!   all B together, each ONE forward pass of B tokens (the scheduler's batched step, see
//!   `engine::bench`), `-r` times; reports the aggregate and per-sequence decode rates.
//!   It replaces the pp and tg tests (`-p`/`-n` are its prompt and decode lengths).
//!
//! `--json` prints an array of objects with llama-bench's field names.

use std::time::Instant;

use model::Logits;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::load::ModelArgs,
    /// Prompt tokens of the pp test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens of the tg test (0: skip it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Context depth: run each test after this many cached tokens (untimed).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    n_depth: usize,
    /// How the `-d` positions are cached: `real` (processed as a prompt, as llama-bench
    /// does) or `copy` (the first 512 processed, the rest copies of them: seconds instead
    /// of an hour at 32k; the timed tests do the same work, but measured up to ~9% faster
    /// than after a real fill, so compare copy-filled runs with each other).
    #[arg(long, value_enum, default_value = "real", value_name = "real|copy")]
    depth_fill: DepthFill,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    repetitions: usize,
    /// Print a JSON array (llama-bench's field names) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also time one-sequence steps of these many tokens (every position's logits, as a
    /// speculative draft's verification asks), e.g. `--steps 1,2,4,8,16`.
    #[arg(long, value_delimiter = ',', value_name = "K,…")]
    steps: Vec<usize>,
    /// Aggregate decode of this many parallel sequences (each after its own `-p`-token
    /// prompt, `-n` batched decode steps), e.g. `--parallel 1,2,4,8`; replaces the pp
    /// and tg tests.
    #[arg(long, value_delimiter = ',', value_name = "B,…")]
    parallel: Vec<usize>,
}

/// How `bench -d` fills the cache.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DepthFill {
    Real,
    Copy,
}

/// Forward passes per repetition of a step test.
const STEP_PASSES: usize = 8;

/// The samples of one test.
struct TestResult {
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    /// A step test: tokens per pass (its samples time `STEP_PASSES` passes).
    n_step: usize,
    samples_ns: Vec<u64>,
    /// The GPU tier's traffic and waits over the timed repetitions (`None`: no GPU).
    device: Option<model::backend::StreamStats>,
}

impl TestResult {
    fn n_tokens(&self) -> usize {
        if self.n_step > 0 {
            return self.n_step * STEP_PASSES;
        }
        self.n_prompt + self.n_gen
    }
    fn name(&self) -> String {
        let test = if self.n_step > 0 {
            format!("step{}", self.n_step)
        } else if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.n_depth > 0 {
            format!("{test} @ d{}", self.n_depth)
        } else {
            test
        }
    }
    /// Per token of the timed repetitions: (bytes up, bytes down, submissions, dispatches,
    /// seconds waiting for the GPU, seconds of everything else).
    fn per_token(&self) -> Option<(f64, f64, f64, f64, f64, f64)> {
        let d = self.device?;
        let tokens = (self.n_tokens() * self.samples_ns.len()).max(1) as f64;
        let total = self.samples_ns.iter().sum::<u64>() as f64 / 1e9;
        Some((
            d.bytes_up as f64 / tokens,
            d.bytes_down as f64 / tokens,
            d.submissions as f64 / tokens,
            d.dispatches as f64 / tokens,
            d.wait_seconds / tokens,
            (total - d.wait_seconds).max(0.0) / tokens,
        ))
    }

    fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns
            .iter()
            .map(|&ns| self.n_tokens() as f64 * 1e9 / ns as f64)
            .collect()
    }
}

/// Mean and sample standard deviation (n − 1; 0 for one sample), like llama-bench.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

use engine::bench::random_tokens;

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.repetitions == 0 {
        anyhow::bail!("-r must be at least 1");
    }
    if args.n_prompt == 0 && args.n_gen == 0 && args.steps.is_empty() {
        anyhow::bail!("nothing to measure: -p and -n are both 0 and no --steps");
    }
    if args.steps.contains(&0) {
        anyhow::bail!("--steps: a step holds at least one token");
    }
    let parallel: Vec<engine::bench::ParallelSpec> = args
        .parallel
        .iter()
        .map(|&n_seqs| engine::bench::ParallelSpec {
            n_seqs,
            n_prompt: args.n_prompt,
            n_gen: args.n_gen,
            repetitions: args.repetitions,
        })
        .collect();
    for spec in &parallel {
        spec.validate()?;
    }
    if !parallel.is_empty() && args.n_depth > 0 {
        anyhow::bail!(
            "--parallel measures after each sequence's own -p prompt: -d applies to the \
             pp, tg and --steps tests only; run --parallel without -d"
        );
    }
    // With --parallel, -p and -n are its lengths: no pp or tg test of one sequence.
    let (single_pp, single_tg) = if parallel.is_empty() {
        (args.n_prompt, args.n_gen)
    } else {
        (0, 0)
    };
    let max_step = args.steps.iter().copied().max().unwrap_or(0);
    // The cache the tests use: depth plus the larger test (checked against the model's
    // context once it is loaded), and the parallel tests' caches.
    let planned = args
        .n_depth
        .saturating_add(single_pp.max(single_tg).max(max_step).max(1));
    let max_seqs = args.parallel.iter().copied().max().unwrap_or(0);
    let reservation = engine::KvReservation {
        ctx: Some(planned.max(args.n_prompt.saturating_add(args.n_gen))),
        caches: max_seqs + 1,
        ..engine::KvReservation::positions(planned)
    };
    let engine = super::load::load(&args.model, false, args.json, reservation, false)?;
    let vocab = engine.model.config.n_vocab;
    let bos = engine
        .tokenizer
        .as_ref()
        .and_then(|t| t.bos_id())
        .unwrap_or(0);
    let depth = args.n_depth;
    let n_ctx_train = engine.model.config.n_ctx_train;
    let n_ctx = depth
        .checked_add(single_pp.max(single_tg).max(max_step).max(1))
        .filter(|&n| n <= n_ctx_train)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "-d {depth} plus -p {} / -n {} exceed the model's context length {n_ctx_train} \
                 (its KV cache would not fit the model's trained positions); use smaller values",
                args.n_prompt,
                args.n_gen
            )
        })?;
    let mut seq = engine.sequence(n_ctx)?;
    let mut results = Vec::new();
    if depth > 0 {
        // In batches of 512 like llama-bench's default n_batch, so the activation buffers
        // stay the size of the tests' own.
        let tokens = random_tokens(depth, vocab, bos, 0xde97);
        let processed = match args.depth_fill {
            DepthFill::Real => depth,
            DepthFill::Copy => depth.min(512),
        };
        let t = Instant::now();
        for part in tokens[..processed].chunks(512) {
            seq.feed(part, Logits::Last)?;
        }
        if processed < depth {
            seq.repeat_to(depth)?;
        }
        // Deep fills take minutes: say what they cost (the prompt rate at growing depth),
        // and mark the start of the timed tests for scripts that watch stderr.
        let s = t.elapsed().as_secs_f64();
        let how = match processed < depth {
            true => format!(" ({processed} processed, the rest copies of them)"),
            false => String::new(),
        };
        eprintln!(
            "cache filled: {depth} tokens{how} in {s:.1} s ({:.2} tok/s)",
            depth as f64 / s.max(1e-9)
        );
    }

    if single_pp > 0 {
        let tokens = random_tokens(args.n_prompt, vocab, bos, 0x5eed);
        let run_pp = |seq: &mut engine::Sequence| -> anyhow::Result<u64> {
            back_to_depth(seq, depth)?;
            let t = Instant::now();
            let logits = seq.feed(&tokens, Logits::Last)?;
            std::hint::black_box(logits);
            Ok(t.elapsed().as_nanos() as u64)
        };
        run_pp(&mut seq)?; // warm-up
        let before = seq.device_stats();
        let samples_ns = (0..args.repetitions)
            .map(|_| run_pp(&mut seq))
            .collect::<anyhow::Result<_>>()?;
        results.push(TestResult {
            n_prompt: args.n_prompt,
            n_gen: 0,
            n_depth: depth,
            n_step: 0,
            samples_ns,
            device: stats_since(before, seq.device_stats()),
        });
    }
    if single_tg > 0 {
        let tokens = random_tokens(args.n_gen, vocab, bos, 0x6e7);
        let run_tg = |seq: &mut engine::Sequence, n: usize| -> anyhow::Result<u64> {
            back_to_depth(seq, depth)?;
            let t = Instant::now();
            for tok in &tokens[..n] {
                let logits = seq.feed(std::slice::from_ref(tok), Logits::Last)?;
                std::hint::black_box(logits);
            }
            Ok(t.elapsed().as_nanos() as u64)
        };
        run_tg(&mut seq, 1)?; // warm-up, like llama-bench's
        let before = seq.device_stats();
        let samples_ns = (0..args.repetitions)
            .map(|_| run_tg(&mut seq, args.n_gen))
            .collect::<anyhow::Result<_>>()?;
        results.push(TestResult {
            n_prompt: 0,
            n_gen: args.n_gen,
            n_depth: depth,
            n_step: 0,
            samples_ns,
            device: stats_since(before, seq.device_stats()),
        });
    }
    for &k in &args.steps {
        let tokens = random_tokens(k, vocab, bos, 0x57e9 + k as u64);
        let run_step = |seq: &mut engine::Sequence, passes: usize| -> anyhow::Result<u64> {
            let mut ns = 0;
            for _ in 0..passes {
                back_to_depth(seq, depth)?;
                let t = Instant::now();
                let logits = seq.feed(&tokens, Logits::All)?;
                std::hint::black_box(logits);
                ns += t.elapsed().as_nanos() as u64;
            }
            Ok(ns)
        };
        run_step(&mut seq, 1)?; // warm-up
        let before = seq.device_stats();
        let samples_ns = (0..args.repetitions)
            .map(|_| run_step(&mut seq, STEP_PASSES))
            .collect::<anyhow::Result<_>>()?;
        results.push(TestResult {
            n_prompt: 0,
            n_gen: 0,
            n_depth: depth,
            n_step: k,
            samples_ns,
            device: stats_since(before, seq.device_stats()),
        });
    }

    let runs = parallel
        .iter()
        .map(|&spec| engine::bench::parallel_decode(&engine, spec, 0x9a7))
        .collect::<Result<Vec<_>, _>>()?;

    let file = &engine.model.file;
    let model_size: u64 = file.tensors().iter().map(|t| t.size).sum();
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let model_path = args.model.model.display().to_string();
    let threads = engine.pool.n_threads();
    let experts = engine
        .model
        .config
        .moe
        .as_ref()
        .map(|m| (engine.model.experts_per_token(), m.n_expert));
    let model_type = format!(
        "{} {}",
        engine.model.config.arch.name(),
        engine
            .summary()
            .split(" · ")
            .nth(1)
            .unwrap_or("")
            .split(" params")
            .next()
            .unwrap_or("")
    );

    if args.json {
        let mut arr: Vec<_> = results
            .iter()
            .map(|r| {
                let ts = r.samples_ts();
                let (avg_ts, stddev_ts) = mean_sd(&ts);
                let ns: Vec<f64> = r.samples_ns.iter().map(|&x| x as f64).collect();
                let (avg_ns, stddev_ns) = mean_sd(&ns);
                let tier = r.per_token().map(|(up, down, subs, disp, wait, rest)| {
                    json!({
                        "bus_bytes_up_per_token": up,
                        "bus_bytes_down_per_token": down,
                        "gpu_submissions_per_token": subs,
                        "gpu_dispatches_per_token": disp,
                        "gpu_wait_ns_per_token": (wait * 1e9).round(),
                        "cpu_ns_per_token": (rest * 1e9).round(),
                    })
                });
                json!({
                    "build_commit": option_env!("FERROMOE_COMMIT").unwrap_or("unknown"),
                    "engine": "ferromoe",
                    "cpu_info": cpu_name(),
                    "model_filename": model_path,
                    "model_type": model_type,
                    "model_size": model_size,
                    "model_n_params": n_params,
                    "n_threads": threads,
                    "threads_pinned": engine.pool.pinned(),
                    "simd": quant::dot::simd_path(),
                    "n_experts_used": experts.map(|e| e.0),
                    "n_experts": experts.map(|e| e.1),
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_step": r.n_step,
                    "n_depth": r.n_depth,
                    "test": r.name(),
                    "avg_ns": avg_ns.round() as u64,
                    "stddev_ns": stddev_ns.round() as u64,
                    "avg_ts": avg_ts,
                    "stddev_ts": stddev_ts,
                    "samples_ns": r.samples_ns,
                    "samples_ts": ts,
                    "gpu_tier": tier,
                })
            })
            .collect();
        for run in &runs {
            let ts = run.decode_ts();
            let (avg_ts, stddev_ts) = mean_sd(&ts);
            let ns: Vec<f64> = run.decode_ns.iter().map(|&x| x as f64).collect();
            let (avg_ns, stddev_ns) = mean_sd(&ns);
            arr.push(json!({
                "build_commit": option_env!("FERROMOE_COMMIT").unwrap_or("unknown"),
                "engine": "ferromoe",
                "cpu_info": cpu_name(),
                "model_filename": model_path,
                "model_type": model_type,
                "model_size": model_size,
                "model_n_params": n_params,
                "n_threads": threads,
                "threads_pinned": engine.pool.pinned(),
                "simd": quant::dot::simd_path(),
                "n_experts_used": experts.map(|e| e.0),
                "n_experts": experts.map(|e| e.1),
                "n_prompt": run.spec.n_prompt,
                "n_gen": run.spec.n_gen,
                "n_step": 0,
                "n_depth": 0,
                "n_parallel": run.spec.n_seqs,
                "test": parallel_name(run),
                "prefill_ns": run.prefill_ns,
                "prefill_ts": run.prefill_ts(),
                "avg_ns": avg_ns.round() as u64,
                "stddev_ns": stddev_ns.round() as u64,
                "avg_ts": avg_ts,
                "stddev_ts": stddev_ts,
                "per_seq_ts": avg_ts / run.spec.n_seqs as f64,
                "samples_ns": run.decode_ns,
                "samples_ts": ts,
            }));
        }
        println!("{}", serde_json::to_string_pretty(&arr)?);
    } else {
        if !results.is_empty() {
            println!("| model | size | params | threads | experts | test | t/s |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        }
        for r in &results {
            let (avg, sd) = mean_sd(&r.samples_ts());
            println!(
                "| {} | {:.2} GiB | {:.2} B | {} | {} | {} | {:.2} ± {:.2} |",
                model_type,
                model_size as f64 / (1u64 << 30) as f64,
                n_params as f64 / 1e9,
                threads,
                experts
                    .map(|e| format!("{}/{}", e.0, e.1))
                    .unwrap_or_else(|| "-".into()),
                r.name(),
                avg,
                sd
            );
        }
        print_step_costs(&results);
        print_parallel(&runs);
        for r in &results {
            if let Some((up, down, subs, disp, wait, rest)) = r.per_token() {
                println!(
                    "{}: per token {:.3} ms on the CPU (everything but the GPU waits) + {:.3} ms waiting for the GPU; bus {:.1} KiB up, {:.1} KiB down in {:.1} submission(s) of {:.1} dispatch(es)",
                    r.name(),
                    rest * 1e3,
                    wait * 1e3,
                    up / 1024.0,
                    down / 1024.0,
                    subs,
                    disp
                );
            }
        }
    }
    Ok(())
}

/// The step tests' time per pass, and relative to the one-token step's when there is one.
fn print_step_costs(results: &[TestResult]) {
    let per_pass = |r: &TestResult| {
        let ns: Vec<f64> = r.samples_ns.iter().map(|&x| x as f64).collect();
        mean_sd(&ns).0 / STEP_PASSES as f64 / 1e6
    };
    let steps: Vec<&TestResult> = results.iter().filter(|r| r.n_step > 0).collect();
    if steps.is_empty() {
        return;
    }
    let one = steps.iter().find(|r| r.n_step == 1).map(|r| per_pass(r));
    println!();
    println!("| step tokens | ms per pass | relative to 1 token |");
    println!("| ---: | ---: | ---: |");
    for r in steps {
        let ms = per_pass(r);
        let rel = one.map_or("-".to_string(), |o| format!("{:.2}", ms / o));
        println!("| {} | {ms:.2} | {rel} |", r.n_step);
    }
}

/// A parallel test's name: `pp512+tg32 ×4`.
fn parallel_name(run: &engine::bench::ParallelRun) -> String {
    format!(
        "pp{}+tg{} ×{}",
        run.spec.n_prompt, run.spec.n_gen, run.spec.n_seqs
    )
}

/// The parallel tests in llama-batched-bench's columns (PP/TG per sequence, B, the
/// prefill and decode times and rates), plus each sequence's share of the decode rate.
fn print_parallel(runs: &[engine::bench::ParallelRun]) {
    if runs.is_empty() {
        return;
    }
    println!();
    println!(
        "| PP | TG | B | T_PP s | S_PP t/s | T_TG s | S_TG t/s (aggregate) | per sequence t/s |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for run in runs {
        let (ts, sd) = mean_sd(&run.decode_ts());
        let ns: Vec<f64> = run.decode_ns.iter().map(|&x| x as f64).collect();
        println!(
            "| {} | {} | {} | {:.3} | {:.2} | {:.3} | {ts:.2} ± {sd:.2} | {:.2} |",
            run.spec.n_prompt,
            run.spec.n_gen,
            run.spec.n_seqs,
            run.prefill_ns as f64 / 1e9,
            run.prefill_ts(),
            mean_sd(&ns).0 / 1e9,
            ts / run.spec.n_seqs as f64
        );
    }
}

/// The GPU tier's counters between two readings.
fn stats_since(
    before: Option<model::backend::StreamStats>,
    after: Option<model::backend::StreamStats>,
) -> Option<model::backend::StreamStats> {
    let (b, a) = (before?, after?);
    Some(model::backend::StreamStats {
        bytes_up: a.bytes_up - b.bytes_up,
        bytes_down: a.bytes_down - b.bytes_down,
        submissions: a.submissions - b.submissions,
        dispatches: a.dispatches - b.dispatches,
        wait_seconds: a.wait_seconds - b.wait_seconds,
    })
}

/// The CPU's model name from /proc/cpuinfo (empty when unavailable).
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Forgets what the last run added after the `depth` cached tokens. A sliding-window
/// cache (gpt-oss) can only go back `model::kv::RING_STEP` positions: a longer run is an
/// error rather than a measurement at another depth.
fn back_to_depth(seq: &mut engine::Sequence, depth: usize) -> anyhow::Result<()> {
    let kept = seq.truncate(depth);
    if kept != depth {
        anyhow::bail!(
            "this model's sliding-window KV cache cannot go back more than {} positions: \
             use -p and -n of at most that with -d",
            model::kv::RING_STEP
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sd_matches_the_sample_formula() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - 1.2909944487).abs() < 1e-9);
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
    }
}
