//! NEON activation quantizers: f32 rows to Q8_0, Q8_1 and Q8_K, byte-identical to the
//! references in `quant::q8_0`, `quant::q8_1` and `quant::q8_k`.
//!
//! Bit-exactness rests on three facts. The scale comes from the same maximum and the same
//! f32 division (NaN included: see [`scale_32`] and [`quantize_q8_k_block`]). The rounding
//! rounding matches the reference's for every input: Q8_0/Q8_1 use `fcvtas` (ties away
//! from zero, like `f32::round`) and saturating narrows (like `as i8` from f32, NaN to 0);
//! Q8_K performs ggml's `nearest_int` trick itself (add 1.5·2²³, keep the low mantissa
//! bits) and wraps to bytes as `as i8` from i32 does, because that trick's results for
//! ±inf and NaN — which a subnormal maximum can produce — are not `fcvtns`'s. And the
//! f16 scale is stored through the same [`f16_le_from`] as the reference.

use std::arch::aarch64::*;

use crate::quant::blocks::{f16_le_from, QK32};
use crate::quant::QK_K;

/// Bytes of a Q8_0 block: f16 `d`, 32 quants.
const Q8_0_BYTES: usize = 34;
/// Bytes of a Q8_1 block: f16 `d`, f16 `s`, 32 quants.
const Q8_1_BYTES: usize = 36;
/// Bytes of a Q8_K block: f32 `d`, 256 quants, 16 i16 `bsums`.
const Q8_K_BYTES: usize = 292;

/// Loads 4 floats `x[4k..4k + 4]` of a 32-element block.
#[inline]
#[target_feature(enable = "neon")]
fn load4(x: &[f32], k: usize) -> float32x4_t {
    let x: &[f32; 4] = x[4 * k..4 * k + 4].try_into().expect("4 lanes");
    super::simd::load_f32(x)
}

/// `max |x|` over one block (a multiple of 16 values), ignoring NaN (`fmaxnm`), which is
/// what Q8_K's strict `|v| > amax` scan does.
#[inline]
#[target_feature(enable = "neon")]
fn abs_max(x: &[f32]) -> f32 {
    let mut m = [vdupq_n_f32(0.0); 4];
    for k in 0..x.len() / 4 {
        m[k % 4] = vmaxnmq_f32(m[k % 4], vabsq_f32(load4(x, k)));
    }
    vmaxnmvq_f32(vmaxnmq_f32(
        vmaxnmq_f32(m[0], m[1]),
        vmaxnmq_f32(m[2], m[3]),
    ))
}

/// Whether any of the values is NaN.
#[inline]
#[target_feature(enable = "neon")]
fn has_nan(x: &[f32]) -> bool {
    let mut ordered = vdupq_n_u32(u32::MAX);
    for k in 0..x.len() / 4 {
        let v = load4(x, k);
        ordered = vandq_u32(ordered, vceqq_f32(v, v));
    }
    vminvq_u32(ordered) == 0
}

/// Rounds `x[16c..16c + 16] * id` ties-away and narrows with saturation (as `as i8` does).
#[inline]
#[target_feature(enable = "neon")]
fn round_away_16(x: &[f32], c: usize, id: f32) -> int8x16_t {
    let q = |k: usize| vcvtaq_s32_f32(vmulq_n_f32(load4(x, 4 * c + k), id));
    let lo = vcombine_s16(vqmovn_s32(q(0)), vqmovn_s32(q(1)));
    let hi = vcombine_s16(vqmovn_s32(q(2)), vqmovn_s32(q(3)));
    vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
}

/// Stores 16 quants into `out[at..at + 16]`.
#[inline]
#[target_feature(enable = "neon")]
fn store16(out: &mut [u8], at: usize, q: int8x16_t) {
    let dst: &mut [u8; 16] = (&mut out[at..at + 16]).try_into().expect("16 bytes");
    // SAFETY: `dst` is 16 writable bytes and `st1 {v.16b}` has no alignment requirement.
    unsafe { vst1q_u8(dst.as_mut_ptr(), vreinterpretq_u8_s8(q)) }
}

/// The Q8_0/Q8_1 scale of a block and its inverse, as the references compute them.
///
/// The references take the maximum with C's `MAX(amax, fabsf(v))`, under which a NaN
/// replaces the running maximum and is replaced by the next value. Blocks without NaN
/// (all real ones) take the vector maximum, which is then the same; a block with NaN
/// takes the reference's own fold.
#[inline]
#[target_feature(enable = "neon")]
fn scale_32(xb: &[f32]) -> (f32, f32) {
    let amax = if has_nan(xb) {
        xb.iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() })
    } else {
        abs_max(xb)
    };
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// f32 → Q8_0 (`x.len() == 32 * blocks`, `out.len() == 34 * blocks`).
#[target_feature(enable = "neon")]
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len() % QK32, 0, "Q8_0 quantize length");
    assert_eq!(out.len(), x.len() / QK32 * Q8_0_BYTES, "Q8_0 output length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, id) = scale_32(xb);
        y[..2].copy_from_slice(&f16_le_from(d));
        store16(y, 2, round_away_16(xb, 0, id));
        store16(y, 18, round_away_16(xb, 1, id));
    }
}

/// f32 → Q8_1 (`x.len() == 32 * blocks`, `out.len() == 36 * blocks`).
#[target_feature(enable = "neon")]
pub fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len() % QK32, 0, "Q8_1 quantize length");
    assert_eq!(out.len(), x.len() / QK32 * Q8_1_BYTES, "Q8_1 output length");
    for (xb, y) in x.chunks_exact(QK32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, id) = scale_32(xb);
        let q0 = round_away_16(xb, 0, id);
        let q1 = round_away_16(xb, 1, id);
        // Σq over 32 quants fits easily in i16 lanes (|Σ| ≤ 32·128).
        let sum = vaddlvq_s16(vaddq_s16(vpaddlq_s8(q0), vpaddlq_s8(q1)));
        y[..2].copy_from_slice(&f16_le_from(d));
        y[2..4].copy_from_slice(&f16_le_from(sum as f32 * d));
        store16(y, 4, q0);
        store16(y, 20, q1);
    }
}

/// f32 → Q8_K (`x.len() == 256 * blocks`, `out.len() == 292 * blocks`).
#[target_feature(enable = "neon")]
pub fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    assert_eq!(x.len() % QK_K, 0, "Q8_K quantize length");
    assert_eq!(out.len(), x.len() / QK_K * Q8_K_BYTES, "Q8_K output length");
    for (xb, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8_K_BYTES)) {
        quantize_q8_k_block(xb, y);
    }
}

/// ggml's `nearest_int` on four lanes: `(bits(v + 1.5·2²³) & 0x7fffff) - 0x400000`, which
/// rounds ties to even for |v| ≤ 2²² and gives the reference's exact garbage otherwise.
#[inline]
#[target_feature(enable = "neon")]
fn nearest_int(v: float32x4_t) -> int32x4_t {
    let bits = vreinterpretq_s32_f32(vaddq_f32(v, vdupq_n_f32(12_582_912.0)));
    vsubq_s32(
        vandq_s32(bits, vdupq_n_s32(0x007f_ffff)),
        vdupq_n_s32(0x0040_0000),
    )
}

/// One Q8_K block: the scale is `max / -127` for the signed element of largest magnitude
/// (the first one, on ties), quants round ties to even and are capped at 127.
#[inline]
#[target_feature(enable = "neon")]
fn quantize_q8_k_block(xb: &[f32], y: &mut [u8]) {
    let amax = abs_max(xb);
    if amax == 0.0 {
        y.fill(0);
        return;
    }
    // The reference keeps the first element whose magnitude is the (strict) running
    // maximum; that is the first element equal to `amax` in magnitude.
    let max = xb
        .iter()
        .copied()
        .find(|v| v.abs() == amax)
        // `fmaxnm` returns one of its operands, so some element has magnitude `amax`.
        .unwrap_or(amax);
    let iscale = -127.0 / max;
    let cap = vdupq_n_s32(127);
    let mut bsums = [0i16; QK_K / 16];
    for (c, bsum) in bsums.iter_mut().enumerate() {
        let q = |k: usize| {
            let v = vmulq_n_f32(load4(xb, 4 * c + k), iscale);
            vminq_s32(nearest_int(v), cap)
        };
        // Truncating narrows: `as i8` from i32 keeps the low byte.
        let lo = vcombine_s16(vmovn_s32(q(0)), vmovn_s32(q(1)));
        let hi = vcombine_s16(vmovn_s32(q(2)), vmovn_s32(q(3)));
        let q8 = vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
        *bsum = vaddlvq_s8(q8);
        store16(y, 4 + 16 * c, q8);
    }
    y[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (dst, s) in y[4 + QK_K..].chunks_exact_mut(2).zip(bsums) {
        dst.copy_from_slice(&s.to_le_bytes());
    }
}
