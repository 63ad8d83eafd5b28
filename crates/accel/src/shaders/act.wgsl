// Gated activations (kernels::activation): out = act(gate, up) per element, one thread each.
// kind 0: SiLU-GLU, silu(g)·u = g / (1 + e^(−g)) · u;
// kind 1: gpt-oss's swiglu_oai, g / (1 + e^(−alpha·g)) · (u + 1) with g = min(gate, limit),
//         u = clamp(up, −limit, limit).
// gate and up may be the same buffer (a fused gate+up projection); out is another.

struct Params {
    n_rows: u32,
    width: u32,
    gate_off: u32,
    gate_stride: u32,
    up_off: u32,
    up_stride: u32,
    out_off: u32,
    out_stride: u32,
    kind: u32,
    alpha: f32,
    limit: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n_rows * p.width) { return; }
    let r = i / p.width;
    let c = i % p.width;
    var g = gate[p.gate_off + r * p.gate_stride + c];
    var u = up[p.up_off + r * p.up_stride + c];
    var y: f32;
    if (p.kind == 0u) {
        y = g / (1.0 + exp(-g)) * u;
    } else {
        g = min(g, p.limit);
        u = clamp(u, -p.limit, p.limit);
        y = g / (1.0 + exp(-p.alpha * g)) * (u + 1.0);
    }
    out[p.out_off + r * p.out_stride + c] = y;
}
