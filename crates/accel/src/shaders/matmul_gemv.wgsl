// GEMV for a few tokens (decode): one workgroup per (row, group of up to GEMV_TOKENS tokens)
// of matrix wid.z of a batch.
//
// Every output is summed in one fixed order, the same as the GEMM's, so that a token's result
// does not depend on how many tokens share the step (batch invariance):
// - the row is cut into slices of SLICE values (the GEMM's K step), each summed in order
//   (`inner += w·x`);
// - consecutive slices form GEMV_WG runs of `per_run` slices (`per_run` depends only on the row
//   length), each the in-order sum of its slices;
// - the runs are added by an in-order pairwise tree over GEMV_WG leaves (missing leaves are 0).
// Here lane i computes run i and the tree is done by the entry point
// (matmul_gemv_subgroup.wgsl or matmul_gemv_shared.wgsl); the GEMM streams the same order.

const GEMV_WG: u32 = 64u;
const GEMV_TOKENS: u32 = 8u;
const SLICE: u32 = 32u;

// The tree's nodes: [token][lane].
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

// Run `lane` of the row for tokens t0..t0+nt (zero where the run is empty).
fn gemv_run(job: GemvJob, lane: u32) -> array<f32, 8> {
    var run = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let slices = (p.cols + SLICE - 1u) / SLICE;
    let per_run = (slices + GEMV_WG - 1u) / GEMV_WG;
    let first = lane * per_run;
    let last = min(first + per_run, slices);
    for (var s = first; s < last; s++) {
        var inner = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var q = 0u; q < SLICE / 8u; q++) {
            let c = (SLICE / 8u) * s + q;
            let e = weights8(job.row, c);
            let k = 8u * c;
            // A constant trip count lets the compiler unroll this and keep `inner` in registers.
            for (var i = 0u; i < GEMV_TOKENS; i++) {
                if (i >= job.nt) {
                    break;
                }
                let t = job.t0 + i;
                var a = inner[i];
                a += e.lo.x * x_at(t, k);
                a += e.lo.y * x_at(t, k + 1u);
                a += e.lo.z * x_at(t, k + 2u);
                a += e.lo.w * x_at(t, k + 3u);
                a += e.hi.x * x_at(t, k + 4u);
                a += e.hi.y * x_at(t, k + 5u);
                a += e.hi.z * x_at(t, k + 6u);
                a += e.hi.w * x_at(t, k + 7u);
                inner[i] = a;
            }
        }
        for (var i = 0u; i < GEMV_TOKENS; i++) {
            run[i] += inner[i];
        }
    }
    return run;
}

// The tree's levels from `half` up, in workgroup memory (red[token][lane] holds the nodes of
// the level below); every thread of the workgroup calls it.
fn gemv_tree_shared(lane: u32, start: u32) {
    for (var half = start; half < GEMV_WG; half <<= 1u) {
        if ((lane & (2u * half - 1u)) == 0u) {
            for (var i = 0u; i < GEMV_TOKENS; i++) {
                red[i * GEMV_WG + lane] = red[i * GEMV_WG + lane] + red[i * GEMV_WG + lane + half];
            }
        }
        workgroupBarrier();
    }
}

fn gemv_store(job: GemvJob, i: u32, sum: f32) {
    y[y_base() + (job.t0 + i) * p.out_stride + p.out_row0 + job.row] = sum;
}
