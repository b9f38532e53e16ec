//! NEON dots of the unquantized formats F32, F16 and BF16 with f32 activations.
//!
//! The reference (`quant::float`) multiplies in f32 and accumulates each product in f64.
//! Here the products are formed four at a time, still rounded to f32 (`fmul`, never a
//! fused multiply-add), then widened and added into four f64x2 accumulators. Only the
//! order of the f64 additions differs from the reference; with 29 spare bits of f64
//! mantissa that changes the f32 result only when the sum lands within ~2⁻²⁹ of an f32
//! rounding boundary, so in practice the results are the same bits.

use std::arch::aarch64::*;

use super::simd::{arr, bf16x4_to_f32, f16_le, f16x4_to_f32, load_f32_le, load_u8x8};

/// Elements per loop iteration: four vectors of four.
const STEP: usize = 16;

/// Adds the f32 products `p` to `acc` in f64.
#[inline]
#[target_feature(enable = "neon")]
fn add_products(acc: float64x2_t, p: float32x4_t) -> float64x2_t {
    let acc = vaddq_f64(acc, vcvt_f64_f32(vget_low_f32(p)));
    vaddq_f64(acc, vcvt_high_f64_f32(p))
}

/// The shared loop: `lanes(b)` converts the first four weights of `b` to f32 and `one(b)`
/// converts a single weight of `wb` bytes (for the tail, as the reference does).
#[inline]
#[target_feature(enable = "neon")]
fn dot_with(
    w: &[u8],
    a: &[u8],
    wb: usize,
    lanes: impl Fn(&[u8]) -> float32x4_t,
    one: impl Fn(&[u8]) -> f32,
) -> f32 {
    let n = a.len() / 4;
    let body = n - n % STEP;
    let mut acc = [vdupq_n_f64(0.0); 4];
    for (wc, ac) in w[..body * wb]
        .chunks_exact(STEP * wb)
        .zip(a[..body * 4].chunks_exact(STEP * 4))
    {
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = lanes(&wc[4 * k * wb..]);
            let y = load_f32_le(arr(ac, 16 * k));
            *acc = add_products(*acc, vmulq_f32(x, y));
        }
    }
    let acc = vaddq_f64(vaddq_f64(acc[0], acc[1]), vaddq_f64(acc[2], acc[3]));
    let mut sum = vaddvq_f64(acc);
    // Rows are almost always a multiple of 16; any rest goes one element at a time.
    for i in body..n {
        let y = f32::from_le_bytes(*arr(a, 4 * i));
        sum += (one(&w[i * wb..]) * y) as f64;
    }
    sum as f32
}

/// F32 weights · f32 activations.
#[target_feature(enable = "neon")]
pub fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len(), a.len(), "F32 dot lengths");
    assert_eq!(a.len() % 4, 0, "F32 dot length");
    dot_with(
        w,
        a,
        4,
        |b| load_f32_le(arr(b, 0)),
        |b| f32::from_le_bytes(*arr(b, 0)),
    )
}

/// F16 weights · f32 activations.
#[target_feature(enable = "neon")]
pub fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len() * 2, a.len(), "F16 dot lengths");
    dot_with(
        w,
        a,
        2,
        |b| f16x4_to_f32(vreinterpret_u16_u8(load_u8x8(arr(b, 0)))),
        |b| f16_le(*arr(b, 0)),
    )
}

/// BF16 weights · f32 activations.
#[target_feature(enable = "neon")]
pub fn dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len() * 2, a.len(), "BF16 dot lengths");
    dot_with(
        w,
        a,
        2,
        |b| bf16x4_to_f32(vreinterpret_u16_u8(load_u8x8(arr(b, 0)))),
        |b| f32::from_bits((u16::from_le_bytes(*arr(b, 0)) as u32) << 16),
    )
}
