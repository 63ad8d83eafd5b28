//! Block dot products: weight blocks × activation blocks, scalar reference + SIMD paths.
