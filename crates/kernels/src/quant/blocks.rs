//! Block layouts of the quantized formats, byte for byte as ggml stores them
//! (`ggml-common.h`). Half-precision fields are kept as little-endian byte pairs so that
//! every weight block has alignment 1 and can be viewed in place inside a mapped file,
//! whatever the tensor's offset.

use bytemuck::{Pod, Zeroable};
use std::mem::size_of;

use super::types::QK_K;

/// Elements per block of the 32-element formats (Q4_0 … Q8_0, IQ4_NL).
pub const QK32: usize = 32;

/// Reads a little-endian IEEE half stored as two bytes.
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// Stores `x` as a little-endian IEEE half, rounding to nearest even.
#[inline(always)]
pub fn f16_le_from(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// Q4_0: 32 weights `d * (q - 8)`, q in 0..16; low nibbles hold elements 0..16.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// Q4_1: 32 weights `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Q5_0: 32 weights `d * (q - 16)`; bit 4 of element j is bit j of `qh` (little-endian u32).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Q5_1: 32 weights `d * q + m`, 5-bit q as in Q5_0.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Q8_0: 32 weights `d * q`, q a signed byte. Also the activation format that the
/// 32-element weight formats are multiplied with.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// Q8_1: Q8_0 plus `s = d * sum(qs)`, the activation format for Q4_1 and Q5_1 (whose
/// offset `m` multiplies the sum of the activations).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK32],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

/// Q2_K: 16 sub-blocks of 16; `scales` packs a 4-bit scale (low) and 4-bit min (high).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// Q3_K: 2 low bits in `qs`, the high bit in `hmask`, 6-bit scales packed in 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K: Q4_K plus one high bit per weight in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; 4 low bits in `ql`, 2 high in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// Q8_K: the activation format for the k-quants and IQ4_XS. `d` is a full f32 and
/// `bsums` holds the sum of each 16 quants, so that a weight format's minimum can be
/// applied once per sub-block instead of once per element.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

/// IQ4_NL: 32 weights `d * KVALUES_IQ4NL[q]`, a non-linear 4-bit codebook.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4NL {
    pub d: [u8; 2],
    pub qs: [u8; QK32 / 2],
}
const _: () = assert!(size_of::<BlockIQ4NL>() == 18);

/// IQ4_XS: the IQ4_NL codebook in super-blocks of 256 with 6-bit sub-block scales.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct BlockIQ4XS {
    pub d: [u8; 2],
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockIQ4XS>() == 136);

/// The IQ4_NL / IQ4_XS codebook (`kvalues_iq4nl` in ggml-common.h).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
