// Q5_0: blocks of 22 bytes (f16 d, u32 qh, 16 bytes of nibbles), value = (q − 16)·d; the fifth bit
// of value v is bit v of qh.
fn fifth_bits(qh: u32, v: u32) -> vec4<u32> {
    let bits = (vec4<u32>(qh) >> (vec4<u32>(v) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u);
    return bits << vec4<u32>(4u);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 22u * (c >> 2u);
    let d = f16_at(b);
    let qh = ld32(b + 2u);
    let quarter = c & 3u;
    let q = b + 6u + 8u * (quarter & 1u);
    let shift = 4u * (quarter >> 1u);
    let v = 8u * quarter;
    let lo = vec4<f32>(nibbles(ld32(q), shift) | fifth_bits(qh, v)) - vec4<f32>(16.0);
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift) | fifth_bits(qh, v + 4u)) - vec4<f32>(16.0);
    return Eight(lo * d, hi * d);
}
