// GEMV entry point for adapters without subgroup operations: a tree reduction in workgroup
// memory, all tokens at once.

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let job = gemv_job(wid.x + wid.y * nwg.x);
    if (job.nt == 0u) {
        return;
    }
    let acc = gemv_partial(job, lid);
    for (var i = 0u; i < GEMV_TOKENS; i++) {
        red[i * GEMV_WG + lid] = acc[i];
    }
    workgroupBarrier();
    for (var stride = GEMV_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            for (var i = 0u; i < GEMV_TOKENS; i++) {
                red[i * GEMV_WG + lid] += red[i * GEMV_WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < job.nt) {
        gemv_store(job, lid, red[lid * GEMV_WG]);
    }
}
