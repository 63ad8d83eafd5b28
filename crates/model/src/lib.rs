//! Models: hyper-parameters from GGUF metadata ([`Config`]), weights bound to layers
//! ([`Weights`]), the KV cache ([`KvCache`]) and one forward pass for every supported
//! architecture ([`Model::forward`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! let file = Arc::new(gguf::Gguf::open("model.gguf")?);
//! let model = model::Model::load(file)?;
//! let pool = kernels::ThreadPool::new(2);
//! let mut state = model::RunState::new(model::MatmulMode::Quantized);
//! let mut kv = model::KvCache::new(&model.config, 4096)?;
//! let logits = model.forward(&pool, &mut state, &mut kv, &[1, 2, 3], model::Logits::Last)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod arch;
pub mod backend;
pub mod config;
mod error;
pub mod forward;
pub mod gpu;
pub mod kv;
pub mod linear;
pub mod memplan;
pub mod placement;
pub mod stage;
pub mod sysmem;
pub mod weights;

use std::sync::Arc;

use gguf::Gguf;

pub use config::{
    Arch, Config, Gating, IndexerConfig, MlaConfig, MoeConfig, QkNorm, SlidingWindow,
};
pub use error::ModelError;
pub use forward::{BatchLimits, BatchSeq, HiddenFrom, Logits, MlaForm, RunState, VERIFY_STEP_MAX};
pub use kv::{KvCache, KvType, KvTypes};
pub use linear::MatmulMode;
pub use weights::Weights;

use arch::Hparams;
use weights::{Binder, Layer};

/// The `general.architecture` values we run.
pub const SUPPORTED_ARCHS: [&str; 9] = [
    "deepseek2",
    "deepseek32",
    "qwen3moe",
    "qwen2moe",
    "llama",
    "qwen2",
    "glm4moe",
    "minimax-m2",
    "gpt-oss",
];

/// A loaded model: its shapes and its weights (views into the mapped file).
pub struct Model {
    pub config: Config,
    pub weights: Weights,
    pub file: Arc<Gguf>,
    /// Experts run per token; defaults to the model's `expert_used_count`.
    experts_per_token: usize,
    /// The weights on a device and the backend that runs them (`None`: all on the CPU).
    pub device: Option<backend::DeviceWeights>,
    /// Why the file's MTP block did not bind, when it did not.
    nextn_error: Option<String>,
}

/// Binds block `il`: its norms, attention and FFN.
fn bind_layer(b: &Binder, config: &Config, il: usize) -> Result<Layer, ModelError> {
    let attn = match config.arch {
        Arch::Deepseek2 => arch::deepseek2::bind_mla(b, config, il)?,
        Arch::Deepseek32 => arch::deepseek32::bind(b, config, il)?,
        _ => arch::bind_gqa(b, config, il)?,
    };
    Ok(Layer {
        attn_norm: b.vector(&format!("blk.{il}.attn_norm.weight"), config.dim)?,
        attn,
        ffn_norm: b.vector(&arch::ffn_norm_name(config.arch, il), config.dim)?,
        ffn: arch::bind_ffn(b, config, il)?,
    })
}

/// What surrounds a layer's attention on the device: the norms before and after it, and
/// the MoE router.
struct AttnSurroundings {
    attn_norm: backend::DeviceVector,
    ffn_norm: backend::DeviceVector,
    router: Option<backend::DeviceMatrix>,
}

impl Model {
    /// Reads the hyper-parameters and binds every tensor, checking shapes and types.
    pub fn load(file: Arc<Gguf>) -> Result<Model, ModelError> {
        Self::load_with_progress(file, &mut |_, _| {})
    }

    /// [`Model::load`], calling `progress(layers_done, n_layer)` as layers are bound.
    pub fn load_with_progress(
        file: Arc<Gguf>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model, ModelError> {
        let md = file.metadata();
        let arch_name = file.architecture()?.to_string();
        let hp = Hparams {
            md,
            arch: &arch_name,
        };
        let n_vocab = match file.get_tensor("token_embd.weight") {
            Some(t) if t.ne.len() >= 2 => t.ne[1] as usize,
            _ => file.tensor("token_embd.weight").map(|_| 0)?,
        };
        let config = match arch_name.as_str() {
            "deepseek2" => arch::deepseek2::config(&hp, n_vocab)?,
            "deepseek32" => arch::deepseek32::config(&hp, n_vocab)?,
            "qwen3moe" => arch::qwen3moe::config(&hp, n_vocab)?,
            "qwen2moe" => arch::qwen2moe::config(&hp, n_vocab)?,
            "llama" => arch::llama::config(&hp, n_vocab)?,
            "qwen2" => arch::qwen2::config(&hp, n_vocab)?,
            "glm4moe" => arch::glm4moe::config(&hp, n_vocab)?,
            "minimax-m2" => arch::minimax_m2::config(&hp, n_vocab)?,
            "gpt-oss" => arch::gpt_oss::config(&hp, n_vocab)?,
            _ => {
                return Err(ModelError::UnsupportedArch {
                    file: file.name().to_string(),
                    arch: arch_name,
                })
            }
        };
        let b = Binder { file: &file };
        let (token_embd, output_norm, output) = b.embeddings(config.dim, n_vocab)?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for il in 0..config.n_layer {
            layers.push(bind_layer(&b, &config, il)?);
            progress(il + 1, config.n_layer);
        }
        // The first MTP block, if any: a file whose block does not bind still runs (only
        // speculative decoding needs it, and `Model::nextn` says why it cannot).
        let (nextn, nextn_error) = if config.nextn_layers == 0 {
            (None, None)
        } else {
            let il = config.n_layer;
            match bind_layer(&b, &config, il)
                .and_then(|layer| b.nextn(il, config.dim, n_vocab, layer))
            {
                Ok(n) => (Some(n), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let experts_per_token = config.moe.as_ref().map_or(0, |m| m.n_expert_used);
        let weights = Weights {
            token_embd,
            layers,
            output_norm,
            output,
            nextn,
        };
        Ok(Model {
            config,
            weights,
            file,
            experts_per_token,
            device: None,
            nextn_error,
        })
    }

    /// The first next-token-prediction (MTP) block, for speculative decoding: an error
    /// saying why when the file carries none or its block did not bind.
    pub fn nextn(&self) -> Result<&weights::NextnWeights, ModelError> {
        if let Some(n) = &self.weights.nextn {
            return Ok(n);
        }
        Err(ModelError::Input(match &self.nextn_error {
            Some(e) => format!(
                "the next-token-prediction (MTP) layer blk.{} could not be bound: {e}",
                self.config.n_layer
            ),
            None => format!(
                "this {} file has no next-token-prediction (MTP) layers (nextn_predict_layers); use --spec-type ngram or off",
                self.config.arch.name()
            ),
        }))
    }

    /// Routed experts run per token (KTransformers' "selective experts").
    pub fn experts_per_token(&self) -> usize {
        self.experts_per_token
    }

    /// Runs only the top `k` of the model's routed experts per token (1 ≤ k ≤ the
    /// model's `expert_used_count`); the weights are renormalised as the architecture does.
    pub fn set_experts_per_token(&mut self, k: usize) -> Result<(), ModelError> {
        let Some(m) = &self.config.moe else {
            return Err(ModelError::Input(
                "--experts-per-token: this model has no routed experts".into(),
            ));
        };
        if k == 0 || k > m.n_expert_used {
            return Err(ModelError::Input(format!(
                "--experts-per-token {k}: must be between 1 and the model's {} experts per token",
                m.n_expert_used
            )));
        }
        self.experts_per_token = k;
        Ok(())
    }

    /// What the load recognised and leaves aside, one line each (today: the MTP blocks a
    /// GLM-4.5 file carries, which only speculative decoding runs).
    pub fn load_notes(&self) -> Vec<String> {
        let c = &self.config;
        if c.nextn_layers == 0 {
            return Vec::new();
        }
        let last = c.n_layer + c.nextn_layers - 1;
        let blocks = if c.nextn_layers == 1 {
            format!("blk.{last}")
        } else {
            format!("blk.{}..={last}", c.n_layer)
        };
        let use_ = match self.nextn() {
            Ok(_) => format!("blk.{} drafts with --spec-type mtp", c.n_layer),
            Err(e) => e.to_string(),
        };
        vec![format!(
            "note: {} next-token-prediction (MTP) layer(s) ({blocks}) recognised, outside the forward pass of {} layers; {use_}",
            c.nextn_layers, c.n_layer
        )]
    }

    /// Whether the file's tensor `name` belongs to a block the forward pass does not run
    /// (GLM-4.5's MTP blocks, `blk.N.*` for N ≥ `n_layer`): not worth paging in (MTP
    /// drafting reads its block from the mapped file when it runs).
    pub fn is_unused_tensor(&self, name: &str) -> bool {
        let c = &self.config;
        c.nextn_layers > 0 && placement::layer_of(name).is_some_and(|il| il >= c.n_layer)
    }

    /// Whether the file's tensor `name` belongs to the MTP block that drafting runs
    /// (`blk.{n_layer}.*`, the first of the blocks after the trunk).
    pub fn is_drafting_block_tensor(&self, name: &str) -> bool {
        let c = &self.config;
        c.nextn_layers > 0 && placement::layer_of(name) == Some(c.n_layer)
    }

    /// Uploads the matrices the placement put on the device (`on_device`: one flag per
    /// matrix, in the order of [`Weights::plan_items`]) through `backend`, calling
    /// `progress(bytes)` after each, and runs their stages there from now on. A stage goes
    /// to the device only whole (the placement plan sees to it): a dense FFN or shared
    /// expert with all of gate, up and down, or the output head.
    pub fn attach_device(
        &mut self,
        backend: std::sync::Arc<dyn backend::Backend>,
        on_device: &[bool],
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ModelError> {
        use memplan::WeightClass as C;
        let start = std::time::Instant::now();
        let chosen = self.weights.selected_matrices(on_device);
        let n_layer = self.config.n_layer;
        let mut ffn: Vec<Vec<backend::DeviceMatrix>> = vec![Vec::new(); n_layer];
        // A layer's attention matrices, uploaded together once all are known (MLA's
        // per-head stacks go up head by head).
        let mut attn: Vec<usize> = vec![0; n_layer];
        let mut output = None;
        let (mut bytes, mut tensors) = (0u64, 0usize);
        for (class, layer, m) in &chosen {
            let d = match class {
                C::Attention => {
                    match layer.and_then(|l| attn.get_mut(l)) {
                        Some(count) => *count += 1,
                        None => return Err(ModelError::Kernel(format!("{}: no layer", m.name()))),
                    }
                    tensors += 1;
                    progress(m.bytes() as u64);
                    continue;
                }
                C::DenseFfn | C::SharedExperts | C::Output => backend.upload(m)?,
                C::RoutedExperts => {
                    return Err(ModelError::Kernel(format!(
                        "{}: the GPU tier does not run {} yet",
                        m.name(),
                        class.name()
                    )))
                }
            };
            bytes += d.bytes;
            tensors += 1;
            progress(m.bytes() as u64);
            match (class, layer) {
                (C::Output, _) => output = Some(d),
                (_, Some(l)) if *l < ffn.len() => ffn[*l].push(d),
                _ => return Err(ModelError::Kernel(format!("{}: no layer", m.name()))),
            }
        }
        let ffn = ffn
            .into_iter()
            .enumerate()
            .map(|(il, mut v)| match v.len() {
                0 => Ok(None),
                // Uploaded in the binding order: gate, up, down.
                3 => {
                    let down = v.pop().expect("3");
                    let up = v.pop().expect("3");
                    let gate = v.pop().expect("3");
                    Ok(Some(backend::DeviceFfn { gate, up, down }))
                }
                n => Err(ModelError::Kernel(format!(
                    "layer {il}: {n} of its FFN's 3 matrices on the device (a stage runs where all its weights are)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut attn_on_device = Vec::with_capacity(n_layer);
        for (il, &n) in attn.iter().enumerate() {
            if n == 0 {
                attn_on_device.push(None);
                continue;
            }
            let layer = &self.weights.layers[il];
            let all = match &layer.attn {
                weights::Attention::Gqa(_) => 4,
                weights::Attention::Mla(a) => 6 + a.q_a.is_some() as usize,
            };
            if n != all {
                return Err(ModelError::Kernel(format!(
                    "layer {il}: {n} of its attention's {all} matrices on the device (a stage runs where all its weights are)"
                )));
            }
            let (b, a) = match &layer.attn {
                weights::Attention::Gqa(_) => self.device_gqa(backend.as_ref(), il)?,
                weights::Attention::Mla(_) => self.device_mla(backend.as_ref(), il)?,
            };
            bytes += b;
            attn_on_device.push(Some(a));
        }
        self.device = Some(backend::DeviceWeights {
            backend,
            ffn,
            attn: attn_on_device,
            output,
            bytes,
            tensors,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// The vectors around layer `il`'s attention on the device (its norms) and the MoE
    /// router (small; its logits are computed there), uploaded through `up`, which counts
    /// their bytes into `bytes`.
    fn device_norms_router(
        &self,
        backend: &dyn backend::Backend,
        il: usize,
        bytes: &mut u64,
    ) -> Result<AttnSurroundings, ModelError> {
        let layer = &self.weights.layers[il];
        let mut up = |what: &str, v: &[f32]| {
            *bytes += (v.len() * 4) as u64;
            backend.upload_vector(&format!("blk.{il}.{what}"), v)
        };
        let attn_norm = up("attn_norm", &layer.attn_norm)?;
        let ffn_norm = up("ffn_norm", &layer.ffn_norm)?;
        let router = match &layer.ffn {
            weights::Ffn::Moe(f) if accel::matmul::gpu_supports(f.router.ty) => {
                let r = backend.upload(&f.router)?;
                *bytes += r.bytes;
                Some(r)
            }
            _ => None,
        };
        Ok(AttnSurroundings {
            attn_norm,
            ffn_norm,
            router,
        })
    }

    /// Layer `il`'s grouped-query attention on the device: its matrices (q, k, v, output)
    /// and the vectors around it uploaded now: the norms, biases, sinks and the MoE
    /// router. Returns the bytes uploaded too.
    fn device_gqa(
        &self,
        backend: &dyn backend::Backend,
        il: usize,
    ) -> Result<(u64, backend::DeviceAttention), ModelError> {
        let layer = &self.weights.layers[il];
        let weights::Attention::Gqa(a) = &layer.attn else {
            return Err(ModelError::Kernel(format!(
                "layer {il}: not grouped-query attention"
            )));
        };
        let mut bytes = 0u64;
        let around = self.device_norms_router(backend, il, &mut bytes)?;
        let mut mat = |m: &weights::Matrix| {
            let d = backend.upload(m)?;
            bytes += d.bytes;
            Ok::<_, ModelError>(d)
        };
        let (wq, wk, wv, wo) = (mat(&a.wq)?, mat(&a.wk)?, mat(&a.wv)?, mat(&a.wo)?);
        let mut up = |what: &str, v: &Option<Vec<f32>>| {
            v.as_deref()
                .map(|v| {
                    bytes += (v.len() * 4) as u64;
                    backend.upload_vector(&format!("blk.{il}.{what}"), v)
                })
                .transpose()
        };
        let (bq, bk, bv, bo) = (
            up("bq", &a.bq)?,
            up("bk", &a.bk)?,
            up("bv", &a.bv)?,
            up("bo", &a.bo)?,
        );
        let (q_norm, k_norm) = (up("q_norm", &a.q_norm)?, up("k_norm", &a.k_norm)?);
        let sinks = up("sinks", &a.sinks)?;
        Ok((
            bytes,
            backend::DeviceAttention::Gqa(backend::DeviceGqa {
                attn_norm: around.attn_norm,
                wq,
                wk,
                wv,
                wo,
                bq,
                bk,
                bv,
                bo,
                q_norm,
                k_norm,
                sinks,
                ffn_norm: around.ffn_norm,
                router: around.router,
            }),
        ))
    }

    /// Layer `il`'s latent attention on the device: its matrices (`attn_k_b`/`attn_v_b`
    /// as batches of per-head matrices), the query and latent norms, and the vectors around it. Returns the
    /// bytes uploaded too.
    fn device_mla(
        &self,
        backend: &dyn backend::Backend,
        il: usize,
    ) -> Result<(u64, backend::DeviceAttention), ModelError> {
        let layer = &self.weights.layers[il];
        let weights::Attention::Mla(a) = &layer.attn else {
            return Err(ModelError::Kernel(format!(
                "layer {il}: not latent attention"
            )));
        };
        if a.indexer.is_some() {
            return Err(ModelError::Kernel(format!(
                "layer {il}: the GPU tier has no lightning indexer (DeepSeek-V3.2's attention runs on the CPU)"
            )));
        }
        let mut bytes = 0u64;
        let around = self.device_norms_router(backend, il, &mut bytes)?;
        let mut mat = |m: &weights::Matrix| {
            let d = backend.upload(m)?;
            bytes += d.bytes;
            Ok::<_, ModelError>(d)
        };
        let q = mat(&a.q)?;
        let kv_a = mat(&a.kv_a)?;
        let k_b_t = mat(&a.k_b_t)?;
        let wo = mat(&a.wo)?;
        let q_a = a.q_a.as_ref().map(&mut mat).transpose()?;
        let mut stack = |m: &weights::Matrix| {
            let d = backend.upload_stack(m)?;
            bytes += d.bytes;
            Ok::<_, ModelError>(d)
        };
        let (k_b, v_b) = (stack(&a.k_b)?, stack(&a.v_b)?);
        let mut up = |what: &str, v: &[f32]| {
            bytes += (v.len() * 4) as u64;
            backend.upload_vector(&format!("blk.{il}.{what}"), v)
        };
        let kv_a_norm = up("attn_kv_a_norm", &a.kv_a_norm)?;
        let q_a = match (q_a, &a.q_a_norm) {
            (Some(m), Some(norm)) => Some((m, up("attn_q_a_norm", norm)?)),
            (None, _) => None,
            (Some(_), None) => {
                return Err(ModelError::Kernel(format!(
                    "layer {il}: attn_q_a without its norm"
                )))
            }
        };
        Ok((
            bytes,
            backend::DeviceAttention::Mla(backend::DeviceMla {
                attn_norm: around.attn_norm,
                q_a,
                q,
                kv_a,
                kv_a_norm,
                k_b,
                v_b,
                k_b_t,
                wo,
                ffn_norm: around.ffn_norm,
                router: around.router,
            }),
        ))
    }

    /// Parameters and bytes of all weights.
    pub fn weight_bytes(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.size).sum()
    }
}
