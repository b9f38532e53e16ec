//! Q5_0: blocks of 32 weights `d * (q - 16)`, q 5 bits: the low nibble as in Q4_0, bit 4
//! of element j is bit j of `qh` (little-endian u32).
//!
//! Reference: `quantize_row_q5_0_ref`, `dequantize_row_q5_0` (ggml-quants.c) and
//! `ggml_vec_dot_q5_0_q8_0_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ5_0, BlockQ8_0, QK32};

/// The 5-bit quants of a Q5_0/Q5_1 block, element order.
#[inline(always)]
pub(crate) fn unpack5(qs: &[u8; 16], qh: [u8; 4]) -> [u8; QK32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; QK32];
    for j in 0..QK32 / 2 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = (qs[j] & 0x0F) | h0;
        q[j + QK32 / 2] = (qs[j] >> 4) | h1;
    }
    q
}

/// Packs 32 five-bit quants into `(qs, qh)`.
#[inline(always)]
pub(crate) fn pack5(q: &[u8; QK32]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..QK32 / 2 {
        let (x0, x1) = (q[j], q[j + QK32 / 2]);
        qs[j] = (x0 & 0x0F) | ((x1 & 0x0F) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + QK32 / 2);
    }
    (qs, qh.to_le_bytes())
}

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ5_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "Q5_0 dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        for (yj, q) in y.iter_mut().zip(unpack5(&b.qs, b.qh)) {
            *yj = (q as i32 - 16) as f32 * d;
        }
    }
}

/// Quantizes `x` (`x.len() == 32 * out.len()`) with `d = max / -16` as Q4_0 does with
/// -8. Matches ggml and the `gguf` package bit for bit.
pub fn quantize(x: &[f32], out: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), out.len() * QK32, "Q5_0 quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y.d = f16_le_from(d);
        let mut q = [0u8; QK32];
        for (qj, &v) in q.iter_mut().zip(xb) {
            *qj = ((v * id + 16.5) as i8).min(31) as u8;
        }
        (y.qs, y.qh) = pack5(&q);
    }
}

/// Dot of Q5_0 weights with Q8_0 activations.
pub fn vec_dot(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q5_0 dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let q = unpack5(&x.qs, x.qh);
        let (mut sumi0, mut sumi1) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            sumi0 += (q[j] as i32 - 16) * y.qs[j] as i32;
            sumi1 += (q[j + QK32 / 2] as i32 - 16) * y.qs[j + QK32 / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32;
    }
    sumf
}
