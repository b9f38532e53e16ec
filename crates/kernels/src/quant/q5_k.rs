//! Q5_K: Q4_K plus a fifth bit per weight: bit `2j` / `2j+1` of `qh[l]` is the high bit of
//! weight l / l + 32 of the j-th group of 64.
//!
//! Reference: `quantize_row_q5_K_ref`, `dequantize_row_q5_K` (ggml-quants.c) and
//! `ggml_vec_dot_q5_K_q8_K_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ5K, BlockQ8K};
use super::kquants::{get_scale_min_k4, make_qkx2_quants, nearest_int, pack_scale_min_k4};
use super::QK_K;

/// The 5-bit quants of a block in element order.
pub(crate) fn unpack(b: &BlockQ5K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for (j, (ql, qq)) in
        b.qs.chunks_exact(32)
            .zip(q.chunks_exact_mut(64))
            .enumerate()
    {
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        for l in 0..32 {
            qq[l] = (ql[l] & 0xF) + if b.qh[l] & u1 != 0 { 16 } else { 0 };
            qq[l + 32] = (ql[l] >> 4) + if b.qh[l] & u2 != 0 { 16 } else { 0 };
        }
    }
    q
}

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q5_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let min = f16_le(b.dmin);
        let q = unpack(b);
        for (j, (q, y)) in q.chunks_exact(32).zip(y.chunks_exact_mut(32)).enumerate() {
            let (sc, m) = get_scale_min_k4(j, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                y[l] = d1 * q[l] as f32 - m1;
            }
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) as Q4_K does, with 31 levels and the
/// search `make_qkx2_quants(rmin = -0.5, rdelta = 0.1, nstep = 15)` of ggml's reference.
pub fn quantize(x: &[f32], out: &mut [BlockQ5K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q5_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ5K) {
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
            31,
            xs,
            &weights,
            &mut l_all[32 * j..32 * j + 32],
            &mut laux,
            -0.5,
            0.1,
            15,
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
            l_all[32 * j + ii] = l.clamp(0, 31) as u8;
        }
    }
    y.qh = [0; QK_K / 8];
    let (mut m1, mut m2) = (1u8, 2u8);
    for (ql, l) in y.qs.chunks_exact_mut(32).zip(l_all.chunks_exact(64)) {
        for j in 0..32 {
            let mut l1 = l[j];
            if l1 > 15 {
                l1 -= 16;
                y.qh[j] |= m1;
            }
            let mut l2 = l[j + 32];
            if l2 > 15 {
                l2 -= 16;
                y.qh[j] |= m2;
            }
            ql[j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
}

/// Dot of Q5_K weights with Q8_K activations, structured as Q4_K's.
pub fn vec_dot(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q5_K dot block counts");
    let mut sums = [0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let aux8 = unpack(x);
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
