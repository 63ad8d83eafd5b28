// IQ4_XS: super-blocks of 256 values in 136 bytes: f16 d, u16 scales_h, 4 bytes scales_l, 128
// bytes of nibbles. Sub-block ib (32 values) has the 6-bit scale ls (low 4 bits in scales_l, high
// 2 in scales_h) and the nibbles of qs[16·ib..+16] (low nibbles first, as IQ4_NL).
// value = (d·(ls − 32))·KV[q].
var<private> KV: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

fn codebook4(n: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(KV[n.x], KV[n.y], KV[n.z], KV[n.w]);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 136u * (c >> 5u);
    let part = c & 31u;
    let ib = part >> 2u;
    let quarter = part & 3u;
    let ls = ((ld8(b + 4u + (ib >> 1u)) >> (4u * (ib & 1u))) & 0xfu) | (((ld16(b + 2u) >> (2u * ib)) & 3u) << 4u);
    let d = f16_at(b) * f32(i32(ls) - 32);
    let q = b + 8u + 16u * ib + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    return Eight(d * codebook4(nibbles(ld32(q), shift)), d * codebook4(nibbles(ld32(q + 4u), shift)));
}
