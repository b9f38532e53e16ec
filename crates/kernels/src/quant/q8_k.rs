//! Q8_K: 256 signed bytes with an f32 scale and per-16 sums, the activation format of the
//! k-quants and IQ4_XS. `bsums` let a weight format apply its per-sub-block minimum once
//! per 16 activations.
//!
//! Reference: `quantize_row_q8_K_ref`, `dequantize_row_q8_K` (ggml-quants.c). ggml's dot
//! of Q8_K with itself exists only for tests; ours is here so that every computable type
//! has a dot.

use super::blocks::BlockQ8K;
use super::kquants::nearest_int;
use super::QK_K;

/// Expands `blocks` into `out` as `d * q` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ8K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q8_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = b.d * q as f32;
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) with scale `max / -127` taken from the
/// signed element of largest magnitude, rounding ties to even, as ggml does. (ggml used
/// -128 once; -127 keeps every quant in -127..=127, which the IQ kernels rely on.)
pub fn quantize(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q8_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

/// Quantizes one block of 256 values.
pub fn quantize_block(xb: &[f32], y: &mut BlockQ8K) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax == 0.0 {
        y.d = 0.0;
        y.qs = [0; QK_K];
        y.bsums = [0; QK_K / 16];
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(xb) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (s, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
        *s = qs.iter().map(|&q| q as i16).sum();
    }
    y.d = 1.0 / iscale;
}

/// Dot of Q8_K weights with Q8_K activations.
pub fn vec_dot(w: &[BlockQ8K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q8_K dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sumf += sumi as f32 * (x.d * y.d);
    }
    sumf
}
