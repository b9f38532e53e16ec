//! `qwen3`: Qwen3 (dense; the DeepSeek-R1 distills onto Qwen3 too), and `qwen3moe`
//! (Qwen3-30B-A3B, 235B-A22B), the same block with routed experts in place of the
//! feed-forward network (llama.cpp's `src/models/qwen3moe.cpp`: softmax over the
//! experts, top `expert_used_count`, weights renormalised, no shared expert; see
//! [`crate::moe`]).
//!
//! As llama.cpp's `src/models/qwen3.cpp`: the Llama block without biases, plus an
//! RMSNorm of every query and key head (`attn_q_norm`, `attn_k_norm`, one weight of the
//! head size shared by all heads) between the projection and RoPE, which is in the NeoX
//! layout. The head size comes from `attention.key_length` and need not be
//! `n_embd / n_head` (Qwen3's 128-wide heads).

use hearth_kernels::matmul::WeightMatrix;
use hearth_kernels::ops::RopeCache;

use crate::batch::UBatch;
use hearth_kernels::ops::Ops;
use hearth_kernels::pool::ThreadPool;

use crate::blocks::{self, Attention, Bufs, Pass};
use crate::error::ModelError;
use crate::head::Head;
use crate::hparams::{Arch, HParams, Keys};
use crate::kv_cache::KvCache;
use crate::llama::uniform_head_dim;
use crate::moe::{Gating, LayerFfn, Moe, Routing};
use crate::weights::{Linear, Weights};

/// A Qwen3 model.
pub(crate) struct Qwen3<'a> {
    /// `[n_vocab, n_embd]`
    tok_embd: WeightMatrix<'a>,
    layers: Vec<Layer<'a>>,
    /// `[n_embd]`
    output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`
    pub(crate) output: Head<'a>,
    attn: Attention,
    rope: RopeCache,
    /// The feed-forward width: `n_ff`, or the experts' in `qwen3moe`.
    pub(crate) n_ff_max: usize,
}

/// One transformer block.
struct Layer<'a> {
    attn: SelfAttention<'a>,
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    ffn: LayerFfn<'a>,
}

/// The attention half of a block.
struct SelfAttention<'a> {
    /// `[n_embd]`
    attn_norm: Vec<f32>,
    /// `[n_head · head_dim, n_embd]`
    attn_q: Linear<'a>,
    /// `[n_head_kv · head_dim, n_embd]`
    attn_k: Linear<'a>,
    /// `[n_head_kv · head_dim, n_embd]`
    attn_v: Linear<'a>,
    /// `[head_dim]`
    attn_q_norm: Vec<f32>,
    /// `[head_dim]`
    attn_k_norm: Vec<f32>,
    /// `[n_embd, n_head · head_dim]`
    attn_output: Linear<'a>,
}

impl<'a> SelfAttention<'a> {
    /// Loads layer `il`'s attention weights.
    fn load(
        w: &mut Weights<'a>,
        hp: &HParams,
        il: usize,
        head_dim: usize,
    ) -> Result<SelfAttention<'a>, ModelError> {
        let n_embd = hp.n_embd;
        let (n_q, n_kv) = (hp.n_head * head_dim, hp.n_head_kv * head_dim);
        let p = |name: &str| format!("blk.{il}.{name}");
        Ok(SelfAttention {
            attn_norm: w.vector(&p("attn_norm.weight"), n_embd)?,
            attn_q: w.linear(&p("attn_q"), n_embd, n_q, false)?,
            attn_k: w.linear(&p("attn_k"), n_embd, n_kv, false)?,
            attn_v: w.linear(&p("attn_v"), n_embd, n_kv, false)?,
            attn_q_norm: w.vector(&p("attn_q_norm.weight"), head_dim)?,
            attn_k_norm: w.vector(&p("attn_k_norm.weight"), head_dim)?,
            attn_output: w.linear(&p("attn_output"), n_q, n_embd, false)?,
        })
    }

    /// `x += attn_output(attention(...))` for layer `il`: the block's first residual
    /// branch. `b.cur` ends holding the branch's output.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        pool: &ThreadPool,
        ops: &Ops,
        kv: &mut KvCache,
        il: usize,
        ub: &UBatch<'_>,
        a: &Attention,
        eps: f32,
        b: &mut Bufs<'_>,
    ) -> Result<(), ModelError> {
        blocks::rms_norm(ops, b.x, &self.attn_norm, eps, b.cur); // attn_norm
        let qkv = &mut [
            (&self.attn_q, &mut *b.q),
            (&self.attn_k, &mut *b.k),
            (&self.attn_v, &mut *b.v),
        ];
        blocks::linear_many(pool, qkv, b.cur, b.matmul)?; // Qcur, Kcur, Vcur
        blocks::rms_norm_inplace(ops, b.q, &self.attn_q_norm, eps, b.row); // Qcur_normed
        blocks::rms_norm_inplace(ops, b.k, &self.attn_k_norm, eps, b.row); // Kcur_normed
        blocks::rope(ops, b.q, b.k, a.head_dim_k, ub.pos, &mut b.rope[0]);
        blocks::store_kv(kv, il, ub.cells, b.k, b.v);
        blocks::attention(pool, ops, kv, il, ub, b.q, a, b.attn, b.attn_parts);
        blocks::linear(pool, &self.attn_output, b.attn, b.cur, b.matmul)?; // attn_out
        blocks::add(b.x, b.cur); // ffn_inp
        Ok(())
    }
}

impl<'a> Qwen3<'a> {
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
            let a = &mut l.attn;
            out.extend([
                &mut a.attn_q,
                &mut a.attn_k,
                &mut a.attn_v,
                &mut a.attn_output,
            ]);
            out.extend(l.ffn.linears_mut());
        }
        out
    }

    /// Loads a `qwen3` or `qwen3moe` file.
    pub(crate) fn load(
        w: &mut Weights<'a>,
        hp: &HParams,
        k: &Keys<'_>,
    ) -> Result<Qwen3<'a>, ModelError> {
        let head_dim = uniform_head_dim(hp)?;
        let (n_embd, n_ff) = (hp.n_embd, hp.n_ff);
        // qwen3moe: experts of `expert_feed_forward_length` (llama.cpp's fallback when
        // absent: `n_ff / n_expert_used`), softmax routing, always renormalised.
        let moe = match hp.arch {
            Arch::Qwen3Moe => {
                let n_ff_exp = match k.opt_count("expert_feed_forward_length", 1, u64::MAX)? {
                    Some(n) => n,
                    None if n_ff >= hp.n_expert_used => n_ff / hp.n_expert_used,
                    None => return Err(k.bad("expert_feed_forward_length", "missing".into())),
                };
                Some((n_ff_exp, Routing::read(k, hp, Gating::Softmax, true)?))
            }
            _ => None,
        };

        let tok_embd = w.embedding("token_embd.weight", n_embd, hp.n_vocab)?;
        let output_norm = w.vector("output_norm.weight", n_embd)?;
        let output = w.head(n_embd, hp.n_vocab)?;
        let rope = hp.rope_params(hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale);
        let rope = RopeCache::new(rope, None)?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |name: &str| format!("blk.{il}.{name}");
            layers.push(Layer {
                attn: SelfAttention::load(w, hp, il, head_dim)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), n_embd)?,
                ffn: match moe {
                    Some((n_ff_exp, routing)) => {
                        LayerFfn::Moe(Moe::load(w, il, n_embd, n_ff_exp, None, routing)?)
                    }
                    None => LayerFfn::Dense([
                        w.linear(&p("ffn_gate"), n_embd, n_ff, false)?,
                        w.linear(&p("ffn_up"), n_embd, n_ff, false)?,
                        w.linear(&p("ffn_down"), n_ff, n_embd, false)?,
                    ]),
                },
            });
        }
        Ok(Qwen3 {
            tok_embd,
            layers,
            output_norm,
            output,
            attn: Attention {
                n_head: hp.n_head,
                n_head_kv: hp.n_head_kv,
                head_dim_k: head_dim,
                head_dim_v: head_dim,
                kq_scale: 1.0 / (head_dim as f32).sqrt(),
                n_swa: None,
                v_in_k: false,
            },
            rope,
            n_ff_max: moe.map_or(n_ff, |(n_ff_exp, _)| n_ff_exp),
        })
    }

    /// The RoPE angle caches a scratch needs (one).
    pub(crate) fn rope_caches(&self) -> Vec<RopeCache> {
        vec![self.rope.clone()]
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
        let b = &mut p.s.bufs(ub.len());

        blocks::get_rows(&self.tok_embd, &self.output, ub.tokens, b.x); // inpL
        for (il, l) in self.layers.iter().enumerate() {
            l.attn
                .forward(pool, ops, p.kv, il, ub, &self.attn, eps, b)?;

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
