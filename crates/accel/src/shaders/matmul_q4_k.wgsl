// Q4_K: super-blocks of 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales
// and mins, 128 bytes of nibbles. Sub-block j (32 values) uses scale/min j; sub-blocks 2k and
// 2k+1 are the low and high nibbles of bytes 32k..32k+32. value = (d·sc)·q − dmin·m.

// Scale and min j (0..8) from the 12 packed bytes at `s` (ggml's get_scale_min_k4).
fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(ld8(s + j) & 63u), f32(ld8(s + j + 4u) & 63u));
    }
    let sc = (ld8(s + j + 4u) & 0xfu) | ((ld8(s + j - 4u) >> 6u) << 4u);
    let m = (ld8(s + j + 4u) >> 4u) | ((ld8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 144u * (c >> 5u);
    let part = c & 31u;
    let j = part >> 2u;
    let l0 = 8u * (part & 3u);
    let sm = scale_min_k4(b + 4u, j);
    let d = f16_at(b) * sm.x;
    let m = f16_at(b + 2u) * sm.y;
    let q = b + 16u + 32u * (j >> 1u) + l0;
    let shift = 4u * (j & 1u);
    let lo = vec4<f32>(nibbles(ld32(q), shift));
    let hi = vec4<f32>(nibbles(ld32(q + 4u), shift));
    return Eight(d * lo - vec4<f32>(m), d * hi - vec4<f32>(m));
}
