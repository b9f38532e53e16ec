//! NEON dots of the k-quants (Q2_K … Q6_K, Q8_K itself) and IQ4_XS with Q8_K activations.
//!
//! The references of Q3_K … Q6_K (`quant::q4_k::vec_dot` …, after ggml's generic code)
//! keep eight i32
//! lanes per super-block, lane `l` summing `scale · q · y` over the elements whose index
//! is `l` mod 8, and eight f32 lane totals. NEON's widening multiplies keep exactly that
//! lane structure: `smull` of bytes 0..8 and `smull2` of bytes 8..16 both put element
//! `l` (mod 8) in 16-bit lane `l`, and `smlal`/`smlal2` by the sub-block scale carry lanes
//! 0..4 and 4..8 into two i32x4. The f32 steps (`d · lane`, lane totals, the `dmin` term)
//! are then the reference's own operations in its order, so results are bit-identical.
//! Q2_K, Q8_K and IQ4_XS reduce to plain integer sums per block or sub-block, which any
//! order computes exactly, followed by the reference's f32 expression.
//!
//! The 16-bit partial sums cannot overflow for any input bytes: a sub-block adds at most
//! four products per lane, each at most 31·128 (Q5_K) or 32·128 (Q6_K, two products).

use std::arch::aarch64::*;

use super::simd::{arr, dot_i8, f16_le, load_i8, load_u8, load_u8_as_i8};
use crate::quant::blocks::KVALUES_IQ4NL;
use crate::quant::QK_K;

/// Bytes of the blocks read here.
const Q2_K: usize = 84;
const Q3_K: usize = 110;
const Q4_K: usize = 144;
const Q5_K: usize = 176;
const Q6_K: usize = 210;
const Q8_K: usize = 292;
const IQ4_XS: usize = 136;
/// Offsets inside a Q8_K block: f32 `d`, 256 quants, 16 i16 `bsums`.
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 4 + QK_K;

/// Pairs up the weight blocks with the Q8_K blocks of a row, checking that they describe
/// the same number of elements (a caller bug otherwise, as in the reference).
fn blocks<'a>(
    w: &'a [u8],
    wb: usize,
    a: &'a [u8],
    what: &str,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let nb = w.len() / wb;
    assert!(
        w.len() == nb * wb && a.len() == nb * Q8_K,
        "{what} dot block counts"
    );
    w.chunks_exact(wb).zip(a.chunks_exact(Q8_K))
}

/// The eight i32 lanes of one super-block (`aux32` in the reference): lanes 0..4, 4..8.
#[derive(Clone, Copy)]
struct Lanes(int32x4_t, int32x4_t);

impl Lanes {
    #[inline]
    #[target_feature(enable = "neon")]
    fn zero() -> Lanes {
        Lanes(vdupq_n_s32(0), vdupq_n_s32(0))
    }

    /// Adds `scale · p`, with `p` the per-lane products of one sub-block.
    #[inline]
    #[target_feature(enable = "neon")]
    fn add_scaled(self, p: int16x8_t, scale: i16) -> Lanes {
        Lanes(
            vmlal_n_s16(self.0, vget_low_s16(p), scale),
            vmlal_high_n_s16(self.1, p, scale),
        )
    }
}

/// Per-lane products of 16 weights and 16 activations: lane `l` holds the two products
/// of elements `l` and `l + 8`.
#[inline]
#[target_feature(enable = "neon")]
fn products16(q: int8x16_t, y: int8x16_t) -> int16x8_t {
    vmlal_high_s8(vmull_s8(vget_low_s8(q), vget_low_s8(y)), q, y)
}

/// The activation quants `y[16k..16k + 16]` of a Q8_K block.
#[inline]
#[target_feature(enable = "neon")]
fn act16(y: &[u8], k: usize) -> int8x16_t {
    load_u8_as_i8(arr(y, Q8K_QS + 16 * k))
}

/// The Q8_K scale.
#[inline(always)]
fn act_d(y: &[u8]) -> f32 {
    f32::from_le_bytes(*arr(y, 0))
}

/// `sums[l] += d · lanes[l]` for the eight f32 lane totals (not fused, as the reference).
#[inline]
#[target_feature(enable = "neon")]
fn add_lanes(sums: &mut [float32x4_t; 2], lanes: Lanes, d: f32) {
    sums[0] = vaddq_f32(sums[0], vmulq_n_f32(vcvtq_f32_s32(lanes.0), d));
    sums[1] = vaddq_f32(sums[1], vmulq_n_f32(vcvtq_f32_s32(lanes.1), d));
}

/// `sumf + sums[0] + … + sums[7]`, left to right as the reference adds them.
#[inline]
#[target_feature(enable = "neon")]
fn finish(mut sumf: f32, sums: [float32x4_t; 2]) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 writable f32, two vectors' worth.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), sums[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), sums[1]);
    }
    for s in lanes {
        sumf += s;
    }
    sumf
}

/// Q4_K/Q5_K's 6-bit scales and mins from their 12 packed bytes, all eight at once
/// (the same unpacking as `get_scale_min_k4`, done on 32-bit words as ggml does).
#[inline(always)]
fn scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes(*arr(s, 4 * i));
    let (a0, a1, a2) = (w(0), w(1), w(2));
    let sc = [a0 & LOW6, (a2 & LOW4) | (((a0 >> 6) & LOW2) << 4)];
    let mn = [a1 & LOW6, ((a2 >> 4) & LOW4) | (((a1 >> 6) & LOW2) << 4)];
    let bytes = |v: [u32; 2]| {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&v[0].to_le_bytes());
        out[4..].copy_from_slice(&v[1].to_le_bytes());
        out
    };
    (bytes(sc), bytes(mn))
}

/// `Σ_j bsums[j] · mins[j / 2]` in i32, for the minimum term of Q4_K/Q5_K.
#[inline]
#[target_feature(enable = "neon")]
fn bsums_dot_mins(y: &[u8], mins: &[u8; 8]) -> i32 {
    let b0 = vreinterpretq_s16_u8(load_u8(arr(y, Q8K_BSUMS)));
    let b1 = vreinterpretq_s16_u8(load_u8(arr(y, Q8K_BSUMS + 16)));
    let m = vreinterpretq_s16_u16(vmovl_u8(super::simd::load_u8x8(mins)));
    // bsums j and j + 1 share min j / 2: repeat each min twice.
    let (m0, m1) = (vzip1q_s16(m, m), vzip2q_s16(m, m));
    let acc = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
    let acc = vmlal_high_s16(acc, b0, m0);
    let acc = vmlal_s16(acc, vget_low_s16(b1), vget_low_s16(m1));
    vaddvq_s32(vmlal_high_s16(acc, b1, m1))
}

/// The shared body of Q4_K and Q5_K: `quants(x, c)` gives the four 16-byte vectors of
/// 64-element chunk `c` (sub-blocks `2c` and `2c + 1`, two vectors each) as 0..32 values.
#[inline]
#[target_feature(enable = "neon")]
fn dot_k4_like(
    w: &[u8],
    a: &[u8],
    wb: usize,
    what: &str,
    quants: impl Fn(&[u8], usize) -> [int8x16_t; 4],
) -> f32 {
    let mut sums = [vdupq_n_f32(0.0); 2];
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, wb, a, what) {
        let (scales, mins) = scales_mins_k4(arr(x, 4));
        let sumi = bsums_dot_mins(y, &mins);
        let mut lanes = Lanes::zero();
        for c in 0..QK_K / 64 {
            let q = quants(x, c);
            for (h, pair) in q.chunks_exact(2).enumerate() {
                let sub = 2 * c + h;
                let p = vaddq_s16(
                    products16(pair[0], act16(y, 2 * sub)),
                    products16(pair[1], act16(y, 2 * sub + 1)),
                );
                lanes = lanes.add_scaled(p, scales[sub] as i16);
            }
        }
        add_lanes(&mut sums, lanes, f16_le(*arr(x, 0)) * act_d(y));
        let dmin = f16_le(*arr(x, 2)) * act_d(y);
        sumf -= dmin * sumi as f32;
    }
    finish(sumf, sums)
}

/// Q4_K weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    // Chunk c: 32 bytes at 16 + 32c; low nibbles are sub-block 2c, high ones 2c + 1.
    dot_k4_like(w, a, Q4_K, "Q4_K", |x, c| {
        let m4 = vdupq_n_u8(0x0F);
        let v0 = load_u8(arr(x, 16 + 32 * c));
        let v1 = load_u8(arr(x, 32 + 32 * c));
        [
            vreinterpretq_s8_u8(vandq_u8(v0, m4)),
            vreinterpretq_s8_u8(vandq_u8(v1, m4)),
            vreinterpretq_s8_u8(vshrq_n_u8::<4>(v0)),
            vreinterpretq_s8_u8(vshrq_n_u8::<4>(v1)),
        ]
    })
}

/// Q5_K weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    // As Q4_K with `qs` at 48; bit 2c of qh[l] tops element l of sub-block 2c, bit 2c + 1
    // element l of sub-block 2c + 1.
    dot_k4_like(w, a, Q5_K, "Q5_K", |x, c| {
        let m4 = vdupq_n_u8(0x0F);
        let one = vdupq_n_u8(1);
        let v0 = load_u8(arr(x, 48 + 32 * c));
        let v1 = load_u8(arr(x, 64 + 32 * c));
        // qh[0..16] and qh[16..32] shifted right by 2c (a negative `ushl` shift).
        let down = vdupq_n_s8(-2 * c as i8);
        let h0 = vshlq_u8(load_u8(arr(x, 16)), down);
        let h1 = vshlq_u8(load_u8(arr(x, 32)), down);
        let top = |h: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(h, one));
        [
            vorrq_u8(vandq_u8(v0, m4), top(h0)),
            vorrq_u8(vandq_u8(v1, m4), top(h1)),
            vorrq_u8(vshrq_n_u8::<4>(v0), top(vshrq_n_u8::<1>(h0))),
            vorrq_u8(vshrq_n_u8::<4>(v1), top(vshrq_n_u8::<1>(h1))),
        ]
        .map(|v| vreinterpretq_s8_u8(v))
    })
}

/// Q6_K weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    // Layout: ql[128] at 0, qh[64] at 128, i8 scales[16] at 192, f16 d at 208.
    let m4 = vdupq_n_u8(0x0F);
    let m3 = vdupq_n_u8(0x03);
    let m32 = vdupq_n_s8(32);
    let mut sums = [vdupq_n_f32(0.0); 2];
    for (x, y) in blocks(w, Q6_K, a, "Q6_K") {
        let mut lanes = Lanes::zero();
        for half in 0..2 {
            // 128 elements: ql[64 * half..][..64], qh[32 * half..][..32].
            let ql = |k: usize| load_u8(arr(x, 64 * half + 16 * k));
            let qh = |k: usize| load_u8(arr(x, 128 + 32 * half + 16 * k));
            let (l0, l1, l2, l3) = (ql(0), ql(1), ql(2), ql(3));
            let (h0, h1) = (qh(0), qh(1));
            let top = |h: uint8x16_t, shift: i32| {
                let h = match shift {
                    0 => h,
                    2 => vshrq_n_u8::<2>(h),
                    4 => vshrq_n_u8::<4>(h),
                    _ => vshrq_n_u8::<6>(h),
                };
                vshlq_n_u8::<4>(vandq_u8(h, m3))
            };
            // Element order: 16-vectors for elements 0..16, 16..32, …, 112..128.
            let q = [
                vorrq_u8(vandq_u8(l0, m4), top(h0, 0)),
                vorrq_u8(vandq_u8(l1, m4), top(h1, 0)),
                vorrq_u8(vandq_u8(l2, m4), top(h0, 2)),
                vorrq_u8(vandq_u8(l3, m4), top(h1, 2)),
                vorrq_u8(vshrq_n_u8::<4>(l0), top(h0, 4)),
                vorrq_u8(vshrq_n_u8::<4>(l1), top(h1, 4)),
                vorrq_u8(vshrq_n_u8::<4>(l2), top(h0, 6)),
                vorrq_u8(vshrq_n_u8::<4>(l3), top(h1, 6)),
            ];
            for (k, q) in q.into_iter().enumerate() {
                let sub = 8 * half + k;
                let q = vsubq_s8(vreinterpretq_s8_u8(q), m32);
                let scale = x[192 + sub] as i8;
                lanes = lanes.add_scaled(products16(q, act16(y, sub)), scale as i16);
            }
        }
        add_lanes(&mut sums, lanes, f16_le(*arr(x, 208)) * act_d(y));
    }
    finish(0.0, sums)
}

/// Q8_K weights · Q8_K activations (`quant::q8_k::vec_dot`: one i32 sum per block).
#[target_feature(enable = "neon")]
pub fn dot_q8_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q8_K, a, "Q8_K") {
        let mut acc = vdupq_n_s32(0);
        for k in 0..QK_K / 16 {
            acc = dot_i8(acc, act16(x, k), act16(y, k));
        }
        sumf += vaddvq_s32(acc) as f32 * (act_d(x) * act_d(y));
    }
    sumf
}

/// `Σ_j bsums[j] · m[j]` in i32 for sixteen per-sub-block values `m` (Q2_K's mins).
#[inline]
#[target_feature(enable = "neon")]
fn bsums_dot16(y: &[u8], m: uint8x16_t) -> i32 {
    let b0 = vreinterpretq_s16_u8(load_u8(arr(y, Q8K_BSUMS)));
    let b1 = vreinterpretq_s16_u8(load_u8(arr(y, Q8K_BSUMS + 16)));
    let m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
    let m1 = vreinterpretq_s16_u16(vmovl_high_u8(m));
    let acc = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
    let acc = vmlal_high_s16(acc, b0, m0);
    let acc = vmlal_s16(acc, vget_low_s16(b1), vget_low_s16(m1));
    vaddvq_s32(vmlal_high_s16(acc, b1, m1))
}

/// Q2_K weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_q2_k(w: &[u8], a: &[u8]) -> f32 {
    // Layout: scales[16] at 0 (low nibble scale, high nibble min), qs[64] at 16, f16 d at
    // 80, f16 dmin at 82. Element 128n + 32j + l is bits 2j..2j+2 of qs[32n + l].
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, Q2_K, a, "Q2_K") {
        let sc = load_u8(arr(x, 0));
        let summs = bsums_dot16(y, vshrq_n_u8::<4>(sc));
        let scales: [u8; 16] = std::array::from_fn(|s| x[s] & 0xF);
        let mut lanes = Lanes::zero();
        for n in 0..2 {
            let v0 = load_u8(arr(x, 16 + 32 * n));
            let v1 = load_u8(arr(x, 32 + 32 * n));
            for j in 0..4 {
                let down = vdupq_n_s8(-2 * j as i8);
                let q0 = vandq_u8(vshlq_u8(v0, down), m3);
                let q1 = vandq_u8(vshlq_u8(v1, down), m3);
                let sub = 8 * n + 2 * j;
                for (k, q) in [q0, q1].into_iter().enumerate() {
                    let p = products16(vreinterpretq_s8_u8(q), act16(y, sub + k));
                    lanes = lanes.add_scaled(p, scales[sub + k] as i16);
                }
            }
        }
        let isum = vaddvq_s32(vaddq_s32(lanes.0, lanes.1));
        let dall = act_d(y) * f16_le(*arr(x, 80));
        let dmin = act_d(y) * f16_le(*arr(x, 82));
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K's sixteen 6-bit scales from their 12 packed bytes (before the -32 offset).
#[inline(always)]
fn scales_k3(s: &[u8; 12]) -> [u8; 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        low | (high << 4)
    })
}

/// Q3_K weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_q3_k(w: &[u8], a: &[u8]) -> f32 {
    // Layout: hmask[32] at 0, qs[64] at 32, scales[12] at 96, f16 d at 108. Element
    // 128n + 32j + l is bits 2j..2j+2 of qs[32n + l], minus 4 unless bit 4n + j of
    // hmask[l] is set.
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let mut sums = [vdupq_n_f32(0.0); 2];
    for (x, y) in blocks(w, Q3_K, a, "Q3_K") {
        let scales = scales_k3(arr(x, 96));
        let (h0, h1) = (load_u8(arr(x, 0)), load_u8(arr(x, 16)));
        let mut lanes = Lanes::zero();
        for n in 0..2 {
            let v0 = load_u8(arr(x, 32 + 32 * n));
            let v1 = load_u8(arr(x, 48 + 32 * n));
            for j in 0..4 {
                let down = vdupq_n_s8(-2 * j as i8);
                let bit = vdupq_n_u8(1 << (4 * n + j));
                let q = |v: uint8x16_t, h: uint8x16_t| {
                    let low = vandq_u8(vshlq_u8(v, down), m3);
                    let high = vandq_u8(vtstq_u8(h, bit), four);
                    vsubq_s8(
                        vreinterpretq_s8_u8(vorrq_u8(low, high)),
                        vreinterpretq_s8_u8(four),
                    )
                };
                let sub = 8 * n + 2 * j;
                for (k, q) in [q(v0, h0), q(v1, h1)].into_iter().enumerate() {
                    let scale = scales[sub + k] as i16 - 32;
                    lanes = lanes.add_scaled(products16(q, act16(y, sub + k)), scale);
                }
            }
        }
        add_lanes(&mut sums, lanes, f16_le(*arr(x, 108)) * act_d(y));
    }
    finish(0.0, sums)
}

/// IQ4_XS weights · Q8_K activations.
#[target_feature(enable = "neon")]
pub fn dot_iq4_xs(w: &[u8], a: &[u8]) -> f32 {
    // Layout: f16 d at 0, u16 scales_h at 2, scales_l[4] at 4, qs[128] at 8. Sub-block ib
    // (32 elements) has nibbles qs[16ib..16ib + 16] (low: elements 0..16, high: 16..32)
    // and 6-bit scale (low nibble ib of scales_l) | (bits 2ib..2ib+2 of scales_h) << 4.
    let book = load_i8(&KVALUES_IQ4NL);
    let m4 = vdupq_n_u8(0x0F);
    let mut sumf = 0.0f32;
    for (x, y) in blocks(w, IQ4_XS, a, "IQ4_XS") {
        let d4d8 = f16_le(*arr(x, 0)) * act_d(y);
        let h = u16::from_le_bytes(*arr(x, 2));
        for ib in 0..QK_K / 32 {
            let low = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF;
            let ls = (low as i32 | (((h >> (2 * ib)) & 3) as i32) << 4) - 32;
            let v = load_u8(arr(x, 8 + 16 * ib));
            let q0 = vqtbl1q_s8(book, vandq_u8(v, m4));
            let q1 = vqtbl1q_s8(book, vshrq_n_u8::<4>(v));
            let acc = dot_i8(vdupq_n_s32(0), q0, act16(y, 2 * ib));
            let sumi = vaddvq_s32(dot_i8(acc, q1, act16(y, 2 * ib + 1)));
            let dl = d4d8 * ls as f32;
            sumf += dl * sumi as f32;
        }
    }
    sumf
}
