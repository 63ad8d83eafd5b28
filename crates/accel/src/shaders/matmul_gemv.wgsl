// GEMV for a few tokens (decode): one workgroup per (row, group of up to GEMV_TOKENS tokens).
// Its GEMV_WG threads stride over the row in chunks of 8 values, dequantize each chunk once and
// dot it with every token's activations; the per-thread partial sums are then reduced across
// the workgroup by the entry point (matmul_gemv_subgroup.wgsl or matmul_gemv_shared.wgsl).

const GEMV_WG: u32 = 64u;
const GEMV_TOKENS: u32 = 8u;

// Partial sums for the reduction: [token][thread or subgroup].
var<workgroup> red: array<f32, 512>;

struct GemvJob {
    row: u32,
    t0: u32,
    nt: u32,
}

// The job of linear workgroup `wg`; nt = 0 past the end of the grid.
fn gemv_job(wg: u32) -> GemvJob {
    let groups = (p.n_tokens + GEMV_TOKENS - 1u) / GEMV_TOKENS;
    if (p.rows == 0u || wg >= p.rows * groups) {
        return GemvJob(0u, 0u, 0u);
    }
    let row = wg % p.rows;
    let t0 = (wg / p.rows) * GEMV_TOKENS;
    return GemvJob(row, t0, min(GEMV_TOKENS, p.n_tokens - t0));
}

fn dot8(e: Eight, t: u32, k: u32) -> f32 {
    let a = vec4<f32>(x_at(t, k), x_at(t, k + 1u), x_at(t, k + 2u), x_at(t, k + 3u));
    let b = vec4<f32>(x_at(t, k + 4u), x_at(t, k + 5u), x_at(t, k + 6u), x_at(t, k + 7u));
    return dot(e.lo, a) + dot(e.hi, b);
}

// This thread's share of Σ_c w[row][c]·x[t0 + i][c] for i < job.nt.
fn gemv_partial(job: GemvJob, lid: u32) -> array<f32, 8> {
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let chunks = (p.cols + 7u) / 8u;
    for (var c = lid; c < chunks; c += GEMV_WG) {
        let e = weights8(job.row, c);
        for (var i = 0u; i < job.nt; i++) {
            acc[i] += dot8(e, job.t0 + i, 8u * c);
        }
    }
    return acc;
}

fn gemv_store(job: GemvJob, i: u32, sum: f32) {
    y[p.y_offset + (job.t0 + i) * p.out_stride + p.out_row0 + job.row] = sum;
}
