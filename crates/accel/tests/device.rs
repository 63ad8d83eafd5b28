//! The device layer on whatever adapter the tests get (lavapipe in CI).

use accel::testing::test_gpu;
use accel::{AccelError, Workgroups};

const AXPY: &str = r#"
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (i >= p.n) { return; }
    y[i] = p.a * x[i] + y[i];
}
"#;

#[test]
fn adapters_are_listed_with_their_limits() {
    let Some(gpu) = test_gpu() else { return };
    let all = accel::list_adapters();
    assert!(!all.is_empty());
    let line = all[0].to_string();
    assert!(line.starts_with("gpu:0  "), "{line}");
    assert!(
        gpu.max_binding() >= 128 << 20,
        "binding limit {}",
        gpu.max_binding()
    );
}

#[test]
fn a_kernel_runs_over_a_folded_grid() {
    let Some(gpu) = test_gpu() else { return };
    let kernel = gpu.compile("axpy", AXPY, "main").unwrap();
    let n = 100_003usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let xb = gpu.upload("x", bytemuck::cast_slice(&x)).unwrap();
    let yb = gpu.upload("y", bytemuck::cast_slice(&y)).unwrap();
    let mut params = Vec::new();
    params.extend_from_slice(&(n as u32).to_le_bytes());
    params.extend_from_slice(&2.0f32.to_le_bytes());
    // 1563 workgroups folded into a 2-D grid of at most 1000 per dimension.
    let grid = Workgroups::linear((n as u32).div_ceil(64), 1000);
    assert_eq!(grid.y, 2);
    let mut rec = gpu.record("axpy");
    rec.dispatch(&kernel, &params, &[&xb, &yb], grid);
    rec.submit_and_wait().unwrap();
    let out = gpu.read_f32(&yb, n).unwrap();
    for i in 0..n {
        assert_eq!(out[i], 2.0 * x[i] + y[i], "at {i}");
    }
}

#[test]
fn a_broken_shader_is_an_error_not_a_panic() {
    let Some(gpu) = test_gpu() else { return };
    let e = gpu
        .compile(
            "broken",
            "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
            "main",
        )
        .unwrap_err();
    assert!(matches!(e, AccelError::ShaderCompile { .. }), "{e}");
    assert!(e.to_string().contains("--device cpu"), "{e}");
    // The device stays usable.
    gpu.compile("axpy", AXPY, "main").unwrap();
    gpu.check("after a failed compile").unwrap();
}

#[test]
fn a_buffer_past_the_limit_names_the_flags_that_help() {
    let Some(gpu) = test_gpu() else { return };
    let e = gpu
        .zeroed("blk.0.ffn_down_exps.weight", gpu.limits.max_buffer_size + 4)
        .unwrap_err();
    assert!(matches!(e, AccelError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("--n-cpu-moe"), "{e}");
}
