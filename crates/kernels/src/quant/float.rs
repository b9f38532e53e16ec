//! The unquantized formats F32, F16 and BF16: conversion to f32 and the dot product of a
//! weight row with f32 activations.
//!
//! Rows are handled as little-endian bytes so that a tensor can be read in place from a
//! mapped file at any offset. Unlike ggml, which converts the activations to the weight's
//! type (`vec_dot_type` F16/BF16), Hearth keeps activations in f32 for these formats
//! ([`super::activation_type`]); the dot multiplies in f32 and accumulates in f64, as
//! ggml's scalar `ggml_vec_dot_f32` does with its `ggml_float` sum.

/// Reads a little-endian f32 from 4 bytes.
#[inline(always)]
fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// BF16 bits to f32: the upper half of an f32, exactly (NaN payloads included).
#[inline(always)]
pub fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// f32 to BF16 bits, rounding to nearest even and turning NaN quiet, exactly as ggml's
/// `ggml_compute_fp32_to_bf16` (and the `gguf` package's `BF16.quantize_blocks`).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> [u8; 2] {
    let u = x.to_bits();
    let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        (u + (0x7fff + ((u >> 16) & 1))) >> 16
    };
    (h as u16).to_le_bytes()
}

/// Copies an F32 row (`src.len() == 4 * out.len()`), bit for bit.
pub fn dequantize_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len() * 4, "F32 row length");
    for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32_at(b);
    }
}

/// Widens an F16 row (`src.len() == 2 * out.len()`); exact for every finite half.
pub fn dequantize_f16(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len() * 2, "F16 row length");
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = super::blocks::f16_le([b[0], b[1]]);
    }
}

/// Widens a BF16 row (`src.len() == 2 * out.len()`), exactly.
pub fn dequantize_bf16(src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), out.len() * 2, "BF16 row length");
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16_to_f32([b[0], b[1]]);
    }
}

/// Stores `x` as F32 bytes (the identity "quantizer" of F32 activations).
pub fn quantize_f32(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() * 4, "F32 row length");
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Rounds `x` to F16 (nearest even), as numpy's `astype(float16)` and ggml's
/// `GGML_FP32_TO_FP16` do.
pub fn quantize_f16(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() * 2, "F16 row length");
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&super::blocks::f16_le_from(v));
    }
}

/// Rounds `x` to BF16 with [`f32_to_bf16`].
pub fn quantize_bf16(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() * 2, "BF16 row length");
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_bf16(v));
    }
}

/// Dot of an F32 weight row with f32 activations (both as bytes).
pub fn vec_dot_f32(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len(), a.len(), "F32 dot lengths");
    let mut sum = 0.0f64;
    for (wb, ab) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        sum += (f32_at(wb) * f32_at(ab)) as f64;
    }
    sum as f32
}

/// Dot of an F16 weight row with f32 activations (`a.len() == 2 * w.len()`).
pub fn vec_dot_f16(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len() * 2, a.len(), "F16 dot lengths");
    let mut sum = 0.0f64;
    for (wb, ab) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        sum += (super::blocks::f16_le([wb[0], wb[1]]) * f32_at(ab)) as f64;
    }
    sum as f32
}

/// Dot of a BF16 weight row with f32 activations (`a.len() == 2 * w.len()`).
pub fn vec_dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    assert_eq!(w.len() * 2, a.len(), "BF16 dot lengths");
    let mut sum = 0.0f64;
    for (wb, ab) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        sum += (bf16_to_f32([wb[0], wb[1]]) * f32_at(ab)) as f64;
    }
    sum as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        // 1 + 2^-8 is halfway between two bf16 values; ties go to the even one (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), f32_to_bf16(1.0));
        assert_eq!(
            u16::from_le_bytes(f32_to_bf16(f32::from_bits(0x7f80_0001))),
            0x7fc0
        );
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
    }
}
