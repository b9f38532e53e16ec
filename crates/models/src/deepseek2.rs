//! `deepseek2`: DeepSeek-V2, V2-Lite, V3 and R1 (Multi-head Latent Attention and
//! mixture-of-experts).
//!
//! As llama.cpp's `src/models/deepseek2.cpp` (b11312, in llama-cpp-python 0.3.36):
//! - **Queries**: `attn_q_a` → RMSNorm (`attn_q_a_norm`) → `attn_q_b` when
//!   `attention.q_lora_rank` > 0 (V2, V3, R1), or one `attn_q` (V2-Lite). Each head's
//!   query is `[qk_nope | qk_rope]` (`key_length_mla` = 192 = 128 + 64 in the real models).
//! - **Latent keys and values**: `attn_kv_a_mqa` gives per token one compressed row
//!   `c` (`kv_lora_rank`, RMS-normed by `attn_kv_a_norm`) and one shared RoPE key `k_pe`
//!   (`n_rot`). RoPE is the adjacent-pair (normal) layout, on `k_pe` and each head's
//!   `qk_rope` part only.
//! - **Multi-head Latent Attention, absorbed**: head `h`'s key is `[W_kb[h]·c | k_pe]`
//!   and its value `W_vb[h]·c`, so `q·k = (W_kb[h]ᵀ·q_nope)·c + q_pe·k_pe`. The cache
//!   holds only `[c | k_pe]` (576 values per token and layer in V3/R1, `kv_latent` in
//!   [`HParams`]); each query is turned into the latent space once (`attn_k_b`,
//!   `[kv_lora_rank, qk_nope]` per head), attention runs as multi-query attention over
//!   the latent rows (values = their first `kv_lora_rank` dimensions), and each head's
//!   output goes back through `attn_v_b` (`[v_mla, kv_lora_rank]` per head) before
//!   `attn_output`. Prompts and decoding take this one path.
//! - **Legacy files** with one `attn_kv_b` (`[n_head·(qk_nope + v_mla), kv_lora_rank]`,
//!   no `key_length_mla` key), which llama.cpp runs without MLA (full per-head keys and
//!   values, 40× the cache): here `attn_v_b` is a view of its value rows and `attn_k_b`
//!   is derived at load, as ik_llama.cpp does, by transposing its key rows into f32
//!   (`n_head · kv_lora_rank · qk_nope` floats per layer: 4 MiB for V2-Lite, 32 MiB for
//!   V3). Same math, same latent cache.
//! - **Attention scale**: `mscale² / sqrt(key_length_mla)` with DeepSeek's YaRN
//!   `mscale = 1 + 0.1·mscale_all_dim·ln(factor)` (times the rotation's own magnitude
//!   factor), as llama.cpp's graph pre-scales `kq_scale`.
//! - **Feed-forward**: the first `leading_dense_block_count` blocks are dense SwiGLU
//!   (`ffn_gate/up/down`, `feed_forward_length`); the rest are mixture-of-experts
//!   ([`crate::moe`]) plus `expert_shared_count` shared experts.

use hearth_gguf::TensorType;
use hearth_kernels::matmul::{
    matmul, matvec_batch, GemmTokens, MatmulScratch, WeightMatrix, MAX_BATCH,
};
use hearth_kernels::ops::RopeCache;
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::dequantize_row;

use crate::batch::UBatch;
use crate::blocks::{self, Attention, Pass};
use crate::error::ModelError;
use crate::head::Head;
use crate::hparams::{HParams, Keys};
use crate::moe::{Gating, LayerFfn, Moe, Routing};
use crate::scratch::Dims;
use crate::weights::{Linear, Weights};

/// A DeepSeek-V2/V3 model.
pub(crate) struct Deepseek2<'a> {
    /// `[n_vocab, n_embd]`
    tok_embd: WeightMatrix<'a>,
    layers: Vec<Layer<'a>>,
    /// `[n_embd]`
    output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`
    pub(crate) output: Head<'a>,
    /// Multi-query attention over the latent rows.
    attn: Attention,
    rope: RopeCache,
    mla: Mla,
    /// The widest feed-forward network (dense, routed or shared).
    n_ff_max: usize,
}

/// The sizes of Multi-head Latent Attention.
#[derive(Debug, Clone, Copy)]
struct Mla {
    /// `attention.q_lora_rank`; 0 when queries come from one `attn_q`.
    q_lora: usize,
    /// `attention.kv_lora_rank`: the compressed row `c`.
    kv_lora: usize,
    /// `key_length_mla - n_rot`: the part of each query head without RoPE.
    qk_nope: usize,
    /// `n_rot`: the RoPE part of each query head, and the shared key `k_pe`.
    qk_rope: usize,
    /// `value_length_mla`: a head's value (and attention output) size.
    v_mla: usize,
}

impl Mla {
    /// `key_length_mla`: a query head before absorption.
    fn k_mla(&self) -> usize {
        self.qk_nope + self.qk_rope
    }

    /// A latent cache row, and an absorbed query head: `kv_lora_rank + n_rot`.
    fn latent(&self) -> usize {
        self.kv_lora + self.qk_rope
    }
}

/// Per-head matrices of one layer: slices of a 3-D tensor in the file, or derived at
/// load (f32, `[n_head][n_rows, n_cols]`).
enum HeadMats<'a> {
    File(Vec<WeightMatrix<'a>>),
    Derived {
        data: Vec<f32>,
        n_rows: usize,
        n_cols: usize,
    },
}

impl HeadMats<'_> {
    fn head(&self, h: usize) -> Result<WeightMatrix<'_>, ModelError> {
        match self {
            HeadMats::File(m) => Ok(m[h]),
            HeadMats::Derived {
                data,
                n_rows,
                n_cols,
            } => {
                let n = n_rows * n_cols;
                let bytes = bytemuck::cast_slice(&data[h * n..][..n]);
                Ok(WeightMatrix::new(TensorType::F32, *n_rows, *n_cols, bytes)?)
            }
        }
    }
}

/// Queries: through a low-rank bottleneck, or one matrix.
enum Queries<'a> {
    Lora {
        /// `[q_lora_rank, n_embd]`
        attn_q_a: Linear<'a>,
        /// `[q_lora_rank]`
        attn_q_a_norm: Vec<f32>,
        /// `[n_head · key_length_mla, q_lora_rank]`
        attn_q_b: Linear<'a>,
    },
    /// `[n_head · key_length_mla, n_embd]`
    Direct(Linear<'a>),
}

/// One transformer block.
struct Layer<'a> {
    /// `[n_embd]`
    attn_norm: Vec<f32>,
    q: Queries<'a>,
    /// `[kv_lora_rank + n_rot, n_embd]`
    attn_kv_a_mqa: Linear<'a>,
    /// `[kv_lora_rank]`
    attn_kv_a_norm: Vec<f32>,
    /// Per head `[kv_lora_rank, qk_nope]`: queries into the latent space.
    attn_k_b: HeadMats<'a>,
    /// Per head `[v_mla, kv_lora_rank]`: latent attention output into a head's value.
    attn_v_b: HeadMats<'a>,
    /// `[n_embd, n_head · v_mla]`
    attn_output: Linear<'a>,
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    ffn: LayerFfn<'a>,
}

impl<'a> Deepseek2<'a> {
    /// Every layer's linear layers (for packing).
    /// Whether any layer's feed-forward is a mixture of experts.
    pub(crate) fn has_experts(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l.ffn, LayerFfn::Moe(_)))
    }

    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear<'a>> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            match &mut l.q {
                Queries::Lora {
                    attn_q_a, attn_q_b, ..
                } => out.extend([attn_q_a, attn_q_b]),
                Queries::Direct(q) => out.push(q),
            }
            out.extend([&mut l.attn_kv_a_mqa, &mut l.attn_output]);
            out.extend(l.ffn.linears_mut());
        }
        out
    }

    /// Loads a `deepseek2` file.
    pub(crate) fn load(
        w: &mut Weights<'a>,
        hp: &HParams,
        k: &Keys<'_>,
    ) -> Result<Deepseek2<'a>, ModelError> {
        let (n_embd, n_head) = (hp.n_embd, hp.n_head);
        let max_dim = 1 << 16;
        let q_lora = k
            .opt_count("attention.q_lora_rank", 0, max_dim)?
            .unwrap_or(0);
        let kv_lora = k.count("attention.kv_lora_rank", 1, max_dim)?;
        let k_mla = k.opt_count("attention.key_length_mla", 1, max_dim)?;
        let v_mla = k.opt_count("attention.value_length_mla", 1, max_dim)?;
        // Files with split `attn_k_b`/`attn_v_b` name the per-head sizes `*_mla` and give
        // the latent row as `key_length`/`value_length`; legacy files give the per-head
        // sizes there.
        let split = match (k_mla, v_mla) {
            (Some(km), Some(vm)) => {
                if hp.n_embd_head_k != kv_lora + hp.n_rot || hp.n_embd_head_v != kv_lora {
                    return Err(k.bad(
                        "attention.key_length",
                        format!(
                            "key_length {} / value_length {} are not kv_lora_rank + n_rot \
                             ({}) / kv_lora_rank ({kv_lora})",
                            hp.n_embd_head_k,
                            hp.n_embd_head_v,
                            kv_lora + hp.n_rot
                        ),
                    ));
                }
                Some((km, vm))
            }
            (None, None) => None,
            _ => {
                return Err(k.bad(
                    "attention.key_length_mla",
                    "key_length_mla and value_length_mla must both be present or both absent"
                        .into(),
                ))
            }
        };
        let (k_mla, v_mla) = split.unwrap_or((hp.n_embd_head_k, hp.n_embd_head_v));
        if k_mla <= hp.n_rot {
            return Err(k.bad(
                "rope.dimension_count",
                format!(
                    "{} leaves no dimensions without RoPE in {k_mla}-wide query heads",
                    hp.n_rot
                ),
            ));
        }
        let mla = Mla {
            q_lora,
            kv_lora,
            qk_nope: k_mla - hp.n_rot,
            qk_rope: hp.n_rot,
            v_mla,
        };
        let n_ff_exp = k.count("expert_feed_forward_length", 1, u64::MAX)?;
        let n_shared = k.count("expert_shared_count", 0, 1 << 10)?;
        let n_dense = k
            .opt_count("leading_dense_block_count", 0, hp.n_layer as u64)?
            .unwrap_or(0);
        if n_dense > 0 && hp.n_ff == 0 {
            return Err(k.bad(
                "feed_forward_length",
                format!("missing, and {n_dense} leading blocks are dense"),
            ));
        }
        let routing = Routing::read(k, hp, Gating::Softmax, false)?;

        let tok_embd = w.embedding("token_embd.weight", n_embd, hp.n_vocab)?;
        let output_norm = w.vector("output_norm.weight", n_embd)?;
        let output = w.head(n_embd, hp.n_vocab)?;
        let rope = hp.rope_params(hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale);
        let kq_scale = kq_scale(hp, rope.attn_factor, k_mla);
        let rope = RopeCache::new(rope, None)?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |name: &str| format!("blk.{il}.{name}");
            let n_q = n_head * k_mla;
            let q = if q_lora > 0 {
                Queries::Lora {
                    attn_q_a: w.linear(&p("attn_q_a"), n_embd, q_lora, false)?,
                    attn_q_a_norm: w.vector(&p("attn_q_a_norm.weight"), q_lora)?,
                    attn_q_b: w.linear(&p("attn_q_b"), q_lora, n_q, false)?,
                }
            } else {
                Queries::Direct(w.linear(&p("attn_q"), n_embd, n_q, false)?)
            };
            let (attn_k_b, attn_v_b) = match split {
                Some(_) => (
                    HeadMats::File(w.experts(
                        &p("attn_k_b.weight"),
                        mla.qk_nope,
                        kv_lora,
                        n_head,
                    )?),
                    HeadMats::File(w.experts(&p("attn_v_b.weight"), kv_lora, v_mla, n_head)?),
                ),
                None => {
                    let kv_b = w.matrix(
                        &p("attn_kv_b.weight"),
                        kv_lora,
                        n_head * (mla.qk_nope + v_mla),
                    )?;
                    absorb_kv_b(&kv_b, &mla, n_head, &p("attn_kv_b.weight"))?
                }
            };
            let ffn = if il < n_dense {
                LayerFfn::Dense([
                    w.linear(&p("ffn_gate"), n_embd, hp.n_ff, false)?,
                    w.linear(&p("ffn_up"), n_embd, hp.n_ff, false)?,
                    w.linear(&p("ffn_down"), hp.n_ff, n_embd, false)?,
                ])
            } else {
                let shared = (n_shared > 0).then_some(n_ff_exp * n_shared);
                LayerFfn::Moe(Moe::load(w, il, n_embd, n_ff_exp, shared, routing)?)
            };
            layers.push(Layer {
                attn_norm: w.vector(&p("attn_norm.weight"), n_embd)?,
                q,
                attn_kv_a_mqa: w.linear(&p("attn_kv_a_mqa"), n_embd, mla.latent(), false)?,
                attn_kv_a_norm: w.vector(&p("attn_kv_a_norm.weight"), kv_lora)?,
                attn_k_b,
                attn_v_b,
                attn_output: w.linear(&p("attn_output"), n_head * v_mla, n_embd, false)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), n_embd)?,
                ffn,
            });
        }
        let n_ff_max = [
            if n_dense > 0 { hp.n_ff } else { 0 },
            n_ff_exp * n_shared.max(1),
            n_head * k_mla,
            n_head * v_mla,
            q_lora,
            kv_lora,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Ok(Deepseek2 {
            tok_embd,
            layers,
            output_norm,
            output,
            attn: Attention {
                n_head,
                n_head_kv: 1,
                head_dim_k: mla.latent(),
                head_dim_v: kv_lora,
                kq_scale,
                n_swa: None,
                v_in_k: true,
            },
            rope,
            mla,
            n_ff_max,
        })
    }

    /// The RoPE angle caches a scratch needs (one).
    pub(crate) fn rope_caches(&self) -> Vec<RopeCache> {
        vec![self.rope.clone()]
    }

    /// The widths of the scratch: absorbed queries and latent rows in place of queries,
    /// keys and values, and the feed-forward buffers wide enough for the per-head
    /// temporaries of the attention too.
    pub(crate) fn dims(&self, hp: &HParams) -> Dims {
        let m = &self.mla;
        let mut d = Dims::standard(hp, self.n_ff_max);
        // Also the head-major `attn_v_b` outputs, `[n_head][n, v_mla]`.
        d.n_q = hp.n_head * m.latent().max(m.v_mla);
        d.n_k = m.latent();
        d.n_v = 0;
        d.n_attn = hp.n_head * m.kv_lora;
        d.n_row = hp.n_embd.max(m.q_lora).max(m.kv_lora);
        d
    }

    /// Runs a slice of tokens through the model; logits of the rows that want them go to
    /// rows `out_row..` of the scratch's logits.
    pub(crate) fn forward(
        &self,
        hp: &HParams,
        p: &mut Pass<'_>,
        ub: &UBatch<'_>,
        out_row: usize,
    ) -> Result<(), ModelError> {
        let (pool, ops, eps) = (p.pool, p.ops, hp.rms_eps);
        let n = ub.len();
        let m = self.mla;
        let (n_head, lat) = (hp.n_head, m.latent());
        let b = &mut p.s.bufs(n);

        blocks::get_rows(&self.tok_embd, &self.output, ub.tokens, b.x); // inpL
        for (il, l) in self.layers.iter().enumerate() {
            blocks::rms_norm(ops, b.x, &l.attn_norm, eps, b.cur); // attn_norm

            // q: [n, n_head, k_mla], in `gate` until absorbed.
            let q = &mut b.gate[..n * n_head * m.k_mla()];
            // kv_cmpr_pe: [n, kv_lora + n_rot] = [c | k_pe] in `k`, from the same input
            // as the queries (one dispatch for both when decoding).
            match &l.q {
                Queries::Lora {
                    attn_q_a,
                    attn_q_a_norm,
                    attn_q_b,
                } => {
                    let qa = &mut b.up[..n * m.q_lora];
                    let products = &mut [(attn_q_a, &mut *qa), (&l.attn_kv_a_mqa, &mut *b.k)];
                    blocks::linear_many(pool, products, b.cur, b.matmul)?;
                    blocks::rms_norm_inplace(ops, qa, attn_q_a_norm, eps, b.row);
                    blocks::linear(pool, attn_q_b, qa, q, b.matmul)?;
                }
                Queries::Direct(attn_q) => {
                    let products = &mut [(attn_q, &mut *q), (&l.attn_kv_a_mqa, &mut *b.k)];
                    blocks::linear_many(pool, products, b.cur, b.matmul)?;
                }
            }
            // The latent row normed, and RoPE on k_pe and on each head's q_pe.
            for (t, row) in b.k.chunks_exact_mut(lat).enumerate() {
                let (c, k_pe) = row.split_at_mut(m.kv_lora);
                b.row[..m.kv_lora].copy_from_slice(c);
                ops.rms_norm(&b.row[..m.kv_lora], Some(&l.attn_kv_a_norm), eps, c);
                b.rope[0].set_pos(ub.pos[t]);
                ops.rope(k_pe, m.qk_rope, &b.rope[0]);
                for head in
                    q[t * n_head * m.k_mla()..][..n_head * m.k_mla()].chunks_exact_mut(m.k_mla())
                {
                    ops.rope(&mut head[m.qk_nope..], m.qk_rope, &b.rope[0]); // q_pe
                }
            }

            // q_nope_absorbed: per head into the latent space, head-major in `attn`
            // (`[n_head][n, kv_lora]`); then Qcur `[n, n_head, kv_lora + n_rot]` in `q`.
            let k_mla = m.k_mla();
            let nope = (k_mla, m.qk_nope);
            per_head_products(pool, &l.attn_k_b, n_head, q, nope, b.up, b.attn, b.matmul)?;
            for t in 0..n {
                for h in 0..n_head {
                    let dst = &mut b.q[(t * n_head + h) * lat..][..lat];
                    let (absorbed, pe) = dst.split_at_mut(m.kv_lora);
                    absorbed.copy_from_slice(&b.attn[(h * n + t) * m.kv_lora..][..m.kv_lora]);
                    pe.copy_from_slice(&q[(t * n_head + h) * k_mla + m.qk_nope..][..m.qk_rope]);
                }
            }

            blocks::store_kv(p.kv, il, ub.cells, b.k, &[]);
            // [n, n_head, kv_lora]: attention in the latent space.
            blocks::attention(
                pool,
                ops,
                p.kv,
                il,
                ub,
                b.q,
                &self.attn,
                b.attn,
                b.attn_parts,
            );

            // kqv: per head, latent output → value (`attn_v_b`), head-major in `q`, then
            // `[n, n_head · v_mla]` in `gate` for `attn_output`.
            let latent = (m.kv_lora, m.kv_lora);
            per_head_products(
                pool,
                &l.attn_v_b,
                n_head,
                b.attn,
                latent,
                b.up,
                b.q,
                b.matmul,
            )?;
            let kqv = &mut b.gate[..n * n_head * m.v_mla];
            for t in 0..n {
                for h in 0..n_head {
                    kqv[(t * n_head + h) * m.v_mla..][..m.v_mla]
                        .copy_from_slice(&b.q[(h * n + t) * m.v_mla..][..m.v_mla]);
                }
            }
            blocks::linear(pool, &l.attn_output, kqv, b.cur, b.matmul)?; // attn_out
            blocks::add(b.x, b.cur); // ffn_inp

            blocks::rms_norm(ops, b.x, &l.ffn_norm, eps, b.cur); // ffn_norm
            l.ffn
                .forward(pool, ops, b.cur, b.gate, b.up, b.moe, b.matmul)?; // ffn_out
            blocks::add(b.x, b.cur); // l_out
        }
        blocks::output(
            pool,
            ops,
            ub,
            &self.output_norm,
            eps,
            &self.output,
            b,
            out_row,
        )?;
        Ok(())
    }
}

/// `out[h][t] = mats[h] · x[t, h][..width]` for every token `t` and head `h`: `x` is
/// token-major, `stride` floats per head (`[n, n_head, stride]`), `out` head-major
/// (`[n_head][n, rows]`). One decoding token takes one dispatch for all its heads
/// ([`per_head`]; a lone prompt token takes the GEMM like any other, see `GemmTokens`);
/// more tokens take one matrix product per head, over its inputs gathered in `gather`
/// (`[n, width]`).
#[allow(clippy::too_many_arguments)]
fn per_head_products(
    pool: &ThreadPool,
    mats: &HeadMats<'_>,
    n_head: usize,
    x: &[f32],
    (stride, width): (usize, usize),
    gather: &mut [f32],
    out: &mut [f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    let n = x.len() / (n_head * stride);
    if n == 1 && mm.gemm_tokens != GemmTokens::From(0) {
        let rows = n_head * mats.head(0)?.n_rows();
        return per_head(
            pool,
            mats,
            n_head,
            |h| &x[h * stride..][..width],
            &mut out[..rows],
            mm,
        );
    }
    for h in 0..n_head {
        let xh = &mut gather[..n * width];
        for (t, dst) in xh.chunks_exact_mut(width).enumerate() {
            dst.copy_from_slice(&x[(t * n_head + h) * stride..][..width]);
        }
        let w = mats.head(h)?;
        let oh = &mut out[h * n * w.n_rows()..][..n * w.n_rows()];
        matmul(pool, &w, xh, n, oh, mm)?;
    }
    Ok(())
}

/// `out[h] = mats[h] · x(h)` for every head of one token, the heads' outputs one after
/// another in `out`, in as few dispatches as [`matvec_batch`] takes (one for up to
/// [`MAX_BATCH`] heads) and without allocating.
fn per_head<'x>(
    pool: &ThreadPool,
    mats: &HeadMats<'_>,
    n_head: usize,
    x: impl Fn(usize) -> &'x [f32],
    out: &mut [f32],
    mm: &mut MatmulScratch,
) -> Result<(), ModelError> {
    let mut out = out;
    for h0 in (0..n_head).step_by(MAX_BATCH) {
        let h1 = (h0 + MAX_BATCH).min(n_head);
        let first = mats.head(h0)?;
        let mut heads = [first; MAX_BATCH];
        for (h, m) in (h0..h1).zip(heads.iter_mut()) {
            *m = mats.head(h)?;
        }
        let mut products = [(&first, x(h0)); MAX_BATCH];
        for ((h, p), m) in (h0..h1).zip(products.iter_mut()).zip(&heads) {
            *p = (m, x(h));
        }
        let rows = (h1 - h0) * first.n_rows();
        let (o, rest) = std::mem::take(&mut out).split_at_mut(rows);
        out = rest;
        matvec_batch(pool, &products[..h1 - h0], o, mm)?;
    }
    Ok(())
}

/// DeepSeek's attention scale, as llama.cpp's graph computes it: `attn_factor` undone
/// of YaRN's own `1 + 0.1·ln(1/freq_scale)` correction, times DeepSeek's
/// `1 + 0.1·mscale_all_dim·ln(1/freq_scale)`, squared, over `sqrt(key_length_mla)`.
fn kq_scale(hp: &HParams, attn_factor: f32, k_mla: usize) -> f32 {
    let ln_factor = (1.0 / hp.rope_freq_scale).ln();
    let log_mul = hp.rope_yarn.map_or(0.0, |y| y.log_mul);
    let attn_factor_org = attn_factor * (1.0 + 0.1 * ln_factor);
    let mscale = attn_factor_org * (1.0 + 0.1 * log_mul * ln_factor);
    mscale * mscale / (k_mla as f32).sqrt()
}

/// `attn_k_b` and `attn_v_b` of a legacy `attn_kv_b` (`[n_head · (qk_nope + v_mla),
/// kv_lora_rank]`, each head's key rows then its value rows): the value rows are views;
/// the key rows are transposed into f32 (`[kv_lora_rank, qk_nope]` per head).
fn absorb_kv_b<'a>(
    kv_b: &WeightMatrix<'a>,
    m: &Mla,
    n_head: usize,
    name: &str,
) -> Result<(HeadMats<'a>, HeadMats<'a>), ModelError> {
    let per_head = m.qk_nope + m.v_mla;
    let mut k_b = vec![0.0f32; n_head * m.kv_lora * m.qk_nope];
    let mut row = vec![0.0f32; m.kv_lora];
    let mut v_b = Vec::with_capacity(n_head);
    for h in 0..n_head {
        let dst = &mut k_b[h * m.kv_lora * m.qk_nope..][..m.kv_lora * m.qk_nope];
        for d in 0..m.qk_nope {
            dequantize_row(kv_b.ty(), kv_b.row(h * per_head + d), &mut row).map_err(|_| {
                ModelError::TensorType {
                    tensor: name.to_string(),
                    ty: kv_b.ty(),
                    reason: "cannot be converted to f32",
                }
            })?;
            for (r, &x) in row.iter().enumerate() {
                dst[r * m.qk_nope + d] = x;
            }
        }
        let rb = kv_b.row_bytes();
        let start = (h * per_head + m.qk_nope) * rb;
        let v = &kv_b.data()[start..start + m.v_mla * rb];
        v_b.push(WeightMatrix::new(kv_b.ty(), m.v_mla, m.kv_lora, v)?);
    }
    Ok((
        HeadMats::Derived {
            data: k_b,
            n_rows: m.kv_lora,
            n_cols: m.qk_nope,
        },
        HeadMats::File(v_b),
    ))
}
