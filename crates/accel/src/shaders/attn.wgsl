// Causal attention over a KV cache (kernels::attention::attention_with): one workgroup per
// (query token, head), positions in blocks of 64 with an online softmax (running max and
// denominator; the partial output is rescaled when the max grows), so any context length
// runs in fixed workgroup memory. Grouped-query heads (head h reads KV head h / group),
// strided cache layouts (per-position rows, head-major rows, MLA's shared latent row whose
// first dv values are also the value), a sliding window and attention sinks.
//
// Work per block: thread i scores position j0 + i (its key row against the query held in
// workgroup memory), the block's max and sum are reduced in workgroup memory, then each
// thread adds the block's weighted values into the output elements it owns
// (lid, lid + 64, …).

struct Params {
    n_tokens: u32,
    n_head: u32,
    group: u32,
    dk: u32,
    dv: u32,
    k_stride: u32,
    v_stride: u32,
    v_offset: u32,
    k_head: u32,
    v_head: u32,
    token0: u32,
    pos0: u32,
    window: u32,
    has_sinks: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> sinks: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
// Widest query/key and value rows (host-checked): MLA's absorbed form needs 576 and 512.
const MAX_DK: u32 = 1024u;
const PER_THREAD: u32 = 16u; // MAX_DV / WG
const LOWEST: f32 = -3.4028235e38;

var<workgroup> qs: array<f32, MAX_DK>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.n_tokens * p.n_head) { return; }
    let t = item / p.n_head;
    let h = item % p.n_head;
    let g = h / p.group;
    let row = (p.token0 + t) * p.n_head + h;
    for (var c = lid; c < p.dk; c += WG) {
        qs[c] = q[row * p.dk + c];
    }
    workgroupBarrier();

    // This token sees positions lo..ctx (causal, and its window).
    let ctx = p.pos0 + t + 1u;
    var lo = 0u;
    if (p.window != 0u && ctx > p.window) { lo = ctx - p.window; }
    let kb = g * p.k_head;
    let vb = p.v_offset + g * p.v_head;

    var acc: array<f32, PER_THREAD>;
    var m_run = LOWEST;
    var l_run = 0.0;
    for (var j0 = lo; j0 < ctx; j0 += WG) {
        let j = j0 + lid;
        var s = LOWEST;
        if (j < ctx) {
            let kr = j * p.k_stride + kb;
            var d = 0.0;
            for (var c = 0u; c < p.dk; c++) {
                d += qs[c] * k[kr + c];
            }
            s = d * p.scale;
        }
        red[lid] = s;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid < w) { red[lid] = max(red[lid], red[lid + w]); }
            workgroupBarrier();
        }
        let m_new = max(m_run, red[0]);
        workgroupBarrier();
        // The first block: m_run is LOWEST and corr underflows to 0 (acc and l_run are 0).
        let corr = exp(m_run - m_new);
        var e = 0.0;
        if (j < ctx) { e = exp(s - m_new); }
        ps[lid] = e;
        red[lid] = e;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid < w) { red[lid] += red[lid + w]; }
            workgroupBarrier();
        }
        l_run = l_run * corr + red[0];
        let nb = min(WG, ctx - j0);
        for (var i = 0u; i < PER_THREAD; i++) {
            let d = lid + i * WG;
            if (d < p.dv) {
                var a = acc[i] * corr;
                for (var jj = 0u; jj < nb; jj++) {
                    a += ps[jj] * v[(j0 + jj) * p.v_stride + vb + d];
                }
                acc[i] = a;
            }
        }
        m_run = m_new;
        // ps and red are rewritten by the next block.
        workgroupBarrier();
    }

    // A sink joins the denominator with no value of its own (not scaled).
    if (p.has_sinks != 0u) {
        let sk = sinks[h];
        if (sk >= LOWEST) {
            let m_f = max(m_run, sk);
            let c = exp(m_run - m_f);
            l_run = l_run * c + exp(sk - m_f);
            for (var i = 0u; i < PER_THREAD; i++) { acc[i] = acc[i] * c; }
        }
    }
    let inv = select(0.0, 1.0 / l_run, l_run > 0.0);
    for (var i = 0u; i < PER_THREAD; i++) {
        let d = lid + i * WG;
        if (d < p.dv) { out[row * p.dv + d] = acc[i] * inv; }
    }
}
