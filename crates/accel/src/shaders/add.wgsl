// x += y over rows (kernels::vector::add_inplace): the residual connection, or a bias added
// to every row (y's stride 0). One thread per element.

struct Params {
    n_rows: u32,
    width: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n_rows * p.width) { return; }
    let r = i / p.width;
    let c = i % p.width;
    let xi = p.x_off + r * p.x_stride + c;
    x[xi] = x[xi] + y[p.y_off + r * p.y_stride + c];
}
