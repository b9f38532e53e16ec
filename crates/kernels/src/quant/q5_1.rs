//! Q5_1: blocks of 32 weights `d * q + m`, q 5 bits packed as in Q5_0.
//!
//! Reference: `quantize_row_q5_1_ref`, `dequantize_row_q5_1` (ggml-quants.c) and
//! `ggml_vec_dot_q5_1_q8_1_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ5_1, BlockQ8_1, QK32};
use super::q5_0::{pack5, unpack5};

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ5_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q5_1 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        let m = f16_le(b.m);
        for (yj, q) in y.iter_mut().zip(unpack5(&b.qs, b.qh)) {
            *yj = q as f32 * d + m;
        }
    }
}

/// Quantizes `x` (`x.len() == 32 * out.len()`) over [min, max] in 31 steps, rounding
/// half up. Matches ggml and the `gguf` package bit for bit.
pub fn quantize(x: &[f32], out: &mut [BlockQ5_1]) {
    assert_eq!(x.len(), out.len() * QK32, "Q5_1 quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        y.m = f16_le_from(min);
        let mut q = [0u8; QK32];
        for (qj, &v) in q.iter_mut().zip(xb) {
            // ggml writes `(uint8_t)(x + 0.5f)` unclamped; the value never exceeds 31.5.
            *qj = (((v - min) * id + 0.5) as u8).min(31);
        }
        (y.qs, y.qh) = pack5(&q);
    }
}

/// Dot of Q5_1 weights with Q8_1 activations: `d_w*d_a*sumi + m_w*s_a` per block.
pub fn vec_dot(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q5_1 dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = unpack5(&x.qs, x.qh);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            sumi0 += q[j] as i32 * y.qs[j] as i32;
            sumi1 += q[j + QK32 / 2] as i32 * y.qs[j + QK32 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sumf
}
