//! Several tokens at once for the k-quants Q4_K, Q5_K and Q6_K at the AVX2 level: the
//! matrix products of batched decode, where a few sequences' activation rows meet every
//! weight row.
//!
//! A tile is one weight row against up to [`TOKENS`] activation rows: each super-block's
//! quants are decoded (nibbles and high bits split, sub-block scales unpacked and spread
//! over the lanes) once and meet every token's activations while in registers; only the
//! `maddubs`/`madd` that combine the two, and the token's own scale and `bsums` terms,
//! are done per token. One row per tile, because the decoded quants, their scales and
//! one i32 sum per token fill most of the sixteen 256-bit registers (two rows would
//! spill them, as holding the activations across rows did in `rows_k`).
//!
//! The contract is exact: `out[t][0]` equals the single-row kernel's dot of the row and
//! token `t` bit for bit. Each (row, token) pair's i32 lanes receive the single-row
//! kernel's products (with the same i16 pair sums, none of which can saturate), and its
//! float operations are that kernel's, in its order: the same `d_y · d_x` and
//! `-d_y · dmin_x`, one FMA per super-block into the pair's own accumulators, the same
//! reduction at the end. `tests/dot_tokens.rs` checks every kernel against the installed
//! single-row one.

use core::arch::x86_64::*;

use super::kquants::{
    hsum_ps128, q6k_scale_pairs, q8k_d, splat_i16_lane, unpack_scales_mins, Q8K, Q8K_BSUMS, Q8K_QS,
};
use super::rows_k::bsums_per32;
use super::util::{f16_at, f16_splat, hsum_ps};

/// Weight rows per tile (see the module doc).
pub const TILE_ROWS: usize = 1;

/// Tokens per tile: four i32 sums beside the decoded quants and scales.
pub const TOKENS: usize = 4;

/// `kquants::dot_q4_k` (`Q5 = false`) or `kquants::dot_q5_k` (`Q5 = true`) of the row at
/// `w` with `T` Q8_K rows `a_stride` bytes apart: `out[t]` is its dot with token `t`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` Q4_K (144-byte) or Q5_K
/// (176-byte) blocks, and each of the `T` rows at `a + t·a_stride` `nb` Q8_K blocks.
#[inline(always)]
unsafe fn dot_tokens_q4_q5<const Q5: bool, const T: usize>(
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [f32; T] {
    let bytes = if Q5 { 176 } else { 144 };
    let qs_at = if Q5 { 48 } else { 16 };
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    for i in 0..nb {
        let x = w.add(bytes * i);
        let (dx, dminx) = (f16_at(x), f16_at(x.add(2)));
        let u = unpack_scales_mins(&*(x.add(4) as *const [u8; 12]));
        let scales_mins = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let mins = _mm256_extracti128_si256::<1>(scales_mins);
        // Loops over the tokens, not `array::from_fn`: a closure's body does not inherit
        // the target features (every intrinsic in it would become a call).
        for (t, acc_m) in acc_m.iter_mut().enumerate() {
            let y = a.add(t * a_stride + Q8K * i);
            let dmin = _mm_set1_ps(-q8k_d(y) * dminx);
            let term = _mm_madd_epi16(mins, bsums_per32(y));
            *acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(term), *acc_m);
        }
        let scales = _mm256_castsi256_si128(scales_mins);
        let scales = _mm256_set_m128i(scales, scales);
        let mut hbits = if Q5 {
            _mm256_loadu_si256(x.add(16) as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let mut sumi = [_mm256_setzero_si256(); T];
        for j in 0..4 {
            // As in the single-row kernel: 32 bytes hold sub-block 2j in their low nibbles
            // and 2j+1 in their high ones, Q5_K's fifth bits are bits 2j, 2j+1 of `qh`.
            let bits = _mm256_loadu_si256(x.add(qs_at + 32 * j) as *const __m256i);
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            if Q5 {
                // Shifting 16-bit lanes is safe: only bit 0 of each byte is kept, and the
                // bits a shift brings in from the neighbouring byte land above it.
                let h_lo = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one));
                let h_hi =
                    _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<1>(hbits), one));
                hbits = _mm256_srli_epi16::<2>(hbits);
                lo = _mm256_or_si256(lo, h_lo);
                hi = _mm256_or_si256(hi, h_hi);
            }
            let (s_lo, s_hi) = (
                splat_i16_lane(scales, 2 * j),
                splat_i16_lane(scales, 2 * j + 1),
            );
            for (t, sumi) in sumi.iter_mut().enumerate() {
                let yq = a.add(t * a_stride + Q8K * i + Q8K_QS);
                let y_lo = _mm256_loadu_si256(yq.add(64 * j) as *const __m256i);
                let y_hi = _mm256_loadu_si256(yq.add(64 * j + 32) as *const __m256i);
                let p_lo = _mm256_madd_epi16(s_lo, _mm256_maddubs_epi16(lo, y_lo));
                let p_hi = _mm256_madd_epi16(s_hi, _mm256_maddubs_epi16(hi, y_hi));
                *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_set1_ps(q8k_d(a.add(t * a_stride + Q8K * i)) * dx);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[t]), *acc);
        }
    }
    let mut out = [0.0; T];
    for t in 0..T {
        out[t] = hsum_ps(acc[t]) + hsum_ps128(acc_m[t]);
    }
    out
}

/// `kquants::dot_q6_k` of the row at `w` with `T` Q8_K rows `a_stride` bytes apart:
/// `out[t]` is its dot with token `t`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` Q6_K blocks (210 bytes),
/// and each of the `T` rows at `a + t·a_stride` `nb` Q8_K blocks.
#[inline(always)]
unsafe fn dot_tokens_q6<const T: usize>(
    w: *const u8,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        let x = w.add(210 * i);
        let scales = _mm_loadu_si128(x.add(192) as *const __m128i);
        let scales16 = _mm256_cvtepi8_epi16(scales);
        let pairs = q6k_scale_pairs(scales);
        let mut sumi = [_mm256_setzero_si256(); T];
        for (t, sumi) in sumi.iter_mut().enumerate() {
            // The quants are used unsigned and the `- 32` taken off through `bsums`, as in
            // the single-row kernel.
            let y = a.add(t * a_stride + Q8K * i);
            let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
            let offset = _mm256_madd_epi16(scales16, bsums);
            *sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(offset));
        }
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
            for (k, &qk) in q.iter().enumerate() {
                // Elements 0..16 of these 32 use scale 8h+2k, elements 16..32 the next.
                let sc = splat_i16_lane(pairs, 4 * h + k);
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    let yq = a.add(t * a_stride + Q8K * i + Q8K_QS + 128 * h);
                    let yk = _mm256_loadu_si256(yq.add(32 * k) as *const __m256i);
                    let p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(qk, yk));
                    *sumi = _mm256_add_epi32(*sumi, p);
                }
            }
        }
        let dx = f16_splat(x.add(208));
        for (t, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_mul_ps(_mm256_set1_ps(q8k_d(a.add(t * a_stride + Q8K * i))), dx);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[t]), *acc);
        }
    }
    acc.map(|acc| hsum_ps(acc))
}

/// Defines the `#[target_feature]` several-tokens entry point of one format, with the
/// tile shape `dot_tokens_fn!` expects (one row per tile, so `stride` is not used).
macro_rules! tokens_kernel {
    ($name:ident, $tile:ident $(, $q5:expr)?; $what:literal) => {
        #[doc = concat!($what, " for the row at `w` and `n_tokens` (1..=[`TOKENS`]) Q8_K")]
        #[doc = "rows `a_stride` bytes apart: `out[t][0]` for `t < n_tokens` is the"]
        #[doc = "single-row dot of the row and token `t`."]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` weight blocks, and
        /// each of the `n_tokens` rows at `a + t·a_stride` `nb` Q8_K blocks.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(
            w: *const u8,
            _stride: usize,
            a: *const u8,
            a_stride: usize,
            nb: usize,
            n_tokens: usize,
        ) -> [[f32; TILE_ROWS]; TOKENS] {
            let mut out = [[0.0; TILE_ROWS]; TOKENS];
            let mut put = |sums: &[f32]| {
                for (o, &s) in out.iter_mut().zip(sums) {
                    o[0] = s;
                }
            };
            match n_tokens {
                0 => {}
                1 => put(&$tile::<$($q5,)? 1>(w, a, a_stride, nb)),
                2 => put(&$tile::<$($q5,)? 2>(w, a, a_stride, nb)),
                3 => put(&$tile::<$($q5,)? 3>(w, a, a_stride, nb)),
                _ => put(&$tile::<$($q5,)? TOKENS>(w, a, a_stride, nb)),
            }
            out
        }
    };
}

tokens_kernel!(dot_tokens_q4_k, dot_tokens_q4_q5, false; "Q4_K · Q8_K");
tokens_kernel!(dot_tokens_q5_k, dot_tokens_q4_q5, true; "Q5_K · Q8_K");
tokens_kernel!(dot_tokens_q6_k, dot_tokens_q6; "Q6_K · Q8_K");
