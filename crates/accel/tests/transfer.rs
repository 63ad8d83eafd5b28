//! Asynchronous submission and the one read-back per step the model's GPU stages use:
//! record, copy the result into a staging buffer, submit without waiting, read it later.

use accel::testing::test_gpu;

const SCALE: &str = r#"
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.n) { return; }
    y[gid.x] = p.a * x[gid.x];
}
"#;

fn params(n: u32, a: f32) -> Vec<u8> {
    let mut p = n.to_le_bytes().to_vec();
    p.extend_from_slice(&a.to_le_bytes());
    p
}

#[test]
fn submitted_work_is_read_back_through_a_reused_staging_buffer() {
    let Some(gpu) = test_gpu() else { return };
    let kernel = gpu.compile("scale", SCALE, "main").unwrap();
    let n = 1000usize;
    let x = gpu.zeroed("x", (n * 4) as u64).unwrap();
    let y = gpu.zeroed("y", (n * 4) as u64).unwrap();
    let staging = gpu.staging("y staging", (n * 4) as u64).unwrap();
    // Two steps through the same buffers: the staging buffer is unmapped after each read.
    for step in 0..2 {
        let xs: Vec<f32> = (0..n).map(|i| (i + step) as f32).collect();
        gpu.write(&x, bytemuck::cast_slice(&xs)).unwrap();
        let mut rec = gpu.record("scale");
        rec.dispatch(
            &kernel,
            &params(n as u32, 3.0),
            &[&x, &y],
            gpu.workgroups((n as u32).div_ceil(64)),
        );
        rec.copy(&y, &staging, (n * 4) as u64);
        rec.submit().unwrap();
        // (The CPU would do its own share here.)
        let mut out = vec![0f32; n];
        gpu.read_staging(&staging, bytemuck::cast_slice_mut(&mut out))
            .unwrap();
        for i in 0..n {
            assert_eq!(out[i], 3.0 * xs[i], "step {step} at {i}");
        }
    }
    // Asking for more than the staging buffer holds is an error, not a fault.
    let mut too_much = vec![0u8; n * 4 + 4];
    let e = gpu.read_staging(&staging, &mut too_much).unwrap_err();
    assert!(e.to_string().contains("bytes asked of a"), "{e}");
}
