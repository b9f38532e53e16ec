//! Tensor formats: the type table, block layouts and, per format, the scalar reference
//! that defines it (dequantize, quantize, and dot product with its activation format).

pub mod blocks;
pub mod types;

pub use types::{TensorType, QK_K};

use crate::dispatch::Kernels;

/// The activation format that weights of type `ty` are multiplied with, as in ggml's
/// `vec_dot_type`: Q8_0 for the 32-element formats, Q8_1 for Q4_1/Q5_1, Q8_K for the
/// k-quants and IQ4_XS, and F32 (unquantized) for F32/F16/BF16.
pub fn activation_type(ty: TensorType) -> TensorType {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K | IQ4_XS => Q8_K,
        _ => F32,
    }
}

/// Installs the scalar reference kernels: the base layer of every [`Kernels`] table.
pub fn register_scalar(_k: &mut Kernels) {}
