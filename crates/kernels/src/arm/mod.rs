//! aarch64 kernels: NEON.
//!
//! Dots for F32, F16, BF16 (`float`), the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL (`block32`), the k-quants Q2_K … Q6_K, Q8_K and IQ4_XS (`kquants`), and
//! the activation quantizers Q8_0, Q8_1, Q8_K (`quantize`). Each is bit-identical to its
//! scalar reference in `crate::quant` (each module's docs say how); `tests.rs` here and
//! `tests/simd_vs_scalar.rs` check that under qemu (`scripts/test-aarch64.sh`).
//!
//! The integer dots use the widening multiplies of base NEON (`smull` + `sadalp`), not
//! the dot-product extension: its intrinsic `vdotq_s32` is still unstable in Rust (1.95,
//! feature `stdarch_neon_dotprod`). Where `sdot` exists it would do the same sums in
//! fewer instructions; that is the next step once the intrinsic is stable.
//!
//! Kernels are safe `#[target_feature(enable = "neon")]` functions, so the intrinsics
//! inside them need no `unsafe`; the table stores plain `fn`s, which `neon_fn!` wraps
//! them in.

pub mod ops;

mod block32;
mod float;
mod kquants;
mod quantize;
mod simd;
#[cfg(test)]
mod tests;

use crate::dispatch::Kernels;
use crate::quant::TensorType;

/// Wraps the `neon` kernel `$kernel` into a plain `fn` that the [`Kernels`] table can store.
macro_rules! neon_fn {
    ($kernel:path, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {{
        fn wrapped($($arg: $ty),*) -> $ret {
            // SAFETY: the only requirement of a `#[target_feature(enable = "neon")]`
            // function is a CPU with NEON. These wrappers are reachable only through the
            // table built by `register_neon`, which `Kernels::for_level` calls only after
            // `Level::Neon.is_supported()` (and NEON is part of every aarch64 Linux
            // target's baseline anyway).
            unsafe { $kernel($($arg),*) }
        }
        wrapped
    }};
}

/// Installs the NEON kernels over the scalar ones.
pub fn register_neon(k: &mut Kernels) {
    // The kernels read multi-byte fields by reinterpreting vector lanes, which assumes a
    // little-endian CPU, as GGUF files (and every aarch64 Linux target Rust ships but
    // aarch64_be) are.
    if cfg!(target_endian = "big") {
        return;
    }
    use TensorType::*;
    macro_rules! dot {
        ($ty:expr, $kernel:path) => {
            k.set_dot($ty, neon_fn!($kernel, (w: &[u8], a: &[u8]) -> f32))
        };
    }
    dot!(F32, float::dot_f32);
    dot!(F16, float::dot_f16);
    dot!(BF16, float::dot_bf16);
    dot!(Q4_0, block32::dot_q4_0);
    dot!(Q4_1, block32::dot_q4_1);
    dot!(Q5_0, block32::dot_q5_0);
    dot!(Q5_1, block32::dot_q5_1);
    dot!(Q8_0, block32::dot_q8_0);
    dot!(IQ4_NL, block32::dot_iq4_nl);
    dot!(Q2_K, kquants::dot_q2_k);
    dot!(Q3_K, kquants::dot_q3_k);
    dot!(Q4_K, kquants::dot_q4_k);
    dot!(Q5_K, kquants::dot_q5_k);
    dot!(Q6_K, kquants::dot_q6_k);
    dot!(Q8_K, kquants::dot_q8_k);
    dot!(IQ4_XS, kquants::dot_iq4_xs);

    macro_rules! quantizer {
        ($ty:expr, $kernel:path) => {
            k.set_quantizer($ty, neon_fn!($kernel, (x: &[f32], out: &mut [u8]) -> ()))
        };
    }
    quantizer!(Q8_0, quantize::quantize_q8_0);
    quantizer!(Q8_1, quantize::quantize_q8_1);
    quantizer!(Q8_K, quantize::quantize_q8_k);
}
