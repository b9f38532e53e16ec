//! Packed rows (`crate::matmul::packed`) with AVX2.
//!
//! A 256-bit register holds half a chunk of a group: four quants of each of eight rows.
//! `vpmaddubsw` multiplies unsigned bytes by signed ones into i16 pair sums, and
//! `vpmaddwd` with ones widens the pairs to one i32 sum per row.
//! - Q8_0: the weights enter as `|q|` (once per block for every token) and their signs
//!   move onto each token's broadcast activations (`vpsignb`). A block costs, per token
//!   and eight rows, four instructions per chunk.
//! - Q5_0: the quants are unsigned (`u`, worth `u - 16`) and small, so four chunks'
//!   pair sums add up in i16 (`4 · 2 · 31 · 128 < 2¹⁵`) before one widening: per token
//!   and eight rows, about two instructions per chunk; a chunk is a nibble and its fifth
//!   bits put together once per block for every token. The sum starts at `-16 · Σ a`, an
//!   eighth of the prepared value.
//!
//! Then one conversion, scale product and FMA per token, where the row layout needs
//! about six instructions per row.

use std::arch::x86_64::*;

use crate::matmul::packed::{
    check_call, PackedFormat, ACT_BLOCK_BYTES, ACT_QUANTS, GROUP_ROWS, Q5_0_HIGH,
};

/// Tokens per pass: with their accumulators and sums, the sixteen registers are full.
const TOKENS: usize = 4;

/// How many blocks ahead of the block being multiplied its group's bytes are
/// prefetched (as in the AVX-512 kernel).
const PREFETCH_BLOCKS: usize = 8;

/// A block's integer sums for half a group.
trait Format {
    const FORMAT: PackedFormat;
    const BLOCK_BYTES: usize = Self::FORMAT.group_block_bytes();

    /// Each token's exact integer sum of the block for rows `8h..8h + 8`, `y[t]` being
    /// its prepared activation block.
    ///
    /// # Safety
    /// As [`half`]; `blk` is one group block and each `y[t]` one prepared block.
    unsafe fn sums<const T: usize>(blk: *const u8, h: usize, y: &[*const u8; T]) -> [__m256i; T];
}

/// Four activations of chunk `c` of the prepared block at `y`, in every i32 lane.
#[inline(always)]
unsafe fn broadcast(y: *const u8, c: usize) -> __m256i {
    _mm256_set1_epi32((y.add(ACT_QUANTS + 4 * c) as *const i32).read_unaligned())
}

struct Q8_0;

impl Format for Q8_0 {
    const FORMAT: PackedFormat = PackedFormat::Q8_0;

    #[inline(always)]
    unsafe fn sums<const T: usize>(blk: *const u8, h: usize, y: &[*const u8; T]) -> [__m256i; T] {
        let ones = _mm256_set1_epi16(1);
        let mut sum = [_mm256_setzero_si256(); T];
        for c in 0..8 {
            let q = _mm256_loadu_si256(blk.add(2 * GROUP_ROWS + 64 * c + 32 * h) as *const __m256i);
            // |q| as an unsigned byte: -128 becomes 128, which is what it is worth.
            let abs = _mm256_abs_epi8(q);
            for t in 0..T {
                // |q|·|y|·2 ≤ 128·127·2 fits an i16 pair sum.
                let p = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(broadcast(y[t], c), q));
                sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, ones));
            }
        }
        sum
    }
}

struct Q5_0;

/// Bit `c` of each byte of `h` moved to bit 4, the other bits cleared (the shifts are
/// on 16-bit lanes: what crosses into the other byte is masked off).
#[inline(always)]
unsafe fn fifth_bit(h: __m256i, c: usize) -> __m256i {
    let moved = match c {
        0 => _mm256_slli_epi16::<4>(h),
        1 => _mm256_slli_epi16::<3>(h),
        2 => _mm256_slli_epi16::<2>(h),
        3 => _mm256_slli_epi16::<1>(h),
        4 => h,
        5 => _mm256_srli_epi16::<1>(h),
        6 => _mm256_srli_epi16::<2>(h),
        _ => _mm256_srli_epi16::<3>(h),
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
}

impl Format for Q5_0 {
    const FORMAT: PackedFormat = PackedFormat::Q5_0;

    #[inline(always)]
    unsafe fn sums<const T: usize>(blk: *const u8, h: usize, y: &[*const u8; T]) -> [__m256i; T] {
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        let high = _mm256_loadu_si256(blk.add(Q5_0_HIGH + 32 * h) as *const __m256i);
        // -16 · Σ a: the prepared -128 · Σ a is a multiple of 8, so the shift is exact.
        let mut sum = [_mm256_setzero_si256(); T];
        for t in 0..T {
            sum[t] = _mm256_set1_epi32((y[t].add(4) as *const i32).read_unaligned() >> 3);
        }
        // Chunks 0..4 from the low nibbles, then 4..8 from the high ones.
        for part in 0..2 {
            let mut pairs = [_mm256_setzero_si256(); T];
            for v in 0..4 {
                let c = 4 * part + v;
                let n =
                    _mm256_loadu_si256(blk.add(2 * GROUP_ROWS + 64 * v + 32 * h) as *const __m256i);
                let n = if part == 0 {
                    n
                } else {
                    _mm256_srli_epi16::<4>(n)
                };
                let w = _mm256_or_si256(_mm256_and_si256(n, low), fifth_bit(high, c));
                for t in 0..T {
                    // |pair| ≤ 2·31·128; four chunks' pairs stay below 2¹⁵.
                    let p = _mm256_maddubs_epi16(w, broadcast(y[t], c));
                    pairs[t] = _mm256_add_epi16(pairs[t], p);
                }
            }
            for t in 0..T {
                sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(pairs[t], ones));
            }
        }
        sum
    }
}

/// Rows `8h..8h + 8` of one group against `T` tokens (`a + t·a_stride`, `nb` prepared
/// blocks each), the sums stored at `out + t·out_stride + 8h`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `g` must hold `nb` group blocks of `F`,
/// each token `nb` prepared blocks with quants in -127..=127 (as the Q8_0 quantizer
/// makes them), and each `out + t·out_stride` sixteen floats; `h` is 0 or 1.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
#[inline]
unsafe fn half<F: Format, const T: usize>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    a_stride: usize,
    h: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let blk = g.add(b * F::BLOCK_BYTES);
        if h == 0 {
            // The second half finds the group in cache.
            let ahead = blk.wrapping_add(PREFETCH_BLOCKS * F::BLOCK_BYTES);
            for k in 0..F::BLOCK_BYTES.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
            }
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i));
        let mut y = [a; T];
        for t in 0..T {
            y[t] = a.add(t * a_stride + b * ACT_BLOCK_BYTES);
        }
        let sum = F::sums::<T>(blk, h, &y);
        for t in 0..T {
            let da = (y[t] as *const f32).read_unaligned();
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), d, acc[t]);
        }
    }
    for t in 0..T {
        _mm256_storeu_ps(out.add(t * out_stride + 8 * h), acc[t]);
    }
}

/// Every half group of the call against the tokens [`TOKENS`] at a time.
fn dot_groups<F: Format>(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    let n_groups = check_call(F::FORMAT, groups, nb, acts, n_tokens, out);
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
                    let g = groups.as_ptr().add(gi * nb * F::BLOCK_BYTES);
                    let a = acts.as_ptr().add(t0 * a_stride);
                    let o = out.as_mut_ptr().add(t0 * n_rows + gi * GROUP_ROWS);
                    match n_tokens - t0 {
                        1 => half::<F, 1>(g, nb, a, a_stride, h, o, n_rows),
                        2 => half::<F, 2>(g, nb, a, a_stride, h, o, n_rows),
                        3 => half::<F, 3>(g, nb, a, a_stride, h, o, n_rows),
                        _ => half::<F, TOKENS>(g, nb, a, a_stride, h, o, n_rows),
                    }
                }
            }
        }
    }
}

/// The level's [`crate::dispatch::PackedDotFn`] for packed Q8_0.
pub(super) fn dot_groups_q8_0(
    groups: &[u8],
    nb: usize,
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    dot_groups::<Q8_0>(groups, nb, acts, n_tokens, out)
}

/// The level's [`crate::dispatch::PackedDotFn`] for packed Q5_0.
pub(super) fn dot_groups_q5_0(
    groups: &[u8],
    nb: usize,
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    dot_groups::<Q5_0>(groups, nb, acts, n_tokens, out)
}
