// Q6_K: super-blocks of 256 values in 210 bytes: 128 bytes ql (low 4 bits), 64 bytes qh (high 2
// bits), 16 i8 scales, f16 d. Each half (128 values) has four quarters of 32: quarter q takes
// the low (q < 2) or high nibble of ql[l + 32·(q % 2)], bits 2q..2q+2 of qh[l], and scale
// l / 16 + 2q of its half. value = (d·sc)·(q6 − 32).

// Bits `shift`..`shift`+2 of each byte of v, moved to bits 4..6.
fn high2(v: u32, shift: u32) -> vec4<u32> {
    let bits = (v >> shift) & 0x03030303u;
    return bytes4(bits) << vec4<u32>(4u);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 210u * (c >> 5u);
    let part = c & 31u;
    let half = part >> 4u;
    let v = 8u * (part & 15u);
    let quarter = v >> 5u;
    let l0 = v & 31u;
    let ql = b + 64u * half + 32u * (quarter & 1u) + l0;
    let qh = b + 128u + 32u * half + l0;
    let shift = 4u * (quarter >> 1u);
    let sc = f32(extractBits(bitcast<i32>(ld8(b + 192u + 8u * half + (l0 >> 4u) + 2u * quarter)), 0u, 8u));
    let d = f16_at(b + 208u) * sc;
    let lo = vec4<f32>(nibbles(ld32(ql), shift) | high2(ld32(qh), 2u * quarter)) - vec4<f32>(32.0);
    let hi = vec4<f32>(nibbles(ld32(ql + 4u), shift) | high2(ld32(qh + 4u), 2u * quarter)) - vec4<f32>(32.0);
    return Eight(d * lo, d * hi);
}
