//! AVX-512 (F/BW/VL) kernels, with VNNI (`vpdpbusd`) variants where the CPU has it.
//!
//! Formats without a kernel here keep their AVX2 one (registered first): the 32-element
//! formats get one only with VNNI (see `q32`), Q2_K, Q3_K and IQ4_XS none yet.

mod float;
mod kquants;
mod packed;
mod q32;
mod q6k;

use super::block_count;
use crate::dispatch::Kernels;
use crate::quant::TensorType;

/// Defines a safe [`crate::dispatch::DotFn`] around an AVX-512 kernel taking
/// `(w, a, blocks)`, with the weight and activation block sizes in bytes.
macro_rules! dot_fn {
    ($name:ident, $kernel:path, $w_block:expr, $a_block:expr) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            let nb = block_count(w, a, $w_block, $a_block);
            // SAFETY: this function is installed only by `register`, which runs only for
            // a level whose CPU features (AVX-512 F/BW/VL, AVX2, FMA, F16C)
            // Kernels::for_level checked; block_count checked that `w` and `a` hold `nb`
            // blocks each.
            unsafe { $kernel(w.as_ptr(), a.as_ptr(), nb) }
        }
    };
}

/// As [`dot_fn`], for kernels that also need AVX512-VNNI.
macro_rules! dot_fn_vnni {
    ($name:ident, $kernel:path, $w_block:expr, $a_block:expr) => {
        fn $name(w: &[u8], a: &[u8]) -> f32 {
            let nb = block_count(w, a, $w_block, $a_block);
            // SAFETY: as for the plain wrappers; in addition `register` installs this
            // one only when it detected `avx512vnni`.
            unsafe { $kernel(w.as_ptr(), a.as_ptr(), nb) }
        }
    };
}

dot_fn!(dot_f32, float::dot_f32, 4, 4);
dot_fn!(dot_f16, float::dot_f16, 2, 4);
dot_fn!(dot_bf16, float::dot_bf16, 2, 4);
dot_fn_vnni!(dot_q4_0_vnni, q32::dot_q4_0, 18, 34);
dot_fn_vnni!(dot_q5_0_vnni, q32::dot_q5_0, 22, 34);
dot_fn_vnni!(dot_q8_0_vnni, q32::dot_q8_0, 34, 34);
dot_fn_vnni!(dot_iq4_nl_vnni, q32::dot_iq4_nl, 18, 34);
dot_fn_vnni!(dot_q4_1_vnni, q32::dot_q4_1, 20, 36);
dot_fn_vnni!(dot_q5_1_vnni, q32::dot_q5_1, 24, 36);
dot_rows_fn!(
    dot_rows_q4_0_vnni,
    q32::dot_rows_q4_0,
    q32::dot_q4_0,
    q32::ROWS,
    18,
    34
);
dot_rows_fn!(
    dot_rows_q5_0_vnni,
    q32::dot_rows_q5_0,
    q32::dot_q5_0,
    q32::ROWS,
    22,
    34
);
dot_rows_fn!(
    dot_rows_q8_0_vnni,
    q32::dot_rows_q8_0,
    q32::dot_q8_0,
    q32::ROWS,
    34,
    34
);
dot_rows_fn!(
    dot_rows_iq4_nl_vnni,
    q32::dot_rows_iq4_nl,
    q32::dot_iq4_nl,
    q32::ROWS,
    18,
    34
);
dot_rows_fn!(
    dot_rows_q4_k,
    kquants::dot_rows_q4_k,
    kquants::dot_q4_k,
    kquants::ROWS,
    144,
    292
);
dot_rows_fn!(
    dot_rows_q5_k,
    kquants::dot_rows_q5_k,
    kquants::dot_q5_k,
    kquants::ROWS,
    176,
    292
);
dot_rows_fn!(
    dot_rows_q4_k_vnni,
    kquants::dot_rows_q4_k_vnni,
    kquants::dot_q4_k_vnni,
    kquants::ROWS,
    144,
    292
);
dot_rows_fn!(
    dot_rows_q5_k_vnni,
    kquants::dot_rows_q5_k_vnni,
    kquants::dot_q5_k_vnni,
    kquants::ROWS,
    176,
    292
);
dot_fn!(dot_q4_k, kquants::dot_q4_k, 144, 292);
dot_fn!(dot_q5_k, kquants::dot_q5_k, 176, 292);
dot_fn_vnni!(dot_q4_k_vnni, kquants::dot_q4_k_vnni, 144, 292);
dot_fn_vnni!(dot_q5_k_vnni, kquants::dot_q5_k_vnni, 176, 292);
dot_fn!(dot_q6_k, kquants::dot_q6_k, 210, 292);
dot_fn_vnni!(dot_q6_k_vnni, q6k::dot_q6_k_vnni, 210, 292);
dot_rows_fn!(
    dot_rows_q6_k,
    q6k::dot_rows_q6_k,
    q6k::dot_q6_k,
    q6k::ROWS,
    210,
    292
);
dot_rows_fn!(
    dot_rows_q6_k_vnni,
    q6k::dot_rows_q6_k_vnni,
    q6k::dot_q6_k_vnni,
    q6k::ROWS,
    210,
    292
);
dot_tokens_fn!(
    dot_tokens_q4_k,
    kquants::dot_tokens_q4_k,
    kquants::dot_q4_k,
    kquants::ROWS,
    kquants::TOKENS,
    144,
    292
);
dot_tokens_fn!(
    dot_tokens_q5_k,
    kquants::dot_tokens_q5_k,
    kquants::dot_q5_k,
    kquants::ROWS,
    kquants::TOKENS,
    176,
    292
);
dot_tokens_fn!(
    dot_tokens_q4_k_vnni,
    kquants::dot_tokens_q4_k_vnni,
    kquants::dot_q4_k_vnni,
    kquants::ROWS,
    kquants::TOKENS,
    144,
    292
);
dot_tokens_fn!(
    dot_tokens_q5_k_vnni,
    kquants::dot_tokens_q5_k_vnni,
    kquants::dot_q5_k_vnni,
    kquants::ROWS,
    kquants::TOKENS,
    176,
    292
);
dot_tokens_fn!(
    dot_tokens_q6_k,
    q6k::dot_tokens_q6_k,
    q6k::dot_q6_k,
    q6k::ROWS,
    q6k::TOKENS,
    210,
    292
);
dot_tokens_fn!(
    dot_tokens_q6_k_vnni,
    q6k::dot_tokens_q6_k_vnni,
    q6k::dot_q6_k_vnni,
    q6k::ROWS,
    q6k::TOKENS,
    210,
    292
);

/// Installs this level's kernels into `k` (over the AVX2 ones); `vnni` says whether the
/// CPU has AVX512-VNNI.
pub(super) fn register(k: &mut Kernels, vnni: bool) {
    use TensorType::*;
    k.set_dot(F32, dot_f32);
    k.set_dot(F16, dot_f16);
    k.set_dot(BF16, dot_bf16);
    // The 32-element formats gain only from VNNI; without it their AVX2 kernels stay.
    if vnni {
        for (format, kernel) in packed::KERNELS {
            k.set_packed(format, kernel);
        }
        // One scaling per block for sixteen rows, where the GEMM scales every (row,
        // token) pair of each block: faster at prompt sizes too (`matmul_rows_packed`).
        k.set_packed_prompts(true);
        k.set_dot(Q4_0, dot_q4_0_vnni);
        k.set_dot(Q5_0, dot_q5_0_vnni);
        k.set_dot(Q8_0, dot_q8_0_vnni);
        k.set_dot(IQ4_NL, dot_iq4_nl_vnni);
        k.set_dot(Q4_1, dot_q4_1_vnni);
        k.set_dot(Q5_1, dot_q5_1_vnni);
        k.set_dot_rows(Q4_0, dot_rows_q4_0_vnni);
        k.set_dot_rows(Q5_0, dot_rows_q5_0_vnni);
        k.set_dot_rows(Q8_0, dot_rows_q8_0_vnni);
        k.set_dot_rows(IQ4_NL, dot_rows_iq4_nl_vnni);
        k.set_dot_tokens(Q4_0, q32::dot_tokens_q4_0);
        k.set_dot_tokens(Q5_0, q32::dot_tokens_q5_0);
        k.set_dot_tokens(Q8_0, q32::dot_tokens_q8_0);
        k.set_dot_tokens(IQ4_NL, q32::dot_tokens_iq4_nl);
    }
    // Q4_K/Q5_K: with VNNI, `vpdpbusd` sums and one `vpdpwssd` per two sub-blocks (the
    // same lane sums, so both variants give the same results).
    if vnni {
        k.set_dot(Q4_K, dot_q4_k_vnni);
        k.set_dot_rows(Q4_K, dot_rows_q4_k_vnni);
        k.set_dot_tokens(Q4_K, dot_tokens_q4_k_vnni);
        k.set_dot(Q5_K, dot_q5_k_vnni);
        k.set_dot_rows(Q5_K, dot_rows_q5_k_vnni);
        k.set_dot_tokens(Q5_K, dot_tokens_q5_k_vnni);
    } else {
        k.set_dot(Q4_K, dot_q4_k);
        k.set_dot_rows(Q4_K, dot_rows_q4_k);
        k.set_dot_tokens(Q4_K, dot_tokens_q4_k);
        k.set_dot(Q5_K, dot_q5_k);
        k.set_dot_rows(Q5_K, dot_rows_q5_k);
        k.set_dot_tokens(Q5_K, dot_tokens_q5_k);
    }
    // Q6_K's `q6k` kernels equal `kquants::dot_q6_k` bit for bit; with VNNI they use
    // `vpdpbusd` and one `vpdpwssd` per two sub-blocks (the same lane sums).
    if vnni {
        k.set_dot(Q6_K, dot_q6_k_vnni);
        k.set_dot_rows(Q6_K, dot_rows_q6_k_vnni);
        k.set_dot_tokens(Q6_K, dot_tokens_q6_k_vnni);
    } else {
        k.set_dot(Q6_K, dot_q6_k);
        k.set_dot_rows(Q6_K, dot_rows_q6_k);
        k.set_dot_tokens(Q6_K, dot_tokens_q6_k);
    }
}

#[cfg(test)]
mod tests {
    //! The VNNI kernels against the AVX2 ones. `Kernels` installs only one of the two on
    //! a given CPU, so `tests/simd_vs_scalar.rs` compares the VNNI ones with the scalar
    //! reference where VNNI exists and the AVX2 ones elsewhere; here both run and must
    //! agree bit for bit: they form the same i32 sums and do the same float operations in
    //! the same order.

    use super::*;
    use crate::dispatch::Level;

    /// Deterministic rows of `nb` blocks: random bytes with finite f16 scales at the
    /// block starts (and at offset 2 for Q4_1/Q5_1's `m` and Q8_1's `s`), activation
    /// quants kept in -127..=127 as the quantizers produce them.
    fn rows(nb: usize, w_block: usize, a_block: usize) -> (Vec<u8>, Vec<u8>) {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut byte = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        };
        let mut w: Vec<u8> = (0..nb * w_block).map(|_| byte()).collect();
        let mut a: Vec<u8> = (0..nb * a_block).map(|_| byte()).collect();
        // Clearing exponent bits 6 and 2 of each half's high byte keeps it finite.
        for b in w.chunks_exact_mut(w_block) {
            b[1] &= 0xBB;
            b[3] &= 0xBB;
        }
        for b in a.chunks_exact_mut(a_block) {
            b[1] &= 0xBB;
            b[3] &= 0xBB;
            for q in &mut b[a_block - 32..] {
                if *q == 0x80 {
                    *q = 0x81;
                }
            }
        }
        (w, a)
    }

    #[test]
    fn vnni_kernels_equal_avx2_ones() {
        if !(Level::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512vnni")) {
            eprintln!("skipped: this CPU lacks AVX-512 or AVX512-VNNI");
            return;
        }
        let avx2 = Kernels::for_level(Level::Avx2).expect("AVX-512 implies AVX2");
        type Dot = fn(&[u8], &[u8]) -> f32;
        let kernels: [(TensorType, Dot, usize, usize); 6] = [
            (TensorType::Q4_0, dot_q4_0_vnni, 18, 34),
            (TensorType::Q5_0, dot_q5_0_vnni, 22, 34),
            (TensorType::Q8_0, dot_q8_0_vnni, 34, 34),
            (TensorType::IQ4_NL, dot_iq4_nl_vnni, 18, 34),
            (TensorType::Q4_1, dot_q4_1_vnni, 20, 36),
            (TensorType::Q5_1, dot_q5_1_vnni, 24, 36),
        ];
        for (ty, vnni, w_block, a_block) in kernels {
            let plain = avx2.dot(ty).expect("AVX2 kernel");
            for nb in 0..=9 {
                let (w, a) = rows(nb, w_block, a_block);
                let (p, v) = (plain(&w, &a), vnni(&w, &a));
                assert_eq!(p.to_bits(), v.to_bits(), "{ty}, {nb} blocks: {p} vs {v}");
            }
        }
    }

    /// Q4_K/Q5_K: the plain kernels (`madd` + `add`) and the VNNI ones (`vpdpwssd`)
    /// form the same exact i32 sums, so they must agree bit for bit, single- and
    /// multi-row; only the VNNI ones run elsewhere in the tests on a VNNI CPU.
    #[test]
    fn q4_k_q5_k_vnni_kernels_equal_plain_ones() {
        if !(Level::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512vnni")) {
            eprintln!("skipped: this CPU lacks AVX-512 or AVX512-VNNI");
            return;
        }
        type Dot = fn(&[u8], &[u8]) -> f32;
        type Rows = fn(&[u8], usize, &[u8], &mut [f32]);
        let kernels: [(&str, Dot, Dot, Rows, Rows, usize); 2] = [
            (
                "Q4_K",
                dot_q4_k,
                dot_q4_k_vnni,
                dot_rows_q4_k,
                dot_rows_q4_k_vnni,
                144,
            ),
            (
                "Q5_K",
                dot_q5_k,
                dot_q5_k_vnni,
                dot_rows_q5_k,
                dot_rows_q5_k_vnni,
                176,
            ),
        ];
        for (ty, dot, dot_vnni, dot_rows, dot_rows_vnni, w_block) in kernels {
            for nb in 0..=5 {
                let n_rows = 9;
                let (w, a) = rows(nb * n_rows, w_block, 292);
                let a = &a[..nb * 292];
                let (p, v) = (dot(&w[..nb * w_block], a), dot_vnni(&w[..nb * w_block], a));
                assert_eq!(p.to_bits(), v.to_bits(), "{ty}, {nb} blocks: {p} vs {v}");
                let (mut p, mut v) = (vec![0.0; n_rows], vec![0.0; n_rows]);
                dot_rows(&w, nb * w_block, a, &mut p);
                dot_rows_vnni(&w, nb * w_block, a, &mut v);
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&v), "{ty}, {nb} blocks: {p:?} vs {v:?}");
            }
        }
    }

    /// The plain (non-VNNI) several-tokens kernels of the k-quants, which `Kernels`
    /// installs only on AVX-512 CPUs without VNNI: against the plain single-row dots,
    /// bit for bit, for every row and token count of one tile and its leftovers.
    #[test]
    fn plain_k_quant_token_kernels_equal_plain_dots() {
        if !Level::Avx512.is_supported() {
            eprintln!("skipped: this CPU lacks AVX-512");
            return;
        }
        type Dot = fn(&[u8], &[u8]) -> f32;
        type Tokens = fn(&[u8], usize, &[u8], usize, usize, &mut [f32]);
        let kernels: [(&str, Dot, Tokens, usize, usize); 3] = [
            ("Q4_K", dot_q4_k, dot_tokens_q4_k, 144, 0),
            ("Q5_K", dot_q5_k, dot_tokens_q5_k, 176, 0),
            ("Q6_K", dot_q6_k, dot_tokens_q6_k, 210, 208),
        ];
        for (ty, dot, tokens, w_block, d_at) in kernels {
            for nb in 0..=3 {
                for (n_rows, n_tokens) in [(4, 4), (9, 7), (3, 2), (5, 1)] {
                    let (mut w, _) = rows(nb * n_rows, w_block, 292);
                    for b in w.chunks_exact_mut(w_block) {
                        // Finite halves for d (and Q4_K/Q5_K's dmin).
                        b[d_at + 1] &= 0xBB;
                        b[3] &= 0xBB;
                    }
                    let (_, a) = rows(nb * n_tokens, 4, 292);
                    let mut a = a;
                    for b in a.chunks_exact_mut(292) {
                        b[..4].copy_from_slice(&0.01f32.to_le_bytes());
                        for q in &mut b[4..260] {
                            if *q == 0x80 {
                                *q = 0x81;
                            }
                        }
                    }
                    let (rb, ab) = (nb * w_block, nb * 292);
                    let mut out = vec![f32::NAN; n_rows * n_tokens];
                    tokens(&w, rb, &a, ab, n_tokens, &mut out);
                    for t in 0..n_tokens {
                        for r in 0..n_rows {
                            let want = dot(&w[r * rb..][..rb], &a[t * ab..][..ab]);
                            let got = out[t * n_rows + r];
                            assert_eq!(got.to_bits(), want.to_bits(), "{ty} r{r} t{t} nb{nb}");
                        }
                    }
                }
            }
        }
    }
}
