//! Loading a model by its architecture, and the forward pass over a batch.

use hearth_gguf::GgufFile;
use hearth_kernels::dispatch::Kernels;
use hearth_kernels::matmul::packed::PackedFormat;
use hearth_kernels::matmul::GemmTokens;
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::ops::{Ops, RopeCache};
use hearth_kernels::pool::ThreadPool;

use crate::batch::{Batch, UBatch};
use crate::blocks::Pass;
use crate::deepseek2::Deepseek2;
use crate::error::ModelError;
use crate::gemma3::Gemma3;
use crate::head::Head;
use crate::hparams::{Arch, HParams, Keys};
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::qwen3::Qwen3;
use crate::scratch::{Dims, Scratch};
use crate::weights::{Linear, Weights};

/// [`Model::pack_for_batches`] packs the layers' Q8_0, Q4_K and Q6_K matrices only when
/// their copy takes at most this fraction (1/n) of the layers' bytes.
const COPY_SHARE: usize = 2;

/// What [`Model::forward_keyed`] returns.
#[derive(Debug, Clone, Copy)]
pub struct Logits<'s> {
    /// `[n_outputs, n_vocab]`, as [`Model::forward`] returns them.
    pub values: &'s [f32],
    /// `[n_outputs, n_vocab.div_ceil(KEY_BLOCK)]`: `Ops::block_max_keys` of each row of
    /// `values`, where a packed output head took them while its outputs were in the
    /// cache (`None` otherwise, or where the model changes the logits after the head,
    /// as a final soft cap does). A sampler starts its argmax and top-k scan from them
    /// instead of a pass over logits that the head's weights have pushed out of the
    /// cache.
    pub keys: Option<&'s [i32]>,
}

/// A loaded model: hyper-parameters and weights, the weights borrowed from the (mapped)
/// GGUF file, so `Model<'a>` lives no longer than the [`GgufFile`] it was loaded from.
///
/// A model is immutable; everything a forward pass writes lives in the caller's
/// [`KvCache`] and [`Scratch`], so one model can serve any number of caches.
pub struct Model<'a> {
    hparams: HParams,
    net: Net<'a>,
}

/// The architecture-specific weights and graph.
// One per loaded model, so the variants' difference in size costs nothing.
#[allow(clippy::large_enum_variant)]
enum Net<'a> {
    /// `llama` and `qwen2` (the same graph).
    Llama(Llama<'a>),
    /// `qwen3` and `qwen3moe` (the same block, dense or with experts).
    Qwen3(Qwen3<'a>),
    Gemma3(Gemma3<'a>),
    Deepseek2(Deepseek2<'a>),
}

impl std::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hparams", &self.hparams)
            .finish_non_exhaustive()
    }
}

impl<'a> Model<'a> {
    /// Loads the model in `file`, choosing the architecture by `general.architecture`.
    ///
    /// Every hyper-parameter is range- and consistency-checked, every tensor the
    /// architecture needs must be present with the exact shape the hyper-parameters
    /// imply and a type the kernels handle, and a tensor the architecture does not use
    /// is refused (it would mean a variant this code does not implement). Nothing is
    /// copied but norm weights and biases (converted to f32).
    pub fn load(file: &'a GgufFile) -> Result<Model<'a>, ModelError> {
        let hparams = HParams::from_file(file)?;
        let arch = hparams.arch;
        let keys = Keys {
            md: file.metadata(),
            arch: arch.name(),
        };
        let mut w = Weights::new(file);
        let net = match arch {
            Arch::Llama => Net::Llama(Llama::load(&mut w, &hparams)?),
            Arch::Qwen2 => Net::Llama(crate::qwen2::load(&mut w, &hparams)?),
            Arch::Qwen3 | Arch::Qwen3Moe => Net::Qwen3(Qwen3::load(&mut w, &hparams, &keys)?),
            Arch::Gemma3 => Net::Gemma3(Gemma3::load(&mut w, &hparams, &keys)?),
            Arch::Deepseek2 => Net::Deepseek2(Deepseek2::load(&mut w, &hparams, &keys)?),
        };
        for il in hparams.n_layer..hparams.n_layer + hparams.n_layer_nextn {
            w.skip_prefix(&format!("blk.{il}."));
        }
        w.finish()?;
        Ok(Model { hparams, net })
    }

    /// Packs, for this CPU level's kernels, what a step of several sequences' tokens
    /// gains most from (`hearth_kernels::matmul::packed`): the output head when it is
    /// Q8_0 or Q5_0 (or Q4_K or Q6_K), the layers' Q5_0 matrices, and their Q8_0, Q4_K and
    /// Q6_K ones where that copy is small (the K-quants at AVX2 and AVX-512 VNNI, the
    /// levels with packed K-quant kernels). Such a step then costs about what reading them
    /// costs, and one token's a little less. Q5_0 is the format of rows whose length
    /// K-quants cannot take (Gemma 3's 640 and 1152), and the slowest per token as stored.
    /// The price is a second copy of what is packed (the GEMM of long prompts still reads
    /// the file's); returns its bytes (0 when nothing was packed). Outputs change in the
    /// last bits (the packed kernels sum each block exactly before scaling it; packed
    /// K-quants also read Q8_0 activations, not Q8_K), the same for every batch; their
    /// distributions stay as close to llama.cpp's and exact math's as the row kernels'
    /// (`hearth perplexity --decode-path`, checked in CI).
    pub fn pack_for_batches(&mut self) -> Result<usize, ModelError> {
        self.pack_for_batches_within(0)
    }

    /// [`Model::pack_for_batches`], where the layers' Q8_0, Q4_K and Q6_K matrices also
    /// pack when their copy fits in `spare` bytes, however large a share of the layers it
    /// is. Most Q4_K_M models (the R1-Distill-Qwen family's among them) are mostly Q4_K
    /// and Q6_K: under the share rule alone their layers stay as stored, and a step of four
    /// sequences cost 2–2.6 times one sequence's on the R1-Distill-Qwen-1.5B shape (AMD
    /// Zen 5, 2 threads), where Gemma 3 270M's packed layers cost 1.2–1.3 times.
    pub fn pack_for_batches_within(&mut self, spare: u64) -> Result<usize, ModelError> {
        let head = self.head_mut().pack()?;
        let linears = self.linears_mut();
        // Q8_0 and K-quant matrices only where their copy (Q4_K's 148 bytes per 144, Q6_K's
        // and Q8_0's as many as the file's) is a small share of the layers' (Gemma 3 270M
        // Q4_K_M: 24 MiB beside 65): most Q4_K_M models are mostly Q4_K and Q6_K, Q8_0
        // models all Q8_0, and a second copy would double their memory. Gemma 3 270M's
        // Q8_0 `attn_v` in half its layers went through the row kernels at several tokens,
        // in a dispatch of its own beside the packed `attn_q` and `attn_k`.
        let file_bytes: usize = linears.iter().map(|l| l.w.data().len()).sum();
        let copy_bytes: usize = linears
            .iter()
            .filter_map(|l| {
                PackedFormat::of(l.w.ty())
                    .filter(|&f| f != PackedFormat::Q5_0)
                    .map(|f| f.packed_bytes(l.w.n_rows(), l.w.n_cols()))
            })
            .sum();
        let fits = copy_bytes <= file_bytes / COPY_SHARE || copy_bytes as u64 <= spare;
        let formats: &[PackedFormat] = if fits {
            &PackedFormat::ALL
        } else {
            &[PackedFormat::Q5_0]
        };
        let mut bytes = head;
        for l in linears {
            bytes += l.pack(formats)?;
        }
        Ok(bytes)
    }

    /// Whether every weight matrix a step reads is packed: the output head and every
    /// layer's matrix (a model with experts never is: they are not packed).
    pub fn fully_packed(&mut self) -> bool {
        self.head().stored_if_packed().is_some()
            && !self.has_experts()
            && self.linears_mut().iter().all(|l| l.packed.is_some())
    }

    /// Releases the file's bytes of every packed matrix (`GgufFile::release`) where this
    /// CPU level's packed kernels take every token of them, prompts included (AVX-512
    /// VNNI): nothing reads those bytes again, a tied head's embedding lookups included
    /// (they read the packed copy). Only a mapped file's pages go (they would read back
    /// from the file unchanged), so the packed copies then replace the file's bytes in
    /// memory instead of doubling them. Returns the bytes released.
    pub fn release_packed(&mut self, file: &GgufFile) -> usize {
        if !Kernels::get().packed_prompts() {
            return 0;
        }
        let head = self
            .head()
            .stored_if_packed()
            .map_or(0, |w| file.release(w.data()));
        head + self
            .linears_mut()
            .iter()
            .filter(|l| l.packed.is_some())
            .map(|l| file.release(l.w.data()))
            .sum::<usize>()
    }

    /// The output head.
    fn head(&self) -> &Head<'a> {
        match &self.net {
            Net::Llama(m) => &m.output,
            Net::Qwen3(m) => &m.output,
            Net::Gemma3(m) => &m.output,
            Net::Deepseek2(m) => &m.output,
        }
    }

    fn head_mut(&mut self) -> &mut Head<'a> {
        match &mut self.net {
            Net::Llama(m) => &mut m.output,
            Net::Qwen3(m) => &mut m.output,
            Net::Gemma3(m) => &mut m.output,
            Net::Deepseek2(m) => &mut m.output,
        }
    }

    /// Every layer's weight matrix, the experts' aside.
    fn linears_mut(&mut self) -> Vec<&mut Linear<'a>> {
        match &mut self.net {
            Net::Llama(m) => m.linears_mut(),
            Net::Qwen3(m) => m.linears_mut(),
            Net::Gemma3(m) => m.linears_mut(),
            Net::Deepseek2(m) => m.linears_mut(),
        }
    }

    /// Whether any layer's feed-forward is a mixture of experts.
    fn has_experts(&self) -> bool {
        match &self.net {
            Net::Qwen3(m) => m.has_experts(),
            Net::Deepseek2(m) => m.has_experts(),
            Net::Llama(_) | Net::Gemma3(_) => false,
        }
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.hparams.arch
    }

    /// The widths a scratch for this model needs.
    pub(crate) fn dims(&self) -> Dims {
        let hp = &self.hparams;
        match &self.net {
            Net::Deepseek2(m) => m.dims(hp),
            Net::Qwen3(m) => Dims::standard(hp, m.n_ff_max),
            Net::Llama(_) | Net::Gemma3(_) => Dims::standard(hp, hp.n_ff),
        }
    }

    /// Fresh RoPE angle caches for a scratch.
    pub(crate) fn rope_caches(&self) -> Vec<RopeCache> {
        match &self.net {
            Net::Llama(m) => m.rope_caches(),
            Net::Qwen3(m) => m.rope_caches(),
            Net::Gemma3(m) => m.rope_caches(),
            Net::Deepseek2(m) => m.rope_caches(),
        }
    }

    /// Runs `batch` through the model: appends every token's keys and values to its
    /// sequence in `kv`, and returns the logits of the rows that asked for them,
    /// `[batch.n_outputs(), n_vocab]` in batch order.
    ///
    /// The batch is checked first (tokens in the vocabulary, sequences in the cache,
    /// positions increasing, room in the cache and in the scratch's logits); a refused
    /// batch changes nothing. Tokens go through the layers `scratch.n_ubatch()` at a
    /// time, each slice as matrix products over all its tokens. If a pass fails midway
    /// (which only an internal error can cause), the batch's tokens are removed from the
    /// cache again.
    ///
    /// After the first call with a given shape, a call allocates nothing.
    pub fn forward<'s>(
        &self,
        pool: &ThreadPool,
        kv: &mut KvCache,
        scratch: &'s mut Scratch,
        batch: &Batch,
    ) -> Result<&'s [f32], ModelError> {
        self.forward_keyed(pool, kv, scratch, batch)
            .map(|l| l.values)
    }

    /// [`Model::forward`], with the logits' block keys where the output head took them
    /// on the way (see [`Logits`]).
    pub fn forward_keyed<'s>(
        &self,
        pool: &ThreadPool,
        kv: &mut KvCache,
        scratch: &'s mut Scratch,
        batch: &Batch,
    ) -> Result<Logits<'s>, ModelError> {
        let hp = &self.hparams;
        if scratch.dims != self.dims() {
            return Err(ModelError::Config {
                what: "scratch",
                reason: "it was made for another model".into(),
            });
        }
        if !kv.fits(hp) {
            return Err(ModelError::Config {
                what: "KV cache",
                reason: "it was made for another model".into(),
            });
        }
        for (index, &token) in batch.tokens.iter().enumerate() {
            if token as usize >= hp.n_vocab {
                return Err(ModelError::TokenOutOfRange {
                    index,
                    token,
                    n_vocab: hp.n_vocab,
                });
            }
        }
        let n_outputs = batch.n_outputs();
        if n_outputs > scratch.n_outputs {
            return Err(ModelError::TooManyOutputs {
                n_outputs,
                max: scratch.n_outputs,
            });
        }
        kv.prepare(batch)?;
        scratch.reserve_attn_parts(pool.n_threads());

        // The cells are moved out of the scratch for the pass, so that the slice can
        // borrow them while the layers borrow the rest of the scratch.
        let mut cells = std::mem::take(&mut scratch.cells);
        scratch.keyed = true;
        let result = self.run(pool, kv, scratch, batch, &mut cells);
        scratch.cells = cells;
        if result.is_err() {
            kv.rollback();
        }
        result?;
        let n_keys = hp.n_vocab.div_ceil(KEY_BLOCK);
        Ok(Logits {
            values: &scratch.logits[..n_outputs * hp.n_vocab],
            keys: scratch.keyed.then_some(&scratch.keys[..n_outputs * n_keys]),
        })
    }

    /// The passes over the slices of a checked batch.
    fn run(
        &self,
        pool: &ThreadPool,
        kv: &mut KvCache,
        scratch: &mut Scratch,
        batch: &Batch,
        cells: &mut [usize],
    ) -> Result<(), ModelError> {
        let n_ubatch = scratch.n_ubatch;
        let mut out_row = 0;
        for start in (0..batch.len()).step_by(n_ubatch) {
            let end = (start + n_ubatch).min(batch.len());
            let cells = &mut cells[..end - start];
            for (c, t) in cells.iter_mut().zip(start..end) {
                *c = kv.append(batch.seq[t], batch.pos[t]);
            }
            scratch.matmul.gemm_tokens = match batch.gemm_from {
                None => GemmTokens::ByCount,
                Some(k) => GemmTokens::From(k.saturating_sub(start).min(end - start)),
            };
            let ub = UBatch {
                tokens: &batch.tokens[start..end],
                pos: &batch.pos[start..end],
                seq: &batch.seq[start..end],
                logits: &batch.logits[start..end],
                cells,
            };
            let mut pass = Pass {
                pool,
                ops: Ops::get(),
                kv,
                s: scratch,
            };
            match &self.net {
                Net::Llama(m) => m.forward(&self.hparams, &mut pass, &ub, out_row)?,
                Net::Qwen3(m) => m.forward(&self.hparams, &mut pass, &ub, out_row)?,
                Net::Gemma3(m) => m.forward(&self.hparams, &mut pass, &ub, out_row)?,
                Net::Deepseek2(m) => m.forward(&self.hparams, &mut pass, &ub, out_row)?,
            }
            out_row += ub.n_outputs();
        }
        Ok(())
    }
}
