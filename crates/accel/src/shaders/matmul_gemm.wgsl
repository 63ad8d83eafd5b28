// Tiled GEMM for prompts: one workgroup per tile of GEMM_ROWS rows × GEMM_TOKENS tokens (of
// matrix wid.z of a batch). Per step
// of GEMM_K values it dequantizes the weight tile into workgroup memory once (one chunk of 8
// per thread) and loads the activation tile beside it; each thread then accumulates a 4 × 2
// block of outputs from there, so each weight is decoded once per tile, not once per token.
//
// Each output is summed in the GEMV's fixed order (see matmul_gemv.wgsl): a step is one slice
// (`inner`), slices add up into runs of `per_run` (`run`), and the runs are added by the same
// in-order pairwise tree, built as they complete: `stack[level]` holds the finished subtree of
// 2^level runs waiting for its right neighbour (a binary counter), and the leftover subtrees
// are folded at the end. So a token gets the same bits from either kernel.

const GEMM_ROWS: u32 = 64u;
const GEMM_TOKENS: u32 = 32u;
const GEMM_K: u32 = 32u;
// Leaves of the tree (the GEMV's workgroup size) and its levels + 1.
const RUNS: u32 = 64u;
const LEVELS: u32 = 7u;
// Row pitch of both tiles: one more than GEMM_K, so that neighbouring rows fall in different banks.
const PITCH: u32 = 33u;

var<workgroup> w_tile: array<f32, 2112>; // GEMM_ROWS × PITCH
var<workgroup> x_tile: array<f32, 1056>; // GEMM_TOKENS × PITCH

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    set_batch(wid.z);
    let row_tiles = (p.rows + GEMM_ROWS - 1u) / GEMM_ROWS;
    let token_tiles = (p.n_tokens + GEMM_TOKENS - 1u) / GEMM_TOKENS;
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= row_tiles * token_tiles) {
        return;
    }
    let r0 = (tile % row_tiles) * GEMM_ROWS;
    let t0 = (tile / row_tiles) * GEMM_TOKENS;
    // This thread's outputs: rows tr + 16i (i < 4), tokens tc + 16j (j < 2) of the tile.
    let tr = lid & 15u;
    let tc = lid >> 4u;
    var run = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var stack: array<f32, 56>; // [output][level], LEVELS per output
    var leaf = 0u;
    // The chunk this thread decodes: tile row lid / 4, chunk lid % 4 of the step.
    let wr = lid >> 2u;
    let wc = lid & 3u;
    // The activations this thread loads: token lid / 8, values 4·(lid % 8)..+4 of the step.
    let xt = lid >> 3u;
    let xk = 4u * (lid & 7u);
    let slices = (p.cols + GEMM_K - 1u) / GEMM_K;
    let per_run = (slices + RUNS - 1u) / RUNS;
    for (var s = 0u; s < slices; s++) {
        let k0 = s * GEMM_K;
        var e = Eight(vec4<f32>(0.0), vec4<f32>(0.0));
        let c = k0 / 8u + wc;
        if (r0 + wr < p.rows && 8u * c < p.cols) {
            e = weights8(r0 + wr, c);
        }
        let wb = wr * PITCH + 8u * wc;
        w_tile[wb] = e.lo.x;
        w_tile[wb + 1u] = e.lo.y;
        w_tile[wb + 2u] = e.lo.z;
        w_tile[wb + 3u] = e.lo.w;
        w_tile[wb + 4u] = e.hi.x;
        w_tile[wb + 5u] = e.hi.y;
        w_tile[wb + 6u] = e.hi.z;
        w_tile[wb + 7u] = e.hi.w;
        let t = t0 + xt;
        for (var i = 0u; i < 4u; i++) {
            var v = 0.0;
            if (t < p.n_tokens) {
                v = x_at(t, k0 + xk + i);
            }
            x_tile[xt * PITCH + xk + i] = v;
        }
        workgroupBarrier();
        var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (var k = 0u; k < GEMM_K; k++) {
            let w0 = w_tile[tr * PITCH + k];
            let w1 = w_tile[(tr + 16u) * PITCH + k];
            let w2 = w_tile[(tr + 32u) * PITCH + k];
            let w3 = w_tile[(tr + 48u) * PITCH + k];
            let x0 = x_tile[tc * PITCH + k];
            let x1 = x_tile[(tc + 16u) * PITCH + k];
            acc[0] += w0 * x0;
            acc[1] += w1 * x0;
            acc[2] += w2 * x0;
            acc[3] += w3 * x0;
            acc[4] += w0 * x1;
            acc[5] += w1 * x1;
            acc[6] += w2 * x1;
            acc[7] += w3 * x1;
        }
        workgroupBarrier();
        for (var j = 0u; j < 8u; j++) {
            run[j] += acc[j];
        }
        if ((s + 1u) % per_run == 0u || s + 1u == slices) {
            // Run `leaf` is complete: merge it with the finished subtrees to its left.
            for (var j = 0u; j < 8u; j++) {
                var v = run[j];
                var level = 0u;
                var n = leaf;
                while ((n & 1u) == 1u) {
                    v = stack[j * LEVELS + level] + v;
                    level++;
                    n >>= 1u;
                }
                stack[j * LEVELS + level] = v;
                run[j] = 0.0;
            }
            leaf++;
        }
    }
    // The leftover subtrees, smallest (rightmost) first: what the padded tree adds up to.
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var j = 0u; j < 8u; j++) {
        var v = 0.0;
        for (var level = 0u; level < LEVELS; level++) {
            if (((leaf >> level) & 1u) == 1u) {
                v = stack[j * LEVELS + level] + v;
            }
        }
        acc[j] = v;
    }
    for (var j = 0u; j < 2u; j++) {
        let t = t0 + tc + 16u * j;
        for (var i = 0u; i < 4u; i++) {
            let r = r0 + tr + 16u * i;
            if (t < p.n_tokens && r < p.rows) {
                y[y_base() + t * p.out_stride + p.out_row0 + r] = acc[4u * j + i];
            }
        }
    }
}
