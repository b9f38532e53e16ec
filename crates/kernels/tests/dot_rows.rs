//! The several-rows dot kernels ([`Kernels::dot_rows`]) against the same level's
//! single-row dots, which `tests/simd_vs_scalar.rs` checks against the scalar references.
//!
//! The contract is exact: `dot_rows` must give, bit for bit, what `dot` gives for each
//! row (so a matrix-vector product does not depend on which of the two ran, or on how its
//! rows were grouped). Rows are checked in every count from 0 to 9 (whole groups and every
//! leftover), with even and odd block counts (the kernels take two blocks per step), on
//! quantized random values and on random quant bytes under finite random scales (every
//! quant value, -128 for Q8_0 included; the k-quants' sub-block scales and mins too).

use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::quant::{activation_type, TensorType};

mod kernel_inputs;

use kernel_inputs::{rows, Rng};

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
