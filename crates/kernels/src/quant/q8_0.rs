//! Q8_0: blocks of 32 signed bytes with one f16 scale, `x = d * q`. Both a weight format
//! and the activation format of Q4_0, Q5_0, Q8_0 and IQ4_NL weights.
//!
//! Reference: `quantize_row_q8_0_ref`, `dequantize_row_q8_0` (ggml-quants.c) and
//! `ggml_vec_dot_q8_0_q8_0_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ8_0, QK32};

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q8_0 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        for (yj, &q) in y.iter_mut().zip(&b.qs) {
            *yj = q as f32 * d;
        }
    }
}

/// Quantizes `x` (`x.len() == 32 * out.len()`): `d = amax / 127`, `q = round(x / d)`
/// with ties away from zero (C `roundf`). Matches ggml and the `gguf` package bit for bit.
pub fn quantize(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK32, "Q8_0 quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        // C's `MAX(amax, fabsf(v))`, which (unlike f32::max) lets a NaN through.
        let amax = xb
            .iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Dot of Q8_0 weights with Q8_0 activations: an exact integer sum per block, scaled by
/// both block scales.
pub fn vec_dot(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q8_0 dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sumf += sumi as f32 * (f16_le(x.d) * f16_le(y.d));
    }
    sumf
}
