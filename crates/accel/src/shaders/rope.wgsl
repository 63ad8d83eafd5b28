// RoPE in place (kernels::rope::rope_heads): in each head of each token, the pairs of the
// n_dims values from `rot_off` are rotated by the angles of the token's position. The angles
// come precomputed (cos·mscale, sin·mscale per pair and token: RopeParams::cache on the host),
// so YaRN, frequency factors and the magnitude are exactly the CPU's. One thread per pair.

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    rot_off: u32,
    n_dims: u32,
    x_off: u32,
    x_stride: u32,
    table_row0: u32,
    neox: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    let half = p.n_dims / 2u;
    if (i >= p.n_tokens * p.n_heads * half) { return; }
    let j = i % half;
    let h = (i / half) % p.n_heads;
    let t = i / (half * p.n_heads);
    let base = p.x_off + t * p.x_stride + h * p.head_dim + p.rot_off;
    var a = base + 2u * j;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + j;
        b = base + j + half;
    }
    let cs = (p.table_row0 + t) * p.n_dims + 2u * j;
    let c = table[cs];
    let s = table[cs + 1u];
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}
