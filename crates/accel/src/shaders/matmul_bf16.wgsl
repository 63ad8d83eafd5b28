// BF16 weights: the bits shifted up (exact); rows start at any even byte.
fn bf16s4(b: u32) -> vec4<f32> {
    let a = ld32(b);
    let c = ld32(b + 4u);
    return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(c << 16u), bitcast<f32>(c & 0xffff0000u));
}

fn dequant8(base: u32, c: u32) -> Eight {
    let b = base + 16u * c;
    return Eight(bf16s4(b), bf16s4(b + 8u));
}
