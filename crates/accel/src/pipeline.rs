//! WGSL compute pipelines: compiled once (compile errors are captured and returned, never a
//! panic), then recorded into one command stream per step and submitted together.
//!
//! Binding convention for every kernel: `@group(0) @binding(0)` is a uniform block of
//! parameters, `@binding(1..)` the storage buffers in the order passed to
//! [`Recording::dispatch`].

use wgpu::util::DeviceExt;

use crate::{AccelError, Gpu, GpuBuffer};

/// A compiled compute pipeline.
#[derive(Debug)]
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub label: String,
}

/// A dispatch grid. Large 1-D grids are folded into x × y because each dimension is limited
/// (65535 on most adapters): shaders compute their linear workgroup index as
/// `wid.x + wid.y * num_workgroups.x` and return when it is past the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workgroups {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Workgroups {
    pub fn linear(count: u32, max_per_dim: u32) -> Self {
        let count = count.max(1);
        if count <= max_per_dim {
            return Self {
                x: count,
                y: 1,
                z: 1,
            };
        }
        let y = count.div_ceil(max_per_dim);
        Self {
            x: count.div_ceil(y),
            y,
            z: 1,
        }
    }
}

impl Gpu {
    /// Compiles `source` (WGSL) and its compute entry point `entry`.
    pub fn compile(&self, label: &str, source: &str, entry: &str) -> Result<Kernel, AccelError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(AccelError::ShaderCompile {
                label: label.to_string(),
                adapter: self.name().to_string(),
                reason: e.to_string(),
            });
        }
        Ok(Kernel {
            pipeline,
            label: label.to_string(),
        })
    }

    /// Starts recording a sequence of dispatches (one submission, one fence).
    pub fn record(&self, label: &str) -> Recording<'_> {
        let encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recording {
            gpu: self,
            encoder,
            label: label.to_string(),
            dispatches: 0,
        }
    }

    /// Grid for `count` workgroups within this adapter's per-dimension limit.
    pub fn workgroups(&self, count: u32) -> Workgroups {
        Workgroups::linear(count, self.limits.max_compute_workgroups_per_dimension)
    }
}

/// Dispatches recorded in order; [`Recording::submit`] sends them as one command buffer.
pub struct Recording<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    label: String,
    dispatches: u64,
}

impl Recording<'_> {
    /// Dispatches recorded so far (each a kernel launch on the device: what a real GPU pays
    /// a fixed cost for, however small the work).
    pub fn dispatches(&self) -> u64 {
        self.dispatches
    }

    /// Records `kernel` over `grid` with `params` (a uniform block, a multiple of 16 bytes is
    /// not required: it is padded) and the storage `buffers` at bindings 1, 2, ….
    pub fn dispatch(
        &mut self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&GpuBuffer],
        grid: Workgroups,
    ) {
        let mut block = params.to_vec();
        block.resize(params.len().div_ceil(16).max(1) * 16, 0);
        let uniform = self
            .gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &block,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.buffer.as_entire_binding(),
            });
        }
        let layout = kernel.pipeline.get_bind_group_layout(0);
        let group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.label),
                layout: &layout,
                entries: &entries,
            });
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&kernel.label),
                timestamp_writes: None,
            });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(grid.x, grid.y, grid.z);
        self.dispatches += 1;
    }

    /// Records a copy of the first `len` bytes (a multiple of 4) of `src` into `dst`
    /// (e.g. a [`Gpu::staging`] buffer, read after [`Recording::submit`]).
    pub fn copy(&mut self, src: &GpuBuffer, dst: &GpuBuffer, len: u64) {
        self.encoder
            .copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, len);
    }

    /// Records a copy of `len` bytes from byte `src_at` of `src` to byte `dst_at` of `dst`
    /// (all multiples of 4): several results gathered into one staging buffer, read back
    /// at once. Ranges outside either buffer are an error, not a GPU fault.
    pub fn copy_region(
        &mut self,
        src: &GpuBuffer,
        src_at: u64,
        dst: &GpuBuffer,
        dst_at: u64,
        len: u64,
    ) -> Result<(), AccelError> {
        let fits = |b: &GpuBuffer, at: u64| at.checked_add(len).is_some_and(|end| end <= b.len);
        if !fits(src, src_at) || !fits(dst, dst_at) || !(src_at | dst_at | len).is_multiple_of(4) {
            return Err(AccelError::Validation {
                what: self.label.clone(),
                adapter: self.gpu.name().to_string(),
                reason: format!(
                    "copy of {len} bytes from byte {src_at} of {} ({} bytes) to byte {dst_at} of {} ({} bytes)",
                    src.label, src.len, dst.label, dst.len
                ),
            });
        }
        if len > 0 {
            self.encoder
                .copy_buffer_to_buffer(&src.buffer, src_at, &dst.buffer, dst_at, len);
        }
        Ok(())
    }

    /// Submits everything recorded without waiting: the CPU goes on with its own work
    /// while the GPU runs (wait with [`Gpu::read_staging`] or [`Gpu::wait`]).
    pub fn submit(self) -> Result<(), AccelError> {
        let scope = self
            .gpu
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        self.gpu.queue.submit([self.encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(AccelError::Validation {
                what: self.label,
                adapter: self.gpu.name().to_string(),
                reason: e.to_string(),
            });
        }
        self.gpu.check(&self.label)
    }

    /// Submits everything recorded and waits for it (errors reported, never a panic).
    pub fn submit_and_wait(self) -> Result<(), AccelError> {
        let scope = self
            .gpu
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        self.gpu.queue.submit([self.encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(AccelError::Validation {
                what: self.label,
                adapter: self.gpu.name().to_string(),
                reason: e.to_string(),
            });
        }
        self.gpu.wait(&self.label)
    }
}
