// F16 weights: rows start at any even byte, so words are read unaligned.
fn halves4(b: u32) -> vec4<f32> {
    let a = ld32(b);
    let c = ld32(b + 4u);
    return vec4<f32>(half_to_f32(a & 0xffffu), half_to_f32(a >> 16u), half_to_f32(c & 0xffffu), half_to_f32(c >> 16u));
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 16u * c;
    return Eight(halves4(b), halves4(b + 8u));
}
