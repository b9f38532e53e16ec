//! Tensor formats: the type table, block layouts and, per format, the scalar reference
//! that defines it (dequantize, quantize, and dot product with its activation format).
//!
//! Each `<format>.rs` is a port of ggml's reference C for that format
//! (`ggml-quants.c`: `dequantize_row_*`, `quantize_row_*_ref`; `ggml-cpu/quants.c`:
//! `ggml_vec_dot_*_generic`), kept in ggml's operation order so that results match it. The
//! typed functions there take block slices and assert their lengths (a caller bug, not bad
//! input); the byte-level entry points here validate and return [`QuantError`] instead.
//!
//! Dequantization of all 16 computable formats is checked bit for bit against the `gguf`
//! Python package (`tests/quant_dequant.rs`); the quantizers of Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, F16 and BF16 byte for byte against it. The other quantizers (k-quants, IQ4_NL,
//! IQ4_XS, Q8_1, Q8_K) matched ggml's C reference compiled without FMA contraction byte
//! for byte when last checked (`HEARTH_QUANT_REFERENCE_DIR` in `tests/quant_quantize.rs`);
//! a ggml build that contracts `a*b + c` into FMAs rounds some ties differently.

pub mod blocks;
pub mod float;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod kquants;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
pub mod types;

pub use types::{TensorType, QK_K};

use std::mem::size_of;

use bytemuck::Pod;

use crate::dispatch::Kernels;
use blocks::*;

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

/// Why a row could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// Hearth has no dequantizer for this type (see [`TensorType::is_computable`]).
    NoDequantizer(TensorType),
    /// Hearth has no quantizer for this type.
    NoQuantizer(TensorType),
    /// The element count is not a whole number of blocks, or the byte and element counts
    /// disagree.
    Length {
        ty: TensorType,
        elements: usize,
        bytes: usize,
    },
}

impl std::fmt::Display for QuantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantError::NoDequantizer(ty) => write!(f, "cannot dequantize tensor type {ty}"),
            QuantError::NoQuantizer(ty) => write!(f, "cannot quantize to tensor type {ty}"),
            QuantError::Length {
                ty,
                elements,
                bytes,
            } => {
                let (len, size) = ty.layout();
                write!(
                    f,
                    "{ty} row of {elements} elements in {bytes} bytes: expected a multiple of \
                     {len} elements taking {size} bytes per block"
                )
            }
        }
    }
}

impl std::error::Error for QuantError {}

/// Checks that `bytes` holds exactly `elements` values of type `ty`.
fn check_len(ty: TensorType, elements: usize, bytes: usize) -> Result<(), QuantError> {
    match ty.row_bytes(elements as u64) {
        Some(b) if b == bytes as u64 => Ok(()),
        _ => Err(QuantError::Length {
            ty,
            elements,
            bytes,
        }),
    }
}

/// Runs a block dequantizer on bytes of any alignment. Blocks are independent, so a
/// misaligned row (only possible for Q8_K, the one block type with alignment 4) is done
/// one copied block at a time with identical results.
fn dequantize_blocks<B: Pod>(src: &[u8], dst: &mut [f32], f: fn(&[B], &mut [f32])) {
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => f(blocks, dst),
        Err(_) => {
            let per_block = dst.len() / (src.len() / size_of::<B>());
            for (b, y) in src
                .chunks_exact(size_of::<B>())
                .zip(dst.chunks_exact_mut(per_block))
            {
                let block: B = bytemuck::pod_read_unaligned(b);
                f(std::slice::from_ref(&block), y);
            }
        }
    }
}

/// Runs a block quantizer into bytes of any alignment (see [`dequantize_blocks`]).
fn quantize_blocks<B: Pod>(src: &[f32], dst: &mut [u8], f: fn(&[f32], &mut [B])) {
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => f(src, blocks),
        Err(_) => {
            let per_block = src.len() / (dst.len() / size_of::<B>());
            for (x, out) in src
                .chunks_exact(per_block)
                .zip(dst.chunks_exact_mut(size_of::<B>()))
            {
                let mut block = B::zeroed();
                f(x, std::slice::from_mut(&mut block));
                out.copy_from_slice(bytemuck::bytes_of(&block));
            }
        }
    }
}

/// Converts one row of type `ty` (`src`, raw little-endian bytes as stored in GGUF) to
/// f32. Every computable type is supported, plus the Q8_1 activation format. The result
/// is bit-identical to ggml's `dequantize_row_*` and the `gguf` package's `dequantize`.
pub fn dequantize_row(ty: TensorType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use TensorType as T;
    if !(ty.is_computable() || ty == T::Q8_1) {
        return Err(QuantError::NoDequantizer(ty));
    }
    check_len(ty, dst.len(), src.len())?;
    match ty {
        T::F32 => float::dequantize_f32(src, dst),
        T::F16 => float::dequantize_f16(src, dst),
        T::BF16 => float::dequantize_bf16(src, dst),
        T::Q4_0 => dequantize_blocks::<BlockQ4_0>(src, dst, q4_0::dequantize),
        T::Q4_1 => dequantize_blocks::<BlockQ4_1>(src, dst, q4_1::dequantize),
        T::Q5_0 => dequantize_blocks::<BlockQ5_0>(src, dst, q5_0::dequantize),
        T::Q5_1 => dequantize_blocks::<BlockQ5_1>(src, dst, q5_1::dequantize),
        T::Q8_0 => dequantize_blocks::<BlockQ8_0>(src, dst, q8_0::dequantize),
        T::Q8_1 => dequantize_blocks::<BlockQ8_1>(src, dst, q8_1::dequantize),
        T::Q2_K => dequantize_blocks::<BlockQ2K>(src, dst, q2_k::dequantize),
        T::Q3_K => dequantize_blocks::<BlockQ3K>(src, dst, q3_k::dequantize),
        T::Q4_K => dequantize_blocks::<BlockQ4K>(src, dst, q4_k::dequantize),
        T::Q5_K => dequantize_blocks::<BlockQ5K>(src, dst, q5_k::dequantize),
        T::Q6_K => dequantize_blocks::<BlockQ6K>(src, dst, q6_k::dequantize),
        T::Q8_K => dequantize_blocks::<BlockQ8K>(src, dst, q8_k::dequantize),
        T::IQ4_NL => dequantize_blocks::<BlockIQ4NL>(src, dst, iq4_nl::dequantize),
        T::IQ4_XS => dequantize_blocks::<BlockIQ4XS>(src, dst, iq4_xs::dequantize),
        _ => return Err(QuantError::NoDequantizer(ty)),
    }
    Ok(())
}

/// Whether [`quantize_row`] can produce type `ty`.
pub fn has_quantizer(ty: TensorType) -> bool {
    ty.is_computable() || ty == TensorType::Q8_1
}

/// Quantizes one row of f32 values to type `ty`, written as raw bytes, with ggml's
/// reference quantizer (`quantize_row_*_ref`: no importance matrix). Every computable type
/// is supported, plus Q8_1. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16 and BF16 match the `gguf`
/// package byte for byte; the rest follow ggml's C (see the module docs).
pub fn quantize_row(ty: TensorType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use TensorType as T;
    if !has_quantizer(ty) {
        return Err(QuantError::NoQuantizer(ty));
    }
    check_len(ty, src.len(), dst.len())?;
    match ty {
        T::F32 => float::quantize_f32(src, dst),
        T::F16 => float::quantize_f16(src, dst),
        T::BF16 => float::quantize_bf16(src, dst),
        T::Q4_0 => quantize_blocks::<BlockQ4_0>(src, dst, q4_0::quantize),
        T::Q4_1 => quantize_blocks::<BlockQ4_1>(src, dst, q4_1::quantize),
        T::Q5_0 => quantize_blocks::<BlockQ5_0>(src, dst, q5_0::quantize),
        T::Q5_1 => quantize_blocks::<BlockQ5_1>(src, dst, q5_1::quantize),
        T::Q8_0 => quantize_blocks::<BlockQ8_0>(src, dst, q8_0::quantize),
        T::Q8_1 => quantize_blocks::<BlockQ8_1>(src, dst, q8_1::quantize),
        T::Q2_K => quantize_blocks::<BlockQ2K>(src, dst, q2_k::quantize),
        T::Q3_K => quantize_blocks::<BlockQ3K>(src, dst, q3_k::quantize),
        T::Q4_K => quantize_blocks::<BlockQ4K>(src, dst, q4_k::quantize),
        T::Q5_K => quantize_blocks::<BlockQ5K>(src, dst, q5_k::quantize),
        T::Q6_K => quantize_blocks::<BlockQ6K>(src, dst, q6_k::quantize),
        T::Q8_K => quantize_blocks::<BlockQ8K>(src, dst, q8_k::quantize),
        T::IQ4_NL => quantize_blocks::<BlockIQ4NL>(src, dst, iq4_nl::quantize),
        T::IQ4_XS => quantize_blocks::<BlockIQ4XS>(src, dst, iq4_xs::quantize),
        _ => return Err(QuantError::NoQuantizer(ty)),
    }
    Ok(())
}

/// Adapts a typed block dot to the byte-level [`crate::dispatch::DotFn`] contract.
///
/// Rows are viewed in place when aligned, which is always the case except for Q8_K (the
/// one block type with alignment 4) at an odd place: a Q8_K weight tensor in a file whose
/// `general.alignment` is below 4, or activation bytes not allocated as blocks. Such rows
/// are copied into aligned blocks first, which allocates but keeps the summation order,
/// and so the result, unchanged.
///
/// Panics when the two rows do not hold the same number of blocks: lengths come from
/// validated tensor shapes, so a mismatch is a bug in the caller.
fn dot_blocks<W: Pod, A: Pod>(w: &[u8], a: &[u8], f: fn(&[W], &[A]) -> f32) -> f32 {
    match (
        bytemuck::try_cast_slice::<u8, W>(w),
        bytemuck::try_cast_slice::<u8, A>(a),
    ) {
        (Ok(w), Ok(a)) => f(w, a),
        _ => f(&copy_blocks::<W>(w), &copy_blocks::<A>(a)),
    }
}

/// Copies row bytes of any alignment into owned blocks (see [`dot_blocks`]).
fn copy_blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// Byte-level dot and quantizer entry points for the kernel table, one per format.
mod scalar {
    use super::*;

    macro_rules! dot_fns {
        ($($name:ident: $w:ty, $a:ty => $f:path;)*) => {
            $(pub fn $name(w: &[u8], a: &[u8]) -> f32 {
                dot_blocks::<$w, $a>(w, a, $f)
            })*
        };
    }

    dot_fns! {
        dot_q4_0: BlockQ4_0, BlockQ8_0 => q4_0::vec_dot;
        dot_q4_1: BlockQ4_1, BlockQ8_1 => q4_1::vec_dot;
        dot_q5_0: BlockQ5_0, BlockQ8_0 => q5_0::vec_dot;
        dot_q5_1: BlockQ5_1, BlockQ8_1 => q5_1::vec_dot;
        dot_q8_0: BlockQ8_0, BlockQ8_0 => q8_0::vec_dot;
        dot_q2_k: BlockQ2K, BlockQ8K => q2_k::vec_dot;
        dot_q3_k: BlockQ3K, BlockQ8K => q3_k::vec_dot;
        dot_q4_k: BlockQ4K, BlockQ8K => q4_k::vec_dot;
        dot_q5_k: BlockQ5K, BlockQ8K => q5_k::vec_dot;
        dot_q6_k: BlockQ6K, BlockQ8K => q6_k::vec_dot;
        dot_q8_k: BlockQ8K, BlockQ8K => q8_k::vec_dot;
        dot_iq4_nl: BlockIQ4NL, BlockQ8_0 => iq4_nl::vec_dot;
        dot_iq4_xs: BlockIQ4XS, BlockQ8K => iq4_xs::vec_dot;
    }

    macro_rules! quantize_fns {
        ($($name:ident: $b:ty => $f:path;)*) => {
            $(pub fn $name(x: &[f32], out: &mut [u8]) {
                assert_eq!(
                    Some(out.len() as u64),
                    <$b as Activation>::TYPE.row_bytes(x.len() as u64),
                    "{} activation row length", <$b as Activation>::TYPE
                );
                quantize_blocks::<$b>(x, out, $f)
            })*
        };
    }

    /// Ties an activation block to its type, for the length check's message.
    trait Activation {
        const TYPE: TensorType;
    }
    impl Activation for BlockQ8_0 {
        const TYPE: TensorType = TensorType::Q8_0;
    }
    impl Activation for BlockQ8_1 {
        const TYPE: TensorType = TensorType::Q8_1;
    }
    impl Activation for BlockQ8K {
        const TYPE: TensorType = TensorType::Q8_K;
    }

    quantize_fns! {
        quantize_q8_0: BlockQ8_0 => q8_0::quantize;
        quantize_q8_1: BlockQ8_1 => q8_1::quantize;
        quantize_q8_k: BlockQ8K => q8_k::quantize;
    }
}

/// Installs the scalar reference kernels: the base layer of every [`Kernels`] table.
///
/// Dots for all 16 computable types, and quantizers for the activation formats Q8_0, Q8_1
/// and Q8_K. F32 also gets a "quantizer", an identity copy into f32 bytes, so that a
/// matmul can always prepare its activations with `k.quantizer(activation_type(ty))`
/// whatever the weight type.
pub fn register_scalar(k: &mut Kernels) {
    use TensorType as T;
    k.set_dot(T::F32, float::vec_dot_f32);
    k.set_dot(T::F16, float::vec_dot_f16);
    k.set_dot(T::BF16, float::vec_dot_bf16);
    k.set_dot(T::Q4_0, scalar::dot_q4_0);
    k.set_dot(T::Q4_1, scalar::dot_q4_1);
    k.set_dot(T::Q5_0, scalar::dot_q5_0);
    k.set_dot(T::Q5_1, scalar::dot_q5_1);
    k.set_dot(T::Q8_0, scalar::dot_q8_0);
    k.set_dot(T::Q2_K, scalar::dot_q2_k);
    k.set_dot(T::Q3_K, scalar::dot_q3_k);
    k.set_dot(T::Q4_K, scalar::dot_q4_k);
    k.set_dot(T::Q5_K, scalar::dot_q5_k);
    k.set_dot(T::Q6_K, scalar::dot_q6_k);
    k.set_dot(T::Q8_K, scalar::dot_q8_k);
    k.set_dot(T::IQ4_NL, scalar::dot_iq4_nl);
    k.set_dot(T::IQ4_XS, scalar::dot_iq4_xs);

    k.set_quantizer(T::F32, float::quantize_f32);
    k.set_quantizer(T::Q8_0, scalar::quantize_q8_0);
    k.set_quantizer(T::Q8_1, scalar::quantize_q8_1);
    k.set_quantizer(T::Q8_K, scalar::quantize_q8_k);
}
