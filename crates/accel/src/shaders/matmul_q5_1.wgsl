// Q5_1: blocks of 24 bytes (f16 d, f16 m, u32 qh, 16 bytes of nibbles), value = q·d + m (bits as Q5_0).
fn fifth_bits(qh: u32, v: u32) -> vec4<u32> {
    let bits = (vec4<u32>(qh) >> (vec4<u32>(v) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u);
    return bits << vec4<u32>(4u);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 24u * (c >> 2u);
    let d = f16_at(b);
    let m = f16_at(b + 2u);
    let qh = ld32(b + 4u);
    let quarter = c & 3u;
    let q = b + 8u + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    let v = 8u * quarter;
    let lo = vec4<f32>(nibbles(ld32(q), shift) | fifth_bits(qh, v));
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift) | fifth_bits(qh, v + 4u));
    return Eight(lo * d + vec4<f32>(m), hi * d + vec4<f32>(m));
}
