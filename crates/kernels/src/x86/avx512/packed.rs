//! Packed Q8_0 rows (`crate::matmul::packed`) with AVX512-VNNI.
//!
//! A 512-bit register holds one chunk of a group: four quants of each of its sixteen
//! rows. The weights become unsigned for `vpdpbusd` by flipping their top bit (`q + 128`,
//! once per block for every token), and each token's four activations of that chunk are a
//! broadcast memory operand; the `128 · Σ a` this adds is taken off by starting the sum at
//! the prepared `-128 · Σ a`. So a block costs, per token, eight `vpdpbusd`, one
//! conversion, one scale product and one FMA for all sixteen rows.

use std::arch::x86_64::*;

use crate::matmul::packed::{ACT_BLOCK_BYTES, GROUP_BLOCK_BYTES, GROUP_ROWS};

/// Tokens per pass: their accumulators and the block's eight weight vectors stay in
/// registers.
const TOKENS: usize = 8;

/// How far ahead of the block being multiplied its group's bytes are prefetched.
/// Eight blocks (4 KiB): sixteen was no better at four tokens on one thread.
const PREFETCH_BYTES: usize = 8 * GROUP_BLOCK_BYTES;

/// One group against `T` tokens (`a + t·a_stride`, `nb` prepared blocks each), the sums
/// stored at `out + t·out_stride`, sixteen rows each.
///
/// # Safety
/// The CPU must support AVX-512 F/BW and VNNI, AVX2 and F16C; `g` must hold `nb` group
/// blocks, each token `nb` prepared blocks, and each `out + t·out_stride` sixteen floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
#[inline]
unsafe fn group<const T: usize>(
    g: *const u8,
    nb: usize,
    a: *const u8,
    a_stride: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let blk = g.add(b * GROUP_BLOCK_BYTES);
        // The block PREFETCH_BYTES ahead (into the next group's, past the last group's
        // end: a prefetch never faults), so that its lines are in flight while this
        // one computes; the hardware prefetchers alone left the multiplies waiting on
        // memory at four tokens and more.
        let ahead = blk.wrapping_add(PREFETCH_BYTES);
        for k in 0..GROUP_BLOCK_BYTES.div_ceil(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * k) as *const i8);
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let mut w = [_mm512_setzero_si512(); 8];
        for c in 0..8 {
            let q = _mm512_loadu_si512(blk.add(2 * GROUP_ROWS + 64 * c) as *const _);
            w[c] = _mm512_xor_si512(q, flip);
        }
        for t in 0..T {
            let y = a.add(t * a_stride + b * ACT_BLOCK_BYTES);
            let word = |at: usize| (y.add(at) as *const i32).read_unaligned();
            let mut sum = _mm512_set1_epi32(word(4));
            for c in 0..8 {
                sum = _mm512_dpbusd_epi32(sum, w[c], _mm512_set1_epi32(word(8 + 4 * c)));
            }
            let d = _mm512_mul_ps(dw, _mm512_set1_ps((y as *const f32).read_unaligned()));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), d, acc[t]);
        }
    }
    for t in 0..T {
        _mm512_storeu_ps(out.add(t * out_stride), acc[t]);
    }
}

/// The level's [`crate::dispatch::PackedDotFn`]: every group of the call against the
/// tokens [`TOKENS`] at a time.
pub(super) fn dot_groups(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    let n_groups = crate::matmul::packed::check_call(groups, nb, acts, n_tokens, out);
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
                let g = groups.as_ptr().add(gi * nb * GROUP_BLOCK_BYTES);
                let a = acts.as_ptr().add(t0 * a_stride);
                let o = out.as_mut_ptr().add(t0 * n_rows + gi * GROUP_ROWS);
                match n_tokens - t0 {
                    1 => group::<1>(g, nb, a, a_stride, o, n_rows),
                    2 => group::<2>(g, nb, a, a_stride, o, n_rows),
                    3 => group::<3>(g, nb, a, a_stride, o, n_rows),
                    4 => group::<4>(g, nb, a, a_stride, o, n_rows),
                    5 => group::<5>(g, nb, a, a_stride, o, n_rows),
                    6 => group::<6>(g, nb, a, a_stride, o, n_rows),
                    7 => group::<7>(g, nb, a, a_stride, o, n_rows),
                    _ => group::<TOKENS>(g, nb, a, a_stride, o, n_rows),
                }
            }
        }
    }
}
