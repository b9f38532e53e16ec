//! Dots with the dot-product extension (FEAT_DotProd, `sdot`): the [`Level::NeonDot`]
//! kernels of the 32-element formats, for one row ([`crate::dispatch::DotFn`]), for
//! several rows sharing one activation row ([`crate::dispatch::DotRowsFn`]), and for
//! several rows and tokens ([`crate::dispatch::DotTokensFn`], continuous batching: tiles
//! of [`TILE_ROWS`] rows × [`TOKENS`] tokens, each weight block decoded once per tile).
//!
//! `sdot vd.4s, vn.16b, vm.16b` adds, into each 32-bit lane, the four products of the
//! lane's bytes, exactly (as [`super::simd::dot_i8`] does with `smull` + `sadalp`). So
//! every block's integer sum here is the reference's; the f32 side of each kernel is the
//! plain NEON kernel's (the reference's expression, block by block in its order), shared
//! through `block32::fold_*`, so results are bit-identical to the scalar references and
//! to the plain NEON level, and a row's result from the several-rows kernels is the
//! single-row kernel's.
//!
//! Instructions per block, counted in the release build's loops (aarch64, Rust 1.95;
//! every instruction: loads, the f32 fold with its two `fcvt`, loop control), against
//! the plain NEON kernels of `block32` (`smull`/`smull2` + `sadalp`, 8 for the 32
//! products) and the scalar reference (`quant::*::vec_dot`, which LLVM unrolls into
//! scalar code, its half conversions included):
//!
//! | per block of 32 | scalar | NEON | `sdot` | 4 rows, per row | 2 rows × 4 tokens, per pair |
//! |-----------------|--------|------|--------|-----------------|-----------------------------|
//! | Q8_0            | ≈ 226  | 25   | 20     | 15.75 (63 / 4)  | 12.6 (101 / 8)              |
//! | Q4_0            | ≈ 273  | 28   | 23     | 20 (80 / 4)     | 13.5 (108 / 8)              |
//! | Q5_0            | ≈ 336  | 43   | 38     | 36 (144 / 4)    | 17.5 (140 / 8)              |
//!
//! The integer dot itself goes from 8 instructions to 2; the rest is the decode (Q5_0's
//! fifth bits are 15 of its 38) and the per-block f32 fold that bit-identity asks for.
//! The several-rows kernels load the activations once for four rows; the several-tokens
//! tiles also decode each weight block once for four tokens.
//!
//! The k-quants keep the NEON level's kernels, because `sdot` cannot form their sums
//! more cheaply. Their references keep eight i32 lanes per super-block, lane `l` summing
//! `scale · q · y` over the elements `l` mod 8 of each sub-block, and the f32 side
//! depends on those eight values. `sdot` sums four *neighbouring* bytes:
//! - Q4_K (32-value sub-blocks: lane `l` takes elements `l, l+8, l+16, l+24`) can be
//!   done by first gathering those four side by side with `tbl`, in the weights and in
//!   the activations, then one `sdot` and one `mla` by the scale per four lanes. That was
//!   written and measured: 207 instructions per super-block against the NEON kernel's
//!   143 (the permutations and the zeroed `sdot` accumulators cost more than `sdot`
//!   saves over `smull` + `smlal2`, which already put element `l` in 16-bit lane `l`),
//!   and ≈ 185 per row with four rows sharing the activations' permutation.
//! - Q6_K's sub-blocks are 16 values, two per lane, and the sub-block scale cannot be
//!   folded into 8-bit operands, so four products of one lane and one scale never meet.
//!
//! Plain-NEON several-rows kernels for Q4_K and Q6_K (activations loaded once for four
//! rows) were measured too and came out longer per row than the single-row kernels
//! (LLVM hoists the activations' widening out of the row loop and then multiplies in
//! 16 bits), so they are not installed either.
//!
//! Every kernel is a safe `#[target_feature(enable = "neon,dotprod")]` function; the
//! table stores them through `dot_fn!`, installed only after `Level::NeonDot` is detected.
//!
//! [`Level::NeonDot`]: crate::dispatch::Level::NeonDot

use super::block32::{self, blocks};
use super::simd::{arr, load_u8_as_i8, sdot_i8x32};

/// Rows per several-rows call: four rows' accumulators and the shared activations fit
/// the 32 vector registers with room for decoding.
pub const ROWS: usize = 4;

/// Defines the single-row and several-rows `sdot` kernels of a 32-element format from
/// its `block32::quants_*` and `block32::fold_*` halves. Both go through one generic
/// body, so row `r` of `$rows` is computed exactly as `$dot` computes it.
macro_rules! block32_dot {
    (
        $dot:ident,
        $rows:ident,
        $tokens:ident,
        $what:literal,
        $wb:expr,
        $ab:expr,
        $quants:path,
        $fold:path
    ) => {
        #[doc = concat!($what, " weights · their activations, with `sdot`.")]
        #[target_feature(enable = "neon,dotprod")]
        pub fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let mut sumf = 0.0f32;
            for (x, y) in blocks(w, $wb, a, $ab, $what) {
                let q = $quants(x);
                let y0 = load_u8_as_i8(arr(y, $ab - 32));
                let y1 = load_u8_as_i8(arr(y, $ab - 16));
                sumf = $fold(sumf, sdot_i8x32(q.0, q.1, y0, y1), x, y);
            }
            sumf
        }

        #[doc = concat!(
                    "[`", stringify!($dot), "`] for [`ROWS`] rows `row_bytes` apart sharing ",
                    "the activation loads; `w` must hold them, `a` one row's activations."
                )]
        #[target_feature(enable = "neon,dotprod")]
        pub fn $rows(w: &[u8], row_bytes: usize, a: &[u8]) -> [f32; ROWS] {
            let x: [&[u8]; ROWS] = std::array::from_fn(|r| &w[r * row_bytes..][..row_bytes]);
            let nb = a.len() / $ab;
            assert!(
                a.len() == nb * $ab && row_bytes == nb * $wb,
                concat!($what, " dot block counts")
            );
            let mut sumf = [0.0f32; ROWS];
            for b in 0..nb {
                let y = &a[b * $ab..][..$ab];
                let y0 = load_u8_as_i8(arr(y, $ab - 32));
                let y1 = load_u8_as_i8(arr(y, $ab - 16));
                for (x, sumf) in x.iter().zip(sumf.iter_mut()) {
                    let x = &x[b * $wb..][..$wb];
                    let q = $quants(x);
                    *sumf = $fold(*sumf, sdot_i8x32(q.0, q.1, y0, y1), x, y);
                }
            }
            sumf
        }

        #[doc = concat!(
            "[`", stringify!($dot), "`] for every (row, token) of a several-tokens call ",
            "(see [`crate::dispatch::DotTokensFn`]), in tiles of [`TILE_ROWS`] rows × ",
            "[`TOKENS`] tokens: each block's weights decoded once per tile."
        )]
        #[target_feature(enable = "neon,dotprod")]
        pub fn $tokens(
            w: &[u8],
            row_bytes: usize,
            a: &[u8],
            a_stride: usize,
            n_tokens: usize,
            out: &mut [f32],
        ) {
            let (nb, n_rows) =
                tokens_shape(w, row_bytes, a, a_stride, n_tokens, out.len(), $wb, $ab);
            let a_len = nb * $ab;
            let row = |r: usize| &w[r * row_bytes..][..row_bytes];
            let act = |t: usize| &a[t * a_stride..][..a_len];
            /// One tile: `R` rows from `r0`, `T` tokens from `t0`.
            #[inline]
            #[target_feature(enable = "neon,dotprod")]
            fn tile<const R: usize, const T: usize>(
                x: [&[u8]; R],
                y: [&[u8]; T],
                nb: usize,
            ) -> [[f32; R]; T] {
                let mut sumf = [[0.0f32; R]; T];
                for b in 0..nb {
                    let xb: [&[u8; $wb]; R] = std::array::from_fn(|r| arr(x[r], b * $wb));
                    let q: [_; R] = std::array::from_fn(|r| $quants(&xb[r][..]));
                    for (y, sumf) in y.iter().zip(sumf.iter_mut()) {
                        let y: &[u8; $ab] = arr(y, b * $ab);
                        let y0 = load_u8_as_i8(arr(&y[..], $ab - 32));
                        let y1 = load_u8_as_i8(arr(&y[..], $ab - 16));
                        for r in 0..R {
                            let sumi = sdot_i8x32(q[r].0, q[r].1, y0, y1);
                            sumf[r] = $fold(sumf[r], sumi, &xb[r][..], &y[..]);
                        }
                    }
                }
                sumf
            }
            // Tiles of 2 to 4 tokens; a last token left alone goes through the several-
            // rows kernel, which is faster than a one-token tile and gives the same bits.
            let tiled = n_tokens - usize::from(n_tokens % TOKENS == 1);
            let mut r0 = 0;
            while r0 < n_rows && tiled > 0 {
                let rows = (n_rows - r0).min(TILE_ROWS);
                let mut t0 = 0;
                while t0 < tiled {
                    let tokens = (tiled - t0).min(TOKENS);
                    macro_rules! run {
                        ($r:literal, $t:literal) => {{
                            let x: [&[u8]; $r] = std::array::from_fn(|i| row(r0 + i));
                            let y: [&[u8]; $t] = std::array::from_fn(|j| act(t0 + j));
                            for (j, sums) in tile::<$r, $t>(x, y, nb).iter().enumerate() {
                                out[(t0 + j) * n_rows + r0..][..$r].copy_from_slice(sums);
                            }
                        }};
                    }
                    match (rows, tokens) {
                        (2, 4) => run!(2, 4),
                        (2, 3) => run!(2, 3),
                        (2, 2) => run!(2, 2),
                        (1, 4) => run!(1, 4),
                        (1, 3) => run!(1, 3),
                        (1, 2) => run!(1, 2),
                        shape => unreachable!("a tile of {shape:?} rows and tokens"),
                    }
                    t0 += tokens;
                }
                r0 += rows;
            }
            if tiled < n_tokens {
                let (t, y) = (tiled, act(tiled));
                let out = &mut out[t * n_rows..][..n_rows];
                let whole = n_rows - n_rows % ROWS;
                for (g, o) in out[..whole].chunks_exact_mut(ROWS).enumerate() {
                    let w = &w[g * ROWS * row_bytes..][..ROWS * row_bytes];
                    o.copy_from_slice(&$rows(w, row_bytes, y));
                }
                for (r, o) in out.iter_mut().enumerate().skip(whole) {
                    *o = $dot(row(r), y);
                }
            }
        }
    };
}

/// Rows of a several-tokens tile: two rows' decoded quants (four vectors) stay in
/// registers while [`TOKENS`] tokens pass over them.
pub const TILE_ROWS: usize = 2;
/// Tokens of a several-tokens tile.
pub const TOKENS: usize = 4;

/// Blocks per row and the number of rows of a several-tokens call, after checking that
/// `out_len` is `n_tokens` rows of outputs, that `w` holds that many weight rows of
/// `row_bytes` (whole `wb`-byte blocks), and that `a` holds `n_tokens` activation rows
/// of matching `ab`-byte blocks, `a_stride` bytes apart (panics otherwise).
#[allow(clippy::too_many_arguments)]
fn tokens_shape(
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    a_stride: usize,
    n_tokens: usize,
    out_len: usize,
    wb: usize,
    ab: usize,
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
        row_bytes.is_multiple_of(wb),
        "{row_bytes}-byte rows are not whole {wb}-byte blocks"
    );
    let a_len = row_bytes / wb * ab;
    assert!(
        a_stride >= a_len
            && (n_tokens - 1)
                .checked_mul(a_stride)
                .and_then(|s| s.checked_add(a_len))
                .is_some_and(|end| end <= a.len()),
        "{} activation bytes do not hold {n_tokens} rows of {a_len} bytes, {a_stride} apart",
        a.len()
    );
    (row_bytes / wb, n_rows)
}

block32_dot!(
    dot_q4_0,
    dot_rows_q4_0,
    dot_tokens_q4_0,
    "Q4_0",
    block32::Q4_0,
    block32::Q8_0,
    block32::quants_q4_0,
    block32::fold_q4_0
);
block32_dot!(
    dot_q4_1,
    dot_rows_q4_1,
    dot_tokens_q4_1,
    "Q4_1",
    block32::Q4_1,
    block32::Q8_1,
    block32::quants_q4_1,
    block32::fold_q4_1
);
block32_dot!(
    dot_q5_0,
    dot_rows_q5_0,
    dot_tokens_q5_0,
    "Q5_0",
    block32::Q5_0,
    block32::Q8_0,
    block32::quants_q5_0,
    block32::fold_q5_0
);
block32_dot!(
    dot_q5_1,
    dot_rows_q5_1,
    dot_tokens_q5_1,
    "Q5_1",
    block32::Q5_1,
    block32::Q8_1,
    block32::quants_q5_1,
    block32::fold_q5_1
);
block32_dot!(
    dot_q8_0,
    dot_rows_q8_0,
    dot_tokens_q8_0,
    "Q8_0",
    block32::Q8_0,
    block32::Q8_0,
    block32::quants_q8_0,
    block32::fold_q8_0
);
block32_dot!(
    dot_iq4_nl,
    dot_rows_iq4_nl,
    dot_tokens_iq4_nl,
    "IQ4_NL",
    block32::IQ4_NL,
    block32::Q8_0,
    block32::quants_iq4_nl,
    block32::fold_iq4_nl
);
