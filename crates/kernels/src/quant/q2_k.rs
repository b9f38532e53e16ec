//! Q2_K: super-blocks of 256 weights in 16 sub-blocks of 16; weight
//! `d*sc*q - dmin*m` with 4-bit scale `sc` (low nibble of `scales[i]`), 4-bit min `m`
//! (high nibble) and 2-bit q. Weight `128n + 32j + l` sits in bits `2j..2j+2` of
//! `qs[32n + l]`.
//!
//! Reference: `quantize_row_q2_K_ref`, `dequantize_row_q2_K` (ggml-quants.c) and
//! `ggml_vec_dot_q2_K_q8_K_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ2K, BlockQ8K};
use super::kquants::{make_qkx2_quants, nearest_int};
use super::QK_K;

/// The 2-bit quants of a block in element order.
fn unpack(b: &BlockQ2K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (e, qe) in q.iter_mut().enumerate() {
        let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
        *qe = (b.qs[32 * n + l] >> (2 * j)) & 3;
    }
    q
}

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q2_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let min = f16_le(b.dmin);
        let q = unpack(b);
        for ((y, q), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&b.scales)
        {
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            for l in 0..16 {
                y[l] = dl * q[l] as f32 - ml;
            }
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) with ggml's reference algorithm:
/// `make_qkx2_quants(nmax = 3, weights |x|, mean absolute error)` per sub-block, scales
/// and mins quantized to 4 bits against their maxima, then every weight re-quantized.
pub fn quantize(x: &[f32], out: &mut [BlockQ2K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q2_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ2K) {
    const Q4SCALE: f32 = 15.0;
    let mut l_all = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 16 {
        let r = 16 * j..16 * j + 16;
        for (w, &v) in weights.iter_mut().zip(&x[r.clone()]) {
            *w = v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            3,
            &x[r.clone()],
            &weights,
            &mut l_all[r],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (s, &sc) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * sc) as u8;
        }
        y.d = f16_le_from(max_scale / Q4SCALE);
    } else {
        y.scales = [0; QK_K / 16];
        y.d = f16_le_from(0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (s, &m) in y.scales.iter_mut().zip(&mins) {
            *s |= (nearest_int(iscale * m) << 4) as u8;
        }
        y.dmin = f16_le_from(max_min / Q4SCALE);
    } else {
        y.dmin = f16_le_from(0.0);
    }
    for j in 0..QK_K / 16 {
        let d = f16_le(y.d) * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = f16_le(y.dmin) * (y.scales[j] >> 4) as f32;
        for ii in 0..16 {
            let l = nearest_int((x[16 * j + ii] + dm) / d);
            l_all[16 * j + ii] = l.clamp(0, 3) as u8;
        }
    }
    for (q, l) in y.qs.chunks_exact_mut(32).zip(l_all.chunks_exact(128)) {
        for i in 0..32 {
            q[i] = l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6);
        }
    }
}

/// Dot of Q2_K weights with Q8_K activations: integer sums per sub-block scaled by the
/// 4-bit scales, the mins applied through `bsums`, then `d*d_a*isum - dmin*d_a*summs`.
pub fn vec_dot(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q2_K dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut summs = 0i32;
        for (&bs, &sc) in y.bsums.iter().zip(&x.scales) {
            summs += bs as i32 * (sc >> 4) as i32;
        }
        let dall = y.d * f16_le(x.d);
        let dmin = y.d * f16_le(x.dmin);
        let q2 = unpack(x);
        let mut isum = 0i32;
        for ((q2, q8), &sc) in q2
            .chunks_exact(16)
            .zip(y.qs.chunks_exact(16))
            .zip(&x.scales)
        {
            let isuml: i32 = q2.iter().zip(q8).map(|(&q, &a)| a as i32 * q as i32).sum();
            isum += (sc & 0xF) as i32 * isuml;
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}
