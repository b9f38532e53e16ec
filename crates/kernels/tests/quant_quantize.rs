//! Quantizers: byte-exact against the `gguf` package where it has one (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, F16, BF16); otherwise (the k-quants, IQ4_NL/IQ4_XS and the Q8_1/Q8_K
//! activation formats) bounded round-trip error and stability under re-quantization, plus
//! an opt-in byte-exact comparison with output from a ggml build
//! (`HEARTH_QUANT_REFERENCE_DIR`, see the last test).

mod quant_common;

use hearth_kernels::quant::{dequantize_row, has_quantizer, quantize_row, QuantError, TensorType};
use quant_common::{quant, Rng};

fn quantize(ty: TensorType, x: &[f32]) -> Vec<u8> {
    let n = ty.row_bytes(x.len() as u64).unwrap() as usize;
    let mut out = vec![0u8; n];
    quantize_row(ty, x, &mut out).unwrap();
    out
}

fn dequantize(ty: TensorType, q: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, q, &mut out).unwrap();
    out
}

#[test]
fn quantizers_match_gguf_byte_for_byte() {
    use TensorType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16] {
        let fx = quant(ty);
        let got = quantize(ty, &fx.input);
        let block = ty.block_bytes();
        if let Some(i) = (0..got.len()).find(|&i| got[i] != fx.expected[i]) {
            panic!(
                "{ty}: byte {i} (block {}) is {:#04x}, gguf wrote {:#04x}",
                i / block,
                got[i],
                fx.expected[i]
            );
        }
    }
}

/// Rows of Gaussian values at several scales, with a few outlier blocks; `n` a multiple of
/// 256.
fn gaussian_rows(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n);
    for b in 0..n / 256 {
        let scale = [1.0f32, 1e-3, 40.0, 0.02][b % 4];
        for i in 0..256 {
            let mut v = rng.normal() * scale;
            if b % 5 == 4 && i % 97 == 3 {
                v *= 8.0;
            }
            x.push(v);
        }
    }
    x
}

/// `rms(x - y) / rms(x)` over a whole row.
fn relative_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum();
    let sig: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    (err / sig).sqrt()
}

/// The largest `|x - y|` within a super-block of 256, relative to that super-block's
/// `max |x|`, over all super-blocks.
fn worst_block_error(x: &[f32], y: &[f32]) -> f64 {
    x.chunks(256)
        .zip(y.chunks(256))
        .map(|(xb, yb)| {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let e = xb
                .iter()
                .zip(yb)
                .map(|(&a, &b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            e / amax
        })
        .fold(0.0, f64::max)
}

/// Round-trip bounds per format on Gaussian data: relative RMSE, and the worst
/// element error relative to its super-block's largest magnitude (measured values are
/// printed with `--nocapture`), tight enough that a regression in a scale search shows up.
#[test]
fn round_trip_error_is_bounded() {
    use TensorType::*;
    let x = gaussian_rows(7, 256 * 64);
    // Q8_*: the worst error is analytic: half a step (amax/254) plus, for the f16 scale
    // of Q8_0/Q8_1, 127 times its rounding error (2^-11 relative). The others are about
    // 25% above the measured values (Q4_0 0.120/0.104, Q4_1 0.084/0.063, Q5_0 0.055/0.050,
    // Q5_1 0.042/0.031, Q2_K 0.309/0.337, Q3_K 0.172/0.179, Q4_K 0.078/0.074,
    // Q5_K 0.040/0.037, Q6_K 0.021/0.032, IQ4_NL 0.098/0.093, IQ4_XS 0.099/0.107,
    // Q8_0 0.0073, Q8_K 0.014).
    //  type   rel. RMSE  worst/amax
    let bounds = [
        (Q8_0, 0.009, 0.5 / 127.0 + 1.0 / 2048.0 + 1e-5),
        (Q8_1, 0.009, 0.5 / 127.0 + 1.0 / 2048.0 + 1e-5),
        (Q8_K, 0.018, 0.5 / 127.0 + 1e-5),
        (Q6_K, 0.027, 0.040),
        (Q5_0, 0.069, 0.062),
        (Q5_1, 0.053, 0.039),
        (Q5_K, 0.050, 0.046),
        (Q4_0, 0.150, 0.130),
        (Q4_1, 0.105, 0.080),
        (Q4_K, 0.098, 0.093),
        (Q3_K, 0.215, 0.225),
        (Q2_K, 0.386, 0.420),
        (IQ4_NL, 0.122, 0.116),
        (IQ4_XS, 0.124, 0.133),
    ];
    let mut failures = Vec::new();
    for (ty, max_rmse, max_worst) in bounds {
        let y = dequantize(ty, &quantize(ty, &x), x.len());
        let (rmse, worst) = (relative_rmse(&x, &y), worst_block_error(&x, &y));
        println!("{ty:5} relative RMSE {rmse:.5}  worst/amax {worst:.5}");
        if rmse > max_rmse || worst > max_worst {
            failures.push(format!(
                "{ty}: RMSE {rmse:.5} (bound {max_rmse}), worst {worst:.5} (bound {max_worst})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Quantizing already-quantized values again must not drift: the second round trip
/// changes values by far less than the first one's error.
#[test]
fn requantizing_is_stable() {
    use TensorType::*;
    let x = gaussian_rows(11, 256 * 16);
    for ty in [
        Q8_0, Q8_1, Q8_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
    ] {
        let y1 = dequantize(ty, &quantize(ty, &x), x.len());
        let y2 = dequantize(ty, &quantize(ty, &y1), x.len());
        let first = relative_rmse(&x, &y1);
        let second = relative_rmse(&y1, &y2);
        println!("{ty:5} first {first:.5}  second {second:.5}");
        assert!(
            second <= 0.5 * first,
            "{ty}: re-quantizing moved values by {second:.5} (first pass {first:.5})"
        );
    }
}

/// Blocks that are all zero must stay zero and not produce NaN scales.
#[test]
fn zero_rows_round_trip_to_zero() {
    use TensorType::*;
    let x = vec![0f32; 512];
    for ty in [
        Q8_0, Q8_1, Q8_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
    ] {
        let y = dequantize(ty, &quantize(ty, &x), x.len());
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: {:?}", &y[..8]);
    }
}

#[test]
fn activation_sums_are_consistent() {
    // Q8_K's bsums are the sums of each 16 quants; Q8_1's s is d * sum(q).
    let x = gaussian_rows(3, 512);
    let q = quantize(TensorType::Q8_K, &x);
    for b in q.chunks_exact(292) {
        let qs: Vec<i32> = b[4..260].iter().map(|&v| v as i8 as i32).collect();
        for j in 0..16 {
            let bsum = i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]) as i32;
            assert_eq!(
                bsum,
                qs[16 * j..16 * j + 16].iter().sum::<i32>(),
                "bsums[{j}]"
            );
        }
    }
    let q = quantize(TensorType::Q8_1, &x);
    for b in q.chunks_exact(36) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let s = half::f16::from_le_bytes([b[2], b[3]]).to_f32();
        let sum: i32 = b[4..].iter().map(|&v| v as i8 as i32).sum();
        // s is rounded to f16 from the unrounded f32 d.
        assert!((s - d * sum as f32).abs() <= (d * sum as f32).abs() * 2e-3 + 1e-6);
    }
}

#[test]
fn unsupported_types_and_bad_lengths_are_typed_errors() {
    let x = vec![0f32; 256];
    let mut out = vec![0u8; 136];
    assert_eq!(
        quantize_row(TensorType::IQ2_XXS, &x, &mut out),
        Err(QuantError::NoQuantizer(TensorType::IQ2_XXS))
    );
    let err = quantize_row(TensorType::Q4_K, &x, &mut out).unwrap_err();
    assert!(
        matches!(err, QuantError::Length { bytes: 136, .. }),
        "{err}"
    );
}

/// Byte-exact comparison with quantizer output from a ggml build, when one is at hand:
/// `HEARTH_QUANT_REFERENCE_DIR=<dir>` pointing at `quant_<TYPE>.bin` files in the fixture
/// format (see `tests/fixtures/quant/make_fixtures.py`), e.g. written by a small C driver
/// around ggml's `quantize_row_*_ref` compiled with `-ffp-contract=off`. Skipped when the
/// variable is unset, because the `gguf` package has no k-quant quantizers to make
/// committed fixtures from.
#[test]
fn quantizers_match_external_ggml_output_when_provided() {
    let Ok(dir) = std::env::var("HEARTH_QUANT_REFERENCE_DIR") else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("HEARTH_QUANT_REFERENCE_DIR") {
        let path = entry.unwrap().path();
        let b = std::fs::read(&path).unwrap();
        if b.len() < 16 || &b[..4] != b"HQQT" {
            continue;
        }
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        let ty = TensorType::from_id(word(4) as u32).expect("type id");
        let (n, n_bytes) = (word(8), word(12));
        let x: Vec<f32> = b[16..16 + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want = &b[16 + 4 * n..16 + 4 * n + n_bytes];
        let got = quantize(ty, &x);
        let block = ty.block_bytes();
        let bad: Vec<usize> = (0..n_bytes).filter(|&i| got[i] != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{ty} ({}): {} bytes differ in blocks {:?}",
            path.display(),
            bad.len(),
            bad.iter()
                .map(|i| i / block)
                .collect::<std::collections::BTreeSet<_>>()
        );
        println!("{ty}: {n_bytes} bytes identical to {}", path.display());
        checked += 1;
    }
    assert!(checked > 0, "no quant_*.bin files in {dir}");
}

/// Non-finite and extreme inputs produce some bytes, never a panic (ggml's `nearest_int`
/// asserts its range; ours returns garbage instead, and every cast saturates or wraps).
#[test]
fn non_finite_input_does_not_panic() {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        1e-45,
    ];
    let mut rng = Rng::new(5);
    for ty in TensorType::ALL.into_iter().filter(|&t| has_quantizer(t)) {
        for &s in &specials {
            let mut x: Vec<f32> = (0..512).map(|_| rng.normal()).collect();
            for v in x.iter_mut().step_by(37) {
                *v = s;
            }
            let q = quantize(ty, &x);
            let _ = dequantize(ty, &q, x.len());
        }
    }
}
