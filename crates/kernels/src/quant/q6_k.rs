//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16 with signed 8-bit scales;
//! weight `d * sc * (q - 32)`, q 6 bits: 4 low bits in `ql`, 2 high bits in `qh`. Within
//! each 128 weights, `ql[l]` holds weights l (low nibble) and l + 64 (high), `ql[l + 32]`
//! weights l + 32 and l + 96, and `qh[l]` the high bits of all four.
//!
//! Reference: `quantize_row_q6_K_ref`, `dequantize_row_q6_K` (ggml-quants.c) and
//! `ggml_vec_dot_q6_K_q8_K_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ6K, BlockQ8K};
use super::kquants::{make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::QK_K;

/// The signed quants `q - 32` of a block in element order.
pub(crate) fn unpack(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for ((ql, qh), a) in
        b.ql.chunks_exact(64)
            .zip(b.qh.chunks_exact(32))
            .zip(a.chunks_exact_mut(128))
    {
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q6_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let q = unpack(b);
        for ((y, q), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&b.scales)
        {
            // ggml computes `d * sc * q` left to right: (d * sc) * q.
            let dl = d * sc as f32;
            for l in 0..16 {
                y[l] = dl * q[l] as f32;
            }
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) with ggml's reference algorithm: per
/// sub-block of 16 a weighted symmetric search (`make_qx_quants(nmax = 32, rmse_type = 1)`),
/// sub-block scales quantized to i8 against the largest, then every weight re-quantized.
pub fn quantize(x: &[f32], out: &mut [BlockQ6K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q6_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ6K) {
    let mut l_all = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, s) in scales.iter_mut().enumerate() {
        let r = 16 * ib..16 * ib + 16;
        let scale = make_qx_quants(32, &x[r.clone()], &mut l_all[r], 1, None);
        *s = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = bytemuck::Zeroable::zeroed();
        return;
    }
    let iscale = -128.0 / max_scale;
    y.d = f16_le_from(1.0 / iscale);
    for (s, &sc) in y.scales.iter_mut().zip(&scales) {
        *s = nearest_int(iscale * sc).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = f16_le(y.d) * y.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l_all[16 * j + ii] = (l + 32) as i8;
        }
    }
    for ((ql, qh), l) in
        y.ql.chunks_exact_mut(64)
            .zip(y.qh.chunks_exact_mut(32))
            .zip(l_all.chunks_exact(128))
    {
        for i in 0..32 {
            let (q1, q2, q3, q4) = (
                l[i] as u8,
                l[i + 32] as u8,
                l[i + 64] as u8,
                l[i + 96] as u8,
            );
            ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            qh[i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}

/// Dot of Q6_K weights with Q8_K activations: per sub-block of 16 an integer sum scaled by
/// the i8 scale, eight float lanes across super-blocks as ggml's generic code.
pub fn vec_dot(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q6_K dot block counts");
    let mut sums = [0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let aux8 = unpack(x);
        let mut aux32 = [0i32; 8];
        for ((a, q8), &sc) in aux8
            .chunks_exact(16)
            .zip(y.qs.chunks_exact(16))
            .zip(&x.scales)
        {
            let scale = sc as i32;
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
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}
