//! AVX2 (+FMA, F16C) kernels: the level every x86-64 CPU since Haswell (2013) and Zen
//! runs.

mod float;
pub(super) mod kquants;
mod packed;
pub(super) mod q32;
mod quantize;
mod rows_k;
mod rows_q32;
mod tokens_k;
pub(super) mod util;

use super::{block_count, quant_block_count};
use crate::dispatch::Kernels;
use crate::quant::TensorType;

/// Defines a safe [`crate::dispatch::DotFn`] around an AVX2 kernel taking
/// `(w, a, blocks)`, with the weight and activation block sizes in bytes.
macro_rules! dot_fn {
    ($name:ident, $kernel:path, $w_block:expr, $a_block:expr) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            let nb = block_count(w, a, $w_block, $a_block);
            // SAFETY: this function is installed only by `register`, which runs only for
            // a level whose CPU features (AVX2, FMA, F16C) Kernels::for_level checked;
            // block_count checked that `w` and `a` hold `nb` blocks each.
            unsafe { $kernel(w.as_ptr(), a.as_ptr(), nb) }
        }
    };
}

/// Defines a safe [`crate::dispatch::QuantizeFn`] around an AVX2 quantizer taking
/// `(x, out, blocks)`.
macro_rules! quantize_fn {
    ($name:ident, $kernel:path, $block_len:expr, $block_bytes:expr) => {
        fn $name(x: &[f32], out: &mut [u8]) {
            let nb = quant_block_count(x, out, $block_len, $block_bytes);
            // SAFETY: as for the dot wrappers: installed only on CPUs with AVX2, FMA and
            // F16C, and quant_block_count checked that `x` and `out` hold `nb` blocks.
            unsafe { $kernel(x.as_ptr(), out.as_mut_ptr(), nb) }
        }
    };
}

dot_fn!(dot_f32, float::dot_f32, 4, 4);
dot_fn!(dot_f16, float::dot_f16, 2, 4);
dot_fn!(dot_bf16, float::dot_bf16, 2, 4);
dot_fn!(dot_q4_0, q32::dot_q4_0, 18, 34);
dot_fn!(dot_q5_0, q32::dot_q5_0, 22, 34);
dot_fn!(dot_q8_0, q32::dot_q8_0, 34, 34);
dot_fn!(dot_iq4_nl, q32::dot_iq4_nl, 18, 34);
dot_fn!(dot_q4_1, q32::dot_q4_1, 20, 36);
dot_fn!(dot_q5_1, q32::dot_q5_1, 24, 36);
dot_fn!(dot_q4_k, kquants::dot_q4_k, 144, 292);
dot_fn!(dot_q5_k, kquants::dot_q5_k, 176, 292);
dot_fn!(dot_q6_k, kquants::dot_q6_k, 210, 292);
dot_fn!(dot_iq4_xs, kquants::dot_iq4_xs, 136, 292);
dot_rows_fn!(
    dot_rows_q4_0,
    q32::dot_rows_q4_0,
    q32::dot_q4_0,
    q32::ROWS,
    18,
    34
);
dot_rows_fn!(
    dot_rows_q5_0,
    q32::dot_rows_q5_0,
    q32::dot_q5_0,
    q32::ROWS,
    22,
    34
);
dot_rows_fn!(
    dot_rows_q8_0,
    rows_q32::dot_rows_q8_0,
    q32::dot_q8_0,
    q32::ROWS,
    34,
    34
);
dot_rows_fn!(
    dot_rows_iq4_nl,
    rows_q32::dot_rows_iq4_nl,
    q32::dot_iq4_nl,
    q32::ROWS,
    18,
    34
);
dot_rows_fn!(
    dot_rows_q4_k,
    rows_k::dot_rows_q4_k,
    kquants::dot_q4_k,
    rows_k::ROWS,
    144,
    292
);
dot_rows_fn!(
    dot_rows_q5_k,
    rows_k::dot_rows_q5_k,
    kquants::dot_q5_k,
    rows_k::ROWS,
    176,
    292
);
dot_rows_fn!(
    dot_rows_iq4_xs,
    rows_k::dot_rows_iq4_xs,
    kquants::dot_iq4_xs,
    rows_k::ROWS,
    136,
    292
);
dot_tokens_fn!(
    dot_tokens_q4_k,
    tokens_k::dot_tokens_q4_k,
    kquants::dot_q4_k,
    tokens_k::TILE_ROWS,
    tokens_k::TOKENS,
    144,
    292
);
dot_tokens_fn!(
    dot_tokens_q5_k,
    tokens_k::dot_tokens_q5_k,
    kquants::dot_q5_k,
    tokens_k::TILE_ROWS,
    tokens_k::TOKENS,
    176,
    292
);
dot_tokens_fn!(
    dot_tokens_q6_k,
    tokens_k::dot_tokens_q6_k,
    kquants::dot_q6_k,
    tokens_k::TILE_ROWS,
    tokens_k::TOKENS,
    210,
    292
);
quantize_fn!(quantize_q8_0, quantize::quantize_q8_0, 32, 34);
quantize_fn!(quantize_q8_1, quantize::quantize_q8_1, 32, 36);
quantize_fn!(quantize_q8_k, quantize::quantize_q8_k, 256, 292);

/// Installs this level's kernels into `k`.
pub(super) fn register(k: &mut Kernels) {
    use TensorType::*;
    k.set_dot(F32, dot_f32);
    k.set_dot(F16, dot_f16);
    k.set_dot(BF16, dot_bf16);
    k.set_dot(Q4_0, dot_q4_0);
    k.set_dot(Q5_0, dot_q5_0);
    k.set_dot_rows(Q4_0, dot_rows_q4_0);
    k.set_dot_rows(Q5_0, dot_rows_q5_0);
    k.set_dot(Q8_0, dot_q8_0);
    for (format, kernel) in packed::KERNELS {
        k.set_packed(format, kernel);
    }
    // Several rows per activation vector (decode): the rows share each activation
    // block's loads and scale, and are prefetched ahead. Not Q6_K: its multi-row kernel
    // was slower than the single-row one row by row (see `rows_k`).
    k.set_dot_rows(Q8_0, dot_rows_q8_0);
    k.set_dot_rows(IQ4_NL, dot_rows_iq4_nl);
    k.set_dot_rows(Q4_K, dot_rows_q4_k);
    k.set_dot_rows(Q5_K, dot_rows_q5_k);
    k.set_dot_rows(IQ4_XS, dot_rows_iq4_xs);
    // Several tokens: each weight block decoded once for all of them. Q4_0 keeps its
    // four-row kernel per token, which was as fast as the 2x2 tile (benches/batch_shapes,
    // Zen 4: the decode it saves is two ops per block).
    k.set_dot_tokens(Q5_0, q32::dot_tokens_q5_0);
    k.set_dot_tokens(Q8_0, q32::dot_tokens_q8_0);
    k.set_dot_tokens(IQ4_NL, q32::dot_tokens_iq4_nl);
    k.set_dot_tokens(Q4_K, dot_tokens_q4_k);
    k.set_dot_tokens(Q5_K, dot_tokens_q5_k);
    k.set_dot_tokens(Q6_K, dot_tokens_q6_k);
    k.set_dot(IQ4_NL, dot_iq4_nl);
    k.set_dot(Q4_1, dot_q4_1);
    k.set_dot(Q5_1, dot_q5_1);
    k.set_dot(Q4_K, dot_q4_k);
    k.set_dot(Q5_K, dot_q5_k);
    k.set_dot(Q6_K, dot_q6_k);
    k.set_dot(IQ4_XS, dot_iq4_xs);
    k.set_quantizer(Q8_0, quantize_q8_0);
    k.set_quantizer(Q8_1, quantize_q8_1);
    k.set_quantizer(Q8_K, quantize_q8_k);
}
