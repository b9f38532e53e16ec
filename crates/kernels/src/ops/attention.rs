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
//! Keys and values may be stored as f32, f16 or Q8_0 ([`KvType`], llama.cpp's
//! `--cache-type-k` / `--cache-type-v`). The kernels read the stored type and widen it in
//! registers (F16C `vcvtph2ps`, sign-extend and convert for Q8_0), so a reduced cache
//! moves fewer bytes and no f32 copy of it is ever made. Q8_0 is ggml's block of 32
//! int8 with one f16 scale (`quantize_row_q8_0_ref`), laid out to fit the tile: a key's
//! blocks run along its head dimension (per cell, as ggml quantizes a cache row), with
//! int8 values transposed like f32 keys and the scales as `[head_dim_k / 32, KV_TILE]`,
//! so that the 16 scales of one block of dimensions are one vector; value rows are
//! int8 rows with a row of scales beside them. Every kernel first widens an element
//! exactly as the scalar reference does (an f16 is exact in f32; a Q8_0 element is
//! `q as f32 · d`, one rounding), so the error bounds of the f32 kernels carry over.
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

/// Elements of a Q8_0 block (ggml's `QK8_0`).
pub const Q8_0_BLOCK: usize = 32;

/// How a KV cache stores keys or values. The names are llama.cpp's `--cache-type-k` /
/// `--cache-type-v` values; only the types the attention kernels read are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    /// 4 bytes an element.
    F32,
    /// IEEE half, 2 bytes an element (rounded to nearest even, as F16C and ggml do).
    F16,
    /// Blocks of [`Q8_0_BLOCK`] int8 with an f16 scale: 34 bytes per 32 elements.
    Q8_0,
}

impl KvType {
    /// Every type, in the order error messages list them.
    pub const ALL: [KvType; 3] = [KvType::F32, KvType::F16, KvType::Q8_0];

    /// llama.cpp's name: `f32`, `f16`, `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Elements that share a scale, which a head dimension must be a multiple of.
    pub fn block_size(self) -> usize {
        match self {
            KvType::F32 | KvType::F16 => 1,
            KvType::Q8_0 => Q8_0_BLOCK,
        }
    }

    /// Bytes of `n` stored elements (`n` a multiple of [`KvType::block_size`]).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 => 2 * n,
            KvType::Q8_0 => n + 2 * (n / Q8_0_BLOCK),
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A KV cache type name that is none of [`KvType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKvType(pub String);

impl std::fmt::Display for UnknownKvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown KV cache type {:?} (valid: ", self.0)?;
        for (i, t) in KvType::ALL.iter().enumerate() {
            write!(f, "{}{t}", if i > 0 { ", " } else { "" })?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownKvType {}

impl std::str::FromStr for KvType {
    type Err = UnknownKvType;

    /// Parses llama.cpp's names (case-insensitive).
    fn from_str(s: &str) -> Result<KvType, UnknownKvType> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownKvType(s.to_owned()))
    }
}

/// Stored keys or values of one tile, in the cache's own type.
#[derive(Debug, Clone, Copy)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    /// IEEE half bit patterns.
    F16(&'a [u16]),
    /// `qs` laid out as the f32 elements would be; `d` holds the f16 scale bits of each
    /// block of [`Q8_0_BLOCK`] (for keys `[head_dim_k / 32, KV_TILE]`, for values a row
    /// of `head_dim_v / 32` per value row, `v_stride / 32` apart).
    Q8_0 {
        qs: &'a [i8],
        d: &'a [u16],
    },
}

impl KvData<'_> {
    /// Stored elements (without Q8_0's scales).
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(x) => x.len(),
            KvData::F16(x) => x.len(),
            KvData::Q8_0 { qs, .. } => qs.len(),
        }
    }

    /// Whether no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines of `n` rows of `width` elements, `stride` apart, to be read soon (the
    /// elements between rows may be other heads'); Q8_0's scales are not among them.
    fn ahead_rows(&self, n: usize, stride: usize, width: usize) -> Ahead {
        match *self {
            KvData::F32(x) => Ahead::rows(x, n, stride, width),
            KvData::F16(x) => Ahead::rows(x, n, stride, width),
            KvData::Q8_0 { qs, .. } => Ahead::rows(qs, n, stride, width),
        }
    }

    /// Prefetches the Q8_0 scales of those rows now (a line or two per row).
    fn prefetch_scales(&self, n: usize, stride: usize, width: usize) {
        if let KvData::Q8_0 { d, .. } = *self {
            Ahead::rows(d, n, stride / Q8_0_BLOCK, width / Q8_0_BLOCK).take(usize::MAX);
        }
    }
}

impl KvTile<'_> {
    /// Prefetches this tile's keys and values now: for the first tile of a run, which
    /// is needed at once. Later tiles go to [`Ops::attn_tile`] as its `next`, whose
    /// kernels fetch them a few lines at a time while they work ([`Ahead`]).
    pub fn prefetch(&self) {
        let (mut k, mut v) = self.ahead();
        k.take(usize::MAX);
        v.take(usize::MAX);
        self.prefetch_scales();
    }

    /// The lines of this tile's keys and of its values, Q8_0 scales aside (none for a
    /// tile without values, as MLA's: its value rows are 0 wide).
    fn ahead(&self) -> (Ahead, Ahead) {
        // Keys are one run of `[head_dim_k, KV_TILE]`.
        let k = self.k.ahead_rows(1, 0, self.k.len());
        (k, self.v.ahead_rows(KV_TILE, self.v_stride, self.v_width()))
    }

    /// Prefetches the Q8_0 scales of the keys and values now.
    fn prefetch_scales(&self) {
        self.k.prefetch_scales(1, 0, self.k.len());
        self.v
            .prefetch_scales(KV_TILE, self.v_stride, self.v_width());
    }

    /// Elements of a value row.
    fn v_width(&self) -> usize {
        self.v.len().saturating_sub((KV_TILE - 1) * self.v_stride)
    }
}

/// Cache lines of the next tile, fetched a few at a time while a kernel works on the
/// current one. A decode step reads each sequence's cache once, from memory (the step's
/// weights have evicted it); the blocks lie anywhere in the pool and span a few pages
/// each, and hardware prefetchers stop at page ends. A whole tile's prefetches at once
/// (256 lines of f16 keys and values for a head of 256) stall the core until the misses
/// drain, so loading and arithmetic take turns. Measured on AMD Zen 5 with Gemma 3's head
/// shape (`examples/attn_speed`, AVX-512, four query rows, ns per tile out of cache):
/// 2311 with no prefetch, 1379 with the whole tile prefetched first, 765 with its lines
/// spread over the kernels' loops ([`Ahead::step`]), against 585 in L2.
///
/// Only addresses are kept: a prefetch reads and writes nothing and never faults, and
/// the rows come from slices the caller holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ahead {
    /// Address of the next line to fetch.
    next: usize,
    /// One past the last byte of the current row.
    end: usize,
    /// Bytes of a row, and from one row's start to the next.
    row_bytes: usize,
    stride_bytes: usize,
    /// Rows not yet finished, the current one included.
    rows: usize,
    /// Lines [`Ahead::step`] takes.
    per_step: usize,
}

impl Ahead {
    /// Rows `j·stride..j·stride + width` of `x`, for the `j < n` whose row lies in `x`.
    fn rows<T>(x: &[T], n: usize, stride: usize, width: usize) -> Ahead {
        let size = std::mem::size_of::<T>();
        let rows = if width == 0 || x.len() < width {
            0
        } else {
            // Stride 0: one run.
            n.min((x.len() - width).checked_div(stride).map_or(1, |j| j + 1))
        };
        let start = x.as_ptr() as usize;
        Ahead {
            next: start & !63,
            end: start + width * size,
            row_bytes: width * size,
            stride_bytes: stride * size,
            rows,
            per_step: 0,
        }
    }

    /// Lines left, at most: a row not aligned to lines may span one more.
    fn lines(&self) -> usize {
        self.rows * (self.row_bytes.div_ceil(64) + 1)
    }

    /// Spreads the lines left evenly over `steps` calls of [`Ahead::step`].
    #[inline]
    pub fn pace(&mut self, steps: usize) {
        self.per_step = self.lines().div_ceil(steps.max(1));
    }

    /// Prefetches the next share of lines set by [`Ahead::pace`].
    #[inline(always)]
    pub fn step(&mut self) {
        if self.rows > 0 {
            self.take(self.per_step);
        }
    }

    /// Prefetches the next `n` lines (fewer when fewer are left).
    pub fn take(&mut self, n: usize) {
        for _ in 0..n {
            match self.next_line() {
                Some(addr) => prefetch_line(addr),
                None => break,
            }
        }
    }

    /// The address of the next line, row by row.
    #[inline(always)]
    fn next_line(&mut self) -> Option<usize> {
        if self.rows == 0 {
            return None;
        }
        let addr = self.next;
        self.next += 64;
        if self.next >= self.end {
            self.rows -= 1;
            let start = self.end - self.row_bytes + self.stride_bytes;
            (self.next, self.end) = (start & !63, start + self.row_bytes);
        }
        Some(addr)
    }
}

/// A prefetch of the cache line holding `addr` (no-op off x86-64).
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads and writes nothing and never faults, whatever the
    // address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Scores of one tile: `s[r·KV_TILE + j] = scale · q[r]·k[j]` for query rows `r` of `q`
/// (`[n_rows, head_dim]`) and keys `j` of the transposed tile `k` (`[head_dim, KV_TILE]`);
/// `s` is `[n_rows, KV_TILE]`. Lengths are checked by [`Ops::attn_tile`].
/// Each kernel also fetches the lines of `ahead` (the next tile's keys, resp. values)
/// in steps over its loop ([`Ahead`]).
pub(crate) type QkFn = fn(q: &[f32], k: &[f32], scale: f32, s: &mut [f32], ahead: &mut Ahead);

/// Weighted values of one tile: `o[r] = alpha[r]·o[r] + Σ_j p[r·KV_TILE + j]·v[j]` for
/// keys `j` in `lanes`, value row `j` being `v[j·v_stride..][..head_dim_v]`; `o` is
/// `[n_rows, head_dim_v]`, `n_rows = alpha.len()`. Lengths are checked by
/// [`Ops::attn_tile`].
pub(crate) type PvFn = fn(
    p: &[f32],
    alpha: &[f32],
    v: &[f32],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    ahead: &mut Ahead,
);

/// [`QkFn`] over f16 keys.
pub(crate) type QkF16Fn = fn(q: &[f32], k: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead);

/// [`QkFn`] over Q8_0 keys (`qs` `[head_dim, KV_TILE]`, `d` `[head_dim / 32, KV_TILE]`).
pub(crate) type QkQ8Fn =
    fn(q: &[f32], qs: &[i8], d: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead);

/// [`PvFn`] over f16 values.
pub(crate) type PvF16Fn = fn(
    p: &[f32],
    alpha: &[f32],
    v: &[u16],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    ahead: &mut Ahead,
);

/// [`PvFn`] over Q8_0 values: row `j` is `qs[j·v_stride..]` with scales
/// `d[j·v_stride / 32..]`.
pub(crate) type PvQ8Fn = fn(
    p: &[f32],
    alpha: &[f32],
    qs: &[i8],
    d: &[u16],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    ahead: &mut Ahead,
);

/// One tile of one KV head's cached keys and values.
#[derive(Debug, Clone, Copy)]
pub struct KvTile<'a> {
    /// `[head_dim_k, KV_TILE]`: `k[d·KV_TILE + j]` is dimension `d` of key `j`.
    pub k: KvData<'a>,
    /// Value row `j` is `v[j·v_stride..][..head_dim_v]` (rows past the visible keys of
    /// every query row are never read).
    pub v: KvData<'a>,
    /// Elements from one value row to the next (a multiple of 32 for Q8_0).
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
    /// does). `next`, the tile the caller will pass next, is fetched into cache while
    /// this one is worked on ([`Ahead`]).
    ///
    /// # Panics
    /// When the lengths do not describe the same rows and head sizes, or `tile.v` is too
    /// short for a visible value row.
    pub fn attn_tile(
        &self,
        q: &[f32],
        scale: f32,
        tile: &KvTile<'_>,
        next: Option<&KvTile<'_>>,
        vis: &[(usize, usize)],
        st: &mut FlashRows<'_>,
    ) {
        const T: usize = KV_TILE;
        const B: usize = Q8_0_BLOCK;
        let n_rows = st.m.len();
        let hd_k = tile.k.len() / T;
        if let KvData::Q8_0 { d, .. } = tile.k {
            assert!(
                hd_k.is_multiple_of(B) && d.len() == hd_k / B * T,
                "attn_tile: Q8_0 key scales"
            );
        }
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
        if let KvData::Q8_0 { d, .. } = tile.v {
            assert!(
                hd_v.is_multiple_of(B)
                    && tile.v_stride.is_multiple_of(B)
                    && ((hi_all - 1) * tile.v_stride + hd_v) / B <= d.len(),
                "attn_tile: Q8_0 value scales"
            );
        }

        let (mut ahead_k, mut ahead_v) = match next {
            Some(t) => {
                t.prefetch_scales();
                t.ahead()
            }
            None => Default::default(),
        };
        let ak = &mut ahead_k;
        match tile.k {
            KvData::F32(k) => (self.attn_qk)(q, k, scale, st.s, ak),
            KvData::F16(k) => (self.attn_qk_f16)(q, k, scale, st.s, ak),
            KvData::Q8_0 { qs, d } => (self.attn_qk_q8_0)(q, qs, d, scale, st.s, ak),
        }
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
        let (p, alpha, lanes, o) = (&*st.s, &*st.alpha, (lo_all, hi_all), &mut *st.o);
        let (vs, av) = (tile.v_stride, &mut ahead_v);
        match tile.v {
            KvData::F32(v) => (self.attn_pv)(p, alpha, v, vs, lanes, o, av),
            KvData::F16(v) => (self.attn_pv_f16)(p, alpha, v, vs, lanes, o, av),
            KvData::Q8_0 { qs, d } => (self.attn_pv_q8_0)(p, alpha, qs, d, vs, lanes, o, av),
        }
    }
}

/// Adds the state `(m2, l2, o2)` of one query row's pass over later keys to `(m, l, o)`,
/// its state over the keys before them: the larger maximum stays and the other side is
/// scaled by `e^(its maximum - the larger)`. A side that saw no key (`-inf`) changes
/// nothing, exactly, so passes over key ranges a row may not see never move its result.
pub fn flash_merge(m: &mut f32, l: &mut f32, o: &mut [f32], (m2, l2, o2): (f32, f32, &[f32])) {
    if m2 == f32::NEG_INFINITY {
        return;
    }
    if *m == f32::NEG_INFINITY {
        (*m, *l) = (m2, l2);
        o.copy_from_slice(o2);
    } else if m2 <= *m {
        let c = (m2 - *m).exp();
        *l += c * l2;
        o.iter_mut().zip(o2).for_each(|(y, &x)| *y += c * x);
    } else {
        let c = (*m - m2).exp();
        (*m, *l) = (m2, c * *l + l2);
        o.iter_mut().zip(o2).for_each(|(y, &x)| *y = c * *y + x);
    }
}

/// Writes the attention output of one query row from the states of its passes over
/// consecutive parts of its keys (`(m, l, o)` each, as [`FlashRows`] left them, in key
/// order): the states merged left to right ([`flash_merge`]), then `o / l`. A row that
/// saw no key becomes zeros (as a fully masked softmax row in Hearth).
pub fn flash_finish<'a>(parts: impl Iterator<Item = (f32, f32, &'a [f32])>, out: &mut [f32]) {
    let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
    out.fill(0.0);
    for part in parts {
        flash_merge(&mut m, &mut l, out, part);
    }
    if l > 0.0 {
        let inv = 1.0 / l;
        out.iter_mut().for_each(|y| *y *= inv);
    }
}

/// The scalar reference of [`QkFn`]: products rounded, then added in order of `d`. The
/// scalar kernels fetch `ahead` all at once, first.
pub fn qk(q: &[f32], k: &[f32], scale: f32, s: &mut [f32], ahead: &mut Ahead) {
    const T: usize = KV_TILE;
    let hd = k.len() / T;
    ahead.take(usize::MAX);
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
    ahead: &mut Ahead,
) {
    let hd_v = o.len() / alpha.len();
    ahead.take(usize::MAX);
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

/// The first `n_dims` dimensions of a tile of keys (`k`: `[head_dim_k, KV_TILE]`,
/// dimension-major, as [`KvTile::k`]) as value rows in f32: `out[j·n_dims + d]`
/// (`[KV_TILE, n_dims]`). Multi-head Latent Attention caches one latent row per token
/// that serves as both key and value, so a tile's values are its keys transposed; this
/// is done once per tile and shared by every query row that reads it. `tmp` holds
/// `n_dims · KV_TILE` floats: the keys widened first (f16 through `half`'s converter,
/// which uses F16C where the CPU has it), then transposed, so that both passes are
/// plain loops the compiler vectorizes.
///
/// # Panics
/// When `k` holds fewer than `n_dims` dimensions or a buffer is short.
pub fn keys_to_values(k: &KvData<'_>, n_dims: usize, tmp: &mut [f32], out: &mut [f32]) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    const T: usize = KV_TILE;
    let n = n_dims * T;
    let (tmp, out) = (&mut tmp[..n], &mut out[..n]);
    match *k {
        KvData::F32(x) => tmp.copy_from_slice(&x[..n]),
        KvData::F16(x) => {
            let x: &[half::f16] = x[..n].reinterpret_cast();
            x.convert_to_f32_slice(tmp);
        }
        KvData::Q8_0 { qs, d } => {
            for (b, (t, q)) in tmp
                .chunks_exact_mut(Q8_0_BLOCK * T)
                .zip(qs[..n].chunks_exact(Q8_0_BLOCK * T))
                .enumerate()
            {
                let mut scale = [0.0f32; T];
                for (s, &h) in scale.iter_mut().zip(&d[b * T..][..T]) {
                    *s = f16_to_f32(h);
                }
                for (t, q) in t.chunks_exact_mut(T).zip(q.chunks_exact(T)) {
                    for ((t, &q), &s) in t.iter_mut().zip(q).zip(&scale) {
                        *t = q as f32 * s;
                    }
                }
            }
        }
    }
    for (j, row) in out.chunks_exact_mut(n_dims).enumerate() {
        for (d, o) in row.iter_mut().enumerate() {
            *o = tmp[d * T + j];
        }
    }
}

/// An f16 bit pattern widened to f32 (exact).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// `x` rounded to the nearest f16 (ties to even, as F16C's `vcvtps2ph` and ggml's
/// `GGML_FP32_TO_FP16`), as bits.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The scalar reference of [`QkF16Fn`]: each key widened to f32, then as [`qk`].
pub fn qk_f16(q: &[f32], k: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead) {
    const T: usize = KV_TILE;
    ahead.take(usize::MAX);
    qk_cols(q, k.len() / T, scale, s, |d, col| {
        for (c, &h) in col.iter_mut().zip(&k[d * T..][..T]) {
            *c = f16_to_f32(h);
        }
    });
}

/// The scalar reference of [`QkQ8Fn`]: each key element dequantized (`q as f32 · d`,
/// one rounding), then as [`qk`].
pub fn qk_q8_0(q: &[f32], qs: &[i8], d: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead) {
    const T: usize = KV_TILE;
    ahead.take(usize::MAX);
    qk_cols(q, qs.len() / T, scale, s, |dim, col| {
        let x = &qs[dim * T..][..T];
        let sc = &d[dim / Q8_0_BLOCK * T..][..T];
        for ((c, &x), &h) in col.iter_mut().zip(x).zip(sc) {
            *c = x as f32 * f16_to_f32(h);
        }
    });
}

/// [`qk`] with dimension `d` of the tile's keys written into `col` by `key`.
fn qk_cols(
    q: &[f32],
    hd: usize,
    scale: f32,
    s: &mut [f32],
    key: impl Fn(usize, &mut [f32; KV_TILE]),
) {
    const T: usize = KV_TILE;
    let mut col = [0.0f32; T];
    for (qr, sr) in q.chunks_exact(hd).zip(s.chunks_exact_mut(T)) {
        let mut acc = [0.0f32; T];
        for (d, &qd) in qr.iter().enumerate() {
            key(d, &mut col);
            for (a, &kj) in acc.iter_mut().zip(&col) {
                *a += qd * kj;
            }
        }
        for (s, a) in sr.iter_mut().zip(acc) {
            *s = a * scale;
        }
    }
}

/// The scalar reference of [`PvF16Fn`]: each value widened to f32, then as [`pv`].
pub fn pv_f16(
    p: &[f32],
    alpha: &[f32],
    v: &[u16],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    ahead: &mut Ahead,
) {
    let hd_v = o.len() / alpha.len();
    ahead.take(usize::MAX);
    pv_cols_f16(p, alpha, v, v_stride, lanes, o, hd_v, 0);
}

/// [`pv_f16`] on the columns `c0..hd_v` of every row only (the SIMD versions' tails).
#[allow(clippy::too_many_arguments)]
fn pv_cols_f16(
    p: &[f32],
    alpha: &[f32],
    v: &[u16],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    hd_v: usize,
    c0: usize,
) {
    pv_cols_with(p, alpha, lanes, o, hd_v, c0, |j, c| {
        f16_to_f32(v[j * v_stride + c])
    });
}

/// The scalar reference of [`PvQ8Fn`]: each value dequantized (`q as f32 · d`), then as
/// [`pv`].
#[allow(clippy::too_many_arguments)]
pub fn pv_q8_0(
    p: &[f32],
    alpha: &[f32],
    qs: &[i8],
    d: &[u16],
    v_stride: usize,
    lanes: (usize, usize),
    o: &mut [f32],
    ahead: &mut Ahead,
) {
    let hd_v = o.len() / alpha.len();
    let d_stride = v_stride / Q8_0_BLOCK;
    ahead.take(usize::MAX);
    pv_cols_with(p, alpha, lanes, o, hd_v, 0, |j, c| {
        qs[j * v_stride + c] as f32 * f16_to_f32(d[j * d_stride + c / Q8_0_BLOCK])
    });
}

/// [`pv_cols`] with value `(j, c)` (key `j`, column `c`) given by `val`.
fn pv_cols_with(
    p: &[f32],
    alpha: &[f32],
    (lo, hi): (usize, usize),
    o: &mut [f32],
    hd_v: usize,
    c0: usize,
    val: impl Fn(usize, usize) -> f32,
) {
    const T: usize = KV_TILE;
    for ((orow, &a), pr) in o.chunks_exact_mut(hd_v).zip(alpha).zip(p.chunks_exact(T)) {
        let orow = &mut orow[c0..];
        if a != 1.0 {
            orow.iter_mut().for_each(|y| *y *= a);
        }
        for (j, &w) in pr.iter().enumerate().take(hi).skip(lo) {
            for (c, y) in (c0..).zip(orow.iter_mut()) {
                *y += w * val(j, c);
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
            ops.attn_qk_f16 = x86::qk_f16_avx2;
            ops.attn_pv_f16 = x86::pv_f16_avx2;
            ops.attn_qk_q8_0 = x86::qk_q8_0_avx2;
            ops.attn_pv_q8_0 = x86::pv_q8_0_avx2;
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            ops.attn_qk = x86::qk_avx512;
            ops.attn_pv = x86::pv_avx512;
            ops.attn_qk_f16 = x86::qk_f16_avx512;
            ops.attn_pv_f16 = x86::pv_f16_avx512;
            ops.attn_qk_q8_0 = x86::qk_q8_0_avx512;
            ops.attn_pv_q8_0 = x86::pv_q8_0_avx512;
        }
        _ => {}
    }
}

/// The x86-64 versions: AVX2+FMA+F16C (a tile's 16 scores in two vectors) and AVX-512F
/// (one).
///
/// Both keep a block of query rows' accumulators in registers across a whole head
/// dimension (QK) or a block of rows × output columns across the tile's keys (PV), so
/// that each key or value vector loaded serves several rows. Raw-pointer loads are used
/// in the inner loops (bounds are checked once per kernel call, as the `SAFETY` notes
/// say): per-element slice checks there cost as much as the arithmetic.
///
/// One generic kernel per level serves every stored type: a loader (`Keys`, `Vals`)
/// reads a vector of keys or values in the stored type and widens it to f32 in
/// registers, so the f16 and Q8_0 kernels do the same fused operations in the same order
/// as the f32 ones on the same (widened) numbers.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{pv_cols, pv_cols_f16, Ahead, KV_TILE as T, Q8_0_BLOCK as B};

    /// Defines the plain-`fn` wrappers the `Ops` table stores.
    macro_rules! wrappers {
        ($($name:ident = $kernel:path, ($($arg:ident: $ty:ty),*);)*) => {$(
            #[allow(clippy::too_many_arguments)]
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: a `#[target_feature]` kernel only needs a CPU with its
                // features. These wrappers reach an `Ops` table only through
                // `register`, which `Ops::for_level` calls only after
                // `Level::is_supported` confirmed AVX2+FMA+F16C (resp. AVX-512F on top).
                unsafe { $kernel($($arg),*) }
            }
        )*};
    }

    wrappers! {
        qk_avx2 = avx2::qk, (q: &[f32], k: &[f32], scale: f32, s: &mut [f32], ahead: &mut Ahead);
        pv_avx2 = avx2::pv, (p: &[f32], alpha: &[f32], v: &[f32], v_stride: usize,
            lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
        qk_f16_avx2 = avx2::qk_f16, (q: &[f32], k: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead);
        pv_f16_avx2 = avx2::pv_f16, (p: &[f32], alpha: &[f32], v: &[u16], v_stride: usize,
            lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
        qk_q8_0_avx2 = avx2::qk_q8_0, (q: &[f32], qs: &[i8], d: &[u16], scale: f32,
            s: &mut [f32], ahead: &mut Ahead);
        pv_q8_0_avx2 = avx2::pv_q8_0, (p: &[f32], alpha: &[f32], qs: &[i8], d: &[u16],
            v_stride: usize, lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
        qk_avx512 = avx512::qk, (q: &[f32], k: &[f32], scale: f32, s: &mut [f32], ahead: &mut Ahead);
        pv_avx512 = avx512::pv, (p: &[f32], alpha: &[f32], v: &[f32], v_stride: usize,
            lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
        qk_f16_avx512 = avx512::qk_f16, (q: &[f32], k: &[u16], scale: f32, s: &mut [f32], ahead: &mut Ahead);
        pv_f16_avx512 = avx512::pv_f16, (p: &[f32], alpha: &[f32], v: &[u16],
            v_stride: usize, lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
        qk_q8_0_avx512 = avx512::qk_q8_0, (q: &[f32], qs: &[i8], d: &[u16], scale: f32,
            s: &mut [f32], ahead: &mut Ahead);
        pv_q8_0_avx512 = avx512::pv_q8_0, (p: &[f32], alpha: &[f32], qs: &[i8], d: &[u16],
            v_stride: usize, lanes: (usize, usize), o: &mut [f32], ahead: &mut Ahead);
    }

    /// Checks the shapes the kernels' raw loads rely on (`k_len` stored key elements);
    /// returns `(n_rows, hd_k)`.
    fn qk_shape(q: &[f32], k_len: usize, s: &[f32]) -> (usize, usize) {
        let (n_rows, hd) = (s.len() / T, k_len / T);
        assert!(
            s.len() == n_rows * T && k_len == hd * T && q.len() >= n_rows * hd,
            "attention qk: shapes"
        );
        (n_rows, hd)
    }

    /// [`qk_shape`] for Q8_0 keys, with their scales.
    fn qk_shape_q8(q: &[f32], qs: &[i8], d: &[u16], s: &[f32]) -> (usize, usize) {
        let (n_rows, hd) = qk_shape(q, qs.len(), s);
        assert!(
            hd.is_multiple_of(B) && d.len() == hd / B * T,
            "attention qk: Q8_0 scales"
        );
        (n_rows, hd)
    }

    /// Checks the shapes the kernels' raw loads rely on (`v_len` stored value
    /// elements); returns `(n_rows, hd_v)`.
    fn pv_shape(
        p: &[f32],
        alpha: &[f32],
        v_len: usize,
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
                && (lo >= hi || (hi - 1) * v_stride + hd_v <= v_len),
            "attention pv: shapes"
        );
        (n_rows, hd_v)
    }

    /// [`pv_shape`] for Q8_0 values, with their scales.
    fn pv_shape_q8(
        p: &[f32],
        alpha: &[f32],
        qs: &[i8],
        d: &[u16],
        v_stride: usize,
        (lo, hi): (usize, usize),
        o: &[f32],
    ) -> (usize, usize) {
        let (n_rows, hd_v) = pv_shape(p, alpha, qs.len(), v_stride, (lo, hi), o);
        assert!(
            hd_v.is_multiple_of(B)
                && v_stride.is_multiple_of(B)
                && (lo >= hi || ((hi - 1) * v_stride + hd_v) / B <= d.len()),
            "attention pv: Q8_0 scales"
        );
        (n_rows, hd_v)
    }

    mod avx2 {
        use std::arch::x86_64::*;

        use super::{
            pv_cols, pv_cols_f16, pv_shape, pv_shape_q8, qk_shape, qk_shape_q8, Ahead, B, T,
        };

        /// Keys of a tile as [`qk_rows`] reads them.
        trait Keys: Copy {
            /// Keys `8j..8j + 8` of dimension `d`, as f32.
            ///
            /// # Safety
            /// `d < hd` and `8j + 8 <= T` for the tile the loader was made from, whose
            /// shape the kernel checked; the CPU has AVX2 and F16C.
            unsafe fn load(self, d: usize, j: usize) -> __m256;
        }

        /// Values of a tile as [`pv_block`] reads them.
        trait Vals: Copy {
            /// Columns `c..c + 8` of value row `l`, as f32.
            ///
            /// # Safety
            /// `l` is a row the kernel's shape check covers and `c + 8 <= hd_v`; the
            /// CPU has AVX2 and F16C.
            unsafe fn load(self, l: usize, c: usize) -> __m256;
        }

        #[derive(Clone, Copy)]
        struct F32Keys(*const f32);
        #[derive(Clone, Copy)]
        struct F16Keys(*const u16);
        #[derive(Clone, Copy)]
        struct Q8Keys(*const i8, *const u16);
        #[derive(Clone, Copy)]
        struct F32Vals(*const f32, usize);
        #[derive(Clone, Copy)]
        struct F16Vals(*const u16, usize);
        #[derive(Clone, Copy)]
        struct Q8Vals(*const i8, *const u16, usize);

        impl Keys for F32Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m256 {
                // SAFETY: in bounds by the caller's contract; `loadu` needs no alignment.
                unsafe { _mm256_loadu_ps(self.0.add(d * T + 8 * j)) }
            }
        }

        impl Keys for F16Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m256 {
                // SAFETY: 8 halves (16 bytes) in bounds by the caller's contract.
                unsafe { _mm256_cvtph_ps(_mm_loadu_si128(self.0.add(d * T + 8 * j).cast())) }
            }
        }

        impl Keys for Q8Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m256 {
                // SAFETY: 8 int8 at `d·T + 8j` and 8 scales at `(d / 32)·T + 8j`, in
                // bounds by the caller's contract (`qk_shape_q8`).
                unsafe {
                    let x = _mm_loadl_epi64(self.0.add(d * T + 8 * j).cast());
                    let x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x));
                    let sc = _mm256_cvtph_ps(_mm_loadu_si128(self.1.add(d / B * T + 8 * j).cast()));
                    _mm256_mul_ps(x, sc)
                }
            }
        }

        impl Vals for F32Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m256 {
                // SAFETY: in bounds by the caller's contract.
                unsafe { _mm256_loadu_ps(self.0.add(l * self.1 + c)) }
            }
        }

        impl Vals for F16Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m256 {
                // SAFETY: in bounds by the caller's contract.
                unsafe { _mm256_cvtph_ps(_mm_loadu_si128(self.0.add(l * self.1 + c).cast())) }
            }
        }

        impl Vals for Q8Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m256 {
                // SAFETY: 8 int8 of row `l` and its scale of block `c / 32`, in bounds
                // by the caller's contract (`pv_shape_q8`: `hd_v` and the stride are
                // multiples of 32, so the 8 columns share one block).
                unsafe {
                    let x = _mm_loadl_epi64(self.0.add(l * self.2 + c).cast());
                    let x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x));
                    let h = *self.1.add((l * self.2 + c) / B);
                    let sc = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))));
                    _mm256_mul_ps(x, _mm256_set1_ps(sc))
                }
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn qk(
            q: &[f32],
            k: &[f32],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape(q, k.len(), s);
            qk_all(q, F32Keys(k.as_ptr()), (n_rows, hd), scale, s, ahead);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn qk_f16(
            q: &[f32],
            k: &[u16],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape(q, k.len(), s);
            qk_all(q, F16Keys(k.as_ptr()), (n_rows, hd), scale, s, ahead);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn qk_q8_0(
            q: &[f32],
            qs: &[i8],
            d: &[u16],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape_q8(q, qs, d, s);
            qk_all(
                q,
                Q8Keys(qs.as_ptr(), d.as_ptr()),
                (n_rows, hd),
                scale,
                s,
                ahead,
            );
        }

        /// Scores of every row, in blocks of [`RB`] rows.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn qk_all<K: Keys>(
            q: &[f32],
            k: K,
            (n_rows, hd): (usize, usize),
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            // The next tile's lines over the first block's dimensions, 16 at a time.
            ahead.pace(hd.div_ceil(16));
            let mut r = 0;
            while r + RB <= n_rows {
                qk_rows::<K, RB>(q, k, hd, r, scale, s, ahead);
                r += RB;
            }
            // The rest in one block, so that each key vector is loaded (and widened)
            // once more, not once per row.
            match n_rows - r {
                3 => qk_rows::<K, 3>(q, k, hd, r, scale, s, ahead),
                2 => qk_rows::<K, 2>(q, k, hd, r, scale, s, ahead),
                1 => qk_rows::<K, 1>(q, k, hd, r, scale, s, ahead),
                _ => {}
            }
        }

        /// Vectors of 8 scores in a tile.
        const NK: usize = T / 8;
        /// Rows per block of [`qk`]: eight accumulators, enough independent FMA chains
        /// to cover the FMA latency, and registers to spare for the key vectors.
        const RB: usize = 8 / NK;

        /// Scores of rows `r0..r0 + R`: `R·NK` accumulators of 8 keys.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn qk_rows<K: Keys, const R: usize>(
            q: &[f32],
            k: K,
            hd: usize,
            r0: usize,
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let q = &q[r0 * hd..(r0 + R) * hd];
            let qp = q.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); NK]; R];
            for d in 0..hd {
                if d % 16 == 0 {
                    ahead.step();
                }
                let mut kv = [_mm256_setzero_ps(); NK];
                for (j, x) in kv.iter_mut().enumerate() {
                    // SAFETY: `d < hd` and `8j + 8 <= T`, the tile's shape checked by
                    // the entry point; AVX2 and F16C are enabled here.
                    *x = unsafe { k.load(d, j) };
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

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn pv(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v.len(), v_stride, lanes, o);
            let n_cols = pv_all(
                p,
                alpha,
                F32Vals(v.as_ptr(), v_stride),
                lanes,
                o,
                (n_rows, hd_v),
                ahead,
            );
            if n_cols < hd_v {
                pv_cols(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn pv_f16(
            p: &[f32],
            alpha: &[f32],
            v: &[u16],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v.len(), v_stride, lanes, o);
            let n_cols = pv_all(
                p,
                alpha,
                F16Vals(v.as_ptr(), v_stride),
                lanes,
                o,
                (n_rows, hd_v),
                ahead,
            );
            if n_cols < hd_v {
                pv_cols_f16(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(in super::super) fn pv_q8_0(
            p: &[f32],
            alpha: &[f32],
            qs: &[i8],
            d: &[u16],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape_q8(p, alpha, qs, d, v_stride, lanes, o);
            // `hd_v` is a multiple of 32, so every column is in a whole vector.
            let vals = Q8Vals(qs.as_ptr(), d.as_ptr(), v_stride);
            pv_all(p, alpha, vals, lanes, o, (n_rows, hd_v), ahead);
        }

        /// Every row's columns in whole vectors; returns how many columns that is (the
        /// caller does the rest).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn pv_all<V: Vals>(
            p: &[f32],
            alpha: &[f32],
            v: V,
            lanes: (usize, usize),
            o: &mut [f32],
            (n_rows, hd_v): (usize, usize),
            ahead: &mut Ahead,
        ) -> usize {
            let n_cols = hd_v / 8 * 8;
            // The next tile's lines over the first block of rows, one step per value
            // row of each block of 16 columns.
            ahead.pace(n_cols.div_ceil(16) * lanes.1.saturating_sub(lanes.0));
            let mut r = 0;
            while r < n_rows {
                // Blocks of 4 rows, and the rest in one (each value vector is loaded
                // and widened once per block).
                let rows = (n_rows - r).min(4);
                let mut c = 0;
                while c + 16 <= n_cols {
                    match rows {
                        4 => pv_block::<V, 4, 2>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        3 => pv_block::<V, 3, 2>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        2 => pv_block::<V, 2, 2>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        _ => pv_block::<V, 1, 2>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                    }
                    c += 16;
                }
                while c < n_cols {
                    match rows {
                        4 => pv_block::<V, 4, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        3 => pv_block::<V, 3, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        2 => pv_block::<V, 2, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        _ => pv_block::<V, 1, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                    }
                    c += 8;
                }
                r += rows;
            }
            n_cols
        }

        /// Rows `r0..r0 + R`, columns `c0..c0 + 8·NV`.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn pv_block<V: Vals, const R: usize, const NV: usize>(
            p: &[f32],
            alpha: &[f32],
            v: V,
            (lo, hi): (usize, usize),
            o: &mut [f32],
            hd_v: usize,
            (r0, c0): (usize, usize),
            ahead: &mut Ahead,
        ) {
            let p = &p[r0 * T..(r0 + R) * T];
            let (pp, op) = (p.as_ptr(), o.as_mut_ptr());
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
                ahead.step();
                let mut vv = [_mm256_setzero_ps(); NV];
                for (j, x) in vv.iter_mut().enumerate() {
                    // SAFETY: `l < hi`, a row the entry point's shape check covers, and
                    // `c0 + 8j + 8 <= hd_v`; AVX2 and F16C are enabled here.
                    *x = unsafe { v.load(l, c0 + 8 * j) };
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

        use super::{
            pv_cols, pv_cols_f16, pv_shape, pv_shape_q8, qk_shape, qk_shape_q8, Ahead, B, T,
        };

        /// Keys of a tile as [`qk_rows`] reads them.
        trait Keys: Copy {
            /// Keys `16j..16j + 16` of dimension `d`, as f32.
            ///
            /// # Safety
            /// `d < hd` and `16j + 16 <= T` for the tile the loader was made from, whose
            /// shape the kernel checked; the CPU has AVX-512F and F16C.
            unsafe fn load(self, d: usize, j: usize) -> __m512;
        }

        /// Values of a tile as [`pv_block`] reads them.
        trait Vals: Copy {
            /// Columns `c..c + 16` of value row `l`, as f32.
            ///
            /// # Safety
            /// `l` is a row the kernel's shape check covers and `c + 16 <= hd_v`; the
            /// CPU has AVX-512F and F16C.
            unsafe fn load(self, l: usize, c: usize) -> __m512;
        }

        #[derive(Clone, Copy)]
        struct F32Keys(*const f32);
        #[derive(Clone, Copy)]
        struct F16Keys(*const u16);
        #[derive(Clone, Copy)]
        struct Q8Keys(*const i8, *const u16);
        #[derive(Clone, Copy)]
        struct F32Vals(*const f32, usize);
        #[derive(Clone, Copy)]
        struct F16Vals(*const u16, usize);
        #[derive(Clone, Copy)]
        struct Q8Vals(*const i8, *const u16, usize);

        impl Keys for F32Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m512 {
                // SAFETY: in bounds by the caller's contract; `loadu` needs no alignment.
                unsafe { _mm512_loadu_ps(self.0.add(d * T + 16 * j)) }
            }
        }

        impl Keys for F16Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m512 {
                // SAFETY: 16 halves (32 bytes) in bounds by the caller's contract.
                unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(self.0.add(d * T + 16 * j).cast())) }
            }
        }

        impl Keys for Q8Keys {
            #[inline(always)]
            unsafe fn load(self, d: usize, j: usize) -> __m512 {
                // SAFETY: 16 int8 at `d·T + 16j` and 16 scales at `(d / 32)·T + 16j`,
                // in bounds by the caller's contract (`qk_shape_q8`).
                unsafe {
                    let x = _mm_loadu_si128(self.0.add(d * T + 16 * j).cast());
                    let x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x));
                    let sc =
                        _mm512_cvtph_ps(_mm256_loadu_si256(self.1.add(d / B * T + 16 * j).cast()));
                    _mm512_mul_ps(x, sc)
                }
            }
        }

        impl Vals for F32Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m512 {
                // SAFETY: in bounds by the caller's contract.
                unsafe { _mm512_loadu_ps(self.0.add(l * self.1 + c)) }
            }
        }

        impl Vals for F16Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m512 {
                // SAFETY: in bounds by the caller's contract.
                unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(self.0.add(l * self.1 + c).cast())) }
            }
        }

        impl Vals for Q8Vals {
            #[inline(always)]
            unsafe fn load(self, l: usize, c: usize) -> __m512 {
                // SAFETY: 16 int8 of row `l` and its scale of block `c / 32`, in bounds
                // by the caller's contract (`pv_shape_q8`: `hd_v` and the stride are
                // multiples of 32, so the 16 columns share one block).
                unsafe {
                    let x = _mm_loadu_si128(self.0.add(l * self.2 + c).cast());
                    let x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x));
                    let h = *self.1.add((l * self.2 + c) / B);
                    let sc = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))));
                    _mm512_mul_ps(x, _mm512_set1_ps(sc))
                }
            }
        }

        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn qk(
            q: &[f32],
            k: &[f32],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape(q, k.len(), s);
            qk_all(q, F32Keys(k.as_ptr()), (n_rows, hd), scale, s, ahead);
        }

        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn qk_f16(
            q: &[f32],
            k: &[u16],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape(q, k.len(), s);
            qk_all(q, F16Keys(k.as_ptr()), (n_rows, hd), scale, s, ahead);
        }

        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn qk_q8_0(
            q: &[f32],
            qs: &[i8],
            d: &[u16],
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd) = qk_shape_q8(q, qs, d, s);
            qk_all(
                q,
                Q8Keys(qs.as_ptr(), d.as_ptr()),
                (n_rows, hd),
                scale,
                s,
                ahead,
            );
        }

        /// Scores of every row, in blocks of [`RB`] rows and one of the rest.
        #[inline]
        #[target_feature(enable = "avx512f,f16c")]
        fn qk_all<K: Keys>(
            q: &[f32],
            k: K,
            (n_rows, hd): (usize, usize),
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            // The next tile's lines over the first block's dimensions, 16 at a time.
            ahead.pace(hd.div_ceil(16));
            let mut r = 0;
            while r + RB <= n_rows {
                qk_rows::<K, RB>(q, k, hd, r, scale, s, ahead);
                r += RB;
            }
            // The rest in one block (R1-Distill-Qwen's 6 query heads per KV head: one
            // pass over the keys, not 4 + 1 + 1).
            match n_rows - r {
                7 => qk_rows::<K, 7>(q, k, hd, r, scale, s, ahead),
                6 => qk_rows::<K, 6>(q, k, hd, r, scale, s, ahead),
                5 => qk_rows::<K, 5>(q, k, hd, r, scale, s, ahead),
                4 => qk_rows::<K, 4>(q, k, hd, r, scale, s, ahead),
                3 => qk_rows::<K, 3>(q, k, hd, r, scale, s, ahead),
                2 => qk_rows::<K, 2>(q, k, hd, r, scale, s, ahead),
                1 => qk_rows::<K, 1>(q, k, hd, r, scale, s, ahead),
                _ => {}
            }
        }

        /// Vectors of 16 scores in a tile.
        const NK: usize = T / 16;
        /// Rows per block of [`qk`]: eight accumulators (see `avx2`).
        const RB: usize = 8 / NK;

        /// Scores of rows `r0..r0 + R`: `R·NK` accumulators of 16 keys.
        #[inline]
        #[target_feature(enable = "avx512f,f16c")]
        fn qk_rows<K: Keys, const R: usize>(
            q: &[f32],
            k: K,
            hd: usize,
            r0: usize,
            scale: f32,
            s: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let q = &q[r0 * hd..(r0 + R) * hd];
            let qp = q.as_ptr();
            let mut acc = [[_mm512_setzero_ps(); NK]; R];
            for d in 0..hd {
                if d % 16 == 0 {
                    ahead.step();
                }
                let mut kv = [_mm512_setzero_ps(); NK];
                for (j, x) in kv.iter_mut().enumerate() {
                    // SAFETY: `d < hd` and `16j + 16 <= T`, the tile's shape checked by
                    // the entry point; AVX-512F and F16C are enabled here.
                    *x = unsafe { k.load(d, j) };
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

        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn pv(
            p: &[f32],
            alpha: &[f32],
            v: &[f32],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v.len(), v_stride, lanes, o);
            let n_cols = pv_all(
                p,
                alpha,
                F32Vals(v.as_ptr(), v_stride),
                lanes,
                o,
                (n_rows, hd_v),
                ahead,
            );
            if n_cols < hd_v {
                pv_cols(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn pv_f16(
            p: &[f32],
            alpha: &[f32],
            v: &[u16],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape(p, alpha, v.len(), v_stride, lanes, o);
            let n_cols = pv_all(
                p,
                alpha,
                F16Vals(v.as_ptr(), v_stride),
                lanes,
                o,
                (n_rows, hd_v),
                ahead,
            );
            if n_cols < hd_v {
                pv_cols_f16(p, alpha, v, v_stride, lanes, o, hd_v, n_cols);
            }
        }

        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,f16c")]
        pub(in super::super) fn pv_q8_0(
            p: &[f32],
            alpha: &[f32],
            qs: &[i8],
            d: &[u16],
            v_stride: usize,
            lanes: (usize, usize),
            o: &mut [f32],
            ahead: &mut Ahead,
        ) {
            let (n_rows, hd_v) = pv_shape_q8(p, alpha, qs, d, v_stride, lanes, o);
            // `hd_v` is a multiple of 32, so every column is in a whole vector.
            let vals = Q8Vals(qs.as_ptr(), d.as_ptr(), v_stride);
            pv_all(p, alpha, vals, lanes, o, (n_rows, hd_v), ahead);
        }

        /// Every row's columns in whole vectors; returns how many columns that is (the
        /// caller does the rest).
        #[inline]
        #[target_feature(enable = "avx512f,f16c")]
        fn pv_all<V: Vals>(
            p: &[f32],
            alpha: &[f32],
            v: V,
            lanes: (usize, usize),
            o: &mut [f32],
            (n_rows, hd_v): (usize, usize),
            ahead: &mut Ahead,
        ) -> usize {
            let n_cols = hd_v / 16 * 16;
            // The next tile's lines over the first block of rows, one step per value
            // row of each block of 64 columns.
            ahead.pace(n_cols.div_ceil(64) * lanes.1.saturating_sub(lanes.0));
            let mut r = 0;
            while r < n_rows {
                // Blocks of 4 rows, and the rest in one (each value vector is loaded
                // and widened once per block).
                let rows = (n_rows - r).min(4);
                let mut c = 0;
                while c + 64 <= n_cols {
                    match rows {
                        4 => pv_block::<V, 4, 4>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        3 => pv_block::<V, 3, 4>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        2 => pv_block::<V, 2, 4>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        _ => pv_block::<V, 1, 4>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                    }
                    c += 64;
                }
                while c < n_cols {
                    match rows {
                        4 => pv_block::<V, 4, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        3 => pv_block::<V, 3, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        2 => pv_block::<V, 2, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                        _ => pv_block::<V, 1, 1>(p, alpha, v, lanes, o, hd_v, (r, c), ahead),
                    }
                    c += 16;
                }
                r += rows;
            }
            n_cols
        }

        /// Rows `r0..r0 + R`, columns `c0..c0 + 16·NV`.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,f16c")]
        fn pv_block<V: Vals, const R: usize, const NV: usize>(
            p: &[f32],
            alpha: &[f32],
            v: V,
            (lo, hi): (usize, usize),
            o: &mut [f32],
            hd_v: usize,
            (r0, c0): (usize, usize),
            ahead: &mut Ahead,
        ) {
            let p = &p[r0 * T..(r0 + R) * T];
            let (pp, op) = (p.as_ptr(), o.as_mut_ptr());
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
                ahead.step();
                let mut vv = [_mm512_setzero_ps(); NV];
                for (j, x) in vv.iter_mut().enumerate() {
                    // SAFETY: `l < hi`, a row the entry point's shape check covers, and
                    // `c0 + 16j + 16 <= hd_v`; AVX-512F and F16C are enabled here.
                    *x = unsafe { v.load(l, c0 + 16 * j) };
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

#[cfg(test)]
mod tests {
    use super::Ahead;

    /// Every line `ahead` would fetch, in order.
    fn lines(mut ahead: Ahead) -> Vec<usize> {
        std::iter::from_fn(|| ahead.next_line()).collect()
    }

    /// The lines of `rows` rows of `row_bytes` bytes, `stride_bytes` apart, from `base`.
    fn want(base: usize, rows: usize, stride_bytes: usize, row_bytes: usize) -> Vec<usize> {
        (0..rows)
            .flat_map(|j| {
                let start = base + j * stride_bytes;
                (start & !63..start + row_bytes).step_by(64)
            })
            .collect()
    }

    #[test]
    fn ahead_visits_each_row_line_once() {
        let x = vec![0u16; 4096];
        let base = x.as_ptr() as usize;
        // Rows of 40 halves (80 bytes), 300 halves apart: each row starts anywhere in a
        // line and spans two or three of them.
        assert_eq!(lines(Ahead::rows(&x, 5, 300, 40)), want(base, 5, 600, 80));
        // A run (stride 0) is one row.
        assert_eq!(lines(Ahead::rows(&x, 5, 0, 4096)), want(base, 1, 0, 8192));
    }

    #[test]
    fn ahead_keeps_to_the_slice() {
        let x = vec![0u8; 1000];
        let base = x.as_ptr() as usize;
        // Rows of 100 bytes 300 apart: rows 0..4 end at 1000, a fifth would not fit.
        assert_eq!(lines(Ahead::rows(&x, 8, 300, 100)), want(base, 4, 300, 100));
        assert!(lines(Ahead::rows(&x, 1, 0, 1001)).is_empty());
        assert!(lines(Ahead::rows(&x, 3, 10, 0)).is_empty());
        assert!(lines(Ahead::default()).is_empty());
    }

    #[test]
    fn paced_steps_take_every_line() {
        let x = vec![0f32; 16 * 256];
        let all = lines(Ahead::rows(&x, 16, 256, 256)).len();
        for steps in [1, 7, 16, 64, 1000] {
            let mut ahead = Ahead::rows(&x, 16, 256, 256);
            ahead.pace(steps);
            for _ in 0..steps {
                ahead.step();
            }
            assert!(lines(ahead).is_empty(), "{steps} steps left lines");
            // Each step a share, not everything at once.
            let mut ahead = Ahead::rows(&x, 16, 256, 256);
            ahead.pace(steps);
            ahead.step();
            let share = all - lines(ahead).len();
            assert!(
                share <= (all + 16).div_ceil(steps),
                "{steps} steps: {share} at once"
            );
        }
    }
}
