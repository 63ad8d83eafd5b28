//! The engine: loads a model with its thread pool ([`Engine`]), runs sequences
//! ([`Sequence`]: KV cache + activation buffers), and generates from them ([`Generation`]:
//! sampling, end of generation, stop strings, streamed text), one sequence alone
//! ([`Engine::generate`]) or many batched ([`scheduler`]).

pub mod bench;
pub mod constraint;
pub mod device;
pub mod error;
pub mod generate;
pub mod mtp;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod speculate;
pub mod stop;

use std::path::Path;
use std::sync::Arc;

use kernels::ThreadPool;
use model::{BatchLimits, BatchSeq, KvCache, Logits, MatmulMode, Model, RunState};

pub use constraint::{Constraint, ConstraintCompiler, ConstraintSpec};
pub use device::Devices;
pub use error::EngineError;
pub use generate::{
    FinishReason, GenerateRequest, Generation, GenerationStats, Step, TokenLogprobs, Verified,
    MAX_TOP_LOGPROBS,
};
pub use sampler::{Sampler, SamplingParams};
pub use sequence::{Sequence, PREFILL_CHUNK};
pub use speculate::{SpecType, Speculation};
pub use stop::StopMatcher;
pub use text::{ChatMessage, ChatTemplate, Tokenizer};

/// How to load and run a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Worker threads (default: physical cores).
    pub threads: Option<usize>,
    /// Dequantize weights and compute in f32 (reference mode).
    pub exact: bool,
    /// Routed experts per token (default: the model's).
    pub experts_per_token: Option<usize>,
    /// Repack the weights of supported types into the kernels' row-interleaved layouts at
    /// load (anonymous memory; the mapped pages are released). Default true; ignored in
    /// the exact mode. `false` (`--no-repack`) keeps the weights mmap-only: a placement
    /// rule after the user's.
    pub repack: bool,
    /// The KV caches the command will allocate: the memory plan reserves them.
    pub kv: KvReservation,
    /// The user's placement rules, in order (`--override-tensor`, `--placement`,
    /// `--cpu-moe`): see [`model::placement`].
    pub placement: Vec<model::placement::Rule>,
    /// Plan as if this process could use only this many bytes (default: what
    /// `MemAvailable` and the cgroup limit say).
    pub memory_budget: Option<u64>,
    /// Which GPU runs the GPU tier (`--device`; default `auto`: a discrete GPU if there
    /// is one, else the CPU alone).
    pub device: accel::DeviceChoice,
    /// Bytes the plan may put on the GPU (`--gpu-memory`; default: a guess per adapter
    /// type, see [`device::default_gpu_memory`]).
    pub gpu_memory: Option<u64>,
    /// The command drafts with the model's MTP block (`--spec-type mtp`): the plan
    /// reserves the block's cache, and the block is repacked and read in like a trunk
    /// layer when everything fits in memory (otherwise it stays mapped, read when it
    /// runs). Without it the block is neither repacked nor read.
    pub mtp: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            threads: None,
            exact: false,
            experts_per_token: None,
            repack: true,
            kv: KvReservation::default(),
            placement: Vec::new(),
            memory_budget: None,
            device: accel::DeviceChoice::Auto,
            gpu_memory: None,
            mtp: false,
        }
    }
}

/// The KV caches a command allocates, so that the memory plan reserves what the command
/// will really hold (its `--ctx`, times the sequences it serves at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvReservation {
    /// Positions per cache (`--ctx`); `None`: the model's training context, at most
    /// `default_max`.
    pub ctx: Option<usize>,
    /// The cap on the default context.
    pub default_max: usize,
    /// Caches of that size the command may hold at once (`serve`: running plus kept
    /// sequences).
    pub caches: usize,
    /// The keys' and values' element types (`--cache-type-k/-v`).
    pub types: model::KvTypes,
}

impl Default for KvReservation {
    /// One cache of the training context, at most 4096 positions.
    fn default() -> KvReservation {
        KvReservation {
            ctx: None,
            default_max: 4096,
            caches: 1,
            types: model::KvTypes::default(),
        }
    }
}

impl KvReservation {
    /// One cache of exactly `n_ctx` positions.
    pub fn positions(n_ctx: usize) -> KvReservation {
        KvReservation {
            ctx: Some(n_ctx),
            ..KvReservation::default()
        }
    }

    /// Positions per cache for a model of this configuration (the command sizes its
    /// caches with this, so plan and allocation agree).
    pub fn ctx_for(&self, config: &model::Config) -> usize {
        self.ctx
            .unwrap_or_else(|| config.n_ctx_train.clamp(1, self.default_max.max(1)))
    }

    /// Bytes of all the caches, by the function [`KvCache`] allocates with
    /// (`u64::MAX` when the size overflows: the plan then says it cannot fit).
    pub fn bytes(&self, config: &model::Config) -> u64 {
        KvCache::bytes_for(config, self.types, self.ctx_for(config))
            .and_then(|b| b.checked_mul(self.caches))
            .map_or(u64::MAX, |b| b as u64)
    }
}

/// Progress of a load, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum LoadProgress {
    /// `done` of `total` layers bound.
    Layers { done: usize, total: usize },
    /// `done` of `total` bytes of weights (all parts) repacked, read or left mapped.
    Bytes { done: u64, total: u64 },
}

/// How the load went, per tier: for the load summary.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Files read (a split set's parts).
    pub parts: usize,
    /// Bytes of all tensors in the file(s).
    pub file_bytes: u64,
    /// Binding (and weights computed at load, e.g. fused `attn_kv_b`), seconds.
    pub bind_seconds: f64,
    /// The memory plan.
    pub plan: model::memplan::MemoryPlan,
    /// The usable memory it planned with, and where that figure comes from.
    pub usable: Option<(u64, String)>,
    /// Positions per KV cache the plan reserved (the size commands give their caches).
    pub kv_ctx: usize,
    /// KV caches of `kv_ctx` positions it reserved.
    pub kv_caches: usize,
    /// Their keys' and values' element types.
    pub kv_types: model::KvTypes,
    /// Bytes per position of one cache (all layers).
    pub kv_bytes_per_position: u64,
    /// The types as the model stores them ("latent f16", "k q8_0, v f16").
    pub kv_types_text: String,
    /// Bytes it reserved for them.
    pub kv_bytes: u64,
    pub repack: model::weights::RepackSummary,
    /// Mapped weights read into the page cache at load (none when they do not all fit).
    pub page_in: model::weights::PageInSummary,
    /// Tensors converted at load by `requantized:TYPE` rules, seconds.
    pub requantized: (usize, f64),
    /// Where each tensor group went (see [`model::placement::PlacedModel::lines`]).
    pub placement: Vec<String>,
    /// Placement rules the load could not follow (e.g. a repack that did not fit).
    pub placement_warnings: Vec<String>,
    /// What the GPU tier holds against its budget (`None`: no GPU open).
    pub gpu: Option<GpuPlan>,
}

/// The GPU tier's memory: its weights and scratch against the budget.
#[derive(Clone, Debug, Default)]
pub struct GpuPlan {
    /// Bytes the budget allows, and where that figure comes from.
    pub budget: (u64, String),
    /// Weights placed on the GPU tier, bytes and tensors.
    pub weight_bytes: u64,
    pub tensors: usize,
    /// Activation buffers on the GPU (an estimate).
    pub scratch_bytes: u64,
    /// The KV caches of the layers whose attention runs on the GPU (f32, every position
    /// of `--ctx`, times the caches the command holds at once), and that many layers.
    pub kv_bytes: u64,
    pub kv_layers: usize,
    /// Said at load when the GPU's cache differs from what `--cache-type-k/-v` ask for.
    pub kv_note: Option<String>,
    /// Layers the plan kept on the CPU because the budget does not hold them (`None`: all
    /// fit), and the message saying so.
    pub overflow: Option<String>,
    /// Bytes on the GPU after the upload, and the seconds it took.
    pub uploaded_bytes: u64,
    pub upload_seconds: f64,
    /// The stages that run on the GPU ("2 dense FFN(s), the output head").
    pub stages: String,
}

/// GPU activation scratch the plan reserves: a 512-token step's hidden states and FFN
/// activations, and 64 rows of logits (an estimate: the buffers grow with the batch).
/// With MLA, its per-token buffers (queries, latent-space queries, attended latents and
/// values, each per head) and the decompressed form's per-position buffers (latents,
/// expanded keys and values) for `ctx` positions, at most 256 MiB (the CPU stage's cap).
fn gpu_scratch_estimate(c: &model::Config, ctx: u64) -> u64 {
    let shared = c.moe.as_ref().map_or(0, |m| m.shared_ffn);
    let hidden = c.ffn_dim.max(shared).max(c.dim) as u64;
    let mla = c.mla.as_ref().map_or(0, |m| {
        let (lat, hq, v) = (m.kv_lora_rank + m.qk_rope, m.qk_nope + m.qk_rope, m.v_head);
        // Widths come from the file: saturating, so absurd metadata makes a huge estimate
        // (the plan then refuses it) instead of an overflow.
        let (nh, lat, hq, v) = (c.n_head as u64, lat as u64, hq as u64, v as u64);
        let (lora, nope) = (m.kv_lora_rank as u64, m.qk_nope as u64);
        let per_token = nh
            .saturating_mul(hq + nope + lat + 3 * lora + 2 * v)
            .saturating_add(lat);
        let per_position = nh.saturating_mul(nope + hq + 2 * v).saturating_add(lora);
        (512 * 4u64).saturating_mul(per_token).saturating_add(
            ctx.saturating_mul(per_position)
                .saturating_mul(4)
                .min(256 << 20),
        )
    });
    (512 * 4u64)
        .saturating_mul((2 * c.dim as u64).saturating_add(2 * hidden))
        .saturating_add((64 * 4u64).saturating_mul(c.n_vocab as u64))
        .saturating_add(mla)
}

/// The placement with the tiers there are. With a GPU, what the GPU tier gets must fit its
/// budget with its scratch: if it does not, the first layers stay on the CPU until it does
/// (llama.cpp's `-ngl` keeps the last layers on the GPU likewise), and the plan says so.
/// (`inspect --plan` shows this before any load.)
pub fn plan_tiers(
    model: &Model,
    opts: &LoadOptions,
    devices: &Devices,
    infos: Vec<model::placement::TensorInfo>,
) -> Result<(model::placement::PlacedModel, Option<GpuPlan>), EngineError> {
    use model::placement::{PlacedModel, Placement, Rule};
    let c = &model.config;
    let make = |overflow: Option<Rule>| {
        PlacedModel::new(
            Placement::for_tiers(
                opts.placement.clone(),
                !opts.repack,
                c.arch,
                devices.gpu.is_some(),
                overflow,
            ),
            infos.clone(),
        )
    };
    let placed = make(None)?;
    let Some((budget, source)) = devices.gpu_memory.clone() else {
        return Ok((placed, None));
    };
    // A GPU layer's KV cache: f32 keys and values (MLA: the latent and the shared RoPE
    // key) at every position (no rings), per cache.
    let kv_ctx = opts.kv.ctx_for(c) as u64;
    let caches = opts.kv.caches as u64;
    let kv_row = match &c.mla {
        Some(m) => m.kv_lora_rank + m.qk_rope,
        None => c.n_head_kv * (c.head_dim + c.head_dim_v),
    };
    let kv_per_layer = (kv_row as u64)
        .saturating_mul(4)
        .saturating_mul(kv_ctx)
        .saturating_mul(caches);
    let layer_bytes = |p: &PlacedModel| -> Vec<u64> {
        let mut v = p.gpu_bytes_per_layer(c.n_layer);
        for (b, on) in v.iter_mut().zip(p.gpu_attention_layers(c.n_layer)) {
            if on {
                *b = b.saturating_add(kv_per_layer);
            }
        }
        v
    };
    let kv_of = |p: &PlacedModel| -> (u64, usize) {
        let n = p
            .gpu_attention_layers(c.n_layer)
            .iter()
            .filter(|&&a| a)
            .count();
        (kv_per_layer.saturating_mul(n as u64), n)
    };
    let scratch_bytes = gpu_scratch_estimate(c, kv_ctx);
    let (kv_bytes, _) = kv_of(&placed);
    let wanted = placed
        .gpu_bytes()
        .saturating_add(scratch_bytes)
        .saturating_add(kv_bytes);
    let mut plan = GpuPlan {
        budget: (budget, source),
        scratch_bytes,
        ..GpuPlan::default()
    };
    let placed = if wanted <= budget {
        placed
    } else {
        let per_layer = layer_bytes(&placed);
        let (mut need, mut n) = (wanted, 0);
        while need > budget && n < c.n_layer {
            need = need.saturating_sub(per_layer[n]);
            n += 1;
        }
        let layers = (need <= budget).then_some(n);
        let why = format!(
            "{} of GPU weights, {} of GPU KV cache at --ctx {kv_ctx} and {} of scratch exceed the budget of {}: --gpu-memory SIZE, a smaller --ctx, or -ot REGEX=cpu to choose",
            human_bytes(placed.gpu_bytes()),
            human_bytes(kv_bytes),
            human_bytes(scratch_bytes),
            human_bytes(budget)
        );
        let rule = Rule::gpu_overflow(layers, &why);
        plan.overflow = Some(rule.origin.clone());
        make(Some(rule))?
    };
    plan.weight_bytes = placed.gpu_bytes();
    plan.tensors = placed.on_gpu().iter().filter(|&&g| g).count();
    (plan.kv_bytes, plan.kv_layers) = kv_of(&placed);
    let t = opts.kv.types;
    if plan.kv_layers > 0 && t != model::KvTypes::default() {
        plan.kv_note = Some(format!(
            "the KV cache of the {} layer(s) whose attention runs on the GPU is f32 there; {} applies to the layers on the CPU",
            plan.kv_layers,
            t.describe(c)
        ));
    }
    Ok((placed, Some(plan)))
}

/// A loaded model and the threads that run it.
pub struct Engine {
    pub model: Arc<Model>,
    pub pool: Arc<ThreadPool>,
    pub mode: MatmulMode,
    pub load_seconds: f64,
    /// What the load-time repack did (`None`: the exact mode, which repacks nothing).
    pub repack: Option<model::weights::RepackSummary>,
    /// The memory plan and what each tier's load took.
    pub load: LoadReport,
    /// The file's tokenizer (None only when its metadata has none).
    pub tokenizer: Option<Tokenizer>,
    /// The file's chat template, or ChatML flagged as a fallback when it has none.
    pub template: Option<ChatTemplate>,
    /// The GPU the GPU tier runs on, if any, and the line saying so.
    pub devices: Devices,
    /// Compiles grammars for this vocabulary, built on the first constrained request.
    constraints: constraint::LazyCompiler,
    /// The extra cost of a forward step per speculative draft token, relative to a
    /// one-token step ([`speculate::step_cost_per_token`]), from the model's shape.
    pub step_cost_per_token: f32,
    /// What drafting one token with the model's MTP layer costs, relative to a one-token
    /// step ([`mtp_draft_cost`]); 0 without one.
    pub mtp_cost_per_token: f32,
}

impl Engine {
    /// Maps `path`, binds the model and starts the worker threads.
    pub fn load(
        path: &Path,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Engine, EngineError> {
        let start = std::time::Instant::now();
        let file = Arc::new(gguf::Gguf::open(path)?);
        // The device first: a --device that names no adapter fails before the long part.
        let devices = Devices::open(&opts.device, opts.gpu_memory)?;
        let mut model = Model::load_with_progress(file, &mut |done, total| {
            progress(LoadProgress::Layers { done, total })
        })?;
        if let Some(k) = opts.experts_per_token {
            model.set_experts_per_token(k)?;
        }
        let bind_seconds = start.elapsed().as_secs_f64();
        let threads = opts.threads.unwrap_or_else(kernels::default_threads).max(1);
        let pool = Arc::new(ThreadPool::new(threads));
        let (report, repack) = place_weights(&mut model, opts, &devices, &pool, progress)?;
        let report = LoadReport {
            bind_seconds,
            ..report
        };
        let mode = if opts.exact {
            MatmulMode::Exact
        } else {
            MatmulMode::Quantized
        };
        let md = model.file.metadata();
        let text_error = |what, e| EngineError::Text {
            path: path.display().to_string(),
            what,
            source: Arc::new(e),
        };
        let tokenizer = if md.contains("tokenizer.ggml.model") {
            Some(Tokenizer::from_gguf(md).map_err(|e| text_error("tokenizer", e))?)
        } else {
            None
        };
        let template = match ChatTemplate::from_gguf(md) {
            Ok(t) => Some(t),
            Err(text::TextError::MissingChatTemplate { .. }) => tokenizer.as_ref().map(|t| {
                let text_of =
                    |id: Option<u32>| id.and_then(|i| t.token_text(i)).unwrap_or("").to_string();
                ChatTemplate::chatml(text_of(t.bos_id()), text_of(t.eos_id()))
            }),
            Err(e) => return Err(text_error("chat template", e)),
        };
        let step_cost_per_token = draft_token_cost(&model);
        Ok(Engine {
            step_cost_per_token,
            mtp_cost_per_token: mtp_draft_cost(&model),
            model: Arc::new(model),
            pool,
            mode,
            load_seconds: start.elapsed().as_secs_f64(),
            repack,
            load: report,
            tokenizer,
            template,
            devices,
            constraints: Default::default(),
        })
    }

    /// Compiles `spec` for this model's vocabulary (the first call builds the token
    /// trie). An invalid schema or grammar is an input error with the grammar engine's
    /// message.
    pub fn compile_constraint(&self, spec: &ConstraintSpec) -> Result<Constraint, EngineError> {
        let tok = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        self.constraints.get(tok)?.compile(spec)
    }

    /// A new sequence with room for `n_ctx` positions (an error, with a message, for a
    /// context of 0 positions or one whose KV cache exceeds the machine's memory).
    pub fn sequence(&self, n_ctx: usize) -> Result<Sequence, EngineError> {
        Ok(Sequence::new(
            self.model.clone(),
            self.pool.clone(),
            KvCache::with_types(&self.model.config, self.load.kv_types, n_ctx)?,
            RunState::new(self.mode),
        ))
    }

    /// Activation buffers for [`Engine::forward_batch`] (one per scheduler), sized once
    /// for batches within `max`, so that the steps that follow do not allocate.
    pub fn new_state(&self, max: BatchLimits) -> Result<RunState, EngineError> {
        let mut state = RunState::new(self.mode);
        state.reserve(&self.model, &self.pool, max)?;
        Ok(state)
    }

    /// Runs every sequence's new tokens in ONE forward pass (prompt chunks and decode
    /// steps mixed) and returns each one's last-position logits, `[batch.len() × n_vocab]`,
    /// borrowed from `state` (nothing copied or allocated). A sequence's logits do not
    /// depend on the rest of the batch. The caller appends the tokens to its sequences.
    pub fn forward_batch<'s>(
        &self,
        state: &'s mut RunState,
        batch: &mut [BatchSeq<'_>],
    ) -> Result<&'s [f32], EngineError> {
        Ok(self.model.forward_batch(&self.pool, state, batch)?)
    }

    /// [`forward_batch`](Self::forward_batch) for whole sequences: appends the tokens to
    /// each and returns a copy of each one's last-position logits (for tests and tools;
    /// the scheduler uses `forward_batch`).
    pub fn feed_batch(
        &self,
        state: &mut RunState,
        items: &mut [(&mut Sequence, &[u32])],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let vocab = self.model.config.n_vocab;
        let logits = {
            let mut batch: Vec<BatchSeq> = items
                .iter_mut()
                .map(|(s, toks)| BatchSeq {
                    kv: &mut s.kv,
                    tokens: toks,
                    logits: Logits::Last,
                })
                .collect();
            self.forward_batch(state, &mut batch)?
        };
        let out = logits.chunks_exact(vocab).map(|r| r.to_vec()).collect();
        for (s, toks) in items.iter_mut() {
            s.tokens.extend_from_slice(toks);
        }
        Ok(out)
    }

    /// One line saying what was loaded where: architecture, parameters, tensor types,
    /// threads, SIMD path, memory.
    pub fn summary(&self) -> String {
        let m = &self.model;
        let file = &m.file;
        let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        let mut types = std::collections::BTreeMap::new();
        for t in file.tensors() {
            *types.entry(t.ty).or_insert(0usize) += 1;
        }
        let types: Vec<String> = types.iter().map(|(t, n)| format!("{t}×{n}")).collect();
        let experts = match &m.config.moe {
            Some(moe) => format!(
                ", {}/{} experts per token",
                m.experts_per_token(),
                moe.n_expert
            ),
            None => String::new(),
        };
        format!(
            "{} · {} params ({}){} · {} threads{} · {} kernels{} · weights {} mapped{} · loaded in {:.2}s",
            m.config.arch.name(),
            human_count(params),
            types.join(" "),
            experts,
            self.pool.n_threads(),
            if self.pool.pinned() { " pinned" } else { "" },
            quant::dot::simd_path(),
            if self.mode == MatmulMode::Exact { " (exact f32 reference mode)" } else { "" },
            human_bytes(m.weight_bytes()),
            match &self.repack {
                Some(r) if r.tensors > 0 => {
                    format!(", {} repacked ({} tensors, {:.2}s)", human_bytes(r.bytes as u64), r.tensors, r.seconds)
                }
                _ => String::new(),
            },
            self.load_seconds,
        )
    }
}

/// The extra cost of a step per draft token for `model`: its routed experts' share of
/// the bytes a one-token step reads (the embedding table is read one row a token: left
/// out), and how many experts an extra token adds ([`speculate::step_cost_per_token`]).
fn draft_token_cost(model: &Model) -> f32 {
    let Some(moe) = &model.config.moe else {
        return speculate::DENSE_STEP_COST_PER_TOKEN;
    };
    let used = model.experts_per_token();
    let (mut routed, mut other) = (0u64, 0u64);
    for t in model.file.tensors() {
        if t.name.contains("_exps") {
            routed += t.size;
        } else if !t.name.starts_with("token_embd") && !model.is_unused_tensor(&t.name) {
            other += t.size;
        }
    }
    // Bytes of the experts one token runs.
    let routed_per_token = routed as f64 * used as f64 / moe.n_expert.max(1) as f64;
    let share = routed_per_token / (routed_per_token + other as f64).max(1.0);
    speculate::step_cost_per_token(share as f32, used, moe.n_expert)
}

/// The cost of drafting one token with `model`'s MTP block relative to a one-token step
/// of the trunk, by the bytes each reads (the block's own tensors, its share of routed
/// experts, and the output head it shares; the trunk's likewise), 0 without a block.
fn mtp_draft_cost(model: &Model) -> f32 {
    let c = &model.config;
    if model.nextn().is_err() {
        return 0.0;
    }
    let expert_share = c.moe.as_ref().map_or(1.0, |m| {
        model.experts_per_token() as f64 / m.n_expert.max(1) as f64
    });
    let (mut trunk, mut block, mut head) = (0.0f64, 0.0f64, 0.0f64);
    for t in model.file.tensors() {
        let bytes = t.size as f64
            * if t.name.contains("_exps") {
                expert_share
            } else {
                1.0
            };
        if t.name.starts_with("token_embd") || t.name.contains("nextn.embed_tokens") {
            continue;
        } else if t.name == "output.weight" {
            head += bytes;
        } else if model.is_drafting_block_tensor(&t.name) {
            block += bytes;
        } else if !model.is_unused_tensor(&t.name) {
            trunk += bytes;
        }
    }
    // A tied head is `token_embd`: read whole by the output projection either way.
    if head == 0.0 {
        head = model.weights.output.bytes() as f64;
    }
    ((block + head) / (trunk + head).max(1.0)) as f32
}

/// An empty `Vec` of another lifetime reusing `v`'s allocation (a step's borrowed
/// sequences, kept between steps): collecting a `vec::IntoIter` into a `Vec` of an element
/// with the same layout is done in place.
pub(crate) fn recycle<'a, T: 'a, U: 'a>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

/// Activation scratch the plan reserves: a 512-token step's logits and a generous
/// multiple of the hidden width (an estimate: the buffers grow with the batch).
fn scratch_estimate(c: &model::Config) -> u64 {
    512 * (c.n_vocab as u64 + 16 * c.dim as u64) * 4
}

/// Activation scratch of the MTP block's passes for `seqs` sequences' drafts (see
/// `mtp::MtpPass::new`: a chunk of rows, or a verified step's rows per sequence, and a row
/// of logits per sequence), an estimate as [`scratch_estimate`].
fn mtp_scratch_estimate(c: &model::Config, seqs: u64) -> u64 {
    let rows = mtp::pass_rows(seqs as usize) as u64;
    (rows * 16 * c.dim as u64 + seqs * c.n_vocab as u64) * 4
}

/// Plans memory, then repacks what the plan selects and reads the rest of the weights into
/// the page cache when it all fits, reporting progress in bytes over all parts.
fn place_weights(
    model: &mut Model,
    opts: &LoadOptions,
    devices: &Devices,
    pool: &ThreadPool,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<(LoadReport, Option<model::weights::RepackSummary>), EngineError> {
    let file = model.file.clone();
    let total = file.tensors().iter().map(|t| t.size).sum::<u64>();
    // Cache types the model's rows cannot be stored in are an error that says why, before
    // a plan that could only say the cache does not fit.
    opts.kv.types.check(&model.config)?;
    let kv_ctx = opts.kv.ctx_for(&model.config);
    let mut kv_bytes = opts.kv.bytes(&model.config);
    // A drafting command holds a drafter (its block cache) per cache, and the scratch of
    // their passes once.
    let drafters = match opts.mtp && model.weights.nextn.is_some() {
        true => opts.kv.caches as u64,
        false => 0,
    };
    if drafters > 0 {
        let block = model.nextn_cache_bytes(opts.kv.types, kv_ctx);
        kv_bytes = block
            .and_then(|b| (b as u64).checked_mul(drafters))
            .and_then(|b| b.checked_add(kv_bytes))
            .unwrap_or(u64::MAX);
    }
    let usable = match opts.memory_budget {
        Some(b) => Some((b, format!("--memory-budget {}", human_bytes(b)))),
        None => model::sysmem::MemoryBudget::current().map(|b| (b.usable(), b.describe())),
    };
    let infos = model.weights.tensor_infos(&file);
    let (placed, gpu_plan) = plan_tiers(model, opts, devices, infos)?;
    let targets = placed.requantize_targets();
    let started = std::time::Instant::now();
    let (requantized, _) = model.weights.requantize_planned(pool, &targets)?;
    let requantized = (requantized, started.elapsed().as_secs_f64());
    let mut items = model.weights.plan_items();
    for (item, wanted) in items.iter_mut().zip(placed.repack_wanted()) {
        item.wanted = wanted;
    }
    // `--no-repack` is a placement rule (every matrix mapped unless an earlier rule says
    // otherwise); only the exact mode, which reads the file's layout, repacks nothing.
    let repack = !opts.exact;
    let in_items: u64 = items.iter().map(|i| i.bytes).sum();
    let input = model::memplan::PlanInput {
        other_mapped_bytes: total.saturating_sub(in_items),
        derived_bytes: model.weights.derived_bytes(),
        kv_bytes,
        scratch_bytes: scratch_estimate(&model.config)
            + match drafters {
                0 => 0,
                n => mtp_scratch_estimate(&model.config, n),
            },
        repack,
        usable: usable.clone(),
        items,
    };
    let plan = model::memplan::plan(&input);
    let mut done = 0u64;
    let mut bump = |b: u64| {
        done = (done + b).min(total);
        progress(LoadProgress::Bytes { done, total });
    };
    bump(0);
    let mut summary = if repack {
        Some(
            model
                .weights
                .repack_planned(pool, &plan.repack, &mut bump)?,
        )
    } else {
        None
    };
    // The MTP block, for a command that drafts with it, when everything fits (else it
    // stays mapped, and is read when it runs, as without `mtp`).
    if let (Some(s), true) = (summary.as_mut(), opts.mtp && plan.fits) {
        model.weights.repack_nextn(pool, s, &mut bump)?;
    }
    // The rest stays mapped: read it now if it all stays cached, else leave it to be
    // read on demand (reading it all would only evict itself).
    let outcome = model.weights.storage_outcome();
    let placement_warnings = if repack {
        let repacked: Vec<bool> = outcome.iter().map(|o| o.1).collect();
        let layout: Vec<bool> = outcome.iter().map(|o| o.2).collect();
        placed.refused_repacks(&repacked, &layout)
    } else {
        Vec::new()
    };
    // The GPU tier's weights go up once, now (read from the file or the converted copy).
    let mut gpu_plan = gpu_plan;
    let uploaded = upload_gpu_tier(model, devices, &placed, gpu_plan.as_mut(), &mut bump)?;
    let repacked = model.weights.replaced_file_tensors();
    let rest: Vec<usize> = (0..file.tensors().len())
        .filter(|i| !repacked.contains(i) && !uploaded.contains(&file.tensors()[*i].name))
        .collect();
    let page_in = if plan.fits {
        // Blocks the forward pass never runs (MTP) are not read, but for the one a
        // drafting command runs; count them as done.
        let (unused, read): (Vec<usize>, Vec<usize>) = rest.iter().partition(|&&i| {
            let name = &file.tensors()[i].name;
            model.is_unused_tensor(name) && !(opts.mtp && model.is_drafting_block_tensor(name))
        });
        bump(unused.iter().map(|&i| file.tensors()[i].size).sum());
        model::weights::Weights::page_in(&file, &read, pool, &mut bump)
    } else {
        let skipped: u64 = rest.iter().map(|&i| file.tensors()[i].size).sum();
        bump(skipped);
        Default::default()
    };
    let report = LoadReport {
        parts: file.parts().len(),
        file_bytes: total,
        bind_seconds: 0.0,
        plan,
        usable,
        kv_ctx,
        kv_caches: opts.kv.caches,
        kv_types: opts.kv.types,
        kv_types_text: opts.kv.types.describe(&model.config),
        kv_bytes_per_position: KvCache::bytes_per_position(&model.config, opts.kv.types)
            .map_or(u64::MAX, |b| b as u64),
        kv_bytes,
        repack: summary.unwrap_or_default(),
        page_in,
        requantized,
        placement: placed.lines(&outcome, repack),
        placement_warnings,
        gpu: gpu_plan,
    };
    Ok((report, summary))
}

/// Uploads the matrices `placed` puts on the GPU (if a GPU is open and it puts any there)
/// and makes the model run their stages there; returns their names (read already: not
/// worth paging in).
fn upload_gpu_tier(
    model: &mut Model,
    devices: &Devices,
    placed: &model::placement::PlacedModel,
    plan: Option<&mut GpuPlan>,
    bump: &mut dyn FnMut(u64),
) -> Result<std::collections::HashSet<String>, EngineError> {
    let on_gpu = placed.on_gpu();
    let (Some(gpu), Some(plan)) = (&devices.gpu, plan) else {
        return Ok(Default::default());
    };
    if !on_gpu.iter().any(|&g| g) {
        plan.stages = "nothing".to_string();
        return Ok(Default::default());
    }
    let chosen = model.weights.selected_matrices(&on_gpu);
    let mut types: Vec<gguf::GgmlType> = chosen.iter().map(|(_, _, m)| m.ty).collect();
    // A layer whose attention runs on the GPU computes its MoE router's logits there.
    types.extend(model.weights.layers.iter().filter_map(|l| match &l.ffn {
        model::weights::Ffn::Moe(f) if accel::matmul::gpu_supports(f.router.ty) => {
            Some(f.router.ty)
        }
        _ => None,
    }));
    types.sort();
    types.dedup();
    let names = chosen
        .iter()
        .map(|(_, _, m)| m.name().to_string())
        .collect();
    let backend = model::gpu::WgpuBackend::new(gpu.clone(), &types)?;
    model.attach_device(Arc::new(backend), &on_gpu, bump)?;
    if let Some(d) = &model.device {
        plan.uploaded_bytes = d.bytes;
        plan.upload_seconds = d.seconds;
        plan.stages = d.stages(model);
    }
    Ok(names)
}

/// "2.40 GB/s" for `bytes` in `seconds` (decimal, as storage rates are quoted).
fn rate(bytes: u64, seconds: f64) -> String {
    if seconds > 0.0 {
        format!("{:.2} GB/s", bytes as f64 / seconds / 1e9)
    } else {
        "-".to_string()
    }
}

impl LoadReport {
    /// The load summary, one line per tier, then the plan's warnings (each starting
    /// with "warning: ").
    pub fn lines(&self) -> Vec<String> {
        let p = &self.plan;
        let mut out = vec![format!(
            "load: {} in {} ({}) · bound in {:.2}s",
            human_bytes(self.file_bytes),
            if self.parts > 1 {
                format!("{} parts", self.parts)
            } else {
                "1 file".to_string()
            },
            match &self.usable {
                Some((u, src)) => format!("usable memory {} from {src}", human_bytes(*u)),
                None => "usable memory unknown".to_string(),
            },
            self.bind_seconds
        )];
        out.push(format!(
            "  repacked (anonymous memory): {} tensors, {} read, {} written in {:.2}s ({} read)",
            self.repack.tensors,
            human_bytes(self.repack.file_bytes),
            human_bytes(self.repack.bytes as u64),
            self.repack.seconds,
            rate(self.repack.file_bytes, self.repack.seconds)
        ));
        out.push(if p.fits {
            format!(
                "  mapped (page cache): {}, read in {:.2}s ({})",
                human_bytes(p.mapped_bytes),
                self.page_in.seconds,
                rate(self.page_in.bytes, self.page_in.seconds)
            )
        } else {
            format!(
                "  mapped (page cache): {}, read on demand (does not all fit)",
                human_bytes(p.mapped_bytes)
            )
        });
        out.push(format!(
            "  reserved: KV cache {} ({}{} positions; {}: {} per position), scratch and weights computed at load: {} anonymous in all, {} margin",
            human_bytes(self.kv_bytes),
            if self.kv_caches == 1 {
                String::new()
            } else {
                format!("{} caches × ", self.kv_caches)
            },
            self.kv_ctx,
            self.kv_types_text,
            human_bytes(self.kv_bytes_per_position),
            human_bytes(p.anonymous_bytes),
            human_bytes(p.margin_bytes)
        ));
        if self.requantized.0 > 0 {
            out.push(format!(
                "  requantized at load: {} tensors in {:.2}s",
                self.requantized.0, self.requantized.1
            ));
        }
        if let Some(g) = &self.gpu {
            out.push(format!(
                "  gpu (uploaded): {} tensors, {} in {:.2}s ({}) + {} KV cache (f32, {} layer(s)) + {} scratch, budget {} ({}); runs {}",
                g.tensors,
                human_bytes(g.uploaded_bytes),
                g.upload_seconds,
                rate(g.uploaded_bytes, g.upload_seconds),
                human_bytes(g.kv_bytes),
                g.kv_layers,
                human_bytes(g.scratch_bytes),
                human_bytes(g.budget.0),
                g.budget.1,
                g.stages
            ));
        }
        out.extend(self.placement.iter().cloned());
        out.extend(p.warnings.iter().map(|w| format!("warning: {w}")));
        if let Some(o) = self.gpu.as_ref().and_then(|g| g.overflow.as_ref()) {
            out.push(format!("warning: {o}"));
        }
        if let Some(o) = self.gpu.as_ref().and_then(|g| g.kv_note.as_ref()) {
            out.push(format!("warning: {o}"));
        }
        out.extend(
            self.placement_warnings
                .iter()
                .map(|w| format!("warning: placement: {w}")),
        );
        out
    }
}

/// "3.55 M", "1.54 B".
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.2} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// "2.19 MiB", "14.2 GiB".
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
