//! The several-rows dot kernels ([`Kernels::dot_rows`]) against the same level's
//! single-row dots, which `tests/simd_vs_scalar.rs` checks against the scalar references.
//!
//! The contract is exact: `dot_rows` must give, bit for bit, what `dot` gives for each
//! row (so a matrix-vector product does not depend on which of the two ran, or on how its
//! rows were grouped). Rows are checked in every count from 0 to 9 (whole groups and every
//! leftover), with even and odd block counts (the kernels take two blocks per step), on
//! quantized random values and on random quant bytes under finite random scales (every
//! quant value, -128 for Q8_0 included; the k-quants' sub-block scales and mins too).

use half::f16;
use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::quant::{activation_type, quantize_row, TensorType};

/// SplitMix64, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Roughly normal, as trained weights and activations are.
    fn normal(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }
}

/// Byte offsets of the f16 scales that must stay finite, for the formats whose other
/// bytes (quants, 6-bit scales and mins, Q6_K's i8 sub-block scales) take any value.
fn scale_offsets(ty: TensorType) -> Option<&'static [usize]> {
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
fn rows(ty: TensorType, n_rows: usize, nb: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
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

#[test]
fn dot_rows_equals_dot_row_by_row_at_every_level() {
    let mut checked = 0;
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        for ty in TensorType::ALL {
            let (Some(dot_rows), Some(dot)) = (k.dot_rows(ty), k.dot(ty)) else {
                continue;
            };
            let act_ty = activation_type(ty);
            let quantize = k.quantizer(act_ty).expect("activation quantizer");
            let mut rng = Rng(ty.id() as u64);
            for nb in 0..=9 {
                let n_cols = nb * ty.block_len();
                let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
                let x: Vec<f32> = (0..n_cols).map(|_| rng.normal()).collect();
                let mut a = vec![0u8; act_ty.row_bytes(n_cols as u64).unwrap() as usize];
                quantize(&x, &mut a);
                for n_rows in 0..=9 {
                    for raw in [false, true] {
                        let w = rows(ty, n_rows, nb, raw, &mut rng);
                        let mut out = vec![f32::NAN; n_rows];
                        dot_rows(&w, row_bytes, &a, &mut out);
                        for (r, got) in out.iter().enumerate() {
                            let want = dot(&w[r * row_bytes..][..row_bytes], &a);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{ty} {}: row {r} of {n_rows}, {nb} blocks{}: {got} vs {want}",
                                level.name(),
                                if raw { ", raw bytes" } else { "" }
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} multi-row calls checked");
}

/// The formats decode spends its time on have a multi-row kernel at every SIMD level of
/// this machine, so that a matrix-vector product reads each activation once for several
/// weight rows (AVX2-only CPUs included: issue 13).
#[test]
fn multi_row_kernels_cover_the_decode_formats() {
    use TensorType::*;
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        let formats: &[TensorType] = match level {
            // Not Q6_K: at AVX2 its rows go to the single-row kernel (`x86::avx2::rows_k`).
            Level::Avx2 => &[Q4_0, Q5_0, Q8_0, IQ4_NL, Q4_K, Q5_K, IQ4_XS],
            Level::Avx512 => &[Q4_K, Q5_K, Q6_K],
            _ => &[],
        };
        for &ty in formats {
            assert!(k.dot_rows(ty).is_some(), "{ty} {}", level.name());
        }
    }
}
