//! The device tier as the stages see it: a [`Backend`] holds the weights the placement
//! plan put on a device (uploaded once at load) and gives each [`crate::RunState`] a
//! [`Stream`] that runs a stage's device work as one submission. wgpu is one backend
//! (`crate::gpu`); a CUDA one would implement the same two traits.
//!
//! A stage's device work crosses the bus once each way: its input rows go up once, every
//! product and activation of the stage is recorded into one submission, and its output
//! comes back once. The start and the finish are apart so that the CPU works in between:
//! a MoE layer starts its shared expert on the device, computes the routed experts on the
//! CPU, then collects the shared expert's output.
//!
//! A layer whose attention runs on the device goes further: its residual rows go up once,
//! the attention block (norm, projections, RoPE, the store into the sequence's cache in
//! device memory, attention, output projection, residual add), the FFN norm and then the
//! dense FFN, or the MoE router's logits, are one submission, and the residual rows (with
//! the normalised rows and router logits the CPU's experts need) come back once.

use std::any::Any;
use std::sync::Arc;

use crate::weights::Matrix;
use crate::ModelError;

/// A weight matrix on a device: its shape, and the backend's own handle.
#[derive(Clone)]
pub struct DeviceMatrix {
    pub name: String,
    pub n_in: usize,
    pub n_out: usize,
    /// Bytes it takes on the device.
    pub bytes: u64,
    /// The backend's representation (e.g. `accel::GpuMatrix`), downcast by its streams.
    pub handle: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for DeviceMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{} x {}] on device",
            self.name, self.n_in, self.n_out
        )
    }
}

/// A vector of f32 on a device (a norm's weights, a bias, attention sinks).
#[derive(Clone)]
pub struct DeviceVector {
    pub name: String,
    pub len: usize,
    /// The backend's representation (e.g. `accel::GpuBuffer`).
    pub handle: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for DeviceVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] on device", self.name, self.len)
    }
}

/// A layer's grouped-query attention on a device, with the norms around it: the
/// attention norm before, the FFN norm after (the residual add between them), and the
/// MoE router whose logits the device computes from the FFN norm's output.
#[derive(Clone, Debug)]
pub struct DeviceGqa {
    pub attn_norm: DeviceVector,
    pub wq: DeviceMatrix,
    pub wk: DeviceMatrix,
    pub wv: DeviceMatrix,
    pub wo: DeviceMatrix,
    pub bq: Option<DeviceVector>,
    pub bk: Option<DeviceVector>,
    pub bv: Option<DeviceVector>,
    pub bo: Option<DeviceVector>,
    /// RMSNorm of q and k: its width is one head or all heads, as the CPU stage's.
    pub q_norm: Option<DeviceVector>,
    pub k_norm: Option<DeviceVector>,
    /// One logit per query head joining its softmax (gpt-oss).
    pub sinks: Option<DeviceVector>,
    pub ffn_norm: DeviceVector,
    /// The MoE router (`dim` → `n_expert`); its bias and scoring stay on the CPU.
    pub router: Option<DeviceMatrix>,
}

/// A layer's multi-head latent attention (DeepSeek's MLA) on a device, with the norms
/// around it and the MoE router, as [`DeviceGqa`]. The per-head matrices (`attn_k_b`,
/// `attn_v_b`) are each one batch of per-head matrices ([`Backend::upload_stack`]), so a
/// layer multiplies every head in one dispatch; `k_b_t` (`attn_k_b` transposed, computed at
/// load) serves the decompressed form.
#[derive(Clone, Debug)]
pub struct DeviceMla {
    pub attn_norm: DeviceVector,
    /// The compressed query path `attn_q_a` → its RMSNorm → `q` (`attn_q_b`), or `None`
    /// and `q` is `attn_q`.
    pub q_a: Option<(DeviceMatrix, DeviceVector)>,
    pub q: DeviceMatrix,
    /// `attn_kv_a_mqa` (`dim` → `kv_lora + qk_rope`) and the latent's norm.
    pub kv_a: DeviceMatrix,
    pub kv_a_norm: DeviceVector,
    /// Per head: `qk_nope` → `kv_lora` (`attn_k_b`), `kv_lora` → `v_head` (`attn_v_b`);
    /// `n_out` is one head's.
    pub k_b: DeviceMatrix,
    pub v_b: DeviceMatrix,
    /// `kv_lora` → `n_head · qk_nope` (the decompressed form's keys).
    pub k_b_t: DeviceMatrix,
    pub wo: DeviceMatrix,
    pub ffn_norm: DeviceVector,
    pub router: Option<DeviceMatrix>,
}

/// A layer's attention on a device: grouped-query or latent.
#[derive(Clone, Debug)]
pub enum DeviceAttention {
    Gqa(DeviceGqa),
    Mla(DeviceMla),
}

impl DeviceAttention {
    /// The MoE router whose logits the device computes after the FFN norm.
    pub fn router(&self) -> Option<&DeviceMatrix> {
        match self {
            DeviceAttention::Gqa(a) => a.router.as_ref(),
            DeviceAttention::Mla(a) => a.router.as_ref(),
        }
    }
}

/// How a device MLA layer chooses its form per sequence: the CPU stage's rule
/// (`stage::mla::use_decompressed`) on the run state's form and matmul mode, so that both
/// tiers run the same form (always absorbed in the exact mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlaRule {
    pub form: crate::stage::mla::MlaForm,
    pub mode: crate::linear::MatmulMode,
}

/// What a layer does on the device after its attention and FFN norm
/// ([`Stream::start_attention`]).
#[derive(Clone, Copy, Debug)]
pub enum AfterAttention<'a> {
    /// The dense FFN runs there too (and its residual add): the whole layer is one
    /// submission, and only the residual rows come back.
    Ffn(&'a DeviceFfn),
    /// The CPU runs the FFN: the residual rows and the normalised rows come back.
    Norm,
    /// A MoE layer: the router's logits come back too.
    Router,
}

/// A SiLU-gated FFN on a device (a dense layer's FFN or a MoE layer's shared experts).
#[derive(Clone, Debug)]
pub struct DeviceFfn {
    pub gate: DeviceMatrix,
    pub up: DeviceMatrix,
    pub down: DeviceMatrix,
}

/// A device that holds weights and runs stages.
pub trait Backend: Send + Sync {
    /// The adapter, for messages.
    fn name(&self) -> String;
    /// Uploads `m` (its bytes in the file's type, or the converted ones) once, at load.
    fn upload(&self, m: &Matrix) -> Result<DeviceMatrix, ModelError>;
    /// Uploads the slabs of `m` (the heads' matrices of a per-head stack) as one batch of
    /// `n_slab` matrices of `n_out × n_in` (the result's `n_out` is one slab's), once, at
    /// load: the device multiplies every slab by its own activations in one step.
    fn upload_stack(&self, m: &Matrix) -> Result<DeviceMatrix, ModelError>;
    /// Uploads a vector of f32 once, at load.
    fn upload_vector(&self, name: &str, v: &[f32]) -> Result<DeviceVector, ModelError>;
    /// A stream for one [`crate::RunState`]: its own activation buffers on the device.
    fn new_stream(&self) -> Result<Box<dyn Stream>, ModelError>;
}

/// Traffic over the bus and time spent waiting on the device, since the stream began.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Bytes sent to the device (activations) and read back.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Submissions (one per stage run on the device), and the kernel dispatches in them.
    pub submissions: u64,
    pub dispatches: u64,
    /// Seconds the CPU waited in [`Stream::finish`] for the device's results.
    pub wait_seconds: f64,
}

/// One [`crate::RunState`]'s work on a device: start a stage (input up, work submitted),
/// let the CPU do its share, then finish it (output down). One stage is in flight at a
/// time.
pub trait Stream: Send {
    /// Starts the SiLU-gated FFN `f` over the token rows of `x` (`n × f.gate.n_in`).
    fn start_ffn(&mut self, f: &DeviceFfn, x: &[f32]) -> Result<(), ModelError>;
    /// Starts `w · x[t]` for the token rows of `x` (`n × w.n_in`).
    fn start_matmul(&mut self, w: &DeviceMatrix, x: &[f32]) -> Result<(), ModelError>;
    /// Waits for the stage started last and writes its output (`n × n_out`) to `out`.
    fn finish(&mut self, out: &mut [f32]) -> Result<(), ModelError>;
    /// Prepares a forward step over token rows at these (sequence, position)s (RoPE's
    /// angles, shared by every layer; how MLA layers choose their form): call it before
    /// the step's first [`Stream::start_attention`].
    fn begin_step(
        &mut self,
        config: &crate::Config,
        rows: &[(usize, usize)],
        mla: MlaRule,
    ) -> Result<(), ModelError>;
    /// Starts layer `il` from the residual rows `x` (`n × dim`): its attention `a` over
    /// each sequence's cache on the device (allocated there on first use, in
    /// [`crate::KvCache`]'s device part), the residual add, the FFN norm, then `after`.
    /// Collect with [`Stream::finish_layer`].
    fn start_attention(
        &mut self,
        config: &crate::Config,
        il: usize,
        a: &DeviceAttention,
        x: &[f32],
        batch: &mut crate::stage::Batch<'_, '_>,
        after: AfterAttention<'_>,
    ) -> Result<(), ModelError>;
    /// Waits for the layer started last and writes its residual rows to `x`, and (as
    /// `after` asked for) the normalised rows to `xb` and the router logits to `logits`.
    fn finish_layer(
        &mut self,
        x: &mut [f32],
        xb: Option<&mut [f32]>,
        logits: Option<&mut [f32]>,
    ) -> Result<(), ModelError>;
    /// Starts the SiLU-gated FFN `f` over the normalised rows the last finished layer
    /// left on the device (a MoE layer's shared experts: nothing crosses the bus going
    /// up). Collect with [`Stream::finish`].
    fn start_resident_ffn(&mut self, f: &DeviceFfn) -> Result<(), ModelError>;
    /// Traffic and waiting so far.
    fn stats(&self) -> StreamStats;
}

/// What a model holds on its device: per layer its attention and the FFN that runs there
/// (a dense layer's, or a MoE layer's shared experts), and the output head.
pub struct DeviceWeights {
    pub backend: Arc<dyn Backend>,
    /// Per layer: its dense FFN or shared experts, when on the device.
    pub ffn: Vec<Option<DeviceFfn>>,
    /// Per layer: its attention (and the norms around it), when on the device.
    pub attn: Vec<Option<DeviceAttention>>,
    /// The output projection, when on the device.
    pub output: Option<DeviceMatrix>,
    /// Bytes and tensors uploaded, seconds it took.
    pub bytes: u64,
    pub tensors: usize,
    pub seconds: f64,
}

impl DeviceWeights {
    /// Stages that run on the device, for the load summary: "2 dense FFN, 3 shared
    /// experts, output head".
    pub fn stages(&self, model: &crate::Model) -> String {
        let (mut dense, mut shared) = (0, 0);
        for (il, f) in self.ffn.iter().enumerate() {
            if f.is_some() {
                match &model.weights.layers[il].ffn {
                    crate::weights::Ffn::Dense(_) => dense += 1,
                    crate::weights::Ffn::Moe(_) => shared += 1,
                }
            }
        }
        let mut parts = Vec::new();
        let attn = self.attn.iter().filter(|a| a.is_some()).count();
        if attn > 0 {
            parts.push(format!("{attn} attention(s) with their KV cache"));
        }
        if dense > 0 {
            parts.push(format!("{dense} dense FFN(s)"));
        }
        if shared > 0 {
            parts.push(format!("{shared} shared-expert FFN(s)"));
        }
        if self.output.is_some() {
            parts.push("the output head".to_string());
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    }
}
