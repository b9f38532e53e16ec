//! Weights packed sixteen rows at a time, for the products of a few tokens.
//!
//! A decode step of continuous batching multiplies each matrix by one activation row per
//! running sequence. With rows as GGUF stores them, a kernel meets one row's block at a
//! time: its integer sum fills a vector whose lanes must then be converted, scaled and
//! summed for that row alone, once per token. On Gemma 3 270M the Q8_0 output head
//! (262,144 rows) then costs more at four tokens than reading it does, which held a
//! 4-sequence step at 1.5 times a 1-sequence one; its Q5_0 layers (rows of 640, which
//! K-quants cannot take) cost twice as much at four tokens as at one.
//!
//! Here sixteen rows are interleaved four weights at a time, so one 512-bit multiply-add
//! (`vpdpbusd`) takes four weights of each of the sixteen rows against the same four
//! activations (broadcast), and a block's conversion, scaling and accumulation serve
//! sixteen rows in one instruction each. Per row, token and block that is about 0.7
//! vector instructions where the row layout needs about 2.4 (AVX-512), so a few tokens
//! cost what reading the matrix costs.
//!
//! # Layout
//! Group `g` holds rows `16g..16g + 16`; its `nb` blocks follow each other, each
//! [`PackedFormat::group_block_bytes`] long, starting with the sixteen rows' f16 scales
//! (row `l` at bytes `2l..2l+2`). The quants are arranged in eight chunks: chunk `c` is
//! quants `4c..4c+4` of every row, row `l` at bytes `4l..4l+4` of the chunk's 64.
//! - [`PackedFormat::Q8_0`]: chunk `c` at bytes `32 + 64c`, as signed bytes.
//! - [`PackedFormat::Q5_0`] (quant `u` in `0..32`, worth `u - 16`): the low four bits of
//!   chunks `c` and `c + 4` share the 64 bytes at `32 + 64c` (`c < 4`), chunk `c` in the
//!   low nibbles; the 64 bytes at 288 hold the fifth bits, chunk `c`'s as bit `c` of each
//!   byte. The block keeps Q5_0's 22 bytes per row, and a shift and a mask put any
//!   chunk's fifth bits in place.
//! - [`PackedFormat::Q4_K`]: the file's 256-weight super-blocks stay whole, eight
//!   blocks in [`Q4_K_SUPER_BYTES`]: the sixteen rows' f16 `d`, their f16 `dmin`, then
//!   for each sub-block `j` their 6-bit scales `sc` as bytes (at `64 + 16j`) and mins
//!   `m` (at `192 + 16j`), then each sub-block's nibbles as Q5_0's (at `320 + 256j`).
//!   Weight `k` of sub-block `j` is `scale·u[k] - min` with `scale = d·sc` and `min =
//!   dmin·m` (an f16 times a 6-bit integer: exact in f32). A row takes 148 bytes per
//!   super-block where the file takes 144.
//! - [`PackedFormat::Q6_K`]: the file's super-blocks stay whole too, eight blocks in
//!   [`Q6_K_SUPER_BYTES`]: the sixteen rows' f16 `d`, then for each of the sixteen
//!   sub-blocks of 16 weights their signed 8-bit scales (at `32 + 16s`), then per block
//!   `j` (at [`Q6_K_QUANTS`]` + 384j`) the low four bits of its quants `u` (worth `u -
//!   32`) as Q5_0's nibbles and their two high bits in two runs of 64 bytes, chunk `c`'s
//!   at bits `2(c % 4)` of run `c / 4`, row `l` at bytes `4l..4l+4`. A row takes the
//!   file's 210 bytes per super-block.
//!
//! Rows past the last whole group stay as the file stores them and take the level's
//! ordinary dot; the K-quants' dots read Q8_K activations, not the Q8_0 ones the products
//! prepare, so Q4_K and Q6_K pack only matrices of whole groups.
//!
//! # Arithmetic
//! Every level computes each (row, token) result as [`reference`] does: per block, the
//! exact integer sum of the 32 products, converted to f32 (exact: it is below 2²⁴), times
//! `d_w · d_a` (one f32 product) added with one fused multiply-add, blocks in order (for
//! Q4_K, then `-min · (d_a · Σ a)` with another, `Σ a` taken from the prepared block;
//! Q6_K's integer sum is each half's exact sum times its sub-block's scale, added in
//! 32 bits, and `d_w` the super-block's `d`). That is not the row layout's order, so a
//! packed matrix's results differ from the unpacked one's in the last bits (the K-quants'
//! more: their stored rows' kernels read Q8_K activations, one scale per 256, and the
//! packed kernels Q8_0's, one per 32, which is closer to exact math); but they depend
//! only on the row and the token, never on how
//! many tokens share the call or how the rows are split among threads. So a model that
//! packs a matrix sends every token of its row path through the packed form
//! ([`matmul_rows_packed`]), and at AVX-512 VNNI the prompts the GEMM would take too
//! (faster there as well); other levels keep the GEMM on the file's copy for them.
//!
//! The memory cost is a second copy of each packed matrix (the file's bytes stay loaded,
//! for the GEMM, unless every token takes the packed form and the model releases them),
//! so a model packs only what several tokens at once gain most from (see the model's
//! `pack_for_batches`). A head tied to the token embeddings serves their lookups from its
//! packed copy ([`PackedMatrix::dequantize_row`]).

use super::claims::Runs;
use super::{
    for_each_act_row, gemm_first, line_bytes, matmul_with, MatmulError, MatmulScratch, SharedSlice,
    WeightMatrix, CHUNKS_PER_THREAD, MIN_PARALLEL_MACS, TOKENS_PER_CALL,
};
use crate::dispatch::{DotFn, Kernels, PackedDotFn};
use crate::gemm;
use crate::ops::select::KEY_BLOCK;
use crate::ops::Ops;
use crate::pool::ThreadPool;
use crate::quant::blocks::{f16_le, BlockQ6K};
use crate::quant::TensorType;

/// Rows per group.
pub const GROUP_ROWS: usize = 16;

/// Bytes of one prepared activation block: the scale as f32, `-128 · Σ q` as i32 (what
/// the AVX-512 Q8_0 kernel's unsigned weights need taken off; an eighth of it is the
/// Q5_0 offset's share), `-32 · Σ q` of each half as i32 (Q6_K's offset, per sub-block
/// of 16), then the 32 quants (at [`ACT_QUANTS`]).
pub const ACT_BLOCK_BYTES: usize = 48;

/// Where a prepared activation block's quants start.
pub const ACT_QUANTS: usize = 16;

/// Bytes of a Q8_0 block (the activations' format).
const Q8_0_BYTES: usize = 34;

/// Groups per kernel call: the call's outputs for [`TOKENS_PER_CALL`] tokens fit a 4 KiB
/// buffer on the stack.
const GROUPS_PER_CALL: usize = 4;

// A kernel call's rows for one token are one key block of a sampler's
// (`crate::ops::select`): [`matmul_packed_keyed`] takes the key while they are in L1.
const _: () = assert!(GROUPS_PER_CALL * GROUP_ROWS == KEY_BLOCK);

/// The most products one dispatch of [`matmul_packed_many`] takes (Q, K and V).
const MAX_PRODUCTS: usize = 4;

/// A weight format that packs, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)] // ggml's names, as `TensorType`'s
pub enum PackedFormat {
    Q8_0,
    Q5_0,
    Q4_K,
    Q6_K,
}

impl PackedFormat {
    /// Every format, in the order of the kernel table's slots.
    pub const ALL: [PackedFormat; 4] = [
        PackedFormat::Q8_0,
        PackedFormat::Q5_0,
        PackedFormat::Q4_K,
        PackedFormat::Q6_K,
    ];

    /// The packed format of `ty`'s matrices, if they pack.
    pub fn of(ty: TensorType) -> Option<PackedFormat> {
        match ty {
            TensorType::Q8_0 => Some(PackedFormat::Q8_0),
            TensorType::Q5_0 => Some(PackedFormat::Q5_0),
            TensorType::Q4_K => Some(PackedFormat::Q4_K),
            TensorType::Q6_K => Some(PackedFormat::Q6_K),
            _ => None,
        }
    }

    /// The tensor type it packs.
    pub fn ty(self) -> TensorType {
        match self {
            PackedFormat::Q8_0 => TensorType::Q8_0,
            PackedFormat::Q5_0 => TensorType::Q5_0,
            PackedFormat::Q4_K => TensorType::Q4_K,
            PackedFormat::Q6_K => TensorType::Q6_K,
        }
    }

    /// Bytes of one block of a group (sixteen rows of 32 weights).
    pub const fn group_block_bytes(self) -> usize {
        match self {
            PackedFormat::Q8_0 => 2 * GROUP_ROWS + 32 * GROUP_ROWS,
            // Scales, two chunks' nibbles per 64 bytes, one bit of each chunk per byte.
            PackedFormat::Q5_0 => 2 * GROUP_ROWS + 16 * GROUP_ROWS + 4 * GROUP_ROWS,
            // A super-block's bytes per block: the eight blocks share its d and dmin.
            PackedFormat::Q4_K => Q4_K_SUPER_BYTES / 8,
            PackedFormat::Q6_K => Q6_K_SUPER_BYTES / 8,
        }
    }

    /// Blocks of 32 weights that pack together: eight for the K-quants' super-blocks.
    pub const fn blocks_per_unit(self) -> usize {
        match self {
            PackedFormat::Q8_0 | PackedFormat::Q5_0 => 1,
            PackedFormat::Q4_K | PackedFormat::Q6_K => 8,
        }
    }

    /// Bytes the packed copy of an `[n_rows, n_cols]` matrix of this format takes (its
    /// whole groups in the group layout, the rows past them as the file stores them),
    /// where it packs ([`PackedMatrix::pack`]); what [`PackedMatrix::bytes`] then says.
    pub fn packed_bytes(self, n_rows: usize, n_cols: usize) -> usize {
        let nb = n_cols / 32;
        let tail_rows = n_rows % GROUP_ROWS;
        let row_bytes = self.ty().row_bytes(n_cols as u64).map_or(0, |b| b as usize);
        n_rows / GROUP_ROWS * nb * self.group_block_bytes() + tail_rows * row_bytes
    }

    /// Whether its rows may be packed with rows left over: the rows past the last whole
    /// group take the level's dot on Q8_0 activations, which K-quants' dots do not read.
    fn takes_tails(self) -> bool {
        self.blocks_per_unit() == 1
    }

    /// The slot of the kernel table.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Writes unit `b` (weights `32b·u..32(b + 1)·u` for `u = blocks_per_unit`) of rows
    /// `rows` (sixteen of them, as the file stores them) in the group layout.
    fn pack_block(self, rows: &[&[u8]; GROUP_ROWS], b: usize, dst: &mut [u8]) {
        for (l, row) in rows.iter().enumerate() {
            match self {
                PackedFormat::Q8_0 => {
                    let src = &row[b * Q8_0_BYTES..][..Q8_0_BYTES];
                    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
                    for c in 0..8 {
                        let at = 2 * GROUP_ROWS + 64 * c + 4 * l;
                        dst[at..at + 4].copy_from_slice(&src[2 + 4 * c..][..4]);
                    }
                }
                PackedFormat::Q5_0 => {
                    let src = &row[b * 22..][..22];
                    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
                    let u = q5_0_quants(src);
                    put_nibbles(&u, l, &mut dst[2 * GROUP_ROWS..]);
                    for j in 0..4 {
                        dst[Q5_0_HIGH + 4 * l + j] =
                            (0..8).map(|c| (u[4 * c + j] >> 4) << c).sum::<u8>();
                    }
                }
                PackedFormat::Q4_K => {
                    // `b` is a super-block here (`blocks_per_unit`).
                    let sb = &row[b * 144..][..144];
                    dst[2 * l..2 * l + 2].copy_from_slice(&sb[..2]);
                    dst[32 + 2 * l..32 + 2 * l + 2].copy_from_slice(&sb[2..4]);
                    let scales: &[u8; 12] = sb[4..16].try_into().expect("12 bytes");
                    for j in 0..8 {
                        let (sc, m) = crate::quant::kquants::get_scale_min_k4(j, scales);
                        dst[64 + 16 * j + l] = sc;
                        dst[192 + 16 * j + l] = m;
                        // Sub-blocks 2i and 2i + 1: low and high nibbles of 32i..32i + 32.
                        let qs = &sb[16 + 32 * (j / 2)..][..32];
                        let u = std::array::from_fn(|k| qs[k] >> (4 * (j % 2)) & 15);
                        put_nibbles(&u, l, &mut dst[Q4_K_QUANTS + 256 * j..]);
                    }
                }
                PackedFormat::Q6_K => {
                    let sb: &BlockQ6K = bytemuck::from_bytes(&row[b * 210..][..210]);
                    dst[2 * l..2 * l + 2].copy_from_slice(&sb.d);
                    for (s, &sc) in sb.scales.iter().enumerate() {
                        dst[Q6_K_SCALES + 16 * s + l] = sc as u8;
                    }
                    // `unpack` gives `u - 32`; the packed form keeps `u`.
                    let u = crate::quant::q6_k::unpack(sb).map(|q| (q + 32) as u8);
                    for j in 0..8 {
                        let u: &[u8; 32] = u[32 * j..][..32].try_into().expect("32 quants");
                        let blk = &mut dst[Q6_K_QUANTS + Q6_K_BLOCK * j..][..Q6_K_BLOCK];
                        put_nibbles(u, l, blk);
                        for run in 0..2 {
                            for i in 0..4 {
                                blk[256 + 64 * run + 4 * l + i] = (0..4)
                                    .map(|c| (u[4 * (4 * run + c) + i] >> 4) << (2 * c))
                                    .sum::<u8>();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Row `l`'s block `b` of a group's bytes (see [`RowBlock`]).
    fn row_block(self, group: &[u8], b: usize, l: usize) -> RowBlock {
        let gbb = self.group_block_bytes();
        match self {
            PackedFormat::Q8_0 | PackedFormat::Q5_0 => {
                let blk = &group[b * gbb..][..gbb];
                let weights = std::array::from_fn(|k| {
                    let (c, j) = (k / 4, k % 4);
                    if self == PackedFormat::Q8_0 {
                        blk[2 * GROUP_ROWS + 64 * c + 4 * l + j] as i8 as i32
                    } else {
                        let nib = nibble(&blk[2 * GROUP_ROWS..], l, k);
                        let high = blk[Q5_0_HIGH + 4 * l + j] >> c & 1;
                        (nib | high << 4) as i32 - 16
                    }
                });
                RowBlock::plain(f16_le([blk[2 * l], blk[2 * l + 1]]), 0.0, weights)
            }
            PackedFormat::Q4_K => {
                let sup = &group[b / 8 * Q4_K_SUPER_BYTES..][..Q4_K_SUPER_BYTES];
                let j = b % 8;
                let d = f16_le([sup[2 * l], sup[2 * l + 1]]);
                let dmin = f16_le([sup[32 + 2 * l], sup[32 + 2 * l + 1]]);
                let (sc, m) = (sup[64 + 16 * j + l], sup[192 + 16 * j + l]);
                let nibbles = &sup[Q4_K_QUANTS + 256 * j..][..256];
                let weights = std::array::from_fn(|k| nibble(nibbles, l, k) as i32);
                RowBlock::plain(d * f32::from(sc), dmin * f32::from(m), weights)
            }
            PackedFormat::Q6_K => {
                let sup = &group[b / 8 * Q6_K_SUPER_BYTES..][..Q6_K_SUPER_BYTES];
                let j = b % 8;
                let blk = &sup[Q6_K_QUANTS + Q6_K_BLOCK * j..][..Q6_K_BLOCK];
                let weights = std::array::from_fn(|k| {
                    let high = blk[256 + 64 * (k / 16) + 4 * l + k % 4] >> (2 * (k / 4 % 4)) & 3;
                    (nibble(blk, l, k) | high << 4) as i32 - 32
                });
                let sub = |s: usize| i32::from(sup[Q6_K_SCALES + 16 * s + l] as i8);
                RowBlock {
                    scale: f16_le([sup[2 * l], sup[2 * l + 1]]),
                    min: 0.0,
                    weights,
                    halves: [sub(2 * j), sub(2 * j + 1)],
                }
            }
        }
    }
}

/// One row's block of 32 weights in a group, as the kernels take it: the integer sum
/// against a block of activations `q` is `halves[0] · Σ_{k<16} w_k q_k + halves[1] ·
/// Σ_{k≥16} w_k q_k` (Q6_K's sub-block scales; 1 and 1 elsewhere), and the block adds
/// `sum · (scale · d_a) - min · (d_a · Σ q)` to the row's result.
struct RowBlock {
    scale: f32,
    /// 0 where the format has none.
    min: f32,
    /// The quants as the weights' integer parts (Q4_K's before the scale and min).
    weights: [i32; 32],
    halves: [i32; 2],
}

impl RowBlock {
    fn plain(scale: f32, min: f32, weights: [i32; 32]) -> RowBlock {
        RowBlock {
            scale,
            min,
            weights,
            halves: [1, 1],
        }
    }
}

/// Bytes of a packed Q4_K super-block (eight blocks of a group): the sixteen rows' f16
/// `d` and `dmin`, eight bytes of scales and eight of mins, and eight blocks' nibbles.
pub const Q4_K_SUPER_BYTES: usize = Q4_K_QUANTS + 8 * 16 * GROUP_ROWS;

/// Where a packed Q4_K super-block's nibbles start.
pub const Q4_K_QUANTS: usize = 4 * GROUP_ROWS + 16 * GROUP_ROWS;

/// Bytes of a packed Q6_K super-block (eight blocks of a group): the sixteen rows' f16
/// `d`, sixteen bytes of sub-block scales, and eight blocks of quants.
pub const Q6_K_SUPER_BYTES: usize = Q6_K_QUANTS + 8 * Q6_K_BLOCK;

/// Where a packed Q6_K super-block's sub-block scales start (sub-block `s` at `16s`).
pub const Q6_K_SCALES: usize = 2 * GROUP_ROWS;

/// Where a packed Q6_K super-block's blocks of quants start.
pub const Q6_K_QUANTS: usize = Q6_K_SCALES + 16 * GROUP_ROWS;

/// Bytes of a packed Q6_K block's quants: nibbles, then two runs of high bits.
pub const Q6_K_BLOCK: usize = 16 * GROUP_ROWS + 8 * GROUP_ROWS;

/// Writes 32 quants (each below 16 where they sit) of row `l` as nibbles: chunks `c` and
/// `c + 4` share the 64 bytes at `64c`, chunk `c` in the low nibbles.
fn put_nibbles(u: &[u8; 32], l: usize, dst: &mut [u8]) {
    for c in 0..4 {
        for j in 0..4 {
            let (lo, hi) = (u[4 * c + j], u[4 * (c + 4) + j]);
            dst[64 * c + 4 * l + j] = (lo & 15) | (hi & 15) << 4;
        }
    }
}

/// Quant `k` of row `l` from nibbles laid out by [`put_nibbles`].
fn nibble(nibbles: &[u8], l: usize, k: usize) -> u8 {
    let (c, j) = (k / 4, k % 4);
    nibbles[64 * (c % 4) + 4 * l + j] >> (4 * (c / 4)) & 15
}

/// Where a packed Q5_0 block's fifth bits start.
pub const Q5_0_HIGH: usize = 2 * GROUP_ROWS + 4 * 64;

/// The 32 five-bit quants of a Q5_0 block (22 bytes: f16 scale, 32 fifth bits, 16 bytes
/// of nibbles, element `j < 16` low and `j + 16` high).
fn q5_0_quants(block: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    std::array::from_fn(|k| {
        let nib = if k < 16 {
            block[6 + k] & 15
        } else {
            block[6 + k - 16] >> 4
        };
        nib | (((qh >> k) & 1) as u8) << 4
    })
}

/// A matrix `[n_rows, n_cols]` packed in groups of [`GROUP_ROWS`] rows (see the module
/// documentation), owning its bytes.
pub struct PackedMatrix {
    format: PackedFormat,
    n_rows: usize,
    n_cols: usize,
    /// Blocks (of 32 weights) per row.
    nb: usize,
    /// Bytes of a row as the file stores it (the tail's rows).
    row_bytes: usize,
    /// The whole groups, on huge pages where the OS allows (a decode step streams all of
    /// them; on small pages the TLB misses cost ~10 % of a 178 MB head's read).
    groups: memmap2::MmapMut,
    /// Rows past the last whole group, as the file stores them.
    tail: Vec<u8>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("format", &self.format)
            .field("n_rows", &self.n_rows)
            .field("n_cols", &self.n_cols)
            .finish_non_exhaustive()
    }
}

impl PackedMatrix {
    /// Packs `w` when its format packs and it has at least one whole group and one
    /// block per row; `Ok(None)` otherwise, an error when the memory for it cannot be
    /// mapped.
    pub fn pack(w: &WeightMatrix<'_>) -> std::io::Result<Option<PackedMatrix>> {
        let Some(format) = PackedFormat::of(w.ty()) else {
            return Ok(None);
        };
        if w.n_rows() < GROUP_ROWS
            || w.n_cols() == 0
            || (!format.takes_tails() && !w.n_rows().is_multiple_of(GROUP_ROWS))
            || !(w.n_cols() / 32).is_multiple_of(format.blocks_per_unit())
        {
            return Ok(None);
        }
        let (n_rows, n_cols, rb) = (w.n_rows(), w.n_cols(), w.row_bytes());
        let nb = n_cols / 32;
        let n_groups = n_rows / GROUP_ROWS;
        let gbb = format.group_block_bytes();
        let mut groups = memmap2::MmapMut::map_anon(n_groups * nb * gbb)?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without huge pages the products are the same, a little slower.
            let _ = groups.advise(memmap2::Advice::HugePage);
        }
        for (g, dst) in groups.chunks_exact_mut(nb * gbb).enumerate() {
            let rows: [&[u8]; GROUP_ROWS] = std::array::from_fn(|l| w.row(g * GROUP_ROWS + l));
            let unit = gbb * format.blocks_per_unit();
            for (b, dst) in dst.chunks_exact_mut(unit).enumerate() {
                format.pack_block(&rows, b, dst);
            }
        }
        let tail = w.data()[n_groups * GROUP_ROWS * rb..].to_vec();
        Ok(Some(PackedMatrix {
            format,
            n_rows,
            n_cols,
            nb,
            row_bytes: rb,
            groups,
            tail,
        }))
    }

    /// The format it is packed in.
    pub fn format(&self) -> PackedFormat {
        self.format
    }

    /// Number of rows (outputs per token).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (inputs per token).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// The whole groups' bytes (the input of a [`PackedDotFn`]).
    pub fn group_bytes(&self) -> &[u8] {
        &self.groups
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.groups.len() + self.tail.len()
    }

    /// Row `row` in f32 (`out.len() == n_cols`), bit for bit what `dequantize_row` gives
    /// from the file's bytes of it: a head tied to the token embeddings serves their
    /// lookups from here, so that the file's pages of it can be released and stay
    /// released (looked up there, every distinct token faulted a page of them back in,
    /// and a long-running server's memory crept up by as much).
    ///
    /// # Panics
    /// When `row >= n_rows` or `out` is not `n_cols` long.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(
            row < self.n_rows && out.len() == self.n_cols,
            "packed row {row}"
        );
        if row >= self.packed_rows() {
            let at = (row - self.packed_rows()) * self.row_bytes;
            crate::quant::dequantize_row(self.format.ty(), &self.tail[at..][..self.row_bytes], out)
                .expect("a packed format dequantizes");
            return;
        }
        let gbb = self.format.group_block_bytes();
        let group = &self.groups[row / GROUP_ROWS * self.nb * gbb..][..self.nb * gbb];
        for (b, y) in out.chunks_exact_mut(32).enumerate() {
            let rb = self.format.row_block(group, b, row % GROUP_ROWS);
            for (k, (y, &w)) in y.iter_mut().zip(&rb.weights).enumerate() {
                // The file formats' own order: Q6_K's `(d · sc) · q`, Q4_K's `(d · sc) ·
                // u - dmin · m`, and `q · d` for Q8_0 and Q5_0 (which have no min).
                *y = match self.format {
                    PackedFormat::Q6_K => rb.scale * rb.halves[k / 16] as f32 * w as f32,
                    PackedFormat::Q4_K => rb.scale * w as f32 - rb.min,
                    PackedFormat::Q8_0 | PackedFormat::Q5_0 => rb.scale * w as f32,
                };
            }
        }
    }

    /// Rows in whole groups.
    fn packed_rows(&self) -> usize {
        self.n_rows - self.n_rows % GROUP_ROWS
    }

    /// Groups per part of a product: all of them on the calling thread, or enough
    /// parts for each thread of `pool` to claim [`CHUNKS_PER_THREAD`].
    fn chunk_groups(&self, pool: &ThreadPool, parallel: bool) -> usize {
        let n_groups = self.packed_rows() / GROUP_ROWS;
        if parallel {
            n_groups
                .div_ceil(pool.n_threads() * CHUNKS_PER_THREAD)
                .max(1)
        } else {
            n_groups.max(1)
        }
    }
}

/// Converts Q8_0 activation blocks (34 bytes each) into the prepared form the packed
/// kernels read ([`ACT_BLOCK_BYTES`] each).
pub fn prepare_acts(q8: &[u8], out: &mut [u8]) {
    for (src, dst) in q8
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(ACT_BLOCK_BYTES))
    {
        let d = f16_le([src[0], src[1]]);
        let half = |h: usize| -> i32 {
            src[2 + 16 * h..][..16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum()
        };
        let (first, second) = (half(0), half(1));
        dst[..4].copy_from_slice(&d.to_le_bytes());
        dst[4..8].copy_from_slice(&(-128 * (first + second)).to_le_bytes());
        dst[8..12].copy_from_slice(&(-32 * first).to_le_bytes());
        dst[12..16].copy_from_slice(&(-32 * second).to_le_bytes());
        dst[ACT_QUANTS..].copy_from_slice(&src[2..]);
    }
}

/// The reference every level's packed kernel for `format` equals bit for bit
/// ([`PackedDotFn`]).
pub fn reference(format: PackedFormat) -> PackedDotFn {
    match format {
        PackedFormat::Q8_0 => {
            |g, nb, a, n, out| dot_groups_scalar(PackedFormat::Q8_0, g, nb, a, n, out)
        }
        PackedFormat::Q5_0 => {
            |g, nb, a, n, out| dot_groups_scalar(PackedFormat::Q5_0, g, nb, a, n, out)
        }
        PackedFormat::Q4_K => {
            |g, nb, a, n, out| dot_groups_scalar(PackedFormat::Q4_K, g, nb, a, n, out)
        }
        PackedFormat::Q6_K => {
            |g, nb, a, n, out| dot_groups_scalar(PackedFormat::Q6_K, g, nb, a, n, out)
        }
    }
}

/// `out[t·n + r]` for the `n` rows of `groups` (whole groups of `nb` blocks of
/// `format`) and the `n_tokens` prepared activation rows of `acts` (`nb` blocks each,
/// back to back), with plain integer and float arithmetic.
fn dot_groups_scalar(
    format: PackedFormat,
    groups: &[u8],
    nb: usize,
    acts: &[u8],
    n_tokens: usize,
    out: &mut [f32],
) {
    let n_rows = check_call(format, groups, nb, acts, n_tokens, out) * GROUP_ROWS;
    let gbb = format.group_block_bytes();
    for t in 0..n_tokens {
        let a = &acts[t * nb * ACT_BLOCK_BYTES..][..nb * ACT_BLOCK_BYTES];
        for (g, group) in groups.chunks_exact(nb * gbb).enumerate() {
            for l in 0..GROUP_ROWS {
                let mut acc = 0.0f32;
                for (b, ab) in a.chunks_exact(ACT_BLOCK_BYTES).enumerate() {
                    let rb = format.row_block(group, b, l);
                    let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
                    let q = &ab[ACT_QUANTS..];
                    let half = |h: usize| -> i32 {
                        (16 * h..16 * h + 16)
                            .map(|k| rb.weights[k] * q[k] as i8 as i32)
                            .sum()
                    };
                    let sum = rb.halves[0] * half(0) + rb.halves[1] * half(1);
                    acc = (sum as f32).mul_add(rb.scale * da, acc);
                    if format == PackedFormat::Q4_K {
                        // The min: `-min · da · Σ a`, Σ a from the prepared `-128 · Σ a`.
                        let prepared = i32::from_le_bytes([ab[4], ab[5], ab[6], ab[7]]);
                        acc = (-rb.min).mul_add(da * (-(prepared >> 7)) as f32, acc);
                    }
                }
                out[t * n_rows + g * GROUP_ROWS + l] = acc;
            }
        }
    }
}

/// Checks the sizes of one [`PackedDotFn`] call, so that a kernel never reads or writes
/// outside its slices, and returns its number of groups.
///
/// # Panics
/// When `groups` is not whole groups of `nb` blocks, or `acts` and `out` do not match it
/// for `n_tokens` tokens.
pub(crate) fn check_call(
    format: PackedFormat,
    groups: &[u8],
    nb: usize,
    acts: &[u8],
    n_tokens: usize,
    out: &[f32],
) -> usize {
    let group_bytes = nb * format.group_block_bytes();
    assert!(
        group_bytes > 0
            && nb.is_multiple_of(format.blocks_per_unit())
            && groups.len().is_multiple_of(group_bytes),
        "{} bytes are not whole groups of {nb} {format:?} blocks",
        groups.len()
    );
    let n_groups = groups.len() / group_bytes;
    let n_rows = n_groups * GROUP_ROWS;
    assert!(
        acts.len() == n_tokens * nb * ACT_BLOCK_BYTES && out.len() == n_tokens * n_rows,
        "{} activation bytes and {} outputs for {n_tokens} tokens of {nb} blocks and {n_rows} rows",
        acts.len(),
        out.len()
    );
    n_groups
}

/// `out[t] = p · x[t]` for `n_tokens` tokens (`x` is `[n_tokens, n_cols]`, `out`
/// `[n_tokens, n_rows]`), every token through the packed form, with the kernels of
/// [`Kernels::get`]. See [`matmul_packed_many_with`].
pub fn matmul_packed(
    pool: &ThreadPool,
    p: &PackedMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_packed_many_with(Kernels::get(), pool, &mut [(p, out)], x, n_tokens, scratch)
}

/// As [`matmul_packed`], with an explicit kernel table.
pub fn matmul_packed_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    p: &PackedMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_packed_many_with(kernels, pool, &mut [(p, out)], x, n_tokens, scratch)
}

/// [`matmul_packed`], and `keys[t]` = [`Ops::block_max_keys`] of `out[t]` (`keys` is
/// `[n_tokens, n_rows.div_ceil(KEY_BLOCK)]`), each key taken while its block of outputs
/// is still in L1. A sampler's greedy argmax and top-k scan start from these keys; taken
/// afterwards, they cost a pass over logits that an output head's weights have pushed
/// out of the cache (Gemma 3 270M: 1 MiB per token, about a tenth of a millisecond).
pub fn matmul_packed_keyed(
    pool: &ThreadPool,
    p: &PackedMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    keys: &mut [i32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_packed_keyed_with(Kernels::get(), pool, p, x, n_tokens, out, keys, scratch)
}

/// As [`matmul_packed_keyed`], with an explicit kernel table.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed_keyed_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    p: &PackedMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    keys: &mut [i32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    if n_tokens.checked_mul(p.n_rows.div_ceil(KEY_BLOCK)) != Some(keys.len()) {
        return Err(MatmulError::Keys {
            n_tokens,
            n_rows: p.n_rows,
            actual: keys.len(),
        });
    }
    products(
        kernels,
        pool,
        &mut [(p, out)],
        x,
        n_tokens,
        scratch,
        Some(keys),
    )
}

/// [`matmul_packed`] of the same `x` through each `(p, out)` of `products`, in one
/// dispatch of the pool. See [`matmul_packed_many_with`].
pub fn matmul_packed_many(
    pool: &ThreadPool,
    products: &mut [(&PackedMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_packed_many_with(Kernels::get(), pool, products, x, n_tokens, scratch)
}

/// As [`matmul_packed_many`], with an explicit kernel table: each format's packed kernel
/// for the whole groups (the [`reference`] where the level has none), the level's dot
/// for the rows after them. The activations are quantized once, by the level's Q8_0
/// quantizer (as the unpacked products quantize them), and the groups of all the
/// products are dealt from one set of runs (`claims::Runs`), so a thread done with Q's
/// goes on with K's.
/// Every product's shapes are checked before anything is computed; a mismatch is an
/// error, not a panic.
pub fn matmul_packed_many_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &mut [(&PackedMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    self::products(kernels, pool, products, x, n_tokens, scratch, None)
}

/// [`matmul_packed_many_with`], and the first product's block keys into `keys` when
/// there are any (checked by the caller: `[n_tokens, n_rows.div_ceil(KEY_BLOCK)]`).
fn products(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &mut [(&PackedMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
    scratch: &mut MatmulScratch,
    mut keys: Option<&mut [i32]>,
) -> Result<(), MatmulError> {
    if products.len() > MAX_PRODUCTS {
        for (p, out) in products.iter_mut() {
            let keys = keys.take();
            self::products(kernels, pool, &mut [(p, out)], x, n_tokens, scratch, keys)?;
        }
        return Ok(());
    }
    let Some(n_cols) = products.first().map(|(p, _)| p.n_cols) else {
        return Ok(());
    };
    let act = TensorType::Q8_0;
    let mut dots: [Option<DotFn>; MAX_PRODUCTS] = [None; MAX_PRODUCTS];
    for ((p, out), dot) in products.iter().zip(&mut dots) {
        if n_tokens.checked_mul(p.n_cols) != Some(x.len()) {
            return Err(MatmulError::Activations {
                n_tokens,
                n_cols: p.n_cols,
                actual: x.len(),
            });
        }
        if n_tokens.checked_mul(p.n_rows) != Some(out.len()) {
            return Err(MatmulError::Output {
                n_tokens,
                n_rows: p.n_rows,
                actual: out.len(),
            });
        }
        let ty = p.format.ty();
        *dot = Some(kernels.dot(ty).ok_or(MatmulError::NotComputable(ty))?);
    }
    let quantize = kernels.quantizer(act).ok_or(MatmulError::NoQuantizer {
        ty: products[0].0.format.ty(),
        activation: act,
    })?;
    if x.is_empty() {
        return Ok(());
    }

    // Q8_0 rows (for the tails' dot), then the prepared rows, one scratch buffer.
    let nb = n_cols / 32;
    let q_len = nb * Q8_0_BYTES;
    let a_len = nb * ACT_BLOCK_BYTES;
    let buf = line_bytes(&mut scratch.lines, n_tokens * (q_len + a_len));
    let (q8, acts) = buf.split_at_mut(n_tokens * q_len);
    let total_rows: usize = products.iter().map(|(p, _)| p.n_rows).sum();
    let parallel = n_tokens.saturating_mul(n_cols).saturating_mul(total_rows) >= MIN_PARALLEL_MACS;
    // A prompt's rows on every thread, as `matmul_with` quantizes them: on the calling
    // thread alone they took about a tenth of a 188-token prompt step at 2 threads while
    // the other thread waited (Gemma 3 270M, everything packed).
    let (q_rows, a_rows) = (SharedSlice::new(q8), SharedSlice::new(acts));
    for_each_act_row(pool, parallel, n_tokens, x.len(), &|t| {
        // SAFETY: each token is visited once (`for_each_act_row`), and token `t`'s pieces
        // are its own rows: no two live pieces overlap.
        let (q, a) = unsafe {
            (
                q_rows.piece(t * q_len, q_len),
                a_rows.piece(t * a_len, a_len),
            )
        };
        quantize(&x[t * n_cols..][..n_cols], q);
        prepare_acts(q, a);
    });
    let (q8, acts) = (&*q8, &*acts);

    let mut parts: [Option<Part<'_>>; MAX_PRODUCTS] = Default::default();
    let mut first_chunk = 0;
    for ((p, out), part) in products.iter_mut().zip(&mut parts) {
        let keys = keys.take().map(SharedSlice::new);
        let mut chunk_groups = p.chunk_groups(pool, parallel);
        if keys.is_some() {
            // Every call then starts at a key block and, but for the last, fills it.
            chunk_groups = chunk_groups.next_multiple_of(GROUPS_PER_CALL);
        }
        let n_chunks = (p.packed_rows() / GROUP_ROWS).div_ceil(chunk_groups);
        *part = Some(Part {
            p,
            kernel: kernels.packed(p.format).unwrap_or(reference(p.format)),
            out: SharedSlice::new(out),
            keys,
            chunk_groups,
            first_chunk,
            n_chunks,
        });
        first_chunk += n_chunks;
    }
    let task = GroupProducts {
        parts,
        acts,
        n_tokens,
        runs: Runs::new(first_chunk, if parallel { pool.n_threads() } else { 1 }),
    };
    if parallel {
        pool.run(&|ith, _| task.run(ith));
    } else {
        task.run(0);
    }
    for (part, dot) in task.parts.iter().zip(dots) {
        if let (Some(part), Some(dot)) = (part, dot) {
            part.finish_tail(dot, q8, q_len, n_tokens);
            part.finish_keys(n_tokens);
        }
    }
    Ok(())
}

/// [`matmul_with`] for `w`, of which `p` is the packed form: every token goes through
/// `p` where the level's packed kernels beat its GEMM at prompt sizes
/// ([`Kernels::packed_prompts`]); elsewhere the tokens the row path would take (decoding
/// sequences; see `GemmTokens`) go through `p` and the rest through the GEMM on `w`. So
/// every token of the row path gets the packed result, whoever shares its batch.
/// `products` is one or more `(w, p, out)` of the same `x`; where all of them split `x`
/// at the same token, their packed parts go in one dispatch.
pub fn matmul_rows_packed(
    pool: &ThreadPool,
    products: &mut [(&WeightMatrix<'_>, &PackedMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_rows_packed_with(Kernels::get(), pool, products, x, n_tokens, scratch)
}

/// As [`matmul_rows_packed`], with an explicit kernel table.
pub fn matmul_rows_packed_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &mut [(&WeightMatrix<'_>, &PackedMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    for (w, p, out) in products.iter() {
        if PackedFormat::of(w.ty()) != Some(p.format)
            || (w.n_rows(), w.n_cols()) != (p.n_rows, p.n_cols)
        {
            return Err(MatmulError::PackedShape {
                ty: w.ty(),
                n_rows: w.n_rows(),
                n_cols: w.n_cols(),
            });
        }
        if n_tokens.checked_mul(p.n_cols) != Some(x.len()) {
            return Err(MatmulError::Activations {
                n_tokens,
                n_cols: p.n_cols,
                actual: x.len(),
            });
        }
        if n_tokens.checked_mul(p.n_rows) != Some(out.len()) {
            return Err(MatmulError::Output {
                n_tokens,
                n_rows: p.n_rows,
                actual: out.len(),
            });
        }
    }
    // Where each product's GEMM tokens start: the same rule as `matmul_with`'s, except
    // at a level whose packed kernels beat its GEMM at prompt sizes too
    // (`Kernels::packed_prompts`), where every token goes through the packed form and
    // a prompt's tokens get the result a decoding token gets. `examples/gemm_speed`, 512
    // tokens, one thread, Emerald Rapids, AVX-512 VNNI: Q5_0 2048 × 640 90 → 143 GMAC
    // per CPU-second, Q8_0 94 → 174, 4096 × 3584 Q5_0 121 → 163, Q8_0 138 → 193; Gemma
    // 3 270M's four 188-token prompts at 2 threads got their first tokens 17–22 % sooner.
    // At AVX2, Q5_0 58 → 59 at 640 columns but 71 → 65 at 3584, and those four prompts
    // gained nothing (five alternations of the servers: as often slower as faster), so
    // that level keeps the GEMM.
    let row_tokens = |ty: TensorType| {
        let packed = kernels.packed_prompts()
            && PackedFormat::of(ty).is_some_and(|f| kernels.packed(f).is_some());
        if !packed && kernels.gemm().is_some() && gemm::supports(ty) {
            gemm_first(scratch.gemm_tokens, n_tokens)
        } else {
            n_tokens
        }
    };
    let k = row_tokens(
        products
            .first()
            .map_or(TensorType::Q8_0, |(w, _, _)| w.ty()),
    );
    if products.iter().any(|(w, _, _)| row_tokens(w.ty()) != k) {
        for (w, p, out) in products.iter_mut() {
            matmul_rows_packed_with(kernels, pool, &mut [(w, p, out)], x, n_tokens, scratch)?;
        }
        return Ok(());
    }
    let n_cols = products.first().map_or(0, |(_, p, _)| p.n_cols);
    if k < n_tokens {
        let by_token = scratch.gemm_tokens;
        scratch.gemm_tokens = super::GemmTokens::From(0);
        let mut r = Ok(());
        for (w, _, out) in products.iter_mut() {
            let out = &mut out[k * w.n_rows()..];
            r = matmul_with(
                kernels,
                pool,
                w,
                &x[k * n_cols..],
                n_tokens - k,
                out,
                scratch,
            );
            if r.is_err() {
                break;
            }
        }
        scratch.gemm_tokens = by_token;
        r?;
    }
    let x = &x[..k * n_cols];
    let rows = |p: &PackedMatrix| ..k * p.n_rows;
    match products {
        [(_, a, oa)] => {
            let oa = &mut oa[rows(a)];
            matmul_packed_many_with(kernels, pool, &mut [(a, oa)], x, k, scratch)
        }
        [(_, a, oa), (_, b, ob)] => {
            let (oa, ob) = (&mut oa[rows(a)], &mut ob[rows(b)]);
            matmul_packed_many_with(kernels, pool, &mut [(a, oa), (b, ob)], x, k, scratch)
        }
        [(_, a, oa), (_, b, ob), (_, c, oc)] => {
            let (oa, ob, oc) = (&mut oa[rows(a)], &mut ob[rows(b)], &mut oc[rows(c)]);
            let list = &mut [(*a, oa), (*b, ob), (*c, oc)];
            matmul_packed_many_with(kernels, pool, list, x, k, scratch)
        }
        _ => {
            for (_, p, out) in products.iter_mut() {
                let out = &mut out[rows(p)];
                matmul_packed_many_with(kernels, pool, &mut [(p, out)], x, k, scratch)?;
            }
            Ok(())
        }
    }
}

/// One product of a [`GroupProducts`] dispatch: chunks `first_chunk..+n_chunks` of the
/// dispatch's runs are its groups, `chunk_groups` at a time.
struct Part<'a> {
    p: &'a PackedMatrix,
    kernel: PackedDotFn,
    /// `[n_tokens, n_rows]`
    out: SharedSlice<'a, f32>,
    /// `[n_tokens, n_rows.div_ceil(KEY_BLOCK)]`, when the caller wants the outputs' block
    /// keys (`chunk_groups` is then a whole number of calls).
    keys: Option<SharedSlice<'a, i32>>,
    chunk_groups: usize,
    first_chunk: usize,
    n_chunks: usize,
}

/// The packed groups of one dispatch, claimed chunk by chunk by whichever threads run
/// [`GroupProducts::run`].
struct GroupProducts<'a> {
    parts: [Option<Part<'a>>; MAX_PRODUCTS],
    /// The prepared activation rows, back to back.
    acts: &'a [u8],
    n_tokens: usize,
    /// The chunks of all parts, `first_chunk` numbering them.
    runs: Runs,
}

impl GroupProducts<'_> {
    /// Claims chunks until none is left; each goes to its product's kernel
    /// [`GROUPS_PER_CALL`] groups and [`TOKENS_PER_CALL`] tokens at a time, through a
    /// local buffer (the call's outputs are `[tokens, rows]` for its own rows only).
    fn run(&self, ith: usize) {
        let mut buf = [0.0f32; GROUPS_PER_CALL * GROUP_ROWS * TOKENS_PER_CALL];
        while let Some(chunk) = self.runs.claim(ith) {
            let Some(part) = self
                .parts
                .iter()
                .flatten()
                .find(|p| (p.first_chunk..p.first_chunk + p.n_chunks).contains(&chunk))
            else {
                return;
            };
            part.run_chunk(chunk - part.first_chunk, self.acts, self.n_tokens, &mut buf);
        }
    }
}

impl Part<'_> {
    /// The groups of chunk `chunk` against every token.
    fn run_chunk(&self, chunk: usize, acts: &[u8], n_tokens: usize, buf: &mut [f32]) {
        let p = self.p;
        let (nb, n_rows) = (p.nb, p.n_rows);
        let group_bytes = nb * p.format.group_block_bytes();
        let a_len = nb * ACT_BLOCK_BYTES;
        let n_groups = p.packed_rows() / GROUP_ROWS;
        let g0 = chunk * self.chunk_groups;
        let g1 = (g0 + self.chunk_groups).min(n_groups);
        let n_keys = n_rows.div_ceil(KEY_BLOCK);
        for s0 in (g0..g1).step_by(GROUPS_PER_CALL) {
            let s1 = (s0 + GROUPS_PER_CALL).min(g1);
            let rows = (s1 - s0) * GROUP_ROWS;
            let groups = &p.groups[s0 * group_bytes..s1 * group_bytes];
            // A whole call is one key block per token (the chunk starts at one: see
            // `keys`); the others' keys come after the dispatch.
            let keys = self.keys.as_ref().filter(|_| rows == KEY_BLOCK);
            for t0 in (0..n_tokens).step_by(TOKENS_PER_CALL) {
                let nt = TOKENS_PER_CALL.min(n_tokens - t0);
                let o = &mut buf[..nt * rows];
                (self.kernel)(groups, nb, &acts[t0 * a_len..][..nt * a_len], nt, o);
                // The call's outputs are `[nt, KEY_BLOCK]`: every token's key in one pass.
                let mut call_keys = [0; TOKENS_PER_CALL];
                if keys.is_some() {
                    Ops::get().block_max_keys(o, &mut call_keys[..nt]);
                }
                for (t, o) in o.chunks_exact(rows).enumerate() {
                    // SAFETY: groups g0..g1 belong to this chunk, which the runs hand
                    // to exactly one thread, so out[t, 16·s0..16·s1] is written by nobody
                    // else; the tail rows are written after the pool ends.
                    let dst = unsafe { self.out.piece((t0 + t) * n_rows + s0 * GROUP_ROWS, rows) };
                    dst.copy_from_slice(o);
                    if let Some(keys) = keys {
                        let at = (t0 + t) * n_keys + s0 * GROUP_ROWS / KEY_BLOCK;
                        // SAFETY: as the outputs: the key of rows 16·s0.. is this chunk's.
                        let key = unsafe { keys.piece(at, 1) };
                        key[0] = call_keys[t];
                    }
                }
            }
        }
    }

    /// The keys of the blocks no kernel call filled: those with rows after the last
    /// whole call of groups (the last block, when the groups do not fill it, and the
    /// tail rows'). Runs after [`Part::finish_tail`].
    fn finish_keys(&self, n_tokens: usize) {
        let Some(keys) = &self.keys else {
            return;
        };
        let n_rows = self.p.n_rows;
        let n_keys = n_rows.div_ceil(KEY_BLOCK);
        let first = self.p.packed_rows() / KEY_BLOCK;
        for t in 0..n_tokens {
            // SAFETY: the pool's parts are done; these are the only live pieces.
            let (o, k) = unsafe {
                (
                    self.out
                        .piece(t * n_rows + first * KEY_BLOCK, n_rows - first * KEY_BLOCK),
                    keys.piece(t * n_keys + first, n_keys - first),
                )
            };
            Ops::get().block_max_keys(o, k);
        }
    }

    /// The rows after the last whole group, with the level's dot for the format on the
    /// Q8_0 activation rows (`q_len` bytes each in `q8`).
    fn finish_tail(&self, dot: DotFn, q8: &[u8], q_len: usize, n_tokens: usize) {
        let p = self.p;
        let rb = p.row_bytes;
        let r0 = p.packed_rows();
        for t in 0..n_tokens {
            let a = &q8[t * q_len..][..q_len];
            // SAFETY: the pool's parts are done; this is the only live piece.
            let o = unsafe { self.out.piece(t * p.n_rows + r0, p.n_rows - r0) };
            for (o, w) in o.iter_mut().zip(p.tail.chunks_exact(rb)) {
                *o = dot(w, a);
            }
        }
    }
}
