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
    /// A stream for one [`crate::RunState`]: its own activation buffers on the device.
    fn new_stream(&self) -> Result<Box<dyn Stream>, ModelError>;
}

/// Traffic over the bus and time spent waiting on the device, since the stream began.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Bytes sent to the device (activations) and read back.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Submissions (one per stage run on the device).
    pub submissions: u64,
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
    /// Traffic and waiting so far.
    fn stats(&self) -> StreamStats;
}

/// What a model holds on its device: per layer the FFN that runs there (a dense layer's,
/// or a MoE layer's shared experts), and the output head.
pub struct DeviceWeights {
    pub backend: Arc<dyn Backend>,
    /// Per layer: its dense FFN or shared experts, when on the device.
    pub ffn: Vec<Option<DeviceFfn>>,
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
