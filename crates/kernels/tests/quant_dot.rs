//! The scalar dot kernels agree with an f64 dot of the dequantized weights and the
//! dequantized activations, for every computable type, on quantized Gaussian weights and
//! on random block bytes (which reach bit patterns no quantizer writes).
//!
//! Tolerance: `1e-5 * sum |w_i * a_i|`. The kernels sum integers exactly within a block
//! and round only a handful of f32 products and sums per block, so this leaves a wide
//! margin while still catching any wrong quant, scale or offset. Q4_1 and Q5_1 also get
//! the exact effect of Q8_1's `s`, which is `d * sum(q)` rounded to f16 *before* the dot
//! (as in ggml), while the dequantized activations use `f16(d) * q`.

mod quant_common;

use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::quant::{
    activation_type, dequantize_row, has_quantizer, quantize_row, TensorType,
};
use quant_common::{Rng, COMPUTABLE};

const N: usize = 1024;

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Byte offsets of the f16 scale fields of each block format.
fn half_fields(ty: TensorType) -> &'static [usize] {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random block bytes with finite scales of moderate size (so that products stay far
/// from overflow and the relative tolerance means something).
fn random_blocks(ty: TensorType, rng: &mut Rng) -> Vec<u8> {
    let n_bytes = ty.row_bytes(N as u64).unwrap() as usize;
    let mut w = rng.bytes(n_bytes);
    match ty {
        TensorType::F32 => {
            for c in w.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.normal().to_le_bytes());
            }
        }
        TensorType::F16 | TensorType::BF16 => {
            for c in w.chunks_exact_mut(2) {
                let v = rng.normal();
                let b = if ty == TensorType::F16 {
                    half::f16::from_f32(v).to_le_bytes()
                } else {
                    half::bf16::from_f32(v).to_le_bytes()
                };
                c.copy_from_slice(&b);
            }
        }
        TensorType::Q8_K => {
            for b in w.chunks_exact_mut(ty.block_bytes()) {
                b[..4].copy_from_slice(&(0.01 * rng.normal()).to_le_bytes());
            }
        }
        _ => {
            for b in w.chunks_exact_mut(ty.block_bytes()) {
                for &off in half_fields(ty) {
                    let v = half::f16::from_f32(0.05 * rng.normal());
                    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    w
}

fn gaussian(rng: &mut Rng) -> Vec<f32> {
    (0..N).map(|_| rng.normal()).collect()
}

/// `m * (s - f16(d) * sum(q))` summed over blocks: how far Q8_1's precomputed `s` moves
/// a Q4_1/Q5_1 dot away from the dequantized activations.
fn q8_1_sum_allowance(ty: TensorType, w: &[u8], a: &[u8]) -> f64 {
    if activation_type(ty) != TensorType::Q8_1 {
        return 0.0;
    }
    w.chunks_exact(ty.block_bytes())
        .zip(a.chunks_exact(36))
        .map(|(wb, ab)| {
            let m = f16(&wb[2..4]) as f64;
            let (d, s) = (f16(&ab[0..2]) as f64, f16(&ab[2..4]) as f64);
            let sum: i32 = ab[4..].iter().map(|&q| q as i8 as i32).sum();
            (m * (s - d * sum as f64)).abs()
        })
        .sum()
}

fn check(ty: TensorType, w: &[u8], x: &[f32], what: &str) {
    let k = Kernels::for_level(Level::Scalar).unwrap();
    let act = activation_type(ty);
    let mut a = vec![0u8; act.row_bytes(N as u64).unwrap() as usize];
    k.quantizer(act).expect("activation quantizer")(x, &mut a);

    let mut wd = vec![0f32; N];
    let mut ad = vec![0f32; N];
    dequantize_row(ty, w, &mut wd).unwrap();
    dequantize_row(act, &a, &mut ad).unwrap();
    let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| p as f64 * q as f64).sum();
    let magnitude: f64 = wd
        .iter()
        .zip(&ad)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    let tol = 1e-5 * magnitude + q8_1_sum_allowance(ty, w, &a);

    let got = k.dot(ty).expect("scalar dot")(w, &a) as f64;
    assert!(
        (got - exact).abs() <= tol,
        "{ty} ({what}): dot {got}, f64 reference {exact}, diff {:e} > tol {tol:e}",
        (got - exact).abs()
    );
}

#[test]
fn scalar_dots_match_f64_reference_on_quantized_weights() {
    let mut rng = Rng::new(1);
    for ty in COMPUTABLE.into_iter().filter(|&t| has_quantizer(t)) {
        let wx = gaussian(&mut rng);
        let mut w = vec![0u8; ty.row_bytes(N as u64).unwrap() as usize];
        quantize_row(ty, &wx, &mut w).unwrap();
        check(ty, &w, &gaussian(&mut rng), "quantized weights");
    }
}

#[test]
fn scalar_dots_match_f64_reference_on_random_blocks() {
    let mut rng = Rng::new(2);
    for ty in COMPUTABLE {
        for round in 0..4 {
            let w = random_blocks(ty, &mut rng);
            check(
                ty,
                &w,
                &gaussian(&mut rng),
                &format!("random blocks #{round}"),
            );
        }
    }
}

#[test]
fn every_computable_type_has_a_scalar_dot_and_activation_quantizer() {
    let k = Kernels::for_level(Level::Scalar).unwrap();
    for ty in COMPUTABLE {
        assert!(k.dot(ty).is_some(), "{ty}: no dot");
        assert!(
            k.quantizer(activation_type(ty)).is_some(),
            "{ty}: no quantizer"
        );
    }
}

/// Activations at an odd address take the copying path and must give the same bits.
#[test]
fn misaligned_activations_give_identical_results() {
    let k = Kernels::for_level(Level::Scalar).unwrap();
    let mut rng = Rng::new(3);
    for ty in COMPUTABLE {
        let w = random_blocks(ty, &mut rng);
        let act = activation_type(ty);
        let n_bytes = act.row_bytes(N as u64).unwrap() as usize;
        let mut a = vec![0u8; n_bytes];
        k.quantizer(act).unwrap()(&gaussian(&mut rng), &mut a);
        let mut shifted = vec![0u8; n_bytes + 1];
        shifted[1..].copy_from_slice(&a);
        let dot = k.dot(ty).unwrap();
        assert_eq!(
            dot(&w, &a).to_bits(),
            dot(&w, &shifted[1..]).to_bits(),
            "{ty}"
        );
    }
}

/// Regression: a Q8_K weight row at an address that is not 4-aligned (a file whose
/// `general.alignment` is 1 or 2 may place one there) panicked in the byte-to-block cast.
/// Every level must accept it and give the aligned row's result.
#[test]
fn misaligned_q8_k_weights_are_accepted() {
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..512).map(|_| rng.normal()).collect();
    let mut w = vec![0u8; TensorType::Q8_K.row_bytes(512).unwrap() as usize];
    quantize_row(TensorType::Q8_K, &x, &mut w).unwrap();
    let mut a = vec![0u8; w.len()];
    quantize_row(TensorType::Q8_K, &x, &mut a).unwrap();
    let mut shifted = vec![0u8; w.len() + 1];
    shifted[1..].copy_from_slice(&w);
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        let dot = k.dot(TensorType::Q8_K).unwrap();
        // The aligned copy and the shifted copy are the same bytes at different addresses.
        let a_blocks: Vec<u32> = a
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let a_aligned: &[u8] = bytemuck::cast_slice(&a_blocks);
        let want = dot(&w, a_aligned);
        assert_eq!(
            dot(&shifted[1..], a_aligned).to_bits(),
            want.to_bits(),
            "{level:?}"
        );
    }
}
