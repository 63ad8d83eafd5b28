// GEMV entry point for adapters without subgroup operations: the whole tree in workgroup memory.

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    set_batch(wid.z);
    let job = gemv_job(wid.x + wid.y * nwg.x);
    if (job.nt == 0u) {
        return;
    }
    let v = gemv_run(job, lid);
    for (var i = 0u; i < GEMV_TOKENS; i++) {
        red[i * GEMV_WG + lid] = v[i];
    }
    workgroupBarrier();
    gemv_tree_shared(lid, 1u);
    if (lid < job.nt) {
        gemv_store(job, lid, red[lid * GEMV_WG]);
    }
}
