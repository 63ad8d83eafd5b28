//! Storage buffers on the GPU: allocated within the adapter's limits (out of memory is an
//! error naming the flags that help, never a panic), filled once, read back for tests.

use crate::{AccelError, Gpu};

/// A storage buffer and what it holds (for messages). Sizes are padded to 4 bytes, as storage
/// bindings require; `len` is the caller's byte count.
#[derive(Debug)]
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub len: u64,
    pub label: String,
}

impl GpuBuffer {
    /// Whether the whole buffer fits one storage binding on `gpu` (larger tensors must be split
    /// by the caller, at row boundaries).
    pub fn fits_one_binding(&self, gpu: &Gpu) -> bool {
        self.buffer.size() <= gpu.limits.max_storage_buffer_binding_size
    }
}

fn padded(len: u64) -> u64 {
    len.div_ceil(4).max(1) * 4
}

impl Gpu {
    /// The largest byte count one storage binding can see.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    fn allocate(
        &self,
        label: &str,
        len: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, AccelError> {
        let size = padded(len);
        if size > self.limits.max_buffer_size {
            return Err(AccelError::TooLarge {
                what: label.to_string(),
                bytes: len,
                limit: self.limits.max_buffer_size,
                adapter: self.name().to_string(),
            });
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        let invalid = pollster::block_on(validation.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        if out_of_memory.is_some() {
            return Err(AccelError::OutOfMemory {
                what: label.to_string(),
                bytes: len,
                adapter: self.name().to_string(),
            });
        }
        if let Some(e) = invalid {
            return Err(AccelError::Validation {
                what: format!("allocating {label}"),
                adapter: self.name().to_string(),
                reason: e.to_string(),
            });
        }
        Ok(buffer)
    }

    /// A storage buffer holding `bytes` (uploaded once).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> Result<GpuBuffer, AccelError> {
        let buffer = self.allocate(
            label,
            bytes.len() as u64,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )?;
        // Writes must be whole 4-byte words: the whole words first, then the last partial
        // word padded with zeros (tensors of 34- or 210-byte blocks have any length).
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buffer, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut last = [0u8; 4];
            last[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buffer, whole as u64, &last);
        }
        // wgpu stages each write in host-visible memory until the next submission: flush
        // and wait now, so that uploading a whole model never holds a second copy of it.
        self.queue.submit(std::iter::empty::<wgpu::CommandBuffer>());
        self.wait(label)?;
        Ok(GpuBuffer {
            buffer,
            len: bytes.len() as u64,
            label: label.to_string(),
        })
    }

    /// A zero-filled storage buffer of `len` bytes (activations, KV cache, outputs).
    pub fn zeroed(&self, label: &str, len: u64) -> Result<GpuBuffer, AccelError> {
        // wgpu zero-initialises new buffers.
        let buffer = self.allocate(
            label,
            len,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )?;
        Ok(GpuBuffer {
            buffer,
            len,
            label: label.to_string(),
        })
    }

    /// Overwrites the start of `dst` with `bytes` (activations each step).
    pub fn write(&self, dst: &GpuBuffer, bytes: &[u8]) -> Result<(), AccelError> {
        if bytes.len() as u64 > dst.len || !bytes.len().is_multiple_of(4) {
            return Err(AccelError::Validation {
                what: format!("writing {} bytes to {}", bytes.len(), dst.label),
                adapter: self.name().to_string(),
                reason: format!(
                    "the buffer holds {} bytes and writes must be whole 4-byte words",
                    dst.len
                ),
            });
        }
        self.queue.write_buffer(&dst.buffer, 0, bytes);
        Ok(())
    }

    /// Copies the first `len` bytes of `src` back to the host (waits for the GPU).
    pub fn read_back(&self, src: &GpuBuffer, len: u64) -> Result<Vec<u8>, AccelError> {
        if len > src.len {
            return Err(AccelError::Validation {
                what: format!("reading back {len} bytes of {}", src.label),
                adapter: self.name().to_string(),
                reason: format!("the buffer holds only {} bytes", src.len),
            });
        }
        let size = padded(len);
        let staging = self.allocate(
            &format!("{} (read-back)", src.label),
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read-back"),
            });
        encoder.copy_buffer_to_buffer(&src.buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait(&format!("reading back {}", src.label))?;
        let mapped = rx
            .recv()
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(reason) = mapped {
            return Err(AccelError::Validation {
                what: format!("reading back {}", src.label),
                adapter: self.name().to_string(),
                reason,
            });
        }
        let out = match slice.get_mapped_range() {
            Ok(view) => view[..len as usize].to_vec(),
            Err(e) => {
                return Err(AccelError::Validation {
                    what: format!("reading back {}", src.label),
                    adapter: self.name().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        staging.unmap();
        Ok(out)
    }

    /// A host-readable buffer of `len` bytes that a [`crate::pipeline::Recording::copy`]
    /// fills and [`Gpu::read_staging`] reads (one per stream, reused every step).
    pub fn staging(&self, label: &str, len: u64) -> Result<GpuBuffer, AccelError> {
        let buffer = self.allocate(
            label,
            len,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok(GpuBuffer {
            buffer,
            len,
            label: label.to_string(),
        })
    }

    /// Waits for the submitted work, then copies the first `out.len()` bytes of the
    /// staging buffer `staging` into `out`.
    pub fn read_staging(&self, staging: &GpuBuffer, out: &mut [u8]) -> Result<(), AccelError> {
        let what = format!("reading back {}", staging.label);
        let err = |reason: String| AccelError::Validation {
            what: what.clone(),
            adapter: self.name().to_string(),
            reason,
        };
        if out.len() as u64 > staging.len {
            return Err(err(format!(
                "{} bytes asked of a {}-byte buffer",
                out.len(),
                staging.len
            )));
        }
        let slice = staging.buffer.slice(..padded(out.len() as u64));
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait(&what)?;
        rx.recv()
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(err)?;
        let copied = match slice.get_mapped_range() {
            Ok(view) => {
                out.copy_from_slice(&view[..out.len()]);
                Ok(())
            }
            Err(e) => Err(err(e.to_string())),
        };
        staging.buffer.unmap();
        copied
    }

    /// Reads back `n` f32 values.
    pub fn read_f32(&self, src: &GpuBuffer, n: usize) -> Result<Vec<f32>, AccelError> {
        let bytes = self.read_back(src, (n * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
