//! Inputs shared by the kernel tests: a deterministic generator and rows of quantized
//! weights. A folder module, so that cargo does not build it as a test of its own; each
//! test uses only part of it.
#![allow(dead_code)]

use half::f16;
use hearth_kernels::quant::{quantize_row, TensorType};

/// SplitMix64: deterministic, so a failing case reproduces from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Roughly normal (a sum of four uniforms), as trained weights and activations are.
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() - 2.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// Byte offsets of the f16 scales that must stay finite, for the formats whose other
/// bytes (quants, 6-bit scales and mins, Q6_K's i8 sub-block scales) take any value.
pub fn scale_offsets(ty: TensorType) -> Option<&'static [usize]> {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Some(&[0]),
        Q4_1 | Q5_1 | Q4_K | Q5_K => Some(&[0, 2]),
        Q6_K => Some(&[208]),
        IQ4_XS => Some(&[0]),
        _ => None,
    }
}

/// `n_rows` rows of `nb` blocks of `ty`: quantized values, or (`raw`) random bytes whose
/// f16 scales are replaced by finite random halves.
pub fn rows(ty: TensorType, n_rows: usize, nb: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
    let n_cols = nb * ty.block_len();
    let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
    let mut out = vec![0u8; n_rows * row_bytes];
    for row in out.chunks_exact_mut(row_bytes.max(1)) {
        if let (true, Some(offsets)) = (raw, scale_offsets(ty)) {
            row.iter_mut().for_each(|b| *b = rng.next() as u8);
            for block in row.chunks_exact_mut(ty.block_bytes()) {
                for &at in offsets {
                    let d = f16::from_f32(rng.normal() * 0.01);
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        } else {
            let x: Vec<f32> = (0..n_cols).map(|_| rng.normal()).collect();
            quantize_row(ty, &x, row).unwrap();
        }
    }
    out
}
