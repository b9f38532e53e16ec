//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL, VNNI where present).
//!
//! Every kernel here is an `unsafe` `#[target_feature]` function behind a safe [`DotFn`]
//! or [`QuantizeFn`] wrapper. The wrappers are private to this module and are handed out
//! only through [`register_avx2`] and [`register_avx512`], which
//! [`Kernels::for_level`] calls only after [`Level::is_supported`] confirmed the CPU
//! features; that is the invariant the `// SAFETY:` comments below lean on. Each wrapper
//! also checks the slice lengths, so a kernel never reads past its inputs.
//!
//! The algorithms follow ggml's x86 code (`ggml-cpu/arch/x86/quants.c`): integer dot
//! products of whole blocks with `maddubs`/`madd` (or VNNI `vpdpbusd`), one float
//! multiply-add per block or sub-block. Each is tested against the scalar reference in
//! `crate::quant` by `tests/simd_vs_scalar.rs`.
//!
//! [`DotFn`]: crate::dispatch::DotFn
//! [`QuantizeFn`]: crate::dispatch::QuantizeFn
//! [`Level::is_supported`]: crate::dispatch::Level::is_supported

mod avx2;
mod avx512;
pub mod ops;

use crate::dispatch::Kernels;

/// Installs the AVX2 kernels over the scalar ones.
pub fn register_avx2(k: &mut Kernels) {
    avx2::register(k);
}

/// Installs the AVX-512 kernels over the AVX2 ones. The VNNI (`vpdpbusd`) variants are
/// chosen here when the CPU has `avx512vnni`.
pub fn register_avx512(k: &mut Kernels) {
    avx512::register(k, std::arch::is_x86_feature_detected!("avx512vnni"));
}

/// Number of whole blocks in a weight row `w` of `w_block` bytes per block, after
/// checking that `a` holds exactly as many activation blocks of `a_block` bytes.
///
/// This is the bounds check that makes the raw-pointer kernels sound; it panics on a
/// mismatch, which is a caller bug (rows are sized by the matmul code, not by files).
#[inline(always)]
fn block_count(w: &[u8], a: &[u8], w_block: usize, a_block: usize) -> usize {
    let nb = w.len() / w_block;
    assert!(
        w.len().is_multiple_of(w_block) && a.len() == nb * a_block,
        "dot row lengths disagree: {} weight bytes ({w_block} per block), {} activation bytes \
         ({a_block} per block)",
        w.len(),
        a.len()
    );
    nb
}

/// Number of blocks to quantize `x` into `out`, after checking the lengths agree.
#[inline(always)]
fn quant_block_count(x: &[f32], out: &[u8], block_len: usize, block_bytes: usize) -> usize {
    let nb = x.len() / block_len;
    assert!(
        x.len().is_multiple_of(block_len) && out.len() == nb * block_bytes,
        "quantize lengths disagree: {} values ({block_len} per block), {} output bytes \
         ({block_bytes} per block)",
        x.len(),
        out.len()
    );
    nb
}
