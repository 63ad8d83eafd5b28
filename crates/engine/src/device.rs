//! The devices the engine runs on: the CPU pool always, and the GPU `--device` chooses
//! (`accel`). Opened once at load; one line says which adapter runs the GPU tier, or that
//! everything runs on the CPU and why.

use std::sync::Arc;

use accel::{AdapterSummary, DeviceChoice, Gpu};

use crate::{human_bytes, EngineError};

/// The GPU the engine opened (if any), the budget its weights and KV cache are planned
/// against, and the line the load prints about it.
#[derive(Clone, Debug)]
pub struct Devices {
    pub gpu: Option<Arc<Gpu>>,
    /// Bytes the plan may put on the GPU, and where that figure comes from.
    pub gpu_memory: Option<(u64, String)>,
    /// "device: gpu:0 NVIDIA … (Vulkan), 8.00 GiB budget (default for a discrete GPU …)"
    /// or "device: cpu (…why…)".
    pub line: String,
}

/// The GPU memory the plan assumes when `--gpu-memory` is not given. wgpu reports no
/// memory size, so this is a guess per adapter type, on the low side of what such
/// adapters have (a plan that assumes too little keeps more on the CPU and still runs; one
/// that assumes too much fails at load with an out-of-memory error naming the flags):
/// a discrete GPU 8 GiB (most cards sold for this have at least that), an integrated GPU
/// 2 GiB of shared memory, a software adapter (lavapipe: the host's RAM) 4 GiB, anything
/// else 2 GiB.
pub fn default_gpu_memory(a: &AdapterSummary) -> (u64, &'static str) {
    const GIB: u64 = 1 << 30;
    if a.discrete {
        (8 * GIB, "a discrete GPU")
    } else if a.software {
        (4 * GIB, "a software adapter")
    } else if a.device_type == "IntegratedGpu" {
        (2 * GIB, "an integrated GPU")
    } else {
        (2 * GIB, "this adapter type")
    }
}

impl Devices {
    /// Everything on the CPU (no device opened).
    pub fn cpu(why: &str) -> Devices {
        Devices {
            gpu: None,
            gpu_memory: None,
            line: format!("device: cpu ({why})"),
        }
    }

    /// Opens what `choice` names. `gpu_memory` overrides the per-type guess
    /// ([`default_gpu_memory`]). A choice that names no adapter is an input error that
    /// lists the adapters.
    pub fn open(choice: &DeviceChoice, gpu_memory: Option<u64>) -> Result<Devices, EngineError> {
        if *choice == DeviceChoice::Cpu {
            return Ok(Devices::cpu("--device cpu"));
        }
        let gpu = Gpu::open(choice).map_err(|e| match e {
            accel::AccelError::NoAdapter { .. } | accel::AccelError::BadChoice(_) => {
                EngineError::Input(e.to_string())
            }
            e => EngineError::from(model::ModelError::from(e)),
        })?;
        let Some(gpu) = gpu else {
            // `auto` found no hardware GPU: say what there is.
            let all = accel::list_adapters();
            let why = if all.is_empty() {
                "--device auto: no GPU adapter found".to_string()
            } else {
                let software = all.iter().filter(|a| a.software).count();
                format!(
                    "--device auto: no discrete GPU among {} adapter(s){}; `ferromoe devices` lists them, --device gpu:N picks one",
                    all.len(),
                    if software > 0 {
                        format!(", {software} of them software")
                    } else {
                        String::new()
                    }
                )
            };
            return Ok(Devices::cpu(&why));
        };
        let s = &gpu.summary;
        let (budget, source) = match gpu_memory {
            Some(b) => (b, format!("--gpu-memory {}", human_bytes(b))),
            None => {
                let (b, kind) = default_gpu_memory(s);
                (
                    b,
                    format!("default for {kind}: wgpu reports no memory size, set --gpu-memory"),
                )
            }
        };
        let line = format!(
            "device: gpu:{} {} ({}, {}{}) · GPU tier budget {} ({source})",
            s.index,
            s.name,
            s.backend,
            s.device_type,
            if s.software {
                ", software: correct but slow"
            } else {
                ""
            },
            human_bytes(budget),
        );
        Ok(Devices {
            gpu: Some(Arc::new(gpu)),
            gpu_memory: Some((budget, source)),
            line,
        })
    }
}
