// Strided row copy over a two-level row index: row r = (i, j) with i = r / n_inner,
// j = r % n_inner; its `width` floats go from src_off + i·src_outer + j·src_inner to
// dst_off + i·dst_outer + j·dst_inner. Covers plain row copies (KV cache appends, gathers of
// parts of rows), broadcasts (an inner stride of 0: DeepSeek's shared RoPE key to every head)
// and token-major ↔ head-major transposes (per-head matmuls). One thread per element.

struct Params {
    n_rows: u32,
    n_inner: u32,
    width: u32,
    src_off: u32,
    src_outer: u32,
    src_inner: u32,
    dst_off: u32,
    dst_outer: u32,
    dst_inner: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (e >= p.n_rows * p.width) { return; }
    let r = e / p.width;
    let c = e % p.width;
    let i = r / p.n_inner;
    let j = r % p.n_inner;
    dst[p.dst_off + i * p.dst_outer + j * p.dst_inner + c] =
        src[p.src_off + i * p.src_outer + j * p.src_inner + c];
}
