// Q3_K: super-blocks of 256 values in 110 bytes: 32 bytes hmask, 64 bytes of 2-bit quants, 12
// bytes of packed 6-bit signed scales, f16 d. The quants are laid out as Q2_K's; value l of step
// s of half h has its high bit in bit 4h + s of hmask[l + 16·part], set meaning "no −4".
// value = (d·sc)·(q − 4·!hbit).

// Scale j (0..16) from the 12 packed bytes at `s`: low 4 bits in bytes 0..8, high 2 in 8..12.
fn q3_scale(s: u32, j: u32) -> f32 {
    var low: u32;
    if (j < 8u) {
        low = ld8(s + j) & 0xfu;
    } else {
        low = ld8(s + j - 8u) >> 4u;
    }
    let high = (ld8(s + 8u + (j & 3u)) >> (2u * (j >> 2u))) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 110u * (c >> 5u);
    let v = 8u * (c & 31u);
    let half = v >> 7u;
    let w = v & 127u;
    let step = w >> 5u;
    let part = (w >> 4u) & 1u;
    let l0 = w & 15u;
    let d = f16_at(b + 108u) * q3_scale(b + 96u, 8u * half + 2u * step + part);
    let q = b + 32u + 32u * half + 16u * part + l0;
    let hm = b + 16u * part + l0;
    let bit = 4u * half + step;
    let low_lo = (bytes4(ld32(q)) >> vec4<u32>(2u * step)) & vec4<u32>(3u);
    let low_hi = (bytes4(ld32(q + 4u)) >> vec4<u32>(2u * step)) & vec4<u32>(3u);
    let h_lo = (bytes4(ld32(hm)) >> vec4<u32>(bit)) & vec4<u32>(1u);
    let h_hi = (bytes4(ld32(hm + 4u)) >> vec4<u32>(bit)) & vec4<u32>(1u);
    let four = vec4<f32>(4.0);
    let lo = vec4<f32>(low_lo) - four + four * vec4<f32>(h_lo);
    let hi = vec4<f32>(low_hi) - four + four * vec4<f32>(h_hi);
    return Eight(d * lo, d * hi);
}
