//! Q4_1: blocks of 32 weights `d * q + m`, q a nibble laid out as in Q4_0.
//!
//! Reference: `quantize_row_q4_1_ref`, `dequantize_row_q4_1` (ggml-quants.c) and
//! `ggml_vec_dot_q4_1_q8_1_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ4_1, BlockQ8_1, QK32};

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ4_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q4_1 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        let m = f16_le(b.m);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + QK32 / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Quantizes `x` (`x.len() == 32 * out.len()`) over the block's [min, max] range in 15
/// steps, rounding half up. Matches ggml and the `gguf` package bit for bit.
pub fn quantize(x: &[f32], out: &mut [BlockQ4_1]) {
    assert_eq!(x.len(), out.len() * QK32, "Q4_1 quantize length");
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        y.m = f16_le_from(min);
        for j in 0..QK32 / 2 {
            let q0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((xb[j + QK32 / 2] - min) * id + 0.5) as i8).min(15) as u8;
            y.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Dot of Q4_1 weights with Q8_1 activations: `d_w*d_a*sumi + m_w*s_a` per block.
pub fn vec_dot(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q4_1 dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            sumi0 += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
            sumi1 += (x.qs[j] >> 4) as i32 * y.qs[j + QK32 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sumf
}
