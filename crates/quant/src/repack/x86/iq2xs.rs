//! IQ2_XSx8 × Q8_K on AVX-512 VBMI + VNNI (see `repack::iq2xs` for the layout): `iq2s`'s
//! tile with 9-bit indices and `KSIGNS` sign indices.
//!
//! - The two code tables (grid values 0..4, 4..8; [`plane_codes`]) have 512 entries, 8
//!   registers each: a lookup is 4 `vpermi2b` and 3 blends on index bits 7 (the index
//!   byte's top bit) and 8 (the sign byte's top bit) ([`lookup512`]).
//! - The sign bytes are `KSIGNS` at the sign vector (one `vpermi2b`, bit 7 ignored).
//! - The rest, from the unpack to one sub-block per dword on, is `iq2s::portion_ints`
//!   (and a prompt's strips, `iq2s::Iq2Strips`, decode the same codes and sign bytes).
//!
//! The integers are exactly the scalar definition's (as `iq2s`), and the f32 steps are the
//! shared tile's, so results are bit-identical to `iq2xs::dot_scalar` for any number of
//! tokens.

use super::codebook::{self, codebook_tiles, Codebook};
use super::codebook::{load512, lookup512, table128, tables256};
use super::iq2s::{block_ints, prepare_subblocks, Portion, Portions};
use super::iq2xxs::plane_codes;
use super::*;
use crate::iq_grids::{IQ2XS_GRID, KSIGNS};
use crate::repack::iq2xs::{self, idx_at, IQ2XSX8_BLOCK_BYTES, SCALES, SIGNS};

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// `planes[h][k]`: the codes of grid entry k's values 4h..4h+4.
    planes: [[u8; 512]; 2],
    /// `KSIGNS` (the sign byte of each 7-bit sign index).
    ksigns: [u8; 128],
}

static TABLES: Tables = Tables {
    planes: plane_codes(&IQ2XS_GRID),
    ksigns: KSIGNS,
};

pub(super) struct IQ2XS;
impl Codebook for IQ2XS {
    const BLOCK_BYTES: usize = IQ2XSX8_BLOCK_BYTES;
    const OFF_D: usize = iq2xs::OFF_D;
    const FACTOR: f32 = iq2xs::FACTOR;
    const EXTRA: usize = super::iq2s::EXTRA;
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        prepare_subblocks(blk, dst)
    }
    #[inline(always)]
    unsafe fn block_ints<const T: usize>(
        pb: *const u8,
        _a: [*const u8; T],
        ex: [*const u8; T],
    ) -> [__m256i; T] {
        block_ints::<Self, T>(pb, ex)
    }
}

impl Portions for IQ2XS {
    const TILES: &'static [TileFn; 4] = &IQ2XS_VBMI;
    /// The 64 indices' codes: 4 `vpermi2b` and 3 blends per table ([`lookup512`]); the
    /// sign bytes `KSIGNS` at the sign indices.
    #[inline(always)]
    unsafe fn portion(pb: *const u8, p: usize) -> Portion {
        let tb = &TABLES;
        let planes: [&[[__m512i; 4]; 2]; 2] = [tables256(&tb.planes[0]), tables256(&tb.planes[1])];
        let ks = table128(&tb.ksigns);
        let o = pb.add(idx_at(p));
        let idx = load512(o);
        let sgn = load512(o.add(SIGNS));
        let (top, b8) = (_mm512_movepi8_mask(idx), _mm512_movepi8_mask(sgn));
        Portion {
            x: [
                lookup512(planes[0], idx, top, b8),
                lookup512(planes[1], idx, top, b8),
            ],
            signs: _mm512_permutex2var_epi8(ks[0], sgn, ks[1]),
            scales: o.add(SCALES),
        }
    }
}

pub(super) static IQ2XS_VBMI: [TileFn; 4] = codebook_tiles!(IQ2XS);
