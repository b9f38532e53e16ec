//! F32, F16 and BF16 weight rows dotted with f32 activations, 16 lanes at a time.
//!
//! Four accumulators keep four FMA chains in flight; the last partial vector is read with
//! a masked load, so there is no scalar tail.

use core::arch::x86_64::*;

/// How sixteen weights are widened to f32.
trait Widen {
    /// Bytes per weight.
    const BYTES: usize;
    /// `len` (≤ 16) weights from element `i`, the rest of the lanes zero.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL; `w` must be valid for `len` weights from `i`.
    unsafe fn load(w: *const u8, i: usize, mask: __mmask16) -> __m512;
}

struct F32;
struct F16;
struct Bf16;

impl Widen for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load(w: *const u8, i: usize, mask: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(mask, w.add(4 * i) as *const f32)
    }
}

impl Widen for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load(w: *const u8, i: usize, mask: __mmask16) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, w.add(2 * i) as *const i16))
    }
}

impl Widen for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load(w: *const u8, i: usize, mask: __mmask16) -> __m512 {
        // BF16 is the upper half of an f32: widen to 32 bits and shift into place.
        let h = _mm256_maskz_loadu_epi16(mask, w.add(2 * i) as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

/// Σ w[i]·a[i] over `n` elements.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C; `w` must hold `n` weights of
/// format `W` (`n * W::BYTES` bytes) and `a` `n` f32 values (any alignment).
#[inline(always)]
unsafe fn dot<W: Widen>(w: *const u8, a: *const u8, n: usize) -> f32 {
    debug_assert!(W::BYTES == 2 || W::BYTES == 4);
    let a = a as *const f32;
    let all = 0xFFFFu16;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *acc = _mm512_fmadd_ps(W::load(w, j, all), _mm512_loadu_ps(a.add(j)), *acc);
        }
        i += 64;
    }
    while i < n {
        // The final vector may be partial: load only the lanes that exist.
        let left = n - i;
        let mask = if left >= 16 { all } else { (1u16 << left) - 1 };
        let av = _mm512_maskz_loadu_ps(mask, a.add(i));
        acc[0] = _mm512_fmadd_ps(W::load(w, i, mask), av, acc[0]);
        i += 16;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum)
}

/// F32 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_f32(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<F32>(w, a, n)
}

/// F16 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_f16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<F16>(w, a, n)
}

/// BF16 weights · f32 activations.
///
/// # Safety
/// As [`dot`], with `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_bf16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot::<Bf16>(w, a, n)
}
