// Strided row copy: dst row r ← src row r / repeat (width floats each). Appends keys and
// values to a KV cache, gathers or scatters parts of rows (DeepSeek's q_nope / q_pe, the
// cached latents), and with repeat > 1 broadcasts one row to several (the shared RoPE key to
// every head). One thread per element.

struct Params {
    n_rows: u32,
    width: u32,
    src_off: u32,
    src_stride: u32,
    repeat: u32,
    dst_off: u32,
    dst_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n_rows * p.width) { return; }
    let r = i / p.width;
    let c = i % p.width;
    dst[p.dst_off + r * p.dst_stride + c] = src[p.src_off + (r / p.repeat) * p.src_stride + c];
}
