// Causal attention over a KV cache (kernels::attention::attention_with): one workgroup per
// item of up to 8 query rows that read the same KV head — heads of one token (GQA groups,
// MLA's absorbed form), or one head of consecutive tokens (multi-head attention, MLA's
// decompressed form) — so each cached key and value row is read once per item, not once per
// head. Positions go in blocks of 64 with an online softmax (per row: a running max and
// denominator; the partial output is rescaled when the max grows), so any context length
// runs in fixed workgroup memory. Grouped-query heads (head h reads KV head h / group),
// strided cache layouts (per-position rows, head-major rows, MLA's shared latent row whose
// first dv values are also the value), a sliding window and attention sinks.
//
// Work per block: thread i reads the key row of position j0 + i once and scores it against
// every row's query (held in workgroup memory); the rows' maxima and sums are reduced in
// workgroup memory; then each thread adds the block's weighted values into the output
// elements it owns (lid, lid + 64, …) of every row, each value read once.
//
// Blocks start at multiples of 64 (absolute positions) and each row masks what it must not
// see, so a row's arithmetic — the order of every sum — is the same whatever item it shares
// (masked entries add exact zeros): a token's output does not depend on its batch.
//
// Split (flash-decoding, for decode steps where tokens × heads are too few workgroups to
// fill a GPU): with `partial` set, workgroup (item, s) covers only positions
// lo + s·chunk .. lo + (s+1)·chunk of each row's range and writes the row's running max,
// denominator and unnormalised output (dv + 2 floats) to the scratch at `out`;
// attn_combine.wgsl merges them.

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
    n_splits: u32,
    chunk: u32,
    partial: u32,
    // An item: `hb` heads (dividing `group`) × `tb` tokens, at most ROWS rows.
    hb: u32,
    tb: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> sinks: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const ROWS: u32 = 8u;
// The item's queries (rows × dk ≤ Q_FLOATS) and every row's output elements of one thread
// (rows × ceil(dv / 64) ≤ ACC): the host picks the rows per item within both. 11 KiB + 4 KiB
// of workgroup memory: within every adapter's 16 KiB.
const Q_FLOATS: u32 = 2816u;
const ACC: u32 = 64u;
const LOWEST: f32 = -3.4028235e38;

var<workgroup> qs: array<f32, Q_FLOATS>;
var<workgroup> ps: array<f32, 512>;
var<workgroup> red: array<f32, 512>;

// The positions lo..hi that token t's row sees (in this split).
fn row_range(t: u32, split: u32) -> vec2<u32> {
    var hi = p.pos0 + t + 1u;
    var lo = 0u;
    if (p.window != 0u && hi > p.window) { lo = hi - p.window; }
    if (p.partial != 0u) {
        lo = min(lo + split * p.chunk, hi);
        hi = min(lo + p.chunk, hi);
    }
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let head_items = p.n_head / p.hb;
    let n_items = head_items * ((p.n_tokens + p.tb - 1u) / p.tb);
    let idx = wid.x + wid.y * nwg.x;
    if (idx >= n_items * p.n_splits) { return; }
    let item = idx / p.n_splits;
    let split = idx % p.n_splits;
    let t0 = (item / head_items) * p.tb;
    let h0 = (item % head_items) * p.hb;
    let nt = min(p.tb, p.n_tokens - t0);
    let rows = nt * p.hb;
    let g = h0 / p.group;
    // Row r is (token t0 + r / hb, head h0 + r % hb).
    for (var e = lid; e < rows * p.dk; e += WG) {
        let r = e / p.dk;
        let qrow = (p.token0 + t0 + r / p.hb) * p.n_head + h0 + r % p.hb;
        qs[e] = q[qrow * p.dk + e % p.dk];
    }
    workgroupBarrier();

    // Ranges grow with the token: the first row starts first, the last ends last.
    let first = row_range(t0, split);
    let last = row_range(t0 + nt - 1u, split);
    let per = (p.dv + WG - 1u) / WG;
    let kb = g * p.k_head;
    let vb = p.v_offset + g * p.v_head;

    var acc: array<f32, ACC>;
    var m_run: array<f32, ROWS>;
    var l_run: array<f32, ROWS>;
    var corr: array<f32, ROWS>;
    var sc: array<f32, ROWS>;
    var seen: array<bool, ROWS>;
    for (var r = 0u; r < ROWS; r++) { m_run[r] = LOWEST; }
    for (var j0 = first.x - first.x % WG; j0 < last.y; j0 += WG) {
        let j = j0 + lid;
        // Position j's score for every row (its key row read once).
        for (var r = 0u; r < ROWS; r++) { sc[r] = 0.0; }
        if (j < last.y) {
            let kr = j * p.k_stride + kb;
            for (var c = 0u; c < p.dk; c++) {
                let kv = k[kr + c];
                for (var r = 0u; r < rows; r++) {
                    sc[r] += qs[r * p.dk + c] * kv;
                }
            }
        }
        for (var r = 0u; r < rows; r++) {
            let range = row_range(t0 + r / p.hb, split);
            seen[r] = j >= range.x && j < range.y;
            sc[r] = select(LOWEST, sc[r] * p.scale, seen[r]);
            red[r * WG + lid] = sc[r];
        }
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid < w) {
                for (var r = 0u; r < rows; r++) {
                    red[r * WG + lid] = max(red[r * WG + lid], red[r * WG + lid + w]);
                }
            }
            workgroupBarrier();
        }
        for (var r = 0u; r < rows; r++) {
            let m_new = max(m_run[r], red[r * WG]);
            // The first block a row sees: m_run is LOWEST and corr underflows to 0 (its acc
            // and l_run are 0); a block it does not see: m_new = m_run and corr is exactly 1
            // (selected, not computed: Vulkan lets exp be 3 ULP off, even at 0, and a row's
            // result must not depend on the blocks its batch neighbours add).
            corr[r] = select(exp(m_run[r] - m_new), 1.0, m_run[r] == m_new);
            m_run[r] = m_new;
        }
        workgroupBarrier();
        for (var r = 0u; r < rows; r++) {
            var e = 0.0;
            if (seen[r]) { e = exp(sc[r] - m_run[r]); }
            ps[r * WG + lid] = e;
            red[r * WG + lid] = e;
        }
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            if (lid < w) {
                for (var r = 0u; r < rows; r++) {
                    red[r * WG + lid] += red[r * WG + lid + w];
                }
            }
            workgroupBarrier();
        }
        for (var r = 0u; r < rows; r++) {
            l_run[r] = l_run[r] * corr[r] + red[r * WG];
        }
        let nb = min(WG, last.y - j0);
        for (var i = 0u; i < per; i++) {
            let d = lid + i * WG;
            if (d < p.dv) {
                for (var r = 0u; r < rows; r++) { acc[r * per + i] *= corr[r]; }
                for (var jj = 0u; jj < nb; jj++) {
                    let x = v[(j0 + jj) * p.v_stride + vb + d];
                    for (var r = 0u; r < rows; r++) {
                        acc[r * per + i] += ps[r * WG + jj] * x;
                    }
                }
            }
        }
        // ps and red are rewritten by the next block.
        workgroupBarrier();
    }

    for (var r = 0u; r < rows; r++) {
        let h = h0 + r % p.hb;
        let row = (t0 + r / p.hb) * p.n_head + h;
        if (p.partial != 0u) {
            let base = (row * p.n_splits + split) * (p.dv + 2u);
            if (lid == 0u) {
                out[base] = m_run[r];
                out[base + 1u] = l_run[r];
            }
            for (var i = 0u; i < per; i++) {
                let d = lid + i * WG;
                if (d < p.dv) { out[base + 2u + d] = acc[r * per + i]; }
            }
            continue;
        }
        // A sink joins the denominator with no value of its own (not scaled).
        var l = l_run[r];
        var c = 1.0;
        if (p.has_sinks != 0u) {
            let sk = sinks[h];
            if (sk >= LOWEST) {
                let m_f = max(m_run[r], sk);
                c = exp(m_run[r] - m_f);
                l = l * c + exp(sk - m_f);
            }
        }
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let o = ((p.token0 + t0 + r / p.hb) * p.n_head + h) * p.dv;
        for (var i = 0u; i < per; i++) {
            let d = lid + i * WG;
            if (d < p.dv) { out[o + d] = acc[r * per + i] * c * inv; }
        }
    }
}
