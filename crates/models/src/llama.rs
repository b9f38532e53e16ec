//! `llama`: Llama 2 and 3, Mistral, and what is converted as Llama (R1-Distill-Llama).
//!
//! As llama.cpp's `src/models/llama.cpp` (dense layers only): pre-norm blocks with
//! RMSNorm, grouped-query attention with RoPE in the "normal" layout (adjacent pairs),
//! Llama 3's per-pair frequency factors (`rope_freqs`) when the file has them, and a
//! SwiGLU feed-forward network. Biases on the attention and feed-forward projections
//! are optional. The output projection falls back to the token embedding when the file
//! has no `output.weight` (tied embeddings, Llama 3.2 1B/3B).
//!
//! Qwen2 runs this same graph with required Q/K/V biases (see `qwen2.rs`).

use hearth_kernels::matmul::WeightMatrix;
use hearth_kernels::ops::RopeCache;

use crate::batch::UBatch;
use crate::blocks::{self, Attention, Ffn, Gate, Pass};
use crate::error::ModelError;
use crate::head::Head;
use crate::hparams::HParams;
use crate::weights::{Linear, Weights};

/// A Llama-graph model.
pub(crate) struct Llama<'a> {
    /// `[n_vocab, n_embd]`
    tok_embd: WeightMatrix<'a>,
    layers: Vec<Layer<'a>>,
    /// `[n_embd]`
    output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`
    pub(crate) output: Head<'a>,
    attn: Attention,
    /// Angles for `rope.freq_base` (and `rope_freqs`), validated at load.
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

/// Whether the Q/K/V projections must carry biases (Qwen2) or may (Llama).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QkvBias {
    Optional,
    Required,
}

impl<'a> Llama<'a> {
    /// Every layer's linear layers (for packing).
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear<'a>> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            out.extend([
                &mut l.attn_q,
                &mut l.attn_k,
                &mut l.attn_v,
                &mut l.attn_output,
                &mut l.ffn_gate,
                &mut l.ffn_up,
                &mut l.ffn_down,
            ]);
        }
        out
    }

    /// Loads a `llama` file.
    pub(crate) fn load(w: &mut Weights<'a>, hp: &HParams) -> Result<Llama<'a>, ModelError> {
        Llama::load_with(w, hp, QkvBias::Optional)
    }

    /// Loads the Llama graph's weights, with Q/K/V biases as `qkv_bias` says.
    pub(crate) fn load_with(
        w: &mut Weights<'a>,
        hp: &HParams,
        qkv_bias: QkvBias,
    ) -> Result<Llama<'a>, ModelError> {
        let head_dim = uniform_head_dim(hp)?;
        let (n_embd, n_ff) = (hp.n_embd, hp.n_ff);
        let (n_q, n_kv) = (hp.n_head * head_dim, hp.n_head_kv * head_dim);
        let required = qkv_bias == QkvBias::Required;

        let tok_embd = w.embedding("token_embd.weight", n_embd, hp.n_vocab)?;
        let output_norm = w.vector("output_norm.weight", n_embd)?;
        let output = w.head(n_embd, hp.n_vocab)?;
        let rope_freqs = w.vector_opt("rope_freqs.weight", hp.n_rot / 2)?;
        let rope = hp.rope_params(hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale);
        let rope = RopeCache::new(rope, rope_freqs.as_deref())?;

        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let p = |name: &str| format!("blk.{il}.{name}");
            layers.push(Layer {
                attn_norm: w.vector(&p("attn_norm.weight"), n_embd)?,
                attn_q: w.linear(&p("attn_q"), n_embd, n_q, required)?,
                attn_k: w.linear(&p("attn_k"), n_embd, n_kv, required)?,
                attn_v: w.linear(&p("attn_v"), n_embd, n_kv, required)?,
                attn_output: w.linear(&p("attn_output"), n_q, n_embd, false)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), n_embd)?,
                ffn_gate: w.linear(&p("ffn_gate"), n_embd, n_ff, false)?,
                ffn_up: w.linear(&p("ffn_up"), n_embd, n_ff, false)?,
                ffn_down: w.linear(&p("ffn_down"), n_ff, n_embd, false)?,
            });
        }
        Ok(Llama {
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
            blocks::rms_norm(ops, b.x, &l.attn_norm, eps, b.cur); // attn_norm
                                                                  // Qcur, Kcur, Vcur
            let qkv = &mut [
                (&l.attn_q, &mut *b.q),
                (&l.attn_k, &mut *b.k),
                (&l.attn_v, &mut *b.v),
            ];
            blocks::linear_many(pool, qkv, b.cur, b.matmul)?;
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

/// The head size of a model whose query, key and value heads and rotated dimensions all
/// agree (llama.cpp asserts `n_embd_head_k == n_embd_head_v == n_rot` for these graphs).
pub(crate) fn uniform_head_dim(hp: &HParams) -> Result<usize, ModelError> {
    let d = hp.n_embd_head_k;
    if hp.n_embd_head_v != d || hp.n_rot != d {
        return Err(ModelError::HParam {
            key: format!("{}.attention.value_length", hp.arch.name()),
            reason: format!(
                "key_length {d}, value_length {} and rope.dimension_count {} must agree for {}",
                hp.n_embd_head_v,
                hp.n_rot,
                hp.arch.name()
            ),
        });
    }
    Ok(d)
}
