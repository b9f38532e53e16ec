//! Activation quantizers Q8_0, Q8_1 and Q8_K, byte-identical to the scalar references.
//!
//! Identity needs the same float operations in the same order: the block maximum is an
//! exact reduction, `x * id` is one IEEE multiply either way, and the two roundings are
//! reproduced exactly: Q8_0/Q8_1 round ties away from zero (C `roundf`), Q8_K rounds ties
//! to even (ggml's `nearest_int`), which is the CPU's default conversion mode.

use core::arch::x86_64::*;

/// Largest |x| over 8 vectors' worth of lanes, as a scalar.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// |v| lane by lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// `f32::round(v) as i8` lane by lane, as i32 lanes: ties away from zero (C `roundf`),
/// then Rust's saturating cast (NaN to 0, out-of-range values to -128 or 127).
///
/// `v - trunc(v)` is exact, so comparing it with 0.5 decides ties exactly, unlike the
/// `trunc(v + 0.5)` shortcut (wrong for the float just below 0.5).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn round_to_i8(v: __m256) -> __m256i {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let frac = abs_ps(_mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let step = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
    let r = _mm256_add_ps(t, _mm256_and_ps(up, step));
    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvttps_epi32(r)
}

/// ggml's `nearest_int(v)` lane by lane, bit for bit: adding 1.5·2²³ leaves the rounded
/// (ties to even) integer in the low mantissa bits. Doing it the same way, rather than
/// with `cvtps`, keeps even infinite and NaN products identical to the reference.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nearest_int(v: __m256) -> __m256i {
    let bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12_582_912.0)));
    _mm256_sub_epi32(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x0040_0000),
    )
}

/// Packs four vectors of i32, each already in -128..=127, into 32 bytes in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
    // The packs work within 128-bit halves, leaving the 4-lane groups in the order
    // 0 2 4 6 1 3 5 7; the permute puts them back.
    let ab = _mm256_packs_epi32(q[0], q[1]);
    let cd = _mm256_packs_epi32(q[2], q[3]);
    let abcd = _mm256_packs_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The low byte of each i32 of four vectors, 32 bytes in order: Rust's wrapping
/// `i32 as i8`, which the Q8_K reference applies.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn low_bytes(q: [__m256i; 4]) -> __m256i {
    // Mask each i32 to its low byte; the saturating packs then cannot saturate.
    let m = _mm256_set1_epi32(0xFF);
    let q = q.map(|v| _mm256_and_si256(v, m));
    let ab = _mm256_packus_epi32(q[0], q[1]);
    let cd = _mm256_packus_epi32(q[2], q[3]);
    let abcd = _mm256_packus_epi16(ab, cd);
    _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `x` rounded to the nearest IEEE half (ties to even), as little-endian bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16_bytes(x: f32) -> [u8; 2] {
    let h = _mm_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm_set_ss(x));
    (_mm_cvtsi128_si32(h) as u16).to_le_bytes()
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The reference's block maximum when NaNs are present: C's `MAX(amax, fabsf(v))` folded
/// in order, which a NaN resets (so the result depends on where the NaNs are). Rare
/// enough to leave scalar.
#[cold]
fn c_max_abs(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() })
}

/// Quantizes 32 values at `x` the Q8_0 way, writing `d` (f16) to `d_out` and the quants
/// to `q_out`; returns `(d, Σq)` for Q8_1.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_block32(x: *const f32, d_out: *mut u8, q_out: *mut u8) -> (f32, i32) {
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let m = _mm256_max_ps(
        _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
        _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
    );
    let nan = _mm256_or_ps(
        _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[1]),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v[2], v[3]),
        ),
        _mm256_cmp_ps::<_CMP_UNORD_Q>(m, m),
    );
    let amax = if _mm256_movemask_ps(nan) == 0 {
        hmax_ps(m)
    } else {
        c_max_abs(core::slice::from_raw_parts(x, 32))
    };
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let q = [
        round_to_i8(_mm256_mul_ps(v[0], id)),
        round_to_i8(_mm256_mul_ps(v[1], id)),
        round_to_i8(_mm256_mul_ps(v[2], id)),
        round_to_i8(_mm256_mul_ps(v[3], id)),
    ];
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(q[0], q[1]),
        _mm256_add_epi32(q[2], q[3]),
    ));
    (d_out as *mut [u8; 2]).write_unaligned(f16_bytes(d));
    _mm256_storeu_si256(q_out as *mut __m256i, pack_i8(q));
    (d, sum)
}

/// f32 → Q8_0 (34-byte blocks: f16 `d`, 32 quants).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` must hold `32 * nb` values and `out`
/// `34 * nb` bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: *const f32, out: *mut u8, nb: usize) {
    for i in 0..nb {
        let y = out.add(34 * i);
        q8_block32(x.add(32 * i), y, y.add(2));
    }
}

/// f32 → Q8_1 (36-byte blocks: f16 `d`, f16 `s = Σq · d`, 32 quants).
///
/// # Safety
/// As [`quantize_q8_0`], with `36 * nb` output bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: *const f32, out: *mut u8, nb: usize) {
    for i in 0..nb {
        let y = out.add(36 * i);
        let (d, sum) = q8_block32(x.add(32 * i), y, y.add(4));
        (y.add(2) as *mut [u8; 2]).write_unaligned(f16_bytes(sum as f32 * d));
    }
}

/// The totals of four groups, each given as eight i32 partial sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_sums(s: [__m256i; 4]) -> __m128i {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// f32 → Q8_K (292-byte blocks: f32 `d`, 256 quants, 16 i16 `bsums`).
///
/// The scale comes from the signed element of largest magnitude (the first one, on a
/// tie), `iscale = -127 / max`, quants `min(127, round_half_even(iscale * x))`.
///
/// # Safety
/// As [`quantize_q8_0`], with `256 * nb` values and `292 * nb` output bytes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: *const f32, out: *mut u8, nb: usize) {
    for i in 0..nb {
        let (xb, y) = (x.add(256 * i), out.add(292 * i));
        let mut m = _mm256_setzero_ps();
        for k in 0..32 {
            // Running maximum second, so NaNs are skipped (see q8_block32).
            m = _mm256_max_ps(abs_ps(_mm256_loadu_ps(xb.add(8 * k))), m);
        }
        let amax = hmax_ps(m);
        if amax == 0.0 {
            core::ptr::write_bytes(y, 0, 292);
            continue;
        }
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0;
        for k in 0..32 {
            let hit = _mm256_cmp_ps::<_CMP_EQ_OQ>(abs_ps(_mm256_loadu_ps(xb.add(8 * k))), target);
            let mask = _mm256_movemask_ps(hit);
            if mask != 0 {
                max = *xb.add(8 * k + mask.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let scale = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let mut groups = [_mm256_setzero_si256(); 16];
        for c in 0..8 {
            // 32 values: quantize, record two groups' partial sums, store as bytes.
            let q: [__m256i; 4] = core::array::from_fn(|k| {
                let v = _mm256_loadu_ps(xb.add(32 * c + 8 * k));
                _mm256_min_epi32(nearest_int(_mm256_mul_ps(v, scale)), cap)
            });
            // `bsums` add up the stored bytes, so sum the wrapped values.
            let b = q.map(|v| _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(v)));
            groups[2 * c] = _mm256_add_epi32(b[0], b[1]);
            groups[2 * c + 1] = _mm256_add_epi32(b[2], b[3]);
            _mm256_storeu_si256(y.add(4 + 32 * c) as *mut __m256i, low_bytes(q));
        }
        let s0 = group_sums([groups[0], groups[1], groups[2], groups[3]]);
        let s1 = group_sums([groups[4], groups[5], groups[6], groups[7]]);
        let s2 = group_sums([groups[8], groups[9], groups[10], groups[11]]);
        let s3 = group_sums([groups[12], groups[13], groups[14], groups[15]]);
        _mm_storeu_si128(y.add(260) as *mut __m128i, _mm_packs_epi32(s0, s1));
        _mm_storeu_si128(y.add(276) as *mut __m128i, _mm_packs_epi32(s2, s3));
        (y as *mut f32).write_unaligned(1.0 / iscale);
    }
}
