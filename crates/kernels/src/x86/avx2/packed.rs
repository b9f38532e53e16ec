//! Packed Q8_0 rows (`crate::matmul::packed`) with AVX2.
//!
//! A 256-bit register holds half a chunk of a group: four quants of each of eight rows.
//! `vpmaddubsw` needs one unsigned operand, so the weights enter as `|q|` (once per block
//! for every token) and their signs move onto each token's broadcast activations
//! (`vpsignb`); `vpmaddwd` with ones widens the pairs to one i32 sum per row. A block then
//! costs, per token and eight rows, four instructions per chunk and one conversion, scale
//! product and FMA, where the row layout needs about six per row.

use std::arch::x86_64::*;

use crate::matmul::packed::{ACT_BLOCK_BYTES, GROUP_BLOCK_BYTES, GROUP_ROWS};

/// Tokens per pass: with their accumulators and sums, the sixteen registers are full.
const TOKENS: usize = 4;

/// How far ahead of the block being multiplied its group's bytes are prefetched (as in
/// the AVX-512 kernel).
const PREFETCH_BYTES: usize = 8 * GROUP_BLOCK_BYTES;

/// Rows `8h..8h + 8` of one group against `T` tokens (`a + t·a_stride`, `nb` prepared
/// blocks each), the sums stored at `out + t·out_stride + 8h`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `g` must hold `nb` group blocks, each token
/// `nb` prepared blocks with quants in -127..=127 (as the Q8_0 quantizer makes them), and
/// each `out + t·out_stride` sixteen floats; `h` is 0 or 1.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
#[inline]
unsafe fn half<const T: usize>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    a_stride: usize,
    h: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let blk = g.add(b * GROUP_BLOCK_BYTES);
        if h == 0 {
            // The second half finds the group in cache.
            let ahead = blk.wrapping_add(PREFETCH_BYTES);
            for k in 0..GROUP_BLOCK_BYTES.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i));
        let mut sum = [_mm256_setzero_si256(); T];
        for c in 0..8 {
            let q = _mm256_loadu_si256(blk.add(2 * GROUP_ROWS + 64 * c + 32 * h) as *const __m256i);
            // |q| as an unsigned byte: -128 becomes 128, which is what it is worth.
            let abs = _mm256_abs_epi8(q);
            for t in 0..T {
                let y = a.add(t * a_stride + b * ACT_BLOCK_BYTES + 8 + 4 * c);
                let y = _mm256_set1_epi32((y as *const i32).read_unaligned());
                // |q|·|y|·2 ≤ 128·127·2 fits an i16 pair sum.
                let p = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(y, q));
                sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, ones));
            }
        }
        for t in 0..T {
            let da = (a.add(t * a_stride + b * ACT_BLOCK_BYTES) as *const f32).read_unaligned();
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), d, acc[t]);
        }
    }
    for t in 0..T {
        _mm256_storeu_ps(out.add(t * out_stride + 8 * h), acc[t]);
    }
}

/// The level's [`crate::dispatch::PackedDotFn`]: every half group of the call against
/// the tokens [`TOKENS`] at a time.
pub(super) fn dot_groups(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    let n_groups = crate::matmul::packed::check_call(groups, nb, acts, n_tokens, out);
    let n_rows = n_groups * GROUP_ROWS;
    let a_stride = nb * ACT_BLOCK_BYTES;
    for gi in 0..n_groups {
        for h in 0..2 {
            for t0 in (0..n_tokens).step_by(TOKENS) {
                // SAFETY: `register` installs this only when Kernels::for_level detected
                // AVX2, FMA and F16C; check_call checked that `groups` holds n_groups
                // groups of nb blocks, `acts` n_tokens rows of nb prepared blocks and
                // `out` n_tokens rows of n_rows, so group gi and tokens t0.. are inside
                // them; the prepared quants are the Q8_0 quantizer's.
                unsafe {
                    let g = groups.as_ptr().add(gi * nb * GROUP_BLOCK_BYTES);
                    let a = acts.as_ptr().add(t0 * a_stride);
                    let o = out.as_mut_ptr().add(t0 * n_rows + gi * GROUP_ROWS);
                    match n_tokens - t0 {
                        1 => half::<1>(g, nb, a, a_stride, h, o, n_rows),
                        2 => half::<2>(g, nb, a, a_stride, h, o, n_rows),
                        3 => half::<3>(g, nb, a, a_stride, h, o, n_rows),
                        _ => half::<TOKENS>(g, nb, a, a_stride, h, o, n_rows),
                    }
                }
            }
        }
    }
}
