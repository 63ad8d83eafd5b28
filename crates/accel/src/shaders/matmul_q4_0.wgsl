// Q4_0: blocks of 18 bytes (f16 d, 16 bytes of nibbles), value = (q − 8)·d; values 0..16 are the
// low nibbles, 16..32 the high ones.
fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 18u * (c >> 2u);
    let d = f16_at(b);
    let quarter = c & 3u;
    let q = b + 2u + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    let lo = vec4<f32>(nibbles(ld32(q), shift)) - vec4<f32>(8.0);
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift)) - vec4<f32>(8.0);
    return Eight(lo * d, hi * d);
}
