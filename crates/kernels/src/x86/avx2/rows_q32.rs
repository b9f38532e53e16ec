//! Several weight rows at once for the signed 32-element formats, Q8_0 and IQ4_NL,
//! against Q8_0 activations (the unsigned ones, Q4_0 and Q5_0, are in `q32`).
//!
//! Per block, the activation quants and scale are loaded and converted once for all
//! [`ROWS`] rows; each row then forms [`dot_i8`]'s lane sums (the sign of its quants moved
//! onto the shared activations, which is what is left per row) and the single-row
//! kernel's float steps: the same `d_x·d_y`, the same FMA into the even or odd blocks'
//! accumulator, the same final sum (`q32::fold_blocks`). So `out[r]` equals the single-row
//! dot of row `r` bit for bit, which `tests/dot_rows.rs` checks.

use core::arch::x86_64::*;

use super::q32::{Iq4Nl, Q8_0Weights, SignedQuants, PREFETCH_GROUPS, Q8_0, ROWS};
use super::rows_k::prefetch_ahead;

// `prefetch_ahead` decides between L1 and L2 for groups of `rows_k::ROWS` rows fetched
// `PREFETCH_GROUPS` groups ahead: the same shape as here.
const _: () = assert!(ROWS == super::rows_k::ROWS);
use super::util::{dot_i8, f16_splat, hsum_ps};

/// [`ROWS`] rows `stride` bytes apart of the signed format `B` against Q8_0 activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; each of the [`ROWS`] rows at `w + r·stride`
/// must hold `nb` blocks of `B`, and `a` `nb` Q8_0 blocks.
#[inline(always)]
unsafe fn dot_rows_signed<B: SignedQuants>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
    let mut i = 0;
    while i + 2 <= nb {
        block::<B, 0>(&mut acc, w, stride, a, i);
        block::<B, 1>(&mut acc, w, stride, a, i + 1);
        i += 2;
    }
    if i < nb {
        block::<B, 0>(&mut acc, w, stride, a, i);
    }
    acc.map(|[even, odd]| hsum_ps(_mm256_add_ps(even, odd)))
}

/// Block `i` of [`dot_rows_signed`] into accumulator `PARITY` (`i % 2`) of every row: the
/// parity is a constant so that the accumulators stay in registers.
///
/// # Safety
/// As [`dot_rows_signed`], with `i < nb`.
#[inline(always)]
unsafe fn block<B: SignedQuants, const PARITY: usize>(
    acc: &mut [[__m256; 2]; ROWS],
    w: *const u8,
    stride: usize,
    a: *const u8,
    i: usize,
) {
    // A block step of a group reads ROWS·BYTES bytes at most in address order (the rows
    // are contiguous); fetch that stretch of a later group, into L2 when the rows are
    // long (`rows_k::L1_AHEAD`): into L1, as `q32`'s multi-row kernels do, Q8_0 rows of
    // 8960 columns read 9-14 GiB/s from DRAM instead of 19 (`dot_speed --dram 8960`).
    // Past the matrix the address is never dereferenced: a prefetch does not fault.
    let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + B::BYTES * i));
    prefetch_ahead(ahead, ROWS * B::BYTES, stride);
    let y = a.add(Q8_0 * i);
    let dy = f16_splat(y);
    let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
    for (r, acc) in acc.iter_mut().enumerate() {
        let x = w.add(r * stride + B::BYTES * i);
        let d = _mm256_mul_ps(f16_splat(x), dy);
        let sumi = dot_i8(B::quants(x), qy);
        acc[PARITY] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[PARITY]);
    }
}

/// [`dot_q8_0`](super::q32::dot_q8_0) for [`ROWS`] rows `stride` bytes apart; `out[r]`
/// equals its dot of row `r` bit for bit.
///
/// # Safety
/// As `dot_q8_0`, for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_q8_0(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_signed::<Q8_0Weights>(w, stride, a, nb)
}

/// [`dot_iq4_nl`](super::q32::dot_iq4_nl) for [`ROWS`] rows `stride` bytes apart;
/// `out[r]` equals its dot of row `r` bit for bit.
///
/// # Safety
/// As `dot_iq4_nl`, for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_iq4_nl(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_signed::<Iq4Nl>(w, stride, a, nb)
}
