// F32 weights: values 8c..8c+8 of the row at byte `base` (4-aligned).
fn dequant8(base: u32, c: u32) -> Eight {
    let i = (base >> 2u) + 8u * c;
    return Eight(
        vec4<f32>(bitcast<f32>(w[i]), bitcast<f32>(w[i + 1u]), bitcast<f32>(w[i + 2u]), bitcast<f32>(w[i + 3u])),
        vec4<f32>(bitcast<f32>(w[i + 4u]), bitcast<f32>(w[i + 5u]), bitcast<f32>(w[i + 6u]), bitcast<f32>(w[i + 7u])),
    );
}
