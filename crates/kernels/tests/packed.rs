//! Rows packed sixteen at a time (`matmul::packed`), in every format that packs (Q8_0,
//! Q5_0, Q4_K and Q6_K).
//!
//! 1. Every level's packed kernel equals the scalar reference (`packed::reference`) bit
//!    for bit, for every token count from 1 to 11 (whole passes of tokens and every
//!    leftover), one to three groups, block counts from 1 to 20, on quantized values and
//!    on random quant bytes (Q8_0's -128 included) under finite random scales.
//! 2. The product (`matmul_packed_with`) gives each (row, token) what a one-token call
//!    gives it, on 1, 2 and 3 threads, bit for bit, for row counts with and without rows
//!    past the last group (those take the level's dot for the format, checked exactly
//!    too); several products in one dispatch give what each gives alone.
//!    With block keys (`matmul_packed_keyed_with`), the outputs are the same bits and
//!    each token's keys are `Ops::block_max_keys` of its outputs, whichever call, chunk
//!    or tail fills them.
//! 3. `matmul_rows_packed_with` sends the row path's tokens through the packed form and
//!    the GEMM's through the matrix as stored, each exactly as the call for those tokens
//!    alone.
//! 4. The packing keeps the matrix: the products match the weights dequantized by
//!    `quant::dequantize_row` times the quantized activations, in f64, within float
//!    rounding (1e-5·Σ|w·a| + 1e-6), and the unpacked product within the same bound.
//! 5. Each packed row dequantizes to the file's row, bit for bit.

use half::f16;
use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::matmul::packed::{
    matmul_packed_keyed_with, matmul_packed_many_with, matmul_packed_with, matmul_rows_packed_with,
    prepare_acts, reference, PackedFormat, PackedMatrix, ACT_BLOCK_BYTES,
};
use hearth_kernels::matmul::{matmul_with, GemmTokens, MatmulError, MatmulScratch, WeightMatrix};
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::ops::Ops;
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{dequantize_row, quantize_row, TensorType};

mod kernel_inputs;

use kernel_inputs::Rng;

/// Whether `format` is a K-quant (super-blocks of 256 weights, no rows past the last
/// group).
fn k_quant(format: PackedFormat) -> bool {
    matches!(format, PackedFormat::Q4_K | PackedFormat::Q6_K)
}

/// Weights in a block of the file's `format` rows: 32, or 256 for the K-quants'
/// super-blocks.
fn block_weights(format: PackedFormat) -> usize {
    if k_quant(format) {
        256
    } else {
        32
    }
}

/// Whether `n_rows` rows of `nb` blocks of 32 weights pack in `format`: whole blocks of
/// the file's rows, and for the K-quants whole groups of rows (they take no rows past
/// them).
fn fits(format: PackedFormat, n_rows: usize, nb: usize) -> bool {
    (32 * nb).is_multiple_of(block_weights(format))
        && (!k_quant(format) || n_rows.is_multiple_of(16))
}

/// Where the f16 factors of a block of `format` lie: the scale (and Q4_K's min) first,
/// Q6_K's `d` last.
fn f16_factors(format: PackedFormat) -> std::ops::Range<usize> {
    match format {
        PackedFormat::Q4_K => 0..4,
        PackedFormat::Q6_K => 208..210,
        _ => 0..2,
    }
}

/// `n_rows` rows of `nb` blocks (of 32 weights) of `format`'s type: quantized values, or
/// (`raw`) random quant bytes under finite random scales (and Q4_K's mins; Q6_K's
/// sub-block scales are random bytes).
fn rows_of(format: PackedFormat, n_rows: usize, nb: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
    let ty = format.ty();
    let bb = ty.row_bytes(block_weights(format) as u64).unwrap() as usize;
    let row_bytes = ty.row_bytes(32 * nb as u64).unwrap() as usize;
    let mut out = vec![0u8; n_rows * row_bytes];
    for row in out.chunks_exact_mut(row_bytes) {
        if raw {
            row.iter_mut().for_each(|b| *b = rng.next() as u8);
            for block in row.chunks_exact_mut(bb) {
                for at in f16_factors(format).step_by(2) {
                    let d = f16::from_f32(rng.normal() * 0.01).to_le_bytes();
                    block[at..at + 2].copy_from_slice(&d);
                }
            }
        } else {
            quantize_row(ty, &rng.vec(32 * nb), row).unwrap();
        }
    }
    out
}

/// Levels whose table has a packed kernel for `format`.
fn packed_levels(format: PackedFormat) -> Vec<(Level, Kernels)> {
    Level::supported()
        .into_iter()
        .filter_map(|l| Kernels::for_level(l).map(|k| (l, k)))
        .filter(|(_, k)| k.packed(format).is_some())
        .collect()
}

/// Every level, the scalar one included (its products fall back to the reference).
fn all_levels() -> Vec<(Level, Kernels)> {
    Level::supported()
        .into_iter()
        .filter_map(|l| Kernels::for_level(l).map(|k| (l, k)))
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
    let mut rng = Rng(7);
    for format in PackedFormat::ALL {
        let levels = packed_levels(format);
        let mut checked = 0;
        for (level, k) in &levels {
            let kernel = k.packed(format).unwrap();
            for nb in [1, 2, 3, 7, 8, 16, 20, 24] {
                for n_groups in 1..=3 {
                    for raw in [false, true] {
                        let n_rows = 16 * n_groups;
                        if !fits(format, n_rows, nb) {
                            continue;
                        }
                        let rows = rows_of(format, n_rows, nb, raw, &mut rng);
                        let w = WeightMatrix::new(format.ty(), n_rows, 32 * nb, &rows).unwrap();
                        let p = PackedMatrix::pack(&w).unwrap().unwrap();
                        assert_eq!(p.format(), format);
                        // The file's bytes per block, but Q4_K's eight scales and mins
                        // take 16 bytes per super-block, not 12.
                        if format == PackedFormat::Q4_K {
                            assert_eq!(p.bytes(), rows.len() / 144 * 148);
                        } else {
                            assert_eq!(p.bytes(), rows.len());
                        }
                        assert_eq!(p.bytes(), format.packed_bytes(n_rows, 32 * nb));
                        let groups = p.group_bytes();
                        assert_eq!(groups.len(), n_groups * nb * format.group_block_bytes());
                        for n_tokens in 1..=11 {
                            let acts = prepared(k, n_tokens, nb, &mut rng);
                            let n = n_tokens * n_rows;
                            let (mut want, mut got) = (vec![0.0; n], vec![f32::NAN; n]);
                            reference(format)(groups, nb, &acts, n_tokens, &mut want);
                            kernel(groups, nb, &acts, n_tokens, &mut got);
                            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                                assert_eq!(
                                    w.to_bits(),
                                    g.to_bits(),
                                    "{format:?} {level:?}: nb {nb}, {n_groups} groups, raw {raw}, \
                                     {n_tokens} tokens, output {i}: {w} vs {g}"
                                );
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        eprintln!("{format:?}: {checked} cases over {} levels", levels.len());
    }
}

#[test]
fn packed_products_do_not_depend_on_company_or_threads() {
    let pools = [1, 2, 3].map(|n| ThreadPool::new(n).unwrap());
    let mut rng = Rng(11);
    for format in PackedFormat::ALL {
        for (level, k) in &all_levels() {
            for (n_rows, nb) in [
                (16, 2),
                (17, 3),
                (40, 20),
                (79, 5),
                (1024, 20),
                (48, 8),
                (1024, 16),
                // Key blocks: a partial last one after whole calls; 70 groups, which no
                // thread count here splits into whole calls.
                (200, 2),
                (1125, 8),
            ] {
                if !fits(format, n_rows, nb) {
                    continue;
                }
                let n_cols = 32 * nb;
                let rows = rows_of(format, n_rows, nb, false, &mut rng);
                let w = WeightMatrix::new(format.ty(), n_rows, n_cols, &rows).unwrap();
                let p = PackedMatrix::pack(&w).unwrap().unwrap();
                assert_eq!(
                    p.bytes(),
                    format.packed_bytes(n_rows, n_cols),
                    "rows past a group"
                );
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
                        let x = &x[..n * n_cols];
                        matmul_packed_with(k, pool, &p, x, n, &mut got, &mut scratch).unwrap();
                        for (i, (a, g)) in alone.iter().zip(&got).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                g.to_bits(),
                                "{format:?} {level:?}: {n_rows}x{n_cols}, {n} tokens on {} \
                                 threads, token {} row {}: {a} vs {g}",
                                pool.n_threads(),
                                i / n_rows,
                                i % n_rows
                            );
                        }
                        // With keys: the same outputs, and each token's keys are those of
                        // its outputs.
                        let n_keys = n_rows.div_ceil(KEY_BLOCK);
                        let mut keyed = vec![f32::NAN; n * n_rows];
                        let mut keys = vec![0x5a5a_5a5a; n * n_keys];
                        let s = &mut scratch;
                        matmul_packed_keyed_with(k, pool, &p, x, n, &mut keyed, &mut keys, s)
                            .unwrap();
                        assert!(
                            keyed
                                .iter()
                                .zip(&got)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{format:?} {level:?}: {n_rows}x{n_cols}, {n} tokens: keyed outputs"
                        );
                        let mut want = vec![0; n_keys];
                        for (t, (o, got)) in got
                            .chunks_exact(n_rows)
                            .zip(keys.chunks_exact(n_keys))
                            .enumerate()
                        {
                            Ops::get().block_max_keys(o, &mut want);
                            assert_eq!(
                                got,
                                &want[..],
                                "{format:?} {level:?}: {n_rows}x{n_cols}, {n} tokens on {} \
                                 threads, token {t}'s keys",
                                pool.n_threads()
                            );
                        }
                    }
                }
                // Rows past the last group: the level's dot on the quantized row.
                let dot = k.dot(format.ty()).unwrap();
                let mut q = vec![0u8; 34 * nb];
                for (t, xt) in x.chunks_exact(n_cols).enumerate() {
                    k.quantizer(TensorType::Q8_0).unwrap()(xt, &mut q);
                    for r in n_rows - n_rows % 16..n_rows {
                        let want = dot(w.row(r), &q);
                        assert_eq!(
                            want.to_bits(),
                            alone[t * n_rows + r].to_bits(),
                            "{format:?} {level:?} tail row {r}"
                        );
                    }
                }
            }
        }
    }
}

/// Four products of one input in one dispatch (Q, K, V and one more) give what each
/// gives alone, in four formats mixed.
#[test]
fn several_packed_products_equal_one_each() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng(13);
    for (level, k) in &all_levels() {
        let nb = 24;
        let shapes = [
            (PackedFormat::Q5_0, 1024),
            (PackedFormat::Q8_0, 264),
            (PackedFormat::Q4_K, 256),
            (PackedFormat::Q6_K, 96),
        ];
        let rows: Vec<_> = shapes
            .iter()
            .map(|&(f, n)| rows_of(f, n, nb, false, &mut rng))
            .collect();
        let ws: Vec<_> = shapes
            .iter()
            .zip(&rows)
            .map(|(&(f, n), r)| WeightMatrix::new(f.ty(), n, 32 * nb, r).unwrap())
            .collect();
        let ps: Vec<_> = ws
            .iter()
            .map(|w| PackedMatrix::pack(w).unwrap().unwrap())
            .collect();
        for n_tokens in [1, 4, 5] {
            let x = rng.vec(n_tokens * 32 * nb);
            let mut scratch = MatmulScratch::new();
            let mut alone: Vec<Vec<f32>> = Vec::new();
            for p in &ps {
                let mut o = vec![0.0; n_tokens * p.n_rows()];
                matmul_packed_with(k, &pool, p, &x, n_tokens, &mut o, &mut scratch).unwrap();
                alone.push(o);
            }
            let mut outs: Vec<Vec<f32>> = ps
                .iter()
                .map(|p| vec![f32::NAN; n_tokens * p.n_rows()])
                .collect();
            let [o0, o1, o2, o3] = &mut outs[..] else {
                unreachable!()
            };
            let mut list = [
                (&ps[0], &mut o0[..]),
                (&ps[1], &mut o1[..]),
                (&ps[2], &mut o2[..]),
                (&ps[3], &mut o3[..]),
            ];
            matmul_packed_many_with(k, &pool, &mut list, &x, n_tokens, &mut scratch).unwrap();
            for (i, (a, g)) in alone.iter().zip(&outs).enumerate() {
                assert!(
                    a.iter().zip(g).all(|(a, g)| a.to_bits() == g.to_bits()),
                    "{level:?}: product {i} of 4, {n_tokens} tokens"
                );
            }
        }
    }
}

/// Every token takes the packed form at a level whose packed kernels beat its GEMM at
/// prompt sizes; elsewhere the row path's tokens take it and the GEMM's the matrix as
/// stored.
#[test]
fn rows_take_the_packed_form_and_the_gemm_the_stored_one() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng(17);
    for format in PackedFormat::ALL {
        for (level, k) in &all_levels() {
            let (n_rows, nb) = (208, 8);
            let n_cols = 32 * nb;
            let rows = rows_of(format, n_rows, nb, false, &mut rng);
            let w = WeightMatrix::new(format.ty(), n_rows, n_cols, &rows).unwrap();
            let p = PackedMatrix::pack(&w).unwrap().unwrap();
            let n_tokens = 40;
            let x = rng.vec(n_tokens * n_cols);
            let mut scratch = MatmulScratch::new();
            for split in [
                GemmTokens::From(0),
                GemmTokens::From(3),
                GemmTokens::From(40),
                GemmTokens::ByCount,
            ] {
                scratch.gemm_tokens = split;
                let mut got = vec![f32::NAN; n_tokens * n_rows];
                matmul_rows_packed_with(
                    k,
                    &pool,
                    &mut [(&w, &p, &mut got[..])],
                    &x,
                    n_tokens,
                    &mut scratch,
                )
                .unwrap();
                assert_eq!(scratch.gemm_tokens, split, "the caller's split is restored");
                // What the unpacked product calls the GEMM's tokens (none without one).
                let mut stored = vec![0.0; n_tokens * n_rows];
                matmul_with(k, &pool, &w, &x, n_tokens, &mut stored, &mut scratch).unwrap();
                let first = match split {
                    _ if k.gemm().is_none() || k.packed_prompts() => n_tokens,
                    GemmTokens::From(f) => f,
                    GemmTokens::ByCount => 0,
                };
                let mut packed = vec![0.0; first * n_rows];
                let xr = &x[..first * n_cols];
                matmul_packed_with(k, &pool, &p, xr, first, &mut packed, &mut scratch).unwrap();
                for (i, g) in got.iter().enumerate() {
                    let want = if i < first * n_rows {
                        packed[i]
                    } else {
                        stored[i]
                    };
                    assert_eq!(
                        want.to_bits(),
                        g.to_bits(),
                        "{format:?} {level:?} {split:?}: token {} row {}",
                        i / n_rows,
                        i % n_rows
                    );
                }
            }
        }
    }
}

/// Only Q8_0, Q5_0, Q4_K and Q6_K matrices with a whole group of rows and some columns
/// are packed (the K-quants only when their rows are whole groups); a packed matrix
/// given for another
/// matrix is refused.
#[test]
fn what_cannot_be_packed_is_left_alone() {
    let mut rng = Rng(3);
    let q8 = rows_of(PackedFormat::Q8_0, 15, 2, false, &mut rng);
    let w = WeightMatrix::new(TensorType::Q8_0, 15, 64, &q8).unwrap();
    assert!(PackedMatrix::pack(&w).unwrap().is_none(), "15 rows");
    let w = WeightMatrix::new(TensorType::Q5_0, 32, 0, &[]).unwrap();
    assert!(PackedMatrix::pack(&w).unwrap().is_none(), "no columns");
    let mut q4 = vec![0u8; 16 * 18];
    quantize_row(TensorType::Q4_0, &rng.vec(16 * 32), &mut q4).unwrap();
    let w = WeightMatrix::new(TensorType::Q4_0, 16, 32, &q4).unwrap();
    assert!(PackedMatrix::pack(&w).unwrap().is_none(), "Q4_0");
    let q4k = rows_of(PackedFormat::Q4_K, 40, 8, false, &mut rng);
    let w = WeightMatrix::new(TensorType::Q4_K, 40, 256, &q4k).unwrap();
    assert!(
        PackedMatrix::pack(&w).unwrap().is_none(),
        "Q4_K with rows past a group"
    );
    let q6k = rows_of(PackedFormat::Q6_K, 24, 8, false, &mut rng);
    let w = WeightMatrix::new(TensorType::Q6_K, 24, 256, &q6k).unwrap();
    assert!(
        PackedMatrix::pack(&w).unwrap().is_none(),
        "Q6_K with rows past a group"
    );

    let q5 = rows_of(PackedFormat::Q5_0, 32, 2, false, &mut rng);
    let w5 = WeightMatrix::new(TensorType::Q5_0, 32, 64, &q5).unwrap();
    let q8 = rows_of(PackedFormat::Q8_0, 32, 2, false, &mut rng);
    let w8 = WeightMatrix::new(TensorType::Q8_0, 32, 64, &q8).unwrap();
    let p8 = PackedMatrix::pack(&w8).unwrap().unwrap();
    let pool = ThreadPool::new(1).unwrap();
    let x = rng.vec(64);
    let mut out = [0.0; 32];
    let r = matmul_rows_packed_with(
        Kernels::get(),
        &pool,
        &mut [(&w5, &p8, &mut out[..])],
        &x,
        1,
        &mut MatmulScratch::new(),
    );
    assert!(r.is_err(), "a Q8_0 packing given for Q5_0 weights");
    // Keys for 32 rows: one per token; two is an error, not a panic.
    let (mut keys, s) = ([0; 2], &mut MatmulScratch::new());
    let r = matmul_packed_keyed_with(Kernels::get(), &pool, &p8, &x, 1, &mut out, &mut keys, s);
    assert!(matches!(r, Err(MatmulError::Keys { .. })), "{r:?}");
}

#[test]
fn packing_keeps_the_matrix() {
    let pool = ThreadPool::new(2).unwrap();
    let mut rng = Rng(5);
    for format in PackedFormat::ALL {
        let ty = format.ty();
        for (level, k) in packed_levels(format) {
            for (n_rows, nb) in [(16, 1), (35, 4), (96, 20), (16, 8), (96, 24)] {
                if !fits(format, n_rows, nb) {
                    continue;
                }
                let n_cols = 32 * nb;
                let rows = rows_of(format, n_rows, nb, false, &mut rng);
                let w = WeightMatrix::new(ty, n_rows, n_cols, &rows).unwrap();
                let p = PackedMatrix::pack(&w).unwrap().unwrap();
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
                        dequantize_row(ty, w.row(r), &mut wf).unwrap();
                        let exact: f64 =
                            wf.iter().zip(&af).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mag: f64 = wf
                            .iter()
                            .zip(&af)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let tol = 1e-5 * mag + 1e-6;
                        // Unpacked K-quants take Q8_K activations (one scale per 256), so
                        // they differ by their rounding: a few parts in a thousand of the
                        // magnitude.
                        let tol_u = if k_quant(format) {
                            1e-2 * mag + 1e-5
                        } else {
                            tol
                        };
                        let (g, u) = (got[t * n_rows + r] as f64, unpacked[t * n_rows + r] as f64);
                        assert!(
                            (g - exact).abs() <= tol && (g - u).abs() <= tol_u,
                            "{format:?} {level:?}: {n_rows}x{n_cols} token {t} row {r}: \
                             packed {g}, unpacked {u}, f64 {exact}"
                        );
                    }
                }
            }
        }
    }
}

/// A packed matrix's rows dequantize to what the file's rows do, bit for bit
/// (`PackedMatrix::dequantize_row`, which a tied head's embedding lookups read), in every
/// format, on quantized values and on random quant bytes, rows past the last group
/// included.
#[test]
fn packed_rows_dequantize_as_the_files_rows() {
    let mut rng = Rng(0x5eed_0e4b);
    for format in PackedFormat::ALL {
        for raw in [false, true] {
            for (n_rows, nb) in [(16, 8), (35, 8), (48, 16), (17, 1), (32, 24)] {
                if !fits(format, n_rows, nb) {
                    continue;
                }
                let ty = format.ty();
                let bytes = rows_of(format, n_rows, nb, raw, &mut rng);
                let w = WeightMatrix::new(ty, n_rows, 32 * nb, &bytes).unwrap();
                let p = PackedMatrix::pack(&w).unwrap().expect("packs");
                let (mut want, mut got) = (vec![0.0f32; 32 * nb], vec![0.0f32; 32 * nb]);
                for row in 0..n_rows {
                    dequantize_row(ty, w.row(row), &mut want).unwrap();
                    p.dequantize_row(row, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{format:?} raw {raw}, {n_rows} rows of {nb} blocks: row {row}"
                    );
                }
            }
        }
    }
}
