//! Dots with the dot-product extension (FEAT_DotProd, `sdot`): the [`Level::NeonDot`]
//! kernels, for one row ([`crate::dispatch::DotFn`]) and for several rows sharing one
//! activation row ([`crate::dispatch::DotRowsFn`]).
//!
//! `sdot vd.4s, vn.16b, vm.16b` adds, into each 32-bit lane, the four products of the
//! lane's bytes, exactly (as [`super::simd::dot_i8`] does with `smull` + `sadalp`). So
//! every integer sum here is the reference's; the f32 side of each kernel is the plain
//! NEON kernel's (the reference's expressions in its order), shared through
//! `block32::fold_*` and the k-quant helpers, so results are bit-identical to the scalar
//! references and to the plain NEON level.
//!
//! Instructions per block (vector arithmetic only; loads and the scalar f32 fold, the
//! same in every version, left out; scalar counts are the reference loops' multiply-adds):
//!
//! | format, per block        | scalar | NEON (`smull`)  | this level          |
//! |--------------------------|--------|-----------------|---------------------|
//! | Q8_0 (32 values)         | 32 mul-add | 4 `smull` + 4 `sadalp` + `addv` = 9 | 2 `sdot` + `addv` = 3 |
//! | Q4_0 (+ 2 and, shr, 2 sub to decode) | 32 | 9 + 5 = 14 | 3 + 5 = 8 |
//! | Q5_0 (+ 10 to decode the fifth bits) | 32 | 9 + 15 = 24 | 3 + 15 = 18 |
//! | Q4_K (256 values)        | 256 + 8 lanes | 56 mul/add + 16 decode = 72 | 32 `tbl` + 16 `sdot` + 16 `mla` + 16 decode = 80, 64 per row with 4 rows |
//! | Q6_K (256 values)        | 256 + 8 lanes | 64 mul + 64 decode = 128 | (the NEON kernel) |
//!
//! Q4_K and Q6_K keep the reference's lane structure: eight i32 lanes, lane `l` summing
//! `scale · q · y` over the elements `l` mod 8 of each sub-block. `sdot` sums four
//! *neighbouring* bytes, so for Q4_K (32-value sub-blocks: lane `l` takes elements
//! `l, l+8, l+16, l+24`) each sub-block's weights and activations are first permuted with
//! `tbl` so that those four sit side by side ([`MOD8`]); then one `sdot` gives four
//! lanes' sums of a sub-block and one `mla` scales them. The permutation eats what `sdot`
//! saves on one row, which is why Q4_K's win is in the several-rows kernel: the
//! activations are permuted once for four rows. Q6_K's sub-blocks are 16 values, two per
//! lane, and the sub-block scale cannot be folded into 8-bit operands, so four products
//! of one lane and one scale never meet: `sdot` cannot form its sums, and this level keeps
//! the NEON level's Q6_K kernels (`kquants::dot_rows_q6_k` shares the activation loads
//! between four rows).
//!
//! Every kernel is a safe `#[target_feature(enable = "neon,dotprod")]` function; the
//! table stores them through `dot_fn!`, installed only after `Level::NeonDot` is detected.
//!
//! [`Level::NeonDot`]: crate::dispatch::Level::NeonDot

use std::arch::aarch64::*;

use super::block32::{self, blocks};
use super::kquants::{self, Lanes};
use super::simd::{arr, load_u8, load_u8_as_i8, sdot, sdot_i8x32};
use crate::quant::blocks::f16_le;
use crate::quant::QK_K;

/// Rows per several-rows call: four rows' accumulators and the shared activations fit
/// the 32 vector registers with room for decoding.
pub const ROWS: usize = 4;

/// The `tbl` indices that gather, from a 32-value sub-block (elements `0..16` in the
/// first table register, `16..32` in the second), the four elements `l, l+8, l+16, l+24`
/// of lanes `l = 0..4` (first vector) and `l = 4..8` (second) side by side.
const MOD8: [[u8; 16]; 2] = [
    [0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27],
    [4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31],
];

/// Defines the single-row and several-rows `sdot` kernels of a 32-element format from
/// its `block32::quants_*` and `block32::fold_*` halves. Both go through one generic
/// body, so row `r` of `$rows` is computed exactly as `$dot` computes it.
macro_rules! block32_dot {
    ($dot:ident, $rows:ident, $what:literal, $wb:expr, $ab:expr, $quants:path, $fold:path) => {
        #[doc = concat!($what, " weights · their activations, with `sdot`.")]
        #[target_feature(enable = "neon,dotprod")]
        pub fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let mut sumf = 0.0f32;
            for (x, y) in blocks(w, $wb, a, $ab, $what) {
                let q = $quants(x);
                let y0 = load_u8_as_i8(arr(y, $ab - 32));
                let y1 = load_u8_as_i8(arr(y, $ab - 16));
                sumf = $fold(sumf, sdot_i8x32(q.0, q.1, y0, y1), x, y);
            }
            sumf
        }

        #[doc = concat!(
            "[`", stringify!($dot), "`] for [`ROWS`] rows `row_bytes` apart sharing ",
            "the activation loads; `w` must hold them, `a` one row's activations."
        )]
        #[target_feature(enable = "neon,dotprod")]
        pub fn $rows(w: &[u8], row_bytes: usize, a: &[u8]) -> [f32; ROWS] {
            let x: [&[u8]; ROWS] = std::array::from_fn(|r| &w[r * row_bytes..][..row_bytes]);
            let nb = a.len() / $ab;
            assert!(
                a.len() == nb * $ab && row_bytes == nb * $wb,
                concat!($what, " dot block counts")
            );
            let mut sumf = [0.0f32; ROWS];
            for b in 0..nb {
                let y = &a[b * $ab..][..$ab];
                let y0 = load_u8_as_i8(arr(y, $ab - 32));
                let y1 = load_u8_as_i8(arr(y, $ab - 16));
                for (x, sumf) in x.iter().zip(sumf.iter_mut()) {
                    let x = &x[b * $wb..][..$wb];
                    let q = $quants(x);
                    *sumf = $fold(*sumf, sdot_i8x32(q.0, q.1, y0, y1), x, y);
                }
            }
            sumf
        }
    };
}

block32_dot!(
    dot_q4_0,
    dot_rows_q4_0,
    "Q4_0",
    block32::Q4_0,
    block32::Q8_0,
    block32::quants_q4_0,
    block32::fold_q4_0
);
block32_dot!(
    dot_q4_1,
    dot_rows_q4_1,
    "Q4_1",
    block32::Q4_1,
    block32::Q8_1,
    block32::quants_q4_1,
    block32::fold_q4_1
);
block32_dot!(
    dot_q5_0,
    dot_rows_q5_0,
    "Q5_0",
    block32::Q5_0,
    block32::Q8_0,
    block32::quants_q5_0,
    block32::fold_q5_0
);
block32_dot!(
    dot_q5_1,
    dot_rows_q5_1,
    "Q5_1",
    block32::Q5_1,
    block32::Q8_1,
    block32::quants_q5_1,
    block32::fold_q5_1
);
block32_dot!(
    dot_q8_0,
    dot_rows_q8_0,
    "Q8_0",
    block32::Q8_0,
    block32::Q8_0,
    block32::quants_q8_0,
    block32::fold_q8_0
);
block32_dot!(
    dot_iq4_nl,
    dot_rows_iq4_nl,
    "IQ4_NL",
    block32::IQ4_NL,
    block32::Q8_0,
    block32::quants_iq4_nl,
    block32::fold_iq4_nl
);

/// Gathers lanes `l, l+8, l+16, l+24` of a 32-value sub-block side by side ([`MOD8`]):
/// `(lanes 0..4, lanes 4..8)`.
#[inline]
#[target_feature(enable = "neon")]
fn mod8(v0: uint8x16_t, v1: uint8x16_t) -> (uint8x16_t, uint8x16_t) {
    let t = uint8x16x2_t(v0, v1);
    (
        vqtbl2q_u8(t, load_u8(&MOD8[0])),
        vqtbl2q_u8(t, load_u8(&MOD8[1])),
    )
}

/// Q4_K weights · Q8_K activations, with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    q4_k_rows::<1>([w], a)[0]
}

/// [`dot_q4_k`] for [`ROWS`] rows `row_bytes` apart, the activations permuted once.
#[target_feature(enable = "neon,dotprod")]
pub fn dot_rows_q4_k(w: &[u8], row_bytes: usize, a: &[u8]) -> [f32; ROWS] {
    q4_k_rows::<ROWS>(
        std::array::from_fn(|r| &w[r * row_bytes..][..row_bytes]),
        a,
    )
}

/// The Q4_K body for `R` rows of equal length (`kquants::dot_q4_k`'s f32 steps per row).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn q4_k_rows<const R: usize>(x: [&[u8]; R], a: &[u8]) -> [f32; R] {
    const WB: usize = kquants::Q4_K;
    let nb = a.len() / kquants::Q8_K;
    assert!(
        a.len() == nb * kquants::Q8_K && x.iter().all(|x| x.len() == nb * WB),
        "Q4_K dot block counts"
    );
    let m4 = vdupq_n_u8(0x0F);
    let zero = vdupq_n_s32(0);
    let mut sums = [[vdupq_n_f32(0.0); 2]; R];
    let mut sumf = [0.0f32; R];
    for b in 0..nb {
        let y = &a[b * kquants::Q8_K..][..kquants::Q8_K];
        // The eight sub-blocks of activations, permuted once for all the rows.
        let ys: [(int8x16_t, int8x16_t); QK_K / 32] = std::array::from_fn(|sub| {
            let (p0, p1) = mod8(
                load_u8(arr(y, kquants::Q8K_QS + 32 * sub)),
                load_u8(arr(y, kquants::Q8K_QS + 32 * sub + 16)),
            );
            (vreinterpretq_s8_u8(p0), vreinterpretq_s8_u8(p1))
        });
        for r in 0..R {
            let x = &x[r][b * WB..][..WB];
            let (scales, mins) = kquants::scales_mins_k4(arr(x, 4));
            let mut l = Lanes::zero();
            for c in 0..QK_K / 64 {
                // Chunk c: 32 bytes, low nibbles sub-block 2c, high ones 2c + 1; one
                // permutation of the bytes serves both.
                let (p0, p1) = mod8(load_u8(arr(x, 16 + 32 * c)), load_u8(arr(x, 32 + 32 * c)));
                let q = |v: uint8x16_t| vreinterpretq_s8_u8(v);
                let (ya, yb) = (ys[2 * c], ys[2 * c + 1]);
                let (sa, sb) = (scales[2 * c] as i32, scales[2 * c + 1] as i32);
                l.0 = vmlaq_n_s32(l.0, sdot(zero, q(vandq_u8(p0, m4)), ya.0), sa);
                l.1 = vmlaq_n_s32(l.1, sdot(zero, q(vandq_u8(p1, m4)), ya.1), sa);
                l.0 = vmlaq_n_s32(l.0, sdot(zero, q(vshrq_n_u8::<4>(p0)), yb.0), sb);
                l.1 = vmlaq_n_s32(l.1, sdot(zero, q(vshrq_n_u8::<4>(p1)), yb.1), sb);
            }
            let sumi = kquants::bsums_dot_mins(y, &mins);
            let d = f16_le(*arr(x, 0)) * kquants::act_d(y);
            kquants::add_lanes(&mut sums[r], l, d);
            let dmin = f16_le(*arr(x, 2)) * kquants::act_d(y);
            sumf[r] -= dmin * sumi as f32;
        }
    }
    std::array::from_fn(|r| kquants::finish(sumf[r], sums[r]))
}
