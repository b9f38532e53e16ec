//! Packed rows (`crate::matmul::packed`) with AVX512-VNNI.
//!
//! A 512-bit register holds one chunk of a group: four quants of each of its sixteen
//! rows. `vpdpbusd` multiplies unsigned weights by signed activations, and each token's
//! four activations of a chunk are a broadcast memory operand.
//! - Q8_0: the weights become unsigned by flipping their top bit (`q + 128`, once per
//!   block for every token); the `128 · Σ a` this adds is taken off by starting the sum
//!   at the prepared `-128 · Σ a`.
//! - Q5_0: the quants are unsigned already (`u`, worth `u - 16`); a chunk is a nibble
//!   and its fifth bits put together (a shift, a mask and one ternary-logic op, once per
//!   block for every token), and the sum starts at `-16 · Σ a`, an eighth of the
//!   prepared value.
//! - Q4_K: the quants are unsigned (`u`, worth `scale·u - min`): a chunk is a nibble
//!   (a mask, and a shift for the high ones), the sum starts at 0, and the min is taken
//!   off after the block's scaling with one more FMA, `-min · (d_a · Σ a)`.
//! - Q6_K: the quants are unsigned (`u`, worth `u - 32`, six bits: a nibble and two high
//!   bits put together as Q5_0's fifth). A block holds two sub-blocks of 16 with their
//!   own scales, so each token takes two sums of four chunks, started at `-32 · Σ a` of
//!   its half (from the prepared block), multiplied by their sixteen rows' scales in
//!   32-bit integers and added, exactly.
//!
//! So a block costs, per token, eight `vpdpbusd`, one conversion, one scale product and
//! one FMA for all sixteen rows (Q6_K two integer multiplies and an add more).

use std::arch::x86_64::*;

use crate::dispatch::PackedDotFn;

use crate::matmul::packed::{
    check_call, PackedFormat, ACT_BLOCK_BYTES, ACT_QUANTS, GROUP_ROWS, Q4_K_QUANTS,
    Q4_K_SUPER_BYTES, Q5_0_HIGH, Q6_K_BLOCK, Q6_K_QUANTS, Q6_K_SCALES, Q6_K_SUPER_BYTES,
};

/// Tokens per pass: their accumulators and the block's eight weight vectors stay in
/// registers.
const TOKENS: usize = 8;

/// How many blocks ahead of the block being multiplied its group's bytes are
/// prefetched: eight Q8_0 blocks (4 KiB); sixteen were no better at four tokens on one
/// thread.
const PREFETCH_BLOCKS: usize = 8;

/// A block's eight chunks of weights, as unsigned bytes, and what each token's sum
/// starts at given its prepared `-128 · Σ a`.
trait Format {
    const FORMAT: PackedFormat;
    const BLOCK_BYTES: usize = Self::FORMAT.group_block_bytes();
    /// Whether blocks have a min (a per-row offset times the activations' sum).
    const MINS: bool = false;
    /// Whether each half of a block has its own integer scale per row ([`Format::halves`]).
    const HALVES: bool = false;

    /// Block `b` of the group at `g`: its eight chunks of weights, as unsigned bytes.
    ///
    /// # Safety
    /// As [`group`]; `b < nb`.
    unsafe fn chunks(g: *const u8, b: usize) -> [__m512i; 8];

    /// # Safety
    /// As [`group`].
    unsafe fn start(prepared: i32) -> __m512i;

    /// The sixteen rows' scales of block `b` (stored as f16 at its start).
    ///
    /// # Safety
    /// As [`group`]; `b < nb`.
    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(
            g.add(b * Self::BLOCK_BYTES) as *const __m256i
        ))
    }

    /// The sixteen rows' mins of block `b`, where [`Format::MINS`].
    ///
    /// # Safety
    /// As [`group`]; `b < nb`.
    #[inline(always)]
    unsafe fn mins(_g: *const u8, _b: usize) -> __m512 {
        _mm512_setzero_ps()
    }

    /// The sixteen rows' integer scales of block `b`'s two halves, where
    /// [`Format::HALVES`].
    ///
    /// # Safety
    /// As [`group`]; `b < nb`.
    #[inline(always)]
    unsafe fn halves(_g: *const u8, _b: usize) -> [__m512i; 2] {
        [_mm512_setzero_si512(); 2]
    }
}

struct Q8_0;

impl Format for Q8_0 {
    const FORMAT: PackedFormat = PackedFormat::Q8_0;

    #[inline(always)]
    unsafe fn chunks(g: *const u8, b: usize) -> [__m512i; 8] {
        let blk = g.add(b * Self::BLOCK_BYTES);
        let flip = _mm512_set1_epi8(-128);
        let mut w = [_mm512_setzero_si512(); 8];
        for (c, w) in w.iter_mut().enumerate() {
            let q = _mm512_loadu_si512(blk.add(2 * GROUP_ROWS + 64 * c) as *const _);
            *w = _mm512_xor_si512(q, flip);
        }
        w
    }

    #[inline(always)]
    unsafe fn start(prepared: i32) -> __m512i {
        _mm512_set1_epi32(prepared)
    }
}

struct Q5_0;

/// Bit `c` of each byte of `h` moved to bit 4, the other bits cleared. The shifts are
/// on 16-bit lanes: what crosses into the other byte lands below or above bit 4 and is
/// masked off.
#[inline(always)]
unsafe fn fifth_bit(h: __m512i, c: usize) -> __m512i {
    let bit = _mm512_set1_epi8(0x10);
    let moved = match c {
        0 => _mm512_slli_epi16::<4>(h),
        1 => _mm512_slli_epi16::<3>(h),
        2 => _mm512_slli_epi16::<2>(h),
        3 => _mm512_slli_epi16::<1>(h),
        4 => h,
        5 => _mm512_srli_epi16::<1>(h),
        6 => _mm512_srli_epi16::<2>(h),
        _ => _mm512_srli_epi16::<3>(h),
    };
    _mm512_and_si512(moved, bit)
}

/// Four 64-byte runs of nibbles at `at` as eight chunks: run `c` holds chunk `c` in its
/// low nibbles and chunk `c + 4` in its high ones.
#[inline(always)]
unsafe fn nibble_chunks(at: *const u8) -> [__m512i; 8] {
    let low = _mm512_set1_epi8(0x0F);
    let mut w = [_mm512_setzero_si512(); 8];
    for c in 0..4 {
        let n = _mm512_loadu_si512(at.add(64 * c) as *const _);
        w[c] = _mm512_and_si512(n, low);
        w[c + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(n), low);
    }
    w
}

struct Q4K;

/// Block `b`'s sixteen 6-bit factors (scales at `at` 64, mins at 192) times the
/// super-block's f16 `d` (at `d_at` 0) or `dmin` (32): exact products, as the reference's.
#[inline(always)]
unsafe fn q4_k_factor(g: *const u8, b: usize, d_at: usize, at: usize) -> __m512 {
    let sup = g.add(b / 8 * Q4_K_SUPER_BYTES);
    let d = _mm512_cvtph_ps(_mm256_loadu_si256(sup.add(d_at) as *const __m256i));
    let f = _mm_loadu_si128(sup.add(at + 16 * (b % 8)) as *const __m128i);
    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(f)))
}

impl Format for Q4K {
    const FORMAT: PackedFormat = PackedFormat::Q4_K;
    const MINS: bool = true;

    #[inline(always)]
    unsafe fn chunks(g: *const u8, b: usize) -> [__m512i; 8] {
        nibble_chunks(g.add(b / 8 * Q4_K_SUPER_BYTES + Q4_K_QUANTS + 256 * (b % 8)))
    }

    #[inline(always)]
    unsafe fn start(_prepared: i32) -> __m512i {
        // The quants are the weights' unsigned parts; the min is taken off in floats.
        _mm512_setzero_si512()
    }

    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize) -> __m512 {
        q4_k_factor(g, b, 0, 64)
    }

    #[inline(always)]
    unsafe fn mins(g: *const u8, b: usize) -> __m512 {
        q4_k_factor(g, b, 2 * GROUP_ROWS, 192)
    }
}

struct Q6K;

/// Chunk `c`'s two high bits (bits `2(c % 4)` of each byte of `h`, the run of chunks
/// `4(c / 4)..`) moved to bits 4 and 5, the other bits cleared. As [`fifth_bit`], what
/// the 16-bit shifts carry into the other byte is masked off.
#[inline(always)]
unsafe fn high_bits(h: __m512i, c: usize) -> __m512i {
    let bits = _mm512_set1_epi8(0x30);
    let moved = match c % 4 {
        0 => _mm512_slli_epi16::<4>(h),
        1 => _mm512_slli_epi16::<2>(h),
        2 => h,
        _ => _mm512_srli_epi16::<2>(h),
    };
    _mm512_and_si512(moved, bits)
}

impl Format for Q6K {
    const FORMAT: PackedFormat = PackedFormat::Q6_K;
    const HALVES: bool = true;

    #[inline(always)]
    unsafe fn chunks(g: *const u8, b: usize) -> [__m512i; 8] {
        let blk = g.add(b / 8 * Q6_K_SUPER_BYTES + Q6_K_QUANTS + Q6_K_BLOCK * (b % 8));
        let low = _mm512_set1_epi8(0x0F);
        let h = [0, 1].map(|r| _mm512_loadu_si512(blk.add(256 + 64 * r) as *const _));
        let mut w = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let n = _mm512_loadu_si512(blk.add(64 * c) as *const _);
            // (n & low) | high: A = 0xF0, B = 0xCC, C = 0xAA.
            w[c] = _mm512_ternarylogic_epi32::<0xEA>(n, low, high_bits(h[0], c));
            let n = _mm512_srli_epi16::<4>(n);
            w[c + 4] = _mm512_ternarylogic_epi32::<0xEA>(n, low, high_bits(h[1], c));
        }
        w
    }

    #[inline(always)]
    unsafe fn start(_prepared: i32) -> __m512i {
        // Each half starts at its own offset (`group`).
        _mm512_setzero_si512()
    }

    #[inline(always)]
    unsafe fn scales(g: *const u8, b: usize) -> __m512 {
        let sup = g.add(b / 8 * Q6_K_SUPER_BYTES);
        _mm512_cvtph_ps(_mm256_loadu_si256(sup as *const __m256i))
    }

    #[inline(always)]
    unsafe fn halves(g: *const u8, b: usize) -> [__m512i; 2] {
        let sc = g.add(b / 8 * Q6_K_SUPER_BYTES + Q6_K_SCALES + 32 * (b % 8));
        [0, 1].map(|h| _mm512_cvtepi8_epi32(_mm_loadu_si128(sc.add(16 * h) as *const __m128i)))
    }
}

impl Format for Q5_0 {
    const FORMAT: PackedFormat = PackedFormat::Q5_0;

    #[inline(always)]
    unsafe fn chunks(g: *const u8, b: usize) -> [__m512i; 8] {
        let blk = g.add(b * Self::BLOCK_BYTES);
        let low = _mm512_set1_epi8(0x0F);
        let h = _mm512_loadu_si512(blk.add(Q5_0_HIGH) as *const _);
        let mut w = [_mm512_setzero_si512(); 8];
        for c in 0..4 {
            let n = _mm512_loadu_si512(blk.add(2 * GROUP_ROWS + 64 * c) as *const _);
            // (n & low) | fifth: A = 0xF0, B = 0xCC, C = 0xAA.
            w[c] = _mm512_ternarylogic_epi32::<0xEA>(n, low, fifth_bit(h, c));
            let n = _mm512_srli_epi16::<4>(n);
            w[c + 4] = _mm512_ternarylogic_epi32::<0xEA>(n, low, fifth_bit(h, c + 4));
        }
        w
    }

    #[inline(always)]
    unsafe fn start(prepared: i32) -> __m512i {
        // -16 · Σ a: the prepared -128 · Σ a is a multiple of 8, so the shift is exact.
        _mm512_set1_epi32(prepared >> 3)
    }
}

/// One group against `T` tokens (`a + t·a_stride`, `nb` prepared blocks each), the sums
/// stored at `out + t·out_stride`, sixteen rows each.
///
/// # Safety
/// The CPU must support AVX-512 F/BW and VNNI, AVX2 and F16C; `g` must hold `nb` group
/// blocks of `F`, each token `nb` prepared blocks, and each `out + t·out_stride` sixteen
/// floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
#[inline]
unsafe fn group<F: Format, const T: usize>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    a_stride: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let blk = g.add(b * F::BLOCK_BYTES);
        // The block PREFETCH_BLOCKS ahead (into the next group's, past the last group's
        // end: a prefetch never faults), so that its lines are in flight while this
        // one computes; the hardware prefetchers alone left the multiplies waiting on
        // memory at four tokens and more.
        let ahead = blk.wrapping_add(PREFETCH_BLOCKS * F::BLOCK_BYTES);
        for k in 0..F::BLOCK_BYTES.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let dw = F::scales(g, b);
        let mw = F::mins(g, b);
        let halves = F::halves(g, b);
        let w = F::chunks(g, b);
        for t in 0..T {
            let y = a.add(t * a_stride + b * ACT_BLOCK_BYTES);
            let word = |at: usize| (y.add(at) as *const i32).read_unaligned();
            let quads = |c: usize| _mm512_set1_epi32(word(ACT_QUANTS + 4 * c));
            let sum = if F::HALVES {
                // Each half from its own -32 · Σ a, times its scale, exactly.
                let mut s = [_mm512_set1_epi32(word(8)), _mm512_set1_epi32(word(12))];
                for c in 0..8 {
                    s[c / 4] = _mm512_dpbusd_epi32(s[c / 4], w[c], quads(c));
                }
                _mm512_add_epi32(
                    _mm512_mullo_epi32(s[0], halves[0]),
                    _mm512_mullo_epi32(s[1], halves[1]),
                )
            } else {
                let mut sum = F::start(word(4));
                for c in 0..8 {
                    sum = _mm512_dpbusd_epi32(sum, w[c], quads(c));
                }
                sum
            };
            let da = (y as *const f32).read_unaligned();
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), d, acc[t]);
            if F::MINS {
                // Σ a from the prepared -128 · Σ a, exactly; then acc - mw · (da · Σ a).
                let sum_a = -(word(4) >> 7);
                acc[t] = _mm512_fnmadd_ps(mw, _mm512_set1_ps(da * sum_a as f32), acc[t]);
            }
        }
    }
    for t in 0..T {
        _mm512_storeu_ps(out.add(t * out_stride), acc[t]);
    }
}

/// Every group of the call against the tokens [`TOKENS`] at a time.
fn dot_groups<F: Format>(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    let n_groups = check_call(F::FORMAT, groups, nb, acts, n_tokens, out);
    let n_rows = n_groups * GROUP_ROWS;
    let a_stride = nb * ACT_BLOCK_BYTES;
    for gi in 0..n_groups {
        for t0 in (0..n_tokens).step_by(TOKENS) {
            // SAFETY: `register` installs this only when Kernels::for_level detected
            // AVX-512 F/BW/VL, VNNI, AVX2, FMA and F16C; check_call checked that `groups`
            // holds n_groups groups of nb blocks, `acts` n_tokens rows of nb prepared
            // blocks and `out` n_tokens rows of n_rows, so group gi and tokens t0.. are
            // inside them.
            unsafe {
                let g = groups.as_ptr().add(gi * nb * F::BLOCK_BYTES);
                let a = acts.as_ptr().add(t0 * a_stride);
                let o = out.as_mut_ptr().add(t0 * n_rows + gi * GROUP_ROWS);
                match n_tokens - t0 {
                    1 => group::<F, 1>(g, nb, a, a_stride, o, n_rows),
                    2 => group::<F, 2>(g, nb, a, a_stride, o, n_rows),
                    3 => group::<F, 3>(g, nb, a, a_stride, o, n_rows),
                    4 => group::<F, 4>(g, nb, a, a_stride, o, n_rows),
                    5 => group::<F, 5>(g, nb, a, a_stride, o, n_rows),
                    6 => group::<F, 6>(g, nb, a, a_stride, o, n_rows),
                    7 => group::<F, 7>(g, nb, a, a_stride, o, n_rows),
                    _ => group::<F, TOKENS>(g, nb, a, a_stride, o, n_rows),
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
