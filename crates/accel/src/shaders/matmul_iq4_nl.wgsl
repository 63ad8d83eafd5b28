// IQ4_NL: blocks of 18 bytes (f16 d, 16 bytes of nibbles laid out as Q4_0), value = d·KV[q] with
// the non-linear 4-bit codebook.
var<private> KV: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

fn codebook4(n: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(KV[n.x], KV[n.y], KV[n.z], KV[n.w]);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 18u * (c >> 2u);
    let d = f16_at(b);
    let quarter = c & 3u;
    let q = b + 2u + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    return Eight(d * codebook4(nibbles(ld32(q), shift)), d * codebook4(nibbles(ld32(q + 4u), shift)));
}
