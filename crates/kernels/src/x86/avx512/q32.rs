//! The 32-element formats with AVX512-VNNI: Q4_0, Q5_0, Q8_0 and IQ4_NL against Q8_0
//! activations, Q4_1 and Q5_1 against Q8_1.
//!
//! These are the AVX2 kernels with `vpdpbusd` (256-bit, through AVX-512 VL) in place of
//! the `maddubs` + `madd`-with-ones pair. They stay one block per 256-bit vector: a block
//! is 32 weights, and packing two blocks into a 512-bit vector costs more shuffles (to
//! join the halves and their scales) than it saves, which measurement confirmed (the
//! packed version ran no faster than AVX2 and Q5_0 ran slower). Without VNNI the AVX2
//! kernels stay installed. The block loop and the order of float operations are the
//! AVX2 kernels' own, so both give bit-identical results (see the test in `mod.rs`).

use core::arch::x86_64::*;

use super::super::avx2::q32::fold_blocks;
use super::super::avx2::util::{bytes_from_bits, f16_at, f16_splat, nibbles_32};
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

/// Weights of format `B` against Q8_0 activations (34-byte blocks).
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C, AVX-512 VL and AVX512-VNNI; `w` must hold `nb`
/// blocks of `B` and `a` `nb` Q8_0 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
unsafe fn dot_q8_0_acts<B: Block32>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    fold_blocks(nb, |i, acc| {
        let (x, y) = (w.add(B::BYTES * i), a.add(34 * i));
        let d = _mm256_mul_ps(f16_splat(x), f16_splat(y));
        let qy = _mm256_loadu_si256(y.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(B::quants(x), qy)), acc)
    })
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
