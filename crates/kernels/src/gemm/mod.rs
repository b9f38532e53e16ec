//! Matrix × matrix products for many tokens at once (prompt processing, perplexity):
//! integer micro-kernels over weights decoded once per call.
//!
//! The row path of [`crate::matmul`] calls the format's dot kernel once per (row, token),
//! so every weight block is decoded again for every token; with hundreds of tokens that
//! decoding is most of the work. Here a tile of weight rows is decoded once into the
//! format-free shape of [`unpack`] (int8 values, a scale and a min per lane of 4 values),
//! and a micro-kernel multiplies [`MR`] rows with [`NR`] tokens at a time, so each weight
//! register is used `NR` times and each activation register `MR` times.
//!
//! Numerics: activations are quantized by the same quantizer as the row path (the
//! weight format's ggml activation type), so every integer product is the one llama.cpp
//! computes, and the integer sum of each lane of 4 products is exact. What differs from
//! the row path's dot is only the f32 side: each lane's sum is scaled by
//! `weight scale · activation scale` and accumulated per lane across the row, and the 16
//! lanes are added at the end (the row path scales per block and accumulates per block).
//! The difference is a few f32 roundings of the same terms.
//!
//! Layout, chosen for VNNI's `vpdpbusd` (unsigned bytes × signed bytes, 4 products per
//! 32-bit lane): activations are stored as `a + 128` (unsigned), and each weight lane
//! carries `corr = -128 · Σv`, the accumulator's starting value, which cancels the
//! offset exactly in integers.
//!
//! Memory: a panel of the call's activations (≈ 1.1 bytes per activation value, more for
//! formats with mins) and, per thread, one tile of [`TILE_ROWS`] × [`KC`] decoded weights
//! (4 bytes per value, 128 KiB): both in the caller's [`GemmScratch`], grown once.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod float;
#[cfg(target_arch = "x86_64")]
mod float_x86;
#[cfg(target_arch = "aarch64")]
mod neon;
mod panel;
mod reference;
pub(crate) mod unpack;
#[cfg(target_arch = "x86_64")]
mod unpack_avx2;
#[cfg(target_arch = "x86_64")]
mod vnni;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::dispatch::Level;
use crate::matmul::{SharedSlice, WeightMatrix};
use crate::pool::ThreadPool;
use crate::quant::TensorType;

pub use float::FloatMicroFn;
use panel::Panel;

/// Values per chunk: one 512-bit register of bytes.
pub const CHUNK: usize = 64;
/// Values per lane: `vpdpbusd` adds 4 byte products into each 32-bit lane.
pub const LANE: usize = 4;
/// Lanes per chunk.
pub const LANES: usize = CHUNK / LANE;
/// Weight rows per micro-kernel call.
pub const MR: usize = 4;
/// Tokens per micro-kernel call.
pub const NR: usize = 4;
/// Weight rows a thread decodes at once: a multiple of [`MR`].
const TILE_ROWS: usize = 16;
/// Columns a tile holds (a multiple of every block length, 256): with
/// [`TILE_ROWS`] rows, 4 bytes per value, the tile (128 KiB) stays in a core's L2 while every
/// token passes over it. Longer rows are done in several column blocks whose partial
/// sums are added into the output.
const KC: usize = 2048;

/// Fewest tokens worth a GEMM call: below this the row path's dots do as well (the
/// micro-kernel pads the tokens to a multiple of [`NR`]).
pub const MIN_TOKENS: usize = 16;

/// How a stretch of `n` values (a multiple of 32) is laid out for the micro-kernels of a
/// format whose scales each cover `run` values ([`unpack::scale_run`]).
///
/// The stretch is cut into *segments* of `R` runs (16, then what is left as 8, 4, 2; a
/// last single run is padded with a zero run to 2). A segment is `run · R / 64` chunks,
/// and each of its 16 lanes holds `4 · chunks` values of one run, 4 per chunk (lane `l`
/// of chunk `c`: bytes `64c + 4l..`): a lane's integer sum over the segment lies within
/// one run, with one scale, so the micro-kernel adds all of a segment's products in
/// integers and scales once per segment. Weights and activations of a product use the
/// same layout. With 16 runs a lane is a whole run (8 chunks for runs of 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segments {
    run: usize,
    /// Real runs (the stretch is `n_runs · run` values).
    n_runs: usize,
    /// Segments of 16 runs.
    n_full: usize,
    /// The shorter segments after them: runs in each.
    tail: [usize; 4],
    n_tail: usize,
}

impl Segments {
    pub(crate) fn new(n: usize, run: usize) -> Segments {
        let n_runs = n / run;
        let mut tail = [0; 4];
        let mut n_tail = 0;
        let mut left = n_runs % LANES;
        for r in [8, 4, 2] {
            if left >= r {
                tail[n_tail] = r;
                n_tail += 1;
                left -= r;
            }
        }
        if left == 1 {
            tail[n_tail] = 2;
            n_tail += 1;
        }
        Segments {
            run,
            n_runs,
            n_full: n_runs / LANES,
            tail,
            n_tail,
        }
    }

    /// Runs per segment, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::repeat_n(LANES, self.n_full).chain(self.tail[..self.n_tail].iter().copied())
    }

    /// Chunks in a segment of `runs` runs.
    pub(crate) fn chunks(&self, runs: usize) -> usize {
        self.run * runs / CHUNK
    }

    /// Values in the segments of 16 runs: column blocks start at multiples of it.
    fn full_len(&self) -> usize {
        self.run * LANES
    }

    /// Segments: each has one set of 16 lane scales.
    fn count(&self) -> usize {
        self.n_full + self.n_tail
    }

    /// Stored values, padding included.
    fn padded(&self) -> usize {
        self.iter().map(|r| self.chunks(r) * CHUNK).sum()
    }

    /// Copies `plain` (the stretch's values in column order) into `out` in this layout,
    /// calling `each(lane, k, values)` once per lane with the lane's values, which are
    /// contiguous in column order from column `k` (`lane` indexes the per-lane scales,
    /// 16 per segment).
    fn lay_out<T: Copy>(
        &self,
        plain: &[T],
        out: &mut [T],
        mut each: impl FnMut(usize, usize, &[T]),
    ) {
        let (mut k0, mut p0) = (0, 0);
        for (s, runs) in self.iter().enumerate() {
            let chunks = self.chunks(runs);
            let lanes_per_run = LANES / runs;
            for r in 0..runs {
                let k_run = k0 + r * self.run;
                if k_run >= plain.len() {
                    break; // the padding run of a last single run
                }
                for li in 0..lanes_per_run {
                    let lane = r * lanes_per_run + li;
                    let k = k_run + li * chunks * LANE;
                    let values = &plain[k..k + chunks * LANE];
                    for (c, q) in values.chunks_exact(LANE).enumerate() {
                        let at = p0 + c * CHUNK + lane * LANE;
                        out[at..at + LANE].copy_from_slice(q);
                    }
                    each(s * LANES + lane, k, values);
                }
            }
            k0 += runs * self.run;
            p0 += chunks * CHUNK;
        }
    }
}

/// One micro-kernel call's operands: [`MR`] weight rows and every token's activations,
/// laid out as `segs` says.
pub struct Micro<'a> {
    pub(crate) w: [WeightRow<'a>; MR],
    pub(crate) a: ActRows<'a>,
    pub(crate) segs: Segments,
    /// The largest `|v|` the weights' format can hold ([`unpack::v_max`]): kernels whose
    /// byte products saturate pick their path by it (only AVX2's, so far).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) v_max: u32,
}

/// A weight row: values, and per lane (16 per segment) `corr = -128 · Σv`, the scale and
/// the min.
#[derive(Clone, Copy)]
pub(crate) struct WeightRow<'a> {
    pub(crate) v: &'a [i8],
    pub(crate) corr: &'a [i32],
    pub(crate) scale: &'a [f32],
    pub(crate) min: &'a [f32],
}

/// The activation rows of a call (a multiple of [`NR`]): token `t`'s values `+ 128` at
/// `a[t·a_stride..]` (or, when `signed`, the values themselves as signed bytes), and at
/// `t·lane_stride` in `scale` and (formats with mins only) `sum` its per-lane scales and
/// `scale · Σa`.
#[derive(Clone, Copy)]
pub(crate) struct ActRows<'a> {
    pub(crate) a: &'a [u8],
    /// The values are stored as they are, not `+ 128`, and the weights' `corr` is not
    /// applied (see [`MicroKernel::unsigned_max`]).
    pub(crate) signed: bool,
    pub(crate) a_stride: usize,
    pub(crate) scale: &'a [f32],
    pub(crate) sum: &'a [f32],
    pub(crate) lane_stride: usize,
    pub(crate) n_tokens: usize,
}

impl Micro<'_> {
    /// Checks every slice's length against the layout (SIMD kernels read by pointer).
    fn check(&self, has_min: bool, out: &[f32], stride: usize) {
        let (n, lanes) = (self.segs.padded(), self.segs.count() * LANES);
        for w in &self.w {
            assert!(w.v.len() >= n && w.corr.len() >= lanes && w.scale.len() >= lanes);
            assert!(!has_min || w.min.len() >= lanes);
        }
        let a = &self.a;
        assert!(a.n_tokens.is_multiple_of(NR) && stride >= MR);
        assert!(a.n_tokens == 0 || out.len() >= (a.n_tokens - 1) * stride + MR);
        if let Some(last) = a.n_tokens.checked_sub(1) {
            assert!(a.a.len() >= last * a.a_stride + n);
            assert!(a.scale.len() >= last * a.lane_stride + lanes);
            assert!(!has_min || a.sum.len() >= last * a.lane_stride + lanes);
        }
    }
}

/// `out[t·stride + i] += Σ_k w_i[k] · a_t[k]` for one [`Micro`] (`stride ≥ MR`);
/// `has_min` says whether the weights' mins are to be subtracted.
pub type MicroFn = fn(&Micro<'_>, bool, &mut [f32], usize);

/// A micro-kernel and the level it was written for, with the level's float one (F32,
/// F16 and BF16 weights; [`float`]) where it has one.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    pub(crate) f: MicroFn,
    pub(crate) float: Option<FloatMicroFn>,
    pub(crate) level: Level,
    /// Formats with mins (whose values are never negative) up to this largest value (0:
    /// none) are given to the kernel against a signed panel ([`ActRows::signed`]):
    /// AVX2's saturating byte products then take the weights as their unsigned operand,
    /// and with 4-bit weights (15) a whole segment's pair sums stay in i16, with no
    /// `corr`. Measured on Zen 4 (`gemm_speed`, one thread): Q4_K +15-25 %. Offsetting
    /// the formats without mins into the same shape (Q4_0 by 8, its product moved into
    /// a min) made Q4_0 5 % slower, and 5-bit weights, whose sums must still be widened
    /// midway, gained nothing, so they keep the `a + 128` panel.
    pub(crate) unsigned_max: u32,
    /// Where set, the mins' term is left out of the integer kernel (called as if the
    /// weights had none) and this subtracts it for a whole tile at once. In the x86
    /// kernels that term cost an FMA and two loads per segment's scaling, in the chain
    /// of each accumulator (12 % of AVX2's Q4_K time, measured by leaving it out);
    /// apart, it is a small dense f32 product with no horizontal sums. Measured on Zen
    /// 4 (`gemm_speed`, one thread, medians of 5): Q4_K +9 % and Q5_K +8 % at both
    /// levels.
    pub(crate) mins: Option<MinsFn>,
}

/// `out[t·TILE_ROWS + i] -= Σ_l min_t[l·TILE_ROWS + i] · sum[t·lane_stride + l]` for
/// the tokens `t < n_tokens` (a multiple of [`NR`]), the rows `i < TILE_ROWS` and the
/// lanes `l < lanes` (a multiple of [`LANES`]): a tile's mins (lane-major, see
/// [`Tile::transpose_mins`]) times the panel's `scale · Σa`.
pub type MinsFn = fn(
    min_t: &[f32],
    sum: &[f32],
    lane_stride: usize,
    n_tokens: usize,
    lanes: usize,
    out: &mut [f32],
);

/// Checks a [`MinsFn`]'s slices against its shapes (SIMD kernels read by pointer).
#[cfg_attr(not(any(test, target_arch = "x86_64")), allow(dead_code))]
fn check_mins(
    min_t: &[f32],
    sum: &[f32],
    lane_stride: usize,
    n_tokens: usize,
    lanes: usize,
    out: &[f32],
) {
    assert!(n_tokens.is_multiple_of(NR) && lanes.is_multiple_of(LANES));
    assert!(min_t.len() >= lanes * TILE_ROWS && out.len() >= n_tokens * TILE_ROWS);
    if let Some(last) = n_tokens.checked_sub(1) {
        assert!(lane_stride >= lanes && sum.len() >= last * lane_stride + lanes);
    }
}

impl MicroKernel {
    /// The plain-Rust kernel every SIMD one is tested against.
    pub fn reference() -> MicroKernel {
        MicroKernel {
            f: reference::micro,
            float: Some(float::reference),
            level: Level::Scalar,
            unsigned_max: 0,
            mins: None,
        }
    }

    /// The fastest kernel this CPU runs at `level`, if any beats the row path there.
    pub fn for_level(level: Level) -> Option<MicroKernel> {
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => {
                Some(MicroKernel {
                    f: vnni::micro,
                    float: Some(float_x86::micro_avx512),
                    level,
                    unsigned_max: 0,
                    mins: Some(avx2::sub_mins),
                })
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Some(MicroKernel {
                f: avx2::micro,
                float: Some(float_x86::micro_avx2),
                level,
                unsigned_max: 15,
                mins: Some(avx2::sub_mins),
            }),
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => neon::for_level(level),
            _ => None,
        }
    }

    /// The level it was written for.
    pub fn level(&self) -> Level {
        self.level
    }
}

/// Whether the GEMM can multiply weights of type `ty`: integer formats through
/// [`matmul`] (quantized activations), float ones through [`matmul_float`] (f32
/// activations, where the level has a float micro-kernel).
pub fn supports(ty: TensorType) -> bool {
    unpack::supports(ty) || float::supports(ty)
}

/// Memory a GEMM keeps between calls: the activation panel and one tile per thread.
#[derive(Default)]
pub struct GemmScratch {
    panel: Panel,
    tiles: Vec<Tile>,
    float_tiles: Vec<float::FloatTile>,
}

impl GemmScratch {
    /// Bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.panel.capacity_bytes()
            + self.tiles.iter().map(Tile::capacity_bytes).sum::<usize>()
            + self
                .float_tiles
                .iter()
                .map(float::FloatTile::capacity_bytes)
                .sum::<usize>()
    }
}

/// `out[t, r] = Σ_c w[r, c] · x[t, c]` for float weights (`float::supports(w.ty())`)
/// and f32 activations; `false` (nothing done) when `micro`'s level has no float kernel.
/// Shapes were checked by the caller (`matmul_with`).
pub(crate) fn matmul_float(
    micro: MicroKernel,
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut GemmScratch,
) -> bool {
    let Some(f) = micro.float else {
        return false;
    };
    float::matmul(f, pool, w, x, n_tokens, out, &mut scratch.float_tiles);
    true
}

/// Quantized activation rows as the row path made them: row `t` is
/// `bytes[t·stride..][..len]`, in the weight type's activation format.
pub(crate) struct QuantizedRows<'a> {
    pub(crate) ty: TensorType,
    pub(crate) bytes: &'a [u8],
    pub(crate) stride: usize,
}

/// `out[t, r] = Σ_c w[r, c] · x[t, c]` from already quantized activation rows, with
/// `micro`. Shapes were checked by the caller (`matmul_with`), and `supports(w.ty())`.
pub(crate) fn matmul(
    micro: MicroKernel,
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    acts: &QuantizedRows<'_>,
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut GemmScratch,
) {
    let (ty, n_rows, n_cols) = (w.ty(), w.n_rows(), w.n_cols());
    let has_min = unpack::has_min(ty);
    let v_max = unpack::v_max(ty);
    let mins = micro.mins.filter(|_| has_min);
    let form = panel::Form {
        run: unpack::scale_run(ty),
        has_min,
        signed: has_min && v_max <= micro.unsigned_max,
    };
    scratch.panel.fill(pool, acts, n_tokens, n_cols, form);
    let panel = &scratch.panel;
    let nth = pool.n_threads();
    if scratch.tiles.len() < nth {
        scratch.tiles.resize_with(nth, Tile::default);
    }
    // Every thread's tile is sized here, not on first use: a thread that claims no
    // tile in one call must not allocate in a later one.
    for tile in &mut scratch.tiles[..nth] {
        tile.reserve(n_tokens.next_multiple_of(NR));
    }

    for_each_tile(
        pool,
        &mut scratch.tiles[..nth],
        n_rows,
        n_tokens,
        out,
        &|tile, r0, rows| {
            for k0 in (0..n_cols).step_by(KC) {
                let k1 = (k0 + KC).min(n_cols);
                let segs = tile.unpack(w, r0, rows, k0, k1);
                let lanes = segs.count() * LANES;
                if mins.is_some() {
                    tile.transpose_mins(rows, lanes);
                }
                let a = panel.rows(k0, segs);
                // Moved out (not copied) while the tile's rows are borrowed.
                let mut sums = std::mem::take(&mut tile.sums);
                if k0 == 0 {
                    sums.fill(0.0);
                }
                for i0 in (0..rows).step_by(MR) {
                    let m = Micro {
                        w: std::array::from_fn(|i| tile.row(i0 + i)),
                        a,
                        segs,
                        v_max,
                    };
                    (micro.f)(&m, has_min && mins.is_none(), &mut sums[i0..], TILE_ROWS);
                }
                if let Some(mins) = mins {
                    mins(
                        &tile.min_t,
                        a.sum,
                        a.lane_stride,
                        a.n_tokens,
                        lanes,
                        &mut sums,
                    );
                }
                tile.sums = sums;
            }
            &tile.sums
        },
    );
}

/// Hands the tiles of [`TILE_ROWS`] rows out to the pool's threads from one counter;
/// `compute(tile, r0, rows)` fills the thread's `tile` for rows `r0..r0 + rows` and
/// returns their sums (per token, `TILE_ROWS` apart), which are copied into
/// `out` (`[n_tokens, n_rows]`). `tiles` holds one per thread.
fn for_each_tile<T: Send>(
    pool: &ThreadPool,
    tiles: &mut [T],
    n_rows: usize,
    n_tokens: usize,
    out: &mut [f32],
    compute: &(dyn for<'t> Fn(&'t mut T, usize, usize) -> &'t [f32] + Sync),
) {
    // Tile boundaries follow the output's cache lines: each token's stretch of a tile's
    // rows is then one whole line, not parts of two that the neighbouring tiles share.
    // Heap buffers start 16 bytes into a line, and the split stores cost about 5 % of a
    // prompt's GEMM. `skew` rows of the first tile fall before row 0.
    let skew = if n_rows > 0 && n_rows.is_multiple_of(TILE_ROWS) {
        out.as_ptr() as usize % 64 / size_of::<f32>()
    } else {
        0
    };
    let n_tiles = (n_rows + skew).div_ceil(TILE_ROWS);
    let next_tile = AtomicUsize::new(0);
    let out = SharedSlice::new(out);
    let out = &out;
    pool.run_with(tiles, &|_, _, tile| loop {
        // Relaxed: the counter only hands out tile numbers.
        let ti = next_tile.fetch_add(1, Ordering::Relaxed);
        if ti >= n_tiles {
            return;
        }
        let r0 = (ti * TILE_ROWS).saturating_sub(skew);
        let rows = ((ti + 1) * TILE_ROWS - skew).min(n_rows) - r0;
        // The tile's output is one short stretch per token, n_rows apart: lines the
        // hardware prefetcher does not foresee. Asking for them now lets them arrive
        // while the tile is computed, instead of one miss per token at the end.
        for t in 0..n_tokens {
            prefetch(out.addr(t * n_rows + r0));
        }
        let sums = compute(tile, r0, rows);
        // One contiguous stretch per token: the tile's rows of the output.
        for (t, sums) in sums.chunks_exact(TILE_ROWS).take(n_tokens).enumerate() {
            // SAFETY: rows r0..r0 + rows belong to tile `ti`, which the counter hands to
            // this thread alone; no other thread writes them.
            let o = unsafe { out.piece(t * n_rows + r0, rows) };
            // An element loop, not `copy_from_slice`: at most TILE_ROWS values, and a libc
            // call per token's stretch costs more than the copy.
            for (o, &v) in o.iter_mut().zip(sums) {
                *o = v;
            }
        }
    });
}

/// Hints that the line at `addr` will be written soon (no-op off x86-64, or past the
/// end).
fn prefetch(addr: Option<*const f32>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = addr {
        // SAFETY: a prefetch reads and writes nothing and never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Decoded weights of up to [`TILE_ROWS`] rows × [`KC`] columns in the [`Segments`]
/// layout, row stride `KC` values (`KC / LANE` lanes).
struct Tile {
    v: Vec<i8>,
    corr: Vec<i32>,
    scale: Vec<f32>,
    min: Vec<f32>,
    /// The rows' mins lane-major (`TILE_ROWS` per lane), for a [`MinsFn`].
    min_t: Vec<f32>,
    /// One row in plain order, before it is laid out.
    plain_v: Vec<i8>,
    plain_scale: Vec<f32>,
    plain_min: Vec<f32>,
    /// The layout of the rows now held.
    segs: Option<Segments>,
    /// The tile's results: per token, one sum per row ([`TILE_ROWS`] per token).
    sums: Vec<f32>,
    /// Whether whole groups take the formats' direct paths (tests turn it off to check
    /// them against the generic one).
    fast: bool,
}

impl Default for Tile {
    fn default() -> Tile {
        Tile {
            v: Vec::new(),
            corr: Vec::new(),
            scale: Vec::new(),
            min: Vec::new(),
            min_t: Vec::new(),
            plain_v: Vec::new(),
            plain_scale: Vec::new(),
            plain_min: Vec::new(),
            segs: None,
            sums: Vec::new(),
            fast: true,
        }
    }
}

impl Tile {
    fn capacity_bytes(&self) -> usize {
        let floats = self.corr.capacity()
            + self.scale.capacity()
            + self.min.capacity()
            + self.min_t.capacity();
        let plain =
            self.plain_v.capacity() + 4 * (self.plain_scale.capacity() + self.plain_min.capacity());
        self.v.capacity() + 4 * floats + plain + 4 * self.sums.capacity()
    }

    /// Sizes the buffers for calls of up to `n_tokens` (padded) tokens.
    fn reserve(&mut self, n_tokens: usize) {
        const ROW_LANES: usize = KC / LANE;
        if self.v.is_empty() {
            self.v = vec![0; TILE_ROWS * KC];
            self.corr = vec![0; TILE_ROWS * ROW_LANES];
            self.scale = vec![0.0; TILE_ROWS * ROW_LANES];
            self.min = vec![0.0; TILE_ROWS * ROW_LANES];
            self.min_t = vec![0.0; TILE_ROWS * ROW_LANES];
            self.plain_v = vec![0; KC];
            self.plain_scale = vec![0.0; ROW_LANES];
            self.plain_min = vec![0.0; ROW_LANES];
        }
        if self.sums.len() < n_tokens * TILE_ROWS {
            self.sums.resize(n_tokens * TILE_ROWS, 0.0);
        }
    }

    /// Decodes rows `r0..r0 + rows` of `w`, columns `k0..k1` (whole blocks), into rows
    /// `0..rows`; padding values and the rows up to the next multiple of [`MR`] are zero
    /// (they add nothing).
    fn unpack(
        &mut self,
        w: &WeightMatrix<'_>,
        r0: usize,
        rows: usize,
        k0: usize,
        k1: usize,
    ) -> Segments {
        const ROW_LANES: usize = KC / LANE;
        let ty = w.ty();
        let n = k1 - k0;
        let segs = Segments::new(n, unpack::scale_run(ty));
        self.segs = Some(segs);
        let (padded, lanes) = (segs.padded(), segs.count() * LANES);
        let block_len = ty.block_len();
        let block_bytes = ty.block_bytes();
        let bytes = k0 / block_len * block_bytes..k1 / block_len * block_bytes;
        for i in 0..rows.next_multiple_of(MR) {
            let v = &mut self.v[i * KC..][..padded];
            let corr = &mut self.corr[i * ROW_LANES..][..lanes];
            let scale = &mut self.scale[i * ROW_LANES..][..lanes];
            let min = &mut self.min[i * ROW_LANES..][..lanes];
            if i >= rows {
                v.fill(0);
                corr.fill(0);
                scale.fill(0.0);
                min.fill(0.0);
                continue;
            }
            let row = &w.row(r0 + i)[bytes.clone()];
            // Whole groups through the format's direct path where it has one, the rest
            // (or everything) through the generic one.
            let (group, group_bytes) = (segs.full_len(), segs.full_len() / block_len * block_bytes);
            let mut done = 0;
            if self.fast {
                while done + group <= segs.n_full * group {
                    let (g, at) = (done / group, done / group * LANES);
                    if !unpack::unpack_group(
                        ty,
                        &row[g * group_bytes..][..group_bytes],
                        &mut v[done..done + group],
                        &mut corr[at..at + LANES],
                        &mut scale[at..at + LANES],
                        &mut min[at..at + LANES],
                    ) {
                        break;
                    }
                    done += group;
                }
            }
            // The rest is laid out over zeros: its padding lanes and runs must add nothing.
            let lane0 = done / group * LANES;
            v[done..].fill(0);
            corr[lane0..].fill(0);
            scale[lane0..].fill(0.0);
            min[lane0..].fill(0.0);
            if done == n {
                continue;
            }
            if self.fast
                && unpack::unpack_half_group(
                    ty,
                    &row[done / block_len * block_bytes..],
                    &mut v[done..],
                    &mut corr[lane0..lane0 + LANES],
                    &mut scale[lane0..lane0 + LANES],
                    &mut min[lane0..lane0 + LANES],
                )
            {
                continue;
            }
            let rest = Segments::new(n - done, segs.run);
            let (pv, ps, pm) = (
                &mut self.plain_v[..n - done],
                &mut self.plain_scale[..(n - done) / LANE],
                &mut self.plain_min[..(n - done) / LANE],
            );
            unpack::unpack(
                ty,
                &row[done / block_len * block_bytes..],
                unpack::Unpacked {
                    v: pv,
                    scale: ps,
                    min: pm,
                },
            );
            let (corr, scale, min) = (&mut corr[lane0..], &mut scale[lane0..], &mut min[lane0..]);
            rest.lay_out(pv, &mut v[done..], |lane, k, q| {
                corr[lane] = -128 * q.iter().map(|&q| q as i32).sum::<i32>();
                scale[lane] = ps[k / LANE];
                min[lane] = pm[k / LANE];
            });
        }
        segs
    }

    /// Decoded row `i`.
    fn row(&self, i: usize) -> WeightRow<'_> {
        const ROW_LANES: usize = KC / LANE;
        let segs = self.segs.expect("a tile is read after it is filled");
        let lanes = segs.count() * LANES;
        WeightRow {
            v: &self.v[i * KC..][..segs.padded()],
            corr: &self.corr[i * ROW_LANES..][..lanes],
            scale: &self.scale[i * ROW_LANES..][..lanes],
            min: &self.min[i * ROW_LANES..][..lanes],
        }
    }

    /// Copies the mins of the first `rows` rows (rounded up to [`MR`], as decoded) into
    /// `min_t`, lane by lane; the rows after them are zero.
    fn transpose_mins(&mut self, rows: usize, lanes: usize) {
        const ROW_LANES: usize = KC / LANE;
        let rows = rows.next_multiple_of(MR);
        for (l, col) in self
            .min_t
            .chunks_exact_mut(TILE_ROWS)
            .take(lanes)
            .enumerate()
        {
            for (i, m) in col.iter_mut().enumerate() {
                *m = if i < rows {
                    self.min[i * ROW_LANES + l]
                } else {
                    0.0
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_row;

    /// Every SIMD micro-kernel of this machine against the reference, at the extremes of
    /// each weight range (where AVX2's saturating byte products would first go wrong) and
    /// on random values. Scales are 1, so every f32 sum is an exact integer and the
    /// results must be equal.
    #[test]
    fn micro_kernels_are_exact_at_the_range_limits() {
        let kernels: Vec<MicroKernel> = Level::supported()
            .into_iter()
            .filter_map(MicroKernel::for_level)
            .collect();
        // (v_max, lowest value, highest value, run, has_min): the ranges of unpack::v_max.
        let ranges = [
            (8, -8, 7, 32, false),
            (15, 0, 15, 32, true),
            (16, -16, 15, 32, false),
            (31, 0, 31, 32, true),
            (32, -32, 31, 16, false),
            (128, -128, 127, 32, false),
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // One whole segment, then 31 runs of 32 (segments of every length, the last
        // one padded), or 4 segments of Q6_K's super-blocks.
        for (n, (v_max, lo, hi, run, has_min)) in [512usize, 992]
            .into_iter()
            .flat_map(|n| ranges.map(|r| (n, r)))
        {
            let n = if run == 16 {
                n.next_multiple_of(256)
            } else {
                n
            };
            let segs = Segments::new(n, run);
            let (padded, lanes) = (segs.padded(), segs.count() * LANES);
            // Patterns: the largest products of each sign, then random values.
            for pattern in 0..4 {
                let plain_v: Vec<Vec<i8>> = (0..MR)
                    .map(|i| {
                        (0..n)
                            .map(|k| match pattern {
                                0 => hi as i8,
                                1 => lo as i8,
                                2 => [lo, hi][(k + i) % 2] as i8,
                                _ => (lo + (next() % (hi - lo + 1) as u64) as i32) as i8,
                            })
                            .collect()
                    })
                    .collect();
                let plain_a: Vec<Vec<u8>> = (0..NR)
                    .map(|j| {
                        (0..n)
                            .map(|k| match pattern {
                                0 | 1 => 255,
                                2 => [1, 255][(k / 2 + j) % 2],
                                _ => 1 + (next() % 255) as u8,
                            })
                            .collect()
                    })
                    .collect();
                let mut v = vec![0i8; MR * padded];
                let mut corr = vec![0i32; MR * lanes];
                for i in 0..MR {
                    let corr = &mut corr[i * lanes..][..lanes];
                    segs.lay_out(&plain_v[i], &mut v[i * padded..][..padded], |l, _, q| {
                        corr[l] = -128 * q.iter().map(|&q| q as i32).sum::<i32>()
                    });
                }
                let mut a = vec![128u8; NR * padded];
                for j in 0..NR {
                    segs.lay_out(&plain_a[j], &mut a[j * padded..][..padded], |_, _, _| {});
                }
                // Weights with mins are also multiplied from a signed panel, by the
                // kernels that ask for one (`unsigned_max`).
                let signed_a: Vec<u8> = a.iter().map(|&a| a ^ 0x80).collect();
                let mut unsigned_want = Vec::new();
                for signed in [false, true] {
                    if signed && !has_min {
                        continue;
                    }
                    let ones = vec![1.0f32; NR * lanes];
                    let halves = vec![0.5f32; NR * lanes];
                    let micro = Micro {
                        w: std::array::from_fn(|i| WeightRow {
                            v: &v[i * padded..][..padded],
                            corr: &corr[i * lanes..][..lanes],
                            scale: &ones[..lanes],
                            min: &halves[..lanes],
                        }),
                        a: ActRows {
                            a: if signed { &signed_a } else { &a },
                            signed,
                            a_stride: padded,
                            scale: &ones,
                            sum: &halves,
                            lane_stride: lanes,
                            n_tokens: NR,
                        },
                        segs,
                        v_max,
                    };
                    let reference = |has_min| {
                        let mut want = vec![0f32; NR * MR];
                        (MicroKernel::reference().f)(&micro, has_min, &mut want, MR);
                        want
                    };
                    let (want, want_no_min) = (reference(has_min), reference(false));
                    if signed {
                        assert_eq!(want, unsigned_want, "the two panels mean the same");
                    } else {
                        unsigned_want = want.clone();
                    }
                    let takes = |k: &&MicroKernel| !signed || v_max <= k.unsigned_max;
                    for k in kernels.iter().filter(takes) {
                        // A kernel that leaves the mins apart is only called without
                        // them (`mins_kernels_equal_the_reference` checks the rest).
                        let has_min = has_min && k.mins.is_none();
                        let want = if has_min { &want } else { &want_no_min };
                        let mut got = vec![0f32; NR * MR];
                        (k.f)(&micro, has_min, &mut got, MR);
                        assert_eq!(
                            &got,
                            want,
                            "{}: n {n}, v_max {v_max}, pattern {pattern}, signed {signed}",
                            k.level.name()
                        );
                    }
                }
            }
        }
    }

    /// Every [`MinsFn`] of this machine against the reference, with a lane stride wider
    /// than the lanes read. The values are small integers, so every sum is exact in f32
    /// and the results must be equal whatever the order.
    #[test]
    fn mins_kernels_equal_the_reference() {
        let kernels: Vec<MinsFn> = Level::supported()
            .into_iter()
            .filter_map(MicroKernel::for_level)
            .filter_map(|k| k.mins)
            .collect();
        for (n_tokens, lanes) in [(0, 16), (4, 16), (8, 48), (12, 128)] {
            let lane_stride = lanes + 16;
            let min_t: Vec<f32> = (0..lanes * TILE_ROWS)
                .map(|k| ((k * 37) % 17) as f32 - 8.0)
                .collect();
            let sum: Vec<f32> = (0..n_tokens * lane_stride)
                .map(|k| ((k * 53) % 23) as f32 - 11.0)
                .collect();
            let start: Vec<f32> = (0..n_tokens * TILE_ROWS).map(|k| k as f32).collect();
            let mut want = start.clone();
            reference::mins(&min_t, &sum, lane_stride, n_tokens, lanes, &mut want);
            for k in &kernels {
                let mut got = start.clone();
                k(&min_t, &sum, lane_stride, n_tokens, lanes, &mut got);
                assert_eq!(got, want, "{n_tokens} tokens, {lanes} lanes");
            }
        }
    }

    /// Every float micro-kernel of this machine against the reference, for every token
    /// count of a pass and its remainders; sums of the same products in another order.
    #[test]
    fn float_micro_kernels_equal_the_reference() {
        let kernels: Vec<MicroKernel> = Level::supported()
            .into_iter()
            .filter_map(MicroKernel::for_level)
            .filter(|k| k.float.is_some())
            .collect();
        let n = 4 * float::STEP;
        let w: Vec<Vec<f32>> = (0..MR)
            .map(|i| {
                (0..n)
                    .map(|k| ((k * 37 + i * 11) % 19) as f32 / 9.0 - 1.0)
                    .collect()
            })
            .collect();
        for n_tokens in 0..7 {
            let a: Vec<f32> = (0..n_tokens * (n + 3))
                .map(|k| ((k * 53) % 23) as f32 / 11.0 - 1.0)
                .collect();
            let rows = || std::array::from_fn(|i| &w[i][..]);
            let mut want = vec![0.5f32; n_tokens * MR];
            float::reference(rows(), &a, n + 3, n_tokens, n, &mut want, MR);
            for k in &kernels {
                let mut got = vec![0.5f32; n_tokens * MR];
                (k.float.unwrap())(rows(), &a, n + 3, n_tokens, n, &mut got, MR);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{}: {got:?} vs {want:?}",
                        k.level.name()
                    );
                }
            }
        }
    }

    /// The formats' direct group paths must decode exactly what the generic path does.
    #[test]
    fn group_fast_paths_equal_the_generic_path() {
        use TensorType::*;
        for (ty, n_cols) in [
            (Q4_K, 768),
            (Q4_K, 2560),
            (Q5_0, 672),
            (Q8_0, 1056),
            (Q6_K, 512),
        ] {
            let n_rows: usize = 5;
            let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
            let mut data = vec![0u8; row_bytes * n_rows];
            for (r, row) in data.chunks_exact_mut(row_bytes).enumerate() {
                let x: Vec<f32> = (0..n_cols)
                    .map(|i| {
                        (((i * 7919 + r * 104729) % 2003) as f32 / 1001.0 - 1.0)
                            * (1 + i % 5) as f32
                    })
                    .collect();
                quantize_row(ty, &x, row).unwrap();
            }
            let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
            let (mut fast, mut generic) = (Tile::default(), Tile::default());
            generic.fast = false;
            for k0 in (0..n_cols).step_by(KC) {
                let k1 = (k0 + KC).min(n_cols);
                for tile in [&mut fast, &mut generic] {
                    tile.reserve(NR);
                    tile.unpack(&w, 0, n_rows, k0, k1);
                }
                for i in 0..n_rows {
                    let (a, b) = (fast.row(i), generic.row(i));
                    assert_eq!(a.v, b.v, "{ty} row {i} values");
                    assert_eq!(a.corr, b.corr, "{ty} row {i} corrections");
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(a.scale), bits(b.scale), "{ty} row {i} scales");
                    assert_eq!(bits(a.min), bits(b.min), "{ty} row {i} mins");
                }
            }
        }
    }
}
