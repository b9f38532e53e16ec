//! NEON dots of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) with their
//! Q8_0 or Q8_1 activations.
//!
//! Each block's integer sum is computed with [`dot_i8x32`] (exact), then folded into the
//! f32 total with the very expression of the reference (`quant::q4_0::vec_dot` etc.), in
//! block order. So the results are the reference's bits, not merely close to them; that
//! per-block scalar step costs a little against ggml's vector accumulation, and buys
//! tests that can demand equality.

use std::arch::aarch64::*;

use super::simd::{arr, dot_i8x32, load_i8, load_u8, load_u8_as_i8};
use crate::quant::blocks::{f16_le, KVALUES_IQ4NL};

/// Bytes of the blocks read here.
const Q4_0: usize = 18;
const Q4_1: usize = 20;
const Q5_0: usize = 22;
const Q5_1: usize = 24;
const Q8_0: usize = 34;
const IQ4_NL: usize = 18;
const Q8_1: usize = 36;

/// Pairs up the weight and activation blocks of a row, checking that they describe the
/// same number of elements (a caller bug otherwise, as in the reference).
fn blocks<'a>(
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

/// Q4_0 weights · Q8_0 activations.
#[target_feature(enable = "neon")]
pub fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q4_0, a, Q8_0, "Q4_0") {
        let q = centre(nibbles(arr(x, 2)), 8);
        let sumi = block_sum(q, &y[2..]);
        sumf += sumi as f32 * half(x, 0) * half(y, 0);
    }
    sumf
}

/// Q4_1 weights · Q8_1 activations: the offset `m` meets the activation sum `s`.
#[target_feature(enable = "neon")]
pub fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q4_1, a, Q8_1, "Q4_1") {
        let q = centre(nibbles(arr(x, 4)), 0);
        let sumi = block_sum(q, &y[4..]);
        sumf += (half(x, 0) * half(y, 0)) * sumi as f32 + half(x, 2) * half(y, 2);
    }
    sumf
}

/// Q5_0 weights · Q8_0 activations.
#[target_feature(enable = "neon")]
pub fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q5_0, a, Q8_0, "Q5_0") {
        let (lo, hi) = nibbles(arr(x, 6));
        let (h0, h1) = fifth_bits(arr(x, 2));
        let q = centre((vorrq_u8(lo, h0), vorrq_u8(hi, h1)), 16);
        let sumi = block_sum(q, &y[2..]);
        sumf += (half(x, 0) * half(y, 0)) * sumi as f32;
    }
    sumf
}

/// Q5_1 weights · Q8_1 activations.
#[target_feature(enable = "neon")]
pub fn dot_q5_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q5_1, a, Q8_1, "Q5_1") {
        let (lo, hi) = nibbles(arr(x, 8));
        let (h0, h1) = fifth_bits(arr(x, 4));
        let q = centre((vorrq_u8(lo, h0), vorrq_u8(hi, h1)), 0);
        let sumi = block_sum(q, &y[4..]);
        sumf += (half(x, 0) * half(y, 0)) * sumi as f32 + half(x, 2) * half(y, 2);
    }
    sumf
}

/// Q8_0 weights · Q8_0 activations.
#[target_feature(enable = "neon")]
pub fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q8_0, a, Q8_0, "Q8_0") {
        let q = (load_u8_as_i8(arr(x, 2)), load_u8_as_i8(arr(x, 18)));
        let sumi = block_sum(q, &y[2..]);
        sumf += sumi as f32 * (half(x, 0) * half(y, 0));
    }
    sumf
}

/// IQ4_NL weights · Q8_0 activations: the nibbles index the non-linear codebook (`tbl`).
#[target_feature(enable = "neon")]
pub fn dot_iq4_nl(w: &[u8], a: &[u8]) -> f32 {
    let book = load_i8(&KVALUES_IQ4NL);
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, IQ4_NL, a, Q8_0, "IQ4_NL") {
        let (lo, hi) = nibbles(arr(x, 2));
        let q = (vqtbl1q_s8(book, lo), vqtbl1q_s8(book, hi));
        let sumi = block_sum(q, &y[2..]);
        sumf += (half(y, 0) * half(x, 0)) * sumi as f32;
    }
    sumf
}
