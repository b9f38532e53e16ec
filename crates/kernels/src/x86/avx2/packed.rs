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
//! - Q4_K: the quants are unsigned nibbles (`u`, worth `scale·u - min`): all eight
//!   chunks' pair sums add up in i16 (`8 · 2 · 15 · 127 < 2¹⁵`) before one widening; the
//!   sum starts at 0 and the min is taken off after the scaling with one more FMA,
//!   `-min · (d_a · Σ a)`, as the AVX-512 kernel does.
//! - Q6_K: the quants are unsigned six-bit values (`u`, worth `u - 32`), so only two
//!   chunks' pair sums fit an i16 (`2 · 2 · 63 · 127 < 2¹⁵`); each half of the block
//!   (a sub-block of 16, four chunks) starts at its `-32 · Σ a` and is multiplied by its
//!   rows' scales in 32-bit integers before the halves are added.
//!
//! Then one conversion, scale product and FMA per token, where the row layout needs
//! about six instructions per row.

use std::arch::x86_64::*;

use crate::dispatch::PackedDotFn;

use crate::matmul::packed::{
    check_call, PackedFormat, ACT_BLOCK_BYTES, ACT_QUANTS, GROUP_ROWS, Q4_K_QUANTS,
    Q4_K_SUPER_BYTES, Q5_0_HIGH, Q6_K_BLOCK, Q6_K_QUANTS, Q6_K_SCALES, Q6_K_SUPER_BYTES,
};

/// Tokens per pass: with their accumulators and sums, the sixteen registers are full.
const TOKENS: usize = 4;

/// How many blocks ahead of the block being multiplied its group's bytes are
/// prefetched (as in the AVX-512 kernel).
const PREFETCH_BLOCKS: usize = 8;

/// A block's integer sums and scales for half a group.
trait Format {
    const FORMAT: PackedFormat;
    const BLOCK_BYTES: usize = Self::FORMAT.group_block_bytes();
    /// Whether blocks have a min (a per-row offset times the activations' sum).
    const MINS: bool = false;

    /// Each token's exact integer sum of block `b` of the group at `g` for rows `8h..8h +
    /// 8`, `y[t]` being its prepared activation block.
    ///
    /// # Safety
    /// As [`half`]; `b < nb` and each `y[t]` one prepared block.
    unsafe fn sums<const T: usize>(
        g: *const u8,
        b: usize,
        h: usize,
        y: &[*const u8; T],
    ) -> [__m256i; T];

    /// Rows `8h..8h + 8`'s scales of block `b` (stored as f16 at its start).
    ///
    /// # Safety
    /// As [`half`]; `b < nb`.
    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize, h: usize) -> __m256 {
        let blk = g.add(b * Self::BLOCK_BYTES);
        _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i))
    }

    /// Rows `8h..8h + 8`'s mins of block `b`, where [`Format::MINS`].
    ///
    /// # Safety
    /// As [`half`]; `b < nb`.
    #[inline(always)]
    unsafe fn mins(_g: *const u8, _b: usize, _h: usize) -> __m256 {
        _mm256_setzero_ps()
    }
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
    unsafe fn sums<const T: usize>(
        g: *const u8,
        b: usize,
        h: usize,
        y: &[*const u8; T],
    ) -> [__m256i; T] {
        let blk = g.add(b * Self::BLOCK_BYTES);
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
    unsafe fn sums<const T: usize>(
        g: *const u8,
        b: usize,
        h: usize,
        y: &[*const u8; T],
    ) -> [__m256i; T] {
        let blk = g.add(b * Self::BLOCK_BYTES);
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

struct Q4K;

/// Block `b`'s eight 6-bit factors of rows `8h..8h + 8` (scales at `at` 64, mins at 192)
/// times the super-block's f16 `d` (at `d_at` 0) or `dmin` (32): exact products, as the
/// reference's.
#[inline(always)]
unsafe fn q4_k_factor(g: *const u8, b: usize, h: usize, d_at: usize, at: usize) -> __m256 {
    let sup = g.add(b / 8 * Q4_K_SUPER_BYTES);
    let d = _mm256_cvtph_ps(_mm_loadu_si128(sup.add(d_at + 16 * h) as *const __m128i));
    let f = _mm_loadl_epi64(sup.add(at + 16 * (b % 8) + 8 * h) as *const __m128i);
    _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(f)))
}

impl Format for Q4K {
    const FORMAT: PackedFormat = PackedFormat::Q4_K;
    const MINS: bool = true;

    #[inline(always)]
    unsafe fn sums<const T: usize>(
        g: *const u8,
        b: usize,
        h: usize,
        y: &[*const u8; T],
    ) -> [__m256i; T] {
        let nib = g.add(b / 8 * Q4_K_SUPER_BYTES + Q4_K_QUANTS + 256 * (b % 8) + 32 * h);
        let ones = _mm256_set1_epi16(1);
        let low = _mm256_set1_epi8(0x0F);
        // |pair| ≤ 2·15·127; all eight chunks' pairs stay below 2¹⁵.
        let mut pairs = [_mm256_setzero_si256(); T];
        for v in 0..4 {
            let n = _mm256_loadu_si256(nib.add(64 * v) as *const __m256i);
            let w = [
                _mm256_and_si256(n, low),
                _mm256_and_si256(_mm256_srli_epi16::<4>(n), low),
            ];
            for (part, w) in w.iter().enumerate() {
                for t in 0..T {
                    let p = _mm256_maddubs_epi16(*w, broadcast(y[t], v + 4 * part));
                    pairs[t] = _mm256_add_epi16(pairs[t], p);
                }
            }
        }
        let mut sum = [_mm256_setzero_si256(); T];
        for t in 0..T {
            sum[t] = _mm256_madd_epi16(pairs[t], ones);
        }
        sum
    }

    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize, h: usize) -> __m256 {
        q4_k_factor(g, b, h, 0, 64)
    }

    #[inline(always)]
    unsafe fn mins(g: *const u8, b: usize, h: usize) -> __m256 {
        q4_k_factor(g, b, h, 2 * GROUP_ROWS, 192)
    }
}

struct Q6K;

/// Chunk `c` of the packed Q6_K block at `blk` for rows `8h..8h + 8`: its nibble (run
/// `c % 4`, the high nibbles for `c ≥ 4`) and its two high bits (run `c / 4`, bits
/// `2(c % 4)`) moved to bits 4 and 5.
#[inline(always)]
unsafe fn q6_k_chunk(blk: *const u8, h: usize, c: usize) -> __m256i {
    let n = _mm256_loadu_si256(blk.add(64 * (c % 4) + 32 * h) as *const __m256i);
    let n = if c < 4 { n } else { _mm256_srli_epi16::<4>(n) };
    let hb = _mm256_loadu_si256(blk.add(256 + 64 * (c / 4) + 32 * h) as *const __m256i);
    let hb = match c % 4 {
        0 => _mm256_slli_epi16::<4>(hb),
        1 => _mm256_slli_epi16::<2>(hb),
        2 => hb,
        _ => _mm256_srli_epi16::<2>(hb),
    };
    _mm256_or_si256(
        _mm256_and_si256(n, _mm256_set1_epi8(0x0F)),
        _mm256_and_si256(hb, _mm256_set1_epi8(0x30)),
    )
}

impl Format for Q6K {
    const FORMAT: PackedFormat = PackedFormat::Q6_K;

    #[inline(always)]
    unsafe fn sums<const T: usize>(
        g: *const u8,
        b: usize,
        h: usize,
        y: &[*const u8; T],
    ) -> [__m256i; T] {
        let sup = g.add(b / 8 * Q6_K_SUPER_BYTES);
        let blk = sup.add(Q6_K_QUANTS + Q6_K_BLOCK * (b % 8));
        let ones = _mm256_set1_epi16(1);
        let mut sum = [_mm256_setzero_si256(); T];
        for half in 0..2 {
            let mut s = [_mm256_setzero_si256(); T];
            for t in 0..T {
                s[t] = _mm256_set1_epi32((y[t].add(8 + 4 * half) as *const i32).read_unaligned());
            }
            // |pair| ≤ 2·63·127: two chunks' pairs stay below 2¹⁵.
            for c in (4 * half..4 * half + 4).step_by(2) {
                let (w0, w1) = (q6_k_chunk(blk, h, c), q6_k_chunk(blk, h, c + 1));
                for t in 0..T {
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(w0, broadcast(y[t], c)),
                        _mm256_maddubs_epi16(w1, broadcast(y[t], c + 1)),
                    );
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, ones));
                }
            }
            let at = sup.add(Q6_K_SCALES + 16 * (2 * (b % 8) + half) + 8 * h);
            let sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64(at as *const __m128i));
            for t in 0..T {
                sum[t] = _mm256_add_epi32(sum[t], _mm256_mullo_epi32(s[t], sc));
            }
        }
        sum
    }

    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize, h: usize) -> __m256 {
        let sup = g.add(b / 8 * Q6_K_SUPER_BYTES);
        _mm256_cvtph_ps(_mm_loadu_si128(sup.add(16 * h) as *const __m128i))
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
        let dw = F::scales(g, b, h);
        let mw = F::mins(g, b, h);
        let mut y = [a; T];
        for t in 0..T {
            y[t] = a.add(t * a_stride + b * ACT_BLOCK_BYTES);
        }
        let sum = F::sums::<T>(g, b, h, &y);
        for t in 0..T {
            let da = (y[t] as *const f32).read_unaligned();
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), d, acc[t]);
            if F::MINS {
                // Σ a from the prepared -128 · Σ a, exactly; then acc - mw · (da · Σ a).
                let sum_a = -((y[t].add(4) as *const i32).read_unaligned() >> 7);
                acc[t] = _mm256_fnmadd_ps(mw, _mm256_set1_ps(da * sum_a as f32), acc[t]);
            }
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

/// The level's packed kernels ([`PackedDotFn`]), one per format.
pub(super) const KERNELS: [(PackedFormat, PackedDotFn); 4] = [
    (PackedFormat::Q8_0, dot_groups::<Q8_0>),
    (PackedFormat::Q5_0, dot_groups::<Q5_0>),
    (PackedFormat::Q4_K, dot_groups::<Q4K>),
    (PackedFormat::Q6_K, dot_groups::<Q6K>),
];
