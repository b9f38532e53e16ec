//! `gemma3`: Gemma 3 (text; 270M to 27B).
//!
//! As llama.cpp's `src/models/gemma3.cpp` with the hyper-parameters of
//! `llama-model.cpp` (`LLM_ARCH_GEMMA3`):
//! - the token embedding is scaled by `sqrt(n_embd)` (f32) before the first block;
//! - every block is pre- *and* post-normed: `attn_norm` before attention and
//!   `post_attention_norm` on its output before the residual add, `ffn_norm` before the
//!   feed-forward network and `post_ffw_norm` on its output (all RMSNorm; the GGUF
//!   converter already folded Gemma's `1 + w` into the weights);
//! - queries and keys are RMSNormed per head (`attn_q_norm`, `attn_k_norm`) before
//!   RoPE (NeoX layout), and the queries are then scaled by the attention scale, with no
//!   further scale in the softmax. The scale is `1/sqrt(key_length)`, except for the 27B
//!   model (62 layers), which uses `1/sqrt(n_embd / n_head)` (`query_pre_attn_scalar`,
//!   which GGUF does not store; llama.cpp keys it on the layer count the same way);
//! - layers alternate sliding-window and global attention when
//!   `attention.sliding_window` is set: with the pattern period `P` (6 unless
//!   `attention.sliding_window_pattern` says otherwise), layer `il` is a window layer
//!   unless `il % P == P - 1`. Window layers see the last `n_swa` positions and use RoPE
//!   base `rope.freq_base_swa` (10000 unless given) without scaling; global layers use
//!   `rope.freq_base` and `rope.scaling.*`;
//! - the feed-forward network is GeGLU with the tanh approximation of GELU;
//! - the output projection is tied to the token embedding unless `output.weight` exists;
//! - `final_logit_softcapping` (`logits = c·tanh(logits / c)`) is applied only when the
//!   model has no sliding window, because that is what llama.cpp's graph does (its
//!   sliding-window variant skips it; no released Gemma 3 sets the key).

use hearth_gguf::Value;
use hearth_kernels::matmul::WeightMatrix;
use hearth_kernels::ops::RopeCache;

use crate::batch::UBatch;
use crate::blocks::{self, Attention, Ffn, Gate, Pass};
use crate::error::ModelError;
use crate::head::Head;
use crate::hparams::{HParams, Keys};
use crate::llama::uniform_head_dim;
use crate::weights::{Linear, Weights};

/// llama.cpp's `set_swa_pattern(6)` for Gemma 3: five window layers, then a global one.
const DEFAULT_SWA_PERIOD: usize = 6;
/// llama.cpp's `rope_freq_base_train_swa` for Gemma 3.
const DEFAULT_ROPE_FREQ_BASE_SWA: f32 = 10000.0;

/// A Gemma 3 model.
pub(crate) struct Gemma3<'a> {
    /// `[n_vocab, n_embd]`
    tok_embd: WeightMatrix<'a>,
    /// `sqrt(n_embd)`, the embedding scale.
    embd_scale: f32,
    layers: Vec<Layer<'a>>,
    /// `[n_embd]`
    output_norm: Vec<f32>,
    /// `[n_vocab, n_embd]`
    pub(crate) output: Head<'a>,
    /// Multiplies the queries after RoPE.
    attention_scale: f32,
    attn_global: Attention,
    attn_swa: Attention,
    /// Angles of the global layers (index 0) and of the window layers (index 1).
    rope: [RopeCache; 2],
    final_logit_softcapping: Option<f32>,
}

/// One transformer block.
struct Layer<'a> {
    /// Whether this is a sliding-window layer.
    swa: bool,
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
    post_attention_norm: Vec<f32>,
    /// `[n_embd]`
    ffn_norm: Vec<f32>,
    /// `[n_ff, n_embd]`
    ffn_gate: Linear<'a>,
    /// `[n_ff, n_embd]`
    ffn_up: Linear<'a>,
    /// `[n_embd, n_ff]`
    ffn_down: Linear<'a>,
    /// `[n_embd]`
    post_ffw_norm: Vec<f32>,
}

impl<'a> Gemma3<'a> {
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

    /// Loads a `gemma3` file.
    pub(crate) fn load(
        w: &mut Weights<'a>,
        hp: &HParams,
        keys: &Keys<'_>,
    ) -> Result<Gemma3<'a>, ModelError> {
        let head_dim = uniform_head_dim(hp)?;
        let (n_embd, n_ff) = (hp.n_embd, hp.n_ff);
        let (n_q, n_kv) = (hp.n_head * head_dim, hp.n_head_kv * head_dim);

        let n_swa = keys.opt_count("attention.sliding_window", 0, u32::MAX as u64)?;
        let n_swa = n_swa.filter(|&n| n > 0).map(|n| n as u32);
        let swa_layers = match n_swa {
            Some(_) => swa_pattern(keys, hp.n_layer)?,
            None => vec![false; hp.n_layer],
        };
        let freq_base_swa = keys
            .opt_float("rope.freq_base_swa")?
            .unwrap_or(DEFAULT_ROPE_FREQ_BASE_SWA);
        let softcap = keys.opt_float("final_logit_softcapping")?;
        if let Some(c) = softcap {
            if !c.is_finite() || c < 0.0 {
                return Err(keys.bad("final_logit_softcapping", format!("{c} is not >= 0")));
            }
        }
        // ref: llama-model.cpp, LLM_ARCH_GEMMA3 (gemma_pytorch config.py#L289).
        let attention_scale = if hp.n_layer == 62 {
            1.0 / ((n_embd / hp.n_head) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };

        let global = hp.rope_params(hp.n_rot, hp.rope_freq_base, hp.rope_freq_scale);
        // Sliding-window layers are not scaled (llama.cpp's `rope_freq_scale_train_swa`).
        let local = hp.rope_params(hp.n_rot, freq_base_swa, 1.0);
        let rope = [RopeCache::new(global, None)?, RopeCache::new(local, None)?];

        let tok_embd = w.embedding("token_embd.weight", n_embd, hp.n_vocab)?;
        let output_norm = w.vector("output_norm.weight", n_embd)?;
        let output = w.head(n_embd, hp.n_vocab)?;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for (il, &swa) in swa_layers.iter().enumerate() {
            let p = |name: &str| format!("blk.{il}.{name}");
            layers.push(Layer {
                swa,
                attn_norm: w.vector(&p("attn_norm.weight"), n_embd)?,
                attn_q: w.linear(&p("attn_q"), n_embd, n_q, false)?,
                attn_k: w.linear(&p("attn_k"), n_embd, n_kv, false)?,
                attn_v: w.linear(&p("attn_v"), n_embd, n_kv, false)?,
                attn_q_norm: w.vector(&p("attn_q_norm.weight"), head_dim)?,
                attn_k_norm: w.vector(&p("attn_k_norm.weight"), head_dim)?,
                attn_output: w.linear(&p("attn_output"), n_q, n_embd, false)?,
                post_attention_norm: w.vector(&p("post_attention_norm.weight"), n_embd)?,
                ffn_norm: w.vector(&p("ffn_norm.weight"), n_embd)?,
                ffn_gate: w.linear(&p("ffn_gate"), n_embd, n_ff, false)?,
                ffn_up: w.linear(&p("ffn_up"), n_embd, n_ff, false)?,
                ffn_down: w.linear(&p("ffn_down"), n_ff, n_embd, false)?,
                post_ffw_norm: w.vector(&p("post_ffw_norm.weight"), n_embd)?,
            });
        }
        let attn_global = Attention {
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim_k: head_dim,
            head_dim_v: head_dim,
            kq_scale: 1.0,
            n_swa: None,
            v_in_k: false,
        };
        Ok(Gemma3 {
            tok_embd,
            embd_scale: (n_embd as f32).sqrt(),
            layers,
            output_norm,
            output,
            attention_scale,
            attn_global,
            attn_swa: Attention {
                n_swa,
                ..attn_global
            },
            rope,
            final_logit_softcapping: softcap.filter(|&c| c > 0.0 && n_swa.is_none()),
        })
    }

    /// The RoPE angle caches a scratch needs: global, then window.
    pub(crate) fn rope_caches(&self) -> Vec<RopeCache> {
        self.rope.to_vec()
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

        blocks::get_rows(&self.tok_embd, &self.output, ub.tokens, b.x);
        blocks::scale(b.x, self.embd_scale); // inp_scaled
        for (il, l) in self.layers.iter().enumerate() {
            let (attn, rope) = match l.swa {
                true => (&self.attn_swa, &mut b.rope[1]),
                false => (&self.attn_global, &mut b.rope[0]),
            };
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
            blocks::rope(ops, b.q, b.k, attn.head_dim_k, ub.pos, rope);
            blocks::scale(b.q, self.attention_scale);
            blocks::store_kv(p.kv, il, ub.cells, b.k, b.v);
            blocks::attention(pool, ops, p.kv, il, ub, b.q, attn, b.attn, b.attn_parts);
            blocks::linear(pool, &l.attn_output, b.attn, b.cur, b.matmul)?;
            blocks::rms_norm_inplace(ops, b.cur, &l.post_attention_norm, eps, b.row); // attn_post_norm
            blocks::add(b.x, b.cur); // sa_out

            blocks::rms_norm(ops, b.x, &l.ffn_norm, eps, b.cur); // ffn_norm
            let ffn = Ffn {
                gate: &l.ffn_gate,
                up: &l.ffn_up,
                down: &l.ffn_down,
                act: Gate::GeluTanh,
            };
            blocks::ffn(pool, ops, &ffn, b.cur, b.gate, b.up, b.matmul)?; // ffn_out
            blocks::rms_norm_inplace(ops, b.cur, &l.post_ffw_norm, eps, b.row); // ffn_post_norm
            blocks::add(b.x, b.cur); // l_out
        }
        let n_out = blocks::output(
            pool,
            ops,
            ub,
            &self.output_norm,
            eps,
            &self.output,
            b,
            out_row,
        )?;
        if let Some(c) = self.final_logit_softcapping {
            // The head's keys are of the logits before the cap.
            *b.keyed = false;
            let n_vocab = self.output.n_rows();
            let logits = &mut b.logits[out_row * n_vocab..][..n_out * n_vocab];
            blocks::scale(logits, 1.0 / c);
            ops.tanh(logits);
            blocks::scale(logits, c);
        }
        Ok(())
    }
}

/// Which layers use the sliding window: `attention.sliding_window_pattern` as a period
/// (llama.cpp's `set_swa_pattern`: layer `il` is a window layer unless
/// `il % P == P - 1`; a period of 0 makes every layer one) or as one bool per layer;
/// period 6 when absent.
fn swa_pattern(keys: &Keys<'_>, n_layer: usize) -> Result<Vec<bool>, ModelError> {
    let name = "attention.sliding_window_pattern";
    let key = keys.key(name);
    if let Some(Value::Array(a)) = keys.md.get(&key) {
        let bools = (0..a.len())
            .map(|i| match a.get(i) {
                Some(Value::Bool(b)) => Some(b),
                _ => None,
            })
            .collect::<Option<Vec<bool>>>();
        return match bools {
            Some(b) if b.len() == n_layer => Ok(b),
            _ => Err(keys.bad(name, format!("expected {n_layer} bools, one per layer"))),
        };
    }
    let period = keys
        .opt_count(name, 0, u32::MAX as u64)?
        .unwrap_or(DEFAULT_SWA_PERIOD);
    Ok((0..n_layer)
        .map(|il| period == 0 || il % period < period - 1)
        .collect())
}
