// Q5_K: super-blocks of 256 values in 176 bytes: f16 d, f16 dmin, 12 bytes of packed scales and
// mins (as Q4_K), 32 bytes qh, 128 bytes of nibbles. The fifth bit of value l of sub-block j is
// bit j of qh[l]. value = (d·sc)·q − dmin·m.

fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(ld8(s + j) & 63u), f32(ld8(s + j + 4u) & 63u));
    }
    let sc = (ld8(s + j + 4u) & 0xfu) | ((ld8(s + j - 4u) >> 6u) << 4u);
    let m = (ld8(s + j + 4u) >> 4u) | ((ld8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Bit j of each of the four bytes of v, moved to bit 4.
fn fifth4(v: u32, j: u32) -> vec4<u32> {
    let bits = (v >> j) & 0x01010101u;
    return bytes4(bits) << vec4<u32>(4u);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 176u * (c >> 5u);
    let part = c & 31u;
    let j = part >> 2u;
    let l0 = 8u * (part & 3u);
    let sm = scale_min_k4(b + 4u, j);
    let d = f16_at(b) * sm.x;
    let m = f16_at(b + 2u) * sm.y;
    let q = b + 48u + 32u * (j >> 1u) + l0;
    let h = b + 16u + l0;
    let shift = 4u * (j & 1u);
    let lo = vec4<f32>(nibbles(ld32(q), shift) | fifth4(ld32(h), j));
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift) | fifth4(ld32(h + 4u), j));
    return Eight(d * lo - vec4<f32>(m), d * hi - vec4<f32>(m));
}
