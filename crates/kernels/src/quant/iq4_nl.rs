//! IQ4_NL: blocks of 32 weights `d * KVALUES_IQ4NL[q]`, a non-linear 4-bit codebook,
//! nibbles laid out as in Q4_0.
//!
//! Reference: `quantize_row_iq4_nl_ref` / `quantize_row_iq4_nl_impl`,
//! `dequantize_row_iq4_nl` (ggml-quants.c) and `ggml_vec_dot_iq4_nl_q8_0_generic`
//! (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockIQ4NL, BlockQ8_0, KVALUES_IQ4NL, QK32};
use super::kquants::GROUP_MAX_EPS;

/// Index of the codebook entry nearest to `x` (`best_index_int8`): the codebook is
/// sorted, so `x` takes entry i once it reaches the midpoint of entries i-1 and i,
/// compared as `2x >= v[i-1] + v[i]` so that both sides are exact. Ties go up.
#[inline(always)]
pub(crate) fn best_index(values: &[i8; 16], x: f32) -> u8 {
    let x2 = x + x;
    let mut idx = 0usize;
    let mut step = 8;
    while step > 0 {
        let j = idx + step;
        if x2 >= (values[j - 1] as i32 + values[j] as i32) as f32 {
            idx = j;
        }
        step >>= 1;
    }
    idx as u8
}

/// Per block of 32: the scale search of `quantize_row_iq4_nl_impl` without importance
/// weights (weights `x²`). Starting from `d = max / v[0]` (sign chosen by `ntry`), the
/// least-squares scale for the resulting indices, then, when `ntry > 0`, `2*ntry + 1`
/// further trial scales. Returns the scale and writes the indices to `l`.
pub(crate) fn search_block(x: &[f32], l: &mut [u8], ntry: i32) -> f32 {
    let values = &KVALUES_IQ4NL;
    let v0 = values[0] as f32;
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (lj, &xj) in l.iter_mut().zip(x) {
        let i = best_index(values, id * xj);
        *lj = i;
        let q = values[i as usize] as f32;
        let w = xj * xj;
        sumqx += w * q * xj;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry + values[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for &xj in x {
            let q = values[best_index(values, id * xj) as usize] as f32;
            let w = xj * xj;
            sumqx += w * q * xj;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Quantizes `x` (`x.len() == 32 * out.len()`) with ggml's reference
/// (`quantize_row_iq4_nl_ref`: no importance matrix, `ntry = -1`, so the least-squares
/// scale of the max-based indices, indices not recomputed).
pub fn quantize(x: &[f32], out: &mut [BlockIQ4NL]) {
    assert_eq!(x.len(), out.len() * QK32, "IQ4_NL quantize length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.iter_mut()) {
        let mut l = [0u8; QK32];
        let d = search_block(xb, &mut l, -1);
        y.d = f16_le_from(d);
        for j in 0..16 {
            y.qs[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

/// Expands `blocks` into `out` (`out.len() == 32 * blocks.len()`).
pub fn dequantize(blocks: &[BlockIQ4NL], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK32, "IQ4_NL dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK32)) {
        let d = f16_le(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = d * KVALUES_IQ4NL[(q & 0xF) as usize] as f32;
            y[j + QK32 / 2] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    }
}

/// Dot of IQ4_NL weights with Q8_0 activations: integer sum of codebook values times
/// activations per block, scaled by `d_a * d_w`.
pub fn vec_dot(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "IQ4_NL dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let d = f16_le(y.d) * f16_le(x.d);
        let (mut sumi1, mut sumi2) = (0i32, 0i32);
        for j in 0..QK32 / 2 {
            sumi1 += y.qs[j] as i32 * KVALUES_IQ4NL[(x.qs[j] & 0xF) as usize] as i32;
            sumi2 += y.qs[j + QK32 / 2] as i32 * KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as i32;
        }
        sumf += d * (sumi1 + sumi2) as f32;
    }
    sumf
}
