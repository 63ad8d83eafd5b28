// RMSNorm per row (kernels::norm::rms_norm): y = x / sqrt(mean(x²) + eps) · w, one workgroup
// per row. `load`/`store` come from the prelude (in place, or from src into dst).

struct Params {
    n_rows: u32,
    width: u32,
    src_off: u32,
    src_stride: u32,
    dst_off: u32,
    dst_stride: u32,
    weighted: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> weight: array<f32>;

const WG: u32 = 256u;
var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n_rows) { return; }
    let s = p.src_off + row * p.src_stride;
    var acc = 0.0;
    for (var c = lid; c < p.width; c += WG) {
        let v = load(s + c);
        acc += v * v;
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) { part[lid] += part[lid + h]; }
        workgroupBarrier();
    }
    // Every read of the row happened before the barriers above: writing in place is safe.
    let scale = 1.0 / sqrt(part[0] / f32(p.width) + p.eps);
    let d = p.dst_off + row * p.dst_stride;
    for (var c = lid; c < p.width; c += WG) {
        var y = load(s + c) * scale;
        if (p.weighted != 0u) { y = y * weight[c]; }
        store(d + c, y);
    }
}
