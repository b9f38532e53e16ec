//! The prefix cache's bookkeeping against a real KV pool: what it finds, what it holds,
//! and what it gives back, in which order.

use hearth_engine::prefix_cache::PrefixCache;
use hearth_gguf::GgufFile;
use hearth_models::{tiny, KvCache, Model, BLOCK_CELLS};

fn pool(n_blocks: usize) -> KvCache {
    let spec = tiny::specs().into_iter().next().unwrap();
    let file = GgufFile::from_bytes(spec.to_bytes()).unwrap();
    let model = Model::load(&file).unwrap();
    KvCache::new(model.hparams(), n_blocks * BLOCK_CELLS).unwrap()
}

fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| 3 + (i * 7 + salt) % 250).collect()
}

/// Runs `t` through the tiny model into a new sequence; returns its block table.
fn filled(kv: &mut KvCache, t: &[u32]) -> (hearth_models::SeqId, Vec<u32>) {
    use hearth_kernels::pool::ThreadPool;
    use hearth_models::{Batch, Scratch};
    let spec = tiny::specs().into_iter().next().unwrap();
    let file = GgufFile::from_bytes(spec.to_bytes()).unwrap();
    let model = Model::load(&file).unwrap();
    let pool = ThreadPool::new(1).unwrap();
    let mut scratch = Scratch::new(&model, 64, 1).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(t, 0, seq, false);
    model.forward(&pool, kv, &mut scratch, &batch).unwrap();
    (seq, kv.seq_blocks(seq).to_vec())
}

#[test]
fn finds_whole_blocks_of_an_entered_prefix_and_holds_them() {
    let mut kv = pool(16);
    let mut cache = PrefixCache::new();
    let t = tokens(40, 0);
    let (seq, blocks) = filled(&mut kv, &t);
    cache.insert(&mut kv, &t, &blocks);
    assert_eq!(cache.len(), 2, "two full blocks of 40 tokens");
    kv.remove_sequence(seq);
    assert_eq!(
        kv.n_blocks() - kv.n_free_blocks(),
        2,
        "the cache holds them"
    );

    // The same start, then something else: two blocks found.
    let mut other = t[..35].to_vec();
    other.extend(tokens(20, 9));
    assert_eq!(cache.lookup(&other).blocks, blocks[..2]);
    // A change inside the second block: only the first.
    let mut changed = t.clone();
    changed[20] += 1;
    assert_eq!(cache.lookup(&changed).blocks, blocks[..1]);
    // A change in the first block: nothing, even though the second block's own tokens
    // match (a block is named by everything before it too).
    let mut first = t.clone();
    first[0] += 1;
    assert_eq!(cache.lookup(&first).n_tokens(), 0);
    // Shorter than a block: nothing.
    assert_eq!(cache.lookup(&t[..15]).n_tokens(), 0);

    // Entering the same tokens again (from another copy) changes nothing.
    let (seq2, blocks2) = filled(&mut kv, &t);
    cache.insert(&mut kv, &t, &blocks2);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.lookup(&t).blocks, blocks[..2]);
    kv.remove_sequence(seq2);
    assert_eq!(kv.n_blocks() - kv.n_free_blocks(), 2);
}

#[test]
fn evicts_idle_blocks_least_recently_used_and_deepest_first() {
    let mut kv = pool(16);
    let mut cache = PrefixCache::new();
    let (a, b) = (tokens(48, 1), tokens(48, 2));
    for t in [&a, &b] {
        let (seq, blocks) = filled(&mut kv, t);
        cache.insert(&mut kv, t, &blocks);
        kv.remove_sequence(seq);
    }
    assert_eq!((cache.len(), cache.n_evictable(&kv)), (6, 6));
    // `a` used again: `b` is now the least recently used.
    assert_eq!(cache.lookup(&a).blocks.len(), 3);
    // A sequence holding `a`'s first block makes it not evictable.
    let holder = kv.new_sequence();
    let hit = cache.lookup(&a);
    kv.adopt_prefix(holder, &hit.blocks[..1]).unwrap();
    assert_eq!(cache.n_evictable(&kv), 5);

    // Two blocks: `b`'s last two (deepest first), so `b`'s first block is still found.
    assert_eq!(cache.evict(&mut kv, 2), 2);
    assert_eq!(cache.lookup(&b).blocks.len(), 1);
    assert_eq!(cache.lookup(&a).blocks.len(), 3);
    // Everything idle: all but the held block go back to the pool.
    assert_eq!(cache.evict(&mut kv, 100), 3);
    assert_eq!(cache.len(), 1);
    kv.remove_sequence(holder);
    cache.clear(&mut kv);
    assert_eq!(kv.n_free_blocks(), kv.n_blocks());
}
