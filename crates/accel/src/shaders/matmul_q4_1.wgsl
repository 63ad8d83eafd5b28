// Q4_1: blocks of 20 bytes (f16 d, f16 m, 16 bytes of nibbles), value = q·d + m (nibbles as Q4_0).
fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 20u * (c >> 2u);
    let d = f16_at(b);
    let m = f16_at(b + 2u);
    let quarter = c & 3u;
    let q = b + 4u + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    let lo = vec4<f32>(nibbles(ld32(q), shift));
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift));
    return Eight(lo * d + vec4<f32>(m), hi * d + vec4<f32>(m));
}
