//! The float micro-kernels of [`super::float`] for x86-64: AVX2 (+FMA) takes 4 rows × 2
//! tokens per pass (8 accumulators, 4 weight and 1 activation register of AVX2's 16),
//! AVX-512 4 rows × 4 tokens (16 accumulators of 32 registers).

use std::arch::x86_64::*;

use super::float::{check, STEP};
use super::MR;

/// See [`super::float::reference`]; chosen only when the CPU has AVX2 and FMA.
pub(super) fn micro_avx2(
    w: [&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    n_tokens: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    check(&w, a, a_stride, n_tokens, n, out, stride);
    let mut t = 0;
    // SAFETY: `MicroKernel::for_level` hands this kernel out only for the AVX2 level
    // (avx2 and fma detected); `check` verified that every row, token and output the
    // passes read or write is inside the slices.
    unsafe {
        while t + 2 <= n_tokens {
            pass_avx2::<2>(&w, a, a_stride, t, n, out, stride);
            t += 2;
        }
        if t < n_tokens {
            pass_avx2::<1>(&w, a, a_stride, t, n, out, stride);
        }
    }
}

/// Tokens `t0..t0 + T` against the 4 rows.
///
/// # Safety
/// AVX2 and FMA, and the shapes [`check`]ed.
// Index loops: each accumulator is `acc[row][token]`, read across both dimensions.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
unsafe fn pass_avx2<const T: usize>(
    w: &[&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    t0: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); T]; MR];
    // SAFETY: the caller's contract: k + 8 <= n for every row and token read.
    unsafe {
        for k in (0..n).step_by(8) {
            let wv: [__m256; MR] = std::array::from_fn(|i| _mm256_loadu_ps(w[i].as_ptr().add(k)));
            for j in 0..T {
                let av = _mm256_loadu_ps(a.as_ptr().add((t0 + j) * a_stride + k));
                for i in 0..MR {
                    acc[i][j] = _mm256_fmadd_ps(wv[i], av, acc[i][j]);
                }
            }
        }
    }
    for j in 0..T {
        // The 4 rows' totals at once.
        let ab = _mm256_hadd_ps(acc[0][j], acc[1][j]);
        let cd = _mm256_hadd_ps(acc[2][j], acc[3][j]);
        let abcd = _mm256_hadd_ps(ab, cd);
        let sums = _mm_add_ps(
            _mm256_castps256_ps128(abcd),
            _mm256_extractf128_ps::<1>(abcd),
        );
        let o = &mut out[(t0 + j) * stride..][..MR];
        let mut s = [0f32; MR];
        // SAFETY: `s` holds 4 floats.
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), sums) };
        for (o, s) in o.iter_mut().zip(s) {
            *o += s;
        }
    }
}

/// See [`super::float::reference`]; chosen only when the CPU has AVX-512 F.
pub(super) fn micro_avx512(
    w: [&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    n_tokens: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    const { assert!(STEP.is_multiple_of(16)) };
    check(&w, a, a_stride, n_tokens, n, out, stride);
    let mut t = 0;
    // SAFETY: `MicroKernel::for_level` hands this kernel out only for the AVX-512 level
    // (avx512f detected); `check` verified the shapes.
    unsafe {
        while t + 4 <= n_tokens {
            pass_avx512::<4>(&w, a, a_stride, t, n, out, stride);
            t += 4;
        }
        match n_tokens - t {
            3 => pass_avx512::<3>(&w, a, a_stride, t, n, out, stride),
            2 => pass_avx512::<2>(&w, a, a_stride, t, n, out, stride),
            1 => pass_avx512::<1>(&w, a, a_stride, t, n, out, stride),
            _ => {}
        }
    }
}

/// Tokens `t0..t0 + T` against the 4 rows.
///
/// # Safety
/// AVX-512 F, and the shapes [`check`]ed.
// Index loops: each accumulator is `acc[row][token]`, read across both dimensions.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn pass_avx512<const T: usize>(
    w: &[&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    t0: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; MR];
    // SAFETY: the caller's contract: k + 16 <= n for every row and token read.
    unsafe {
        for k in (0..n).step_by(16) {
            let wv: [__m512; MR] = std::array::from_fn(|i| _mm512_loadu_ps(w[i].as_ptr().add(k)));
            for j in 0..T {
                let av = _mm512_loadu_ps(a.as_ptr().add((t0 + j) * a_stride + k));
                for i in 0..MR {
                    acc[i][j] = _mm512_fmadd_ps(wv[i], av, acc[i][j]);
                }
            }
        }
    }
    for j in 0..T {
        let o = &mut out[(t0 + j) * stride..][..MR];
        for (i, o) in o.iter_mut().enumerate() {
            *o += _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}
