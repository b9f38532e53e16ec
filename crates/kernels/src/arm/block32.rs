//! NEON dots of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) with their
//! Q8_0 or Q8_1 activations.
//!
//! Each block's integer sum is computed with [`dot_i8x32`] (exact), then folded into the
//! f32 total with the very expression of the reference (`quant::q4_0::vec_dot` etc.), in
//! block order. So the results are the reference's bits, not merely close to them; that
//! per-block scalar step costs a little against ggml's vector accumulation, and buys
//! tests that can demand equality.

use std::arch::aarch64::*;

use super::simd::{arr, dot_i8x32, f16_le, load_i8, load_u8, load_u8_as_i8};
use crate::quant::blocks::KVALUES_IQ4NL;

/// Bytes of the blocks read here.
pub(super) const Q4_0: usize = 18;
pub(super) const Q4_1: usize = 20;
pub(super) const Q5_0: usize = 22;
pub(super) const Q5_1: usize = 24;
pub(super) const Q8_0: usize = 34;
pub(super) const IQ4_NL: usize = 18;
pub(super) const Q8_1: usize = 36;

/// Pairs up the weight and activation blocks of a row, checking that they describe the
/// same number of elements (a caller bug otherwise, as in the reference).
pub(super) fn blocks<'a>(
    w: &'a [u8],
    wb: usize,
    a: &'a [u8],
    ab: usize,
    what: &str,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let nb = w.len() / wb;
    assert!(
        w.len() == nb * wb && a.len() == nb * ab,
        "{what} dot block counts"
    );
    w.chunks_exact(wb).zip(a.chunks_exact(ab))
}

/// The 32 nibbles of `qs` as bytes 0..16: low nibbles are elements 0..16, high 16..32.
#[inline]
#[target_feature(enable = "neon")]
fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let v = load_u8(qs);
    (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
}

/// The fifth bits of Q5_0/Q5_1 (`qh`, bit j for element j) as 0x10 or 0 per element.
#[inline]
#[target_feature(enable = "neon")]
fn fifth_bits(qh: &[u8; 4]) -> (uint8x16_t, uint8x16_t) {
    // Byte j of each half tests bit j % 8 of qh byte j / 8 (`cmtst`), then keeps 0x10.
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = load_u8(&BIT);
    let high = |b0: u8, b1: u8| {
        let bytes = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
        vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10))
    };
    (high(qh[0], qh[1]), high(qh[2], qh[3]))
}

/// `(q0 - off, q1 - off)` as signed bytes.
#[inline]
#[target_feature(enable = "neon")]
fn centre(q: (uint8x16_t, uint8x16_t), off: i8) -> (int8x16_t, int8x16_t) {
    let off = vdupq_n_s8(off);
    (
        vsubq_s8(vreinterpretq_s8_u8(q.0), off),
        vsubq_s8(vreinterpretq_s8_u8(q.1), off),
    )
}

/// Σ q·y over one block, with `q` the 32 weights and `y` the activation quants.
#[inline]
#[target_feature(enable = "neon")]
fn block_sum(q: (int8x16_t, int8x16_t), y: &[u8]) -> i32 {
    dot_i8x32(
        q.0,
        q.1,
        load_u8_as_i8(arr(y, 0)),
        load_u8_as_i8(arr(y, 16)),
    )
}

/// The f16 at `at`.
#[inline(always)]
fn half(b: &[u8], at: usize) -> f32 {
    f16_le(*arr(b, at))
}

/// Defines, for one format, the NEON dot kernel `$dot` from the format's two halves,
/// which the dot-product level's kernels (`super::dot`) share:
/// - `$quants(x)`: the block's 32 weights as signed bytes (elements 0..16, 16..32);
/// - `$fold(sumf, sumi, x, y)`: the running f32 total after a block whose integer sum
///   is `sumi`, with the very expression of the reference (`quant::q4_0::vec_dot` …).
macro_rules! block32_dot {
    ($dot:ident, $what:literal, $wb:expr, $ab:expr, $quants:ident, $fold:ident) => {
        #[doc = concat!($what, " weights · their activations.")]
        #[target_feature(enable = "neon")]
        pub fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let mut sumf = 0.0f32;
            for (x, y) in blocks(w, $wb, a, $ab, $what) {
                let sumi = block_sum($quants(x), &y[$ab - 32..]);
                sumf = $fold(sumf, sumi, x, y);
            }
            sumf
        }
    };
}

block32_dot!(dot_q4_0, "Q4_0", Q4_0, Q8_0, quants_q4_0, fold_q4_0);
block32_dot!(dot_q4_1, "Q4_1", Q4_1, Q8_1, quants_q4_1, fold_q4_1);
block32_dot!(dot_q5_0, "Q5_0", Q5_0, Q8_0, quants_q5_0, fold_q5_0);
block32_dot!(dot_q5_1, "Q5_1", Q5_1, Q8_1, quants_q5_1, fold_q5_1);
block32_dot!(dot_q8_0, "Q8_0", Q8_0, Q8_0, quants_q8_0, fold_q8_0);
block32_dot!(
    dot_iq4_nl,
    "IQ4_NL",
    IQ4_NL,
    Q8_0,
    quants_iq4_nl,
    fold_iq4_nl
);

/// Q4_0 quants: nibbles minus 8.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_q4_0(x: &[u8]) -> (int8x16_t, int8x16_t) {
    centre(nibbles(arr(x, 2)), 8)
}

/// Q4_0 (with Q8_0): `sumi · dx · dy`.
#[inline(always)]
pub(super) fn fold_q4_0(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    sumf + sumi as f32 * half(x, 0) * half(y, 0)
}

/// Q4_1 quants: the nibbles (the offset `m` meets the activation sum `s` in the fold).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_q4_1(x: &[u8]) -> (int8x16_t, int8x16_t) {
    centre(nibbles(arr(x, 4)), 0)
}

/// Q4_1 (with Q8_1): `(dx · dy) · sumi + mx · sy`.
#[inline(always)]
pub(super) fn fold_q4_1(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    sumf + ((half(x, 0) * half(y, 0)) * sumi as f32 + half(x, 2) * half(y, 2))
}

/// Q5_0 quants: nibbles with their fifth bits, minus 16.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_q5_0(x: &[u8]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(arr(x, 6));
    let (h0, h1) = fifth_bits(arr(x, 2));
    centre((vorrq_u8(lo, h0), vorrq_u8(hi, h1)), 16)
}

/// Q5_0 (with Q8_0): `(dx · dy) · sumi`.
#[inline(always)]
pub(super) fn fold_q5_0(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    sumf + (half(x, 0) * half(y, 0)) * sumi as f32
}

/// Q5_1 quants: nibbles with their fifth bits.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_q5_1(x: &[u8]) -> (int8x16_t, int8x16_t) {
    let (lo, hi) = nibbles(arr(x, 8));
    let (h0, h1) = fifth_bits(arr(x, 4));
    centre((vorrq_u8(lo, h0), vorrq_u8(hi, h1)), 0)
}

/// Q5_1 (with Q8_1): as Q4_1.
#[inline(always)]
pub(super) fn fold_q5_1(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    fold_q4_1(sumf, sumi, x, y)
}

/// Q8_0 quants: the bytes themselves.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_q8_0(x: &[u8]) -> (int8x16_t, int8x16_t) {
    (load_u8_as_i8(arr(x, 2)), load_u8_as_i8(arr(x, 18)))
}

/// Q8_0 (with Q8_0): `sumi · (dx · dy)`.
#[inline(always)]
pub(super) fn fold_q8_0(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    sumf + sumi as f32 * (half(x, 0) * half(y, 0))
}

/// IQ4_NL quants: the nibbles index the non-linear codebook (`tbl`).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn quants_iq4_nl(x: &[u8]) -> (int8x16_t, int8x16_t) {
    let book = load_i8(&KVALUES_IQ4NL);
    let (lo, hi) = nibbles(arr(x, 2));
    (vqtbl1q_s8(book, lo), vqtbl1q_s8(book, hi))
}

/// IQ4_NL (with Q8_0): `(dy · dx) · sumi`.
#[inline(always)]
pub(super) fn fold_iq4_nl(sumf: f32, sumi: i32, x: &[u8], y: &[u8]) -> f32 {
    sumf + (half(y, 0) * half(x, 0)) * sumi as f32
}
