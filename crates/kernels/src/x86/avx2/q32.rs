//! The 32-element formats: Q4_0, Q5_0, Q8_0 and IQ4_NL against Q8_0 activations, Q4_1
//! and Q5_1 against Q8_1 activations.
//!
//! Each block becomes 32 signed (or small unsigned) bytes, whose integer dot with the
//! activation block is exact; one FMA per block then applies both block scales, as the
//! reference does (`sumf += sumi * (d_w * d_a)`).

use core::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::util::{bytes_from_bits, dot_i8, dot_u8_i8, f16_at, f16_splat, hsum_ps, nibbles_32};
use crate::quant::blocks::KVALUES_IQ4NL;

/// Bytes of a Q8_0 activation block: f16 `d`, then 32 quants.
pub(super) const Q8_0: usize = 34;
/// Bytes of a Q8_1 activation block: f16 `d`, f16 `s`, then 32 quants.
const Q8_1: usize = 36;

/// Folds `block(i, acc)` over `nb` blocks with two accumulators, so that consecutive
/// blocks' FMAs do not wait on each other.
#[inline(always)]
pub(in crate::x86) unsafe fn fold_blocks(
    nb: usize,
    mut block: impl FnMut(usize, __m256) -> __m256,
) -> f32 {
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 <= nb {
        acc0 = block(i, acc0);
        acc1 = block(i + 1, acc1);
        i += 2;
    }
    if i < nb {
        acc0 = block(i, acc0);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

/// Q4_0 · Q8_0: weights `d * (q - 8)`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` Q4_0 blocks (18 bytes)
/// and `a` `nb` Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(w: *const u8, a: *const u8, nb: usize) -> f32 {
    fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(18 * i), a.add(Q8_0 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qx = _mm256_sub_epi8(nibbles_32(x.add(2)), _mm256_set1_epi8(8));
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc)
    })
}

/// Q5_0 · Q8_0: weights `d * (q - 16)` with bit 4 of q in `qh`.
///
/// # Safety
/// As [`dot_q4_0`], with Q5_0 blocks (22 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(w: *const u8, a: *const u8, nb: usize) -> f32 {
    fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(22 * i), a.add(Q8_0 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qh = (x.add(2) as *const u32).read_unaligned();
        // q - 16 is the low nibble when the high bit is set, and the nibble minus 16 (its
        // two's complement byte has 0xF0 on top) when it is clear.
        let top = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
        let qx = _mm256_or_si256(nibbles_32(x.add(6)), top);
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc)
    })
}

/// Q8_0 · Q8_0.
///
/// # Safety
/// As [`dot_q4_0`], with Q8_0 weight blocks (34 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(w: *const u8, a: *const u8, nb: usize) -> f32 {
    fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(34 * i), a.add(Q8_0 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qx = _mm256_loadu_si256(x.add(2) as *const __m256i);
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc)
    })
}

/// IQ4_NL · Q8_0: weights `d * KVALUES_IQ4NL[q]`, the codebook looked up with `pshufb`.
///
/// # Safety
/// As [`dot_q4_0`], with IQ4_NL blocks (18 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_iq4_nl(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let table = _mm256_set_m128i(table, table);
    fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(18 * i), a.add(Q8_0 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qx = _mm256_shuffle_epi8(table, nibbles_32(x.add(2)));
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc)
    })
}

/// Rows per multi-row call: the rows share each activation block's load, scale and
/// offset sum, and the loop overhead.
pub const ROWS: usize = 4;

/// How many groups of [`ROWS`] rows ahead the multi-row kernels prefetch (four rows read
/// side by side are four interleaved streams, which hardware prefetchers follow badly).
pub(super) const PREFETCH_GROUPS: usize = 2;

/// A Q8_0-activation format whose weights are `q - OFFSET` with small unsigned quants
/// `q` (at most 31, so `maddubs` pair sums stay far from saturating): the multi-row
/// kernels take `q` as it is and the offset as `OFFSET · Σ y` per i32 lane, which depends
/// on the activations only and so is formed once per block for all rows. Each i32 lane
/// then holds exactly the signed sum [`dot_i8`] gives (`Σ (q - OFFSET)·y` over the same
/// four elements), without the two sign moves per row.
trait Unsigned {
    /// Bytes per weight block.
    const BYTES: usize;
    /// What the unsigned quants exceed the weights by.
    const OFFSET: i8;
    /// One block's 32 unsigned quants in element order.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` must point at a whole block.
    unsafe fn quants(x: *const u8) -> __m256i;
}

struct Q4_0;
struct Q5_0;

impl Unsigned for Q4_0 {
    const BYTES: usize = 18;
    const OFFSET: i8 = 8;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        nibbles_32(x.add(2))
    }
}

impl Unsigned for Q5_0 {
    const BYTES: usize = 22;
    const OFFSET: i8 = 16;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        let qh = (x.add(2) as *const u32).read_unaligned();
        let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles_32(x.add(6)), high)
    }
}

/// [`ROWS`] rows `stride` bytes apart against Q8_0 activations: `out[r]` equals the
/// single-row kernel's dot of row `r` bit for bit. Each row's float operations are that
/// kernel's, in the same order: the same `d_x·d_y` per block, the same FMA into the even
/// or odd blocks' accumulator ([`fold_blocks`]), the same final sum; its i32 lanes are
/// the same exact sums (see [`Unsigned`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each of the [`ROWS`] rows at `w + r·stride`
/// must hold `nb` blocks of `B`, and `a` `nb` Q8_0 blocks.
#[inline(always)]
unsafe fn dot_rows_unsigned<B: Unsigned>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let ones = _mm256_set1_epi16(1);
    let offset = _mm256_set1_epi8(B::OFFSET);
    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
    for i in 0..nb {
        // A block step of a group reads ROWS·BYTES bytes at most in address order (the
        // rows are contiguous); fetch that stretch of a later group. Past the matrix the
        // address is never dereferenced: a prefetch does not fault.
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + B::BYTES * i));
        for k in 0..(ROWS * B::BYTES).div_ceil(64) + 1 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let y = a.add(Q8_0 * i);
        let dy = f16_splat(y);
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        // OFFSET · Σ y over each i32 lane's four activations (|16 · 4 · 127| is small).
        let lane_offset = _mm256_madd_epi16(_mm256_maddubs_epi16(offset, qy), ones);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = w.add(r * stride + B::BYTES * i);
            let d = _mm256_mul_ps(f16_splat(x), dy);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(B::quants(x), qy), ones);
            let sumi = _mm256_sub_epi32(sums, lane_offset);
            acc[i % 2] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[i % 2]);
        }
    }
    acc.map(|[even, odd]| hsum_ps(_mm256_add_ps(even, odd)))
}

/// [`dot_q4_0`] for [`ROWS`] rows `stride` bytes apart; `out[r]` equals it bit for bit.
///
/// # Safety
/// As [`dot_q4_0`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q4_0(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_unsigned::<Q4_0>(w, stride, a, nb)
}

/// [`dot_q5_0`] for [`ROWS`] rows `stride` bytes apart; `out[r]` equals it bit for bit.
///
/// # Safety
/// As [`dot_q5_0`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q5_0(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_unsigned::<Q5_0>(w, stride, a, nb)
}

/// How a Q8_0-activation format enters the several-tokens kernels: each row's block is
/// decoded once into the operands of `maddubs` that depend on the weights only, and each
/// (row, token) pair forms the same eight i32 lane sums as the single-row kernel.
trait TileQuants {
    /// Bytes per weight block.
    const BYTES: usize;
    /// The weights' part of a block, decoded once for all tokens.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` must point at a whole block.
    unsafe fn decode(x: *const u8) -> [__m256i; 2];
    /// The activations' part shared by all rows (zero where none is needed).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn token(qy: __m256i) -> __m256i;
    /// The eight i32 lane sums of one (row, token) pair.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn lanes(w: &[__m256i; 2], qy: __m256i, token: __m256i) -> __m256i;
}

/// Signed quants: the magnitudes and the signs of the weights are decoded once; per
/// (row, token) the signs move onto the activations, as [`dot_i8`] does, so the lane sums
/// are [`dot_i8`]'s.
struct Signed<B>(core::marker::PhantomData<B>);

/// A format with signed quants, for [`Signed`].
pub(super) trait SignedQuants {
    /// Bytes per weight block.
    const BYTES: usize;
    /// One block's 32 signed quants in element order.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` must point at a whole block.
    unsafe fn quants(x: *const u8) -> __m256i;
}

pub(super) struct Q8_0Weights;
pub(super) struct Iq4Nl;

impl SignedQuants for Q8_0Weights {
    const BYTES: usize = 34;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        _mm256_loadu_si256(x.add(2) as *const __m256i)
    }
}

impl SignedQuants for Iq4Nl {
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
        _mm256_shuffle_epi8(_mm256_set_m128i(table, table), nibbles_32(x.add(2)))
    }
}

impl<B: SignedQuants> TileQuants for Signed<B> {
    const BYTES: usize = B::BYTES;
    #[inline(always)]
    unsafe fn decode(x: *const u8) -> [__m256i; 2] {
        let q = B::quants(x);
        [_mm256_sign_epi8(q, q), q]
    }
    #[inline(always)]
    unsafe fn token(_qy: __m256i) -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn lanes(w: &[__m256i; 2], qy: __m256i, _token: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(w[0], _mm256_sign_epi8(qy, w[1]));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// Small unsigned quants with their offset taken off through the activations (see
/// [`Unsigned`]): the lane sums are [`dot_rows_unsigned`]'s.
struct Offset<B>(core::marker::PhantomData<B>);

impl<B: Unsigned> TileQuants for Offset<B> {
    const BYTES: usize = B::BYTES;
    #[inline(always)]
    unsafe fn decode(x: *const u8) -> [__m256i; 2] {
        [B::quants(x), _mm256_setzero_si256()]
    }
    #[inline(always)]
    unsafe fn token(qy: __m256i) -> __m256i {
        // OFFSET · Σ y over each i32 lane's four activations, as in dot_rows_unsigned.
        let offset = _mm256_set1_epi8(B::OFFSET);
        _mm256_madd_epi16(_mm256_maddubs_epi16(offset, qy), _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn lanes(w: &[__m256i; 2], qy: __m256i, token: __m256i) -> __m256i {
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], qy), _mm256_set1_epi16(1));
        _mm256_sub_epi32(sums, token)
    }
}

/// Rows of a several-tokens tile at this level, at most: two rows by two tokens, or one
/// row by four (or three), are eight accumulators (even and odd blocks, as
/// [`fold_blocks`]), which with the rows' decoded quants fill most of the sixteen 256-bit
/// registers. Four tokens on one row decode each weight block once for all four, where
/// two passes of two rows by two decoded it twice: Gemma 3 270M's 4-token decode step at
/// this level took 22.1 instead of 25.3 ms (2 threads, Emerald Rapids), but its 2-token
/// step 14.7 instead of 13.8, so two tokens keep two rows.
pub const TILE_ROWS: usize = 2;

/// Tokens of a several-tokens tile (see [`TILE_ROWS`]).
pub const TOKENS: usize = 4;

/// Rows per tile for `t` tokens (see [`TILE_ROWS`]).
const fn tile_rows(t: usize) -> usize {
    if t <= 2 {
        2
    } else {
        1
    }
}

/// One token's activation block in the form the several-tokens tiles consume: its quants,
/// its scale spread over the eight lanes, and the format's per-token term
/// ([`TileQuants::token`]). Made once per product call for all its row pairs, where the
/// tiles used to make it again for every pair of rows.
#[derive(Clone, Copy)]
#[repr(C)]
struct BlockActs {
    qy: __m256i,
    dy: __m256,
    token: __m256i,
}

/// Blocks whose activations are prepared at once: 24 KiB for four tokens, which stays in
/// L1 while every tile of a block of rows passes over it. Longer rows are done in chunks
/// (an even size, so each block keeps its accumulator parity), the tiles' accumulators
/// kept between chunks.
const CHUNK_BLOCKS: usize = 64;

/// Rows per block of a call's rows: every token meets a block before the next is read,
/// and a chunked row keeps the block's tiles' accumulators.
const BLOCK_ROWS: usize = 64;

/// The accumulators of a tile of `R` rows: per token and row, the even and odd blocks'
/// (as [`fold_blocks`]).
type TileAcc<const T: usize, const R: usize> = [[[__m256; 2]; R]; T];

/// Blocks `b0..b1` (`b0` even) of `R` rows `stride` bytes apart against `T`
/// tokens' prepared blocks (`acts[(i - b0)·T + t]`), into the tile's accumulators: per
/// (row, token) and block the single-row kernel's lane sums, `d_x·d_y` and FMA into the
/// even or odd blocks' accumulator.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each row at `w + r·stride` must hold blocks
/// `b0..b1` of `B`, and `acts` `(b1 - b0)·T` prepared entries.
#[inline(always)]
unsafe fn tile_blocks<B: TileQuants, const T: usize, const R: usize>(
    acc: &mut TileAcc<T, R>,
    w: *const u8,
    stride: usize,
    acts: *const BlockActs,
    (b0, b1): (usize, usize),
) {
    let mut i = b0;
    while i + 2 <= b1 {
        tile_block::<B, T, R, 0>(acc, w, stride, acts.add((i - b0) * T), i);
        tile_block::<B, T, R, 1>(acc, w, stride, acts.add((i + 1 - b0) * T), i + 1);
        i += 2;
    }
    if i < b1 {
        tile_block::<B, T, R, 0>(acc, w, stride, acts.add((i - b0) * T), i);
    }
}

/// Block `i` of [`tile_blocks`] into accumulator `PARITY` (`i % 2`) of every pair: a
/// function rather than a closure, whose body would not inherit the caller's target
/// features (and a run-time parity kept the accumulators in memory).
///
/// # Safety
/// As [`tile_blocks`], with `acts` at block `i`'s `T` entries.
#[inline(always)]
unsafe fn tile_block<B: TileQuants, const T: usize, const R: usize, const PARITY: usize>(
    acc: &mut TileAcc<T, R>,
    w: *const u8,
    stride: usize,
    acts: *const BlockActs,
    i: usize,
) {
    let ahead = w.wrapping_add(R * (stride * PREFETCH_GROUPS + B::BYTES * i));
    for k in 0..(R * B::BYTES).div_ceil(64) + 1 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
    }
    let x = w.add(B::BYTES * i);
    // Loops, not `array::from_fn`: its closures are not inlined here, and a closure's
    // body does not inherit the target features (every intrinsic became a call).
    let mut q = [[_mm256_setzero_si256(); 2]; R];
    let mut dx = [_mm256_setzero_ps(); R];
    for r in 0..R {
        q[r] = B::decode(x.add(r * stride));
        dx[r] = f16_splat(x.add(r * stride));
    }
    for (t, acc) in acc.iter_mut().enumerate() {
        let y = &*acts.add(t);
        for (r, acc) in acc.iter_mut().enumerate() {
            let d = _mm256_mul_ps(dx[r], y.dy);
            let sumi = B::lanes(&q[r], y.qy, y.token);
            acc[PARITY] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[PARITY]);
        }
    }
}

/// `T` tokens (`a + t·a_stride`) against rows `r0..r1` (at most [`BLOCK_ROWS`], a
/// multiple of `R = tile_rows(T)`, `stride` bytes apart), into `out[(t0 + t)·out_rows +
/// r]`: each token's blocks are prepared once per chunk ([`BlockActs`]) for every tile of
/// the call.
/// Each result equals the single-row dot bit for bit (the same lane sums, the same
/// `d_x·d_y` per block, the same FMA into the even or odd blocks' accumulator, the same
/// final sum: [`fold_blocks`]'s order).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each row at `w + r·stride` must hold `nb`
/// blocks of `B`, each of the `T` rows at `a + t·a_stride` `nb` Q8_0 blocks; `out` must
/// hold `(t0 + T)·out_rows` values.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tokens_prepared<B: TileQuants, const T: usize, const R: usize>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
    (r0, r1): (usize, usize),
    (t0, out_rows): (usize, usize),
    out: &mut [f32],
) {
    let mut acts = [const { MaybeUninit::<BlockActs>::uninit() }; CHUNK_BLOCKS * TOKENS];
    debug_assert_eq!(R, tile_rows(T));
    let mut kept = [const { MaybeUninit::<TileAcc<T, R>>::uninit() }; BLOCK_ROWS];
    let mut b0 = 0;
    loop {
        let b1 = (b0 + CHUNK_BLOCKS).min(nb);
        for i in b0..b1 {
            for t in 0..T {
                let y = a.add(t * a_stride + Q8_0 * i);
                let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
                acts[(i - b0) * T + t].write(BlockActs {
                    qy,
                    dy: f16_splat(y),
                    token: B::token(qy),
                });
            }
        }
        let last = b1 == nb;
        for (k, g) in (r0..r1).step_by(R).enumerate() {
            let wg = w.add(g * stride);
            let mut acc = if b0 == 0 {
                [[[_mm256_setzero_ps(); 2]; R]; T]
            } else {
                kept[k].assume_init()
            };
            tile_blocks::<B, T, R>(&mut acc, wg, stride, acts.as_ptr().cast(), (b0, b1));
            if last {
                for (t, acc) in acc.iter().enumerate() {
                    for (r, &[even, odd]) in acc.iter().enumerate() {
                        out[(t0 + t) * out_rows + g + r] = hsum_ps(_mm256_add_ps(even, odd));
                    }
                }
            } else {
                kept[k].write(acc);
            }
        }
        if last {
            break;
        }
        b0 = b1;
    }
}

/// The several-tokens product ([`crate::dispatch::DotTokensFn`]) of format `B`: `nb`
/// blocks per row, `n_rows` rows `stride` bytes apart, `n_tokens` activation rows
/// `a_stride` apart; tokens [`TOKENS`] at a time through [`tokens_prepared`], rows past
/// the last whole pair through the single-row dot `single`.
///
/// # Safety
/// As [`tokens_prepared`] for every row and token; `single` must be the format's
/// single-row kernel at this level.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_tokens<B: TileQuants>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
    n_rows: usize,
    n_tokens: usize,
    out: &mut [f32],
    single: unsafe fn(*const u8, *const u8, usize) -> f32,
) {
    let done = n_rows - n_rows % TILE_ROWS;
    // Every group of tokens meets a block of rows before the next block is read, so the
    // weights come from memory once per call, not once per group.
    for r0 in (0..done).step_by(BLOCK_ROWS) {
        let rows = (r0, (r0 + BLOCK_ROWS).min(done));
        for t0 in (0..n_tokens).step_by(TOKENS) {
            let (at, outs) = (a.add(t0 * a_stride), (t0, n_rows));
            let f = match n_tokens - t0 {
                1 => tokens_prepared::<B, 1, { tile_rows(1) }>,
                2 => tokens_prepared::<B, 2, { tile_rows(2) }>,
                3 => tokens_prepared::<B, 3, { tile_rows(3) }>,
                _ => tokens_prepared::<B, TOKENS, { tile_rows(TOKENS) }>,
            };
            f(w, stride, at, a_stride, nb, rows, outs, out);
        }
    }
    for r in done..n_rows {
        for t in 0..n_tokens {
            out[t * n_rows + r] = single(w.add(r * stride), a.add(t * a_stride), nb);
        }
    }
}

/// Defines the several-tokens product of one format ([`crate::dispatch::DotTokensFn`]).
macro_rules! tokens_kernel {
    ($name:ident, $quants:ty, $single:ident, $what:literal) => {
        #[doc = concat!($what, " for several tokens, with AVX2 (see [`tokens_prepared`]).")]
        pub(in crate::x86) fn $name(
            w: &[u8],
            row_bytes: usize,
            a: &[u8],
            a_stride: usize,
            n_tokens: usize,
            out: &mut [f32],
        ) {
            let (nb, n_rows) = crate::x86::tokens_block_count(
                w,
                row_bytes,
                a,
                a_stride,
                n_tokens,
                out.len(),
                <$quants as TileQuants>::BYTES,
                Q8_0,
            );
            // SAFETY: each level's `register` installs this only for a level whose CPU
            // features Kernels::for_level checked (AVX2, FMA and F16C at least);
            // tokens_block_count checked that `w` holds n_rows rows of nb blocks,
            // row_bytes apart, `a` n_tokens rows of nb Q8_0 blocks a_stride apart, and
            // `out` n_tokens · n_rows values; `$single` is the format's row kernel.
            unsafe {
                dot_tokens::<$quants>(
                    w.as_ptr(),
                    row_bytes,
                    a.as_ptr(),
                    a_stride,
                    nb,
                    n_rows,
                    n_tokens,
                    out,
                    $single,
                )
            }
        }
    };
}

tokens_kernel!(dot_tokens_q5_0, Offset<Q5_0>, dot_q5_0, "Q5_0 · Q8_0");
tokens_kernel!(
    dot_tokens_q8_0,
    Signed<Q8_0Weights>,
    dot_q8_0,
    "Q8_0 · Q8_0"
);
tokens_kernel!(
    dot_tokens_iq4_nl,
    Signed<Iq4Nl>,
    dot_iq4_nl,
    "IQ4_NL · Q8_0"
);

/// Q4_1 · Q8_1: weights `d * q + m`; the offset meets the activations through their
/// stored sum `s`, so the reference's `d_w*d_a*sumi + m*s` is computed per block.
///
/// # Safety
/// As [`dot_q4_0`], with Q4_1 blocks (20 bytes) and Q8_1 activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let mut summs = 0.0f32;
    let sum = fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(20 * i), a.add(Q8_1 * i));
        summs += f16_at(x.add(2)) * f16_at(y.add(2));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qy = _mm256_loadu_si256(y.add(4) as *const __m256i);
        let sumi = dot_u8_i8(nibbles_32(x.add(4)), qy);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
    });
    sum + summs
}

/// Q5_1 · Q8_1: Q4_1 with bit 4 of each quant in `qh`.
///
/// # Safety
/// As [`dot_q4_0`], with Q5_1 blocks (24 bytes) and Q8_1 activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let mut summs = 0.0f32;
    let sum = fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(24 * i), a.add(Q8_1 * i));
        summs += f16_at(x.add(2)) * f16_at(y.add(2));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qh = (x.add(4) as *const u32).read_unaligned();
        let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(nibbles_32(x.add(8)), high);
        let qy = _mm256_loadu_si256(y.add(4) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(qx, qy)), acc)
    });
    sum + summs
}
