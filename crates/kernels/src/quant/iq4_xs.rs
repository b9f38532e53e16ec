//! IQ4_XS: the IQ4_NL codebook in super-blocks of 256 with 6-bit sub-block scales
//! (offset by 32): weight `d * (ls - 32) * KVALUES_IQ4NL[q]`. Sub-block ib's scale has its
//! low nibble in `scales_l[ib / 2]` and its two high bits at bit `2 ib` of `scales_h`.
//!
//! Reference: `quantize_row_iq4_xs_ref` / `quantize_row_iq4_nl_impl`,
//! `dequantize_row_iq4_xs` (ggml-quants.c) and `ggml_vec_dot_iq4_xs_q8_K_generic`
//! (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockIQ4XS, BlockQ8K, KVALUES_IQ4NL};
use super::iq4_nl::{best_index, search_block};
use super::kquants::nearest_int;
use super::QK_K;

/// Quantizes `x` (`x.len() == 256 * out.len()`) with ggml's reference
/// (`quantize_row_iq4_xs_ref`: `ntry = 7` scale search per block of 32, the block scales
/// quantized to 6 bits against the signed largest, indices recomputed with each final
/// block scale, computed from the unrounded f32 super-block scale as ggml does).
pub fn quantize(x: &[f32], out: &mut [BlockIQ4XS]) {
    assert_eq!(x.len(), out.len() * QK_K, "IQ4_XS quantize length");
    for (xs, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 32];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            *s = search_block(&xs[32 * ib..32 * ib + 32], &mut l[32 * ib..32 * ib + 32], 7);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        y.d = f16_le_from(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        y.scales_l = [0; QK_K / 64];
        for (ib, &s) in scales.iter().enumerate() {
            let ls = nearest_int(id * s).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 32 * ib..32 * ib + 32 {
                l[j] = best_index(&KVALUES_IQ4NL, idl * xs[j]);
            }
            let ls = (ls + 32) as u8;
            y.scales_l[ib / 2] |= (ls & 0xF) << (4 * (ib % 2));
            scales_h |= ((ls >> 4) as u16) << (2 * ib);
        }
        y.scales_h = scales_h.to_le_bytes();
        for (q, l) in y.qs.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
            for j in 0..16 {
                q[j] = l[j] | (l[j + 16] << 4);
            }
        }
    }
}

/// The 6-bit scale of sub-block `ib` (0..8), minus 32.
#[inline(always)]
pub(crate) fn sub_scale(b: &BlockIQ4XS, ib: usize) -> i32 {
    let h = u16::from_le_bytes(b.scales_h);
    let ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
        | ((((h >> (2 * ib)) & 3) as i32) << 4);
    ls - 32
}

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockIQ4XS], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "IQ4_XS dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        for (ib, (qs, y)) in
            b.qs.chunks_exact(16)
                .zip(y.chunks_exact_mut(32))
                .enumerate()
        {
            let dl = d * sub_scale(b, ib) as f32;
            for j in 0..16 {
                y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

/// Dot of IQ4_XS weights with Q8_K activations: an integer sum per sub-block of 32, each
/// scaled in float by `d * d_a * (ls - 32)`.
pub fn vec_dot(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "IQ4_XS dot block counts");
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let d4d8 = f16_le(x.d) * y.d;
        for (ib, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
            let dl = d4d8 * sub_scale(x, ib) as f32;
            let (mut sumi1, mut sumi2) = (0i32, 0i32);
            for j in 0..16 {
                sumi1 += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as i32;
                sumi2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
            }
            sumf += dl * (sumi1 + sumi2) as f32;
        }
    }
    sumf
}
