//! The 32-element formats with AVX512-VNNI: Q4_0, Q5_0, Q8_0 and IQ4_NL against Q8_0
//! activations, Q4_1 and Q5_1 against Q8_1.
//!
//! These are the AVX2 kernels with `vpdpbusd` in place of the `maddubs` + `madd`-with-ones
//! pair. The Q8_0-activation formats take two blocks per 512-bit step, so that one
//! `vpdpbusd`, one conversion and one FMA serve two blocks; the block scales are
//! multiplied as scalars (integer f16 conversion, off the vector ports) and the weights'
//! signs move onto the activations with mask registers (`vpsignb` has no 512-bit form).
//! Q5_0 gains most: its sign mask is its `qh` bits as they are, loaded into a mask
//! register, where AVX2 spreads them into bytes with four vector instructions. Per two
//! blocks the loop went from ~38 to ~15 vector instructions (Q5_0) and ~20 to ~12
//! (Q8_0); `benches/matvec.rs`, one thread, huge pages: Q5_0 8.0 → 14.8 GiB/s on a
//! Zen 5 core (noisy, shared machine), Q5_0 6.3 → 8.9 and Q8_0 7.0 → 16.0 GiB/s on a
//! quiet Sapphire Rapids-class Xeon core.
//! The Q8_1-activation formats stay one block per 256-bit vector. Without VNNI the AVX2
//! kernels stay installed. The order of float operations is the AVX2 kernels' own (the
//! two 256-bit halves of the accumulator are `fold_blocks`' even and odd accumulators),
//! so both give bit-identical results (see the test in `mod.rs`).
//!
//! Decoding multiplies whole matrices by one activation row, so the same formats also
//! have multi-row kernels ([`ROWS`] rows per call, `Kernels::dot_rows`): the rows share
//! the activation loads and scales, the weights enter `vpdpbusd` as unsigned bytes with
//! the offset taken off once per step for all rows (see [`Unsigned32`]), and the next
//! groups' lines are prefetched. Each row's result is bit for bit its single-row dot
//! (`tests/dot_rows.rs`). `benches/decode_shapes.rs`, Gemma 3 270M shapes (640 columns),
//! one thread, huge pages, Zen 5 (shared machine, medians): Q8_0 output head 20.8 →
//! 29.6 GiB/s (the core's read bandwidth), Q5_0 [2048, 640] 12.9 → 16.4 GiB/s.

use core::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::super::avx2::q32::fold_blocks;
use super::super::avx2::util::{bytes_from_bits, f16_at, f16_splat, hsum_ps, nibbles_32};
use crate::quant::blocks::KVALUES_IQ4NL;

/// Σ x·y over 32 signed byte pairs as eight i32 sums: |x| (exact as an unsigned byte,
/// -128 included) times y with x's sign; y must lie in -127..=127, as every activation
/// quantizer guarantees, so negating it cannot wrap.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

/// A 32-element weight format: how one block's 32 quants become bytes.
trait Block32 {
    /// Bytes per weight block.
    const BYTES: usize;
    /// Offset of the quants' packed nibbles (or bytes) in the block.
    const QS: usize;
    /// The block's 32 quants in element order: signed weights (before scaling) for the
    /// Q8_0-activation formats, unsigned 0..32 for Q4_1/Q5_1.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` must point at a whole block.
    unsafe fn quants(x: *const u8) -> __m256i;

    /// Two consecutive blocks (at `x` and `x + BYTES`) against their activations `y`
    /// (block `i` in the low 256 bits, `i + 1` in the high): the weights' magnitudes and
    /// `y` with the weights' signs, the operands `vpdpbusd` needs for a signed product.
    /// The default negates through a sign mask (`vpsignb` has no 512-bit form); Q5_0
    /// knows its signs from `qh` and does it in two masked subtractions.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and AVX2; `x` must point at two whole blocks.
    /// Only the Q8_0-activation formats (signed quants) may call it.
    #[inline(always)]
    unsafe fn signed_pair(x: *const u8, y: __m512i) -> (__m512i, __m512i) {
        let q = join(Self::quants(x), Self::quants(x.add(Self::BYTES)));
        let negative = _mm512_movepi8_mask(q);
        let ax = _mm512_abs_epi8(q);
        (
            ax,
            _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y),
        )
    }
}

/// A Q8_0-activation format whose weights are `q - OFFSET` with unsigned bytes `q`: the
/// multi-row kernels' form. `vpdpbusd` then takes `q` as it is (unsigned × signed), and
/// the offset comes back as `OFFSET · Σ y` per i32 lane, which depends on the activations
/// only and so is formed once per step for all rows; per row this saves the sign moves
/// of [`Block32::signed_pair`]. The i32 lane sums are exactly the signed ones
/// (`Σ (q - OFFSET)·y`, four pairs per lane), so the results are too.
trait Unsigned32: Block32 {
    /// What the weights' unsigned bytes exceed their values by.
    const OFFSET: u8;

    /// Two consecutive blocks' unsigned quants, block `i` in the low 256 bits.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and AVX2; `x` must point at two whole blocks.
    unsafe fn unsigned_pair(x: *const u8) -> __m512i;
}

/// Nibbles of two 16-byte runs, `p` and `q`, in element order: p's low nibbles, p's high
/// nibbles, q's low, q's high (one 128-bit lane each).
#[inline(always)]
unsafe fn nibbles_pair(p: *const u8, q: *const u8) -> __m512i {
    let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const _));
    let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(q as *const _));
    let shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
    _mm512_and_si512(
        _mm512_srlv_epi32(join(lo, hi), shift),
        _mm512_set1_epi8(0x0F),
    )
}

impl Unsigned32 for Q4_0 {
    const OFFSET: u8 = 8;
    #[inline(always)]
    unsafe fn unsigned_pair(x: *const u8) -> __m512i {
        nibbles_pair(x.add(Self::QS), x.add(Self::BYTES + Self::QS))
    }
}

impl Unsigned32 for Q5_0 {
    const OFFSET: u8 = 16;
    #[inline(always)]
    unsafe fn unsigned_pair(x: *const u8) -> __m512i {
        // The fifth bits straight from `qh` into a mask register: one masked OR.
        let qh0 = (x.add(2) as *const u32).read_unaligned() as u64;
        let qh1 = (x.add(Self::BYTES + 2) as *const u32).read_unaligned() as u64;
        let nibbles = nibbles_pair(x.add(Self::QS), x.add(Self::BYTES + Self::QS));
        _mm512_mask_add_epi8(nibbles, qh0 | qh1 << 32, nibbles, _mm512_set1_epi8(16))
    }
}

impl Unsigned32 for Q8_0 {
    const OFFSET: u8 = 128;
    #[inline(always)]
    unsafe fn unsigned_pair(x: *const u8) -> __m512i {
        // q + 128 is q with its sign bit flipped.
        let q = join(Self::quants(x), Self::quants(x.add(Self::BYTES)));
        _mm512_xor_si512(q, _mm512_set1_epi8(0x80u8 as i8))
    }
}

/// The IQ4_NL codebook plus 128 (all of it lies in -127..=113), for [`Unsigned32`].
static KVALUES_IQ4NL_U: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

impl Unsigned32 for Iq4Nl {
    const OFFSET: u8 = 128;
    #[inline(always)]
    unsafe fn unsigned_pair(x: *const u8) -> __m512i {
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL_U.as_ptr() as *const _));
        let idx = nibbles_pair(x.add(Self::QS), x.add(Self::BYTES + Self::QS));
        _mm512_shuffle_epi8(table, idx)
    }
}

/// Two 256-bit halves as one vector, `lo` in the low lanes.
#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

struct Q4_0;
struct Q5_0;
struct Q8_0;
struct Iq4Nl;
struct Q4_1;
struct Q5_1;

impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    const QS: usize = 2;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        _mm256_sub_epi8(nibbles_32(x.add(Self::QS)), _mm256_set1_epi8(8))
    }
}

impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    const QS: usize = 6;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        let qh = (x.add(2) as *const u32).read_unaligned();
        // q - 16: the nibble when the high bit is set, else the nibble with 0xF0 on top
        // (its two's complement, minus 16).
        let top = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
        _mm256_or_si256(nibbles_32(x.add(Self::QS)), top)
    }

    #[inline(always)]
    unsafe fn signed_pair(x: *const u8, y: __m512i) -> (__m512i, __m512i) {
        // q - 16 is negative exactly where the high bit is clear (q < 16), and its
        // magnitude is then 16 - nibble; where the bit is set it is the nibble itself.
        // So the clear bits are the sign mask, and no sign has to be computed.
        let qh0 = (x.add(2) as *const u32).read_unaligned() as u64;
        let qh1 = (x.add(Self::BYTES + 2) as *const u32).read_unaligned() as u64;
        let negative: __mmask64 = !(qh0 | qh1 << 32);
        let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(x.add(Self::QS) as *const _));
        let hi =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(x.add(Self::BYTES + Self::QS) as *const _));
        // Low nibbles are elements 0..16 of each block, high nibbles 16..32.
        let shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
        let nibbles = _mm512_and_si512(
            _mm512_srlv_epi32(join(lo, hi), shift),
            _mm512_set1_epi8(0x0F),
        );
        let ax = _mm512_mask_sub_epi8(nibbles, negative, _mm512_set1_epi8(16), nibbles);
        (
            ax,
            _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y),
        )
    }
}

impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    const QS: usize = 2;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        _mm256_loadu_si256(x.add(Self::QS) as *const __m256i)
    }
}

impl Block32 for Iq4Nl {
    const BYTES: usize = 18;
    const QS: usize = 2;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        let table = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
        let table = _mm256_set_m128i(table, table);
        _mm256_shuffle_epi8(table, nibbles_32(x.add(Self::QS)))
    }
}

impl Block32 for Q4_1 {
    const BYTES: usize = 20;
    const QS: usize = 4;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        nibbles_32(x.add(Self::QS))
    }
}

impl Block32 for Q5_1 {
    const BYTES: usize = 24;
    const QS: usize = 8;
    #[inline(always)]
    unsafe fn quants(x: *const u8) -> __m256i {
        let qh = (x.add(4) as *const u32).read_unaligned();
        let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles_32(x.add(Self::QS)), high)
    }
}

/// The scales of two blocks, `d(x0)·d(y0)` in the low 256 bits and `d(x1)·d(y1)` in the
/// high ones, from the f16 `d` at the start of each block.
///
/// The four halves go through one `vcvtph2ps` from a general-purpose register (written
/// with integer ops, which leave the vector ports free) and one multiply; a scalar
/// conversion per half was vectorized by LLVM into about ten instructions each.
///
/// # Safety
/// The CPU must support AVX-512 F and F16C; each pointer must be valid for 2 bytes.
#[inline(always)]
unsafe fn scale_pair(x0: *const u8, x1: *const u8, y0: *const u8, y1: *const u8) -> __m512 {
    let half = |p: *const u8| (p as *const u16).read_unaligned() as u64;
    let h = half(x0) | half(x1) << 16 | half(y0) << 32 | half(y1) << 48;
    // [dx0, dx1, dy0, dy1] → [dx0·dy0, dx1·dy1, ..]
    let f = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64));
    let d = _mm_mul_ps(f, _mm_movehl_ps(f, f));
    let lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(d))
}

/// Weights of format `B` against Q8_0 activations (34-byte blocks).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 VL and AVX512-VNNI; `w` must hold `nb`
/// blocks of `B` and `a` `nb` Q8_0 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_q8_0_acts<B: Block32>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    // Two blocks per 512-bit step: block i in the low half, i + 1 in the high one. The
    // halves are `fold_blocks`' two accumulators (even and odd blocks), so the float
    // operations, and hence the result, are exactly the AVX2 kernel's.
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 2 <= nb {
        let (x, y) = (w.add(B::BYTES * i), a.add(34 * i));
        let d = scale_pair(x, x.add(B::BYTES), y, y.add(34));
        let qy = join(
            _mm256_loadu_si256(y.add(2) as *const __m256i),
            _mm256_loadu_si256(y.add(36) as *const __m256i),
        );
        let (ax, sy) = B::signed_pair(x, qy);
        let sumi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy);
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
        i += 2;
    }
    let mut acc0 = _mm512_castps512_ps256(acc);
    let acc1 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    if i < nb {
        let (x, y) = (w.add(B::BYTES * i), a.add(34 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(B::quants(x), qy)), acc0);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

/// Rows of one multi-row call: enough to share each activation load and scale between
/// four rows and pay the loop overhead once per group, few enough that the four 512-bit
/// accumulators and their temporaries stay in registers.
pub const ROWS: usize = 4;

/// How many groups of [`ROWS`] rows ahead the multi-row kernels prefetch. Four rows read
/// side by side are four interleaved streams, which the hardware prefetchers follow badly
/// (Q8_0 rows of 640 went from 21 to 7.5 GiB/s without this); so each step asks for the
/// lines that the same step of a later group will read, which keeps the accesses in
/// flight ahead of the loads.
const PREFETCH_GROUPS: usize = 2;

/// [`dot_q8_0_acts`] for [`ROWS`] rows at once, `stride` bytes apart: `out[r]` is exactly
/// `dot_q8_0_acts(w + r·stride, a, nb)`.
///
/// Each row's operations are the single-row kernel's, in the same order: the same i32
/// sums, the same `dx·dy` products (f32 multiplication commutes exactly; only where the
/// two halves are converted differs), the same FMAs into the same accumulator halves, the
/// same odd-block tail and final sum. What the rows share is the activation quants (two
/// loads and an insert per step) and the activation scales (one conversion); the four
/// rows' weight scales go through one `vcvtph2ps` and one multiply.
///
/// # Safety
/// As [`dot_q8_0_acts`], for each of the [`ROWS`] rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_rows_q8_0_acts<B: Unsigned32>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let half = |p: *const u8| (p as *const u16).read_unaligned() as u64;
    // Lane group of row r's two products in the converted vector below: [2r, 2r + 1].
    let lanes = [0, 2, 4, 6].map(|r| pair_lanes(r));
    let mut acc = [_mm512_setzero_ps(); ROWS];
    let mut i = 0;
    while i + 2 <= nb {
        // The bytes a group's step reads, in address order, are ROWS·2·BYTES long at most
        // (weight rows are contiguous); fetch that stretch of a later group. Past the
        // matrix the address is never dereferenced: a prefetch does not fault.
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + B::BYTES * i));
        for k in 0..(2 * ROWS * B::BYTES).div_ceil(64) + 1 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let y = a.add(34 * i);
        let qy = join(
            _mm256_loadu_si256(y.add(2) as *const __m256i),
            _mm256_loadu_si256(y.add(36) as *const __m256i),
        );
        // [dy0, dy1] repeated four times, against [dx0, dx1] of rows 0..4.
        let hy = half(y) | half(y.add(34)) << 16;
        let dy = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(_mm_cvtph_ps(
            _mm_cvtsi32_si128(hy as i32),
        ))));
        let x = w.add(B::BYTES * i);
        let pair = |r: usize| {
            let xr = x.add(r * stride);
            half(xr) | half(xr.add(B::BYTES)) << 16
        };
        let hx = _mm_set_epi64x(
            (pair(2) | pair(3) << 32) as i64,
            (pair(0) | pair(1) << 32) as i64,
        );
        let d = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtph_ps(hx), dy));
        // -OFFSET · Σ y for each i32 lane (four activations), the start of every row's
        // sum; |4 · 128 · 127| is far inside i32.
        let offset = _mm512_dpbusd_epi32(
            _mm512_setzero_si512(),
            _mm512_set1_epi8(B::OFFSET as i8),
            qy,
        );
        let start = _mm512_sub_epi32(_mm512_setzero_si512(), offset);
        for (r, acc) in acc.iter_mut().enumerate() {
            let sumi = _mm512_dpbusd_epi32(start, B::unsigned_pair(x.add(r * stride)), qy);
            let dr = _mm512_permutexvar_ps(lanes[r], d);
            *acc = _mm512_fmadd_ps(dr, _mm512_cvtepi32_ps(sumi), *acc);
        }
        i += 2;
    }
    let mut out = [0.0; ROWS];
    for (r, (acc, out)) in acc.iter().zip(&mut out).enumerate() {
        let mut acc0 = _mm512_castps512_ps256(*acc);
        let acc1 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
        if i < nb {
            let (x, y) = (w.add(r * stride + B::BYTES * i), a.add(34 * i));
            let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
            let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
            acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(B::quants(x), qy)), acc0);
        }
        *out = hsum_ps(_mm256_add_ps(acc0, acc1));
    }
    out
}

/// Tokens per pass of the several-tokens kernels: a tile of [`ROWS`] rows by four tokens
/// keeps sixteen 512-bit accumulators and the four rows' quants and scales in the 32
/// registers; the tokens' activations come from memory operands.
pub const TOKENS: usize = 4;

/// One token's activations over one pair of blocks, in the form the several-tokens
/// kernels consume: both blocks' quants as one vector, `dy` spread over each block's
/// eight i32 lanes, and the offset's share `-OFFSET · Σ y` per lane (see
/// [`Unsigned32`]). Made once per product call for all its rows, where the kernels used
/// to make it again for every group of [`ROWS`] rows: a join, a scale conversion and
/// spread, and an offset sum per token and pair, a fifth of a Q8_0 tile's vector
/// instructions.
#[derive(Clone, Copy)]
#[repr(C)]
struct PairActs {
    qy: __m512i,
    dy: __m512,
    start: __m512i,
}

/// Pairs of blocks whose activations are prepared at once: 24 KiB for four tokens, which
/// stays in L1 while every row group of the call passes over it. Longer rows are done in
/// chunks, the row groups' accumulators kept between chunks.
const CHUNK_PAIRS: usize = 32;

/// Row groups per block of a call's rows, whose accumulators a chunked row keeps.
const BLOCK_GROUPS: usize = 16;

/// Lanes `[r ×8, r+1 ×8]` of a permute: a vector's element `r` over the first block's
/// eight lanes and `r + 1` over the second's.
#[target_feature(enable = "avx512f")]
#[inline]
fn pair_lanes(r: i32) -> __m512i {
    _mm512_setr_epi32(
        r,
        r,
        r,
        r,
        r,
        r,
        r,
        r,
        r + 1,
        r + 1,
        r + 1,
        r + 1,
        r + 1,
        r + 1,
        r + 1,
        r + 1,
    )
}

/// The [`PairActs`] of the two activation blocks at `y` and `y + 34`, with the operations
/// [`dot_rows_q8_0_acts`] applies to them (so the products that use it are its own).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, AVX2 and F16C; `y` must point at two whole
/// Q8_0 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn prepare_pair<B: Unsigned32>(y: *const u8) -> PairActs {
    let half = |p: *const u8| (p as *const u16).read_unaligned() as u64;
    let qy = join(
        _mm256_loadu_si256(y.add(2) as *const __m256i),
        _mm256_loadu_si256(y.add(36) as *const __m256i),
    );
    let hy = half(y) | half(y.add(34)) << 16;
    let dy = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(hy as i32)));
    let offset = _mm512_dpbusd_epi32(
        _mm512_setzero_si512(),
        _mm512_set1_epi8(B::OFFSET as i8),
        qy,
    );
    PairActs {
        qy,
        dy: _mm512_permutexvar_ps(pair_lanes(0), dy),
        start: _mm512_sub_epi32(_mm512_setzero_si512(), offset),
    }
}

/// Adds pairs `p0..p1` of [`ROWS`] rows (`stride` bytes apart) against `T` tokens'
/// prepared activations (`acts[(p - p0)·T + t]`) to the accumulators, with
/// [`dot_rows_q8_0_acts`]' operations per (row, token) and pair: the same i32 lane sums,
/// the same `dx·dy` products (the row's `[dx0, dx1]` times the token's), the same FMAs.
///
/// # Safety
/// As [`dot_rows_q8_0_acts`] for each row over blocks `2·p0..2·p1`; `acts` must hold
/// `(p1 - p0)·T` prepared entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
// The tile is indexed by (token, row) while rows are the outer loop.
#[allow(clippy::needless_range_loop)]
#[inline]
unsafe fn pairs_prepared<B: Unsigned32, const T: usize>(
    w: *const u8,
    stride: usize,
    acts: *const PairActs,
    (p0, p1): (usize, usize),
    acc: &mut [[__m512; ROWS]; T],
) {
    let half = |p: *const u8| (p as *const u16).read_unaligned() as u64;
    let lanes = [0, 2, 4, 6].map(|r| pair_lanes(r));
    let mut tile = *acc;
    for p in p0..p1 {
        let i = 2 * p;
        // As in dot_rows_q8_0_acts: the stretch of a later group that this step's reads
        // correspond to (never dereferenced; a prefetch does not fault).
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + B::BYTES * i));
        for k in 0..(2 * ROWS * B::BYTES).div_ceil(64) + 1 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let x = w.add(B::BYTES * i);
        let pair = |r: usize| {
            let xr = x.add(r * stride);
            half(xr) | half(xr.add(B::BYTES)) << 16
        };
        let hx = _mm_set_epi64x(
            (pair(2) | pair(3) << 32) as i64,
            (pair(0) | pair(1) << 32) as i64,
        );
        let dx = _mm512_castps256_ps512(_mm256_cvtph_ps(hx));
        // Loops, not `array::from_fn`: a closure's body does not inherit the target
        // features, and it is not always inlined.
        let mut q = [_mm512_setzero_si512(); ROWS];
        let mut dxr = [_mm512_setzero_ps(); ROWS];
        for r in 0..ROWS {
            q[r] = B::unsigned_pair(x.add(r * stride));
            dxr[r] = _mm512_permutexvar_ps(lanes[r], dx);
        }
        let acts = acts.add((p - p0) * T);
        for (t, acc) in tile.iter_mut().enumerate() {
            let y = &*acts.add(t);
            for r in 0..ROWS {
                let sumi = _mm512_dpbusd_epi32(y.start, q[r], y.qy);
                let d = _mm512_mul_ps(dxr[r], y.dy);
                acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[r]);
            }
        }
    }
    *acc = tile;
}

/// The sums of a tile whose pairs are done: the odd last block (if `nb` is odd) and the
/// final reduction, as [`dot_rows_q8_0_acts`] ends.
///
/// # Safety
/// As [`dot_rows_q8_0_acts`] for each of the [`ROWS`] rows and `T` tokens.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn finish_tile<B: Unsigned32, const T: usize>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
    acc: &[[__m512; ROWS]; T],
) -> [[f32; ROWS]; T] {
    let i = nb - nb % 2;
    let mut out = [[0.0; ROWS]; T];
    for (t, (acc, out)) in acc.iter().zip(&mut out).enumerate() {
        for (r, (acc, out)) in acc.iter().zip(out).enumerate() {
            let mut acc0 = _mm512_castps512_ps256(*acc);
            let acc1 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*acc)));
            if i < nb {
                let (x, y) = (
                    w.add(r * stride + B::BYTES * i),
                    a.add(t * a_stride + 34 * i),
                );
                let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
                let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
                acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(B::quants(x), qy)), acc0);
            }
            *out = hsum_ps(_mm256_add_ps(acc0, acc1));
        }
    }
    out
}

/// `T` tokens (`a + t·a_stride`) against rows `0..n_rows` (a multiple of [`ROWS`],
/// `stride` bytes apart), into `out[(t0 + t)·out_rows + r]`: each token's activations
/// are prepared once per chunk of pairs ([`PairActs`]) for every row group of the call.
/// Each result is exactly the single-row dot (`dot_q8_0_acts`).
///
/// # Safety
/// As [`dot_rows_q8_0_acts`] for every group of rows and each of the `T` tokens; `out`
/// must hold `(t0 + T)·out_rows` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tokens_prepared<B: Unsigned32, const T: usize>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
    n_rows: usize,
    (t0, out_rows): (usize, usize),
    out: &mut [f32],
) {
    let n_pairs = nb / 2;
    let mut acts = [const { MaybeUninit::<PairActs>::uninit() }; CHUNK_PAIRS * TOKENS];
    let mut kept = [const { MaybeUninit::<[[__m512; ROWS]; T]>::uninit() }; BLOCK_GROUPS];
    for r0 in (0..n_rows).step_by(BLOCK_GROUPS * ROWS) {
        let r1 = (r0 + BLOCK_GROUPS * ROWS).min(n_rows);
        // One pass even without pairs (a single block): it ends the tiles.
        let mut c0 = 0;
        loop {
            let c1 = (c0 + CHUNK_PAIRS).min(n_pairs);
            for p in c0..c1 {
                for t in 0..T {
                    acts[(p - c0) * T + t].write(prepare_pair::<B>(a.add(t * a_stride + 68 * p)));
                }
            }
            let last = c1 == n_pairs;
            for (k, g) in (r0..r1).step_by(ROWS).enumerate() {
                let wg = w.add(g * stride);
                let mut acc = if c0 == 0 {
                    [[_mm512_setzero_ps(); ROWS]; T]
                } else {
                    kept[k].assume_init()
                };
                pairs_prepared::<B, T>(wg, stride, acts.as_ptr().cast(), (c0, c1), &mut acc);
                if last {
                    let sums = finish_tile::<B, T>(wg, stride, a, a_stride, nb, &acc);
                    for (t, sums) in sums.iter().enumerate() {
                        out[(t0 + t) * out_rows + g..][..ROWS].copy_from_slice(sums);
                    }
                } else {
                    kept[k].write(acc);
                }
            }
            if last {
                break;
            }
            c0 = c1;
        }
    }
}

/// The several-tokens product ([`crate::dispatch::DotTokensFn`]) of format `B`, `nb`
/// blocks per row, `n_rows` rows `stride` bytes apart, `n_tokens` activation rows
/// `a_stride` apart: tokens [`TOKENS`] at a time through [`tokens_prepared`] (one token
/// alone through [`dot_rows_q8_0_acts`]), rows past the last whole group through the
/// single-row dot.
///
/// # Safety
/// As [`dot_q8_0_acts`] for every row and token; `out` must hold `n_tokens · n_rows`
/// values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_tokens_q8_0_acts<B: Unsigned32>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
    n_rows: usize,
    n_tokens: usize,
    out: &mut [f32],
) {
    let done = n_rows - n_rows % ROWS;
    for t0 in (0..n_tokens).step_by(TOKENS) {
        let at = a.add(t0 * a_stride);
        let rows = (t0, n_rows);
        match n_tokens - t0 {
            1 => {
                for g in (0..done).step_by(ROWS) {
                    let sums = dot_rows_q8_0_acts::<B>(w.add(g * stride), stride, at, nb);
                    out[t0 * n_rows + g..][..ROWS].copy_from_slice(&sums);
                }
            }
            2 => tokens_prepared::<B, 2>(w, stride, at, a_stride, nb, done, rows, out),
            3 => tokens_prepared::<B, 3>(w, stride, at, a_stride, nb, done, rows, out),
            _ => tokens_prepared::<B, TOKENS>(w, stride, at, a_stride, nb, done, rows, out),
        }
    }
    for r in done..n_rows {
        for t in 0..n_tokens {
            out[t * n_rows + r] = dot_q8_0_acts::<B>(w.add(r * stride), a.add(t * a_stride), nb);
        }
    }
}

/// Weights `d * q + m` of format `B` against Q8_1 activations (36-byte blocks): the
/// quants are unsigned, so `vpdpbusd` takes them as they are; the offset meets the
/// activations through their stored sum `s`.
///
/// # Safety
/// As [`dot_q8_0_acts`], with Q8_1 activation blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_q8_1_acts<B: Block32>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let mut summs = 0.0f32;
    let sum = fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(B::BYTES * i), a.add(36 * i));
        summs += f16_at(x.add(2)) * f16_at(y.add(2));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qy = _mm256_loadu_si256(y.add(4) as *const __m256i);
        let sumi = _mm256_dpbusd_epi32(_mm256_setzero_si256(), B::quants(x), qy);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
    });
    sum + summs
}

/// Defines the `#[target_feature]` entry point of one format.
macro_rules! kernel {
    ($name:ident, $body:ident, $block:ty, $what:literal) => {
        #[doc = concat!($what, " with AVX512-VNNI `vpdpbusd`.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX512-VNNI; `w`
        /// must hold `nb` weight blocks and `a` `nb` activation blocks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name(w: *const u8, a: *const u8, nb: usize) -> f32 {
            $body::<$block>(w, a, nb)
        }
    };
}

kernel!(dot_q4_0, dot_q8_0_acts, Q4_0, "Q4_0 · Q8_0");
kernel!(dot_q5_0, dot_q8_0_acts, Q5_0, "Q5_0 · Q8_0");
kernel!(dot_q8_0, dot_q8_0_acts, Q8_0, "Q8_0 · Q8_0");
kernel!(dot_iq4_nl, dot_q8_0_acts, Iq4Nl, "IQ4_NL · Q8_0");
kernel!(dot_q4_1, dot_q8_1_acts, Q4_1, "Q4_1 · Q8_1");
kernel!(dot_q5_1, dot_q8_1_acts, Q5_1, "Q5_1 · Q8_1");

/// Defines the `#[target_feature]` multi-row entry point of one format.
macro_rules! rows_kernel {
    ($name:ident, $block:ty, $what:literal) => {
        #[doc = concat!($what, " for [`ROWS`] rows `stride` bytes apart, with AVX512-VNNI.")]
        ///
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX-512 F/BW/VL and AVX512-VNNI; each of
        /// the [`ROWS`] rows at `w + r·stride` must hold `nb` weight blocks, and `a` `nb`
        /// activation blocks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
            dot_rows_q8_0_acts::<$block>(w, stride, a, nb)
        }
    };
}

rows_kernel!(dot_rows_q4_0, Q4_0, "Q4_0 · Q8_0");
rows_kernel!(dot_rows_q5_0, Q5_0, "Q5_0 · Q8_0");
rows_kernel!(dot_rows_q8_0, Q8_0, "Q8_0 · Q8_0");
rows_kernel!(dot_rows_iq4_nl, Iq4Nl, "IQ4_NL · Q8_0");

/// Defines the several-tokens product of one format ([`crate::dispatch::DotTokensFn`]).
macro_rules! tokens_kernel {
    ($name:ident, $block:ty, $what:literal) => {
        #[doc = concat!($what, " for several tokens, with AVX512-VNNI (see [`dot_tokens_q8_0_acts`]).")]
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
                <$block>::BYTES,
                34,
            );
            // SAFETY: the AVX-512 level's `register` installs this only when
            // Kernels::for_level detected AVX-512 F/BW/VL, VNNI, AVX2, FMA and F16C;
            // tokens_block_count checked that `w` holds n_rows rows of nb blocks,
            // row_bytes apart, `a` n_tokens rows of nb blocks a_stride apart, and `out`
            // n_tokens · n_rows values.
            unsafe {
                dot_tokens_q8_0_acts::<$block>(
                    w.as_ptr(),
                    row_bytes,
                    a.as_ptr(),
                    a_stride,
                    nb,
                    n_rows,
                    n_tokens,
                    out,
                )
            }
        }
    };
}

tokens_kernel!(dot_tokens_q4_0, Q4_0, "Q4_0 · Q8_0");
tokens_kernel!(dot_tokens_q5_0, Q5_0, "Q5_0 · Q8_0");
tokens_kernel!(dot_tokens_q8_0, Q8_0, "Q8_0 · Q8_0");
tokens_kernel!(dot_tokens_iq4_nl, Iq4Nl, "IQ4_NL · Q8_0");
