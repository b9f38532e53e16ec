//! `qwen3`: Qwen3 (dense; the DeepSeek-R1 distills onto Qwen3 too).
//!
//! As llama.cpp's `src/models/qwen3.cpp`: the Llama block without biases, plus an
//! RMSNorm of every query and key head (`attn_q_norm`, `attn_k_norm`, one weight of the
//! head size shared by all heads) between the projection and RoPE, which is in the NeoX
//! layout. The head size comes from `attention.key_length` and need not be
//! `n_embd / n_head` (Qwen3's 128-wide heads).

use hearth_kernels::matmul::WeightMatrix;
use hearth_kernels::ops::{RopeCache, RopeParams};

use crate::batch::UBatch;
use crate::blocks::{self, Attention, Ffn, Gate, Pass};
use crate::error::ModelError;
use crate::hparams::HParams;
use crate::llama::uniform_head_dim;
use crate::weights::{Linear, Weights};

/// A Qwen3 model.
pub(crate) struct Qwen3<'a> {
    /// `[n_vocab, n_embd]`
    tok_embd: WeightMatrix<'a>,
    layers: Vec<Layer<'a>>,
    /// `[n_embd]`
    output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`
    output: WeightMatrix<'a>,
    attn: Attention,
    rope: RopeCache,
}

/// One transformer block.
struct Layer<'a> {
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
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    /// `[n_ff, n_embd]`
    ffn_gate: Linear<'a>,
    /// `[n_ff, n_embd]`
    ffn_up: Linear<'a>,
    /// `[n_embd, n_ff]`
    ffn_down: Linear<'a>,
}

impl<'a> Qwen3<'a> {
    /// Loads a `qwen3` file.
    pub(crate) fn load(w: &mut Weights<'a>, hp: &HParams) -> Result<Qwen3<'a>, ModelError> {
        let head_dim = uniform_head_dim(hp)?;
        let (n_embd, n_ff) = (hp.n_embd, hp.n_ff);
        let (n_q, n_kv) = (hp.n_head * head_dim, hp.n_head_kv * head_dim);

        let tok_embd = w.embedding("token_embd.weight", n_embd, hp.n_vocab)?;
        let output_norm = w.vector("output_norm.weight", n_embd)?;
        let output = match w.matrix_opt("output.weight", n_embd, hp.n_vocab)? {
            Some(m) => m,
            None => w.matrix("token_embd.weight", n_embd, hp.n_vocab)?,
        };
        let mut rope = RopeParams::new(hp.n_rot, hp.arch.rope_mode(), hp.rope_freq_base);
        rope.freq_scale = hp.rope_freq_scale;
        let rope = RopeCache::new(rope, None)?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |name: &str| format!("blk.{il}.{name}");
            layers.push(Layer {
                attn_norm: w.vector(&p("attn_norm.weight"), n_embd)?,
                attn_q: w.linear(&p("attn_q"), n_embd, n_q, false)?,
                attn_k: w.linear(&p("attn_k"), n_embd, n_kv, false)?,
                attn_v: w.linear(&p("attn_v"), n_embd, n_kv, false)?,
                attn_q_norm: w.vector(&p("attn_q_norm.weight"), head_dim)?,
                attn_k_norm: w.vector(&p("attn_k_norm.weight"), head_dim)?,
                attn_output: w.linear(&p("attn_output"), n_q, n_embd, false)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), n_embd)?,
                ffn_gate: w.linear(&p("ffn_gate"), n_embd, n_ff, false)?,
                ffn_up: w.linear(&p("ffn_up"), n_embd, n_ff, false)?,
                ffn_down: w.linear(&p("ffn_down"), n_ff, n_embd, false)?,
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
            },
            rope,
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

        blocks::get_rows(&self.tok_embd, ub.tokens, b.x); // inpL
        for (il, l) in self.layers.iter().enumerate() {
            blocks::rms_norm(ops, b.x, &l.attn_norm, eps, b.cur); // attn_norm
                                                                  // Qcur, Kcur, Vcur
            let qkv = &mut [
                (&l.attn_q, &mut *b.q),
                (&l.attn_k, &mut *b.k),
                (&l.attn_v, &mut *b.v),
            ];
            blocks::linear_many(pool, qkv, b.cur, b.matmul)?;
            blocks::rms_norm_inplace(ops, b.q, &l.attn_q_norm, eps, b.row); // Qcur_normed
            blocks::rms_norm_inplace(ops, b.k, &l.attn_k_norm, eps, b.row); // Kcur_normed
            blocks::rope(ops, b.q, b.k, self.attn.head_dim_k, ub.pos, &mut b.rope[0]);
            blocks::store_kv(p.kv, il, ub.cells, b.k, b.v);
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
            blocks::linear(pool, &l.attn_output, b.attn, b.cur, b.matmul)?; // attn_out
            blocks::add(b.x, b.cur); // ffn_inp

            blocks::rms_norm(ops, b.x, &l.ffn_norm, eps, b.cur); // ffn_norm
            let ffn = Ffn {
                gate: &l.ffn_gate,
                up: &l.ffn_up,
                down: &l.ffn_down,
                act: Gate::Silu,
            };
            blocks::ffn(pool, ops, &ffn, b.cur, b.gate, b.up, b.matmul)?; // ffn_out
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
