//! Several matrix-vector products in one dispatch of the pool: of the same input
//! ([`matvec_many`]), or each of its own ([`matvec_batch`]).
//!
//! Decoding a token multiplies one normalized hidden state by Q, K and V, and another by
//! the feed-forward gate and up matrices. As separate calls, each quantizes the input
//! again and pays a dispatch: waking the workers and, at its end, waiting for the last
//! chunk. The K and V products of small models (256 rows of R1-Distill-Qwen-1.5B) are so
//! short that the dispatch is a large share of their time. Here the input is quantized
//! once per activation format and the chunks of all the products are dealt from one set
//! of runs (`claims::Runs`), so the pool is dispatched once and a thread done with Q's
//! chunks goes on with K's. Each output is the same multi-row kernel on the same activation bytes as
//! in [`matvec`](super::matvec), so the results are equal bit for bit.
//!
//! Mixture-of-experts and latent-attention models decode through many small products of
//! different inputs: each chosen expert's down matrix takes that expert's own hidden
//! vector, and DeepSeek's per-head `attn_k_b` / `attn_v_b` each take one head. One call
//! per product would pay a dispatch each (32 per layer for DeepSeek-V2-Lite's heads
//! alone); [`matvec_batch`] quantizes every input once and deals all the products' chunks
//! from one set of runs, the same way.

use super::claims::Runs;
use super::{
    check, line_bytes, matmul_with, MatmulError, MatmulScratch, SharedSlice, WeightMatrix,
    CHUNKS_PER_THREAD, MIN_PARALLEL_MACS,
};
use crate::dispatch::{DotRowsFn, Kernels, QuantizeFn};
use crate::pool::ThreadPool;
use crate::quant::TensorType;

/// The most products one dispatch takes (Q, K, V and one spare); a longer list is
/// computed one product at a time, with the same results.
pub const MAX_PRODUCTS: usize = 4;

/// `out = w · x` for each `(w, out)` of `products`, one token: `x` is `[n_cols]` for every
/// `w`, each `out` `[w.n_rows]`. The results equal [`matvec`](super::matvec) on each
/// product bit for bit; see the module documentation for why this is faster.
///
/// Every product's shapes are checked before anything is computed; a mismatch is an
/// error, not a panic, and leaves every output untouched.
pub fn matvec_many(
    pool: &ThreadPool,
    products: &mut [(&WeightMatrix<'_>, &mut [f32])],
    x: &[f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matvec_many_with(Kernels::get(), pool, products, x, scratch)
}

/// As [`matvec_many`], with an explicit kernel table (tests use every level's).
pub fn matvec_many_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &mut [(&WeightMatrix<'_>, &mut [f32])],
    x: &[f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    // Every product is checked before anything is computed. On the way, per product: its
    // activation format, row kernel, quantizer and activation row length, and where its
    // activation row starts; each format is quantized once, onto lines of its own.
    let mut shared = products.len() <= MAX_PRODUCTS;
    let mut kinds: [Option<Kind>; MAX_PRODUCTS] = Default::default();
    let mut end = 0;
    for (p, (w, out)) in products.iter().enumerate() {
        let c = check(kernels, w, x.len(), 1, out.len())?;
        if c.act_ty == TensorType::F32 {
            shared = false;
            continue;
        }
        let Some(quantize) = c.quantize else {
            return Err(MatmulError::NoQuantizer {
                ty: w.ty,
                activation: c.act_ty,
            });
        };
        let Some(dot_rows) = kernels.dot_rows(w.ty).filter(|_| p < MAX_PRODUCTS) else {
            shared = false;
            continue;
        };
        let same = kinds[..p].iter().flatten().find(|k| k.act_ty == c.act_ty);
        let offset = match same {
            Some(k) => k.offset,
            None => {
                end += c.act_row_bytes.next_multiple_of(64);
                end - c.act_row_bytes.next_multiple_of(64)
            }
        };
        kinds[p] = Some(Kind {
            act_ty: c.act_ty,
            quantize: same.is_none().then_some(quantize),
            dot_rows,
            len: c.act_row_bytes,
            offset,
        });
    }
    if !shared {
        for (w, out) in products.iter_mut() {
            matmul_with(kernels, pool, w, x, 1, out, scratch)?;
        }
        return Ok(());
    }
    let buf = line_bytes(&mut scratch.lines, end);
    for k in kinds.iter().flatten() {
        if let Some(quantize) = k.quantize {
            quantize(x, &mut buf[k.offset..][..k.len]);
        }
    }
    let buf: &[u8] = buf;

    let nth = pool.n_threads();
    let mut parts: [Option<Part<'_>>; MAX_PRODUCTS] = Default::default();
    let mut n_chunks = 0;
    for ((w, out), (part, kind)) in products.iter_mut().zip(parts.iter_mut().zip(&kinds)) {
        let Some(kind) = kind else { continue };
        let act = &buf[kind.offset..][..kind.len];
        let p = Part::new(w, kind.dot_rows, act, out, nth, n_chunks);
        n_chunks += p.n_chunks();
        *part = Some(p);
    }
    run_parts(pool, &parts);
    Ok(())
}

/// The most products one dispatch of [`matvec_batch`] takes: every chosen expert's gate
/// and up (16 for Qwen3-30B-A3B) or a layer's heads (16 for DeepSeek-V2-Lite); a longer
/// list goes in several dispatches.
pub const MAX_BATCH: usize = 32;

/// `w · x` for each `(w, x)` of `products`, one token, each product with its own input
/// (`x` is `[w.n_cols]`), written one after another to `out` (`[Σ w.n_rows]`: product
/// `i`'s rows follow product `i - 1`'s). The results equal [`matvec`](super::matvec) on
/// each product bit for bit; the products go in dispatches of up to [`MAX_BATCH`] (see
/// the module documentation for why). Taking the products as a shared slice and the
/// outputs as one lets a caller build the list in a fixed array, without allocating.
///
/// Every product's shapes are checked before anything is computed; a mismatch is an
/// error, not a panic, and leaves `out` untouched.
pub fn matvec_batch(
    pool: &ThreadPool,
    products: &[(&WeightMatrix<'_>, &[f32])],
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    matvec_batch_with(Kernels::get(), pool, products, out, scratch)
}

/// As [`matvec_batch`], with an explicit kernel table (tests use every level's).
pub fn matvec_batch_with(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &[(&WeightMatrix<'_>, &[f32])],
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    let mut n_out = 0usize;
    for (w, x) in products {
        check(kernels, w, x.len(), 1, w.n_rows)?;
        n_out += w.n_rows;
    }
    if n_out != out.len() {
        return Err(MatmulError::Output {
            n_tokens: 1,
            n_rows: n_out,
            actual: out.len(),
        });
    }
    let mut rest = out;
    for batch in products.chunks(MAX_BATCH) {
        let rows: usize = batch.iter().map(|(w, _)| w.n_rows).sum();
        let (out, tail) = rest.split_at_mut(rows);
        rest = tail;
        batch_dispatch(kernels, pool, batch, out, scratch)?;
    }
    Ok(())
}

/// One dispatch of [`matvec_batch_with`] (shapes already checked).
fn batch_dispatch(
    kernels: &Kernels,
    pool: &ThreadPool,
    products: &[(&WeightMatrix<'_>, &[f32])],
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), MatmulError> {
    // Each input quantized onto lines of its own; a product without a row kernel or with
    // f32 activations sends the whole batch the one-product-at-a-time way.
    let mut kinds: [Option<Kind>; MAX_BATCH] = Default::default();
    let mut end = 0;
    let mut shared = true;
    for ((w, x), kind) in products.iter().zip(kinds.iter_mut()) {
        let c = check(kernels, w, x.len(), 1, w.n_rows)?;
        let (Some(quantize), Some(dot_rows)) = (c.quantize, kernels.dot_rows(w.ty)) else {
            shared = false;
            break;
        };
        if c.act_ty == TensorType::F32 {
            shared = false;
            break;
        }
        *kind = Some(Kind {
            act_ty: c.act_ty,
            quantize: Some(quantize),
            dot_rows,
            len: c.act_row_bytes,
            offset: end,
        });
        end += c.act_row_bytes.next_multiple_of(64);
    }
    if !shared {
        let mut rest = out;
        for (w, x) in products {
            let (o, tail) = rest.split_at_mut(w.n_rows);
            rest = tail;
            matmul_with(kernels, pool, w, x, 1, o, scratch)?;
        }
        return Ok(());
    }
    let buf = line_bytes(&mut scratch.lines, end);
    for ((_, x), k) in products.iter().zip(kinds.iter().flatten()) {
        if let Some(quantize) = k.quantize {
            quantize(x, &mut buf[k.offset..][..k.len]);
        }
    }
    let buf: &[u8] = buf;

    let nth = pool.n_threads();
    let mut parts: [Option<Part<'_>>; MAX_BATCH] = Default::default();
    let mut n_chunks = 0;
    let mut rest = out;
    for ((w, _), (part, kind)) in products.iter().zip(parts.iter_mut().zip(&kinds)) {
        let Some(kind) = kind else { continue };
        let (o, tail) = std::mem::take(&mut rest).split_at_mut(w.n_rows);
        rest = tail;
        let act = &buf[kind.offset..][..kind.len];
        let p = Part::new(w, kind.dot_rows, act, o, nth, n_chunks);
        n_chunks += p.n_chunks();
        *part = Some(p);
    }
    run_parts(pool, &parts);
    Ok(())
}

/// Runs the chunks of `parts` from one set of runs (`claims::Runs`): on the pool, in one
/// dispatch, when the products together are worth one ([`MIN_PARALLEL_MACS`]), else on
/// this thread.
fn run_parts(pool: &ThreadPool, parts: &[Option<Part<'_>>]) {
    let macs = parts
        .iter()
        .flatten()
        .fold(0usize, |m, p| m.saturating_add(p.macs));
    let n_chunks = parts
        .iter()
        .flatten()
        .map(|p| p.first_chunk + p.n_chunks())
        .max();
    let parallel = macs >= MIN_PARALLEL_MACS;
    let group = Group {
        parts,
        runs: Runs::new(
            n_chunks.unwrap_or(0),
            if parallel { pool.n_threads() } else { 1 },
        ),
    };
    if parallel {
        pool.run(&|ith, _| group.run(ith));
    } else {
        group.run(0);
    }
}

/// How one product's activations are formed: `quantize` is set for the first product
/// of each activation format, the others read its row at the same `offset`.
struct Kind {
    act_ty: TensorType,
    quantize: Option<QuantizeFn>,
    dot_rows: DotRowsFn,
    len: usize,
    offset: usize,
}

/// One product of a [`Group`]: its weights, kernel, activation row and output, and where
/// its chunks start in the group's count.
struct Part<'a> {
    data: &'a [u8],
    row_bytes: usize,
    n_rows: usize,
    dot_rows: DotRowsFn,
    act: &'a [u8],
    out: SharedSlice<'a, f32>,
    chunk_rows: usize,
    first_chunk: usize,
    /// `n_rows · n_cols`, to judge whether the group is worth a dispatch.
    macs: usize,
}

impl<'a> Part<'a> {
    /// Product `w` with activation row `act` (for `dot_rows`) into `out`, its chunks
    /// sized so that each of `nth` threads gets [`CHUNKS_PER_THREAD`] of them, numbered
    /// from `first_chunk` in the group's count.
    fn new(
        w: &WeightMatrix<'a>,
        dot_rows: DotRowsFn,
        act: &'a [u8],
        out: &'a mut [f32],
        nth: usize,
        first_chunk: usize,
    ) -> Part<'a> {
        Part {
            data: w.data,
            row_bytes: w.row_bytes,
            n_rows: w.n_rows,
            dot_rows,
            act,
            out: SharedSlice::new(out),
            chunk_rows: w.n_rows.div_ceil(nth * CHUNKS_PER_THREAD).max(1),
            first_chunk,
            macs: w.n_rows.saturating_mul(w.n_cols),
        }
    }

    /// How many chunks the product is cut into.
    fn n_chunks(&self) -> usize {
        self.n_rows.div_ceil(self.chunk_rows)
    }
}

/// The products of one call, claimed chunk by chunk (product after product) by whichever
/// threads run [`Group::run`].
struct Group<'p, 'a> {
    parts: &'p [Option<Part<'a>>],
    /// The chunks of all parts, `first_chunk` numbering them.
    runs: Runs,
}

impl Group<'_, '_> {
    fn run(&self, ith: usize) {
        while let Some(chunk) = self.runs.claim(ith) {
            // The last part whose chunks start at or before `chunk`.
            let Some(part) = self
                .parts
                .iter()
                .flatten()
                .take_while(|p| p.first_chunk <= chunk)
                .last()
            else {
                return;
            };
            // The runs hand out only the parts' own chunks, so r0 < part.n_rows.
            let r0 = (chunk - part.first_chunk) * part.chunk_rows;
            let r1 = (r0 + part.chunk_rows).min(part.n_rows);
            let rb = part.row_bytes;
            // SAFETY: chunk numbers are handed out once, and each maps to its own rows
            // r0..r1 of one part, so out[r0..r1] is written by nobody else.
            let o = unsafe { part.out.piece(r0, r1 - r0) };
            (part.dot_rows)(&part.data[r0 * rb..r1 * rb], rb, part.act, o);
        }
    }
}
