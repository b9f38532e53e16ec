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

/// Defines a safe [`crate::dispatch::DotRowsFn`] around a multi-row kernel taking
/// `(w, stride, a, blocks)` for `$group` rows; leftover rows go to the single-row
/// kernel, whose results the multi-row one equals. Shared by both levels (defined before
/// their modules so that they see it).
macro_rules! dot_rows_fn {
    ($name:ident, $rows:path, $single:path, $group:expr, $w_block:expr, $a_block:expr) => {
        fn $name(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
            let nb = super::rows_block_count(w, row_bytes, a, out.len(), $w_block, $a_block);
            let done = out.len() - out.len() % $group;
            for (g, o) in out.chunks_exact_mut($group).enumerate() {
                // SAFETY: each level's `register` installs this only for a level whose
                // CPU features Kernels::for_level checked, and the VNNI kernels only when
                // it detected VNNI; rows_block_count checked that `w` holds `out.len()`
                // rows of `nb` blocks, `row_bytes` apart, and `a` `nb` blocks, so rows
                // g·group.. g·group+group are in `w`.
                let sums = unsafe {
                    $rows(
                        w.as_ptr().add(g * $group * row_bytes),
                        row_bytes,
                        a.as_ptr(),
                        nb,
                    )
                };
                o.copy_from_slice(&sums);
            }
            for (r, o) in out.iter_mut().enumerate().skip(done) {
                // SAFETY: as above, for the single row r.
                *o = unsafe { $single(w.as_ptr().add(r * row_bytes), a.as_ptr(), nb) };
            }
        }
    };
}

/// Defines a safe [`crate::dispatch::DotTokensFn`] around a tile kernel taking
/// `(w, stride, a, a_stride, blocks, n_tokens)` for `$rows` rows and up to `$tokens`
/// tokens, returning `[[f32; $rows]; $tokens]` (token-major, only the first `n_tokens`
/// meaningful). Every group of `$rows` rows meets the tokens `$tokens` at a time while its
/// bytes are in L1; leftover rows go to the single-row kernel per token, whose results
/// the tile kernel equals. Shared by both levels.
macro_rules! dot_tokens_fn {
    (
        $name:ident,
        $tile:path,
        $single:path,
        $rows:expr,
        $tokens:expr,
        $w_block:expr,
        $a_block:expr
    ) => {
        // A tile may be one row wide (the AVX2 k-quant ones), which leaves no rows over.
        #[allow(clippy::modulo_one)]
        fn $name(
            w: &[u8],
            row_bytes: usize,
            a: &[u8],
            a_stride: usize,
            n_tokens: usize,
            out: &mut [f32],
        ) {
            let (nb, n_rows) = super::tokens_block_count(
                w,
                row_bytes,
                a,
                a_stride,
                n_tokens,
                out.len(),
                $w_block,
                $a_block,
            );
            let done = n_rows - n_rows % $rows;
            for g in (0..done).step_by($rows) {
                for t0 in (0..n_tokens).step_by($tokens) {
                    let nt = (n_tokens - t0).min($tokens);
                    // SAFETY: each level's `register` installs this only for a level whose
                    // CPU features Kernels::for_level checked (and a VNNI kernel only when
                    // it detected VNNI); tokens_block_count checked that `w` holds n_rows
                    // rows of nb blocks, row_bytes apart, so rows g..g + rows are in `w`,
                    // and that `a` holds n_tokens rows of nb blocks a_stride apart, so
                    // tokens t0..t0 + nt are in `a`.
                    let sums = unsafe {
                        $tile(
                            w.as_ptr().add(g * row_bytes),
                            row_bytes,
                            a.as_ptr().add(t0 * a_stride),
                            a_stride,
                            nb,
                            nt,
                        )
                    };
                    for (t, sums) in sums.iter().enumerate().take(nt) {
                        out[(t0 + t) * n_rows + g..][..$rows].copy_from_slice(sums);
                    }
                }
            }
            for r in done..n_rows {
                for t in 0..n_tokens {
                    // SAFETY: as above, for the single row r and token t.
                    out[t * n_rows + r] = unsafe {
                        $single(
                            w.as_ptr().add(r * row_bytes),
                            a.as_ptr().add(t * a_stride),
                            nb,
                        )
                    };
                }
            }
        }
    };
}

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

/// Blocks per row for a multi-row call, after checking that `w` holds `n_rows` rows of
/// `row_bytes` and that `a` matches one row (panics otherwise, as `block_count` does).
#[inline(always)]
fn rows_block_count(
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    n_rows: usize,
    w_block: usize,
    a_block: usize,
) -> usize {
    if n_rows == 0 {
        return 0;
    }
    assert!(
        n_rows.checked_mul(row_bytes) == Some(w.len()),
        "{n_rows} rows of {row_bytes} bytes do not make {} bytes",
        w.len()
    );
    block_count(&w[..row_bytes], a, w_block, a_block)
}

/// Blocks per row and the number of rows for a several-tokens call, after checking that
/// `out_len` is `n_tokens` rows of outputs, that `w` holds that many weight rows of
/// `row_bytes`, and that `a` holds `n_tokens` activation rows matching one weight row,
/// `a_stride` bytes apart (panics otherwise, as `block_count` does).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tokens_block_count(
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    a_stride: usize,
    n_tokens: usize,
    out_len: usize,
    w_block: usize,
    a_block: usize,
) -> (usize, usize) {
    if n_tokens == 0 {
        assert!(out_len == 0, "{out_len} outputs for no tokens");
        return (0, 0);
    }
    let n_rows = out_len / n_tokens;
    assert!(
        n_rows * n_tokens == out_len && n_rows.checked_mul(row_bytes) == Some(w.len()),
        "{out_len} outputs for {n_tokens} tokens and {} bytes of {row_bytes}-byte rows",
        w.len()
    );
    assert!(
        row_bytes.is_multiple_of(w_block),
        "{row_bytes}-byte rows are not whole {w_block}-byte blocks"
    );
    let nb = row_bytes / w_block;
    let a_len = nb * a_block;
    assert!(
        a_stride >= a_len
            && (n_tokens - 1)
                .checked_mul(a_stride)
                .and_then(|s| s.checked_add(a_len))
                .is_some_and(|end| end <= a.len()),
        "{} activation bytes do not hold {n_tokens} rows of {a_len} bytes, {a_stride} apart",
        a.len()
    );
    (nb, n_rows)
}
