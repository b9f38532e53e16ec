//! Q3_K: super-blocks of 256 weights in 16 sub-blocks of 16; weight `d * (sc - 32) * q`
//! with 6-bit scales `sc` packed in 12 bytes and q in -4..4: 2 low bits in `qs` (laid out
//! as Q2_K's) and a high bit in `hmask` whose *absence* subtracts 4. Weight
//! `128n + 32j + l` has its high bit at bit `4n + j` of `hmask[l]`.
//!
//! Reference: `quantize_row_q3_K_ref`, `dequantize_row_q3_K` (ggml-quants.c) and
//! `ggml_vec_dot_q3_K_q8_K_generic` (ggml-cpu/quants.c).

use super::blocks::{f16_le, f16_le_from, BlockQ3K, BlockQ8K};
use super::kquants::{make_q3_quants, nearest_int};
use super::QK_K;

/// The 16 six-bit scales (still offset by 32): sub-block j takes a nibble from byte
/// `j % 8` (low for j < 8, high after) and two bits from byte `8 + j % 4`.
fn scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8;
    }
    out
}

/// The signed quants (-4..4) of a block in element order.
fn unpack(b: &BlockQ3K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for (e, qe) in q.iter_mut().enumerate() {
        let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = ((b.qs[32 * n + l] >> (2 * j)) & 3) as i8;
        let high_set = b.hmask[l] & (1 << (4 * n + j)) != 0;
        *qe = low - if high_set { 0 } else { 4 };
    }
    q
}

/// Expands `blocks` into `out` (`out.len() == 256 * blocks.len()`).
pub fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K, "Q3_K dequantize length");
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d_all = f16_le(b.d);
        let q = unpack(b);
        for ((y, q), sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(scales(&b.scales))
        {
            let dl = d_all * (sc as i32 - 32) as f32;
            for l in 0..16 {
                y[l] = dl * q[l] as f32;
            }
        }
    }
}

/// Quantizes `x` (`x.len() == 256 * out.len()`) with ggml's reference algorithm:
/// `make_q3_quants` (weighted, iteratively refined) per sub-block, the scales quantized to
/// 6 bits against the signed largest one, then every weight re-quantized.
pub fn quantize(x: &[f32], out: &mut [BlockQ3K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q3_K quantize length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, y);
    }
}

fn quantize_block(x: &[f32], y: &mut BlockQ3K) {
    let mut l_all = [0i8; QK_K];
    let mut sub_scales = [0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for (j, s) in sub_scales.iter_mut().enumerate() {
        let r = 16 * j..16 * j + 16;
        *s = make_q3_quants(4, &x[r.clone()], &mut l_all[r], true);
        if s.abs() > amax {
            amax = s.abs();
            max_scale = *s;
        }
    }
    y.scales = [0; 12];
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &sc) in sub_scales.iter().enumerate() {
            // ggml stores nearest_int into an int8_t before clamping; keep that wrap.
            let l = nearest_int(iscale * sc) as i8;
            let l = (l.clamp(-32, 31) + 32) as u8;
            if j < 8 {
                y.scales[j] = l & 0xF;
            } else {
                y.scales[j - 8] |= (l & 0xF) << 4;
            }
            y.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        y.d = f16_le_from(1.0 / iscale);
    } else {
        y.d = f16_le_from(0.0);
    }
    for (j, sc) in scales(&y.scales).into_iter().enumerate() {
        let d = f16_le(y.d) * (sc as i32 - 32) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let l = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l_all[16 * j + ii] = (l + 4) as i8;
        }
    }
    y.hmask = [0; QK_K / 8];
    for (j, l) in l_all.iter_mut().enumerate() {
        if *l > 3 {
            y.hmask[j % 32] |= 1 << (j / 32);
            *l -= 4;
        }
    }
    for (q, l) in y.qs.chunks_exact_mut(32).zip(l_all.chunks_exact(128)) {
        for i in 0..32 {
            q[i] = (l[i] | (l[i + 32] << 2) | (l[i + 64] << 4) | (l[i + 96] << 6)) as u8;
        }
    }
}

/// Dot of Q3_K weights with Q8_K activations: integer sums per sub-block of 16 scaled by
/// `sc - 32`, eight float lanes across super-blocks as ggml's generic code.
pub fn vec_dot(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), a.len(), "Q3_K dot block counts");
    let mut sums = [0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let aux8 = unpack(x);
        let mut aux32 = [0i32; 8];
        for ((a, q8), sc) in aux8
            .chunks_exact(16)
            .zip(y.qs.chunks_exact(16))
            .zip(scales(&x.scales))
        {
            let scale = sc as i32 - 32;
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
