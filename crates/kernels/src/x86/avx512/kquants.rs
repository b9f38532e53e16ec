//! Q4_K, Q5_K and Q6_K against Q8_K activations, 64 weights per 512-bit step.
//!
//! The same exact integer scheme as the AVX2 kernels (`maddubs`, then `madd` with the
//! sub-block scales), twice as wide: a Q4_K/Q5_K step covers two 32-weight sub-blocks, a
//! Q6_K step four 16-weight ones. VNNI would not help here: `vpdpbusd` fuses the `madd`
//! with ones, but the scales still need their own multiply.

use core::arch::x86_64::*;

use super::super::avx2::kquants::{
    hsum_ps128, mins_term, q8k_d, unpack_scales_mins, Q8K, Q8K_BSUMS, Q8K_QS,
};
use super::super::avx2::util::f16_at;

/// Two 256-bit halves as one vector, `lo` in the low lanes.
#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Permutation indices that put i16 lane `first + l / group` in lane `l` of 32.
const fn lanes(first: i16, group: usize) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut l = 0;
    while l < 32 {
        idx[l] = first + (l / group) as i16;
        l += 1;
    }
    idx
}

/// For Q4_K/Q5_K step j: scale 2j for the first 16 i16 lanes, 2j+1 for the rest.
static SUB32: [[i16; 32]; 4] = [lanes(0, 16), lanes(2, 16), lanes(4, 16), lanes(6, 16)];
/// For Q6_K step c (0..4): scales 4c..4c+4, one per 8 i16 lanes (16 weights).
static SUB16: [[i16; 32]; 4] = [lanes(0, 8), lanes(4, 8), lanes(8, 8), lanes(12, 8)];

/// Loads a permutation table row.
#[inline(always)]
unsafe fn idx(row: &[i16; 32]) -> __m512i {
    _mm512_loadu_si512(row.as_ptr() as *const _)
}

/// The shared loop of Q4_K and Q5_K; `high_bits` is the Q5_K fifth-bit array, if any.
///
/// # Safety
/// As the kernels: AVX-512 F/BW/VL, AVX2, FMA, F16C; `nb` blocks of `bytes` each in `w`
/// and `nb` Q8_K blocks in `a`.
#[inline(always)]
unsafe fn dot_q4_q5<const Q5: bool>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let bytes = if Q5 { 176 } else { 144 };
    let m4 = _mm512_set1_epi8(0x0F);
    let one = _mm512_set1_epi8(1);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(bytes * i), a.add(Q8K * i));
        let yd = q8k_d(y);
        let d = _mm512_set1_ps(yd * f16_at(x));
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
        let scales = _mm512_castsi256_si512(scales_mins);

        // Q5_K: bit 2j of qh[l] tops sub-block 2j, bit 2j+1 sub-block 2j+1; the upper
        // half of `hbits` is pre-shifted by one so both halves use bit 0 at step j.
        let mut hbits = if Q5 {
            let h = _mm256_loadu_si256(x.add(16) as *const __m256i);
            join(h, _mm256_srli_epi16::<1>(h))
        } else {
            _mm512_setzero_si512()
        };
        let (qs, yq) = (x.add(if Q5 { 48 } else { 16 }), y.add(Q8K_QS));
        let mut sumi = _mm512_setzero_si512();
        for (j, sub) in SUB32.iter().enumerate() {
            // Low nibbles are sub-block 2j, high nibbles 2j+1: 64 consecutive weights.
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let mut q = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
            if Q5 {
                let top = _mm512_slli_epi16::<4>(_mm512_and_si512(hbits, one));
                q = _mm512_or_si512(q, top);
                hbits = _mm512_srli_epi16::<2>(hbits);
            }
            let yv = _mm512_loadu_si512(yq.add(64 * j) as *const _);
            let sc = _mm512_permutexvar_epi16(idx(sub), scales);
            let p = _mm512_madd_epi16(sc, _mm512_maddubs_epi16(q, yv));
            sumi = _mm512_add_epi32(sumi, p);
        }
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) + hsum_ps128(acc_m)
}

/// Rows per multi-row call (see `q32::ROWS`, the same trade-off).
pub const ROWS: usize = 4;

/// Groups of [`ROWS`] rows ahead that the multi-row kernel prefetches (four interleaved
/// row streams defeat the hardware prefetchers; see `q32`).
const PREFETCH_GROUPS: usize = 2;

/// [`dot_q4_q5`] for [`ROWS`] rows `stride` bytes apart: each row's operations are the
/// single-row kernel's in the same order, so `out[r]` equals its dot bit for bit. The
/// rows share the activation quants (four 512-bit loads per block), the per-32 sums of
/// `bsums` for the minimum term and the activation scale.
///
/// # Safety
/// As [`dot_q4_q5`], for each of the [`ROWS`] rows at `w + r·stride`.
#[inline(always)]
unsafe fn dot_rows_q4_q5<const Q5: bool>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let bytes = if Q5 { 176 } else { 144 };
    let m4 = _mm512_set1_epi8(0x0F);
    let one = _mm512_set1_epi8(1);
    let mut acc = [_mm512_setzero_ps(); ROWS];
    let mut acc_m = [_mm_setzero_ps(); ROWS];
    for i in 0..nb {
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + bytes * i));
        for k in 0..(ROWS * bytes).div_ceil(64) + 1 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let y = a.add(Q8K * i);
        let yd = q8k_d(y);
        let yq = y.add(Q8K_QS);
        let yv = [0, 1, 2, 3].map(|j| _mm512_loadu_si512(yq.add(64 * j) as *const _));
        for r in 0..ROWS {
            let x = w.add(r * stride + bytes * i);
            let d = _mm512_set1_ps(yd * f16_at(x));
            let dmin = _mm_set1_ps(-yd * f16_at(x.add(2)));
            let u = unpack_scales_mins(&*(x.add(4) as *const [u8; 12]));
            let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
                u[3] as i32,
                u[2] as i32,
                u[1] as i32,
                u[0] as i32,
            ));
            let mins = _mm256_extracti128_si256::<1>(scales_mins);
            acc_m[r] = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(mins_term(mins, y)), acc_m[r]);
            let scales = _mm512_castsi256_si512(scales_mins);
            let mut hbits = if Q5 {
                let h = _mm256_loadu_si256(x.add(16) as *const __m256i);
                join(h, _mm256_srli_epi16::<1>(h))
            } else {
                _mm512_setzero_si512()
            };
            let qs = x.add(if Q5 { 48 } else { 16 });
            let mut sumi = _mm512_setzero_si512();
            for (j, sub) in SUB32.iter().enumerate() {
                let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                let mut q = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
                if Q5 {
                    let top = _mm512_slli_epi16::<4>(_mm512_and_si512(hbits, one));
                    q = _mm512_or_si512(q, top);
                    hbits = _mm512_srli_epi16::<2>(hbits);
                }
                let sc = _mm512_permutexvar_epi16(idx(sub), scales);
                let p = _mm512_madd_epi16(sc, _mm512_maddubs_epi16(q, yv[j]));
                sumi = _mm512_add_epi32(sumi, p);
            }
            acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[r]);
        }
    }
    let mut out = [0.0; ROWS];
    for r in 0..ROWS {
        out[r] = _mm512_reduce_add_ps(acc[r]) + hsum_ps128(acc_m[r]);
    }
    out
}

/// Q4_K · Q8_K for [`ROWS`] rows `stride` bytes apart.
///
/// # Safety
/// As [`dot_q4_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q4_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<false>(w, stride, a, nb)
}

/// Q5_K · Q8_K for [`ROWS`] rows `stride` bytes apart.
///
/// # Safety
/// As [`dot_q5_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q5_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<true>(w, stride, a, nb)
}

/// Q4_K · Q8_K.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C; `w` must hold `nb` Q4_K
/// blocks (144 bytes) and `a` `nb` Q8_K blocks (292 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<false>(w, a, nb)
}

/// Q5_K · Q8_K.
///
/// # Safety
/// As [`dot_q4_k`], with Q5_K blocks (176 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q5_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<true>(w, a, nb)
}

/// Q6_K · Q8_K: unsigned quants (0..64) with the `- 32` applied through `bsums`, as in
/// the AVX2 kernel.
///
/// # Safety
/// As [`dot_q4_k`], with Q6_K blocks (210 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(210 * i), a.add(Q8K * i));
        let d = _mm512_set1_ps(q8k_d(y) * f16_at(x.add(208)));
        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
        let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, bsums));
        let mut sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offset));
        let scales = _mm512_castsi256_si512(scales);
        for h in 0..2 {
            // 128 weights: ql[64h..64h+64] holds weights 0..64 in its low nibbles and
            // 64..128 in its high ones; qh[32h..32h+32] holds two bits for each of them,
            // bit pairs 0/1 for weights l, 2/3 for l+32, 4/5 for l+64, 6/7 for l+96.
            let ql = _mm512_loadu_si512(x.add(64 * h) as *const _);
            let qh = _mm256_loadu_si256(x.add(128 + 32 * h) as *const __m256i);
            let qh = join(qh, _mm256_srli_epi16::<2>(qh));
            let q_lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(qh, _mm512_set1_epi8(0x03))),
            );
            let q_hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh, _mm512_set1_epi8(0x30)),
            );
            let yq = y.add(Q8K_QS + 128 * h);
            for (c, q) in [q_lo, q_hi].into_iter().enumerate() {
                let yv = _mm512_loadu_si512(yq.add(64 * c) as *const _);
                let sc = _mm512_permutexvar_epi16(idx(&SUB16[2 * h + c]), scales);
                let p = _mm512_madd_epi16(sc, _mm512_maddubs_epi16(q, yv));
                sumi = _mm512_add_epi32(sumi, p);
            }
        }
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}
