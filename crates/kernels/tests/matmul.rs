//! Matrix products for every computable format, at every CPU level, on 1 and 2 threads.
//!
//! Two references per case:
//! 1. Exact: every output must equal, bit for bit, one call of the level's dot kernel on
//!    the weight row and the level's quantized activation row. This checks the plumbing
//!    (indexing, chunks, tiles, threads) with no tolerance at all, and shows that results
//!    do not depend on the thread count. Products that go through a GEMM micro-kernel
//!    (many tokens, a level with one) sum the same integer products in another f32
//!    order, so there the dot is matched within the math tolerance below instead, and
//!    the thread-count independence is checked by comparing 1 and 2 threads.
//! 2. Math: the weights dequantized to f32 and the activations as the kernel sees them
//!    (dequantized from their Q8 format, or the f32 values themselves) multiplied in f64.
//!    Tolerance: 1e-5·Σ|w·a| + 1e-6 for float rounding in the kernels, plus, for Q4_1
//!    and Q5_1, Σ_blocks |m|·|s|·2^-11: ggml's Q8_1 stores the block sum `s = d·Σq` as
//!    f16, and the kernels use that rounded sum for the weights' offset `m`.
//!
//! Weights come from random f32 values through the reference quantizers
//! (`quant::quantize_row`); dequantization is `quant::dequantize_row`, which
//! `tests/quant_dequant.rs` checks against the `gguf` Python package.

use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::gemm::{self, MicroKernel};
use hearth_kernels::matmul::{
    matmul, matmul_with, matvec, GemmTokens, MatmulError, MatmulScratch, WeightMatrix,
};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{activation_type, dequantize_row, quantize_row, TensorType};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Roughly normal (sum of uniforms), centred on 0 with unit spread.
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (s - 2.0) * 1.7
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn computable() -> Vec<TensorType> {
    TensorType::ALL
        .into_iter()
        .filter(|t| t.is_computable())
        .collect()
}

/// Quantizes `[n_rows, n_cols]` random weights to `ty`.
fn weights(ty: TensorType, n_rows: usize, n_cols: usize, rng: &mut Rng) -> Vec<u8> {
    let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
    let mut data = vec![0u8; n_rows * row_bytes];
    for row in data.chunks_exact_mut(row_bytes) {
        quantize_row(ty, &rng.vec(n_cols), row).unwrap();
    }
    data
}

fn dequantize(ty: TensorType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out
}

/// Element counts per row to test for `ty`: several blocks, and more than one SIMD step.
/// Row lengths that give the GEMM layout (see `gemm::Segments`) a whole group of 16
/// scale runs and a tail, with a half chunk at the end for the 32-value formats.
fn n_cols_for(ty: TensorType) -> usize {
    match ty.block_len() {
        1 => 70,
        32 => 672,
        _ => 768,
    }
}

/// The f16 at byte `at` of `b`.
fn f16_at(b: &[u8], at: usize) -> f64 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f64()
}

/// Checks `matmul_with` for one type, level, shape and pool against both references.
fn check(
    ty: TensorType,
    k: &Kernels,
    pool: &ThreadPool,
    n_rows: usize,
    n_tokens: usize,
    seed: u64,
) -> Vec<f32> {
    let mut rng = Rng(seed);
    let n_cols = n_cols_for(ty);
    let data = weights(ty, n_rows, n_cols, &mut rng);
    let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
    let x = rng.vec(n_tokens * n_cols);
    let mut out = vec![f32::NAN; n_tokens * n_rows];
    let mut scratch = MatmulScratch::new();
    matmul_with(k, pool, &w, &x, n_tokens, &mut out, &mut scratch).unwrap();

    // The activation rows as the kernel sees them.
    let act_ty = activation_type(ty);
    let act_row_bytes = act_ty.row_bytes(n_cols as u64).unwrap() as usize;
    let acts: Vec<Vec<u8>> = x
        .chunks_exact(n_cols)
        .map(|xt| {
            let mut a = vec![0u8; act_row_bytes];
            k.quantizer(act_ty).expect("activation quantizer")(xt, &mut a);
            a
        })
        .collect();
    let dot = k.dot(ty).unwrap();
    let via_gemm = k.gemm().is_some() && n_tokens >= gemm::MIN_TOKENS && gemm::supports(ty);
    let label = format!(
        "{ty} {}{} {} thr [{n_rows}x{n_cols}]·{n_tokens}",
        k.level().name(),
        if via_gemm { "+gemm" } else { "" },
        pool.n_threads()
    );
    for t in 0..n_tokens {
        let a_f32 = dequantize(act_ty, &acts[t], n_cols);
        for r in 0..n_rows {
            let got = out[t * n_rows + r];
            // 1. Exact (the GEMM path: below, within the math tolerance).
            let want = dot(w.row(r), &acts[t]);
            if !via_gemm {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{label}: out[{t},{r}] {got} vs dot {want}"
                );
            }
            // 2. Math.
            let w_f32 = dequantize(ty, w.row(r), n_cols);
            let exact: f64 = w_f32
                .iter()
                .zip(&a_f32)
                .map(|(&w, &a)| w as f64 * a as f64)
                .sum();
            let mag: f64 = w_f32
                .iter()
                .zip(&a_f32)
                .map(|(&w, &a)| (w as f64 * a as f64).abs())
                .sum();
            let mut tol = 1e-5 * mag + 1e-6;
            if act_ty == TensorType::Q8_1 {
                let (wb, ab) = (ty.block_bytes(), act_ty.block_bytes());
                for (wblk, ablk) in w.row(r).chunks_exact(wb).zip(acts[t].chunks_exact(ab)) {
                    // m is the second half of Q4_1/Q5_1; s the second half of Q8_1.
                    tol += f16_at(wblk, 2).abs() * f16_at(ablk, 2).abs() / 2048.0;
                }
            }
            assert!(
                (got as f64 - exact).abs() <= tol,
                "{label}: out[{t},{r}] = {got}, f64 says {exact} (tol {tol:e})"
            );
            assert!(
                (got as f64 - want as f64).abs() <= tol,
                "{label}: out[{t},{r}] = {got}, dot says {want} (tol {tol:e})"
            );
        }
    }
    out
}

/// Every level's table, plus the scalar table with the plain-Rust GEMM micro-kernel, so
/// the GEMM driver is tested with its reference on every machine.
fn levels() -> Vec<Kernels> {
    let mut scalar_gemm = Kernels::for_level(Level::Scalar).expect("scalar");
    scalar_gemm.set_gemm(Some(MicroKernel::reference()));
    Level::supported()
        .into_iter()
        .map(|l| Kernels::for_level(l).expect("supported"))
        .chain([scalar_gemm])
        .collect()
}

#[test]
fn every_format_every_level_one_and_two_threads() {
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    for ty in computable() {
        for k in levels() {
            // Shapes: one row, a few rows, and enough rows (and tokens) to spread over
            // several chunks and both threads.
            for (n_rows, n_tokens) in [(1, 1), (5, 3), (97, 1), (6, 4), (131, 9), (37, 21)] {
                let seed = 0x9E37_79B9_7F4A_7C15 ^ (ty.id() as u64) << 32 ^ n_rows as u64;
                let outs: Vec<Vec<f32>> = pools
                    .iter()
                    .map(|p| check(ty, &k, p, n_rows, n_tokens, seed))
                    .collect();
                assert_eq!(
                    outs[0],
                    outs[1],
                    "{ty} {}: 1 vs 2 threads",
                    k.level().name()
                );
            }
        }
    }
}

#[test]
fn large_product_spreads_over_tiles_chunks_and_threads() {
    // 700 rows of 4096 Q4_K values: 2304-byte rows, so 28 rows per 64 KiB tile, 88-row
    // chunks on 2 threads; 20 tokens (parallel activation quantization).
    let pool = ThreadPool::new(2).unwrap();
    for ty in [TensorType::Q4_K, TensorType::Q8_0, TensorType::F16] {
        let mut rng = Rng(42);
        let (n_rows, n_cols, n_tokens) = (700, 4096, 20);
        let data = weights(ty, n_rows, n_cols, &mut rng);
        let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
        let x = rng.vec(n_tokens * n_cols);
        let mut scratch = MatmulScratch::new();
        let mut out = vec![0.0; n_tokens * n_rows];
        matmul(&pool, &w, &x, n_tokens, &mut out, &mut scratch).unwrap();
        // Row by row with matvec on one thread must agree exactly.
        let single = ThreadPool::new(1).unwrap();
        let mut row_out = vec![0.0; n_rows];
        for t in 0..n_tokens {
            matvec(
                &single,
                &w,
                &x[t * n_cols..][..n_cols],
                &mut row_out,
                &mut scratch,
            )
            .unwrap();
            if Kernels::get().gemm().is_some() && gemm::supports(ty) {
                // Same integer products, another f32 order (see the file's doc).
                for r in 0..n_rows {
                    let w_f32 = dequantize(ty, w.row(r), n_cols);
                    let mag: f32 = w_f32
                        .iter()
                        .zip(&x[t * n_cols..][..n_cols])
                        .map(|(w, x)| (w * x).abs())
                        .sum();
                    let (got, want) = (out[t * n_rows + r], row_out[r]);
                    assert!(
                        (got - want).abs() <= 1e-5 * mag,
                        "{ty} token {t} row {r}: {got} vs {want} (|w·x| {mag})"
                    );
                }
            } else {
                assert_eq!(&out[t * n_rows..][..n_rows], &row_out[..], "{ty} token {t}");
            }
        }
    }
}

#[test]
fn shape_errors_are_typed() {
    let pool = ThreadPool::new(1).unwrap();
    let mut scratch = MatmulScratch::new();
    let q = TensorType::Q4_0;
    assert_eq!(
        WeightMatrix::new(q, 2, 48, &[0; 36]).unwrap_err(),
        MatmulError::Columns { ty: q, n_cols: 48 }
    );
    assert_eq!(
        WeightMatrix::new(q, 2, 64, &[0; 71]).unwrap_err(),
        MatmulError::WeightBytes {
            ty: q,
            n_rows: 2,
            n_cols: 64,
            expected: Some(72),
            actual: 71
        }
    );
    assert!(matches!(
        WeightMatrix::new(q, usize::MAX, 64, &[]).unwrap_err(),
        MatmulError::WeightBytes { expected: None, .. }
    ));
    let data = vec![0u8; 72];
    let w = WeightMatrix::new(q, 2, 64, &data).unwrap();
    let mut out = [0.0; 2];
    assert_eq!(
        matvec(&pool, &w, &[0.0; 63], &mut out, &mut scratch).unwrap_err(),
        MatmulError::Activations {
            n_tokens: 1,
            n_cols: 64,
            actual: 63
        }
    );
    assert_eq!(
        matmul(&pool, &w, &[0.0; 128], 2, &mut out, &mut scratch).unwrap_err(),
        MatmulError::Output {
            n_tokens: 2,
            n_rows: 2,
            actual: 2
        }
    );
    let iq2 = TensorType::IQ2_XXS;
    let data = vec![0u8; 66];
    let w = WeightMatrix::new(iq2, 1, 256, &data).unwrap();
    let err = matvec(&pool, &w, &[0.0; 256], &mut out[..1], &mut scratch).unwrap_err();
    assert_eq!(err, MatmulError::NotComputable(iq2));
    assert!(err.to_string().contains("IQ2_XXS"));
}

#[test]
fn empty_shapes_are_fine() {
    let pool = ThreadPool::new(2).unwrap();
    let mut scratch = MatmulScratch::new();
    let w = WeightMatrix::new(TensorType::Q8_0, 0, 64, &[]).unwrap();
    matvec(&pool, &w, &[1.0; 64], &mut [], &mut scratch).unwrap();
    let data = vec![0u8; 34];
    let w = WeightMatrix::new(TensorType::Q8_0, 1, 32, &data).unwrap();
    matmul(&pool, &w, &[], 0, &mut [], &mut scratch).unwrap();
}

#[test]
fn one_scratch_serves_every_shape_and_format_in_turn() {
    // A scratch that grew for one product (a format with mins, long rows, many tokens)
    // must give the next, smaller or different one exactly what a fresh scratch gives.
    let pool = ThreadPool::new(2).unwrap();
    let mut shared = MatmulScratch::new();
    let cases = [
        (TensorType::Q4_K, 40, 768, 21),
        (TensorType::Q5_0, 33, 672, 9),
        (TensorType::Q4_K, 7, 256, 5),
        (TensorType::Q6_K, 18, 512, 12),
        (TensorType::Q8_0, 5, 96, 4),
        (TensorType::Q4_1, 9, 3072, 6),
    ];
    for (i, &(ty, n_rows, n_cols, n_tokens)) in cases.iter().enumerate() {
        let mut rng = Rng(7 + i as u64);
        let data = weights(ty, n_rows, n_cols, &mut rng);
        let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
        let x = rng.vec(n_tokens * n_cols);
        let mut got = vec![f32::NAN; n_tokens * n_rows];
        matmul(&pool, &w, &x, n_tokens, &mut got, &mut shared).unwrap();
        let mut want = vec![f32::NAN; n_tokens * n_rows];
        matmul(
            &pool,
            &w,
            &x,
            n_tokens,
            &mut want,
            &mut MatmulScratch::new(),
        )
        .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{ty} [{n_rows}x{n_cols}]·{n_tokens}"
        );
    }
}

#[test]
fn short_rows_through_the_gemm_path() {
    // Tiny models have rows of a few blocks: every tail shape of the GEMM layout (a
    // single run padded to two, 2, 4, 8 runs) with many tokens, against the row path.
    let pool = ThreadPool::new(2).unwrap();
    let k = Kernels::get();
    // (Q4_1/Q5_1 are left out: the row path rounds Q8_1's block sum to f16, see
    // `check`, so it is not the tighter reference here.)
    for ty in [
        TensorType::Q8_0,
        TensorType::Q5_0,
        TensorType::Q4_0,
        TensorType::IQ4_NL,
    ] {
        for (n_cols, n_rows) in [
            (32, 19),
            (64, 19),
            (96, 19),
            (128, 19),
            (256, 272),
            (288, 19),
            (480, 19),
            (512, 256),
            (256, 64),
        ] {
            let mut rng = Rng(n_cols as u64);
            let data = weights(ty, n_rows, n_cols, &mut rng);
            let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
            let n_tokens = 64;
            let x = rng.vec(n_tokens * n_cols);
            let mut out = vec![f32::NAN; n_tokens * n_rows];
            matmul_with(
                k,
                &pool,
                &w,
                &x,
                n_tokens,
                &mut out,
                &mut MatmulScratch::new(),
            )
            .unwrap();
            let mut one = vec![f32::NAN; n_rows];
            for t in 0..n_tokens {
                let xt = &x[t * n_cols..][..n_cols];
                matmul_with(k, &pool, &w, xt, 1, &mut one, &mut MatmulScratch::new()).unwrap();
                for r in 0..n_rows {
                    let w_f32 = dequantize(ty, w.row(r), n_cols);
                    let mag: f32 = w_f32.iter().zip(xt).map(|(w, x)| (w * x).abs()).sum();
                    let (got, want) = (out[t * n_rows + r], one[r]);
                    assert!(
                        (got - want).abs() <= 1e-5 * mag,
                        "{ty} [{n_rows}x{n_cols}] token {t} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// `matvec_many` must give each product exactly what `matvec` gives it alone, at every
/// level, on 1 and 2 threads: mixed formats sharing one activation format (Q4_K, Q6_K,
/// Q5_K: Q8_K) and not (Q8_0, Q4_0: Q8_0; F16: f32 activations, which have no row kernel
/// and take the one-by-one path), a product with no rows, and more products than one
/// dispatch takes.
#[test]
fn matvec_many_equals_matvec_bit_for_bit() {
    use hearth_kernels::matmul::{matvec_many_with, MAX_PRODUCTS};
    use TensorType::*;
    let n_cols = 768;
    let groups: [&[(TensorType, usize)]; 5] = [
        &[(Q4_K, 96), (Q4_K, 16), (Q6_K, 16)],
        &[(Q4_K, 130), (Q8_0, 64), (Q6_K, 3), (Q5_K, 0)],
        &[(Q8_0, 5), (Q4_0, 7)],
        &[(Q4_K, 33), (F16, 9)],
        &[(Q4_K, 8), (Q4_K, 8), (Q6_K, 8), (Q8_0, 8), (Q4_0, 8)],
    ];
    assert!(groups[4].len() > MAX_PRODUCTS);
    let mut rng = Rng(0x5EED_6A0F);
    let x = rng.vec(n_cols);
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        for n_threads in [1, 2] {
            let pool = ThreadPool::new(n_threads).unwrap();
            for group in groups {
                let data: Vec<Vec<u8>> = group
                    .iter()
                    .map(|&(ty, rows)| weights(ty, rows, n_cols, &mut rng))
                    .collect();
                let ws: Vec<WeightMatrix<'_>> = group
                    .iter()
                    .zip(&data)
                    .map(|(&(ty, rows), d)| WeightMatrix::new(ty, rows, n_cols, d).unwrap())
                    .collect();
                let mut want: Vec<Vec<f32>> = group.iter().map(|&(_, r)| vec![0.0; r]).collect();
                for (w, out) in ws.iter().zip(&mut want) {
                    matmul_with(&k, &pool, w, &x, 1, out, &mut MatmulScratch::new()).unwrap();
                }
                let mut got: Vec<Vec<f32>> =
                    group.iter().map(|&(_, r)| vec![f32::NAN; r]).collect();
                let mut products: Vec<(&WeightMatrix<'_>, &mut [f32])> = ws
                    .iter()
                    .zip(got.iter_mut().map(|g| g.as_mut_slice()))
                    .collect();
                matvec_many_with(&k, &pool, &mut products, &x, &mut MatmulScratch::new()).unwrap();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let (g, w): (Vec<u32>, Vec<u32>) = (
                        g.iter().map(|v| v.to_bits()).collect(),
                        w.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(
                        g, w,
                        "{level:?}, {n_threads} threads, {group:?}, product {i}"
                    );
                }
            }
        }
    }
}

/// A bad shape anywhere in the list is an error before anything is computed.
#[test]
fn matvec_many_checks_every_product_first() {
    use hearth_kernels::matmul::matvec_many;
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng(7);
    let a = weights(TensorType::Q4_K, 4, 256, &mut rng);
    let wa = WeightMatrix::new(TensorType::Q4_K, 4, 256, &a).unwrap();
    let (mut oa, mut ob) = ([f32::NAN; 4], [f32::NAN; 3]);
    let mut products: Vec<(&WeightMatrix<'_>, &mut [f32])> = vec![(&wa, &mut oa), (&wa, &mut ob)];
    let err = matvec_many(&pool, &mut products, &[0.5; 256], &mut MatmulScratch::new());
    assert_eq!(
        err.unwrap_err(),
        MatmulError::Output {
            n_tokens: 1,
            n_rows: 4,
            actual: 3
        }
    );
    assert!(
        oa.iter().all(|v| v.is_nan()),
        "the first product was computed"
    );
}

/// `GemmTokens::From(k)`: tokens `..k` get exactly what they get alone through the row
/// path, tokens `k..` exactly what they get through the GEMM in any company (alone, or
/// with other tokens before or after them) — so a token's result depends only on the
/// path chosen for it, never on the rest of the batch.
#[test]
fn the_gemm_split_gives_each_token_its_own_paths_result() {
    let mut rng = Rng(0x5eed_6e44);
    let pool = ThreadPool::new(2).unwrap();
    for k in levels() {
        for ty in computable() {
            let n_cols = n_cols_for(ty);
            let n_rows = 37;
            let data = weights(ty, n_rows, n_cols, &mut rng);
            let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
            let n = 9;
            let x = rng.vec(n * n_cols);
            let run = |tokens: &[f32], split: GemmTokens| {
                let mut mm = MatmulScratch::new();
                mm.gemm_tokens = split;
                let n_tok = tokens.len() / n_cols;
                let mut out = vec![0.0; n_tok * n_rows];
                matmul_with(&k, &pool, &w, tokens, n_tok, &mut out, &mut mm).unwrap();
                out
            };
            // Each token alone, through either path.
            let rows_alone: Vec<Vec<f32>> = x
                .chunks_exact(n_cols)
                .map(|t| run(t, GemmTokens::From(1)))
                .collect();
            let gemm_alone: Vec<Vec<f32>> = x
                .chunks_exact(n_cols)
                .map(|t| run(t, GemmTokens::From(0)))
                .collect();
            for split in [0, 1, 4, 8, 9] {
                let out = run(&x, GemmTokens::From(split));
                for t in 0..n {
                    let want = if t < split {
                        &rows_alone[t]
                    } else {
                        &gemm_alone[t]
                    };
                    assert_eq!(
                        &out[t * n_rows..(t + 1) * n_rows],
                        &want[..],
                        "{:?} {ty:?} split {split} token {t}",
                        k.level()
                    );
                }
            }
        }
    }
}

/// Continuous batching runs 2–15 tokens of different sequences per product through the
/// several-tokens kernels (`Kernels::dot_tokens`). Each token's outputs must equal, bit
/// for bit, a product of that token alone (a sequence's logits must not depend on which
/// others share its batch), at every level, on 1 and 2 threads, with row counts that
/// leave every remainder of a row group and chunk sizes that split groups.
#[test]
fn batched_tokens_equal_each_token_alone() {
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    let single = ThreadPool::new(1).unwrap();
    for ty in [
        TensorType::Q8_0,
        TensorType::Q5_0,
        TensorType::Q4_0,
        TensorType::IQ4_NL,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
    ] {
        for level in Level::supported() {
            let k = Kernels::for_level(level).unwrap();
            for (n_rows, n_cols) in [(1, ty.block_len()), (7, 2 * 256), (133, 3 * 256)] {
                let mut rng = Rng(n_rows as u64 ^ (ty.id() as u64) << 8);
                let data = weights(ty, n_rows, n_cols, &mut rng);
                let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
                let x = rng.vec(15 * n_cols);
                let mut scratch = MatmulScratch::new();
                let mut alone = vec![0.0; 15 * n_rows];
                for (xt, o) in x.chunks_exact(n_cols).zip(alone.chunks_exact_mut(n_rows)) {
                    matmul_with(&k, &single, &w, xt, 1, o, &mut scratch).unwrap();
                }
                for n_tokens in 2..gemm::MIN_TOKENS {
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n_tokens * n_rows];
                        let xs = &x[..n_tokens * n_cols];
                        matmul_with(&k, pool, &w, xs, n_tokens, &mut out, &mut scratch).unwrap();
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&out),
                            bits(&alone[..n_tokens * n_rows]),
                            "{ty} {} {} thr [{n_rows}x{n_cols}]·{n_tokens}",
                            level.name(),
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }
}

/// `matvec_batch` must give each product exactly what `matvec` gives it alone, each with
/// its own input, at every level, on 1 and 2 threads: mixed formats and widths (the
/// per-head latent matrices are 128 and 512 wide), a product with no rows, one without
/// a row kernel (F16: the one-by-one path), and more products than one dispatch takes.
/// A bad shape anywhere is an error before anything is computed.
#[test]
fn matvec_batch_equals_matvec_bit_for_bit() {
    use hearth_kernels::matmul::{matvec_batch_with, MAX_BATCH};
    use TensorType::*;
    let many: Vec<(TensorType, usize, usize)> = (0..MAX_BATCH + 3)
        .map(|i| ([Q4_K, Q8_0, Q5_0, Q6_K][i % 4], 8 + i, 256))
        .collect();
    let groups: [&[(TensorType, usize, usize)]; 4] = [
        &[
            (Q4_K, 96, 256),
            (Q5_0, 64, 128),
            (Q4_K, 16, 512),
            (Q6_K, 0, 256),
        ],
        &[(Q8_0, 5, 128), (F16, 9, 64)],
        &[(Q5_0, 512, 128); 16],
        &many,
    ];
    let mut rng = Rng(0x5EED_BA7C);
    for level in Level::supported() {
        let k = Kernels::for_level(level).unwrap();
        for n_threads in [1, 2] {
            let pool = ThreadPool::new(n_threads).unwrap();
            for group in groups {
                let data: Vec<Vec<u8>> = group
                    .iter()
                    .map(|&(ty, rows, cols)| weights(ty, rows, cols, &mut rng))
                    .collect();
                let ws: Vec<WeightMatrix<'_>> = group
                    .iter()
                    .zip(&data)
                    .map(|(&(ty, rows, cols), d)| WeightMatrix::new(ty, rows, cols, d).unwrap())
                    .collect();
                let xs: Vec<Vec<f32>> = group.iter().map(|&(_, _, c)| rng.vec(c)).collect();
                let mut want: Vec<Vec<f32>> = group.iter().map(|&(_, r, _)| vec![0.0; r]).collect();
                for ((w, x), out) in ws.iter().zip(&xs).zip(&mut want) {
                    matmul_with(&k, &pool, w, x, 1, out, &mut MatmulScratch::new()).unwrap();
                }
                let products: Vec<(&WeightMatrix<'_>, &[f32])> =
                    ws.iter().zip(&xs).map(|(w, x)| (w, x.as_slice())).collect();
                let mut got = vec![f32::NAN; want.iter().map(Vec::len).sum()];
                matvec_batch_with(&k, &pool, &products, &mut got, &mut MatmulScratch::new())
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want.concat()),
                    "{level:?}, {n_threads} threads, {} products",
                    group.len()
                );
            }
        }
    }
    // A wrong input length in the last product: nothing computed, an error.
    let pool = ThreadPool::new(2).unwrap();
    let a = weights(Q4_K, 4, 256, &mut rng);
    let wa = WeightMatrix::new(Q4_K, 4, 256, &a).unwrap();
    let mut out = [f32::NAN; 8];
    let products: Vec<(&WeightMatrix<'_>, &[f32])> = vec![(&wa, &[0.5; 256]), (&wa, &[0.5; 255])];
    let err = matvec_batch_with(
        Kernels::get(),
        &pool,
        &products,
        &mut out,
        &mut MatmulScratch::new(),
    );
    assert!(
        matches!(err, Err(MatmulError::Activations { actual: 255, .. })),
        "{err:?}"
    );
    assert!(
        out.iter().all(|v| v.is_nan()),
        "the first product was computed"
    );
    // An output of the wrong total length.
    let products: Vec<(&WeightMatrix<'_>, &[f32])> = vec![(&wa, &[0.5; 256])];
    let err = matvec_batch_with(
        Kernels::get(),
        &pool,
        &products,
        &mut out,
        &mut MatmulScratch::new(),
    );
    assert!(
        matches!(err, Err(MatmulError::Output { actual: 8, .. })),
        "{err:?}"
    );
}

/// The GEMM lines its row tiles up with the output's cache lines, so where `out` starts
/// moves the tiles' boundaries. A row's result must not move with them: every start
/// within a line gives the same bits, at every level, for every format.
#[test]
fn the_outputs_alignment_does_not_change_the_result() {
    let mut rng = Rng(0xa119_0e57);
    let pool = ThreadPool::new(2).unwrap();
    let (n_rows, n_tokens) = (48, gemm::MIN_TOKENS + 3);
    for k in levels() {
        for ty in computable() {
            let n_cols = n_cols_for(ty);
            let data = weights(ty, n_rows, n_cols, &mut rng);
            let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
            let x = rng.vec(n_tokens * n_cols);
            let len = n_tokens * n_rows;
            let mut buf = vec![0.0f32; len + 32];
            let base = buf.as_ptr().align_offset(64);
            let mut first: Option<Vec<f32>> = None;
            for skew in 0..16 {
                let out = &mut buf[base + skew..][..len];
                let mut mm = MatmulScratch::new();
                matmul_with(&k, &pool, &w, &x, n_tokens, out, &mut mm).unwrap();
                match &first {
                    None => first = Some(out.to_vec()),
                    Some(want) => assert_eq!(out, &want[..], "{:?} {ty:?} skew {skew}", k.level()),
                }
            }
        }
    }
}
