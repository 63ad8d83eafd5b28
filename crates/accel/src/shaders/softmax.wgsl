// Row softmax in place (kernels::softmax): x = softmax(x·scale + mask), optionally with an
// attention sink (a logit that joins the denominator and has no entry of its own,
// softmax_with_sink_inplace). One workgroup per row, three passes: max, sum of exponentials,
// normalise. −inf entries get weight 0; a row with nothing but −inf (and no sink) becomes
// zeros, as on the CPU.

struct Params {
    n_rows: u32,
    n: u32,
    x_off: u32,
    x_stride: u32,
    mask_off: u32,
    mask_stride: u32,
    has_mask: u32,
    has_sink: u32,
    n_sinks: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> sinks: array<f32>;

const WG: u32 = 256u;
// The most negative finite f32: anything below it is −inf.
const LOWEST: f32 = -3.4028235e38;
var<workgroup> part: array<f32, WG>;

fn value(row: u32, c: u32) -> f32 {
    var v = x[p.x_off + row * p.x_stride + c] * p.scale;
    if (p.has_mask != 0u) { v += mask[p.mask_off + row * p.mask_stride + c]; }
    return v;
}

fn weight(v: f32, mx: f32) -> f32 {
    return select(exp(v - mx), 0.0, v < LOWEST);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n_rows) { return; }
    var sink = LOWEST;
    if (p.has_sink != 0u) { sink = sinks[row % p.n_sinks]; }

    var mx = LOWEST;
    for (var c = lid; c < p.n; c += WG) {
        mx = max(mx, value(row, c));
    }
    part[lid] = mx;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) { part[lid] = max(part[lid], part[lid + h]); }
        workgroupBarrier();
    }
    // LOWEST: every entry is −inf (the sums below are then 0 and the row becomes zeros).
    mx = max(part[0], sink);
    workgroupBarrier();

    var acc = 0.0;
    for (var c = lid; c < p.n; c += WG) {
        let v = value(row, c);
        if (v >= LOWEST) { acc += weight(v, mx); }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) { part[lid] += part[lid + h]; }
        workgroupBarrier();
    }
    var sum = part[0];
    if (sink >= LOWEST && p.has_sink != 0u) { sum += exp(sink - mx); }
    let inv = select(0.0, 1.0 / sum, sum > 0.0);
    for (var c = lid; c < p.n; c += WG) {
        let v = value(row, c);
        var y = 0.0;
        if (v >= LOWEST) { y = weight(v, mx) * inv; }
        x[p.x_off + row * p.x_stride + c] = y;
    }
}
