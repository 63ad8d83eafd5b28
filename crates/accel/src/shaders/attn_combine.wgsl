// Merges the splits of a split attention (attn.wgsl with `partial`): per (token, head), the
// splits' running maxima m_s, denominators l_s and unnormalised outputs a_s become
// out = Σ a_s·e^(m_s − M) / (Σ l_s·e^(m_s − M) [+ e^(sink − M)]), M the largest m_s (and
// sink). Splits that saw no position (l_s = 0) count for nothing. One workgroup per row.

struct Params {
    n_tokens: u32,
    n_head: u32,
    dv: u32,
    n_splits: u32,
    token0: u32,
    has_sinks: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read> sinks: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const LOWEST: f32 = -3.4028235e38;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.n_tokens * p.n_head) { return; }
    let h = item % p.n_head;
    let t = item / p.n_head;
    let w = p.dv + 2u;
    let base = item * p.n_splits * w;
    var mx = LOWEST;
    for (var s = 0u; s < p.n_splits; s++) {
        if (parts[base + s * w + 1u] > 0.0) { mx = max(mx, parts[base + s * w]); }
    }
    var sink = LOWEST;
    if (p.has_sinks != 0u) { sink = sinks[h]; }
    let has_sink = sink >= LOWEST && p.has_sinks != 0u;
    if (has_sink) { mx = max(mx, sink); }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let ls = parts[base + s * w + 1u];
        if (ls > 0.0) { l += ls * exp(parts[base + s * w] - mx); }
    }
    if (has_sink) { l += exp(sink - mx); }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let row = (p.token0 + t) * p.n_head + h;
    for (var d = lid; d < p.dv; d += 64u) {
        var a = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            if (parts[base + s * w + 1u] > 0.0) {
                a += parts[base + s * w + 2u + d] * exp(parts[base + s * w] - mx);
            }
        }
        out[row * p.dv + d] = a * inv;
    }
}
