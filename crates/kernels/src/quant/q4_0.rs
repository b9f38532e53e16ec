//! Q4_0: blocks of 32 weights `d * (q - 8)`, q a nibble; byte j holds element j in its
//! low nibble and element j + 16 in its high nibble.
//!
//! Reference: `quantize_row_q4_0_ref`, `dequantize_row_q4_0` (ggml-quants.c) and
//! `ggml_vec_dot_q4_0_q8_0_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ4_0, BlockQ8_0, QK32};

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ4_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q4_0 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK32 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Quantizes `x` (`x.len() == 32 * out.len()`) with `d = max / -8`, `max` the signed
/// element of largest magnitude (the first one on ties), so that it maps to q = 0 and the
/// opposite side gets the extra level. Matches ggml and the `gguf` package bit for bit.
pub fn quantize(x: &[f32], out: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), out.len() * QK32, "Q4_0 quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        for j in 0..QK32 / 2 {
            // C's `(int8_t)(x + 8.5f)` truncates toward zero; `as` does too (and saturates).
            let q0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((xb[j + QK32 / 2] * id + 8.5) as i8).min(15) as u8;
            y.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Dot of Q4_0 weights with Q8_0 activations: integer sum per block, then
/// `sumi * d_w * d_a`.
pub fn vec_dot(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q4_0 dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            let v0 = (x.qs[j] & 0x0F) as i32 - 8;
            let v1 = (x.qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * y.qs[j] as i32;
            sumi1 += v1 * y.qs[j + QK32 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * f16_le(x.d) * f16_le(y.d);
    }
    sumf
}
