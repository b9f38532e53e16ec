//! The prefix cache: full KV blocks of earlier sequences, found again by the tokens they
//! hold, so that a prompt beginning with tokens already computed (the previous turn of a
//! conversation, a shared system prompt or document) reuses their keys and values.
//!
//! A block is named by its tokens *and* everything before it: the key of block `i` of a
//! sequence hashes the key of block `i - 1` with block `i`'s [`BLOCK_CELLS`] tokens
//! (vLLM's automatic prefix caching works the same way). Only full blocks of sequences
//! that started at position 0 with consecutive positions are entered, so a block's
//! contents are a function of its key's token chain. A hash names, the tokens decide:
//! every entry keeps its tokens and its parent's key, and a lookup compares both, so a
//! hash collision can cost a miss, never a wrong block.
//!
//! The cache holds one reference to each entered block ([`KvCache::retain_block`]), so
//! a block outlives the sequence that filled it. When the pool needs room,
//! [`PrefixCache::evict`] gives back the least recently used blocks that no sequence
//! holds. Gemma 3's sliding-window layers need nothing special: the pool keeps every
//! layer's keys and values for every position (no window-sized ring), so a cached block
//! serves window and global layers alike.
//!
//! What it does not do: share partly filled blocks (at most `BLOCK_CELLS - 1` tokens of a
//! prefix are recomputed), or persist anything across restarts.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use hearth_models::{KvCache, BLOCK_CELLS};

/// The key of the (empty) chain before a sequence's first block.
const ROOT: u64 = 0x6865_6172_7468_0000; // "hearth"

/// One cached block.
#[derive(Debug)]
struct Entry {
    block: u32,
    /// The key of the block before it ([`ROOT`] for a first block).
    parent: u64,
    /// The block's tokens.
    tokens: [u32; BLOCK_CELLS],
    /// When it was last found or entered ([`PrefixCache`]'s clock).
    last_used: u64,
    /// Its index in its chain: of blocks used at the same time, the deepest go first, so
    /// that a chain is evicted from its end and its start stays reachable.
    depth: u32,
}

/// Cached blocks by key. See the module docs.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: HashMap<u64, Entry>,
    /// Counts lookups and insertions: the recency order.
    clock: u64,
}

/// What [`PrefixCache::lookup`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The blocks holding the prompt's first `blocks.len() · BLOCK_CELLS` tokens, in order.
    pub blocks: Vec<u32>,
}

impl Hit {
    /// Tokens the hit covers.
    pub fn n_tokens(&self) -> usize {
        self.blocks.len() * BLOCK_CELLS
    }
}

fn key(parent: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: the same key in every process, which makes behaviour
    // reproducible; its quality only matters for speed, since lookups verify tokens.
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl PrefixCache {
    /// An empty cache.
    pub fn new() -> PrefixCache {
        PrefixCache::default()
    }

    /// Blocks the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no block.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached blocks that hold the longest run of whole blocks at the start of
    /// `tokens` (a sequence from position 0). Found entries become the most recent.
    pub fn lookup(&mut self, tokens: &[u32]) -> Hit {
        self.clock += 1;
        let mut hit = Hit::default();
        let mut parent = ROOT;
        for chunk in tokens.chunks_exact(BLOCK_CELLS) {
            let k = key(parent, chunk);
            match self.entries.get_mut(&k) {
                Some(e) if e.parent == parent && e.tokens[..] == *chunk => {
                    e.last_used = self.clock;
                    hit.blocks.push(e.block);
                }
                _ => break,
            }
            parent = k;
        }
        hit
    }

    /// Enters the full blocks of a sequence: `blocks` is its block table and `tokens`
    /// the tokens its cells hold, from position 0 on consecutive positions. Blocks
    /// already cached under the same key stay as they are (the sequence may hold either
    /// copy); new ones get a reference from `kv`.
    pub fn insert(&mut self, kv: &mut KvCache, tokens: &[u32], blocks: &[u32]) {
        self.clock += 1;
        let mut parent = ROOT;
        for (depth, (chunk, &block)) in tokens.chunks_exact(BLOCK_CELLS).zip(blocks).enumerate() {
            let k = key(parent, chunk);
            match self.entries.get_mut(&k) {
                Some(e) => {
                    if e.parent != parent || e.tokens[..] != *chunk {
                        // A collision with another chain: leave the entry, stop here
                        // (the rest of this chain could never be found anyway).
                        return;
                    }
                    e.last_used = self.clock;
                }
                None => {
                    if !kv.retain_block(block) {
                        return;
                    }
                    let mut t = [0; BLOCK_CELLS];
                    t.copy_from_slice(chunk);
                    self.entries.insert(
                        k,
                        Entry {
                            block,
                            parent,
                            tokens: t,
                            last_used: self.clock,
                            depth: depth as u32,
                        },
                    );
                }
            }
            parent = k;
        }
    }

    /// Blocks that only the cache holds: what [`PrefixCache::evict`] could free.
    pub fn n_evictable(&self, kv: &KvCache) -> usize {
        self.entries
            .values()
            .filter(|e| kv.block_refs(e.block) == 1)
            .count()
    }

    /// Of the blocks in `blocks`, how many only the cache holds (those a new holder would
    /// take out of [`PrefixCache::n_evictable`]).
    pub fn n_evictable_among(&self, kv: &KvCache, blocks: &[u32]) -> usize {
        blocks.iter().filter(|&&b| kv.block_refs(b) == 1).count()
    }

    /// Gives back up to `n` blocks that no sequence holds, least recently used first;
    /// returns how many were freed.
    pub fn evict(&mut self, kv: &mut KvCache, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut idle: Vec<(u64, std::cmp::Reverse<u32>, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| kv.block_refs(e.block) == 1)
            .map(|(&k, e)| (e.last_used, std::cmp::Reverse(e.depth), k))
            .collect();
        idle.sort_unstable();
        let mut freed = 0;
        for (_, _, k) in idle.into_iter().take(n) {
            if let Some(e) = self.entries.remove(&k) {
                kv.release_block(e.block);
                freed += 1;
            }
        }
        freed
    }

    /// Gives back every block (they stay wherever sequences hold them).
    pub fn clear(&mut self, kv: &mut KvCache) {
        for (_, e) in self.entries.drain() {
            kv.release_block(e.block);
        }
    }
}
