//! Q8_0 rows packed sixteen at a time (`matmul::packed`).
//!
//! 1. Every level's packed kernel equals the scalar reference (`dot_groups_scalar`) bit
//!    for bit, for every token count from 1 to 11 (whole passes of tokens and every
//!    leftover), one to three groups, block counts from 1 to 20, on quantized values and
//!    on random quant bytes (-128 included) under finite random scales.
//! 2. The product (`matmul_packed_with`) gives each (row, token) what a one-token call
//!    gives it, on 1, 2 and 3 threads, bit for bit, for row counts with and without rows
//!    past the last group (those take the level's Q8_0 dot, checked exactly too).
//! 3. The packing keeps the matrix: the products match the weights dequantized by
//!    `quant::dequantize_row` times the quantized activations, in f64, within float
//!    rounding (1e-5·Σ|w·a| + 1e-6), and the unpacked product within the same bound.

use half::f16;
use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::matmul::packed::{
    dot_groups_scalar, matmul_packed_with, prepare_acts, PackedQ8_0, ACT_BLOCK_BYTES,
    GROUP_BLOCK_BYTES,
};
use hearth_kernels::matmul::{matmul_with, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{dequantize_row, quantize_row, TensorType};

/// SplitMix64, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn normal(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// `n_rows` Q8_0 rows of `nb` blocks: quantized values, or (`raw`) random quant bytes
/// under finite random scales.
fn q8_rows(n_rows: usize, nb: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
    let row_bytes = 34 * nb;
    let mut out = vec![0u8; n_rows * row_bytes];
    for row in out.chunks_exact_mut(row_bytes) {
        if raw {
            row.iter_mut().for_each(|b| *b = rng.next() as u8);
            for block in row.chunks_exact_mut(34) {
                block[..2].copy_from_slice(&f16::from_f32(rng.normal() * 0.01).to_le_bytes());
            }
        } else {
            quantize_row(TensorType::Q8_0, &rng.vec(32 * nb), row).unwrap();
        }
    }
    out
}

/// Levels whose table has a packed kernel.
fn packed_levels() -> Vec<(Level, Kernels)> {
    Level::supported()
        .into_iter()
        .filter_map(|l| Kernels::for_level(l).map(|k| (l, k)))
        .filter(|(_, k)| k.packed_q8_0().is_some())
        .collect()
}

/// `n_tokens` prepared activation rows of `nb` blocks, from the level's quantizer.
fn prepared(k: &Kernels, n_tokens: usize, nb: usize, rng: &mut Rng) -> Vec<u8> {
    let quantize = k.quantizer(TensorType::Q8_0).unwrap();
    let mut q = vec![0u8; 34 * nb];
    let mut out = vec![0u8; n_tokens * nb * ACT_BLOCK_BYTES];
    for row in out.chunks_exact_mut(nb * ACT_BLOCK_BYTES) {
        // Some rows at the quantizer's extremes: one large value per block.
        let mut x = rng.vec(32 * nb);
        if rng.next().is_multiple_of(3) {
            x.iter_mut().step_by(32).for_each(|v| *v *= 1e3);
        }
        quantize(&x, &mut q);
        prepare_acts(&q, row);
    }
    out
}

#[test]
fn packed_kernels_equal_the_scalar_reference() {
    let levels = packed_levels();
    let mut rng = Rng(7);
    let mut checked = 0;
    for (level, k) in &levels {
        let kernel = k.packed_q8_0().unwrap();
        for nb in [1, 2, 3, 7, 20] {
            for n_groups in 1..=3 {
                for raw in [false, true] {
                    let rows = q8_rows(16 * n_groups, nb, raw, &mut rng);
                    let w =
                        WeightMatrix::new(TensorType::Q8_0, 16 * n_groups, 32 * nb, &rows).unwrap();
                    let p = PackedQ8_0::pack(&w).unwrap().unwrap();
                    assert_eq!(p.bytes(), rows.len());
                    let groups = p.group_bytes();
                    assert_eq!(groups.len(), n_groups * nb * GROUP_BLOCK_BYTES);
                    for n_tokens in 1..=11 {
                        let acts = prepared(k, n_tokens, nb, &mut rng);
                        let n = n_tokens * 16 * n_groups;
                        let (mut want, mut got) = (vec![0.0; n], vec![f32::NAN; n]);
                        dot_groups_scalar(groups, nb, &acts, n_tokens, &mut want);
                        kernel(groups, nb, &acts, n_tokens, &mut got);
                        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                            assert_eq!(
                                w.to_bits(),
                                g.to_bits(),
                                "{level:?}: nb {nb}, {n_groups} groups, raw {raw}, \
                                 {n_tokens} tokens, output {i}: {w} vs {g}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} cases over {} levels", levels.len());
}

#[test]
fn packed_products_do_not_depend_on_company_or_threads() {
    let pools = [1, 2, 3].map(|n| ThreadPool::new(n).unwrap());
    let mut rng = Rng(11);
    let mut levels = packed_levels();
    // The scalar level has no packed kernel: the product falls back to the reference.
    levels.push((Level::Scalar, Kernels::for_level(Level::Scalar).unwrap()));
    for (level, k) in &levels {
        for (n_rows, nb) in [(16, 2), (17, 3), (40, 20), (79, 5), (1024, 20)] {
            let n_cols = 32 * nb;
            let rows = q8_rows(n_rows, nb, false, &mut rng);
            let w = WeightMatrix::new(TensorType::Q8_0, n_rows, n_cols, &rows).unwrap();
            let p = PackedQ8_0::pack(&w).unwrap().unwrap();
            let n_tokens = 9;
            let x = rng.vec(n_tokens * n_cols);
            let mut scratch = MatmulScratch::new();
            // Each token alone, on one thread.
            let mut alone = vec![0.0; n_tokens * n_rows];
            for (xt, o) in x.chunks_exact(n_cols).zip(alone.chunks_exact_mut(n_rows)) {
                matmul_packed_with(k, &pools[0], &p, xt, 1, o, &mut scratch).unwrap();
            }
            for pool in &pools {
                for n in [2, 3, 4, 5, 8, 9] {
                    let mut got = vec![f32::NAN; n * n_rows];
                    matmul_packed_with(k, pool, &p, &x[..n * n_cols], n, &mut got, &mut scratch)
                        .unwrap();
                    for (i, (a, g)) in alone.iter().zip(&got).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            g.to_bits(),
                            "{level:?}: {n_rows}x{n_cols}, {n} tokens on {} threads, \
                             token {} row {}: {a} vs {g}",
                            pool.n_threads(),
                            i / n_rows,
                            i % n_rows
                        );
                    }
                }
            }
            // Rows past the last group: the level's Q8_0 dot on the quantized row.
            let dot = k.dot(TensorType::Q8_0).unwrap();
            let mut q = vec![0u8; 34 * nb];
            for (t, xt) in x.chunks_exact(n_cols).enumerate() {
                k.quantizer(TensorType::Q8_0).unwrap()(xt, &mut q);
                for r in n_rows - n_rows % 16..n_rows {
                    let want = dot(w.row(r), &q);
                    assert_eq!(
                        want.to_bits(),
                        alone[t * n_rows + r].to_bits(),
                        "{level:?} tail row {r}"
                    );
                }
            }
        }
    }
}

/// Only Q8_0 matrices with a whole group of rows and some columns are packed.
#[test]
fn what_cannot_be_packed_is_left_alone() {
    let mut rng = Rng(3);
    let q8 = q8_rows(15, 2, false, &mut rng);
    let w = WeightMatrix::new(TensorType::Q8_0, 15, 64, &q8).unwrap();
    assert!(PackedQ8_0::pack(&w).unwrap().is_none(), "15 rows");
    let w = WeightMatrix::new(TensorType::Q8_0, 32, 0, &[]).unwrap();
    assert!(PackedQ8_0::pack(&w).unwrap().is_none(), "no columns");
    let mut q4 = vec![0u8; 16 * 18];
    quantize_row(TensorType::Q4_0, &rng.vec(16 * 32), &mut q4).unwrap();
    let w = WeightMatrix::new(TensorType::Q4_0, 16, 32, &q4).unwrap();
    assert!(PackedQ8_0::pack(&w).unwrap().is_none(), "Q4_0");
}

#[test]
fn packing_keeps_the_matrix() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng(5);
    for (level, k) in packed_levels() {
        for (n_rows, nb) in [(16, 1), (35, 4), (96, 20)] {
            let n_cols = 32 * nb;
            let rows = q8_rows(n_rows, nb, false, &mut rng);
            let w = WeightMatrix::new(TensorType::Q8_0, n_rows, n_cols, &rows).unwrap();
            let p = PackedQ8_0::pack(&w).unwrap().unwrap();
            let n_tokens = 3;
            let x = rng.vec(n_tokens * n_cols);
            let mut scratch = MatmulScratch::new();
            let mut got = vec![0.0; n_tokens * n_rows];
            matmul_packed_with(&k, &pool, &p, &x, n_tokens, &mut got, &mut scratch).unwrap();
            let mut unpacked = vec![0.0; n_tokens * n_rows];
            matmul_with(&k, &pool, &w, &x, n_tokens, &mut unpacked, &mut scratch).unwrap();
            let mut q = vec![0u8; 34 * nb];
            let (mut wf, mut af) = (vec![0.0f32; n_cols], vec![0.0f32; n_cols]);
            for (t, xt) in x.chunks_exact(n_cols).enumerate() {
                quantize_row(TensorType::Q8_0, xt, &mut q).unwrap();
                dequantize_row(TensorType::Q8_0, &q, &mut af).unwrap();
                for r in 0..n_rows {
                    dequantize_row(TensorType::Q8_0, w.row(r), &mut wf).unwrap();
                    let exact: f64 = wf.iter().zip(&af).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = wf
                        .iter()
                        .zip(&af)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let tol = 1e-5 * mag + 1e-6;
                    let (g, u) = (got[t * n_rows + r] as f64, unpacked[t * n_rows + r] as f64);
                    assert!(
                        (g - exact).abs() <= tol && (g - u).abs() <= tol,
                        "{level:?}: {n_rows}x{n_cols} token {t} row {r}: packed {g}, \
                         unpacked {u}, f64 {exact}"
                    );
                }
            }
        }
    }
}
