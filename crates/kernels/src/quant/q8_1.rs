//! Q8_1: Q8_0 plus `s = d * sum(q)`, the activation format of Q4_1 and Q5_1 (their
//! offset `m` multiplies the block's activation sum, which `s` provides up front).
//!
//! Reference: `quantize_row_q8_1_ref` (ggml-quants.c). ggml has no dequantizer for it;
//! ours ignores `s`, which is derived data.

use super::blocks::{f16_le, f16_le_from, BlockQ8_1, QK32};

/// Expands `blocks` into `out` as `d * q` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ8_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q8_1 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = q as f32 * d;
        }
    }
}

/// Quantizes `x` like Q8_0 and records `s = f16(sum(q) * d)`, with `d` the unrounded
/// f32 scale, as ggml does.
pub fn quantize(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), out.len() * QK32, "Q8_1 quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        // C's `MAX(amax, fabsf(v))`, which (unlike f32::max) lets a NaN through.
        let amax = xb
            .iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        y.s = f16_le_from(sum as f32 * d);
    }
}
