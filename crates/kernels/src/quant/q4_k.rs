//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32; weight `d*sc*q - dmin*m`
//! with 6-bit sub-block scale `sc` and min `m` (packed, see
//! [`get_scale_min_k4`]) and 4-bit q. Within each 64 weights, byte l holds weight l in
//! its low nibble and weight l + 32 in its high nibble.
//!
//! Reference: `quantize_row_q4_K_ref`, `dequantize_row_q4_K` (ggml-quants.c) and
//! `ggml_vec_dot_q4_K_q8_K_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ4K, BlockQ8K};
use super::kquants::{get_scale_min_k4, make_qkx2_quants, nearest_int, pack_scale_min_k4};
use super::QK_K;

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q4_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let min = f16_le(b.dmin);
        for (j, (q, y)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc1, m1) = get_scale_min_k4(2 * j, &b.scales);
            let (sc2, m2) = get_scale_min_k4(2 * j + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) with ggml's reference algorithm: per
/// sub-block a weighted scale/min search (`make_qkx2_quants`, weights `rms + |x|`), the
/// scales and mins quantized to 6 bits against their maxima, then every weight
/// re-quantized with the final rounded scales.
pub fn quantize(x: &[f32], out: &mut [BlockQ4K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q4_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ4K) {
    let mut l_all = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut l_all[32 * j..32 * j + 32],
            &mut laux,
            -1.0,
            0.1,
            20,
            false,
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
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping; keep that wrap.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    y.scales = pack_scale_min_k4(&ls, &lm);
    y.d = f16_le_from(max_scale / 63.0);
    y.dmin = f16_le_from(max_min / 63.0);

    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &y.scales);
        let d = f16_le(y.d) * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = f16_le(y.dmin) * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / d);
            l_all[32 * j + ii] = l.clamp(0, 15) as u8;
        }
    }
    for (q, l) in y.qs.chunks_exact_mut(32).zip(l_all.chunks_exact(64)) {
        for i in 0..32 {
            q[i] = l[i] | (l[i + 32] << 4);
        }
    }
}

/// Dot of Q4_K weights with Q8_K activations: per super-block, integer sums of
/// `sc * q * a` per sub-block and of `m * bsum` for the mins, then scaled by `d*d_a` and
/// `dmin*d_a`; eight float lanes accumulate across super-blocks as ggml's generic code.
pub fn vec_dot(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q4_K dot block counts");
    let mut sums = [0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut aux8 = [0i8; QK_K];
        for (q4, a) in x.qs.chunks_exact(32).zip(aux8.chunks_exact_mut(64)) {
            for l in 0..32 {
                a[l] = (q4[l] & 0xF) as i8;
                a[l + 32] = (q4[l] >> 4) as i8;
            }
        }
        let mut scales = [0u8; 8];
        let mut mins = [0u8; 8];
        for j in 0..8 {
            (scales[j], mins[j]) = get_scale_min_k4(j, &x.scales);
        }
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            sumi += y.bsums[j] as i32 * mins[j / 2] as i32;
        }
        let mut aux32 = [0i32; 8];
        for (j, (a, q8)) in aux8.chunks_exact(32).zip(y.qs.chunks_exact(32)).enumerate() {
            let scale = scales[j] as i32;
            for (a, q8) in a.chunks_exact(8).zip(q8.chunks_exact(8)) {
                for l in 0..8 {
                    aux32[l] += scale * (q8[l] as i32 * a[l] as i32);
                }
            }
        }
        let d = f16_le(x.d) * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = f16_le(x.dmin) * y.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}
