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

use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::quant::{activation_type, TensorType};

mod kernel_inputs;

use kernel_inputs::{rows, Rng};

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
