//! Several weight rows at once for the Q8_K-activation formats Q4_K, Q5_K and IQ4_XS at
//! the AVX2 level: the decode-time matrix-vector products, where each
//! activation vector meets every row of a weight matrix.
//!
//! Each kernel here is the single-row kernel of `kquants` for [`ROWS`] rows, which take
//! turns on each super-block: what depends on the activations only (their scale, and the
//! per-32 `bsums` the minimum terms need) is read once for all of them, each row keeps
//! its own accumulator, and the lines of the rows two groups ahead are prefetched. A
//! group's rows are read side by side, four interleaved streams that hardware
//! prefetchers follow badly: without the prefetches these kernels read 2-3 GiB/s from
//! DRAM instead of 7-18 (`examples/dot_speed --dram`, a shared Zen 4).
//!
//! What that buys at this level is small: the per-row work is the single-row kernel's,
//! which at 15-23 GiB/s in cache is near the DRAM rate. On 1536 columns Q4_K and IQ4_XS
//! read DRAM 5-10 % faster than row-by-row calls and Q5_K as fast; on 8960 columns
//! (ffn_down) Q4_K and Q5_K are 5-10 % slower (`dot_speed --dram`, medians of three on
//! a shared Zen 4). Q6_K has no kernel here: the same scheme (commit 2489fcf) was 6-12 %
//! slower in cache and up to 10 % slower from DRAM at both widths, so its rows go to the
//! single-row kernel one by one. Sharing more (the activation quants across rows, below)
//! cost more than it saved.
//!
//! Each row reads the activation quants from L1 itself (memory operands of `maddubs`):
//! holding them in registers across the rows, 64 weights at a time, left too few
//! registers for the rows' scales and sums, and the spills made the kernels 17-34 %
//! slower in cache (`examples/dot_speed`, Zen 4).
//!
//! The contract is exact: `out[r]` equals the single-row kernel's dot of row `r` bit for
//! bit. Each row's i32 lanes receive the same products as in the single-row kernel (with
//! the same i16 pair sums, none of which can saturate), and integer sums do not depend on
//! their order; its float operations are the single-row kernel's, in its order: the same
//! `d_y · d_x` products, one FMA per super-block into its own accumulator, the same
//! reduction at the end. `tests/dot_rows.rs` checks every kernel against the installed
//! single-row one, which `tests/simd_vs_scalar.rs` checks against the scalar reference.

use core::arch::x86_64::*;

use super::kquants::{hsum_ps128, q8k_d, scales_mins_128, splat_i16_lane, Q8K, Q8K_BSUMS, Q8K_QS};
use super::util::{f16_at, hsum_ps, nibbles_32};
use crate::quant::blocks::KVALUES_IQ4NL;

/// Rows per multi-row call, as for the 32-element formats (`q32::ROWS`) and the AVX-512
/// k-quant kernels.
pub const ROWS: usize = 4;

/// How many groups of [`ROWS`] rows ahead the kernels prefetch.
const PREFETCH_GROUPS: usize = 2;

/// How far ahead (bytes) a prefetch into L1 still pays; farther ones go to L2, as the
/// AVX-512 kernels found (`avx512::kquants::L1_AHEAD`): lines fetched two groups of long
/// rows ahead (40 KiB for ffn_down's 8960 columns of Q4_K) would be evicted from L1
/// before they are read.
const L1_AHEAD: usize = 8 << 10;

/// Prefetches `bytes` (plus one line) from `ahead`: into L1 when groups of [`ROWS`] rows
/// `stride` bytes apart, fetched [`PREFETCH_GROUPS`] groups ahead, are short enough for
/// the lines to stay there until read ([`L1_AHEAD`]), into L2 otherwise. Shared with the
/// 32-element multi-row kernels (`rows_q32`).
///
/// # Safety
/// Nothing to uphold: `ahead` may lie past the matrix, as a prefetch never dereferences
/// (or faults on) its address.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(ahead: *const u8, bytes: usize, stride: usize) {
    let near = ROWS * stride * PREFETCH_GROUPS <= L1_AHEAD;
    for k in 0..bytes.div_ceil(64) + 1 {
        let p = ahead.wrapping_add(64 * k) as *const i8;
        if near {
            _mm_prefetch::<_MM_HINT_T0>(p);
        } else {
            _mm_prefetch::<_MM_HINT_T1>(p);
        }
    }
}

/// Prefetches the lines that block `i` of the group [`PREFETCH_GROUPS`] groups after the
/// one at `w` will read: the group's rows are contiguous, so block `i` of its rows lies
/// within `ROWS · bytes` bytes from `ROWS · bytes · i` into the group (in address order,
/// row by row, the group is read at that pace).
#[inline(always)]
unsafe fn prefetch_group_ahead(w: *const u8, stride: usize, bytes: usize, i: usize) {
    let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + bytes * i));
    prefetch_ahead(ahead, ROWS * bytes, stride);
}

/// Q8_K's sixteen per-16 `bsums` added in pairs into the eight per-32 sums (as i16),
/// as `kquants::mins_term` forms them.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn bsums_per32(y: *const u8) -> __m128i {
    let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
    _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    )
}

/// [`kquants::dot_q4_k`] (`Q5 = false`) or [`kquants::dot_q5_k`] (`Q5 = true`) for
/// [`ROWS`] rows `stride` bytes apart.
///
/// Per super-block, each row in turn unpacks its scales and mins, forms its min term
/// against the shared per-32 `bsums`, and decodes, scales and sums its quants into its
/// i32 lanes exactly as the single-row kernel does.
///
/// [`kquants::dot_q4_k`]: super::kquants::dot_q4_k
/// [`kquants::dot_q5_k`]: super::kquants::dot_q5_k
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each of the [`ROWS`] rows at `w + r·stride`
/// must hold `nb` Q4_K (144-byte) or Q5_K (176-byte) blocks, and `a` `nb` Q8_K blocks.
#[inline(always)]
unsafe fn dot_rows_q4_q5<const Q5: bool>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let bytes = if Q5 { 176 } else { 144 };
    // Offset of the 4-bit quants: Q5_K has its 32 bytes of fifth bits before them.
    let qs_at = if Q5 { 48 } else { 16 };
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); ROWS];
    let mut acc_m = [_mm_setzero_ps(); ROWS];
    for i in 0..nb {
        prefetch_group_ahead(w, stride, bytes, i);
        let y = a.add(Q8K * i);
        let yd = q8k_d(y);
        let per32 = bsums_per32(y);
        let yq = y.add(Q8K_QS);
        let x = w.add(bytes * i);
        // Loops over the rows, not `array::from_fn`: a closure's body does not inherit
        // the target features (every intrinsic in it would become a call).
        for r in 0..ROWS {
            let xr = x.add(r * stride);
            // `d` and `dmin` converted together, from a general register: F16C on a
            // full-register `vmovd`, which (unlike a one-lane load, see `f16_at`) does
            // not wait on whatever register LLVM picks.
            let d_dmin = _mm_cvtph_ps(_mm_cvtsi32_si128((xr as *const i32).read_unaligned()));
            let d_dmin = _mm_mul_ps(d_dmin, _mm_set1_ps(yd));
            let dmin = _mm_xor_ps(_mm_permute_ps::<0b01_01_01_01>(d_dmin), _mm_set1_ps(-0.0));
            let scales_mins = _mm256_cvtepu8_epi16(scales_mins_128(xr.add(4)));
            let mins = _mm256_extracti128_si256::<1>(scales_mins);
            let term = _mm_madd_epi16(mins, per32);
            acc_m[r] = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(term), acc_m[r]);
            let scales = _mm256_castsi256_si128(scales_mins);
            let scales = _mm256_set_m128i(scales, scales);
            let mut hbits = if Q5 {
                _mm256_loadu_si256(xr.add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                // 32 bytes hold sub-block 2j in their low nibbles and 2j+1 in their high
                // ones; Q5_K's fifth bits are bits 2j and 2j+1 of each byte of `qh`.
                let bits = _mm256_loadu_si256(xr.add(qs_at + 32 * j) as *const __m256i);
                let mut lo = _mm256_and_si256(bits, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                if Q5 {
                    // Shifting 16-bit lanes is safe: only bit 0 of each byte is kept, and
                    // the bits a shift brings in from the neighbouring byte land above it.
                    let h_lo = _mm256_slli_epi16::<4>(_mm256_and_si256(hbits, one));
                    let h_hi = _mm256_slli_epi16::<4>(_mm256_and_si256(
                        _mm256_srli_epi16::<1>(hbits),
                        one,
                    ));
                    hbits = _mm256_srli_epi16::<2>(hbits);
                    lo = _mm256_or_si256(lo, h_lo);
                    hi = _mm256_or_si256(hi, h_hi);
                }
                // Read from L1 by each row (see the module doc).
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
            let d = _mm256_broadcastss_ps(d_dmin);
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    let mut out = [0.0; ROWS];
    for r in 0..ROWS {
        out[r] = hsum_ps(acc[r]) + hsum_ps128(acc_m[r]);
    }
    out
}

/// [`kquants::dot_iq4_xs`] for [`ROWS`] rows `stride` bytes apart: each row in turn
/// looks up its codebook values and meets the activations with the single-row kernel's
/// sign trick and sub-block scales.
///
/// [`kquants::dot_iq4_xs`]: super::kquants::dot_iq4_xs
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each of the [`ROWS`] rows at `w + r·stride`
/// must hold `nb` IQ4_XS blocks (136 bytes), and `a` `nb` Q8_K blocks.
#[inline(always)]
unsafe fn dot_rows_iq4(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    const BYTES: usize = 136;
    let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(table, table);
    let mut acc = [_mm256_setzero_ps(); ROWS];
    for i in 0..nb {
        prefetch_group_ahead(w, stride, BYTES, i);
        let y = a.add(Q8K * i);
        let yd = q8k_d(y);
        let x = w.add(BYTES * i);
        let yq = y.add(Q8K_QS);
        for (r, acc) in acc.iter_mut().enumerate() {
            let xr = x.add(r * stride);
            let scales_h = (xr.add(2) as *const u16).read_unaligned() as i32;
            let mut sumi = _mm256_setzero_si256();
            for ib in 0..8 {
                let low = (*xr.add(4 + ib / 2) >> (4 * (ib % 2))) as i32 & 0xF;
                let ls = low | (((scales_h >> (2 * ib)) & 3) << 4);
                // As in the single-row kernel: codebook values and activations stay
                // within ±127, so the sign trick's pair sums fit in i16.
                let v = _mm256_shuffle_epi8(table, nibbles_32(xr.add(8 + 16 * ib)));
                let yv = _mm256_loadu_si256(yq.add(32 * ib) as *const __m256i);
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
                let p = _mm256_madd_epi16(p, _mm256_set1_epi16((ls - 32) as i16));
                sumi = _mm256_add_epi32(sumi, p);
            }
            let d = _mm256_set1_ps(yd * f16_at(xr));
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), *acc);
        }
    }
    acc.map(|acc| hsum_ps(acc))
}

/// [`kquants::dot_q4_k`] for [`ROWS`] rows `stride` bytes apart; `out[r]` equals its dot
/// of row `r` bit for bit.
///
/// [`kquants::dot_q4_k`]: super::kquants::dot_q4_k
///
/// # Safety
/// As [`kquants::dot_q4_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q4_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<false>(w, stride, a, nb)
}

/// [`kquants::dot_q5_k`] for [`ROWS`] rows `stride` bytes apart; `out[r]` equals its dot
/// of row `r` bit for bit.
///
/// [`kquants::dot_q5_k`]: super::kquants::dot_q5_k
///
/// # Safety
/// As [`kquants::dot_q5_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q5_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<true>(w, stride, a, nb)
}

/// [`kquants::dot_iq4_xs`] for [`ROWS`] rows `stride` bytes apart; `out[r]` equals its
/// dot of row `r` bit for bit.
///
/// [`kquants::dot_iq4_xs`]: super::kquants::dot_iq4_xs
///
/// # Safety
/// As [`kquants::dot_iq4_xs`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_iq4_xs(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_iq4(w, stride, a, nb)
}
