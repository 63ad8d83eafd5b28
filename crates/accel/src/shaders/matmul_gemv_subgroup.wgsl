// GEMV entry point with a subgroup reduction: each subgroup adds its lanes' partial sums, lane 0
// of each writes one value per token, and threads 0..nt add those up.

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let job = gemv_job(wid.x + wid.y * nwg.x);
    if (job.nt == 0u) {
        return;
    }
    let acc = gemv_partial(job, lid);
    for (var i = 0u; i < GEMV_TOKENS; i++) {
        let s = subgroupAdd(acc[i]);
        if (sg_lane == 0u) {
            red[i * GEMV_WG + sg_id] = s;
        }
    }
    workgroupBarrier();
    if (lid < job.nt) {
        var sum = 0.0;
        for (var g = 0u; g < sg_count; g++) {
            sum += red[lid * GEMV_WG + g];
        }
        gemv_store(job, lid, sum);
    }
}
