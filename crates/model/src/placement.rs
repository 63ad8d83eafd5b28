//! The placement plan: which tier each tensor runs on and how it is stored there, as an
//! ordered list of rules (tensor-name regex → tier and storage; the first match wins).
//!
//! The rules come, in this order, from `--override-tensor` (llama.cpp's `-ot`), the
//! `--placement` file, `--cpu-moe` / `--n-cpu-moe`, `--no-repack`, and last the defaults
//! of the architecture. The first rule whose regex matches a tensor's name (anywhere in
//! it, as llama.cpp's `std::regex_search`) decides its tier; a rule that names no storage
//! leaves the storage to the next matching rule that does (in the end, the defaults).
//!
//! Tiers: `cpu` and `gpu` (`accel` and llama.cpp's buffer names such as `CUDA0` are read as
//! `gpu`); a `gpu` rule needs an open device (`--device`). Storage of a matrix the kernels multiply
//! by: `mapped` (read from the memory-mapped file as stored), `repacked` (copied at load
//! into the kernels' row-interleaved layout, when its type has one and the memory plan
//! lets it fit) or `requantized:TYPE` (converted at load to TYPE, then repacked when TYPE
//! has a layout). The other tensors (embeddings looked up by row, norms, routers) are
//! always read as stored.

use std::collections::BTreeMap;
use std::fmt;

use gguf::GgmlType;
use regex::Regex;

use crate::memplan::WeightClass;

/// Where a tensor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Cpu,
    /// The GPU `--device` opened (`accel`): its weights are uploaded once at load and the
    /// stages they belong to run there.
    Gpu,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Cpu => "cpu",
            Tier::Gpu => "gpu",
        }
    }

    /// `cpu` or `gpu` (`accel` is an alias), case-insensitive, and llama.cpp's buffer
    /// names: `CPU` is the CPU tier, the GPU backends' buffers (`CUDA0`, `Vulkan1`,
    /// `Metal`, ...) the GPU tier.
    pub fn parse(s: &str) -> Option<Tier> {
        let lower = s.to_ascii_lowercase();
        if lower == "cpu" {
            return Some(Tier::Cpu);
        }
        if lower == "accel" || lower == "gpu" {
            return Some(Tier::Gpu);
        }
        const GPU_BACKENDS: [&str; 9] = [
            "cuda", "rocm", "hip", "vulkan", "metal", "sycl", "opencl", "cann", "musa",
        ];
        GPU_BACKENDS
            .iter()
            .any(|b| {
                lower
                    .strip_prefix(b)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
            })
            .then_some(Tier::Gpu)
    }
}

/// How a matrix is stored on its tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Storage {
    /// Read from the memory-mapped file, in the file's layout.
    Mapped,
    /// Repacked at load into the kernels' row-interleaved layout (anonymous memory).
    Repacked,
    /// Converted at load to this type, then repacked when the type has a layout.
    Requantized(GgmlType),
}

/// The types `requantized:TYPE` converts to: those the repo's weight quantizers write
/// (`quant::quantize`) and the kernels multiply by.
pub const REQUANTIZE_TYPES: [GgmlType; 10] = {
    use GgmlType::*;
    [F32, F16, BF16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, MXFP4]
};

impl Storage {
    /// `mapped`, `repacked` or `requantized:TYPE` (case-insensitive).
    pub fn parse(s: &str) -> Result<Storage, String> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "mapped" => return Ok(Storage::Mapped),
            "repacked" => return Ok(Storage::Repacked),
            _ => {}
        }
        let Some(ty) = lower.strip_prefix("requantized:") else {
            return Err(format!(
                "unknown storage '{s}' (expected mapped, repacked or requantized:TYPE)"
            ));
        };
        match GgmlType::from_name(ty) {
            Some(t) if REQUANTIZE_TYPES.contains(&t) => Ok(Storage::Requantized(t)),
            _ => Err(format!(
                "cannot requantize to '{ty}' (types: {})",
                REQUANTIZE_TYPES.map(|t| t.name()).join(", ")
            )),
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Mapped => f.write_str("mapped"),
            Storage::Repacked => f.write_str("repacked"),
            Storage::Requantized(t) => write!(f, "requantized:{t}"),
        }
    }
}

/// A rule that cannot be used, named as the user wrote it.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("placement rule {rule}: {problem}")]
    BadRule { rule: String, problem: String },
    #[error("placement file {path}: {problem}")]
    File { path: String, problem: String },
}

fn bad(rule: &str, problem: impl Into<String>) -> PlacementError {
    PlacementError::BadRule {
        rule: rule.to_string(),
        problem: problem.into(),
    }
}

/// One rule: tensors whose name matches `pattern` go to `tier`, stored as `storage`
/// (`None`: as the next matching rule that names a storage says).
#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: Regex,
    pub tier: Tier,
    pub storage: Option<Storage>,
    /// How it was given, for messages: `--override-tensor 'exps=CPU'`, `plan.toml rule 2`.
    pub origin: String,
    /// Rules the user did not write (the defaults, `--no-repack`) may match nothing.
    pub builtin: bool,
    /// The rule sets only the storage (`--no-repack`): the tier comes from the next
    /// matching rule.
    pub storage_only: bool,
}

impl Rule {
    /// A rule from its parts, checking the regex; `origin` names it in errors.
    pub fn new(
        origin: String,
        regex: &str,
        tier: &str,
        storage: Option<&str>,
    ) -> Result<Rule, PlacementError> {
        if regex.is_empty() {
            return Err(bad(&origin, "empty tensor-name regex"));
        }
        let pattern = Regex::new(regex).map_err(|e| bad(&origin, format!("invalid regex: {e}")))?;
        let tier = Tier::parse(tier).ok_or_else(|| {
            bad(
                &origin,
                format!(
                    "unknown tier '{tier}' (expected cpu or gpu; llama.cpp's CPU and CUDA0 are accepted)"
                ),
            )
        })?;
        let storage = storage
            .map(Storage::parse)
            .transpose()
            .map_err(|e| bad(&origin, e))?;
        Ok(Rule {
            pattern,
            tier,
            storage,
            origin,
            builtin: false,
            storage_only: false,
        })
    }

    fn builtin(origin: &str, regex: &str, tier: Tier, storage: Storage) -> Rule {
        Rule {
            pattern: Regex::new(regex).expect("built-in placement regex"),
            tier,
            storage: Some(storage),
            origin: origin.to_string(),
            builtin: true,
            storage_only: false,
        }
    }

    /// The GPU memory plan's rule: the layers `0..n` stay on the CPU (repacked), or
    /// everything does (`None`), because the GPU tier's budget does not hold them (`why`).
    pub fn gpu_overflow(n: Option<usize>, why: &str) -> Rule {
        let (regex, what) = match n {
            None => (".*".to_string(), "everything on the CPU".to_string()),
            Some(n) => {
                let layers: Vec<String> = (0..n).map(|l| l.to_string()).collect();
                (
                    format!(r"^blk\.({})\.", layers.join("|")),
                    format!("layers 0..{} on the CPU", n.saturating_sub(1)),
                )
            }
        };
        Rule {
            pattern: Regex::new(&regex).expect("layer regex"),
            tier: Tier::Cpu,
            storage: Some(Storage::Repacked),
            origin: format!("GPU memory plan: {what} ({why})"),
            builtin: true,
            storage_only: false,
        }
    }

    /// `REGEX=TIER[:STORAGE]`, several separated by commas (llama.cpp's `-ot` spelling:
    /// `exps=CPU`). Commas inside `{}`, `[]` or `()` belong to the regex; the tier is
    /// after the last `=`, so a regex may hold `=` too.
    pub fn parse_override(spec: &str) -> Result<Vec<Rule>, PlacementError> {
        split_outside_brackets(spec)
            .into_iter()
            .map(|one| {
                let origin = format!("--override-tensor '{one}'");
                let Some((regex, target)) = one.rsplit_once('=') else {
                    return Err(bad(
                        &origin,
                        "expected REGEX=TIER[:STORAGE], e.g. exps=cpu:mapped",
                    ));
                };
                let (tier, storage) = match target.split_once(':') {
                    Some((t, s)) => (t, Some(s)),
                    None => (target, None),
                };
                Rule::new(origin, regex, tier, storage)
            })
            .collect()
    }

    /// The rules of a placement file (TOML):
    ///
    /// ```toml
    /// [[rule]]
    /// tensors = "ffn_.*_exps"   # regex over tensor names
    /// tier = "cpu"
    /// storage = "mapped"        # optional: mapped | repacked | requantized:TYPE
    /// ```
    pub fn parse_toml(path: &str, text: &str) -> Result<Vec<Rule>, PlacementError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileRule {
            tensors: String,
            tier: String,
            storage: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            rule: Vec<FileRule>,
        }
        let file: File = toml::from_str(text).map_err(|e| PlacementError::File {
            path: path.to_string(),
            problem: e.to_string().trim_end().to_string(),
        })?;
        if file.rule.is_empty() {
            return Err(PlacementError::File {
                path: path.to_string(),
                problem: "no [[rule]] tables".into(),
            });
        }
        file.rule
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let origin = format!("{path} rule {} (tensors = {:?})", i + 1, r.tensors);
                Rule::new(origin, &r.tensors, &r.tier, r.storage.as_deref())
            })
            .collect()
    }

    /// `--cpu-moe`: every routed expert tensor on the CPU (llama.cpp's meaning).
    pub fn cpu_moe() -> Rule {
        Rule {
            pattern: Regex::new(EXPERTS).expect("expert regex"),
            tier: Tier::Cpu,
            storage: None,
            origin: "--cpu-moe".into(),
            builtin: false,
            storage_only: false,
        }
    }

    /// `--n-cpu-moe N`: the routed experts of the first `n` layers on the CPU (none for 0).
    pub fn n_cpu_moe(n: usize) -> Result<Option<Rule>, PlacementError> {
        let origin = format!("--n-cpu-moe {n}");
        if n == 0 {
            return Ok(None);
        }
        if n > 10_000 {
            return Err(bad(&origin, "more layers than any model has"));
        }
        let layers: Vec<String> = (0..n).map(|l| l.to_string()).collect();
        let regex = format!(r"^blk\.({})\.ffn_(up|down|gate)_exps", layers.join("|"));
        Ok(Some(Rule {
            pattern: Regex::new(&regex).map_err(|e| bad(&origin, e.to_string()))?,
            tier: Tier::Cpu,
            storage: None,
            origin,
            builtin: false,
            storage_only: false,
        }))
    }
}

/// The routed experts' tensors, as llama.cpp's `--cpu-moe` names them.
const EXPERTS: &str = r"\.ffn_(up|down|gate)_exps";

/// Splits `a,b{1,2},c` at the commas outside brackets.
fn split_outside_brackets(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start, mut escaped) = (Vec::new(), 0i32, 0, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// What the GPU tier runs today: attention with its KV cache — grouped-query, or
/// DeepSeek's latent attention (MLA) with its latent cache — (the cache in GPU memory, the
/// norms, biases and the MoE router's logits with it), the SiLU-gated FFNs (dense layers
/// and shared experts) and the output head (`crate::gpu`). The routed experts and
/// DeepSeek-V3.2's lightning indexer (and so that model's attention) stay on the CPU. The
/// default rule with a GPU puts these tensors there (MLA's matrices computed at load, e.g.
/// `attn_k_b` transposed, are named after their tensor with a note in parentheses).
pub const GPU_RUNS: &str = r"^blk\.\d+\.(ffn_(gate|up|down)(_shexp)?|attn_(q|k|v|output|q_a|q_b|kv_a_mqa|kv_b|k_b|v_b))\.weight( \(.+\))?$|^output\.weight$";

/// DeepSeek-V3.2's lightning indexer tensors (no GPU stage: see [`GPU_RUNS`]).
const INDEXER_TENSORS: &str = r"^blk\.\d+\.indexer\.";

/// The weight classes the GPU tier can run (see [`GPU_RUNS`]).
pub fn gpu_runs(class: WeightClass) -> bool {
    matches!(
        class,
        WeightClass::Attention
            | WeightClass::DenseFfn
            | WeightClass::SharedExperts
            | WeightClass::Output
    )
}

/// The ordered rules: the user's, then `--no-repack`'s, then the architecture's defaults.
#[derive(Clone, Debug)]
pub struct Placement {
    rules: Vec<Rule>,
    /// Whether a GPU is open (the `gpu` tier exists).
    gpu: bool,
}

/// What the rules decide for one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub tier: Tier,
    pub storage: Storage,
    /// Index of the rule that decided the tier.
    pub rule: usize,
    /// Index of the rule that decided the storage.
    pub storage_rule: usize,
}

impl Placement {
    /// `user` rules first (in their order), then `--no-repack` when `no_repack` (every
    /// matrix mapped), then the defaults for `arch`.
    pub fn new(user: Vec<Rule>, no_repack: bool, arch: crate::Arch) -> Placement {
        Self::for_tiers(user, no_repack, arch, false, None)
    }

    /// [`Placement::new`] with the `gpu` tier when `gpu` (a device is open): then the
    /// defaults put what the GPU tier runs there ([`GPU_RUNS`]) and the routed experts on
    /// the CPU. `overflow` (the GPU memory plan's rule, [`Rule::gpu_overflow`]) comes after
    /// the user's rules.
    pub fn for_tiers(
        user: Vec<Rule>,
        no_repack: bool,
        arch: crate::Arch,
        gpu: bool,
        overflow: Option<Rule>,
    ) -> Placement {
        let mut rules = user;
        if no_repack {
            let mut r = Rule::builtin("--no-repack", ".*", Tier::Cpu, Storage::Mapped);
            r.storage_only = true;
            rules.push(r);
        }
        rules.extend(overflow);
        if gpu {
            rules.extend(Self::gpu_defaults(arch));
        }
        rules.extend(Self::defaults(arch));
        Placement { rules, gpu }
    }

    /// Whether the `gpu` tier exists (a device is open).
    pub fn has_gpu(&self) -> bool {
        self.gpu
    }

    /// The defaults with a GPU, before [`Placement::defaults`]: routed experts on the CPU
    /// (repacked), then what the GPU tier runs on the GPU (the CPU keeps only the mapped
    /// file for them).
    pub fn gpu_defaults(arch: crate::Arch) -> Vec<Rule> {
        let origin = format!("default for {} with a GPU", arch.name());
        vec![
            Rule::builtin(&origin, EXPERTS, Tier::Cpu, Storage::Repacked),
            Rule::builtin(&origin, GPU_RUNS, Tier::Gpu, Storage::Mapped),
        ]
    }

    /// The defaults of an architecture. Every architecture runs on the CPU today, with
    /// every matrix repacked where its type has a layout and the memory plan lets it fit
    /// (attention, dense and shared parts first, then the routed experts); the
    /// accelerator tier will make these differ (e.g. attention on the GPU, experts not).
    pub fn defaults(arch: crate::Arch) -> Vec<Rule> {
        let origin = format!("default for {}", arch.name());
        vec![Rule::builtin(&origin, ".*", Tier::Cpu, Storage::Repacked)]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first matching rule's tier, and the storage of the first matching rule that
    /// names one. Every name matches the defaults' last rule.
    pub fn decide(&self, name: &str) -> Decision {
        let (mut tier, mut storage) = (None, None);
        for (i, r) in self.rules.iter().enumerate() {
            if !r.pattern.is_match(name) {
                continue;
            }
            if tier.is_none() && !r.storage_only {
                tier = Some((r.tier, i));
            }
            if storage.is_none() {
                storage = r.storage.map(|s| (s, i));
            }
            if tier.is_some() && storage.is_some() {
                break;
            }
        }
        // The defaults end with `.*` and a storage: the fallbacks are not reached.
        let last = self.rules.len().saturating_sub(1);
        let (tier, rule) = tier.unwrap_or((Tier::Cpu, last));
        let (storage, storage_rule) = storage.unwrap_or((Storage::Repacked, last));
        Decision {
            tier,
            storage,
            rule,
            storage_rule,
        }
    }
}

/// A tensor as the placement sees it.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// `None`: not a matrix the kernels multiply by (embeddings, norms, routers).
    pub class: Option<WeightClass>,
    pub ty: GgmlType,
    /// Row length (for the block size of `requantized:TYPE`).
    pub n_in: usize,
    /// Rows of `n_in` values per slab, and in all slabs.
    pub n_out: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Whether it is computed at load (not read from the file).
    pub derived: bool,
}

/// The plan for one model: a decision per tensor, checked.
#[derive(Clone, Debug)]
pub struct PlacedModel {
    pub placement: Placement,
    pub tensors: Vec<TensorInfo>,
    pub decisions: Vec<Decision>,
    /// Rule notes for the summaries (`--cpu-moe` with no accelerator, rules that ask for
    /// what a tensor cannot have).
    pub notes: Vec<String>,
}

impl PlacedModel {
    /// Decides every tensor and checks the rules: a user rule must match some tensor, no
    /// rule may use the accelerator tier yet, and `requantized:TYPE` must fit the rows.
    pub fn new(
        placement: Placement,
        tensors: Vec<TensorInfo>,
    ) -> Result<PlacedModel, PlacementError> {
        for r in placement.rules() {
            if r.tier == Tier::Gpu && !placement.gpu {
                return Err(bad(
                    &r.origin,
                    "no GPU is open (--device cpu, or --device auto found no discrete GPU): choose one with --device gpu:N (`ferromoe devices` lists them) or use the cpu tier",
                ));
            }
            if !r.builtin && !tensors.iter().any(|t| r.pattern.is_match(&t.name)) {
                return Err(bad(
                    &r.origin,
                    format!(
                        "matches no tensor of this model (names look like {})",
                        example_names(&tensors)
                    ),
                ));
            }
        }
        let mut decisions: Vec<Decision> =
            tensors.iter().map(|t| placement.decide(&t.name)).collect();
        check_gate_up(&placement, &tensors, &decisions)?;
        let mut notes = keep_what_the_gpu_cannot_run(&placement, &tensors, &mut decisions);
        for (ri, r) in placement.rules().iter().enumerate() {
            if r.builtin {
                continue;
            }
            if r.origin.contains("cpu-moe") {
                notes.push(format!(
                    "{}: routed experts stay on the CPU{}",
                    r.origin,
                    if placement.gpu {
                        ""
                    } else {
                        " (every tensor does: no GPU is open)"
                    }
                ));
            }
            let mut stays = Vec::new();
            for (t, d) in tensors.iter().zip(&decisions) {
                if d.storage_rule != ri {
                    continue;
                }
                if let Storage::Requantized(to) = d.storage {
                    if t.class.is_some() && t.n_in % to.block_size() != 0 {
                        return Err(bad(
                            &r.origin,
                            format!(
                                "{}: rows of {} values are not whole {to} blocks of {}",
                                t.name,
                                t.n_in,
                                to.block_size()
                            ),
                        ));
                    }
                }
                if t.class.is_none() && d.storage != Storage::Mapped {
                    stays.push(t.name.as_str());
                }
            }
            if let Some(first) = stays.first() {
                notes.push(format!(
                    "{} asks {} of {} tensor(s) the kernels do not multiply by (embeddings, norms, routers; e.g. {first}): they are read as stored",
                    r.origin,
                    r.storage.map_or("a storage".to_string(), |s| s.to_string()),
                    stays.len()
                ));
            }
        }
        Ok(PlacedModel {
            placement,
            tensors,
            decisions,
            notes,
        })
    }

    /// Per matrix (the tensors with a class, in order): the type to convert it to.
    pub fn requantize_targets(&self) -> Vec<Option<GgmlType>> {
        self.matrices()
            .map(|(t, d)| match d.storage {
                Storage::Requantized(to) if to != t.ty => Some(to),
                _ => None,
            })
            .collect()
    }

    /// Per matrix: whether its storage asks for a repacked copy (never for the GPU tier:
    /// the GPU gets the file's bytes, or the converted ones).
    pub fn repack_wanted(&self) -> Vec<bool> {
        self.matrices()
            .map(|(_, d)| d.storage != Storage::Mapped && d.tier == Tier::Cpu)
            .collect()
    }

    /// Per matrix: whether it runs on the GPU tier.
    pub fn on_gpu(&self) -> Vec<bool> {
        self.matrices().map(|(_, d)| d.tier == Tier::Gpu).collect()
    }

    /// The layers whose attention the plan puts on the GPU (their KV cache goes there).
    pub fn gpu_attention_layers(&self, n_layer: usize) -> Vec<bool> {
        let mut on = vec![false; n_layer];
        for (t, d) in self.matrices() {
            if t.class == Some(WeightClass::Attention) && d.tier == Tier::Gpu {
                if let Some(l) = layer_of(&t.name).filter(|&l| l < n_layer) {
                    on[l] = true;
                }
            }
        }
        on
    }

    /// Bytes the GPU tier's weights take (after conversion).
    pub fn gpu_bytes(&self) -> u64 {
        self.matrices()
            .filter(|(_, d)| d.tier == Tier::Gpu)
            .map(|(t, d)| final_bytes(t, d))
            .sum()
    }

    /// Per layer, the bytes of its weights on the GPU tier (for the GPU memory plan).
    pub fn gpu_bytes_per_layer(&self, n_layer: usize) -> Vec<u64> {
        let mut v = vec![0u64; n_layer];
        for (t, d) in self.matrices().filter(|(_, d)| d.tier == Tier::Gpu) {
            if let Some(l) = layer_of(&t.name).filter(|&l| l < n_layer) {
                v[l] += final_bytes(t, d);
            }
        }
        v
    }

    fn matrices(&self) -> impl Iterator<Item = (&TensorInfo, &Decision)> {
        self.tensors
            .iter()
            .zip(&self.decisions)
            .filter(|(t, _)| t.class.is_some())
    }

    /// Warnings for matrices a user rule asked to repack that stay unrepacked: `repacked`
    /// is, per matrix, what the load did; `has_layout` whether its (final) type has a
    /// repacked layout.
    pub fn refused_repacks(&self, repacked: &[bool], has_layout: &[bool]) -> Vec<String> {
        let mut by_rule: BTreeMap<usize, (usize, u64, usize)> = BTreeMap::new();
        for (((_, d), &r), &layout) in self.matrices().zip(repacked).zip(has_layout) {
            let rule = &self.placement.rules()[d.storage_rule];
            if rule.builtin || d.storage == Storage::Mapped || r {
                continue;
            }
            let e = by_rule.entry(d.storage_rule).or_default();
            if layout {
                e.0 += 1;
            } else {
                e.2 += 1;
            }
        }
        let mut out = Vec::new();
        for (ri, (no_room, _, no_layout)) in by_rule {
            let origin = &self.placement.rules()[ri].origin;
            if no_room > 0 {
                out.push(format!(
                    "{origin} asks to repack {no_room} tensor(s) that the memory plan left mapped (they do not fit)"
                ));
            }
            if no_layout > 0 {
                out.push(format!(
                    "{origin}: {no_layout} tensor(s) have a type with no repacked layout ({} have one): they are not repacked",
                    types_with_layout()
                ));
            }
        }
        out
    }

    /// How the matrices will be stored if the memory plan lets every asked-for repack
    /// fit: per matrix (type after conversion, repacked, has a repacked layout), as
    /// [`crate::Weights::storage_outcome`] reports after the load. For `inspect --plan`.
    pub fn predicted_outcome(&self) -> Vec<(GgmlType, bool, bool)> {
        self.matrices()
            .map(|(t, d)| {
                let ty = match d.storage {
                    Storage::Requantized(to) => to,
                    _ => t.ty,
                };
                let layout = quant::repack::PackedType::for_type(ty)
                    .and_then(|pt| pt.matrix_bytes(t.n_in, t.n_out))
                    .is_some_and(|b| b > 0);
                (ty, layout && d.storage != Storage::Mapped, layout)
            })
            .collect()
    }

    /// One row per (group, tier, storage, rules) with tensors and bytes, then the bytes
    /// per tier, then the notes. `outcome[i]` says how the i-th matrix ended up stored:
    /// (its type, whether repacked, whether its type has a repacked layout); `repacking`
    /// is false in the exact mode (nothing is repacked).
    pub fn lines(&self, outcome: &[(GgmlType, bool, bool)], repacking: bool) -> Vec<String> {
        type Key = ((u8, &'static str), Tier, String, (usize, usize));
        let mut rows: BTreeMap<Key, (usize, u64)> = BTreeMap::new();
        let mut per_tier: BTreeMap<Tier, BTreeMap<&'static str, u64>> = BTreeMap::new();
        let mut m = 0;
        for (t, d) in self.tensors.iter().zip(&self.decisions) {
            let (group, storage, kind, bytes) = match t.class {
                Some(c) => {
                    let (ty, packed, layout) =
                        outcome.get(m).copied().unwrap_or((t.ty, false, false));
                    m += 1;
                    let converted = if ty != t.ty {
                        Some(format!("requantized:{ty}"))
                    } else if t.derived {
                        Some("computed at load".to_string())
                    } else {
                        None
                    };
                    let (storage, kind) = match (converted, packed) {
                        (c, _) if d.tier == Tier::Gpu => (
                            c.map_or("uploaded".to_string(), |c| format!("{c}, uploaded")),
                            "uploaded",
                        ),
                        (None, false) => {
                            let why = match (d.storage, layout, repacking) {
                                (Storage::Mapped, _, _) => "",
                                (_, _, false) => " (exact mode)",
                                (_, false, _) => " (no repacked layout)",
                                (_, true, _) => " (did not fit in memory)",
                            };
                            (format!("mapped{why}"), "mapped")
                        }
                        (None, true) => ("repacked".to_string(), "repacked"),
                        (Some(c), true) => (format!("{c}, repacked"), "repacked"),
                        (Some(c), false) => (c, "converted at load"),
                    };
                    let bytes = ty
                        .row_bytes(t.n_in as u64)
                        .map_or(t.bytes, |rb| rb * t.rows);
                    ((c as u8, c.name()), storage, kind, bytes)
                }
                None => ((u8::MAX, "other"), "mapped".to_string(), "mapped", t.bytes),
            };
            *per_tier.entry(d.tier).or_default().entry(kind).or_default() += bytes;
            let e = rows
                .entry((group, d.tier, storage, (d.rule, d.storage_rule)))
                .or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        let mut out = vec![format!(
            "placement ({} rule(s), the first match decides):",
            self.placement.rules().len()
        )];
        for (i, r) in self.placement.rules().iter().enumerate() {
            let decides = self
                .decisions
                .iter()
                .filter(|d| d.rule == i || d.storage_rule == i)
                .count();
            let tier = if r.storage_only {
                "(any tier)"
            } else {
                r.tier.name()
            };
            out.push(format!(
                "  rule {}: {} → {tier}{} ({}): decides {decides} tensor(s)",
                i + 1,
                r.pattern.as_str(),
                r.storage.map_or(String::new(), |s| format!(":{s}")),
                r.origin
            ));
        }
        for ((group, tier, storage, (rule, storage_rule)), (n, bytes)) in &rows {
            let group = if group.0 == u8::MAX {
                "other (embeddings, norms, routers)"
            } else {
                group.1
            };
            let rules = if rule == storage_rule {
                format!("rule {}", rule + 1)
            } else {
                format!("rules {}+{}", rule + 1, storage_rule + 1)
            };
            out.push(format!(
                "  {group}: {} · {storage} · {n} tensor(s), {} · {rules}",
                tier.name(),
                human_bytes(*bytes),
            ));
        }
        for (tier, kinds) in &per_tier {
            let total: u64 = kinds.values().sum();
            let parts: Vec<String> = kinds
                .iter()
                .map(|(k, b)| format!("{k} {}", human_bytes(*b)))
                .collect();
            out.push(format!(
                "  {} tier: {} ({})",
                tier.name(),
                human_bytes(total),
                parts.join(", ")
            ));
        }
        if !per_tier.contains_key(&Tier::Gpu) {
            out.push(if self.placement.gpu {
                "  gpu tier: none (no rule puts a tensor the GPU runs there)".to_string()
            } else {
                "  gpu tier: none (no GPU open: see --device)".to_string()
            });
        }
        out.extend(self.notes.iter().map(|n| format!("  note: {n}")));
        out
    }
}

/// Bytes of a matrix after its storage's conversion.
fn final_bytes(t: &TensorInfo, d: &Decision) -> u64 {
    match d.storage {
        Storage::Requantized(to) => to
            .row_bytes(t.n_in as u64)
            .map_or(t.bytes, |rb| rb * t.rows),
        _ => t.bytes,
    }
}

/// `blk.N.…` → N.
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The tensor types the GPU's matmul shaders read (`accel::matmul`).
pub fn gpu_type_supported(ty: GgmlType) -> bool {
    accel::matmul::gpu_supports(ty)
}

/// Moves back to the CPU what a rule put on the GPU but the GPU tier cannot run: tensors
/// that are not matrices (embeddings, norms, routers: read on the CPU), stages it has no
/// shaders for yet (attention, routed experts), types its matmul does not read, and the
/// rest of a stage any of whose matrices stays on the CPU (a stage runs where all its
/// weights are). Returns one note per reason and rule.
fn keep_what_the_gpu_cannot_run(
    placement: &Placement,
    tensors: &[TensorInfo],
    decisions: &mut [Decision],
) -> Vec<String> {
    let mut why: BTreeMap<(usize, &'static str), usize> = BTreeMap::new();
    let last = placement.rules().len().saturating_sub(1);
    let mut demote = |d: &mut Decision, reason: &'static str| {
        *why.entry((d.rule, reason)).or_default() += 1;
        d.tier = Tier::Cpu;
        if placement.rules()[d.storage_rule].tier == Tier::Gpu {
            // The storage came with the GPU rule (what the GPU keeps): repack for the CPU.
            d.storage = Storage::Repacked;
            d.storage_rule = last;
        }
    };
    let indexer = Regex::new(INDEXER_TENSORS).expect("indexer tensor regex");
    // A layer with a lightning indexer keeps its whole attention on the CPU.
    let indexer_layers: std::collections::HashSet<Option<usize>> = tensors
        .iter()
        .filter(|t| indexer.is_match(&t.name))
        .map(|t| layer_of(&t.name))
        .collect();
    for (t, d) in tensors.iter().zip(decisions.iter_mut()) {
        if d.tier != Tier::Gpu {
            continue;
        }
        if t.class == Some(WeightClass::Attention) && indexer_layers.contains(&layer_of(&t.name)) {
            demote(
                d,
                "the GPU tier has no lightning indexer: DeepSeek-V3.2's attention stays on the CPU",
            );
            continue;
        }
        let ty = match d.storage {
            Storage::Requantized(to) => to,
            _ => t.ty,
        };
        match t.class {
            None => demote(d, "embeddings, norms and routers are read on the CPU"),
            Some(c) if !gpu_runs(c) => demote(
                d,
                "the GPU tier does not run routed experts: they stay on the CPU",
            ),
            Some(_) if !gpu_type_supported(ty) => demote(
                d,
                "their type has no GPU matmul (accel::matmul::GPU_MATMUL_TYPES; requantized:TYPE converts)",
            ),
            Some(_) => {}
        }
    }
    // A stage runs on one tier: (layer, class) groups with a CPU member go to the CPU.
    let mut cpu_stage = std::collections::HashSet::new();
    for (t, d) in tensors.iter().zip(decisions.iter()) {
        if let (Some(c), Tier::Cpu) = (t.class, d.tier) {
            cpu_stage.insert((layer_of(&t.name), c));
        }
    }
    for (t, d) in tensors.iter().zip(decisions.iter_mut()) {
        if let (Some(c), Tier::Gpu) = (t.class, d.tier) {
            if cpu_stage.contains(&(layer_of(&t.name), c)) {
                demote(
                    d,
                    "the rest of their stage is on the CPU (a stage runs where all its weights are)",
                );
            }
        }
    }
    why.into_iter()
        .map(|((rule, reason), n)| {
            format!(
                "{}: {n} tensor(s) stay on the CPU: {reason}",
                placement.rules()[rule].origin
            )
        })
        .collect()
}

/// The fused expert matmuls quantize a token's input once for the gate and up experts of
/// a layer: their types after conversion must share an activation type.
fn check_gate_up(
    placement: &Placement,
    tensors: &[TensorInfo],
    decisions: &[Decision],
) -> Result<(), PlacementError> {
    let final_ty = |i: usize| match decisions[i].storage {
        Storage::Requantized(to) if tensors[i].class.is_some() => to,
        _ => tensors[i].ty,
    };
    for (g, t) in tensors.iter().enumerate() {
        if t.class.is_none() || !t.name.contains("ffn_gate_exps") {
            continue;
        }
        let up_name = t.name.replace("ffn_gate_exps", "ffn_up_exps");
        let Some(u) = tensors.iter().position(|u| u.name == up_name) else {
            continue;
        };
        let (gt, ut) = (final_ty(g), final_ty(u));
        if quant::dot::act_type_for(gt) != quant::dot::act_type_for(ut) {
            let culprit = if gt != t.ty { g } else { u };
            return Err(bad(
                &placement.rules()[decisions[culprit].storage_rule].origin,
                format!(
                    "{} would be {gt} and {up_name} {ut}: a layer's gate and up experts must be converted alike (e.g. ffn_(gate|up)_exps)",
                    t.name
                ),
            ));
        }
    }
    Ok(())
}

/// A few tensor names, for the error of a rule that matches none.
fn example_names(tensors: &[TensorInfo]) -> String {
    let names: Vec<&str> = tensors
        .iter()
        .filter(|t| t.class.is_some())
        .map(|t| t.name.as_str())
        .take(3)
        .collect();
    names.join(", ")
}

/// "2.19 MiB" (binary units, as the load summary).
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The weight types that have a repacked layout, for messages (`"Q4_0, Q8_0, …"`).
fn types_with_layout() -> String {
    quant::dot::DOT_TYPES
        .iter()
        .filter(|t| quant::repack::PackedType::for_type(**t).is_some())
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;

    fn rules(spec: &str) -> Vec<Rule> {
        Rule::parse_override(spec).unwrap()
    }

    fn err(r: Result<impl fmt::Debug, PlacementError>) -> String {
        r.unwrap_err().to_string()
    }

    fn matrix(name: &str, class: WeightClass, ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            class: Some(class),
            ty,
            n_in: 256,
            n_out: 8,
            rows: 8,
            bytes: ty.row_bytes(256).unwrap() * 8,
            derived: false,
        }
    }

    /// One MoE layer: attention, routed experts, a norm and the router.
    fn tensors() -> Vec<TensorInfo> {
        use GgmlType::*;
        use WeightClass::*;
        let mut v = vec![
            matrix("blk.0.attn_q.weight", Attention, Q4_K),
            matrix("blk.0.attn_output.weight", Attention, Q4_K),
            matrix("blk.0.ffn_gate_exps.weight", RoutedExperts, Q4_K),
            matrix("blk.0.ffn_up_exps.weight", RoutedExperts, Q4_K),
            matrix("blk.0.ffn_down_exps.weight", RoutedExperts, Q6_K),
        ];
        let mut norm = matrix("blk.0.attn_norm.weight", Attention, F32);
        norm.class = None;
        v.push(norm);
        v
    }

    #[test]
    fn override_spellings_parse_and_split_at_commas_outside_brackets() {
        let r = rules(r"exps=CPU,blk\.[0-9]{1,2}\.attn=cpu:requantized:q8_0,a=b=cpu:mapped");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].pattern.as_str(), "exps");
        assert_eq!((r[0].tier, r[0].storage), (Tier::Cpu, None));
        assert_eq!(r[1].pattern.as_str(), r"blk\.[0-9]{1,2}\.attn");
        assert_eq!(r[1].storage, Some(Storage::Requantized(GgmlType::Q8_0)));
        // The tier follows the last '=': a regex may hold '='.
        assert_eq!(r[2].pattern.as_str(), "a=b");
        assert_eq!(r[2].storage, Some(Storage::Mapped));
        assert_eq!(r[0].origin, "--override-tensor 'exps=CPU'");
        for accel in ["accel", "CUDA0", "Vulkan1", "Metal", "gpu"] {
            assert_eq!(rules(&format!("x={accel}"))[0].tier, Tier::Gpu, "{accel}");
        }
        assert_eq!(rules("x=cpu:Repacked")[0].storage, Some(Storage::Repacked));
    }

    #[test]
    fn bad_override_rules_are_named() {
        for (spec, want) in [
            (
                "exps",
                "--override-tensor 'exps': expected REGEX=TIER[:STORAGE]",
            ),
            (
                "exps=disk",
                "--override-tensor 'exps=disk': unknown tier 'disk'",
            ),
            (
                "exps=cpu:packed",
                "--override-tensor 'exps=cpu:packed': unknown storage 'packed'",
            ),
            ("ex(ps=cpu", "--override-tensor 'ex(ps=cpu': invalid regex"),
            ("=cpu", "--override-tensor '=cpu': empty tensor-name regex"),
            (
                "exps=cpu:requantized:IQ2_XS",
                "--override-tensor 'exps=cpu:requantized:IQ2_XS': cannot requantize to 'iq2_xs'",
            ),
            ("exps=cpu:requantized:Q8_1", "cannot requantize to 'q8_1'"),
        ] {
            let e = err(Rule::parse_override(spec));
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn toml_rules_parse_in_order_and_bad_ones_are_named() {
        let text = r#"
# experts stay mapped, attention converted
[[rule]]
tensors = "ffn_.*_exps"
tier = "cpu"
storage = "mapped"

[[rule]]
tensors = 'attn_(q|output)'
tier = "CPU"
storage = "requantized:Q8_0"

[[rule]]
tensors = "output"
tier = "cpu"
"#;
        let r = Rule::parse_toml("plan.toml", text).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].pattern.as_str(), "attn_(q|output)");
        assert_eq!(r[1].storage, Some(Storage::Requantized(GgmlType::Q8_0)));
        assert_eq!(r[2].storage, None);
        assert_eq!(
            r[1].origin,
            r#"plan.toml rule 2 (tensors = "attn_(q|output)")"#
        );

        let bad_tier = text.replace("tier = \"CPU\"", "tier = \"tpu\"");
        let e = err(Rule::parse_toml("plan.toml", &bad_tier));
        assert!(
            e.contains(r#"plan.toml rule 2 (tensors = "attn_(q|output)"): unknown tier 'tpu'"#),
            "{e}"
        );
        let bad_regex = text.replace("ffn_.*_exps", "ffn_[");
        let e = err(Rule::parse_toml("plan.toml", &bad_regex));
        assert!(
            e.contains("plan.toml rule 1") && e.contains("invalid regex"),
            "{e}"
        );
        let e = err(Rule::parse_toml(
            "plan.toml",
            "[[rule]]\ntensors = \"x\"\ntier = \"cpu\"\nstorag = \"mapped\"\n",
        ));
        assert!(
            e.contains("placement file plan.toml") && e.contains("storag"),
            "{e}"
        );
        let e = err(Rule::parse_toml("plan.toml", "[[rule]]\ntier = \"cpu\"\n"));
        assert!(e.contains("tensors"), "{e}");
        let e = err(Rule::parse_toml("plan.toml", "# nothing\n"));
        assert!(e.contains("no [[rule]] tables"), "{e}");
        let e = err(Rule::parse_toml("plan.toml", "[[rule]\n"));
        assert!(e.contains("placement file plan.toml"), "{e}");
    }

    #[test]
    fn the_first_match_wins_and_a_rule_without_storage_leaves_it_to_the_next() {
        let mut user = rules("attn_q=cpu:mapped,attn=cpu:requantized:Q8_0,exps=cpu");
        user.extend(Rule::n_cpu_moe(1).unwrap());
        let p = Placement::new(user, false, Arch::Qwen3Moe);
        let d = p.decide("blk.0.attn_q.weight");
        assert_eq!((d.storage, d.rule, d.storage_rule), (Storage::Mapped, 0, 0));
        let d = p.decide("blk.0.attn_output.weight");
        assert_eq!(
            (d.storage, d.rule),
            (Storage::Requantized(GgmlType::Q8_0), 1)
        );
        // `exps=cpu` decides the tier; the storage comes from the defaults (rule 5).
        let d = p.decide("blk.0.ffn_up_exps.weight");
        assert_eq!(
            (d.tier, d.storage, d.rule, d.storage_rule),
            (Tier::Cpu, Storage::Repacked, 2, 4)
        );
        assert_eq!(p.rules()[4].origin, "default for qwen3moe");
        // --no-repack comes after the user's rules, before the defaults.
        let p = Placement::new(rules("attn_q=cpu:repacked,exps=cpu"), true, Arch::Qwen3Moe);
        assert_eq!(p.decide("blk.0.attn_q.weight").storage, Storage::Repacked);
        assert_eq!(
            p.decide("blk.0.ffn_up_exps.weight").storage,
            Storage::Mapped
        );
        assert_eq!(p.decide("output.weight").storage, Storage::Mapped);
        assert_eq!(p.rules()[2].origin, "--no-repack");
    }

    #[test]
    fn cpu_moe_rules_have_llama_cpp_meaning() {
        let all = Rule::cpu_moe();
        assert!(all.pattern.is_match("blk.60.ffn_down_exps.weight"));
        assert!(!all.pattern.is_match("blk.60.ffn_down_shexp.weight"));
        let first2 = Rule::n_cpu_moe(2).unwrap().unwrap();
        assert!(first2.pattern.is_match("blk.1.ffn_gate_exps.weight"));
        assert!(!first2.pattern.is_match("blk.2.ffn_gate_exps.weight"));
        assert!(!first2.pattern.is_match("blk.10.ffn_gate_exps.weight"));
        assert!(Rule::n_cpu_moe(0).unwrap().is_none());
        assert!(err(Rule::n_cpu_moe(20_000)).contains("--n-cpu-moe 20000"));
        let placed =
            PlacedModel::new(Placement::new(vec![all], false, Arch::Deepseek2), tensors()).unwrap();
        assert!(
            placed.notes[0].contains("--cpu-moe: routed experts stay on the CPU"),
            "{:?}",
            placed.notes
        );
    }

    #[test]
    fn rules_that_match_nothing_or_ask_for_the_accelerator_are_refused_by_name() {
        let place = |spec: &str| {
            PlacedModel::new(
                Placement::new(rules(spec), false, Arch::Qwen3Moe),
                tensors(),
            )
        };
        let e = err(place("attn=cpu,ffn_gate_inp=cpu:mapped"));
        assert!(
            e.contains("'ffn_gate_inp=cpu:mapped': matches no tensor of this model"),
            "{e}"
        );
        let e = err(place("exps=CUDA0"));
        assert!(e.contains("'exps=CUDA0': no GPU is open"), "{e}");
        // Dense model: --cpu-moe matches nothing.
        let dense: Vec<TensorInfo> = tensors()
            .into_iter()
            .filter(|t| !t.name.contains("exps"))
            .collect();
        let e = err(PlacedModel::new(
            Placement::new(vec![Rule::cpu_moe()], false, Arch::Qwen2),
            dense,
        ));
        assert!(e.contains("--cpu-moe: matches no tensor"), "{e}");
        // Built-in rules may match nothing (no tensors at all).
        assert!(PlacedModel::new(Placement::new(vec![], true, Arch::Qwen2), vec![]).is_ok());
    }

    #[test]
    fn requantize_targets_check_blocks_and_gate_up_pairs() {
        let place = |spec: &str| {
            PlacedModel::new(
                Placement::new(rules(spec), false, Arch::Qwen3Moe),
                tensors(),
            )
        };
        let p = place("attn_q=cpu:requantized:Q8_0,exps=cpu:mapped").unwrap();
        use GgmlType::*;
        assert_eq!(p.requantize_targets(), [Some(Q8_0), None, None, None, None]);
        assert_eq!(p.repack_wanted(), [true, true, false, false, false]);
        // Converting to the type it has is no conversion.
        let p = place("attn_q=cpu:requantized:Q4_K").unwrap();
        assert_eq!(p.requantize_targets(), [None; 5]);
        let e = err(place("ffn_gate_exps=cpu:requantized:Q8_0"));
        assert!(
            e.contains("'ffn_gate_exps=cpu:requantized:Q8_0': blk.0.ffn_gate_exps.weight would be Q8_0 and blk.0.ffn_up_exps.weight Q4_K"),
            "{e}"
        );
        assert!(place("ffn_(gate|up)_exps=cpu:requantized:Q8_0").is_ok());
        let mut narrow = tensors();
        narrow[0].n_in = 64;
        let e = err(PlacedModel::new(
            Placement::new(rules("attn_q=cpu:requantized:Q4_K"), false, Arch::Qwen3Moe),
            narrow,
        ));
        assert!(
            e.contains("blk.0.attn_q.weight: rows of 64 values are not whole Q4_K blocks of 256"),
            "{e}"
        );
    }

    #[test]
    fn the_summary_groups_tensors_with_bytes_per_tier_and_names_refusals() {
        let p = PlacedModel::new(
            Placement::new(
                rules("exps=cpu:mapped,attn_q=cpu:requantized:Q8_0"),
                false,
                Arch::Qwen3Moe,
            ),
            tensors(),
        )
        .unwrap();
        let outcome = p.predicted_outcome();
        use GgmlType::*;
        assert_eq!(
            outcome,
            [
                (Q8_0, true, true),
                (Q4_K, true, true),
                (Q4_K, false, true),
                (Q4_K, false, true),
                (Q6_K, false, true)
            ]
        );
        let text = p.lines(&outcome, true).join("\n");
        let q8 = Q8_0.row_bytes(256).unwrap() * 8;
        let q4 = Q4_K.row_bytes(256).unwrap() * 8;
        for want in [
            "rule 1: exps → cpu:mapped (--override-tensor 'exps=cpu:mapped'): decides 3 tensor(s)",
            &format!(
                "attention: cpu · requantized:Q8_0, repacked · 1 tensor(s), {} · rule 2",
                human_bytes(q8)
            ),
            &format!(
                "attention: cpu · repacked · 1 tensor(s), {} · rule 3",
                human_bytes(q4)
            ),
            "routed experts: cpu · mapped · 3 tensor(s)",
            "other (embeddings, norms, routers): cpu · mapped · 1 tensor(s), 8.0 KiB · rule 3",
            "gpu tier: none (no GPU open",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        let mapped = 2 * q4 + Q6_K.row_bytes(256).unwrap() * 8 + 8192;
        assert!(
            text.contains(&format!(
                "cpu tier: {} (mapped {}, repacked {})",
                human_bytes(mapped + q8 + q4),
                human_bytes(mapped),
                human_bytes(q8 + q4)
            )),
            "{text}"
        );
        // The memory plan left the converted matrix unrepacked: named by its rule.
        let w = p.refused_repacks(&[false, true, false, false, false], &[true; 5]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("--override-tensor 'attn_q=cpu:requantized:Q8_0' asks to repack 1 tensor(s) that the memory plan left mapped"), "{w:?}");
    }
}
