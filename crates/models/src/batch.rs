//! The input of a forward pass: tokens, each with its position and sequence, and which
//! of them want logits (llama.cpp's `llama_batch`).
//!
//! One sequence decoding one token is the smallest batch; a prompt is many tokens of one
//! sequence; continuous batching mixes prompt chunks and single decode tokens of several
//! sequences; perplexity asks for logits on every row. All of them take the same path.

use crate::kv_cache::SeqId;

/// A list of tokens to run through the model in one call.
///
/// Rules a forward pass checks (a violation is a typed error, nothing is computed):
/// every token is in the vocabulary; every sequence exists in the KV cache; within a
/// sequence, positions strictly increase, both along the batch and after the positions
/// already cached for it. Gaps are allowed (the position is what RoPE and the masks see).
///
/// A batch is meant to be reused: [`Batch::clear`] keeps its memory, so a decode loop
/// that refills one batch allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) tokens: Vec<u32>,
    pub(crate) pos: Vec<u32>,
    pub(crate) seq: Vec<SeqId>,
    pub(crate) logits: Vec<bool>,
    /// Tokens from this index on go through the GEMM, those before through the row path
    /// (see [`Batch::set_gemm_from`]); `None`: the matrix products choose by size.
    pub(crate) gemm_from: Option<usize>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// An empty batch with room for `n` tokens.
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            tokens: Vec::with_capacity(n),
            pos: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            logits: Vec::with_capacity(n),
            gemm_from: None,
        }
    }

    /// Adds `token` at position `pos` of sequence `seq`; `logits` asks for its row of
    /// logits in the forward pass's output.
    pub fn push(&mut self, token: u32, pos: u32, seq: SeqId, logits: bool) {
        self.tokens.push(token);
        self.pos.push(pos);
        self.seq.push(seq);
        self.logits.push(logits);
    }

    /// Adds `tokens` to `seq` at consecutive positions from `pos0`, asking for logits on
    /// every row when `all_logits`, else on the last one only (a prompt).
    pub fn push_seq(&mut self, tokens: &[u32], pos0: u32, seq: SeqId, all_logits: bool) {
        for (i, &t) in tokens.iter().enumerate() {
            let last = i + 1 == tokens.len();
            self.push(t, pos0.saturating_add(i as u32), seq, all_logits || last);
        }
    }

    /// Sends tokens `k..` through the GEMM (where the CPU level has one, however few they
    /// are) and the tokens before through the row path, instead of choosing one path for
    /// a whole slice by its size. The two paths round differently; a continuous-batching
    /// scheduler chooses per token, by rules that do not depend on what else shares the
    /// step, so that a request's results do not depend on its company. Rows of logits
    /// always take the row path then (a prompt wants one, and the GEMM would decode the
    /// whole output matrix for it). Without it (the default), a whole slice goes through
    /// the GEMM when it is large enough, which is best for a batch of one sequence
    /// (perplexity, benchmarks). Cleared by [`Batch::clear`].
    pub fn set_gemm_from(&mut self, k: usize) {
        self.gemm_from = Some(k);
    }

    /// Removes every token, keeping the memory.
    pub fn clear(&mut self) {
        self.gemm_from = None;
        self.tokens.clear();
        self.pos.clear();
        self.seq.clear();
        self.logits.clear();
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of rows that want logits: the rows of the forward pass's output.
    pub fn n_outputs(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }

    /// The tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The positions.
    pub fn positions(&self) -> &[u32] {
        &self.pos
    }

    /// The sequences.
    pub fn seq_ids(&self) -> &[SeqId] {
        &self.seq
    }

    /// Which rows want logits.
    pub fn wants_logits(&self) -> &[bool] {
        &self.logits
    }
}

/// A slice of a batch that one pass through the layers processes (llama.cpp's
/// `ubatch`), with the KV cell each token's K and V go to.
#[derive(Clone, Copy)]
pub(crate) struct UBatch<'b> {
    pub(crate) tokens: &'b [u32],
    pub(crate) pos: &'b [u32],
    pub(crate) seq: &'b [SeqId],
    pub(crate) logits: &'b [bool],
    /// `[n_tokens]`: the cache cell of each token.
    pub(crate) cells: &'b [usize],
}

impl UBatch<'_> {
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn n_outputs(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }
}
