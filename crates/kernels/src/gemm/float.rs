//! Float weights (F32, F16, BF16) times f32 activations for many tokens at once.
//!
//! The row path's float dots widen every weight again for every token (F16C or a shift
//! per 8 or 16 values, then one FMA). Here a tile of [`TILE_ROWS`] rows × [`KC`] columns
//! is widened to f32 once per call, with the format's own dequantizer (so the values are
//! exactly the row path's), and a micro-kernel multiplies [`MR`] rows by a few tokens at
//! a time from it: one FMA per 8 (AVX2) or 16 (AVX-512) products, each weight register
//! used for every token of the pass and each activation register for every row.
//!
//! Numerics: the same f32 products as the row path, summed per vector lane along the
//! row and the lanes added at the end, in another order than the row path's dot; the
//! difference is f32 rounding of the same terms.
//!
//! Memory: per thread, one tile of f32 weights (`TILE_ROWS · KC · 4` bytes, 128 KiB, in
//! L2 while every token passes over it), in the caller's [`super::GemmScratch`].

use super::{for_each_tile, MR, TILE_ROWS};
use crate::matmul::WeightMatrix;
use crate::pool::ThreadPool;
use crate::quant::{dequantize_row, TensorType};

/// Columns a tile holds.
const KC: usize = 2048;
/// Columns the micro-kernels take per step (a multiple of every level's vector width):
/// the rest of a stretch, fewer than this, is added by the driver.
pub(crate) const STEP: usize = 16;

/// Whether [`matmul`] takes weights of type `ty`.
pub(crate) fn supports(ty: TensorType) -> bool {
    matches!(ty, TensorType::F32 | TensorType::F16 | TensorType::BF16)
}

/// `out[t·stride + i] += Σ_{k < n} w[i][k] · a[t·a_stride + k]` for [`MR`] rows and
/// `n_tokens` tokens, `n` a multiple of [`STEP`].
pub type FloatMicroFn = fn(
    w: [&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    n_tokens: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
);

/// Checks the slices against the shapes (SIMD kernels read by pointer).
pub(crate) fn check(
    w: &[&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    n_tokens: usize,
    n: usize,
    out: &[f32],
    stride: usize,
) {
    assert!(n.is_multiple_of(STEP) && stride >= MR);
    assert!(w.iter().all(|w| w.len() >= n));
    if let Some(last) = n_tokens.checked_sub(1) {
        assert!(a.len() >= last * a_stride + n);
        assert!(out.len() >= last * stride + MR);
    }
}

/// The plain-Rust micro-kernel every SIMD one is tested against.
pub(crate) fn reference(
    w: [&[f32]; MR],
    a: &[f32],
    a_stride: usize,
    n_tokens: usize,
    n: usize,
    out: &mut [f32],
    stride: usize,
) {
    check(&w, a, a_stride, n_tokens, n, out, stride);
    for t in 0..n_tokens {
        let a = &a[t * a_stride..][..n];
        for (i, w) in w.iter().enumerate() {
            out[t * stride + i] += w[..n].iter().zip(a).map(|(w, a)| w * a).sum::<f32>();
        }
    }
}

/// Per-thread memory: one tile of widened rows, and its results.
#[derive(Default)]
pub(crate) struct FloatTile {
    w: Vec<f32>,
    sums: Vec<f32>,
}

impl FloatTile {
    pub(crate) fn capacity_bytes(&self) -> usize {
        4 * (self.w.capacity() + self.sums.capacity())
    }

    fn reserve(&mut self, n_tokens: usize) {
        if self.w.is_empty() {
            self.w = vec![0.0; TILE_ROWS * KC];
        }
        if self.sums.len() < n_tokens * TILE_ROWS {
            self.sums.resize(n_tokens * TILE_ROWS, 0.0);
        }
    }
}

/// `out[t, r] = Σ_c w[r, c] · x[t, c]` for float weights, with `micro`. Shapes were
/// checked by the caller (`matmul_with`), and `supports(w.ty())`.
pub(crate) fn matmul(
    micro: FloatMicroFn,
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    tiles: &mut Vec<FloatTile>,
) {
    let (ty, n_rows, n_cols) = (w.ty(), w.n_rows(), w.n_cols());
    let nth = pool.n_threads();
    if tiles.len() < nth {
        tiles.resize_with(nth, FloatTile::default);
    }
    // Every thread's tile is sized here, not on first use: a thread that claims no tile
    // in one call must not allocate in a later one.
    for tile in &mut tiles[..nth] {
        tile.reserve(n_tokens);
    }
    // Bytes per value: the float formats have blocks of one value.
    let elem = w.row_bytes() / n_cols.max(1);
    for_each_tile(
        pool,
        &mut tiles[..nth],
        n_rows,
        n_tokens,
        out,
        &|tile, r0, rows| {
            let sums = &mut tile.sums[..n_tokens * TILE_ROWS];
            sums.fill(0.0);
            for k0 in (0..n_cols).step_by(KC) {
                let k1 = (k0 + KC).min(n_cols);
                let n = k1 - k0;
                // Rows past the last are zero, so every micro-kernel call takes MR rows.
                for i in 0..rows.next_multiple_of(MR) {
                    let dst = &mut tile.w[i * KC..][..n];
                    if i < rows {
                        let src = &w.row(r0 + i)[k0 * elem..k1 * elem];
                        dequantize_row(ty, src, dst).expect("float rows widen");
                    } else {
                        dst.fill(0.0);
                    }
                }
                let a = &x[k0..];
                let whole = n - n % STEP;
                for i0 in (0..rows).step_by(MR) {
                    let rows_w: [&[f32]; MR] =
                        std::array::from_fn(|i| &tile.w[(i0 + i) * KC..][..n]);
                    if whole > 0 {
                        micro(
                            rows_w,
                            a,
                            n_cols,
                            n_tokens,
                            whole,
                            &mut sums[i0..],
                            TILE_ROWS,
                        );
                    }
                    // The last columns (fewer than STEP) in plain Rust.
                    if whole == n {
                        continue;
                    }
                    for (t, sums) in sums.chunks_exact_mut(TILE_ROWS).enumerate() {
                        let a = &a[t * n_cols..][whole..n];
                        for (i, w) in rows_w.iter().enumerate() {
                            sums[i0 + i] +=
                                w[whole..].iter().zip(a).map(|(w, a)| w * a).sum::<f32>();
                        }
                    }
                }
            }
            &tile.sums
        },
    );
}
