//! The activation buffers of forward passes, allocated once per model and reused.
//!
//! Sized by the model's widths and two caller choices: `n_ubatch`, the most tokens one
//! pass through the layers takes (a longer batch is processed in slices of that many),
//! and `n_outputs`, the most rows of logits one forward call returns. After the first
//! call of each shape nothing here grows, so a decode loop allocates nothing.

use hearth_kernels::matmul::MatmulScratch;
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::ops::RopeCache;

use crate::error::ModelError;
use crate::hparams::HParams;
use crate::model::Model;
use crate::moe::MoeScratch;

/// Working memory for [`Model::forward`].
pub struct Scratch {
    pub(crate) n_ubatch: usize,
    pub(crate) n_outputs: usize,
    pub(crate) dims: Dims,
    /// `[n_ubatch, n_embd]`: the residual stream.
    pub(crate) x: Vec<f32>,
    /// `[n_ubatch, n_embd]`: normed input of a block, or a block's output.
    pub(crate) cur: Vec<f32>,
    /// `[n_ubatch, n_head · n_embd_head_k]`
    pub(crate) q: Vec<f32>,
    /// `[n_ubatch, n_head_kv · n_embd_head_k]`
    pub(crate) k: Vec<f32>,
    /// `[n_ubatch, n_head_kv · n_embd_head_v]`
    pub(crate) v: Vec<f32>,
    /// `[n_ubatch, n_head · n_embd_head_v]`: attention output, before `attn_output`.
    pub(crate) attn: Vec<f32>,
    /// `[n_ubatch, n_ff]`
    pub(crate) gate: Vec<f32>,
    /// `[n_ubatch, n_ff]`
    pub(crate) up: Vec<f32>,
    /// `[n_ubatch, n_embd]`: the rows that want logits, normed.
    pub(crate) out_x: Vec<f32>,
    /// `[n_outputs, n_vocab]`
    pub(crate) logits: Vec<f32>,
    /// `[n_outputs, n_vocab.div_ceil(KEY_BLOCK)]`: the logits' block keys, where the
    /// output head takes them ([`crate::Logits`]).
    pub(crate) keys: Vec<i32>,
    /// Whether the last forward call filled `keys` for every row it returned.
    pub(crate) keyed: bool,
    /// `[max(n_embd, n_embd_head_k, n_embd_head_v)]`: one row or head, for in-place norms.
    pub(crate) row: Vec<f32>,
    /// `[n_ubatch]`: the cache cell of each token of the current slice.
    pub(crate) cells: Vec<usize>,
    pub(crate) matmul: MatmulScratch,
    /// One angle cache per RoPE variant of the model (Gemma 3 has two).
    pub(crate) rope: Vec<RopeCache>,
    /// One slot per part of a parallel attention.
    pub(crate) attn_parts: Vec<AttnPart>,
    /// Mixture-of-experts routing and gathering (empty for a dense model).
    pub(crate) moe: MoeScratch,
}

/// The widths a scratch was sized for; a forward pass checks that its model has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub(crate) n_embd: usize,
    pub(crate) n_q: usize,
    pub(crate) n_k: usize,
    pub(crate) n_v: usize,
    pub(crate) n_attn: usize,
    pub(crate) n_ff: usize,
    pub(crate) n_vocab: usize,
    pub(crate) n_row: usize,
    pub(crate) n_expert: usize,
    pub(crate) n_expert_used: usize,
}

impl Dims {
    /// The widths of a model whose attention is the standard one (queries, keys and
    /// values of the head sizes) and whose widest feed-forward network is `n_ff`.
    pub(crate) fn standard(hp: &HParams, n_ff: usize) -> Dims {
        Dims {
            n_embd: hp.n_embd,
            n_q: hp.n_head * hp.n_embd_head_k,
            n_k: hp.n_embd_k_gqa(),
            n_v: hp.n_embd_v_gqa(),
            n_attn: hp.n_head * hp.n_embd_head_v,
            n_ff,
            n_vocab: hp.n_vocab,
            n_row: hp.n_embd.max(hp.n_embd_head_k).max(hp.n_embd_head_v),
            n_expert: hp.n_expert,
            n_expert_used: hp.n_expert_used,
        }
    }
}

/// One part's share of a parallel attention: the rows (query heads of tokens) it
/// computed, and its working memory.
#[derive(Debug, Default)]
pub(crate) struct AttnPart {
    /// Rows `ith, ith + nth, ith + 2·nth, ...` of this dispatch; `count` of them.
    pub(crate) ith: usize,
    pub(crate) nth: usize,
    pub(crate) count: usize,
    /// `[count, n_embd_head_v]`
    pub(crate) out: Vec<f32>,
}

/// Rows of logits one call may return at most, whatever the caller asks: 2^20 rows of a
/// small vocabulary is already gigabytes.
const MAX_OUTPUT_FLOATS: u128 = 1 << 34;

impl Scratch {
    /// Buffers for `model`, for slices of up to `n_ubatch` tokens and calls returning up
    /// to `n_outputs` rows of logits (`n_outputs · n_vocab` f32s; perplexity over a
    /// 512-token chunk of a 262k vocabulary is 512 MiB, so size this to need).
    pub fn new(
        model: &Model<'_>,
        n_ubatch: usize,
        n_outputs: usize,
    ) -> Result<Scratch, ModelError> {
        let hp = model.hparams();
        if n_ubatch == 0 || n_ubatch > 1 << 16 {
            return Err(ModelError::Config {
                what: "n_ubatch",
                reason: format!("{n_ubatch} is outside 1..=65536"),
            });
        }
        if n_outputs as u128 * hp.n_vocab as u128 > MAX_OUTPUT_FLOATS {
            return Err(ModelError::Config {
                what: "n_outputs",
                reason: format!("{n_outputs} rows of {} logits is too large", hp.n_vocab),
            });
        }
        let dims = model.dims();
        let rows = |n: usize| vec![0.0f32; n_ubatch * n];
        Ok(Scratch {
            n_ubatch,
            n_outputs,
            dims,
            x: rows(dims.n_embd),
            cur: rows(dims.n_embd),
            q: rows(dims.n_q),
            k: rows(dims.n_k),
            v: rows(dims.n_v),
            attn: rows(dims.n_attn),
            gate: rows(dims.n_ff),
            up: rows(dims.n_ff),
            out_x: rows(dims.n_embd),
            logits: vec![0.0; n_outputs * dims.n_vocab],
            keys: vec![0; n_outputs * dims.n_vocab.div_ceil(KEY_BLOCK)],
            keyed: false,
            row: vec![0.0; dims.n_row],
            cells: vec![0; n_ubatch],
            matmul: MatmulScratch::new(),
            rope: model
                .rope_caches()
                .into_iter()
                .map(|mut c| {
                    c.reserve(n_ubatch);
                    c
                })
                .collect(),
            attn_parts: Vec::new(),
            moe: MoeScratch::new(
                n_ubatch,
                dims.n_embd,
                dims.n_ff,
                dims.n_expert,
                dims.n_expert_used,
            ),
        })
    }

    /// The most tokens one pass through the layers takes.
    pub fn n_ubatch(&self) -> usize {
        self.n_ubatch
    }

    /// The most rows of logits one call returns.
    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    /// Makes sure there is a slot for each of `n_parts` attention parts (allocates only
    /// when the count grows).
    pub(crate) fn reserve_attn_parts(&mut self, n_parts: usize) {
        while self.attn_parts.len() < n_parts {
            self.attn_parts.push(AttnPart::default());
        }
    }
}
