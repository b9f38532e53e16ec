//! The pieces transformer blocks are built from, shared by the architecture files as
//! plain functions: embedding lookup, RMSNorm over rows and heads, linear layers, RoPE,
//! the KV store and attention, the gated feed-forward network, and the output head.
//!
//! Activations are row-major `[n_tokens, width]` f32 slices; each function's doc gives
//! the shapes. Numerics are the kernels crate's (`matmul`, `Ops`); what is written here
//! is bookkeeping, plus two element-wise loops (`add`, `scale`) too simple to need a
//! kernel.

use hearth_kernels::matmul::packed::matmul_rows_packed;
use hearth_kernels::matmul::{matmul, matvec_many, GemmTokens, MatmulScratch, WeightMatrix};
use hearth_kernels::ops::attention::{
    flash_finish, flash_merge, keys_to_values, FlashRows, KvData, KV_TILE,
};
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::ops::{Ops, RopeCache};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::dequantize_row;

use crate::batch::UBatch;
use crate::error::ModelError;
use crate::head::Head;
use crate::kv_cache::{KvCache, SeqView};
use crate::moe::MoeScratch;
use crate::scratch::{AttnPart, Scratch};
use crate::weights::Linear;

/// What one pass through the layers works with: the compute pool, the op kernels, the
/// cache and the scratch.
pub(crate) struct Pass<'p> {
    pub(crate) pool: &'p ThreadPool,
    pub(crate) ops: &'static Ops,
    pub(crate) kv: &'p mut KvCache,
    pub(crate) s: &'p mut Scratch,
}

/// The scratch buffers of a pass over `n` tokens, cut to size.
pub(crate) struct Bufs<'s> {
    /// `[n, n_embd]`
    pub(crate) x: &'s mut [f32],
    /// `[n, n_embd]`
    pub(crate) cur: &'s mut [f32],
    /// `[n, n_head · n_embd_head_k]`
    pub(crate) q: &'s mut [f32],
    /// `[n, n_head_kv · n_embd_head_k]`
    pub(crate) k: &'s mut [f32],
    /// `[n, n_head_kv · n_embd_head_v]`
    pub(crate) v: &'s mut [f32],
    /// `[n, n_head · n_embd_head_v]`
    pub(crate) attn: &'s mut [f32],
    /// `[n, n_ff]`
    pub(crate) gate: &'s mut [f32],
    /// `[n, n_ff]`
    pub(crate) up: &'s mut [f32],
    /// `[n_ubatch, n_embd]`
    pub(crate) out_x: &'s mut [f32],
    /// `[n_outputs, n_vocab]`
    pub(crate) logits: &'s mut [f32],
    /// `[n_outputs, n_vocab.div_ceil(KEY_BLOCK)]`
    pub(crate) keys: &'s mut [i32],
    /// Cleared by a pass whose logits rows did not get their keys.
    pub(crate) keyed: &'s mut bool,
    /// `[max(n_embd, head sizes)]`: one row or head, for in-place norms.
    pub(crate) row: &'s mut [f32],
    pub(crate) rope: &'s mut [RopeCache],
    pub(crate) matmul: &'s mut MatmulScratch,
    pub(crate) attn_parts: &'s mut [AttnPart],
    pub(crate) moe: &'s mut MoeScratch,
}

impl Scratch {
    /// The buffers for a pass over `n` tokens (`n <= n_ubatch`).
    pub(crate) fn bufs(&mut self, n: usize) -> Bufs<'_> {
        let d = self.dims;
        Bufs {
            x: &mut self.x[..n * d.n_embd],
            cur: &mut self.cur[..n * d.n_embd],
            q: &mut self.q[..n * d.n_q],
            k: &mut self.k[..n * d.n_k],
            v: &mut self.v[..n * d.n_v],
            attn: &mut self.attn[..n * d.n_attn],
            gate: &mut self.gate[..n * d.n_ff],
            up: &mut self.up[..n * d.n_ff],
            out_x: &mut self.out_x,
            logits: &mut self.logits,
            keys: &mut self.keys,
            keyed: &mut self.keyed,
            row: &mut self.row,
            rope: &mut self.rope,
            matmul: &mut self.matmul,
            attn_parts: &mut self.attn_parts,
            moe: &mut self.moe,
        }
    }
}

/// `out[t] = embd[tokens[t]]` (ggml's `get_rows`): `out` is `[n, n_embd]`. Where `head`
/// is tied to `embd` and packed, the rows come from its packed copy, the same values
/// (`PackedMatrix::dequantize_row`), so that the file's bytes of it are never read again
/// once `Model::release_packed` has let them go. Tokens were checked against the
/// vocabulary and the table's type at load.
pub(crate) fn get_rows(embd: &WeightMatrix<'_>, head: &Head<'_>, tokens: &[u32], out: &mut [f32]) {
    let packed = head.packed_if_tied(embd);
    for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(embd.n_cols())) {
        match packed {
            Some(p) => p.dequantize_row(t as usize, o),
            None => dequantize_row(embd.ty(), embd.row(t as usize), o)
                .expect("embedding type and token range checked before the pass"),
        }
    }
}

/// `out[t] = rms_norm(x[t]) · w` for every row: `x` and `out` are `[n, w.len()]`.
pub(crate) fn rms_norm(ops: &Ops, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (x, o) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        ops.rms_norm(x, Some(w), eps, o);
    }
}

/// In place: `x[i] = rms_norm(x[i]) · w` for every `w.len()`-long piece `x[i]` of `x`.
/// With `w` of a head's size this is the per-head norm of Qwen3's and Gemma 3's
/// `attn_q_norm` / `attn_k_norm` (`x` `[n, n_heads · head_dim]`); with `w` of the model
/// width, a norm of whole rows (Gemma 3's post-norms). `tmp` holds at least `w.len()`.
pub(crate) fn rms_norm_inplace(ops: &Ops, x: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    let tmp = &mut tmp[..w.len()];
    for piece in x.chunks_exact_mut(w.len()) {
        tmp.copy_from_slice(piece);
        ops.rms_norm(tmp, Some(w), eps, piece);
    }
}

/// `out = x·Wᵀ (+ b)`: `x` is `[n, n_in]`, `out` `[n, n_out]`. One matrix product for all
/// `n` tokens, so each weight is read once per pass.
pub(crate) fn linear(
    pool: &ThreadPool,
    l: &Linear<'_>,
    x: &[f32],
    out: &mut [f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    let n_tokens = x.len() / l.w.n_cols().max(1);
    match &l.packed {
        Some(p) => matmul_rows_packed(pool, &mut [(&l.w, p, out)], x, n_tokens, mm)?,
        None => matmul(pool, &l.w, x, n_tokens, out, mm)?,
    }
    if let Some(b) = &l.b {
        for o in out.chunks_exact_mut(b.len()) {
            add(o, b);
        }
    }
    Ok(())
}

/// [`linear`] of the same `x` through each `(l, out)` of `products`, with the same
/// results as one call each. For one token (each step of decoding) two or three
/// products share one quantization of `x` and one dispatch of the pool (`matvec_many`);
/// packed ones do for any number of tokens (`matmul_rows_packed`).
pub(crate) fn linear_many(
    pool: &ThreadPool,
    products: &mut [(&Linear<'_>, &mut [f32])],
    x: &[f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    // Packed and stored products apart, each set in its own call: a packed matrix's
    // tokens must take the packed form whatever its siblings' (Gemma 3 270M's Q8_0
    // `attn_v` beside Q5_0 `attn_q` and `attn_k`), or one token's outputs would differ
    // from several tokens'.
    let n_packed = products.iter().filter(|(l, _)| l.packed.is_some()).count();
    if 0 < n_packed && n_packed < products.len() {
        products.sort_unstable_by_key(|(l, _)| l.packed.is_none());
        let (packed, stored) = products.split_at_mut(n_packed);
        linear_many(pool, packed, x, mm)?;
        return linear_many(pool, stored, x, mm);
    }
    let n_tokens = x.len() / products.first().map_or(1, |(l, _)| l.w.n_cols().max(1));
    // A lone prompt token (a scheduler's batch) must go through the GEMM like any other.
    let one_token = mm.gemm_tokens != GemmTokens::From(0)
        && products
            .iter()
            .all(|(l, out)| x.len() == l.w.n_cols() && out.len() == l.w.n_rows());
    match products {
        [(a, oa), (b, ob)] => match (&a.packed, &b.packed) {
            (Some(pa), Some(pb)) => {
                let list = &mut [(&a.w, pa, &mut **oa), (&b.w, pb, &mut **ob)];
                matmul_rows_packed(pool, list, x, n_tokens, mm)?
            }
            _ if one_token => {
                matvec_many(pool, &mut [(&a.w, &mut **oa), (&b.w, &mut **ob)], x, mm)?
            }
            _ => return linear_each(pool, products, x, mm),
        },
        [(a, oa), (b, ob), (c, oc)] => match (&a.packed, &b.packed, &c.packed) {
            (Some(pa), Some(pb), Some(pc)) => {
                let list = &mut [
                    (&a.w, pa, &mut **oa),
                    (&b.w, pb, &mut **ob),
                    (&c.w, pc, &mut **oc),
                ];
                matmul_rows_packed(pool, list, x, n_tokens, mm)?
            }
            _ if one_token => {
                let list = &mut [(&a.w, &mut **oa), (&b.w, &mut **ob), (&c.w, &mut **oc)];
                matvec_many(pool, list, x, mm)?
            }
            _ => return linear_each(pool, products, x, mm),
        },
        _ => return linear_each(pool, products, x, mm),
    }
    for (l, out) in products.iter_mut() {
        if let Some(b) = &l.b {
            add(out, b);
        }
    }
    Ok(())
}

/// [`linear`] of `x` through each `(l, out)` of `products`, one call each.
fn linear_each(
    pool: &ThreadPool,
    products: &mut [(&Linear<'_>, &mut [f32])],
    x: &[f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    for (l, out) in products.iter_mut() {
        linear(pool, l, x, out, mm)?;
    }
    Ok(())
}

/// RoPE of the queries and keys of every token at its position: `q` is
/// `[n, n_head · head_dim]`, `k` `[n, n_head_kv · head_dim]`.
pub(crate) fn rope(
    ops: &Ops,
    q: &mut [f32],
    k: &mut [f32],
    head_dim: usize,
    pos: &[u32],
    cache: &mut RopeCache,
) {
    let (nq, nk) = (q.len() / pos.len(), k.len() / pos.len());
    // Once per pass for all the layers sharing `cache`.
    cache.set_positions(pos);
    for (i, (q, k)) in q
        .chunks_exact_mut(nq)
        .zip(k.chunks_exact_mut(nk))
        .enumerate()
    {
        ops.rope_row(q, head_dim, cache, i);
        ops.rope_row(k, head_dim, cache, i);
    }
}

/// `x += y`, element-wise (the residual connection, a bias).
pub(crate) fn add(x: &mut [f32], y: &[f32]) {
    for (x, &y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// `x *= s`, element-wise (ggml's `scale`).
pub(crate) fn scale(x: &mut [f32], s: f32) {
    for x in x {
        *x *= s;
    }
}

/// Fewest elements for which element-wise work is spread over the pool: a prompt's FFN
/// gate (512 tokens × 8,960 values on R1-Distill-Qwen-1.5B) ran on one thread for 2 %
/// of a 2-thread prompt step, while a decode step's (one token) is not worth a dispatch.
pub(crate) const PARALLEL_ELEMENTS: usize = 1 << 16;

/// The gate of a gated feed-forward network.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gate {
    /// SwiGLU: `silu(gate) · up` (Llama, Qwen).
    Silu,
    /// GeGLU with the tanh approximation of GELU: `gelu(gate) · up` (Gemma).
    GeluTanh,
}

/// The weights of a gated feed-forward network (llama.cpp's `build_ffn` with
/// `LLM_FFN_PAR`).
pub(crate) struct Ffn<'w, 'a> {
    pub(crate) gate: &'w Linear<'a>,
    pub(crate) up: &'w Linear<'a>,
    pub(crate) down: &'w Linear<'a>,
    pub(crate) act: Gate,
}

/// In place: `x = down(act(gate(x)) · up(x))`: `x` is `[n, n_embd]`, `g` and `u`
/// `[n, n_ff]` scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ffn(
    pool: &ThreadPool,
    ops: &Ops,
    f: &Ffn<'_, '_>,
    x: &mut [f32],
    g: &mut [f32],
    u: &mut [f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    linear_many(pool, &mut [(f.up, &mut *u), (f.gate, &mut *g)], x, mm)?;
    pool.zip_pieces(g, u, PARALLEL_ELEMENTS, &|g, u| match f.act {
        Gate::Silu => ops.silu_mul(g, u),
        Gate::GeluTanh => ops.gelu_mul(g, u),
    });
    linear(pool, f.down, g, x, mm)
}

/// Writes the keys and values of a slice's tokens (`k`: `[n, n_embd_k_gqa]`, `v`:
/// `[n, n_embd_v_gqa]`) into their cache cells for layer `il`.
/// With Multi-head Latent Attention `v` is empty: the values are part of the key row.
pub(crate) fn store_kv(kv: &mut KvCache, il: usize, cells: &[usize], k: &[f32], v: &[f32]) {
    let (nk, nv) = (k.len() / cells.len(), v.len() / cells.len());
    for (t, (&c, k)) in cells.iter().zip(k.chunks_exact(nk)).enumerate() {
        kv.store(il, c, k, &v[t * nv..][..nv]);
    }
}

/// The shape of a layer's attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attention {
    pub(crate) n_head: usize,
    pub(crate) n_head_kv: usize,
    pub(crate) head_dim_k: usize,
    pub(crate) head_dim_v: usize,
    /// Applied to `q·k` inside the softmax (`kq_scale` of llama.cpp's `build_attn`).
    pub(crate) kq_scale: f32,
    /// Sliding window: a query at `p` sees keys at `p' > p - n_swa` only.
    pub(crate) n_swa: Option<u32>,
    /// Multi-head Latent Attention: the cache holds no values; a key's first
    /// `head_dim_v` dimensions are its value (the compressed latent, which the absorbed
    /// queries and the output projection `attn_v_b` turn into per-head values).
    pub(crate) v_in_k: bool,
}

/// Query rows one work unit of [`attention`] holds at most (tokens × the query heads of
/// one KV head): each key and value tile is loaded once for this many rows. 64 rows of
/// 256 dimensions keep a unit's queries and outputs (64 KiB each) in L2.
const Q_TILE_ROWS: usize = 64;

/// Keys per window of [`attention`]: a row's keys are cut at multiples of this many of
/// its sequence's tokens, each window's online softmax starts afresh, and the windows'
/// states are merged in key order ([`flash_merge`]). The cuts depend on the sequence
/// alone, never on the batch, the micro-batch or the thread count, so a row's arithmetic
/// is the same in every step it could be computed in: a request's text does not depend
/// on who shares its steps. A decode step, with fewer query groups than threads, runs a
/// window per unit so that one sequence's keys still spread over the threads. The cost
/// is in those units: Gemma 3 270M generating at depth 8192 on 2 threads (Emerald
/// Rapids) lost about 4 % to windows of 128 keys and 2.5 % to 256, against splitting each
/// row's keys in two; at 1 thread, and at depth 2048, no difference showed.
const WINDOW_KEYS: usize = 256;

/// Cache blocks per window.
const WINDOW_BLOCKS: usize = WINDOW_KEYS / KV_TILE;

/// Multi-head attention of a slice's queries over their sequences' cached keys and
/// values of layer `il` (which already hold the slice's own tokens): for query head `h`
/// of token `t`, `out[t, h] = Σ_j softmax_j(kq_scale · q[t, h]·k_j) · v_j` over the cells
/// `j` of `t`'s sequence it may see (causal, and the window when there is one). Query
/// head `h` reads KV head `h / (n_head / n_head_kv)` (grouped-query attention, as ggml's
/// broadcast in `mul_mat`).
///
/// `q` is `[n, n_head · head_dim_k]`, `out` `[n, n_head · head_dim_v]`. The work is cut
/// into units of (up to [`Q_TILE_ROWS`] / group size tokens) × (one KV head): all the
/// query heads of those tokens that share the KV head go through the sequence's cache
/// blocks together, flash-attention style (`Ops::attn_tile`: an online softmax, no score
/// row over the whole context), so every key and value is read once per unit. Blocks
/// that no token of a unit may see are never visited. The keys go in windows of
/// [`WINDOW_KEYS`], merged in order; when there are fewer (tile, KV head) groups than
/// threads (decoding), each window of a group is a unit of its own, and the windows'
/// states are merged after the dispatch (`flash_finish`, the same merges in the same
/// order). Units are dealt to the pool's threads in alternating order
/// ([`Units::owner`]), so the long rows of late tokens do not all land on one; each part
/// writes the running states of its units into its own slot of `parts`, merged into `out`
/// afterwards.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    pool: &ThreadPool,
    ops: &Ops,
    kv: &KvCache,
    il: usize,
    ub: &UBatch<'_>,
    q: &[f32],
    a: &Attention,
    out: &mut [f32],
    parts: &mut [AttnPart],
) {
    let n = ub.len();
    let (hd_v, n_attn) = (a.head_dim_v, a.n_head * a.head_dim_v);
    let gqa = a.n_head / a.n_head_kv;
    let u = Units::new(a, n, pool.n_threads(), || key_windows(kv, ub, a));
    // A unit's record: `[rows, hd_v]` outputs, then `[rows]` maxima and `[rows]` sums.
    let rec = u.rows * (hd_v + 2);
    for p in parts.iter_mut() {
        p.count = 0;
    }

    pool.run_with(parts, &|ith, nth, part: &mut AttnPart| {
        let count = u.owned(ith, nth).count();
        (part.ith, part.nth, part.count) = (ith, nth, count);
        // MLA: a tile's values (its keys transposed), and room to widen the keys first.
        let v_tile = if a.v_in_k { 2 * KV_TILE * hd_v } else { 0 };
        // Beside the records: the queries, a tile's scores, the rescaling factors, and a
        // window's own state before it is merged (a record's worth).
        let need = count * rec + u.rows * (a.head_dim_k + KV_TILE + 1) + rec + v_tile;
        if part.out.len() < need {
            // Only when a dispatch needs more than any before (warm-up).
            part.out.resize(need, 0.0);
        }
        let (recs, work) = part.out.split_at_mut(count * rec);
        let (qbuf, work) = work.split_at_mut(u.rows * a.head_dim_k);
        let (s, work) = work.split_at_mut(u.rows * KV_TILE);
        let (alpha, work) = work.split_at_mut(u.rows);
        let (window_state, work) = work.split_at_mut(rec);
        let vbuf = &mut work[..v_tile];
        for (unit, r) in u.owned(ith, nth).zip(recs.chunks_exact_mut(rec)) {
            let (o, ml) = r.split_at_mut(u.rows * hd_v);
            let (m, l) = ml.split_at_mut(u.rows);
            let (tile, g, split) = u.unit(unit);
            let window = (u.n_split > 1).then_some(u.w0 + split);
            let (t0, t1) = u.tokens(tile, n);
            // One pass per run of tokens of one sequence.
            let mut ta = t0;
            while ta < t1 {
                let tb = (ta..t1).find(|&t| ub.seq[t] != ub.seq[ta]).unwrap_or(t1);
                let rows = (ta - t0) * gqa..(tb - t0) * gqa;
                let mut st = FlashRows {
                    m: &mut m[rows.clone()],
                    l: &mut l[rows.clone()],
                    o: &mut o[rows.start * hd_v..rows.end * hd_v],
                    s: &mut s[..rows.len() * KV_TILE],
                    alpha: &mut alpha[..rows.len()],
                };
                let qbuf = &mut qbuf[..rows.len() * a.head_dim_k];
                attend_run(
                    ops,
                    kv,
                    il,
                    ub,
                    q,
                    a,
                    ta..tb,
                    g,
                    window,
                    (qbuf, vbuf),
                    &mut st,
                    window_state,
                );
                ta = tb;
            }
        }
    });

    // The parts' `nth` is the dispatch's (1 when the pool ran it inline).
    let nth = parts[0].nth.max(1);
    for grp in 0..u.n_units / u.n_split {
        let (tile, g, _) = u.unit(grp * u.n_split);
        let (t0, t1) = u.tokens(tile, n);
        for t in t0..t1 {
            for hh in 0..gqa {
                let r = (t - t0) * gqa + hh;
                let states = (0..u.n_split).map(|split| {
                    let unit = grp * u.n_split + split;
                    let (part, i) = Units::owner(unit, nth);
                    let rec = &parts[part].out[i * rec..][..rec];
                    let o = &rec[r * hd_v..][..hd_v];
                    (rec[u.rows * hd_v + r], rec[u.rows * (hd_v + 1) + r], o)
                });
                let h = g * gqa + hh;
                flash_finish(states, &mut out[t * n_attn + h * hd_v..][..hd_v]);
            }
        }
    }
}

/// How [`attention`] cuts its work: units `(query tile, KV head, split)`, numbered
/// split-fastest so that a group's splits are consecutive.
#[derive(Debug, Clone, Copy)]
struct Units {
    /// Tokens per query tile.
    tok_per_tile: usize,
    /// Query rows of a full tile.
    rows: usize,
    n_head_kv: usize,
    /// Units per (tile, KV head) group: 1, or a window each.
    n_split: usize,
    /// The first window of a group's units when `n_split > 1`.
    w0: usize,
    n_units: usize,
}

impl Units {
    /// Units for `n_tokens` tokens on `n_threads` threads; `windows` gives the key
    /// windows `w0..w1` that any of the tokens may see, asked only when a unit per
    /// window is wanted.
    fn new(
        a: &Attention,
        n_tokens: usize,
        n_threads: usize,
        windows: impl FnOnce() -> (usize, usize),
    ) -> Units {
        let gqa = a.n_head / a.n_head_kv;
        let full = (Q_TILE_ROWS / gqa).max(1);
        // Too few groups for the threads (decoding, few KV heads): a token per tile, so
        // that several sequences' tokens go to different threads. A row's arithmetic
        // does not depend on its tile (blocks its run may not see change nothing).
        let tok_per_tile = if n_tokens.div_ceil(full) * a.n_head_kv < n_threads {
            1
        } else {
            full
        };
        let n_groups = n_tokens.div_ceil(tok_per_tile) * a.n_head_kv;
        // Still fewer groups than threads (one token, few KV heads): a unit per window.
        let (w0, n_split) = if n_groups < n_threads {
            let (w0, w1) = windows();
            (w0, w1.saturating_sub(w0).max(1))
        } else {
            (0, 1)
        };
        Units {
            tok_per_tile,
            rows: tok_per_tile.min(n_tokens.max(1)) * gqa,
            n_head_kv: a.n_head_kv,
            n_split,
            w0,
            n_units: n_groups * n_split,
        }
    }

    /// `(query tile, KV head, split)` of a unit.
    fn unit(&self, unit: usize) -> (usize, usize, usize) {
        let grp = unit / self.n_split;
        (
            grp / self.n_head_kv,
            grp % self.n_head_kv,
            unit % self.n_split,
        )
    }

    /// Which part runs `unit` in a dispatch of `nth` parts, and as its how-manyth unit:
    /// dealt in rounds of `nth`, every other round in reverse ("boustrophedon"), so that
    /// with causal attention, where each tile costs more than the one before, every part
    /// gets about the same total.
    fn owner(unit: usize, nth: usize) -> (usize, usize) {
        let (round, k) = (unit / nth, unit % nth);
        (if round % 2 == 0 { k } else { nth - 1 - k }, round)
    }

    /// The units part `ith` of `nth` runs, in order.
    fn owned(&self, ith: usize, nth: usize) -> impl Iterator<Item = usize> {
        let n_units = self.n_units;
        (0..n_units.div_ceil(nth))
            .map(move |round| round * nth + if round % 2 == 0 { ith } else { nth - 1 - ith })
            .filter(move |&unit| unit < n_units)
    }

    /// The tokens `t0..t1` of a query tile.
    fn tokens(&self, tile: usize, n_tokens: usize) -> (usize, usize) {
        let t0 = tile * self.tok_per_tile;
        (t0, (t0 + self.tok_per_tile).min(n_tokens))
    }
}

/// The key windows `w0..w1` that any token of `ub` may see in its sequence.
fn key_windows(kv: &KvCache, ub: &UBatch<'_>, a: &Attention) -> (usize, usize) {
    let (mut w0, mut w1) = (usize::MAX, 0);
    for (&seq, &pos) in ub.seq.iter().zip(ub.pos) {
        let (lo, hi) = kv.view(seq).visible(pos, a.n_swa);
        if lo < hi {
            w0 = w0.min(lo / WINDOW_KEYS);
            w1 = w1.max(hi.div_ceil(WINDOW_KEYS));
        }
    }
    (w0.min(w1), w1)
}

/// One pass of [`attention`]: the query heads of KV head `g` of tokens `toks` (one
/// sequence's, at most [`Q_TILE_ROWS`] rows) over the cache blocks any of them may see,
/// window by window ([`WINDOW_KEYS`]), into `st` (reset here): only key window `window`
/// when one is given, else every window, each one's state computed afresh in
/// `window_state` (room for `st`'s `o`, `m` and `l`) and merged into `st` in order. `bufs`
/// are the queries, packed `[rows, head_dim_k]`, and (`2 · KV_TILE · head_dim_v`, empty
/// unless `a.v_in_k`) room for a tile's values taken from its keys.
#[allow(clippy::too_many_arguments)]
fn attend_run(
    ops: &Ops,
    kv: &KvCache,
    il: usize,
    ub: &UBatch<'_>,
    q: &[f32],
    a: &Attention,
    toks: std::ops::Range<usize>,
    g: usize,
    window: Option<usize>,
    (qbuf, vbuf): (&mut [f32], &mut [f32]),
    st: &mut FlashRows<'_>,
    window_state: &mut [f32],
) {
    let gqa = a.n_head / a.n_head_kv;
    let width = gqa * a.head_dim_k;
    let n_q = a.n_head * a.head_dim_k;
    for (t, dst) in toks.clone().zip(qbuf.chunks_exact_mut(width)) {
        dst.copy_from_slice(&q[t * n_q + g * width..][..width]);
    }
    st.reset();
    let seq = kv.view(ub.seq[toks.start]);
    // The sequence's tokens each query may see; their union is one run (positions and
    // so both ends increase along the sequence).
    let mut seen = [(0, 0); Q_TILE_ROWS];
    let seen = &mut seen[..toks.len()];
    for (s, t) in seen.iter_mut().zip(toks) {
        *s = seq.visible(ub.pos[t], a.n_swa);
    }
    let lo = seen.iter().map(|s| s.0).min().unwrap_or(0);
    let hi = seen.iter().map(|s| s.1).max().unwrap_or(0);
    if lo >= hi {
        return;
    }
    let (jb0, jb1) = (lo / KV_TILE, hi.div_ceil(KV_TILE));
    let windows = match window {
        Some(w) => w..w + 1,
        None => jb0 / WINDOW_BLOCKS..jb1.div_ceil(WINDOW_BLOCKS),
    };
    let (hd_v, rows) = (a.head_dim_v, st.m.len());
    let (wo, wml) = window_state.split_at_mut(rows * hd_v);
    let (wm, wl) = wml.split_at_mut(rows);
    let wl = &mut wl[..rows];
    let mut first = true;
    for w in windows {
        let blocks = (w * WINDOW_BLOCKS).max(jb0)..((w + 1) * WINDOW_BLOCKS).min(jb1);
        if blocks.is_empty() {
            continue;
        }
        let run = |st: &mut FlashRows<'_>, vbuf: &mut [f32]| {
            attend_blocks(
                ops,
                kv,
                il,
                &seq,
                a,
                g,
                blocks.clone(),
                seen,
                qbuf,
                vbuf,
                st,
            );
        };
        if first {
            // Merging into a state that saw nothing copies: the first window can go
            // straight into `st`.
            run(st, vbuf);
            first = false;
            continue;
        }
        let mut ws = FlashRows {
            m: &mut *wm,
            l: &mut *wl,
            o: &mut *wo,
            s: &mut *st.s,
            alpha: &mut *st.alpha,
        };
        ws.reset();
        run(&mut ws, vbuf);
        for (r, o) in st.o.chunks_exact_mut(hd_v).enumerate() {
            let part = (wm[r], wl[r], &wo[r * hd_v..][..hd_v]);
            flash_merge(&mut st.m[r], &mut st.l[r], o, part);
        }
    }
}

/// The cache blocks `blocks` of sequence `seq` for KV head `g`, added to `st` (one
/// online softmax): `seen[i]` are the tokens query run `i` may see, `qbuf` the packed
/// queries, `vbuf` room for a tile's values when they are its keys (`a.v_in_k`).
#[allow(clippy::too_many_arguments)]
fn attend_blocks(
    ops: &Ops,
    kv: &KvCache,
    il: usize,
    seq: &SeqView<'_>,
    a: &Attention,
    g: usize,
    blocks: std::ops::Range<usize>,
    seen: &[(usize, usize)],
    qbuf: &[f32],
    vbuf: &mut [f32],
    st: &mut FlashRows<'_>,
) {
    let mut vis = [(0, 0); Q_TILE_ROWS];
    let vis = &mut vis[..seen.len()];
    let hd_v_cached = if a.v_in_k { 0 } else { a.head_dim_v };
    let tile_of = |jb: usize| kv.tile(il, seq.block(jb), g, a.head_dim_k, hd_v_cached);
    // The first tile now; each later one while the kernels work on the one before.
    if !blocks.is_empty() {
        tile_of(blocks.start).prefetch();
    }
    for jb in blocks.clone() {
        let next = (jb + 1 < blocks.end).then(|| tile_of(jb + 1));
        let j0 = jb * KV_TILE;
        for (v, s) in vis.iter_mut().zip(seen.iter()) {
            *v = (s.0.saturating_sub(j0), s.1.saturating_sub(j0));
        }
        let mut tile = tile_of(jb);
        if a.v_in_k {
            let (tmp, values) = vbuf.split_at_mut(KV_TILE * a.head_dim_v);
            keys_to_values(&tile.k, a.head_dim_v, tmp, values);
            tile.v = KvData::F32(values);
            tile.v_stride = a.head_dim_v;
        }
        ops.attn_tile(qbuf, a.kq_scale, &tile, next.as_ref(), vis, st);
    }
}

/// The output head for the slice's rows that want logits: `logits[o] =
/// output · (rms_norm(x[t]) · output_norm)` for the `o`-th such row `t` of `b.x`, written
/// to rows `out_row..` of `b.logits` (`[n_outputs, n_vocab]`), and their block keys to
/// the same rows of `b.keys` where the head takes them (else `b.keyed` is cleared).
/// Returns the number of rows written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn output(
    pool: &ThreadPool,
    ops: &Ops,
    ub: &UBatch<'_>,
    output_norm: &[f32],
    eps: f32,
    output: &Head<'_>,
    b: &mut Bufs<'_>,
    out_row: usize,
) -> Result<usize, ModelError> {
    let n_embd = output_norm.len();
    let n_vocab = output.n_rows();
    let mut n_out = 0;
    for (xt, _) in
        b.x.chunks_exact(n_embd)
            .zip(ub.logits)
            .filter(|(_, &want)| want)
    {
        b.cur[n_out * n_embd..][..n_embd].copy_from_slice(xt);
        n_out += 1;
    }
    if n_out == 0 {
        return Ok(0);
    }
    let normed = &mut b.out_x[..n_out * n_embd];
    rms_norm(ops, &b.cur[..n_out * n_embd], output_norm, eps, normed);
    let logits = &mut b.logits[out_row * n_vocab..][..n_out * n_vocab];
    // In a scheduler's batch (a split by token), every row of logits takes the row path:
    // a prompt wants one row, and the GEMM would unpack the whole output matrix for it
    // (on Gemma 3 270M, 168M weights: most of a short prompt's time).
    let by_token = b.matmul.gemm_tokens;
    if let GemmTokens::From(_) = by_token {
        b.matmul.gemm_tokens = GemmTokens::From(n_out);
    }
    let n_keys = n_vocab.div_ceil(KEY_BLOCK);
    let keys = &mut b.keys[out_row * n_keys..][..n_out * n_keys];
    let r = output.matmul_keyed(pool, normed, n_out, logits, keys, b.matmul);
    b.matmul.gemm_tokens = by_token;
    *b.keyed &= r?;
    Ok(n_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit is run by exactly one part, and the merge finds it where the part put
    /// it (its position among that part's units).
    #[test]
    fn units_are_dealt_once_and_found_where_stored() {
        for n_units in [1, 2, 3, 7, 32, 33] {
            for nth in 1..5 {
                let u = Units {
                    tok_per_tile: 1,
                    rows: 1,
                    n_head_kv: 1,
                    n_split: 1,
                    w0: 0,
                    n_units,
                };
                let mut seen = vec![0; n_units];
                for ith in 0..nth {
                    for (i, unit) in u.owned(ith, nth).enumerate() {
                        seen[unit] += 1;
                        assert_eq!(
                            Units::owner(unit, nth),
                            (ith, i),
                            "{n_units} units, {nth} parts"
                        );
                    }
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{n_units} units, {nth} parts: {seen:?}"
                );
            }
        }
    }

    /// Decoding one token over one KV head still gives every thread work.
    #[test]
    fn few_groups_split_their_keys() {
        let a = Attention {
            n_head: 4,
            n_head_kv: 1,
            head_dim_k: 256,
            head_dim_v: 256,
            kq_scale: 0.0625,
            n_swa: None,
            v_in_k: false,
        };
        // One token seeing windows 3..7: a unit per window.
        let u = Units::new(&a, 1, 2, || (3, 7));
        assert_eq!((u.n_split, u.w0, u.n_units, u.rows), (4, 3, 4, 4));
        assert_eq!(u.unit(1), (0, 0, 1));
        // Many tokens: a unit per (tile, KV head), the windows in turn within it.
        let u = Units::new(&a, 512, 2, || unreachable!("not asked"));
        assert_eq!((u.n_split, u.n_units, u.rows), (1, 32, 64));
        // Four sequences decoding: a tile each, which fills both threads.
        let u = Units::new(&a, 4, 2, || unreachable!("not asked"));
        assert_eq!((u.tok_per_tile, u.n_split, u.n_units, u.rows), (1, 1, 4, 4));
    }
}
