//! The several-tokens dot kernels ([`Kernels::dot_tokens`]) against the same level's
//! single-row dots, which `tests/simd_vs_scalar.rs` checks against the scalar references.
//!
//! The contract is exact: `dot_tokens` must give, bit for bit, what `dot` gives for each
//! (row, token), so that a sequence's output does not depend on which other sequences
//! share its batch. Checked for every row count from 0 to 9 (whole groups of rows and
//! every leftover), every token count from 1 to 15 (whole tiles of tokens and every
//! leftover), even and odd block counts (the 32-element kernels take two blocks per
//! step), rows long and many enough to be done in chunks, activation rows packed and
//! padded apart, on quantized random values and on
//! random quant bytes under finite random scales (every quant value).

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
/// scales are replaced by finite random halves.
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
fn dot_tokens_equals_dot_for_every_row_and_token_at_every_level() {
    let mut checked = 0;
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        for ty in TensorType::ALL {
            let (Some(dot_tokens), Some(dot)) = (k.dot_tokens(ty), k.dot(ty)) else {
                continue;
            };
            let act_ty = activation_type(ty);
            let quantize = k.quantizer(act_ty).expect("activation quantizer");
            let mut rng = Rng(ty.id() as u64);
            // Long rows and many rows too: kernels may work through a call in chunks of
            // blocks and blocks of rows (AVX-512's 32-element ones: 32 pairs, 64 rows).
            for nb in [0, 1, 2, 3, 4, 5, 8, 9, 20, 65, 129] {
                let long = nb > 20;
                let n_cols = nb * ty.block_len();
                let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
                let a_len = act_ty.row_bytes(n_cols as u64).unwrap() as usize;
                for n_tokens in 1..=15 {
                    if long && ![1, 2, 3, 4, 7].contains(&n_tokens) {
                        continue;
                    }
                    // Packed rows, and rows on lines of their own as matmul lays them out.
                    let a_stride = if n_tokens % 2 == 0 {
                        a_len
                    } else {
                        a_len.next_multiple_of(64)
                    };
                    let mut a = vec![0xA5u8; (n_tokens - 1) * a_stride + a_len];
                    for t in 0..n_tokens {
                        let x: Vec<f32> = (0..n_cols).map(|_| rng.normal()).collect();
                        quantize(&x, &mut a[t * a_stride..][..a_len]);
                    }
                    let row_counts = if long {
                        vec![67, 133]
                    } else {
                        (0..=9).collect()
                    };
                    for n_rows in row_counts {
                        let raw = (n_rows + n_tokens) % 2 == 1;
                        let w = rows(ty, n_rows, nb, raw, &mut rng);
                        let mut out = vec![f32::NAN; n_rows * n_tokens];
                        dot_tokens(&w, row_bytes, &a, a_stride, n_tokens, &mut out);
                        for t in 0..n_tokens {
                            let at = &a[t * a_stride..][..a_len];
                            for r in 0..n_rows {
                                let got = out[t * n_rows + r];
                                let want = dot(&w[r * row_bytes..][..row_bytes], at);
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{ty} {}: row {r} of {n_rows}, token {t} of {n_tokens}, \
                                     {nb} blocks{}: {got} vs {want}",
                                    level.name(),
                                    if raw { ", raw bytes" } else { "" }
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} several-token calls checked");
}

/// A level that installs a several-tokens kernel for a format must install its
/// several-rows one too (so one token keeps its fast path), and the ones this work
/// targets must exist where the level has them.
#[test]
fn several_token_kernels_cover_the_decode_formats() {
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        for ty in TensorType::ALL {
            if k.dot_tokens(ty).is_some() {
                assert!(k.dot(ty).is_some(), "{ty} {}", level.name());
            }
        }
        let vnni = cfg!(target_arch = "x86_64") && {
            #[cfg(target_arch = "x86_64")]
            {
                std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        };
        if level == Level::Avx512 && vnni {
            for ty in [TensorType::Q8_0, TensorType::Q5_0, TensorType::Q4_0] {
                assert!(k.dot_tokens(ty).is_some(), "{ty} avx512");
            }
        }
        if level == Level::Avx2 {
            use TensorType::*;
            for ty in [Q5_0, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K] {
                assert!(k.dot_tokens(ty).is_some(), "{ty} avx2");
            }
        }
    }
}
