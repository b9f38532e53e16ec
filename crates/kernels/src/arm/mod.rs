//! aarch64 kernels: NEON, and NEON with the dot-product extension.
//!
//! Dots for F32, F16, BF16 (`float`), the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL (`block32`), the k-quants Q2_K … Q6_K, Q8_K and IQ4_XS (`kquants`), and
//! the activation quantizers Q8_0, Q8_1, Q8_K (`quantize`). Each is bit-identical to its
//! scalar reference in `crate::quant` (each module's docs say how); `tests.rs` here and
//! `tests/simd_vs_scalar.rs` check that under qemu (`scripts/test-aarch64.sh`).
//!
//! Two levels. [`Level::Neon`] uses the widening multiplies of base NEON (`smull` +
//! `sadalp`), which every aarch64 CPU has. [`Level::NeonDot`] adds, over those, the
//! kernels of `dot` for CPUs with FEAT_DotProd: `sdot` (four byte products into each
//! 32-bit lane in one instruction) for the 32-element formats, with several-rows and
//! several-tokens kernels for them. The k-quants keep their NEON kernels: `sdot` cannot
//! compute their reference's lane sums more cheaply (see `dot`).
//!
//! `sdot` is written as inline assembly (`simd::sdot`): its intrinsic, `vdotq_s32`, is
//! still unstable in Rust 1.95 (feature `stdarch_neon_dotprod`). The GEMM micro-kernels
//! of the dot-product level are in `crate::gemm::neon`. `HEARTH_CPU=neon` forces the
//! plain level on a CPU with the extension.
//!
//! Kernels are safe `#[target_feature]` functions, so the intrinsics inside them need no
//! `unsafe`; the table stores plain `fn`s, which `neon_fn!`, `dot_fn!` and `rows_fn!`
//! wrap them in.
//!
//! [`Level::Neon`]: crate::dispatch::Level::Neon
//! [`Level::NeonDot`]: crate::dispatch::Level::NeonDot

pub mod ops;

mod block32;
mod dot;
mod float;
mod kquants;
mod quantize;
pub(crate) mod simd;
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

/// Wraps the `neon,dotprod` kernel `$kernel` into a plain `fn` that the [`Kernels`] table
/// can store.
macro_rules! dot_fn {
    ($kernel:path, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {{
        fn wrapped($($arg: $ty),*) -> $ret {
            // SAFETY: a `#[target_feature(enable = "neon,dotprod")]` function requires a
            // CPU with NEON and FEAT_DotProd. These wrappers are reachable only through
            // the table built by `register_neon_dot`, which `Kernels::for_level` calls
            // only after `Level::NeonDot.is_supported()` detected both.
            unsafe { $kernel($($arg),*) }
        }
        wrapped
    }};
}

/// Wraps a kernel of [`dot::ROWS`] rows, `$rows(w, row_bytes, a) -> [f32; ROWS]`, and
/// the same level's single-row `$single(w, a)` into a [`crate::dispatch::DotRowsFn`]:
/// whole groups through the first, the rows left over through the second (which gives
/// each row exactly what the group kernel gives it).
macro_rules! rows_fn {
    ($rows:path, $single:path) => {{
        fn wrapped(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
            assert!(
                out.len().checked_mul(row_bytes) == Some(w.len()),
                "{} rows of {row_bytes} bytes do not make {} bytes",
                out.len(),
                w.len()
            );
            let whole = out.len() - out.len() % dot::ROWS;
            for (g, o) in out[..whole].chunks_exact_mut(dot::ROWS).enumerate() {
                let w = &w[g * dot::ROWS * row_bytes..][..dot::ROWS * row_bytes];
                // SAFETY: each register function installs only kernels of its own level,
                // and `Kernels::for_level` calls it only after detecting that level's
                // features (NEON; NEON and FEAT_DotProd).
                o.copy_from_slice(&unsafe { $rows(w, row_bytes, a) });
            }
            for (r, o) in out.iter_mut().enumerate().skip(whole) {
                // SAFETY: as above.
                *o = unsafe { $single(&w[r * row_bytes..][..row_bytes], a) };
            }
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

/// Installs the dot-product-extension kernels over the NEON ones (`register_neon` first).
pub fn register_neon_dot(k: &mut Kernels) {
    if cfg!(target_endian = "big") {
        return;
    }
    use TensorType::*;
    macro_rules! dot {
        ($ty:expr, $kernel:path, $rows:path, $tokens:path) => {
            k.set_dot($ty, dot_fn!($kernel, (w: &[u8], a: &[u8]) -> f32));
            k.set_dot_rows($ty, rows_fn!($rows, $kernel));
            k.set_dot_tokens(
                $ty,
                dot_fn!(
                    $tokens,
                    (
                        w: &[u8],
                        row_bytes: usize,
                        a: &[u8],
                        a_stride: usize,
                        n_tokens: usize,
                        out: &mut [f32]
                    ) -> ()
                ),
            );
        };
    }
    dot!(
        Q4_0,
        dot::dot_q4_0,
        dot::dot_rows_q4_0,
        dot::dot_tokens_q4_0
    );
    dot!(
        Q4_1,
        dot::dot_q4_1,
        dot::dot_rows_q4_1,
        dot::dot_tokens_q4_1
    );
    dot!(
        Q5_0,
        dot::dot_q5_0,
        dot::dot_rows_q5_0,
        dot::dot_tokens_q5_0
    );
    dot!(
        Q5_1,
        dot::dot_q5_1,
        dot::dot_rows_q5_1,
        dot::dot_tokens_q5_1
    );
    dot!(
        Q8_0,
        dot::dot_q8_0,
        dot::dot_rows_q8_0,
        dot::dot_tokens_q8_0
    );
    dot!(
        IQ4_NL,
        dot::dot_iq4_nl,
        dot::dot_rows_iq4_nl,
        dot::dot_tokens_iq4_nl
    );
}
