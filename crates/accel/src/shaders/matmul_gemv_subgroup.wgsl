// GEMV entry point with subgroup shuffles: the tree's lowest levels (within a subgroup) are
// shuffles, the rest in workgroup memory. The lane numbering follows the subgroups
// (sg_id · size + invocation), so the tree is the same however the adapter groups threads, as
// long as its subgroups are full (64 threads are a whole number of subgroups on every GPU:
// 8, 16, 32 or 64 wide).

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    set_batch(wid.z);
    let job = gemv_job(wid.x + wid.y * nwg.x);
    if (job.nt == 0u) {
        return;
    }
    let lane = sg_id * sg_size + sg_lane;
    var v = gemv_run(job, lane);
    let in_subgroup = min(sg_size, GEMV_WG);
    var half = 1u;
    for (; half < in_subgroup; half <<= 1u) {
        for (var i = 0u; i < GEMV_TOKENS; i++) {
            v[i] = v[i] + subgroupShuffleDown(v[i], half);
        }
    }
    for (var i = 0u; i < GEMV_TOKENS; i++) {
        red[i * GEMV_WG + lane] = v[i];
    }
    workgroupBarrier();
    gemv_tree_shared(lane, half);
    if (lid < job.nt) {
        gemv_store(job, lid, red[lid * GEMV_WG]);
    }
}
