//! Adapters and devices: what `--device` may name, and opening one with its own maximum limits.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::AccelError;

/// `--device`: `auto` (a discrete GPU if there is one, else the CPU: integrated GPUs share the
/// CPU's memory bandwidth, so they are chosen only by `gpu`), `cpu`, `gpu` (the best
/// hardware adapter; an error if there is none), `gpu:N` (adapter N of [`list_adapters`]) or
/// `gpu:NAME` (the first adapter whose name contains NAME, case-insensitively). Software
/// adapters (lavapipe, llvmpipe, WARP) are chosen only by index or name: they are correct but
/// far slower than the CPU path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Gpu,
    GpuIndex(usize),
    GpuName(String),
}

impl FromStr for DeviceChoice {
    type Err = AccelError;
    fn from_str(s: &str) -> Result<Self, AccelError> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "auto" => return Ok(Self::Auto),
            "cpu" | "none" => return Ok(Self::Cpu),
            "gpu" => return Ok(Self::Gpu),
            _ => {}
        }
        let rest = t
            .strip_prefix("gpu:")
            .or_else(|| t.strip_prefix("GPU:"))
            .ok_or_else(|| AccelError::BadChoice(s.to_string()))?;
        if rest.is_empty() {
            return Err(AccelError::BadChoice(s.to_string()));
        }
        Ok(match rest.parse::<usize>() {
            Ok(i) => Self::GpuIndex(i),
            Err(_) => Self::GpuName(rest.to_string()),
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Gpu => f.write_str("gpu"),
            Self::GpuIndex(i) => write!(f, "gpu:{i}"),
            Self::GpuName(n) => write!(f, "gpu:{n}"),
        }
    }
}

/// The shader capabilities the kernels choose their variants by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuFeatures {
    pub subgroup: bool,
    pub f16: bool,
    pub int64: bool,
}

impl GpuFeatures {
    fn of(features: wgpu::Features) -> Self {
        Self {
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            f16: features.contains(wgpu::Features::SHADER_F16),
            int64: features.contains(wgpu::Features::SHADER_INT64),
        }
    }

    fn wgpu(self) -> wgpu::Features {
        let mut f = wgpu::Features::empty();
        if self.subgroup {
            f |= wgpu::Features::SUBGROUP;
        }
        if self.f16 {
            f |= wgpu::Features::SHADER_F16;
        }
        if self.int64 {
            f |= wgpu::Features::SHADER_INT64;
        }
        f
    }
}

/// One adapter as `ferromoe devices` lists it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub software: bool,
    pub discrete: bool,
    pub max_buffer_size: u64,
    pub max_storage_binding: u64,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage: u32,
    pub features: GpuFeatures,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b >> 20;
        write!(
            f,
            "gpu:{}  {} ({}, {}{}), driver {:?}; max buffer {} MiB, max storage binding {} MiB, \
             {} invocations/workgroup, {} KiB workgroup memory; subgroup {}, f16 {}, int64 {}",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            if self.software {
                ", software: chosen only by index or name"
            } else {
                ""
            },
            self.driver,
            mib(self.max_buffer_size),
            mib(self.max_storage_binding),
            self.max_workgroup_invocations,
            self.max_workgroup_storage / 1024,
            yes(self.features.subgroup),
            yes(self.features.f16),
            yes(self.features.int64),
        )
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn instance() -> wgpu::Instance {
    // No window: compute only. Backends from WGPU_BACKEND if set, else all that were built in.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    wgpu::Instance::new(desc)
}

fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        software: info.device_type == wgpu::DeviceType::Cpu,
        discrete: info.device_type == wgpu::DeviceType::DiscreteGpu,
        max_buffer_size: limits.max_buffer_size,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
        max_workgroup_storage: limits.max_compute_workgroup_storage_size,
        features: GpuFeatures::of(adapter.features()),
    }
}

/// Every adapter wgpu can see, in the order `gpu:N` indexes them.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    adapters(&instance)
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// An open GPU: the device and queue, the adapter's description, and the limits and features
/// it was opened with. Errors that wgpu reports outside an error scope are kept here (never a
/// panic) and surface at the next [`Gpu::check`].
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub summary: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: GpuFeatures,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.summary.name)
            .finish()
    }
}

impl Gpu {
    /// Opens the adapter `choice` names. `Ok(None)`: run on the CPU (`cpu`, or `auto` with no
    /// hardware GPU). An explicit `gpu…` that matches nothing is an error naming what exists.
    pub fn open(choice: &DeviceChoice) -> Result<Option<Gpu>, AccelError> {
        if *choice == DeviceChoice::Cpu {
            return Ok(None);
        }
        let instance = instance();
        let all = adapters(&instance);
        let summaries: Vec<AdapterSummary> = all
            .iter()
            .enumerate()
            .map(|(i, a)| summarize(i, a))
            .collect();
        let hardware = |s: &&AdapterSummary| !s.software;
        let picked = match choice {
            DeviceChoice::Cpu => unreachable!("handled above"),
            DeviceChoice::Auto => summaries.iter().find(|s| s.discrete).map(|s| s.index),
            DeviceChoice::Gpu => summaries
                .iter()
                .find(|s| s.discrete)
                .or_else(|| summaries.iter().find(hardware))
                .map(|s| s.index),
            DeviceChoice::GpuIndex(i) => summaries.get(*i).map(|s| s.index),
            DeviceChoice::GpuName(n) => {
                let n = n.to_lowercase();
                summaries
                    .iter()
                    .find(|s| s.name.to_lowercase().contains(&n))
                    .map(|s| s.index)
            }
        };
        let Some(index) = picked else {
            if *choice == DeviceChoice::Auto {
                return Ok(None);
            }
            let found = if summaries.is_empty() {
                "wgpu found no adapter (no Vulkan/Metal/DX12 driver?)".to_string()
            } else {
                let names: Vec<String> = summaries
                    .iter()
                    .map(|s| format!("gpu:{} {} ({})", s.index, s.name, s.device_type))
                    .collect();
                format!("the adapters are {}", names.join(", "))
            };
            return Err(AccelError::NoAdapter {
                choice: choice.to_string(),
                found,
            });
        };
        Self::open_adapter(&all[index], summaries[index].clone()).map(Some)
    }

    fn open_adapter(adapter: &wgpu::Adapter, summary: AdapterSummary) -> Result<Gpu, AccelError> {
        // The adapter's own maximums: big weights want the largest bindings it allows.
        let limits = adapter.limits();
        let features = summary.features;
        let desc = wgpu::DeviceDescriptor {
            label: Some("ferromoe"),
            required_features: features.wgpu(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            AccelError::RequestDevice {
                adapter: summary.name.clone(),
                reason: e.to_string(),
            }
        })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_slot.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_slot = uncaptured.clone();
        // wgpu's default handler panics; we keep the first error and report it at `check`.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = uncaptured_slot.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            limits,
            features,
            summary,
            lost,
            uncaptured,
        })
    }

    /// The adapter's name, for messages.
    pub fn name(&self) -> &str {
        &self.summary.name
    }

    /// An error if the device was lost or wgpu reported an error outside a scope since the
    /// last check.
    pub fn check(&self, what: &str) -> Result<(), AccelError> {
        if let Some(reason) = self.lost.lock().ok().and_then(|s| s.clone()) {
            return Err(AccelError::DeviceLost {
                adapter: self.name().to_string(),
                reason,
            });
        }
        if let Some(reason) = self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(AccelError::Validation {
                what: what.to_string(),
                adapter: self.name().to_string(),
                reason,
            });
        }
        Ok(())
    }

    /// Waits until everything submitted so far has finished.
    pub fn wait(&self, what: &str) -> Result<(), AccelError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| AccelError::Validation {
                what: what.to_string(),
                adapter: self.name().to_string(),
                reason: e.to_string(),
            })?;
        self.check(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_like_the_help_says() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("gpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Gpu);
        assert_eq!(
            "gpu:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::GpuIndex(1)
        );
        assert_eq!(
            "gpu:llvmpipe".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::GpuName("llvmpipe".into())
        );
        for bad in ["", "gpu:", "tpu", "cuda:0"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("bad --device value"), "{e}");
        }
        assert_eq!(DeviceChoice::GpuIndex(3).to_string(), "gpu:3");
    }

    #[test]
    fn cpu_opens_nothing() {
        assert!(Gpu::open(&DeviceChoice::Cpu).unwrap().is_none());
    }

    #[test]
    fn a_name_that_matches_nothing_is_an_error_listing_the_adapters() {
        let e = Gpu::open(&DeviceChoice::GpuName("no-such-adapter-xyz".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no GPU adapter matches --device gpu:no-such-adapter-xyz"),
            "{e}"
        );
        assert!(e.contains("--device cpu"), "{e}");
    }
}
