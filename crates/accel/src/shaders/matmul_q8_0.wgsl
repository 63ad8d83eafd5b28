// Q8_0: blocks of 34 bytes (f16 d, 32 × i8 q), value = q·d. Chunk c is quarter c % 4 of block c / 4.
fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 34u * (c >> 2u);
    let d = f16_at(b);
    let q = b + 2u + 8u * (c & 3u);
    return Eight(bytes_i(ld32(q)) * d, bytes_i(ld32(q + 4u)) * d);
}
