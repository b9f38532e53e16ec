//! The output head: the matrix that turns each final hidden state into logits.
//!
//! Every decode step multiplies it by one row per decoding sequence, and on small models
//! it is most of the weights (Gemma 3 270M: 168M of 268M, tied to the embeddings). A Q8_0
//! or Q5_0 head can be packed for the CPU level's kernels ([`PackedMatrix`]), which makes a step of
//! several sequences cost about what reading the matrix costs; the price is a second copy
//! of it in memory, unless the file's bytes are released (`Model::release_packed`). A
//! tied head's embedding lookups then read the packed copy too.

use hearth_kernels::matmul::packed::{matmul_packed_keyed, PackedFormat, PackedMatrix};
use hearth_kernels::matmul::{matmul, MatmulError, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;

use crate::error::ModelError;
use crate::weights::pack_into;

/// The output matrix `[n_vocab, n_embd]`, packed or as the file stores it.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    w: WeightMatrix<'a>,
    packed: Option<PackedMatrix>,
}

impl<'a> Head<'a> {
    pub(crate) fn new(w: WeightMatrix<'a>) -> Head<'a> {
        Head { w, packed: None }
    }

    /// The matrix as the file stores it, where a packed copy takes its products.
    pub(crate) fn stored_if_packed(&self) -> Option<&WeightMatrix<'a>> {
        self.packed.as_ref().map(|_| &self.w)
    }

    /// The packed copy, where there is one and the head is the token embedding table
    /// `embd` (a file that ties the two): its lookups then read the copy.
    pub(crate) fn packed_if_tied(&self, embd: &WeightMatrix<'_>) -> Option<&PackedMatrix> {
        let tied = std::ptr::eq(self.w.data(), embd.data());
        self.packed.as_ref().filter(|_| tied)
    }

    /// Rows: the vocabulary size.
    pub(crate) fn n_rows(&self) -> usize {
        self.w.n_rows()
    }

    /// Packs the matrix where its format and this CPU level's kernels allow; returns the
    /// bytes the packed copy takes (0 when it stays as it is).
    pub(crate) fn pack(&mut self) -> Result<usize, ModelError> {
        pack_into(&mut self.packed, &self.w, &PackedFormat::ALL, "output head")
    }

    /// `out[t] = W · x[t]` for `n_tokens` rows of `x`, and where the packed kernels take
    /// them on the way (a packed head), the rows' block keys into `keys` (`[n_tokens,
    /// n_rows.div_ceil(KEY_BLOCK)]`, see `matmul_packed_keyed`). Returns whether it did.
    pub(crate) fn matmul_keyed(
        &self,
        pool: &ThreadPool,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        keys: &mut [i32],
        scratch: &mut MatmulScratch,
    ) -> Result<bool, MatmulError> {
        match &self.packed {
            Some(p) => matmul_packed_keyed(pool, p, x, n_tokens, out, keys, scratch).map(|()| true),
            None => matmul(pool, &self.w, x, n_tokens, out, scratch).map(|()| false),
        }
    }
}
