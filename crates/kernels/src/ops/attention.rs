//! Attention over tiles of cached keys and values, flash-attention style: the scores of
//! a group of query rows against one tile of [`KV_TILE`] keys, an online-softmax update
//! of the rows' running maximum and sum, and the weighted values added into the rows'
//! unnormalised outputs. No score matrix over the whole context is ever materialised,
//! and each key and value row is read once for all the query rows of a group (the query
//! heads that share a KV head, for several tokens).
//!
//! The method is FlashAttention-2's forward pass (Dao, 2023, algorithm 1) for one tile
//! at a time: with running maximum `m`, sum `l` and output `o` of a row, a tile of
//! scores `s` gives `m' = max(m, max s)`, `p = e^(s - m')`, `α = e^(m - m')`,
//! `l' = α·l + Σ p`, `o' = α·o + Σ p·v`; after the last tile the row is `o / l`, which is
//! `softmax(kq_scale · q·K)·V` as ggml's `soft_max_ext` followed by `mul_mat` computes
//! it, up to rounding (the reference sums `e^(s - max)` in f64 with the global maximum;
//! here the sum is f32, tile by tile, rescaled when the maximum grows).
//!
//! Keys come transposed within a tile (`k[d·KV_TILE + lane]`), so a score tile is a row
//! of broadcast-query FMAs into [`KV_TILE`] lanes with no horizontal sums; values come as
//! rows. The KV cache stores its blocks in exactly this layout.
//!
//! Kernels: [`qk`] and [`pv`] here are the scalar references (the `Scalar` level's and
//! NEON's entries; written lane-inner so compilers vectorise them without changing any
//! rounding), with AVX2+FMA and AVX-512F versions below, selected per level by
//! [`register`]. The SIMD versions fuse the multiply-adds (FMA), which the references do
//! not; `tests/attention.rs` states and checks the bound at every level. `exp` is the
//! level's own ([`crate::ops::Ops::exp`]).

use crate::dispatch::Level;
use crate::ops::Ops;

/// Keys (and values) per tile: one KV cache block, and one AVX-512 vector of scores.
pub const KV_TILE: usize = 16;

/// Scores of one tile: `s[r·KV_TILE + j] = scale · q[r]·k[j]` for query rows `r` of `q`
/// (`[n_rows, head_dim]`) and keys `j` of the transposed tile `k` (`[head_dim, KV_TILE]`);
/// `s` is `[n_rows, KV_TILE]`. Lengths are checked by [`Ops::attn_tile`].
pub(crate) type QkFn = fn(q: &[f32], k: &[f32], scale: f32, s: &mut [f32]);

/// Weighted values of one tile: `o[r] = alpha[r]·o[r] + Σ_j p[r·KV_TILE + j]·v[j]` for
/// keys `j` in `lanes`, value row `j` being `v[j·v_stride..][..head_dim_v]`; `o` is
/// `[n_rows, head_dim_v]`, `n_rows = alpha.len()`. Lengths are checked by
/// [`Ops::attn_tile`].
pub(crate) type PvFn =
    fn(p: &[f32], alpha: &[f32], v: &[f32], v_stride: usize, lanes: (usize, usize), o: &mut [f32]);

/// One tile of one KV head's cached keys and values.
#[derive(Debug, Clone, Copy)]
pub struct KvTile<'a> {
    /// `[head_dim_k, KV_TILE]`: `k[d·KV_TILE + j]` is dimension `d` of key `j`.
    pub k: &'a [f32],
    /// Value row `j` is `v[j·v_stride..][..head_dim_v]` (rows past the visible keys of
    /// every query row are never read).
    pub v: &'a [f32],
    pub v_stride: usize,
}

/// The online-softmax state of a group of query rows (`n_rows = m.len()`), in memory the
/// caller owns so that the attention loop never allocates.
#[derive(Debug)]
pub struct FlashRows<'a> {
    /// `[n_rows]`: running maximum of each row's scaled scores (`-inf` before any).
    pub m: &'a mut [f32],
    /// `[n_rows]`: running sum of `e^(score - m)`.
    pub l: &'a mut [f32],
    /// `[n_rows, head_dim_v]`: running `Σ e^(score - m)·v`, not yet divided by `l`.
    pub o: &'a mut [f32],
    /// `[n_rows, KV_TILE]`: scratch for one tile's scores and weights.
    pub s: &'a mut [f32],
    /// `[n_rows]`: scratch for the rescaling factors.
    pub alpha: &'a mut [f32],
}

impl FlashRows<'_> {
    /// Clears the state for a new pass over the keys: no key seen yet.
    pub fn reset(&mut self) {
        self.m.fill(f32::NEG_INFINITY);
        self.l.fill(0.0);
        self.o.fill(0.0);
    }
}

impl Ops {
    /// Adds one tile of keys and values to the state of `st.m.len()` query rows: `q` is
    /// `[n_rows, head_dim_k]`, and the rows are in `vis.len()` equal runs (the query
    /// heads of one token each), run `i` seeing the keys `vis[i].0..vis[i].1` of the tile
    /// (clamped to [`KV_TILE`]; an empty range leaves its rows as they were). Scores are
    /// `scale · q·k` (ggml's `kq_scale`, applied after the dot product as its softmax
    /// does).
    ///
    /// # Panics
    /// When the lengths do not describe the same rows and head sizes, or `tile.v` is too
    /// short for a visible value row.
    pub fn attn_tile(
        &self,
        q: &[f32],
        scale: f32,
        tile: &KvTile<'_>,
        vis: &[(usize, usize)],
        st: &mut FlashRows<'_>,
    ) {
        const T: usize = KV_TILE;
        let n_rows = st.m.len();
        let hd_k = tile.k.len() / T;
        assert!(
            n_rows > 0
                && tile.k.len() == hd_k * T
                && q.len() == n_rows * hd_k
                && st.l.len() == n_rows
                && st.alpha.len() == n_rows
                && st.s.len() == n_rows * T
                && st.o.len().is_multiple_of(n_rows)
                && !vis.is_empty()
                && n_rows.is_multiple_of(vis.len()),
            "attn_tile: shapes"
        );
        let hd_v = st.o.len() / n_rows;
        let per_vis = n_rows / vis.len();
        let (mut lo_all, mut hi_all) = (T, 0);
        for &(lo, hi) in vis {
            let hi = hi.min(T);
            if lo < hi {
                (lo_all, hi_all) = (lo_all.min(lo), hi_all.max(hi));
            }
        }
        if lo_all >= hi_all {
            return;
        }
        assert!(
            (hi_all - 1) * tile.v_stride + hd_v <= tile.v.len(),
            "attn_tile: value rows"
        );

        (self.attn_qk)(q, tile.k, scale, st.s);
        for (r, s) in st.s.chunks_exact_mut(T).enumerate() {
            // Whole-tile loops over a fixed-size row, which compilers vectorise.
            let s: &mut [f32; T] = s.try_into().expect("chunks_exact yields whole tiles");
            let (lo, hi) = vis[r / per_vis];
            // Masked keys first: their scores may be anything (NaN from unused cells).
            for (j, x) in s.iter_mut().enumerate() {
                if j < lo || j >= hi {
                    *x = f32::NEG_INFINITY;
                }
            }
            let max = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let m_new = st.m[r].max(max);
            if m_new == f32::NEG_INFINITY {
                // Nothing visible (or only -inf scores): weights 0, state unchanged.
                st.alpha[r] = 0.0;
                continue;
            }
            for x in s.iter_mut() {
                *x -= m_new;
            }
            // 0 (so α = 1) when the maximum stays; -inf (α = 0) for a row's first keys.
            st.alpha[r] = st.m[r] - m_new;
            st.m[r] = m_new;
        }
        (self.exp)(st.s);
        (self.exp)(st.alpha);
        for ((l, &a), s) in
            st.l.iter_mut()
                .zip(st.alpha.iter())
                .zip(st.s.chunks_exact(T))
        {
            *l = *l * a + s.iter().sum::<f32>();
        }
        (self.attn_pv)(
            st.s,
            st.alpha,
            tile.v,
            tile.v_stride,
            (lo_all, hi_all),
            st.o,
        );
    }
}

/// Writes the attention output of one query row from the states of the passes over
/// disjoint parts of its keys (`(m, l, o)` each, as [`FlashRows`] left them): `out =
/// Σ e^(m_i - M)·o_i / Σ e^(m_i - M)·l_i` with `M = max m_i`. A row that saw no key
/// becomes zeros (as a fully masked softmax row in Hearth).
pub fn flash_finish<'a>(
    parts: impl Iterator<Item = (f32, f32, &'a [f32])> + Clone,
    out: &mut [f32],
) {
    let m_max = parts
        .clone()
        .map(|(m, _, _)| m)
        .fold(f32::NEG_INFINITY, f32::max);
    out.fill(0.0);
    if m_max == f32::NEG_INFINITY {
        return;
    }
    let mut l_sum = 0.0f32;
    for (m, l, o) in parts {
        if m == f32::NEG_INFINITY {
            continue;
        }
        let c = (m - m_max).exp();
        l_sum += c * l;
        if c == 1.0 {
            out.iter_mut().zip(o).for_each(|(y, &x)| *y += x);
        } else {
            out.iter_mut().zip(o).for_each(|(y, &x)| *y += c * x);
        }
    }
    if l_sum > 0.0 {
        let inv = 1.0 / l_sum;
        out.iter_mut().for_each(|y| *y *= inv);
    }
}

/// The scalar reference of [`QkFn`]: products rounded, then added in order of `d`.
pub fn qk(q: &[f32], k: &[f32], scale: f32, s: &mut [f32]) {
    const T: usize = KV_TILE;
    let hd = k.len() / T;
    for (qr, sr) in q.chunks_exact(hd).zip(s.chunks_exact_mut(T)) {
        let mut acc = [0.0f32; T];
        for (&qd, kd) in qr.iter().zip(k.chunks_exact(T)) {
            for (a, &kj) in acc.iter_mut().zip(kd) {
                *a += qd * kj;
            }
        }
        for (s, a) in sr.iter_mut().zip(acc) {
            *s = a * scale;
        }
    }
}

/// The scalar reference of [`PvFn`]: `o·α` first, then each key's `p·v` added in order.
pub fn pv(
    p: &[f32],
    alpha: &[f32],
    v: &[f32],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
) {
    let hd_v = o.len() / alpha.len();
    pv_cols(p, alpha, v, v_stride, lanes, o, hd_v, 0);
}

/// [`pv`] on the columns `c0..hd_v` of every row only (the SIMD versions' tails).
#[allow(clippy::too_many_arguments)]
fn pv_cols(
    p: &[f32],
    alpha: &[f32],
    v: &[f32],
    v_stride: usize,
    (lo, hi): (usize, usize),
    o: &mut [f32],
    hd_v: usize,
    c0: usize,
) {
    const T: usize = KV_TILE;
    for ((orow, &a), pr) in o.chunks_exact_mut(hd_v).zip(alpha).zip(p.chunks_exact(T)) {
        let orow = &mut orow[c0..];
        if a != 1.0 {
            orow.iter_mut().for_each(|y| *y *= a);
        }
        for (j, &w) in pr.iter().enumerate().take(hi).skip(lo) {
            let vrow = &v[j * v_stride + c0..][..orow.len()];
            for (y, &x) in orow.iter_mut().zip(vrow) {
                *y += w * x;
            }
        }
    }
}

/// Installs the kernels of `level` over the scalar ones (called by `Ops::for_level`
/// after checking that the CPU supports the level).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn register(ops: &mut Ops, level: Level) {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            ops.attn_qk = x86::qk_avx2;
            ops.attn_pv = x86::pv_avx2;
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            ops.attn_qk = x86::qk_avx512;
            ops.attn_pv = x86::pv_avx512;
        }
        _ => {}
    }
}

/// The x86-64 versions: AVX2+FMA (a tile's 16 scores in two vectors) and AVX-512F (one).
///
/// Both keep a block of query rows' accumulators in registers across a whole head
/// dimension (QK) or a block of rows × output columns across the tile's keys (PV), so
/// that each key or value vector loaded serves several rows. Raw-pointer loads are used
/// in the inner loops (bounds are checked once per kernel call, as the `SAFETY` notes
/// say): per-element slice checks there cost as much as the arithmetic.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pv_cols, KV_TILE as T};

    /// Defines the plain-`fn` wrappers the `Ops` table stores.
    macro_rules! wrappers {
        ($($name:ident = $kernel:path, ($($arg:ident: $ty:ty),*);)*) => {$(
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: a `#[target_feature]` kernel only needs a CPU with its
                // features. These wrappers reach an `Ops` table only through
                // `register`, which `Ops::for_level` calls only after
                // `Level::is_supported` confirmed AVX2+FMA (resp. AVX-512F).
                unsafe { $kernel($($arg),*) }
            }
        )*};
    }

    wrappers! {
        qk_avx2 = avx2::qk, (q: &[f32], k: &[f32], scale: f32, s: &mut [f32]);
        pv_avx2 = avx2::pv, (p: &[f32], alpha: &[f32], v: &[f32], v_stride: usize,
            lanes: (usize, usize), o: &mut [f32]);
        qk_avx512 = avx512::qk, (q: &[f32], k: &[f32], scale: f32, s: &mut [f32]);
        pv_avx512 = avx512::pv, (p: &[f32], alpha: &[f32], v: &[f32], v_stride: usize,
            lanes: (usize, usize), o: &mut [f32]);
    }

    /// Checks the shapes the kernels' raw loads rely on; returns `(n_rows, hd_k)`.
    fn qk_shape(q: &[f32], k: &[f32], s: &[f32]) -> (usize, usize) {
        let (n_rows, hd) = (s.len() / T, k.len() / T);
        assert!(
            s.len() == n_rows * T && k.len() == hd * T && q.len() >= n_rows * hd,
            "attention qk: shapes"
        );
        (n_rows, hd)
    }

    /// Checks the shapes the kernels' raw loads rely on; returns `(n_rows, hd_v)`.
    fn pv_shape(
        p: &[f32],
        alpha: &[f32],
        v: &[f32],
        v_stride: usize,
        (lo, hi): (usize, usize),
        o: &[f32],
    ) -> (usize, usize) {
        let n_rows = alpha.len();
        let hd_v = o.len() / n_rows.max(1);
        assert!(
            o.len() == n_rows * hd_v
                && p.len() >= n_rows * T
                && hi <= T
                && (lo >= hi || (hi - 1) * v_stride + hd_v <= v.len()),
            "attention pv: shapes"
        );
        (n_rows, hd_v)
    }

    mod avx2 {
        use std::arch::x86_64::*;

        use super::{pv_cols, pv_shape, qk_shape, T};

        #[target_feature(enable = "avx2,fma")]
        pub(in super::super) fn qk(q: &[f32], k: &[f32], scale: f32, s: &mut [f32]) {
            let (n_rows, hd) = qk_shape(q, k, s);
            let mut r = 0;
            while r + RB <= n_rows {
                qk_rows::<RB>(q, k, hd, r, scale, s);
                r += RB;
            }
            while r < n_rows {
                qk_rows::<1>(q, k, hd, r, scale, s);
                r += 1;
            }
        }

        /// Vectors of 8 scores in a tile.
        const NK: usize = T / 8;
        /// Rows per block of [`qk`]: eight accumulators, enough independent FMA chains
        /// to cover the FMA latency, and registers to spare for the key vectors.
        const RB: usize = 8 / NK;

        /// Scores of rows `r0..r0 + R`: `R·NK` accumulators of 8 keys.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn qk_rows<const R: usize>(
            q: &[f32],
            k: &[f32],
            hd: usize,
            r0: usize,
            scale: f32,
            s: &mut [f32],
        ) {
            let q = &q[r0 * hd..(r0 + R) * hd];
            let (qp, kp) = (q.as_ptr(), k.as_ptr());
            let mut acc = [[_mm256_setzero_ps(); NK]; R];
            for d in 0..hd {
                let mut kv = [_mm256_setzero_ps(); NK];
                for (j, x) in kv.iter_mut().enumerate() {
                    // SAFETY: `k.len() == hd·T` (qk_shape) and `d < hd`: the T floats at
                    // `d·T` are readable; `loadu` needs no alignment.
                    *x = unsafe { _mm256_loadu_ps(kp.add(d * T + 8 * j)) };
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `i·hd + d < R·hd == q.len()` (the slice taken above).
                    let qv = _mm256_set1_ps(unsafe { *qp.add(i * hd + d) });
                    for (a, &x) in a.iter_mut().zip(&kv) {
                        *a = _mm256_fmadd_ps(qv, x, *a);
                    }
                }
            }
            let sc = _mm256_set1_ps(scale);
            for (i, a) in acc.iter().enumerate() {
                let out = &mut s[(r0 + i) * T..][..T];
                for (j, &a) in a.iter().enumerate() {
                    // SAFETY: `out` is T writable floats and `8j + 8 <= T`.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), _mm256_mul_ps(a, sc)) };
                }
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub(in super::super) fn pv(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v, v_stride, lanes, o);
            let n_cols = hd_v / 8 * 8;
            let mut r = 0;
            while r < n_rows {
                let rows = if r + 4 <= n_rows { 4 } else { 1 };
                let mut c = 0;
                while c + 16 <= n_cols {
                    match rows {
                        4 => pv_block::<4, 2>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                        _ => pv_block::<1, 2>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                    }
                    c += 16;
                }
                while c < n_cols {
                    match rows {
                        4 => pv_block::<4, 1>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                        _ => pv_block::<1, 1>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                    }
                    c += 8;
                }
                r += rows;
            }
            if n_cols < hd_v {
                pv_cols(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        /// Rows `r0..r0 + R`, columns `c0..c0 + 8·NV`.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        fn pv_block<const R: usize, const NV: usize>(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            (lo, hi): (usize, usize),
            o: &mut [f32],
            hd_v: usize,
            r0: usize,
            c0: usize,
        ) {
            let p = &p[r0 * T..(r0 + R) * T];
            let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
            let mut acc = [[_mm256_setzero_ps(); NV]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                let al = _mm256_set1_ps(alpha[r0 + i]);
                for (j, a) in a.iter_mut().enumerate() {
                    // SAFETY: row `r0 + i < n_rows` and column `c0 + 8j + 8 <= hd_v`
                    // (the caller's loop bounds), inside `o` of `n_rows·hd_v` floats.
                    *a = _mm256_mul_ps(al, unsafe {
                        _mm256_loadu_ps(op.add((r0 + i) * hd_v + c0 + 8 * j))
                    });
                }
            }
            for l in lo..hi {
                let mut vv = [_mm256_setzero_ps(); NV];
                for (j, x) in vv.iter_mut().enumerate() {
                    // SAFETY: `l < hi` and `(hi - 1)·v_stride + hd_v <= v.len()`
                    // (pv_shape), `c0 + 8j + 8 <= hd_v`.
                    *x = unsafe { _mm256_loadu_ps(vp.add(l * v_stride + c0 + 8 * j)) };
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `i·T + l < R·T == p.len()` (the slice taken above).
                    let w = _mm256_set1_ps(unsafe { *pp.add(i * T + l) });
                    for (a, &x) in a.iter_mut().zip(&vv) {
                        *a = _mm256_fmadd_ps(w, x, *a);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, &a) in a.iter().enumerate() {
                    // SAFETY: as for the loads of `o` above.
                    unsafe { _mm256_storeu_ps(op.add((r0 + i) * hd_v + c0 + 8 * j), a) };
                }
            }
        }
    }

    mod avx512 {
        use std::arch::x86_64::*;

        use super::{pv_cols, pv_shape, qk_shape, T};

        #[target_feature(enable = "avx512f")]
        pub(in super::super) fn qk(q: &[f32], k: &[f32], scale: f32, s: &mut [f32]) {
            let (n_rows, hd) = qk_shape(q, k, s);
            let mut r = 0;
            while r + RB <= n_rows {
                qk_rows::<RB>(q, k, hd, r, scale, s);
                r += RB;
            }
            while r + 4 <= n_rows {
                qk_rows::<4>(q, k, hd, r, scale, s);
                r += 4;
            }
            while r < n_rows {
                qk_rows::<1>(q, k, hd, r, scale, s);
                r += 1;
            }
        }

        /// Vectors of 16 scores in a tile.
        const NK: usize = T / 16;
        /// Rows per block of [`qk`]: eight accumulators (see `avx2`).
        const RB: usize = 8 / NK;

        /// Scores of rows `r0..r0 + R`: `R·NK` accumulators of 16 keys.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn qk_rows<const R: usize>(
            q: &[f32],
            k: &[f32],
            hd: usize,
            r0: usize,
            scale: f32,
            s: &mut [f32],
        ) {
            let q = &q[r0 * hd..(r0 + R) * hd];
            let (qp, kp) = (q.as_ptr(), k.as_ptr());
            let mut acc = [[_mm512_setzero_ps(); NK]; R];
            for d in 0..hd {
                let mut kv = [_mm512_setzero_ps(); NK];
                for (j, x) in kv.iter_mut().enumerate() {
                    // SAFETY: `k.len() == hd·T` (qk_shape) and `d < hd`: the T floats at
                    // `d·T` are readable; `loadu` needs no alignment.
                    *x = unsafe { _mm512_loadu_ps(kp.add(d * T + 16 * j)) };
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `i·hd + d < R·hd == q.len()` (the slice taken above).
                    let qv = _mm512_set1_ps(unsafe { *qp.add(i * hd + d) });
                    for (a, &x) in a.iter_mut().zip(&kv) {
                        *a = _mm512_fmadd_ps(qv, x, *a);
                    }
                }
            }
            let sc = _mm512_set1_ps(scale);
            for (i, a) in acc.iter().enumerate() {
                let out = &mut s[(r0 + i) * T..][..T];
                for (j, &a) in a.iter().enumerate() {
                    // SAFETY: `out` is T writable floats and `16j + 16 <= T`.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * j), _mm512_mul_ps(a, sc)) };
                }
            }
        }

        #[target_feature(enable = "avx512f")]
        pub(in super::super) fn pv(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v, v_stride, lanes, o);
            let n_cols = hd_v / 16 * 16;
            let mut r = 0;
            while r < n_rows {
                let rows = if r + 4 <= n_rows { 4 } else { 1 };
                let mut c = 0;
                while c + 64 <= n_cols {
                    match rows {
                        4 => pv_block::<4, 4>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                        _ => pv_block::<1, 4>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                    }
                    c += 64;
                }
                while c < n_cols {
                    match rows {
                        4 => pv_block::<4, 1>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                        _ => pv_block::<1, 1>(p, alpha, v, v_stride, lanes, o, hd_v, r, c),
                    }
                    c += 16;
                }
                r += rows;
            }
            if n_cols < hd_v {
                pv_cols(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        /// Rows `r0..r0 + R`, columns `c0..c0 + 16·NV`.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f")]
        fn pv_block<const R: usize, const NV: usize>(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            (lo, hi): (usize, usize),
            o: &mut [f32],
            hd_v: usize,
            r0: usize,
            c0: usize,
        ) {
            let p = &p[r0 * T..(r0 + R) * T];
            let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
            let mut acc = [[_mm512_setzero_ps(); NV]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                let al = _mm512_set1_ps(alpha[r0 + i]);
                for (j, a) in a.iter_mut().enumerate() {
                    // SAFETY: row `r0 + i < n_rows` and column `c0 + 16j + 16 <= hd_v`
                    // (the caller's loop bounds), inside `o` of `n_rows·hd_v` floats.
                    *a = _mm512_mul_ps(al, unsafe {
                        _mm512_loadu_ps(op.add((r0 + i) * hd_v + c0 + 16 * j))
                    });
                }
            }
            for l in lo..hi {
                let mut vv = [_mm512_setzero_ps(); NV];
                for (j, x) in vv.iter_mut().enumerate() {
                    // SAFETY: `l < hi` and `(hi - 1)·v_stride + hd_v <= v.len()`
                    // (pv_shape), `c0 + 16j + 16 <= hd_v`.
                    *x = unsafe { _mm512_loadu_ps(vp.add(l * v_stride + c0 + 16 * j)) };
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `i·T + l < R·T == p.len()` (the slice taken above).
                    let w = _mm512_set1_ps(unsafe { *pp.add(i * T + l) });
                    for (a, &x) in a.iter_mut().zip(&vv) {
                        *a = _mm512_fmadd_ps(w, x, *a);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, &a) in a.iter().enumerate() {
                    // SAFETY: as for the loads of `o` above.
                    unsafe { _mm512_storeu_ps(op.add((r0 + i) * hd_v + c0 + 16 * j), a) };
                }
            }
        }
    }
}
