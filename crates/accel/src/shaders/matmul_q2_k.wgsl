// Q2_K: super-blocks of 256 values in 84 bytes: 16 scale bytes (low nibble scale, high nibble
// min), 64 bytes of 2-bit quants, f16 d, f16 dmin. Each half (128 values) reads qs[32·half..+32]
// four times (shifts 0, 2, 4, 6); each of those 32 values is two sub-blocks of 16 with their own
// scale byte. value = (d·sc)·q − dmin·m.
fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 84u * (c >> 5u);
    let v = 8u * (c & 31u);
    let half = v >> 7u;
    let w = v & 127u;
    let step = w >> 5u;
    let part = (w >> 4u) & 1u;
    let l0 = w & 15u;
    let sc = ld8(b + 8u * half + 2u * step + part);
    let d = f16_at(b + 80u) * f32(sc & 0xfu);
    let m = f16_at(b + 82u) * f32(sc >> 4u);
    let q = b + 16u + 32u * half + 16u * part + l0;
    let lo = (bytes4(ld32(q)) >> vec4<u32>(2u * step)) & vec4<u32>(3u);
    let hi = (bytes4(ld32(q + 4u)) >> vec4<u32>(2u * step)) & vec4<u32>(3u);
    return Eight(d * vec4<f32>(lo) - vec4<f32>(m), d * vec4<f32>(hi) - vec4<f32>(m));
}
