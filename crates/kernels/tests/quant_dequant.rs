//! Dequantization is bit-exact against the `gguf` Python package's reference
//! dequantizers (fixtures from `tests/fixtures/quant/make_fixtures.py`).

mod quant_common;

use hearth_kernels::quant::{dequantize_row, QuantError, TensorType};
use quant_common::{dequant, COMPUTABLE};

fn check_bits(ty: TensorType, got: &[f32], want: &[f32]) {
    let (len, _) = ty.layout();
    let mismatches: Vec<usize> = (0..want.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&i) = mismatches.first() {
        panic!(
            "{ty}: {} of {} values differ; first at element {i} (block {}): got {:e} ({:#010x}), \
             want {:e} ({:#010x})",
            mismatches.len(),
            want.len(),
            i / len,
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

#[test]
fn every_computable_type_matches_gguf_bit_for_bit() {
    for ty in COMPUTABLE {
        let fx = dequant(ty);
        let mut out = vec![0f32; fx.expected.len()];
        dequantize_row(ty, &fx.data, &mut out).unwrap();
        check_bits(ty, &out, &fx.expected);
    }
}

/// Rows read from a mapped file can start at any byte; Q8_K (alignment 4) takes the
/// block-copying path then, which must give the same bits.
#[test]
fn misaligned_rows_decode_identically() {
    for ty in COMPUTABLE {
        let fx = dequant(ty);
        let mut shifted = vec![0u8; fx.data.len() + 1];
        shifted[1..].copy_from_slice(&fx.data);
        let mut out = vec![0f32; fx.expected.len()];
        dequantize_row(ty, &shifted[1..], &mut out).unwrap();
        check_bits(ty, &out, &fx.expected);
    }
}

#[test]
fn unsupported_types_and_bad_lengths_are_typed_errors() {
    let mut out = vec![0f32; 256];
    assert_eq!(
        dequantize_row(TensorType::IQ2_XXS, &[0; 66], &mut out),
        Err(QuantError::NoDequantizer(TensorType::IQ2_XXS))
    );
    // One byte short of a Q4_K block.
    let err = dequantize_row(TensorType::Q4_K, &[0; 143], &mut out).unwrap_err();
    assert!(
        matches!(err, QuantError::Length { bytes: 143, .. }),
        "{err}"
    );
    // Not a whole number of blocks.
    let err = dequantize_row(TensorType::Q4_0, &[0; 18], &mut out[..31]).unwrap_err();
    assert!(
        matches!(err, QuantError::Length { elements: 31, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Q4_0"), "{err}");
}
