//! Small NEON building blocks shared by the aarch64 kernels.
//!
//! Every function here is a safe `#[target_feature(enable = "neon")]` function: the loads
//! take fixed-size array references, so the only unsafe operations are the raw-pointer
//! loads and stores whose bounds those arrays prove. Kernels call these from their own
//! `neon` functions, where LLVM inlines them.

use std::arch::aarch64::*;

/// Loads 16 bytes.
#[inline]
#[target_feature(enable = "neon")]
pub fn load_u8(b: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `b` is 16 readable bytes and `ld1 {v.16b}` has no alignment requirement.
    unsafe { vld1q_u8(b.as_ptr()) }
}

/// Loads 16 signed bytes.
#[inline]
#[target_feature(enable = "neon")]
pub fn load_i8(b: &[i8; 16]) -> int8x16_t {
    // SAFETY: `b` is 16 readable bytes and `ld1 {v.16b}` has no alignment requirement.
    unsafe { vld1q_s8(b.as_ptr()) }
}

/// Loads 16 bytes as signed bytes (activation quants stored in a `u8` row).
#[inline]
#[target_feature(enable = "neon")]
pub fn load_u8_as_i8(b: &[u8; 16]) -> int8x16_t {
    vreinterpretq_s8_u8(load_u8(b))
}

/// Loads 8 bytes.
#[inline]
#[target_feature(enable = "neon")]
pub fn load_u8x8(b: &[u8; 8]) -> uint8x8_t {
    // SAFETY: `b` is 8 readable bytes and `ld1 {v.8b}` has no alignment requirement.
    unsafe { vld1_u8(b.as_ptr()) }
}

/// Loads four little-endian f32 from 16 bytes of any alignment.
#[inline]
#[target_feature(enable = "neon")]
pub fn load_f32_le(b: &[u8; 16]) -> float32x4_t {
    // aarch64-unknown-linux-gnu is little-endian (`register_neon` refuses big-endian), so
    // the byte lanes reinterpret directly as f32 lanes.
    vreinterpretq_f32_u8(load_u8(b))
}

/// Loads four f32.
#[inline]
#[target_feature(enable = "neon")]
pub fn load_f32(x: &[f32; 4]) -> float32x4_t {
    // SAFETY: `x` is 4 readable, aligned f32.
    unsafe { vld1q_f32(x.as_ptr()) }
}

/// `acc + Σ a[i]·b[i]` with each lane of `acc` taking four neighbouring products.
///
/// This is the widening form of ARM's `sdot` (whose intrinsic, `vdotq_s32`, is still
/// unstable in Rust): `smull`/`smull2` give exact 16-bit products (|-128·-128| = 2¹⁴ fits)
/// and `sadalp` adds neighbouring pairs into the 32-bit lanes. It never adds two 16-bit
/// products in 16 bits, so it is exact for any bytes, not just ggml's ±127 quants.
#[inline]
#[target_feature(enable = "neon")]
pub fn dot_i8(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    vpadalq_s16(acc, vmull_high_s8(a, b))
}

/// `acc + Σ a[i]·b[i]` with each lane of `acc` taking four neighbouring products, as
/// [`dot_i8`] computes it, in one `sdot` (FEAT_DotProd).
///
/// Written as inline assembly because the intrinsic (`vdotq_s32`) is unstable in Rust
/// 1.95. `sdot` adds each lane's four 16-bit-exact products into its 32-bit lane without
/// saturating, so the sums equal `dot_i8`'s for any bytes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads and writes the named vector registers; it touches no
    // memory, stack or flags, and this function's `dotprod` feature means the CPU has it.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Sum of the 32 products of two 32-byte halves (`a0·b0 + a1·b1`), as one i32, with
/// [`sdot`]: two `sdot` and an `addv` where [`dot_i8x32`] needs four `smull` and four
/// `sadalp`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub fn sdot_i8x32(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    vaddvq_s32(sdot(sdot(vdupq_n_s32(0), a0, b0), a1, b1))
}

/// Sum of the 32 products of two 32-byte halves (`a0·b0 + a1·b1`), as one i32.
#[inline]
#[target_feature(enable = "neon")]
pub fn dot_i8x32(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    vaddvq_s32(dot_i8(dot_i8(vdupq_n_s32(0), a0, b0), a1, b1))
}

/// Converts four IEEE halves to f32, exactly (`fcvtl`, part of base ARMv8 Advanced SIMD;
/// the `vcvt_f32_f16` intrinsic needs Rust's unstable `f16` type).
#[inline]
#[target_feature(enable = "neon")]
pub fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: `fcvtl` only reads and writes the named vector registers; it touches no
    // memory, stack or flags, and it exists on every aarch64 CPU with NEON.
    unsafe {
        std::arch::asm!(
            "fcvtl {r:v}.4s, {h:v}.4h",
            r = lateout(vreg) r,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// Reads a little-endian IEEE half stored as two bytes, as `quant::blocks::f16_le` does,
/// with one `fcvt` (base ARMv8 floating point; FEAT_FP16 is only needed for arithmetic
/// on halves). The `half` crate tests for FEAT_FP16 at every call and converts in
/// software without it; the kernels convert two or three scales per block, which that
/// made cost more than the block's integer dot. Exact, as the crate's conversion is, for
/// every half (NaNs stay NaNs, quieted, with their payload).
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    let h = f32::from_bits(u16::from_le_bytes(b) as u32);
    let r: f32;
    // SAFETY: `fcvt` only reads and writes the named registers; it touches no memory,
    // stack or flags, and every aarch64 CPU has it.
    unsafe {
        std::arch::asm!(
            "fcvt {r:s}, {h:h}",
            r = lateout(vreg) r,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// Converts four bfloat16 to f32, exactly: a bfloat16 is the top half of an f32.
#[inline]
#[target_feature(enable = "neon")]
pub fn bf16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    vreinterpretq_f32_u32(vshll_n_u16::<16>(h))
}

/// Views `N` bytes at `at` of `b` as an array; panics if out of range (kernels only call it
/// with offsets inside a block whose length the caller checked).
#[inline(always)]
pub fn arr<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    b[at..at + N].try_into().expect("N bytes")
}
