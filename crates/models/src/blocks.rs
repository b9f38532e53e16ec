//! The pieces transformer blocks are built from, shared by the architecture files as
//! plain functions: embedding lookup, RMSNorm over rows and heads, linear layers, RoPE,
//! the KV store and attention, the gated feed-forward network, and the output head.
//!
//! Activations are row-major `[n_tokens, width]` f32 slices; each function's doc gives
//! the shapes. Numerics are the kernels crate's (`matmul`, `Ops`); what is written here
//! is bookkeeping, plus two element-wise loops (`add`, `axpy`) too simple to need a
//! kernel.

use hearth_kernels::dispatch::Kernels;
use hearth_kernels::matmul::{matmul, MatmulScratch, WeightMatrix};
use hearth_kernels::ops::{Ops, RopeCache};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{dequantize_row, TensorType};

use crate::batch::UBatch;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
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
    /// `[max(n_embd, head sizes)]`: one row or head, for in-place norms.
    pub(crate) row: &'s mut [f32],
    pub(crate) rope: &'s mut [RopeCache],
    pub(crate) matmul: &'s mut MatmulScratch,
    pub(crate) attn_parts: &'s mut [AttnPart],
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
            row: &mut self.row,
            rope: &mut self.rope,
            matmul: &mut self.matmul,
            attn_parts: &mut self.attn_parts,
        }
    }
}

/// `out[t] = embd[tokens[t]]` (ggml's `get_rows`): `out` is `[n, n_embd]`. Tokens were
/// checked against the vocabulary and the table's type at load.
pub(crate) fn get_rows(embd: &WeightMatrix<'_>, tokens: &[u32], out: &mut [f32]) {
    for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(embd.n_cols())) {
        dequantize_row(embd.ty(), embd.row(t as usize), o)
            .expect("embedding type and token range checked before the pass");
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
    matmul(pool, &l.w, x, n_tokens, out, mm)?;
    if let Some(b) = &l.b {
        for o in out.chunks_exact_mut(b.len()) {
            add(o, b);
        }
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
    for ((q, k), &p) in q.chunks_exact_mut(nq).zip(k.chunks_exact_mut(nk)).zip(pos) {
        cache.set_pos(p);
        ops.rope(q, head_dim, cache);
        ops.rope(k, head_dim, cache);
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

/// `y += a·x`, element-wise: one value row's contribution to an attention output.
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

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
    linear(pool, f.up, x, u, mm)?;
    linear(pool, f.gate, x, g, mm)?;
    match f.act {
        Gate::Silu => ops.silu_mul(g, u),
        Gate::GeluTanh => ops.gelu_mul(g, u),
    }
    linear(pool, f.down, g, x, mm)
}

/// Writes the keys and values of a slice's tokens (`k`: `[n, n_embd_k_gqa]`, `v`:
/// `[n, n_embd_v_gqa]`) into their cache cells for layer `il`.
pub(crate) fn store_kv(kv: &mut KvCache, il: usize, cells: &[usize], k: &[f32], v: &[f32]) {
    let (nk, nv) = (k.len() / cells.len(), v.len() / cells.len());
    for ((&c, k), v) in cells.iter().zip(k.chunks_exact(nk)).zip(v.chunks_exact(nv)) {
        kv.store(il, c, k, v);
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
}

/// Multi-head attention of a slice's queries over their sequences' cached keys and
/// values of layer `il` (which already hold the slice's own tokens): for query head `h`
/// of token `t`, `out[t, h] = Σ_j softmax_j(kq_scale · q[t, h]·k_j) · v_j` over the cells
/// `j` of `t`'s sequence it may see (causal, and the window when there is one). Query
/// head `h` reads KV head `h / (n_head / n_head_kv)` (grouped-query attention, as ggml's
/// broadcast in `mul_mat`).
///
/// `q` is `[n, n_head · head_dim_k]`, `out` `[n, n_head · head_dim_v]`. The rows (a
/// token's query head) are spread over the pool round-robin, so the long rows of late
/// tokens do not all land on one thread; each part writes into its own slot of `parts`,
/// copied into `out` afterwards.
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
    let n_rows = ub.len() * a.n_head;
    let (hd_k, hd_v) = (a.head_dim_k, a.head_dim_v);
    let (n_q, n_k, n_v) = (a.n_head * hd_k, a.n_head_kv * hd_k, a.n_head_kv * hd_v);
    let gqa = a.n_head / a.n_head_kv;
    let dot = Kernels::get()
        .dot(TensorType::F32)
        .expect("every level has an f32 dot product");
    let (k_all, v_all) = (kv.k(il), kv.v(il));
    for p in parts.iter_mut() {
        p.count = 0;
    }

    pool.run_with(parts, &|ith, nth, part: &mut AttnPart| {
        let count = n_rows.saturating_sub(ith).div_ceil(nth);
        (part.ith, part.nth, part.count) = (ith, nth, count);
        if part.out.len() < count * hd_v {
            // Only when a dispatch has more rows per part than any before (warm-up).
            part.out.resize(count * hd_v, 0.0);
        }
        for (i, r) in (ith..n_rows).step_by(nth).enumerate() {
            let (t, h) = (r / a.n_head, r % a.n_head);
            let g = h / gqa;
            let qh = &q[t * n_q + h * hd_k..][..hd_k];
            let seq = kv.view(ub.seq[t]);
            let (lo, hi) = seq.visible(ub.pos[t], a.n_swa);
            let scores = &mut part.scores[..hi - lo];
            for (s, j) in scores.iter_mut().zip(lo..hi) {
                let kh = &k_all[seq.cell(j) * n_k + g * hd_k..][..hd_k];
                *s = dot(bytemuck::cast_slice(kh), bytemuck::cast_slice(qh));
            }
            ops.softmax(scores, a.kq_scale, None);
            let o = &mut part.out[i * hd_v..][..hd_v];
            o.fill(0.0);
            for (&w, j) in scores.iter().zip(lo..hi) {
                axpy(w, &v_all[seq.cell(j) * n_v + g * hd_v..][..hd_v], o);
            }
        }
    });

    for p in parts.iter() {
        for i in 0..p.count {
            let r = p.ith + i * p.nth;
            out[r * hd_v..][..hd_v].copy_from_slice(&p.out[i * hd_v..][..hd_v]);
        }
    }
}

/// The output head for the slice's rows that want logits: `logits[o] =
/// output · (rms_norm(x[t]) · output_norm)` for the `o`-th such row `t` of `b.x`, written
/// to rows `out_row..` of `b.logits` (`[n_outputs, n_vocab]`). Returns the number of rows
/// written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn output(
    pool: &ThreadPool,
    ops: &Ops,
    ub: &UBatch<'_>,
    output_norm: &[f32],
    eps: f32,
    output: &WeightMatrix<'_>,
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
    matmul(pool, output, normed, n_out, logits, b.matmul)?;
    Ok(n_out)
}
