//! Matrix × vector and matrix × matrix products over any tensor format.
//!
//! `out[t, r] = Σ_c w[r, c] · x[t, c]`, as ggml's `mul_mat` with a weight `w`
//! (`[n_rows, n_cols]`, rows stored in the tensor's own format) and f32 activations `x`
//! (`[n_tokens, n_cols]`), giving `out` (`[n_tokens, n_rows]`). The arithmetic is the
//! kernel table's: each activation row is converted once into the weight type's
//! activation format ([`activation_type`]: Q8_0, Q8_1, Q8_K, or f32 as is) with
//! `Kernels::quantizer`, and every output is one call of `Kernels::dot(ty)` on a weight
//! row and an activation row. So the result of each output element does not depend on the
//! thread count or the tiling: it is exactly `dot(w.row(r), act(t))`.
//!
//! Parallelism and memory traffic:
//! - activation rows are quantized once per call, spread over the pool when there are
//!   many of them;
//! - weight rows are split into chunks: each thread walks its own contiguous run of them
//!   and then takes chunks from the ends of the others' (`claims::Runs`), so a thread that
//!   was descheduled or started late does less, instead of everyone waiting for it, and
//!   each thread's prefetches land in the chunk it takes next;
//! - inside a chunk, rows are taken a tile at a time (about [`TILE_BYTES`] of weights, so
//!   the tile stays in the core's L2) and every token is multiplied with the whole tile
//!   before the next tile is touched, so each weight byte comes from memory once per call
//!   however many tokens there are. For a single token (decoding) this is a plain
//!   streaming matrix-vector product, bound by memory bandwidth.
//! - for 2 to 15 tokens (continuous batching's decode steps) where the level has a
//!   several-tokens kernel for the format (`Kernels::dot_tokens`), the tiles give way to
//!   it: it decodes each weight block once and multiplies it with every token's
//!   activations held in registers, instead of decoding the tile again for each token.
//!   Its results are the single-token dot's, bit for bit, so a sequence's outputs do not
//!   depend on which others share its batch (`tests/matmul.rs`).
//!
//! Nothing here allocates on the hot path: the quantized activations live in a
//! caller-owned [`MatmulScratch`] that grows to the largest call and then stays.

use std::fmt;
use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};

use crate::dispatch::{DotFn, DotRowsFn, DotTokensFn, Kernels, QuantizeFn};
use crate::gemm::{self, GemmScratch, QuantizedRows};
use crate::ops::select::KEY_BLOCK;
use crate::pool::ThreadPool;
use crate::quant::{activation_type, TensorType};
use claims::Runs;

mod claims;
mod group;
pub mod packed;
pub use group::{
    matvec_batch, matvec_batch_with, matvec_many, matvec_many_with, MAX_BATCH, MAX_PRODUCTS,
};

/// Bytes of weights in one tile: small enough to stay in a core's L2 (1–2 MiB on current
/// x86 and Apple cores, 512 KiB on older ones) while every token of the call passes over
/// it, large enough that the per-tile overhead is negligible.
pub const TILE_BYTES: usize = 64 * 1024;

/// Chunks per thread that the weight rows are split into: more than one so that threads
/// that finish early take over the rest, few enough that claiming a chunk (one atomic
/// operation on a shared line) costs nothing next to the chunk's work. The thread that
/// finishes first waits for the other's last chunk, about half a chunk on average: with 8
/// rather than 4, the pool's spinning fell from ~4 % to ~3 % of the kernels' time when
/// decoding R1-Distill-Qwen-1.5B on 2 threads (perf samples, two runs each).
const CHUNKS_PER_THREAD: usize = 8;

/// Below this many multiply-adds a product runs on the calling thread alone: waking the
/// pool would cost more than it saves.
const MIN_PARALLEL_MACS: usize = 1 << 15;

/// Below this many activation values, quantizing them is left to the calling thread.
const MIN_PARALLEL_QUANTIZE: usize = 1 << 14;

/// Why a product could not be computed. Every variant names the shapes involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatmulError {
    /// The kernel table has no dot product for this weight type.
    NotComputable(TensorType),
    /// The kernel table cannot produce the weight type's activation format.
    NoQuantizer {
        ty: TensorType,
        activation: TensorType,
    },
    /// `n_cols` is not a whole number of the weight type's blocks.
    Columns { ty: TensorType, n_cols: usize },
    /// The weight bytes do not hold `n_rows` rows of `n_cols` elements.
    WeightBytes {
        ty: TensorType,
        n_rows: usize,
        n_cols: usize,
        expected: Option<u64>,
        actual: usize,
    },
    /// `x.len()` is not `n_tokens · n_cols`.
    Activations {
        n_tokens: usize,
        n_cols: usize,
        actual: usize,
    },
    /// `out.len()` is not `n_tokens · n_rows`.
    Output {
        n_tokens: usize,
        n_rows: usize,
        actual: usize,
    },
    /// `keys.len()` is not `n_tokens` rows of one key per [`KEY_BLOCK`] outputs.
    ///
    /// [`KEY_BLOCK`]: crate::ops::select::KEY_BLOCK
    Keys {
        n_tokens: usize,
        n_rows: usize,
        actual: usize,
    },
    /// A packed matrix given as the packed form of a matrix it was not made from.
    PackedShape {
        ty: TensorType,
        n_rows: usize,
        n_cols: usize,
    },
}

impl fmt::Display for MatmulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatmulError::NotComputable(ty) => write!(f, "no dot product kernel for {ty} weights"),
            MatmulError::NoQuantizer { ty, activation } => write!(
                f,
                "no quantizer for {activation}, the activation format of {ty} weights"
            ),
            MatmulError::Columns { ty, n_cols } => write!(
                f,
                "{n_cols} columns is not a whole number of {ty} blocks ({} elements)",
                ty.block_len()
            ),
            MatmulError::WeightBytes {
                ty,
                n_rows,
                n_cols,
                expected,
                actual,
            } => match expected {
                Some(e) => write!(
                    f,
                    "{ty} weights [{n_rows}, {n_cols}] take {e} bytes, got {actual}"
                ),
                None => write!(
                    f,
                    "{ty} weights [{n_rows}, {n_cols}] overflow the address space"
                ),
            },
            MatmulError::Activations {
                n_tokens,
                n_cols,
                actual,
            } => write!(
                f,
                "activations [{n_tokens}, {n_cols}] need {} values, got {actual}",
                *n_tokens as u128 * *n_cols as u128
            ),
            MatmulError::Output {
                n_tokens,
                n_rows,
                actual,
            } => write!(
                f,
                "output [{n_tokens}, {n_rows}] needs {} values, got {actual}",
                *n_tokens as u128 * *n_rows as u128
            ),
            MatmulError::Keys {
                n_tokens,
                n_rows,
                actual,
            } => write!(
                f,
                "output [{n_tokens}, {n_rows}] needs {} block keys, got {actual}",
                *n_tokens as u128 * n_rows.div_ceil(KEY_BLOCK) as u128
            ),
            MatmulError::PackedShape { ty, n_rows, n_cols } => write!(
                f,
                "the packed matrix given for {ty} weights [{n_rows}, {n_cols}] was not made from them"
            ),
        }
    }
}

impl std::error::Error for MatmulError {}

/// A weight matrix `[n_rows, n_cols]`: rows of `ty`, row-major, as stored in GGUF (for a
/// GGUF tensor, `n_cols` is `ne[0]` and `n_rows` the product of the other dimensions).
/// Borrowed, typically from a mapped model file; construction checks the sizes.
#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    ty: TensorType,
    n_rows: usize,
    n_cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Checks that `n_cols` is a whole number of blocks of `ty` and that `data` holds
    /// exactly `n_rows` such rows.
    pub fn new(
        ty: TensorType,
        n_rows: usize,
        n_cols: usize,
        data: &'a [u8],
    ) -> Result<WeightMatrix<'a>, MatmulError> {
        let row_bytes = ty
            .row_bytes(n_cols as u64)
            .ok_or(MatmulError::Columns { ty, n_cols })?;
        let expected = row_bytes.checked_mul(n_rows as u64);
        if expected != Some(data.len() as u64) {
            return Err(MatmulError::WeightBytes {
                ty,
                n_rows,
                n_cols,
                expected,
                actual: data.len(),
            });
        }
        Ok(WeightMatrix {
            ty,
            n_rows,
            n_cols,
            // Fits: n_rows · row_bytes == data.len() (and n_rows > 0 or data is empty).
            row_bytes: usize::try_from(row_bytes).unwrap_or(usize::MAX),
            data,
        })
    }

    /// The storage type of the rows.
    pub fn ty(&self) -> TensorType {
        self.ty
    }

    /// Number of rows (outputs per token).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (elements per row, inputs per token).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All rows, `n_rows · row_bytes` bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Row `r`'s bytes.
    ///
    /// # Panics
    /// When `r >= n_rows`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// One cache line, the unit the scratch buffer is allocated in, so that every quantized
/// activation row starts on a line of its own (no false sharing while threads write
/// neighbouring rows, and the alignment every activation block type needs).
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Caller-owned memory for the quantized activations of [`matmul`]. It grows to the
/// largest call it has served and is reused after that, so a decode loop that keeps one
/// allocates only in its first step.
#[derive(Default)]
pub struct MatmulScratch {
    lines: Vec<Line>,
    gemm: GemmScratch,
    /// Which tokens of the products made with this scratch may go through the GEMM.
    pub gemm_tokens: GemmTokens,
}

/// Which tokens of a product go through the GEMM micro-kernel (where the level has one
/// and the format is supported) rather than the row path's dot kernels.
///
/// Both give a token the same result whatever other tokens share its product, but not
/// the same result as each other (the GEMM sums the same integer products in another f32
/// order). A caller that batches unrelated sequences (continuous batching) picks the
/// path per token, so that a token's logits do not depend on who else is in the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmTokens {
    /// The whole product goes through the GEMM when it has at least
    /// [`gemm::MIN_TOKENS`] tokens, else every token takes the row path.
    #[default]
    ByCount,
    /// Tokens `k..` go through the GEMM however few they are; tokens `..k` take the row
    /// path.
    From(usize),
}

impl MatmulScratch {
    /// An empty scratch; the first product sizes it.
    pub fn new() -> MatmulScratch {
        MatmulScratch::default()
    }

    /// Bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.lines.len() * 64 + self.gemm.capacity_bytes()
    }
}

/// At least `len` bytes of `lines`, 64-byte aligned.
fn line_bytes(lines: &mut Vec<Line>, len: usize) -> &mut [u8] {
    let n_lines = len.div_ceil(64);
    if lines.len() < n_lines {
        lines.resize(n_lines, Line([0; 64]));
    }
    &mut bytemuck::cast_slice_mut(&mut lines[..n_lines])[..len]
}

/// What a product needs once its shapes are known to fit: the dot kernel, the activation
/// format, its quantizer (none for f32 activations, or when the table lacks one: an error
/// only once it is needed) and the bytes of one quantized activation row.
struct Checked {
    dot: DotFn,
    act_ty: TensorType,
    quantize: Option<QuantizeFn>,
    act_row_bytes: usize,
}

/// Checks one product's shapes (`x_len` activations for `n_tokens` tokens, `out_len`
/// outputs) against `w` and the kernel table, before anything is computed.
fn check(
    kernels: &Kernels,
    w: &WeightMatrix<'_>,
    x_len: usize,
    n_tokens: usize,
    out_len: usize,
) -> Result<Checked, MatmulError> {
    let (ty, n_rows, n_cols) = (w.ty, w.n_rows, w.n_cols);
    let dot = kernels.dot(ty).ok_or(MatmulError::NotComputable(ty))?;
    if n_tokens.checked_mul(n_cols) != Some(x_len) {
        return Err(MatmulError::Activations {
            n_tokens,
            n_cols,
            actual: x_len,
        });
    }
    if n_tokens.checked_mul(n_rows) != Some(out_len) {
        return Err(MatmulError::Output {
            n_tokens,
            n_rows,
            actual: out_len,
        });
    }
    let act_ty = activation_type(ty);
    // The activation block always divides the weight block (32 | 32, 256 | 256, 1 | any),
    // so a valid weight width is a valid activation width; checked, not assumed.
    let act_row_bytes = act_ty
        .row_bytes(n_cols as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(MatmulError::Columns { ty, n_cols })?;
    Ok(Checked {
        dot,
        act_ty,
        quantize: kernels.quantizer(act_ty),
        act_row_bytes,
    })
}

/// `out = w · x` for one token: `x` is `[n_cols]`, `out` is `[n_rows]`, with the kernels
/// of [`Kernels::get`]. See [`matmul`].
pub fn matvec(
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_with(Kernels::get(), pool, w, x, 1, out, scratch)
}

/// `out[t] = w · x[t]` for `n_tokens` tokens: `x` is `[n_tokens, n_cols]`, `out` is
/// `[n_tokens, n_rows]`, with the kernels of [`Kernels::get`].
///
/// Shapes are checked before anything is computed; a mismatch is an error, not a panic.
pub fn matmul(
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matmul_with(Kernels::get(), pool, w, x, n_tokens, out, scratch)
}

/// As [`matmul`], with an explicit kernel table (tests use every level's).
pub fn matmul_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    w: &WeightMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let (ty, n_rows, n_cols) = (w.ty, w.n_rows, w.n_cols);
    let Checked {
        dot,
        act_ty,
        quantize,
        act_row_bytes,
    } = check(kernels, w, x.len(), n_tokens, out.len())?;
    let no_quantizer = MatmulError::NoQuantizer {
        ty,
        activation: act_ty,
    };
    if out.is_empty() {
        return Ok(());
    }

    let parallel = x.len().saturating_mul(n_rows) >= MIN_PARALLEL_MACS;
    let acts = if act_ty == TensorType::F32 {
        // Unquantized formats take the f32 activations as they are.
        Activations {
            bytes: bytemuck::cast_slice(x),
            stride: act_row_bytes,
            len: act_row_bytes,
        }
    } else {
        let quantize = quantize.ok_or(no_quantizer)?;
        // Rows padded to whole cache lines (see `Line`).
        let stride = act_row_bytes.next_multiple_of(64);
        let buf = line_bytes(&mut scratch.lines, n_tokens * stride);
        let rows = SharedSlice::new(buf);
        for_each_act_row(pool, parallel, n_tokens, x.len(), &|t| {
            // SAFETY: each token is visited once (`for_each_act_row`), and token `t`'s
            // piece is its own row: no two live pieces overlap.
            let row = unsafe { rows.piece(t * stride, act_row_bytes) };
            quantize(&x[t * n_cols..(t + 1) * n_cols], row);
        });
        Activations {
            bytes: &*buf,
            stride,
            len: act_row_bytes,
        }
    };

    // Tokens `gemm_from..` go through the GEMM, the others take the row path below.
    let mut gemm_from = n_tokens;
    if let Some(micro) = kernels.gemm() {
        let first = gemm_first(scratch.gemm_tokens, n_tokens);
        if act_ty == TensorType::F32 && gemm::float::supports(ty) && first < n_tokens {
            let (x, out) = (&x[first * n_cols..], &mut out[first * n_rows..]);
            if gemm::matmul_float(micro, pool, w, x, n_tokens - first, out, &mut scratch.gemm) {
                gemm_from = first;
            }
        } else if act_ty != TensorType::F32 && gemm::supports(ty) {
            gemm_from = first;
            if gemm_from < n_tokens {
                let rows = QuantizedRows {
                    ty: act_ty,
                    bytes: &acts.bytes[gemm_from * acts.stride..],
                    stride: acts.stride,
                };
                let out = &mut out[gemm_from * n_rows..];
                gemm::matmul(
                    micro,
                    pool,
                    w,
                    &rows,
                    n_tokens - gemm_from,
                    out,
                    &mut scratch.gemm,
                );
            }
        }
    }
    if gemm_from == 0 {
        return Ok(());
    }
    let (n_tokens, out) = (gemm_from, &mut out[..gemm_from * n_rows]);

    // Rows in chunks: every thread of the pool gets CHUNKS_PER_THREAD of them where the
    // product is worth a dispatch, else the calling thread takes them all at once.
    let nth = if parallel { pool.n_threads() } else { 1 };
    let chunk_rows = if parallel {
        n_rows.div_ceil(nth * CHUNKS_PER_THREAD).max(1)
    } else {
        n_rows.max(1)
    };
    let task = Products {
        w,
        dot,
        dot_rows: kernels.dot_rows(ty),
        dot_tokens: kernels.dot_tokens(ty),
        acts,
        n_tokens,
        out: SharedSlice::new(out),
        runs: Runs::new(n_rows.div_ceil(chunk_rows), nth),
        chunk_rows,
        tile_rows: (TILE_BYTES / w.row_bytes.max(1)).max(1),
    };
    if parallel {
        pool.run(&|ith, _| task.run(ith));
    } else {
        task.run(0);
    }
    Ok(())
}

/// The first of `n_tokens` tokens that the GEMM takes where it can (`n_tokens` for
/// none): the rule of [`GemmTokens`].
fn gemm_first(by: GemmTokens, n_tokens: usize) -> usize {
    match by {
        GemmTokens::ByCount if n_tokens >= gemm::MIN_TOKENS => 0,
        GemmTokens::ByCount => n_tokens,
        GemmTokens::From(k) => k.min(n_tokens),
    }
}

/// Runs `row(t)` once for every token `t < n_tokens` (the quantization of its
/// activation row): spread over the pool when the product is (`parallel`) and there are
/// several tokens and at least [`MIN_PARALLEL_QUANTIZE`] values (`n_values`), on the
/// calling thread otherwise.
fn for_each_act_row(
    pool: &ThreadPool,
    parallel: bool,
    n_tokens: usize,
    n_values: usize,
    row: &(dyn Fn(usize) + Sync),
) {
    if parallel && n_tokens > 1 && n_values >= MIN_PARALLEL_QUANTIZE {
        pool.run(&|ith, nth| {
            (n_tokens * ith / nth..n_tokens * (ith + 1) / nth).for_each(row);
        });
    } else {
        (0..n_tokens).for_each(row);
    }
}

/// The activation rows of one call: row `t` is `bytes[t·stride..][..len]`.
struct Activations<'a> {
    bytes: &'a [u8],
    stride: usize,
    len: usize,
}

impl Activations<'_> {
    fn row(&self, t: usize) -> &[u8] {
        &self.bytes[t * self.stride..][..self.len]
    }
}

/// The products of one call, claimed chunk by chunk by whichever threads run [`run`].
///
/// [`run`]: Products::run
struct Products<'a, 'w> {
    w: &'a WeightMatrix<'w>,
    dot: DotFn,
    /// The level's several-rows kernel for the format, if it has one: used for a single
    /// token, where it gives exactly what `dot` gives row by row.
    dot_rows: Option<DotRowsFn>,
    /// The level's several-tokens kernel for the format, if it has one: used for two
    /// tokens or more (a batch of decoding sequences, or prefill where no GEMM runs),
    /// where it gives exactly what `dot` gives for each row and token.
    dot_tokens: Option<DotTokensFn>,
    acts: Activations<'a>,
    n_tokens: usize,
    /// `[n_tokens, n_rows]`
    out: SharedSlice<'a, f32>,
    runs: Runs,
    chunk_rows: usize,
    tile_rows: usize,
}

impl Products<'_, '_> {
    /// Claims chunks of weight rows until none is left, and computes every token's
    /// outputs for them, a tile of rows at a time.
    fn run(&self, ith: usize) {
        let n_rows = self.w.n_rows;
        while let Some(chunk) = self.runs.claim(ith) {
            // The runs hand out only chunks below n_rows / chunk_rows, rounded up.
            let r0 = chunk * self.chunk_rows;
            let r1 = (r0 + self.chunk_rows).min(n_rows);
            if let (1, Some(dot_rows)) = (self.n_tokens, self.dot_rows) {
                // One token: the tiles bring nothing (each weight byte is used once), so
                // the chunk's rows go to the multi-row kernel in one call.
                let rb = self.w.row_bytes;
                // SAFETY: rows r0..r1 belong to this chunk, which the runs hand to
                // exactly one thread, so out[r0..r1] is written by nobody else.
                let o = unsafe { self.out.piece(r0, r1 - r0) };
                dot_rows(&self.w.data[r0 * rb..r1 * rb], rb, self.acts.row(0), o);
                continue;
            }
            if let (2.., Some(dot_tokens)) = (self.n_tokens, self.dot_tokens) {
                self.run_tokens(dot_tokens, r0, r1);
                continue;
            }
            for t0 in (r0..r1).step_by(self.tile_rows) {
                let t1 = (t0 + self.tile_rows).min(r1);
                for t in 0..self.n_tokens {
                    let a = self.acts.row(t);
                    // SAFETY: rows r0..r1 belong to this chunk, which the runs hand
                    // to exactly one thread, so out[t, t0..t1] is written by nobody else.
                    let o = unsafe { self.out.piece(t * n_rows + t0, t1 - t0) };
                    if let Some(dot_rows) = self.dot_rows {
                        // The tile is in cache after the first token: the multi-row
                        // kernel's shared activation loads are what is left to save.
                        let rb = self.w.row_bytes;
                        dot_rows(&self.w.data[t0 * rb..t1 * rb], rb, a, o);
                        continue;
                    }
                    for (o, r) in o.iter_mut().zip(t0..t1) {
                        *o = (self.dot)(self.w.row(r), a);
                    }
                }
            }
        }
    }
}

/// Rows per call of a several-tokens kernel in [`Products::run_tokens`]: their outputs for
/// [`TOKENS_PER_CALL`] tokens fit a 4 KiB buffer on the stack.
const ROWS_PER_CALL: usize = 64;

/// Tokens per call of a several-tokens kernel: all of a decoding batch (fewer than
/// `gemm::MIN_TOKENS`) in one call, so each weight byte is read from memory once.
pub(crate) const TOKENS_PER_CALL: usize = 16;

impl Products<'_, '_> {
    /// Rows `r0..r1` (one chunk) for every token with the several-tokens kernel.
    ///
    /// The kernel takes a stretch of rows and every token at once and reads each weight
    /// block once for all of them (the tiles of [`Products::run`] are not needed), but its
    /// output is `[tokens, rows]` for its own rows only, while this chunk's outputs are
    /// interleaved with other threads' in `out`: so it writes into a small local buffer,
    /// which is copied out token by token (a few floats per weight row, next to hundreds
    /// of weight bytes).
    fn run_tokens(&self, dot_tokens: DotTokensFn, r0: usize, r1: usize) {
        let (n_rows, rb) = (self.w.n_rows, self.w.row_bytes);
        let mut buf = [0.0f32; ROWS_PER_CALL * TOKENS_PER_CALL];
        for s0 in (r0..r1).step_by(ROWS_PER_CALL) {
            let s1 = (s0 + ROWS_PER_CALL).min(r1);
            let n = s1 - s0;
            for t0 in (0..self.n_tokens).step_by(TOKENS_PER_CALL) {
                let nt = TOKENS_PER_CALL.min(self.n_tokens - t0);
                let o = &mut buf[..nt * n];
                let a = &self.acts.bytes[t0 * self.acts.stride..];
                dot_tokens(
                    &self.w.data[s0 * rb..s1 * rb],
                    rb,
                    a,
                    self.acts.stride,
                    nt,
                    o,
                );
                for (t, o) in o.chunks_exact(n).enumerate() {
                    // SAFETY: rows r0..r1 belong to this chunk, which the runs hand to
                    // exactly one thread, so out[t, s0..s1] is written by nobody else.
                    let dst = unsafe { self.out.piece((t0 + t) * n_rows + s0, n) };
                    dst.copy_from_slice(o);
                }
            }
        }
    }
}

/// A mutable slice that the pool's threads write in disjoint pieces.
///
/// Rust's borrows cannot express "thread A writes rows 0..10 of every token, thread B rows
/// 10..20" for an interleaved layout, so this hands out pieces by index, and each caller
/// promises (and says why in its `// SAFETY:` comment) that its pieces are its alone.
/// The GEMM path (`crate::gemm`) shares it for its panel and output.
pub(crate) struct SharedSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `SharedSlice` is an exclusive borrow of `[T]` whose pieces may go to several
// threads; with the disjointness contract of `piece`, that is the same as sending disjoint
// `&mut [T]` to them, which is sound for `T: Send`.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}

impl<'a, T> SharedSlice<'a, T> {
    pub(crate) fn new(s: &'a mut [T]) -> SharedSlice<'a, T> {
        SharedSlice {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: PhantomData,
        }
    }

    /// The elements `start..start + len`.
    ///
    /// # Safety
    /// No two pieces that are alive at the same time (on any threads) may overlap.
    ///
    /// # Panics
    /// When the range is out of bounds.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn piece(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start <= self.len && len <= self.len - start,
            "piece {start}+{len} of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of a slice borrowed mutably for 'a, and not
        // aliased by another live piece (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The address of element `at` (`None` past the end), for prefetch hints only: it is
    /// never dereferenced through this.
    pub(crate) fn addr(&self, at: usize) -> Option<*const T> {
        (at < self.len).then(|| self.ptr.wrapping_add(at).cast_const())
    }
}
