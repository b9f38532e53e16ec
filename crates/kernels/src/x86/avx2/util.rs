//! Small AVX2 building blocks shared by the kernels of this level.

use core::arch::x86_64::*;

/// Sum of the eight lanes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Reads the little-endian IEEE half at `p` (any alignment) as f32, exactly.
///
/// This converts in general-purpose registers rather than with `vcvtph2ps`: LLVM turns
/// a one-lane F16C conversion into `vpinsrw` into an arbitrary register, often an
/// accumulator, which made each block wait for the previous block's FMA. Normal halves
/// become f32 by moving the exponent and mantissa into place and rebiasing the exponent
/// (an integer add); subnormal ones, whose value is the mantissa times 2⁻²⁴, through an
/// exact integer-to-float conversion and a multiply of normal numbers; infinities and
/// NaNs get the all-ones exponent. No step touches an f32 subnormal: x86 cores take a
/// microcode assist for arithmetic on one (the previous version multiplied the
/// subnormal f32 `mantissa << 13` by 2¹¹², which made Q6_K rows — whose scales are
/// often subnormal halves in real models — about 2.5 times slower).
///
/// # Safety
/// `p` must be valid for reading 2 bytes.
#[inline(always)]
pub unsafe fn f16_at(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned() as u32;
    let magnitude = h & 0x7fff;
    let bits = if magnitude >= 0x7c00 {
        (magnitude << 13) | 0x7f80_0000
    } else if magnitude >= 0x0400 {
        (magnitude << 13) + (112 << 23)
    } else {
        (magnitude as f32 * f32::from_bits((127 - 24) << 23)).to_bits()
    };
    f32::from_bits(bits | (h & 0x8000) << 16)
}

/// The little-endian IEEE half at `p` (any alignment) as f32 in all eight lanes.
///
/// Broadcasting the half before converting it gives the scale vector a block's FMA needs
/// without a separate `vbroadcastss`, and it writes whole registers: converting a lone
/// half from `_mm_cvtsi32_si128` lets LLVM insert it into whatever register is at hand,
/// once an accumulator, which chained every block onto the previous block's FMA.
///
/// # Safety
/// The CPU must support AVX2 and F16C, and `p` must be valid for reading 2 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn f16_splat(p: *const u8) -> __m256 {
    let bits = (p as *const u16).read_unaligned();
    _mm256_cvtph_ps(_mm_set1_epi16(bits as i16))
}

/// Σ x·y over 32 signed byte pairs, as eight i32 partial sums.
///
/// `maddubs` multiplies unsigned by signed bytes, so the sign of `x` moves onto `y`:
/// |x| is exact as an unsigned byte even for -128, and `y` must lie in -127..=127 (every
/// activation quantizer guarantees that) so that negating it cannot wrap. Pair sums are
/// at most 2·128·127 < 2¹⁵, so the i16 stage never saturates.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// Σ x·y over 32 pairs of an unsigned byte `x` (at most 127 when `y` can reach ±128;
/// anything up to 255 is fine when pair sums stay below 2¹⁵) and a signed byte `y`, as
/// eight i32 partial sums.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn dot_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// The 32 nibbles of 16 packed bytes as 32 bytes: low nibbles first (elements 0..16),
/// then high nibbles (elements 16..32), the order of every 32-element ggml format.
///
/// # Safety
/// The CPU must support AVX2 and `p` must be valid for reading 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn nibbles_32(p: *const u8) -> __m256i {
    // Broadcasting from memory costs a load only, and one variable shift moves the high
    // nibbles down in the upper half (bits shifted across bytes are masked off). Every
    // lane of every step is used: with a shift-and-blend, LLVM left the unused half
    // undefined and once filled it from an accumulator register, a false dependency
    // that chained each block onto the previous block's FMA.
    let q = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let both = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Spreads the 32 bits of `bits` over 32 bytes: byte j is 0xFF when bit j is set, else 0.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    // Byte j of the shuffle is byte j/8 of `bits`; OR-ing in every bit but j%8 leaves an
    // all-ones byte exactly when bit j%8 was set.
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi64x(
            0x0000_0000_0000_0000,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}

#[cfg(test)]
mod tests {
    use super::f16_at;

    /// The integer conversion against the `half` crate (the scalar references' own), for
    /// every one of the 65536 halves: bit for bit, NaNs only as NaNs.
    #[test]
    fn f16_at_converts_every_half_exactly() {
        for bits in 0..=u16::MAX {
            let bytes = bits.to_le_bytes();
            // SAFETY: `bytes` is 2 readable bytes.
            let got = unsafe { f16_at(bytes.as_ptr()) };
            let want = half::f16::from_bits(bits).to_f32();
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}: {got} is not NaN");
            } else {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{bits:#06x}: {got} vs {want}"
                );
            }
        }
    }
}
