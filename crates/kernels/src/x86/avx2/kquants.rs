//! The k-quants Q4_K, Q5_K and Q6_K, and IQ4_XS, against Q8_K activations.
//!
//! A super-block of 256 weights is one exact i32 dot (sub-block scales applied with
//! `madd` in integers) plus the minimum term, which needs only Q8_K's per-16 sums
//! (`bsums`). Floats enter once per super-block, as in the reference.

use core::arch::x86_64::*;

use super::util::{f16_at, f16_splat, hsum_ps};

/// Bytes of a Q8_K block: f32 `d`, 256 quants, 16 i16 `bsums`.
pub(in crate::x86) const Q8K: usize = 292;
/// Offset of the quants in a Q8_K block.
pub(in crate::x86) const Q8K_QS: usize = 4;
/// Offset of `bsums` in a Q8_K block.
pub(in crate::x86) const Q8K_BSUMS: usize = 260;

/// Q4_K/Q5_K's 12 packed bytes of 6-bit scales and mins, unpacked as in ggml's
/// `get_scale_min_k4`: bytes 0..8 of the result are the eight scales, 8..16 the mins.
#[inline(always)]
pub(in crate::x86) fn unpack_scales_mins(p: &[u8; 12]) -> [u32; 4] {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let q = [
        u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
        u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
        u32::from_le_bytes([p[8], p[9], p[10], p[11]]),
    ];
    // Sub-blocks 0..4 keep their 6 bits in bytes 0..4 (scales) and 4..8 (mins); 4..8 take
    // 4 bits from bytes 8..12 and their top 2 bits from the top of bytes 0..8.
    [
        q[0] & LOW6,
        (q[2] & LOW4) | (((q[0] >> 6) & LOW2) << 4),
        q[1] & LOW6,
        ((q[2] >> 4) & LOW4) | (((q[1] >> 6) & LOW2) << 4),
    ]
}

/// [`unpack_scales_mins`] in vector registers, from the 16 bytes at `p` (the 12 packed
/// bytes and 4 more, ignored): the same 16 bytes, as one register. Two shuffles and
/// four logic operations, where the scalar version takes a dozen general-register
/// operations and three inserts to reach a vector.
///
/// # Safety
/// The CPU has AVX2, and `p` is valid for reading 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(in crate::x86) unsafe fn scales_mins_128(p: *const u8) -> __m128i {
    let q = _mm_loadu_si128(p as *const __m128i);
    // Dwords [q0, q2, q1, q2] for the low bits, [0, q0, 0, q1] for the top two bits of
    // sub-blocks 4..8 (bits 6..8 of q0's and q1's bytes, moved to bits 4..6).
    let low = _mm_shuffle_epi8(
        q,
        _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11),
    );
    let top = _mm_shuffle_epi8(
        q,
        _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7),
    );
    let low = _mm_and_si128(
        _mm_srlv_epi32(low, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    let top = _mm_and_si128(_mm_srli_epi32::<2>(top), _mm_set1_epi8(0x30));
    _mm_or_si128(low, top)
}

/// Reads the Q8_K block scale.
#[inline(always)]
pub(in crate::x86) unsafe fn q8k_d(y: *const u8) -> f32 {
    (y as *const f32).read_unaligned()
}

/// A vector holding i16 lane `k` of `v` (within each 128-bit half) in every i16 lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn splat_i16_lane(v: __m256i, k: usize) -> __m256i {
    let lo = (2 * k) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(lo | ((lo + 1) << 8)))
}

/// Q6_K's 16 sub-block scales as i16, the even ones in the low 128 bits and the odd ones
/// in the high: each 32 quants take scales 2m and 2m + 1 (one per 128-bit half), which
/// [`splat_i16_lane`]`(pairs, m)` then broadcasts in one in-lane shuffle, where picking
/// and widening them for every 32 quants took two operations (decode 3-6 % faster on
/// the R1-1.5B shape at this level, Zen 4).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q6k_scale_pairs(scales: __m128i) -> __m256i {
    let evens_odds = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, evens_odds))
}

/// The minimum term of Q4_K/Q5_K, `Σ min[s] * Σ a over sub-block s`, as 4 i32 partial
/// sums: `mins` holds the eight mins as i16, the pairs of `bsums` add up to sub-blocks.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(in crate::x86) unsafe fn mins_term(mins: __m128i, y: *const u8) -> __m128i {
    let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
    let per32 = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    );
    _mm_madd_epi16(mins, per32)
}

/// Sum of the four lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(in crate::x86) unsafe fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Q4_K · Q8_K: weights `d * scale[s] * q - dmin * min[s]` in 8 sub-blocks of 32.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` Q4_K blocks (144 bytes)
/// and `a` `nb` Q8_K blocks (292 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(144 * i), a.add(Q8K * i));
        let yd = q8k_d(y);
        let d = _mm256_set1_ps(yd * f16_at(x));
        let dmin = _mm_set1_ps(-yd * f16_at(x.add(2)));
        let u = unpack_scales_mins(&*(x.add(4) as *const [u8; 12]));
        let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let mins = _mm256_extracti128_si256::<1>(scales_mins);
        acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(mins_term(mins, y)), acc_m);

        let scales = _mm256_castsi256_si128(scales_mins);
        let scales = _mm256_set_m128i(scales, scales);
        let (qs, yq) = (x.add(16), y.add(Q8K_QS));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            // 32 bytes hold sub-block 2j in their low nibbles and 2j+1 in their high ones.
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            let y_lo = _mm256_loadu_si256(yq.add(64 * j) as *const __m256i);
            let y_hi = _mm256_loadu_si256(yq.add(64 * j + 32) as *const __m256i);
            let p_lo = _mm256_madd_epi16(
                splat_i16_lane(scales, 2 * j),
                _mm256_maddubs_epi16(lo, y_lo),
            );
            let p_hi = _mm256_madd_epi16(
                splat_i16_lane(scales, 2 * j + 1),
                _mm256_maddubs_epi16(hi, y_hi),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// Q5_K · Q8_K: Q4_K with a fifth bit per weight; bit `s` of `qh[l]` belongs to element
/// `l` of sub-block `s`.
///
/// # Safety
/// As [`dot_q4_k`], with Q5_K blocks (176 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(176 * i), a.add(Q8K * i));
        let yd = q8k_d(y);
        let d = _mm256_set1_ps(yd * f16_at(x));
        let dmin = _mm_set1_ps(-yd * f16_at(x.add(2)));
        let u = unpack_scales_mins(&*(x.add(4) as *const [u8; 12]));
        let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let mins = _mm256_extracti128_si256::<1>(scales_mins);
        acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(mins_term(mins, y)), acc_m);

        let scales = _mm256_castsi256_si128(scales_mins);
        let scales = _mm256_set_m128i(scales, scales);
        let mut hbits = _mm256_loadu_si256(x.add(16) as *const __m256i);
        let (qs, yq) = (x.add(48), y.add(Q8K_QS));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            // Shifting 16-bit lanes is safe here: only bit 0 of each byte is kept, and
            // the bits a shift brings in from the neighbouring byte land above it.
            let h_lo = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one));
            let h_hi = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(hbits), one));
            hbits = _mm256_srli_epi16::<2>(hbits);
            let lo = _mm256_or_si256(_mm256_and_si256(bits, m4), h_lo);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4), h_hi);
            let y_lo = _mm256_loadu_si256(yq.add(64 * j) as *const __m256i);
            let y_hi = _mm256_loadu_si256(yq.add(64 * j + 32) as *const __m256i);
            let p_lo = _mm256_madd_epi16(
                splat_i16_lane(scales, 2 * j),
                _mm256_maddubs_epi16(lo, y_lo),
            );
            let p_hi = _mm256_madd_epi16(
                splat_i16_lane(scales, 2 * j + 1),
                _mm256_maddubs_epi16(hi, y_hi),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// Q6_K · Q8_K: weights `d * scale[s] * (q - 32)`, 16 sub-blocks of 16 with signed 8-bit
/// scales; q has 4 bits in `ql` and 2 in `qh`.
///
/// The quants are used unsigned (0..64) and the `- 32` is applied once per sub-block
/// through `bsums`: `Σ scale·(q-32)·a = Σ scale·q·a - 32·Σ scale·bsum`, both exact.
///
/// # Safety
/// As [`dot_q4_k`], with Q6_K blocks (210 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(210 * i), a.add(Q8K * i));
        let d = _mm256_mul_ps(_mm256_set1_ps(q8k_d(y)), f16_splat(x.add(208)));
        let scales = _mm_loadu_si128(x.add(192) as *const __m128i);
        let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
        let offset = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), bsums);
        let pairs = q6k_scale_pairs(scales);
        let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
        for h in 0..2 {
            // Each half of 128 weights: ql[64h..64h+64] and qh[32h..32h+32].
            let ql = x.add(64 * h);
            let qh = _mm256_loadu_si256(x.add(128 + 32 * h) as *const __m256i);
            let ql0 = _mm256_loadu_si256(ql as *const __m256i);
            let ql1 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xC0u8 as i8))),
                ),
            ];
            let yq = y.add(Q8K_QS + 128 * h);
            for (k, &qk) in q.iter().enumerate() {
                let yk = _mm256_loadu_si256(yq.add(32 * k) as *const __m256i);
                // Elements 0..16 of these 32 use scale 8h+2k, elements 16..32 the next.
                let sc = splat_i16_lane(pairs, 4 * h + k);
                let p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(qk, yk));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// IQ4_XS · Q8_K: `d * (ls - 32) * KVALUES_IQ4NL[q]` in 8 sub-blocks of 32, with 6-bit
/// sub-block scales `ls` split into `scales_l` (low 4 bits) and `scales_h` (high 2).
///
/// The reference applies each sub-block's scale in float; here the scaled sub-block
/// sums are added in integers first (exact), and the block scale is applied once.
///
/// # Safety
/// As [`dot_q4_k`], with IQ4_XS blocks (136 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_xs(w: *const u8, a: *const u8, nb: usize) -> f32 {
    use super::util::nibbles_32;
    use crate::quant::blocks::KVALUES_IQ4NL;
    let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(table, table);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(136 * i), a.add(Q8K * i));
        let d = _mm256_set1_ps(q8k_d(y) * f16_at(x));
        let scales_h = (x.add(2) as *const u16).read_unaligned() as i32;
        let (qs, yq) = (x.add(8), y.add(Q8K_QS));
        let mut sumi = _mm256_setzero_si256();
        for ib in 0..8 {
            let low = (*x.add(4 + ib / 2) >> (4 * (ib % 2))) as i32 & 0xF;
            let ls = low | (((scales_h >> (2 * ib)) & 3) << 4);
            // Codebook values reach ±127, and activations stay within -127..=127, so the
            // sign trick's pair sums (at most 2·127·127) fit in i16.
            let v = _mm256_shuffle_epi8(table, nibbles_32(qs.add(16 * ib)));
            let yv = _mm256_loadu_si256(yq.add(32 * ib) as *const __m256i);
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
            let p = _mm256_madd_epi16(p, _mm256_set1_epi16((ls - 32) as i16));
            sumi = _mm256_add_epi32(sumi, p);
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector unpacking against the scalar one, on every bit of every byte.
    #[test]
    fn scales_mins_128_equals_unpack_scales_mins() {
        if !crate::dispatch::Level::Avx2.is_supported() {
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..2000 {
            let mut p = [0u8; 16];
            for (k, b) in p.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = match case {
                    0 => 0xff,
                    1 => 1 << (k % 8),
                    _ => seed as u8,
                };
            }
            let want = unpack_scales_mins(p[..12].try_into().unwrap());
            let mut got = [0u32; 4];
            // SAFETY: AVX2 was detected; `p` holds 16 bytes and `got` 16.
            unsafe { _mm_storeu_si128(got.as_mut_ptr().cast(), scales_mins_128(p.as_ptr())) };
            assert_eq!(got, want, "{p:02x?}");
        }
    }
}
