//! The KV cache: a pool of cells owned by the caller (the engine), shared by sequences.
//!
//! Each cell holds, for every layer, one token's keys (`[n_head_kv, n_embd_head_k]`) and
//! values (`[n_head_kv, n_embd_head_v]`), and the token's position. Keys and values are
//! stored as f32, f16 or Q8_0, each chosen on its own ([`KvTypes`], llama.cpp's
//! `--cache-type-k` / `--cache-type-v`); attention reads the stored type directly. Within a
//! block, keys are stored transposed (`[n_embd_k_gqa, BLOCK_CELLS]`: dimension-major, the
//! block's cells as the fastest index), so that a block of one KV head is the key tile
//! attention's kernels take (`hearth_kernels::ops::attention`: scores of 16 cells are one
//! vector of broadcast-query FMAs, with no horizontal sums); values stay one row per
//! cell. Cells are
//! handed out in blocks of [`BLOCK_CELLS`]: a sequence holds a table of block indices
//! (its cells, in the order its tokens arrived), so sequences grow, shrink and go away
//! without moving anyone's data, and attention reads a sequence's keys and values through
//! that table. Positions strictly increase along a sequence (the batch rules enforce it),
//! so the cells a token may see (causal, and within the sliding window of a SWA layer) are
//! one contiguous run of its sequence's table, found by binary search on positions.
//!
//! Masking follows llama.cpp's KV cache with a full-size cache: a token at position `p`
//! sees the cells of its own sequence with position `<= p`, and in a sliding-window layer
//! of window `n_swa` only those with `p - pos < n_swa` (`llama_hparams::is_masked_swa`,
//! `LLAMA_SWA_TYPE_STANDARD`).
//!
//! Blocks are reference-counted, so sequences can share them: [`KvCache::fork`] gives a
//! new sequence the same table (`n > 1` completions of one prompt), and
//! [`KvCache::adopt_prefix`] starts a sequence on blocks another sequence filled (a
//! prefix cache, which holds its own references through [`KvCache::retain_block`]). A
//! block is written only by the sequence that holds it alone: appending into a shared,
//! partly filled last block first copies it (copy-on-write), so no sequence ever sees
//! another's tokens. Full shared blocks are never written again, since a sequence only
//! appends after its last token.
//!
//! Q8_0 (ggml's blocks of 32 int8 with an f16 scale) quantizes each cell's keys and
//! values along the head dimension, in blocks of 32 that never straddle two heads (the
//! head sizes must be multiples of 32, as llama.cpp requires of a quantized cache). In a
//! block of keys the int8 values are transposed like f32 keys and the scales are
//! `[n_embd_k_gqa / 32, BLOCK_CELLS]`, so that one block of dimensions' scales for the
//! block's 16 cells is one vector; value rows keep their scales in a row beside them.
//! Quantization follows ggml's reference bit for bit ([`hearth_kernels::quant::q8_0`]).
//!
//! Not here yet: a latent (MLA) layout; the block table is the seam for it (a block
//! index addresses whatever a cell holds).

use hearth_kernels::ops::attention::{f32_to_f16, KvData, KvTile, KvType, KV_TILE, Q8_0_BLOCK};
use hearth_kernels::quant::blocks::BlockQ8_0;
use hearth_kernels::quant::q8_0;

use crate::batch::Batch;
use crate::error::ModelError;
use crate::hparams::HParams;

/// Cells per block: small enough that a short sequence wastes little, large enough that
/// the block table stays short; and the attention kernels' key tile.
pub const BLOCK_CELLS: usize = KV_TILE;

/// The stored types of the cache's keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl KvTypes {
    /// Both in f32: exact, what the reference comparisons use.
    pub const F32: KvTypes = KvTypes {
        k: KvType::F32,
        v: KvType::F32,
    };

    /// Both in `t`.
    pub fn both(t: KvType) -> KvTypes {
        KvTypes { k: t, v: t }
    }

    /// Bytes one token takes in every layer of a cache for these hyper-parameters.
    pub fn bytes_per_token(&self, hp: &HParams) -> usize {
        hp.n_layer * (self.k.bytes(hp.n_embd_k_gqa()) + self.v.bytes(hp.n_embd_v_gqa()))
    }
}

impl Default for KvTypes {
    /// What `hearth` uses when not told otherwise: f16 keys and values, as llama.cpp
    /// does. Half the bytes of f32, and measured no worse: on Gemma 3 270M the fidelity
    /// gates against llama.cpp (`tests/fixtures/fidelity/check.py`, whose references
    /// ran with llama.cpp's f16 cache) give, at context 512, mean KL 5.55e-3 (f32:
    /// 5.55e-3), top-1 agreement 96.2 % (f32: 95.7 %), perplexity ×1.0024 (f32:
    /// ×0.9971); at 1024, KL 5.48e-3 (f32: 5.38e-3), perplexity ×1.0016 (f32: ×0.9993);
    /// and decoding at depth 4096 is faster (fewer bytes streamed; README, *Performance*).
    fn default() -> KvTypes {
        KvTypes::both(KvType::F16)
    }
}

/// One layer's keys or values, in the stored type.
enum Store {
    F32(Vec<f32>),
    /// IEEE half bits.
    F16(Vec<u16>),
    /// Int8 values laid out as f32 ones would be, and one f16 scale per 32 of them
    /// (see the module doc for the order of each).
    Q8_0 {
        qs: Vec<i8>,
        d: Vec<u16>,
    },
}

/// A zeroed vector of `n` elements, or `None` when the memory cannot be had.
fn zeroed<T: Clone + Default>(n: usize) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, T::default());
    Some(v)
}

impl Store {
    /// `n` elements of type `t` (`n` a multiple of 32 for Q8_0).
    fn new(t: KvType, n: usize) -> Option<Store> {
        Some(match t {
            KvType::F32 => Store::F32(zeroed(n)?),
            KvType::F16 => Store::F16(zeroed(n)?),
            KvType::Q8_0 => Store::Q8_0 {
                qs: zeroed(n)?,
                d: zeroed(n / Q8_0_BLOCK)?,
            },
        })
    }

    /// The elements `start..start + len` (both multiples of 32 for Q8_0).
    fn data(&self, start: usize, len: usize) -> KvData<'_> {
        match self {
            Store::F32(x) => KvData::F32(&x[start..][..len]),
            Store::F16(x) => KvData::F16(&x[start..][..len]),
            Store::Q8_0 { qs, d } => KvData::Q8_0 {
                qs: &qs[start..][..len],
                d: &d[start / Q8_0_BLOCK..][..len / Q8_0_BLOCK],
            },
        }
    }

    /// Copies the elements `from..from + len` to `to..` (all multiples of 32 for Q8_0).
    fn copy_within(&mut self, from: usize, len: usize, to: usize) {
        match self {
            Store::F32(x) => x.copy_within(from..from + len, to),
            Store::F16(x) => x.copy_within(from..from + len, to),
            Store::Q8_0 { qs, d } => {
                qs.copy_within(from..from + len, to);
                let b = Q8_0_BLOCK;
                d.copy_within(from / b..(from + len) / b, to / b);
            }
        }
    }

    /// Writes `x` as the elements `start + i·step` (a key column of a block when `step`
    /// is `BLOCK_CELLS`, a value row when it is 1). For Q8_0, `x` is quantized in blocks
    /// of 32 consecutive elements of `x`, block `b`'s scale going to
    /// `scale_start + b·step`.
    fn write(&mut self, x: &[f32], start: usize, step: usize, scale_start: usize) {
        match self {
            Store::F32(dst) => {
                for (i, &v) in x.iter().enumerate() {
                    dst[start + i * step] = v;
                }
            }
            Store::F16(dst) => {
                for (i, &v) in x.iter().enumerate() {
                    dst[start + i * step] = f32_to_f16(v);
                }
            }
            Store::Q8_0 { qs, d } => {
                let mut blk = [BlockQ8_0 {
                    d: [0; 2],
                    qs: [0; Q8_0_BLOCK],
                }];
                for (b, xb) in x.chunks_exact(Q8_0_BLOCK).enumerate() {
                    q8_0::quantize(xb, &mut blk);
                    d[scale_start + b * step] = u16::from_le_bytes(blk[0].d);
                    for (i, &q) in blk[0].qs.iter().enumerate() {
                        qs[start + (b * Q8_0_BLOCK + i) * step] = q;
                    }
                }
            }
        }
    }
}

/// A handle to a sequence of the cache, from [`KvCache::new_sequence`].
///
/// Ids of removed sequences are reused, so a handle must not be kept after
/// [`KvCache::remove_sequence`] or [`KvCache::clear`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u32);

impl SeqId {
    /// The id as a number (for logs).
    pub fn index(self) -> u32 {
        self.0
    }
}

/// One sequence's cells: `blocks[j / BLOCK_CELLS]` holds its `j`-th token.
#[derive(Debug)]
struct Sequence {
    /// Allocated at full capacity when the sequence is created, so that appending a
    /// token never allocates.
    blocks: Vec<u32>,
    len: usize,
}

/// Per-sequence bookkeeping of the batch being checked and appended.
#[derive(Debug, Clone, Copy, Default)]
struct Staged {
    touched: bool,
    len_before: usize,
    n_new: usize,
    last_pos: Option<u32>,
}

/// The cache of keys and values of every layer, for every sequence.
pub struct KvCache {
    n_layer: usize,
    n_embd_k: usize,
    n_embd_v: usize,
    n_cells: usize,
    types: KvTypes,
    /// `[n_layer][n_blocks][n_embd_k, BLOCK_CELLS]` (transposed within a block)
    k: Vec<Store>,
    /// `[n_layer][n_cells, n_embd_v]`
    v: Vec<Store>,
    /// `[n_cells]`: the position of the token in each cell.
    pos: Vec<u32>,
    /// Free block indices (their reference count is 0).
    free: Vec<u32>,
    /// `[n_blocks]`: how many sequences (and outside holders, such as a prefix cache)
    /// hold each block.
    refs: Vec<u32>,
    /// Indexed by `SeqId`; `None` for a removed sequence whose id may be reused.
    seqs: Vec<Option<Sequence>>,
    /// Indexed by `SeqId`; scratch of [`KvCache::prepare`].
    staged: Vec<Staged>,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("n_layer", &self.n_layer)
            .field("n_cells", &self.n_cells)
            .field("types", &self.types)
            .field("free_cells", &self.n_free_cells())
            .field("sequences", &self.seqs.iter().flatten().count())
            .finish()
    }
}

impl KvCache {
    /// A cache of at least `n_cells` cells (rounded up to whole blocks) for a model with
    /// these hyper-parameters, keys and values in f32: `n_layer · n_cells ·
    /// (n_embd_k_gqa + n_embd_v_gqa)` f32s. See [`KvCache::with_types`].
    pub fn new(hp: &HParams, n_cells: usize) -> Result<KvCache, ModelError> {
        KvCache::with_types(hp, n_cells, KvTypes::F32)
    }

    /// A cache of at least `n_cells` cells (rounded up to whole blocks) storing keys and
    /// values as `types`: [`KvTypes::bytes_per_token`] per cell.
    ///
    /// The memory is reserved here, and refused with [`ModelError::CacheAlloc`] rather
    /// than aborting when the system cannot provide it. A Q8_0 type needs head sizes
    /// that are multiples of 32 ([`ModelError::Config`] otherwise).
    pub fn with_types(hp: &HParams, n_cells: usize, types: KvTypes) -> Result<KvCache, ModelError> {
        let bad = |reason: String| ModelError::Config {
            what: "KV cache size",
            reason,
        };
        let (hd_k, hd_v) = hp.kv_head_dims();
        for (what, t, hd) in [("keys", types.k, hd_k), ("values", types.v, hd_v)] {
            if !hd.is_multiple_of(t.block_size()) {
                return Err(ModelError::Config {
                    what: "KV cache type",
                    reason: format!(
                        "{t} {what} need a head size that is a multiple of {}; this \
                         model's is {hd}",
                        t.block_size()
                    ),
                });
            }
        }
        if n_cells == 0 {
            return Err(bad("zero cells".into()));
        }
        let n_blocks = n_cells.div_ceil(BLOCK_CELLS);
        if n_blocks > u32::MAX as usize {
            return Err(bad(format!("{n_cells} cells is too many")));
        }
        let n_cells = n_blocks * BLOCK_CELLS;
        let (n_embd_k, n_embd_v) = (hp.n_embd_k_gqa(), hp.n_embd_v_gqa());
        let bytes = n_cells as u128 * types.bytes_per_token(hp) as u128;
        let alloc = |t: KvType, n: usize| -> Result<Store, ModelError> {
            n_cells
                .checked_mul(n)
                .and_then(|n| Store::new(t, n))
                .ok_or(ModelError::CacheAlloc { bytes })
        };
        let mut k = Vec::with_capacity(hp.n_layer);
        let mut v = Vec::with_capacity(hp.n_layer);
        for _ in 0..hp.n_layer {
            k.push(alloc(types.k, n_embd_k)?);
            v.push(alloc(types.v, n_embd_v)?);
        }
        let mut pos = Vec::new();
        pos.try_reserve_exact(n_cells)
            .map_err(|_| ModelError::CacheAlloc { bytes })?;
        pos.resize(n_cells, 0);
        Ok(KvCache {
            n_layer: hp.n_layer,
            n_embd_k,
            n_embd_v,
            n_cells,
            types,
            k,
            v,
            pos,
            // Reversed so that blocks are handed out in increasing order (tidier dumps).
            free: (0..n_blocks as u32).rev().collect(),
            refs: vec![0; n_blocks],
            seqs: Vec::new(),
            staged: Vec::new(),
        })
    }

    /// Total cells.
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }

    /// Cells not held by any sequence.
    pub fn n_free_cells(&self) -> usize {
        self.free.len() * BLOCK_CELLS
    }

    /// Total blocks.
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks held by nobody.
    pub fn n_free_blocks(&self) -> usize {
        self.free.len()
    }

    /// How many sequences and outside holders hold `block` (0 when it is free or out of
    /// range).
    pub fn block_refs(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// Takes one more reference to a block that some sequence holds (or that the caller
    /// already holds), so that it outlives the sequence: a prefix cache keeps the blocks
    /// of finished sequences this way. `false` (and nothing changes) for a free block or
    /// one out of range, whose contents are not anybody's.
    pub fn retain_block(&mut self, block: u32) -> bool {
        match self.refs.get_mut(block as usize) {
            Some(r) if *r > 0 => {
                *r += 1;
                true
            }
            _ => false,
        }
    }

    /// Gives back a reference taken by [`KvCache::retain_block`]; the block is free again
    /// when nobody holds it. `false` for a free block or one out of range.
    pub fn release_block(&mut self, block: u32) -> bool {
        if self.block_refs(block) == 0 {
            return false;
        }
        release(&mut self.refs, &mut self.free, block);
        true
    }

    /// A new sequence holding the same cells as `seq` (its blocks shared, not copied):
    /// the `n` completions of one prompt each continue from it. The first append into a
    /// shared, partly filled block copies it. `None` if `seq` does not exist.
    pub fn fork(&mut self, seq: SeqId) -> Option<SeqId> {
        let (blocks, len) = {
            let s = self.seq(seq)?;
            (s.blocks.clone(), s.len)
        };
        let mut table = Vec::with_capacity(self.n_cells / BLOCK_CELLS);
        table.extend_from_slice(&blocks);
        for &b in &blocks {
            self.refs[b as usize] += 1;
        }
        let id = self.new_sequence();
        let s = self.seqs[id.0 as usize].as_mut().expect("just created");
        s.blocks = table;
        s.len = len;
        Some(id)
    }

    /// Starts the empty sequence `seq` on full blocks filled by other sequences (a cached
    /// prompt prefix): afterwards it holds `blocks.len() · BLOCK_CELLS` tokens, those of
    /// the blocks in order, with their positions. Every block must be held by someone
    /// (a sequence or a [`KvCache::retain_block`] holder), since a free block's contents
    /// may be overwritten at any time. On an error nothing changes.
    pub fn adopt_prefix(&mut self, seq: SeqId, blocks: &[u32]) -> Result<(), ModelError> {
        let bad = |reason: String| ModelError::Config {
            what: "cached prefix",
            reason,
        };
        match self.seq(seq) {
            None => return Err(bad(format!("sequence {} does not exist", seq.0))),
            Some(s) if s.len > 0 => return Err(bad(format!("sequence {} is not empty", seq.0))),
            Some(_) => {}
        }
        if let Some(&b) = blocks.iter().find(|&&b| self.block_refs(b) == 0) {
            return Err(bad(format!("block {b} is free or out of range")));
        }
        for &b in blocks {
            self.refs[b as usize] += 1;
        }
        let s = self.seqs[seq.0 as usize].as_mut().expect("checked above");
        s.blocks.extend_from_slice(blocks);
        s.len = blocks.len() * BLOCK_CELLS;
        Ok(())
    }

    /// Free blocks that appending `n` tokens to `seq` would take (new blocks, and the copy
    /// of a shared partial block); 0 if the sequence does not exist.
    pub fn blocks_to_append(&self, seq: SeqId, n: usize) -> usize {
        match self.seq(seq) {
            Some(s) if n > 0 => {
                (s.len + n).div_ceil(BLOCK_CELLS) - s.blocks.len()
                    + usize::from(self.shared_partial_tail(s))
            }
            _ => 0,
        }
    }

    /// The block table of `seq`: `blocks[j / BLOCK_CELLS]` holds its `j`-th token (the
    /// last block may be partly filled). Empty if the sequence does not exist.
    pub fn seq_blocks(&self, seq: SeqId) -> &[u32] {
        self.seq(seq).map_or(&[], |s| &s.blocks)
    }

    /// Bytes of K and V storage.
    pub fn size_bytes(&self) -> usize {
        self.n_layer
            * self.n_cells
            * (self.types.k.bytes(self.n_embd_k) + self.types.v.bytes(self.n_embd_v))
    }

    /// The stored types of keys and values.
    pub fn types(&self) -> KvTypes {
        self.types
    }

    /// Whether the cache fits a model with these hyper-parameters.
    pub fn fits(&self, hp: &HParams) -> bool {
        self.n_layer == hp.n_layer
            && self.n_embd_k == hp.n_embd_k_gqa()
            && self.n_embd_v == hp.n_embd_v_gqa()
    }

    /// A new, empty sequence. Allocates its block table (room for the whole cache), so
    /// that decoding into it never allocates.
    pub fn new_sequence(&mut self) -> SeqId {
        let seq = Sequence {
            blocks: Vec::with_capacity(self.n_cells / BLOCK_CELLS),
            len: 0,
        };
        match self.seqs.iter().position(Option::is_none) {
            Some(i) => {
                self.seqs[i] = Some(seq);
                SeqId(i as u32)
            }
            None => {
                self.seqs.push(Some(seq));
                self.staged.push(Staged::default());
                SeqId(self.seqs.len() as u32 - 1)
            }
        }
    }

    /// Drops a sequence and frees its cells; `false` if it did not exist.
    pub fn remove_sequence(&mut self, seq: SeqId) -> bool {
        match self.seqs.get_mut(seq.0 as usize).and_then(Option::take) {
            Some(s) => {
                for &b in s.blocks.iter().rev() {
                    release(&mut self.refs, &mut self.free, b);
                }
                true
            }
            None => false,
        }
    }

    /// Keeps the first `len` tokens of a sequence and frees the cells of the rest (to
    /// roll back rejected speculative tokens, or a failed batch); `false` if the sequence
    /// does not exist.
    pub fn truncate_sequence(&mut self, seq: SeqId, len: usize) -> bool {
        let Some(s) = self.seqs.get_mut(seq.0 as usize).and_then(Option::as_mut) else {
            return false;
        };
        if len < s.len {
            let keep = len.div_ceil(BLOCK_CELLS);
            while s.blocks.len() > keep {
                let b = s.blocks.pop().expect("more blocks than kept");
                release(&mut self.refs, &mut self.free, b);
            }
            s.len = len;
        }
        true
    }

    /// Drops every sequence.
    pub fn clear(&mut self) {
        self.seqs.clear();
        self.staged.clear();
        self.refs.fill(0);
        self.free.clear();
        self.free
            .extend((0..(self.n_cells / BLOCK_CELLS) as u32).rev());
    }

    /// Number of tokens cached for `seq`, `None` if it does not exist.
    pub fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.seq(seq).map(|s| s.len)
    }

    /// The position after the last cached token of `seq` (0 for an empty sequence): where
    /// its next token goes when positions are consecutive. `None` if it does not exist.
    pub fn seq_next_pos(&self, seq: SeqId) -> Option<u32> {
        let s = self.seq(seq)?;
        Some(match self.last_pos(s) {
            Some(p) => p.saturating_add(1),
            None => 0,
        })
    }

    fn seq(&self, seq: SeqId) -> Option<&Sequence> {
        self.seqs.get(seq.0 as usize).and_then(Option::as_ref)
    }

    fn last_pos(&self, s: &Sequence) -> Option<u32> {
        let j = s.len.checked_sub(1)?;
        Some(self.pos[cell_of(&s.blocks, j)])
    }

    /// Checks a batch against the cache (sequences exist, positions increase, enough
    /// free cells) without changing anything the caller can see, and remembers the
    /// sequences' lengths for [`KvCache::rollback`].
    pub(crate) fn prepare(&mut self, batch: &Batch) -> Result<(), ModelError> {
        self.staged.fill(Staged::default());
        for (index, (&seq, &pos)) in batch.seq.iter().zip(&batch.pos).enumerate() {
            let Some(s) = self.seqs.get(seq.0 as usize).and_then(Option::as_ref) else {
                return Err(ModelError::UnknownSequence { index, seq });
            };
            let st = self.staged[seq.0 as usize];
            let prev = if st.touched {
                st.last_pos
            } else {
                self.last_pos(s)
            };
            if let Some(prev) = prev {
                if pos <= prev {
                    return Err(ModelError::Position {
                        index,
                        seq,
                        pos,
                        prev,
                    });
                }
            }
            self.staged[seq.0 as usize] = Staged {
                touched: true,
                len_before: s.len,
                n_new: st.n_new + 1,
                last_pos: Some(pos),
            };
        }
        let mut blocks_needed = 0;
        for (st, s) in self.staged.iter().zip(&self.seqs) {
            if let (true, Some(s)) = (st.touched, s) {
                blocks_needed += (s.len + st.n_new).div_ceil(BLOCK_CELLS) - s.blocks.len();
                if self.shared_partial_tail(s) {
                    blocks_needed += 1; // its copy
                }
            }
        }
        if blocks_needed > self.free.len() {
            return Err(ModelError::CacheFull {
                needed: blocks_needed * BLOCK_CELLS,
                free: self.n_free_cells(),
            });
        }
        Ok(())
    }

    /// Whether a sequence's last block is partly filled and held by others too (so its
    /// next append copies it).
    fn shared_partial_tail(&self, s: &Sequence) -> bool {
        !s.len.is_multiple_of(BLOCK_CELLS)
            && s.blocks.last().is_some_and(|&b| self.refs[b as usize] > 1)
    }

    /// Undoes the appends of the batch last given to [`KvCache::prepare`].
    pub(crate) fn rollback(&mut self) {
        for i in 0..self.staged.len() {
            let st = self.staged[i];
            if st.touched {
                self.truncate_sequence(SeqId(i as u32), st.len_before);
            }
        }
    }

    /// Gives the next cell of `seq` to a token at `pos`, returning the cell. The batch
    /// was checked by [`KvCache::prepare`], so the sequence exists and a block is free.
    pub(crate) fn append(&mut self, seq: SeqId, pos: u32) -> usize {
        let s = self.seqs[seq.0 as usize]
            .as_ref()
            .expect("prepare checked the sequence");
        if s.len.is_multiple_of(BLOCK_CELLS) {
            let b = self.free.pop().expect("prepare checked free blocks");
            self.refs[b as usize] = 1;
            self.seqs[seq.0 as usize]
                .as_mut()
                .expect("checked above")
                .blocks
                .push(b);
        } else if self.shared_partial_tail(s) {
            // Copy-on-write: the partly filled block is shared (a fork), so this
            // sequence continues in a copy of it and leaves the original to the others.
            let new = self.free.pop().expect("prepare counted the copy");
            let s = self.seqs[seq.0 as usize].as_mut().expect("checked above");
            let old = std::mem::replace(s.blocks.last_mut().expect("a partial block"), new);
            self.refs[new as usize] = 1;
            self.refs[old as usize] -= 1;
            copy_block(self, old as usize, new as usize);
        }
        let s = self.seqs[seq.0 as usize].as_mut().expect("checked above");
        let cell = cell_of(&s.blocks, s.len);
        s.len += 1;
        self.pos[cell] = pos;
        cell
    }

    /// Writes one token's keys and values of layer `il` into `cell`.
    pub(crate) fn store(&mut self, il: usize, cell: usize, k: &[f32], v: &[f32]) {
        let (block, lane) = (cell / BLOCK_CELLS, cell % BLOCK_CELLS);
        let (nk, nv) = (self.n_embd_k, self.n_embd_v);
        // Key dimension `d` of the cell goes to `block·T·nk + d·T + lane`; the scale of
        // its 32-dimension block `b` to `block·T·nk / 32 + b·T + lane`.
        self.k[il].write(
            &k[..nk],
            block * BLOCK_CELLS * nk + lane,
            BLOCK_CELLS,
            block * BLOCK_CELLS * nk / Q8_0_BLOCK + lane,
        );
        self.v[il].write(&v[..nv], cell * nv, 1, cell * nv / Q8_0_BLOCK);
    }

    /// The cells of `seq`, for attention.
    pub(crate) fn view(&self, seq: SeqId) -> SeqView<'_> {
        let s = self.seqs[seq.0 as usize]
            .as_ref()
            .expect("prepare checked the sequence");
        SeqView {
            blocks: &s.blocks,
            len: s.len,
            pos: &self.pos,
        }
    }

    /// The keys and values of KV head `g` (of `hd_k` / `hd_v` dimensions) in block
    /// `block` of layer `il`, as attention's kernels take them.
    pub(crate) fn tile(
        &self,
        il: usize,
        block: usize,
        g: usize,
        hd_k: usize,
        hd_v: usize,
    ) -> KvTile<'_> {
        let (nk, nv) = (self.n_embd_k, self.n_embd_v);
        KvTile {
            k: self.k[il].data(
                block * BLOCK_CELLS * nk + g * hd_k * BLOCK_CELLS,
                hd_k * BLOCK_CELLS,
            ),
            v: self.v[il].data(
                block * BLOCK_CELLS * nv + g * hd_v,
                (BLOCK_CELLS - 1) * nv + hd_v,
            ),
            v_stride: nv,
        }
    }
}

/// Drops one reference to `block`, freeing it when it was the last.
fn release(refs: &mut [u32], free: &mut Vec<u32>, block: u32) {
    let r = &mut refs[block as usize];
    *r -= 1;
    if *r == 0 {
        free.push(block);
    }
}

/// Copies every layer's keys and values, and the positions, of block `from` into `to`.
fn copy_block(kv: &mut KvCache, from: usize, to: usize) {
    let (nk, nv) = (BLOCK_CELLS * kv.n_embd_k, BLOCK_CELLS * kv.n_embd_v);
    for il in 0..kv.n_layer {
        kv.k[il].copy_within(from * nk, nk, to * nk);
        kv.v[il].copy_within(from * nv, nv, to * nv);
    }
    kv.pos.copy_within(
        from * BLOCK_CELLS..(from + 1) * BLOCK_CELLS,
        to * BLOCK_CELLS,
    );
}

/// The cell holding the `j`-th token of a sequence with this block table.
fn cell_of(blocks: &[u32], j: usize) -> usize {
    blocks[j / BLOCK_CELLS] as usize * BLOCK_CELLS + j % BLOCK_CELLS
}

/// A sequence's cells, in token order.
#[derive(Clone, Copy)]
pub(crate) struct SeqView<'c> {
    blocks: &'c [u32],
    len: usize,
    pos: &'c [u32],
}

impl SeqView<'_> {
    /// The cell of the sequence's `j`-th token.
    pub(crate) fn cell(&self, j: usize) -> usize {
        cell_of(self.blocks, j)
    }

    /// The cache block holding the sequence's tokens `jb·BLOCK_CELLS..(jb + 1)·BLOCK_CELLS`.
    pub(crate) fn block(&self, jb: usize) -> usize {
        self.blocks[jb] as usize
    }

    /// The tokens `lo..hi` that a query at `pos` sees: positions at most `pos`, and, with
    /// a window, more than `pos - n_swa`.
    pub(crate) fn visible(&self, pos: u32, n_swa: Option<u32>) -> (usize, usize) {
        let pos_at = |j: usize| self.pos[self.cell(j)];
        let hi = partition_point(self.len, |j| pos_at(j) <= pos);
        let lo = match n_swa {
            // Masked when pos - p >= n_swa, i.e. visible when p > pos - n_swa.
            Some(w) if pos >= w => partition_point(hi, |j| pos_at(j) <= pos - w),
            _ => 0,
        };
        (lo, hi)
    }
}

/// The first `j` in `0..n` for which `pred` is false, `pred` being true on a prefix.
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
