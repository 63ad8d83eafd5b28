// Shared by every matmul kernel: the parameter block, the bindings, the batch, and byte access
// to GGUF blocks. The weights stay in file order, so blocks sit at any 2-byte (Q8_0, Q6_K, F16) or
// 1-byte offset inside 32-bit words: these helpers read bytes, halves and unaligned words.

struct Params {
    // Rows in this part of the matrix (a part is one storage binding).
    rows: u32,
    // Values per row (ggml ne[0]).
    cols: u32,
    n_tokens: u32,
    // Bytes per row in the weight buffer.
    row_bytes: u32,
    // The part's first row in the whole matrix, and the whole matrix's row count (the
    // output's row stride).
    out_row0: u32,
    out_stride: u32,
    // Where x and y of the part's first matrix start in their buffers, in f32 elements,
    // and how far each next matrix's start is (a batch: the grid's z picks the matrix).
    x_offset: u32,
    y_offset: u32,
    x_batch_stride: u32,
    y_batch_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// The part's matrix this workgroup multiplies (its z index; 0 for a single matrix), set first
// thing by every entry point with `set_batch`.
var<private> batch: u32;

fn set_batch(z: u32) {
    batch = z;
}

// Where this matrix's y starts.
fn y_base() -> u32 {
    return p.y_offset + batch * p.y_batch_stride;
}

// Eight consecutive values of a weight row.
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The 4 bytes at byte offset `b` (any alignment), little-endian.
fn ld32(b: u32) -> u32 {
    let i = b >> 2u;
    let s = (b & 3u) * 8u;
    if (s == 0u) {
        return w[i];
    }
    return (w[i] >> s) | (w[i + 1u] << (32u - s));
}

// The byte at offset `b`.
fn ld8(b: u32) -> u32 {
    return (w[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// The 16-bit value at an even byte offset `b` (never crosses a word).
fn ld16(b: u32) -> u32 {
    return (w[b >> 2u] >> ((b & 3u) * 8u)) & 0xffffu;
}

// IEEE half bits -> f32, exact for every pattern, subnormals included. Bit arithmetic instead
// of unpack2x16float or a multiply by 2^112, which GPUs may flush to zero for subnormals.
fn half_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let em = h & 0x7fffu;
    var mag: u32;
    if (em >= 0x7c00u) {
        mag = 0x7f800000u | ((em & 0x3ffu) << 13u);
    } else if (em >= 0x0400u) {
        // Rebias the exponent: (127 - 15) << 23.
        mag = (em << 13u) + 0x38000000u;
    } else {
        // Subnormal: mantissa * 2^-24, an exact product that lands on a normal f32.
        mag = bitcast<u32>(f32(em) * 5.9604644775390625e-8);
    }
    return bitcast<f32>(mag | sign);
}

fn f16_at(b: u32) -> f32 {
    return half_to_f32(ld16(b));
}

// Byte k (0..4) of word v as a signed number.
fn byte_i(v: u32, k: u32) -> i32 {
    return extractBits(bitcast<i32>(v), 8u * k, 8u);
}

// The four bytes of v.
fn bytes4(v: u32) -> vec4<u32> {
    return vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u);
}

// The four bytes of v as signed numbers, as floats.
fn bytes_i(v: u32) -> vec4<f32> {
    return vec4<f32>(f32(byte_i(v, 0u)), f32(byte_i(v, 1u)), f32(byte_i(v, 2u)), f32(byte_i(v, 3u)));
}

// The four nibbles at bit `shift` (0 or 4) of each byte of v.
fn nibbles(v: u32, shift: u32) -> vec4<u32> {
    return bytes4((v >> shift) & 0x0f0f0f0fu);
}

// Values 8c..8c+8 of row `row` (part-local) of this workgroup's matrix, zero past the row's end (only float rows can end
// inside a chunk: quantized rows are whole blocks of 32 or 256).
fn weights8(row: u32, c: u32) -> Eight {
    var e = dequant8((batch * p.rows + row) * p.row_bytes, c);
    let first = 8u * c;
    if (first + 8u > p.cols) {
        let n = p.cols - min(first, p.cols);
        let k = vec4<u32>(0u, 1u, 2u, 3u);
        e.lo = select(vec4<f32>(0.0), e.lo, k < vec4<u32>(n));
        e.hi = select(vec4<f32>(0.0), e.hi, k + vec4<u32>(4u) < vec4<u32>(n));
    }
    return e;
}

// x[t][k] of this workgroup's matrix, zero past the row's end.
fn x_at(t: u32, k: u32) -> f32 {
    if (k >= p.cols) {
        return 0.0;
    }
    return x[p.x_offset + batch * p.x_batch_stride + t * p.cols + k];
}
