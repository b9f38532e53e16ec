//! F32, F16 and BF16 weight rows dotted with f32 activations.
//!
//! Four independent accumulators of eight lanes keep four FMA chains in flight, so the
//! loop is bound by loads, not by FMA latency. The reference accumulates in f64; these
//! accumulate in f32 (as ggml's SIMD path does), which the tests' tolerance accounts for.

use core::arch::x86_64::*;

use super::util::hsum_ps;

/// Eight weights starting at element `i` of a row, widened to f32.
trait Widen {
    /// # Safety
    /// The CPU must support AVX2/FMA/F16C; `w` must be valid for 8 weights from `i`.
    unsafe fn load8(w: *const u8, i: usize) -> __m256;
    /// One weight as f32.
    /// # Safety
    /// `w` must be valid for the weight at `i`.
    unsafe fn load1(w: *const u8, i: usize) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl Widen for F32 {
    #[inline(always)]
    unsafe fn load8(w: *const u8, i: usize) -> __m256 {
        _mm256_loadu_ps(w.add(4 * i) as *const f32)
    }
    #[inline(always)]
    unsafe fn load1(w: *const u8, i: usize) -> f32 {
        (w.add(4 * i) as *const f32).read_unaligned()
    }
}

impl Widen for F16 {
    #[inline(always)]
    unsafe fn load8(w: *const u8, i: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load1(w: *const u8, i: usize) -> f32 {
        super::util::f16_at(w.add(2 * i))
    }
}

impl Widen for Bf16 {
    #[inline(always)]
    unsafe fn load8(w: *const u8, i: usize) -> __m256 {
        // BF16 is the upper half of an f32: widen to 32 bits and shift into place.
        let h = _mm_loadu_si128(w.add(2 * i) as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn load1(w: *const u8, i: usize) -> f32 {
        f32::from_bits(((w.add(2 * i) as *const u16).read_unaligned() as u32) << 16)
    }
}

/// Σ w[i]·a[i] over `n` elements.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold `n` weights of format `W` and
/// `a` `n` f32 values (any alignment).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot<W: Widen>(w: *const u8, a: *const u8, n: usize) -> f32 {
    let a = a as *const f32;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            *acc = _mm256_fmadd_ps(W::load8(w, j), _mm256_loadu_ps(a.add(j)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(W::load8(w, i), _mm256_loadu_ps(a.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += W::load1(w, i) * a.add(i).read_unaligned();
        i += 1;
    }
    sum
}

/// F32 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<F32>(w, a, n)
}

/// F16 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<F16>(w, a, n)
}

/// BF16 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_bf16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<Bf16>(w, a, n)
}
