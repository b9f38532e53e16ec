//! Q8_0 weights packed sixteen rows at a time, for the products of a few tokens.
//!
//! A decode step of continuous batching multiplies each matrix by one activation row per
//! running sequence. With rows as GGUF stores them, a kernel meets one row's block at a
//! time: its integer sum fills a vector whose lanes must then be converted, scaled and
//! summed for that row alone, once per token. On Gemma 3 270M the Q8_0 output head
//! (262,144 rows) then costs more at four tokens than reading it does, which held a
//! 4-sequence step at 1.5 times a 1-sequence one.
//!
//! Here sixteen rows are interleaved four bytes at a time, so one 512-bit multiply-add
//! (`vpdpbusd`) takes four weights of each of the sixteen rows against the same four
//! activations (broadcast), and a block's conversion, scaling and accumulation serve
//! sixteen rows in one instruction each. Per row, token and block that is about 0.7
//! vector instructions where the row layout needs about 2.4 (AVX-512), so a few tokens
//! cost what reading the matrix costs.
//!
//! # Layout
//! Group `g` holds rows `16g..16g + 16`; its `nb` blocks follow each other, each
//! [`GROUP_BLOCK_BYTES`] long: the sixteen rows' f16 scales (row `l` at bytes `2l..2l+2`),
//! then chunk `c` (`0..8`) of every row: bytes `32 + 64c + 4l ..+ 4` are quants `4c..4c+4`
//! of row `l`'s block, as signed bytes. Rows past the last whole group stay as Q8_0 rows
//! and take the level's ordinary dot.
//!
//! # Arithmetic
//! Every level computes each (row, token) result as [`dot_groups_scalar`] does: per block,
//! the exact integer sum of the 32 products, converted to f32 (exact: it is below 2²⁴),
//! times `d_w · d_a` (one f32 product) added with one fused multiply-add, blocks in order.
//! That is not the row layout's order (which sums eight partial lanes), so a packed
//! matrix's results differ from the unpacked one's in the last bits; but they depend only
//! on the row and the token, never on how many tokens share the call or how the rows are
//! split among threads.
//!
//! The memory cost is a second copy of the matrix (the file's bytes stay loaded), so a model
//! packs only what it multiplies by several tokens at once: the output head when several
//! sequences decode (see the model's `pack_head`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    line_bytes, MatmulError, MatmulScratch, SharedSlice, WeightMatrix, CHUNKS_PER_THREAD,
    MIN_PARALLEL_MACS, TOKENS_PER_CALL,
};
use crate::dispatch::{Kernels, PackedDotFn};
use crate::pool::ThreadPool;
use crate::quant::blocks::f16_le;
use crate::quant::TensorType;

/// Rows per group.
pub const GROUP_ROWS: usize = 16;

/// Bytes of one block of a group: sixteen f16 scales and sixteen rows of 32 quants.
pub const GROUP_BLOCK_BYTES: usize = 2 * GROUP_ROWS + 32 * GROUP_ROWS;

/// Bytes of one prepared activation block: the scale as f32, `-128 · Σ q` as i32 (what
/// the AVX-512 kernel's unsigned weights need taken off), then the 32 quants.
pub const ACT_BLOCK_BYTES: usize = 40;

/// Bytes of a Q8_0 block.
const Q8_0_BYTES: usize = 34;

/// Groups per kernel call: the call's outputs for [`TOKENS_PER_CALL`] tokens fit a 4 KiB
/// buffer on the stack.
const GROUPS_PER_CALL: usize = 4;

/// A Q8_0 matrix `[n_rows, n_cols]` packed in groups of [`GROUP_ROWS`] rows (see the
/// module documentation), owning its bytes.
pub struct PackedQ8_0 {
    n_rows: usize,
    n_cols: usize,
    /// Blocks per row.
    nb: usize,
    /// The whole groups, on huge pages where the OS allows (a decode step streams all of
    /// them; on small pages the TLB misses cost ~10 % of a 178 MB head's read).
    groups: memmap2::MmapMut,
    /// Rows past the last whole group, as Q8_0 rows.
    tail: Vec<u8>,
}

impl std::fmt::Debug for PackedQ8_0 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedQ8_0")
            .field("n_rows", &self.n_rows)
            .field("n_cols", &self.n_cols)
            .finish_non_exhaustive()
    }
}

impl PackedQ8_0 {
    /// Packs `w` when it is Q8_0 with at least one whole group; `None` otherwise.
    /// Packs `w` when it is Q8_0 with at least one whole group and one block per row;
    /// `Ok(None)` otherwise, an error when the memory for it cannot be mapped.
    pub fn pack(w: &WeightMatrix<'_>) -> std::io::Result<Option<PackedQ8_0>> {
        if w.ty() != TensorType::Q8_0 || w.n_rows() < GROUP_ROWS || w.n_cols() == 0 {
            return Ok(None);
        }
        let (n_rows, n_cols, rb) = (w.n_rows(), w.n_cols(), w.row_bytes());
        let nb = rb / Q8_0_BYTES;
        let n_groups = n_rows / GROUP_ROWS;
        let mut groups = memmap2::MmapMut::map_anon(n_groups * nb * GROUP_BLOCK_BYTES)?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without huge pages the products are the same, a little slower.
            let _ = groups.advise(memmap2::Advice::HugePage);
        }
        for (g, dst) in groups.chunks_exact_mut(nb * GROUP_BLOCK_BYTES).enumerate() {
            for (b, dst) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
                for l in 0..GROUP_ROWS {
                    let src = &w.row(g * GROUP_ROWS + l)[b * Q8_0_BYTES..][..Q8_0_BYTES];
                    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
                    for c in 0..8 {
                        let at = 2 * GROUP_ROWS + 64 * c + 4 * l;
                        dst[at..at + 4].copy_from_slice(&src[2 + 4 * c..][..4]);
                    }
                }
            }
        }
        let tail = w.data()[n_groups * GROUP_ROWS * rb..].to_vec();
        Ok(Some(PackedQ8_0 {
            n_rows,
            n_cols,
            nb,
            groups,
            tail,
        }))
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

    /// Rows in whole groups.
    fn packed_rows(&self) -> usize {
        self.n_rows - self.n_rows % GROUP_ROWS
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
        let sum: i32 = src[2..].iter().map(|&q| q as i8 as i32).sum();
        dst[..4].copy_from_slice(&d.to_le_bytes());
        dst[4..8].copy_from_slice(&(-128 * sum).to_le_bytes());
        dst[8..].copy_from_slice(&src[2..]);
    }
}

/// The reference every level's packed kernel equals bit for bit ([`PackedDotFn`]):
/// `out[t·n + r]` for the `n` rows of `groups` (whole groups of `nb` blocks) and the
/// `n_tokens` prepared activation rows of `acts` (`nb` blocks each, back to back).
pub fn dot_groups_scalar(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]) {
    let n_rows = check_call(groups, nb, acts, n_tokens, out) * GROUP_ROWS;
    let group_bytes = nb * GROUP_BLOCK_BYTES;
    for t in 0..n_tokens {
        let a = &acts[t * nb * ACT_BLOCK_BYTES..][..nb * ACT_BLOCK_BYTES];
        for (g, group) in groups.chunks_exact(group_bytes).enumerate() {
            for l in 0..GROUP_ROWS {
                let mut acc = 0.0f32;
                for (blk, ab) in group
                    .chunks_exact(GROUP_BLOCK_BYTES)
                    .zip(a.chunks_exact(ACT_BLOCK_BYTES))
                {
                    let dw = f16_le([blk[2 * l], blk[2 * l + 1]]);
                    let da = f32::from_le_bytes([ab[0], ab[1], ab[2], ab[3]]);
                    let mut sum = 0i32;
                    for c in 0..8 {
                        for j in 0..4 {
                            let w = blk[2 * GROUP_ROWS + 64 * c + 4 * l + j] as i8;
                            sum += w as i32 * ab[8 + 4 * c + j] as i8 as i32;
                        }
                    }
                    acc = (sum as f32).mul_add(dw * da, acc);
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
    groups: &[u8],
    nb: usize,
    acts: &[u8],
    n_tokens: usize,
    out: &[f32],
) -> usize {
    let group_bytes = nb * GROUP_BLOCK_BYTES;
    assert!(
        group_bytes > 0 && groups.len().is_multiple_of(group_bytes),
        "{} bytes are not whole groups of {nb} blocks",
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
/// `[n_tokens, n_rows]`), with the kernels of [`Kernels::get`]. See [`matmul_packed_with`].
pub fn matmul_packed(
    pool: &ThreadPool,
    p: &PackedQ8_0,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_packed_with(Kernels::get(), pool, p, x, n_tokens, out, scratch)
}

/// As [`matmul_packed`], with an explicit kernel table: the level's packed kernel for the
/// whole groups (the scalar reference where the level has none), its Q8_0 dot for the
/// rows after them. The activations are quantized by the level's Q8_0 quantizer, as the
/// unpacked product does. Shapes are checked before anything is computed.
pub fn matmul_packed_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    p: &PackedQ8_0,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let (n_rows, n_cols, nb) = (p.n_rows, p.n_cols, p.nb);
    let ty = TensorType::Q8_0;
    if n_tokens.checked_mul(n_cols) != Some(x.len()) {
        return Err(MatmulError::Activations {
            n_tokens,
            n_cols,
            actual: x.len(),
        });
    }
    if n_tokens.checked_mul(n_rows) != Some(out.len()) {
        return Err(MatmulError::Output {
            n_tokens,
            n_rows,
            actual: out.len(),
        });
    }
    let dot = kernels.dot(ty).ok_or(MatmulError::NotComputable(ty))?;
    let quantize = kernels
        .quantizer(ty)
        .ok_or(MatmulError::NoQuantizer { ty, activation: ty })?;
    if out.is_empty() {
        return Ok(());
    }
    let kernel = kernels.packed_q8_0().unwrap_or(dot_groups_scalar);

    // Q8_0 rows (for the tail's dot), then the prepared rows, one scratch buffer.
    let q_len = nb * Q8_0_BYTES;
    let a_len = nb * ACT_BLOCK_BYTES;
    let buf = line_bytes(&mut scratch.lines, n_tokens * (q_len + a_len));
    let (q8, acts) = buf.split_at_mut(n_tokens * q_len);
    for (t, xt) in x.chunks_exact(n_cols).enumerate() {
        let q = &mut q8[t * q_len..][..q_len];
        quantize(xt, q);
        prepare_acts(q, &mut acts[t * a_len..][..a_len]);
    }
    let (q8, acts) = (&*q8, &*acts);

    let n_groups = p.packed_rows() / GROUP_ROWS;
    let parallel = x.len().saturating_mul(n_rows) >= MIN_PARALLEL_MACS;
    let task = GroupProducts {
        p,
        kernel,
        acts,
        n_tokens,
        out: SharedSlice::new(out),
        next_chunk: AtomicUsize::new(0),
        chunk_groups: if parallel {
            n_groups
                .div_ceil(pool.n_threads() * CHUNKS_PER_THREAD)
                .max(1)
        } else {
            n_groups
        },
    };
    if parallel {
        pool.run(&|_, _| task.run());
    } else {
        task.run();
    }
    task.finish_tail(dot, q8, q_len);
    Ok(())
}

/// The packed groups of one call, claimed chunk by chunk by whichever threads run
/// [`GroupProducts::run`].
struct GroupProducts<'a> {
    p: &'a PackedQ8_0,
    kernel: PackedDotFn,
    /// The prepared activation rows, back to back.
    acts: &'a [u8],
    n_tokens: usize,
    /// `[n_tokens, n_rows]`
    out: SharedSlice<'a, f32>,
    next_chunk: AtomicUsize,
    chunk_groups: usize,
}

impl GroupProducts<'_> {
    /// Claims chunks of groups until none is left; each goes to the kernel
    /// [`GROUPS_PER_CALL`] groups and [`TOKENS_PER_CALL`] tokens at a time, through a
    /// local buffer (the call's outputs are `[tokens, rows]` for its own rows only).
    fn run(&self) {
        let p = self.p;
        let (nb, n_rows) = (p.nb, p.n_rows);
        let group_bytes = nb * GROUP_BLOCK_BYTES;
        let a_len = nb * ACT_BLOCK_BYTES;
        let n_groups = p.packed_rows() / GROUP_ROWS;
        let mut buf = [0.0f32; GROUPS_PER_CALL * GROUP_ROWS * TOKENS_PER_CALL];
        loop {
            // Relaxed: the counter only hands out chunk numbers; the data every thread
            // reads was published by the pool's dispatch.
            let chunk = self.next_chunk.fetch_add(1, Ordering::Relaxed);
            let g0 = chunk.saturating_mul(self.chunk_groups);
            if g0 >= n_groups {
                return;
            }
            let g1 = (g0 + self.chunk_groups).min(n_groups);
            for s0 in (g0..g1).step_by(GROUPS_PER_CALL) {
                let s1 = (s0 + GROUPS_PER_CALL).min(g1);
                let rows = (s1 - s0) * GROUP_ROWS;
                let groups = &p.groups[s0 * group_bytes..s1 * group_bytes];
                for t0 in (0..self.n_tokens).step_by(TOKENS_PER_CALL) {
                    let nt = TOKENS_PER_CALL.min(self.n_tokens - t0);
                    let o = &mut buf[..nt * rows];
                    (self.kernel)(groups, nb, &self.acts[t0 * a_len..][..nt * a_len], nt, o);
                    for (t, o) in o.chunks_exact(rows).enumerate() {
                        // SAFETY: groups g0..g1 belong to this chunk, which the counter
                        // hands to exactly one thread, so out[t, 16·s0..16·s1] is written
                        // by nobody else; the tail rows are written after the pool ends.
                        let dst =
                            unsafe { self.out.piece((t0 + t) * n_rows + s0 * GROUP_ROWS, rows) };
                        dst.copy_from_slice(o);
                    }
                }
            }
        }
    }

    /// The rows after the last whole group, with the level's Q8_0 dot on the Q8_0
    /// activation rows (`q_len` bytes each in `q8`).
    fn finish_tail(&self, dot: crate::dispatch::DotFn, q8: &[u8], q_len: usize) {
        let p = self.p;
        let rb = p.nb * Q8_0_BYTES;
        let r0 = p.packed_rows();
        for t in 0..self.n_tokens {
            let a = &q8[t * q_len..][..q_len];
            // SAFETY: the pool's parts are done; this is the only live piece.
            let o = unsafe { self.out.piece(t * p.n_rows + r0, p.n_rows - r0) };
            for (o, w) in o.iter_mut().zip(p.tail.chunks_exact(rb)) {
                *o = dot(w, a);
            }
        }
    }
}
