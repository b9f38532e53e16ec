//! Sequences that share cache blocks: a fork continues exactly as the sequence it came
//! from would, a sequence started on another's blocks (a cached prefix) gives the logits
//! a recomputation gives, copy-on-write keeps forks apart, and reference counts free a
//! block exactly when its last holder lets go.
//!
//! Decoding one token per call through one path keeps the arithmetic of every row the
//! same whichever sequence computes it, so these comparisons are exact, for every
//! stored type of keys and values (a copied block is the same bytes).

mod common;

use common::*;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{
    tiny, Batch, HParams, KvCache, KvType, KvTypes, Model, ModelError, Scratch, SeqId, BLOCK_CELLS,
};

/// The key and value types a model's head sizes allow: each type for both, and a mix.
fn types_for(hp: &HParams) -> Vec<KvTypes> {
    let mut all: Vec<KvTypes> = KvType::ALL.into_iter().map(KvTypes::both).collect();
    all.push(KvTypes {
        k: KvType::Q8_0,
        v: KvType::F16,
    });
    all.into_iter()
        .filter(|t| {
            hp.n_embd_head_k.is_multiple_of(t.k.block_size())
                && hp.n_embd_head_v.is_multiple_of(t.v.block_size())
        })
        .collect()
}

/// Feeds `tokens` to `seq` one per call from `pos0`, returning every row's logits.
fn decode(
    model: &Model<'_>,
    pool: &ThreadPool,
    kv: &mut KvCache,
    scratch: &mut Scratch,
    seq: SeqId,
    pos0: usize,
    tokens: &[u32],
) -> Vec<f32> {
    let mut batch = Batch::new();
    let mut out = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        batch.clear();
        batch.push(t, (pos0 + i) as u32, seq, true);
        out.extend_from_slice(model.forward(pool, kv, scratch, &batch).unwrap());
    }
    out
}

/// 40 tokens: two full blocks and a partial one.
fn tokens() -> Vec<u32> {
    let base = tiny::test_tokens(20);
    (0..40).map(|i| base[i % base.len()]).collect()
}

#[test]
fn forks_continue_like_their_parent_and_stay_apart() {
    let pool = ThreadPool::new(2).unwrap();
    let file = tiny_file(tiny::specs()[0].name);
    let model = Model::load(&file).unwrap();
    let t = tokens();
    let (prefix, tail_a, tail_b) = (&t[..21], &t[21..30], &t[30..]);
    let all_types = types_for(model.hparams());
    assert!(all_types.contains(&KvTypes::both(KvType::Q8_0)));
    for types in all_types {
        forks_continue(&model, &pool, types, prefix, tail_a, tail_b);
    }
}

fn forks_continue(
    model: &Model<'_>,
    pool: &ThreadPool,
    types: KvTypes,
    prefix: &[u32],
    tail_a: &[u32],
    tail_b: &[u32],
) {
    let n_vocab = model.hparams().n_vocab;
    // Reference: each continuation computed from scratch in its own cache.
    let mut scratch = Scratch::new(model, 1, 1).unwrap();
    let reference = |tail: &[u32], scratch: &mut Scratch| {
        let mut kv = KvCache::with_types(model.hparams(), 64, types).unwrap();
        let s = kv.new_sequence();
        let all: Vec<u32> = prefix.iter().chain(tail).copied().collect();
        let out = decode(model, pool, &mut kv, scratch, s, 0, &all);
        out[prefix.len() * n_vocab..].to_vec()
    };
    let want_a = reference(tail_a, &mut scratch);
    let want_b = reference(tail_b, &mut scratch);

    let mut kv = KvCache::with_types(model.hparams(), 128, types).unwrap();
    let parent = kv.new_sequence();
    decode(model, pool, &mut kv, &mut scratch, parent, 0, prefix);
    let used = kv.n_blocks() - kv.n_free_blocks();
    assert_eq!(used, 2, "21 tokens take two blocks");
    let child = kv.fork(parent).unwrap();
    assert_eq!(
        kv.n_blocks() - kv.n_free_blocks(),
        used,
        "a fork copies nothing"
    );
    assert_eq!(kv.seq_blocks(child), kv.seq_blocks(parent));

    // The child appends first: its partial block is copied, the parent's left alone.
    let got_b = decode(model, pool, &mut kv, &mut scratch, child, 21, tail_b);
    assert_ne!(kv.seq_blocks(child)[1], kv.seq_blocks(parent)[1]);
    assert_eq!(kv.seq_blocks(child)[0], kv.seq_blocks(parent)[0]);
    let got_a = decode(model, pool, &mut kv, &mut scratch, parent, 21, tail_a);
    assert_eq!(got_a, want_a, "{types:?}: the parent after its fork wrote");
    assert_eq!(got_b, want_b, "{types:?}: the fork");

    // Blocks go back to the pool when the last holder is gone.
    let shared = kv.seq_blocks(parent)[0];
    assert_eq!(kv.block_refs(shared), 2);
    kv.remove_sequence(parent);
    assert_eq!(kv.block_refs(shared), 1);
    kv.remove_sequence(child);
    assert_eq!(kv.block_refs(shared), 0);
    assert_eq!(kv.n_free_blocks(), kv.n_blocks());
}

#[test]
fn an_adopted_prefix_gives_the_logits_of_recomputing_it() {
    let pool = ThreadPool::new(2).unwrap();
    for spec in tiny::specs() {
        let file = tiny_file(spec.name);
        let model = Model::load(&file).unwrap();
        for types in types_for(model.hparams()) {
            adopt_prefix(&model, &pool, types, spec.name);
        }
    }
}

fn adopt_prefix(model: &Model<'_>, pool: &ThreadPool, types: KvTypes, name: &str) {
    let n_vocab = model.hparams().n_vocab;
    let t = tokens();
    let mut scratch = Scratch::new(model, 1, 1).unwrap();
    let mut kv = KvCache::with_types(model.hparams(), 128, types).unwrap();

    let first = kv.new_sequence();
    let whole = decode(model, pool, &mut kv, &mut scratch, first, 0, &t);
    // A holder outside any sequence keeps the first two (full) blocks.
    let cached: Vec<u32> = kv.seq_blocks(first)[..2].to_vec();
    for &b in &cached {
        assert!(kv.retain_block(b));
    }
    kv.remove_sequence(first);
    assert_eq!(kv.n_blocks() - kv.n_free_blocks(), 2);

    let second = kv.new_sequence();
    kv.adopt_prefix(second, &cached).unwrap();
    assert_eq!(kv.seq_len(second), Some(2 * BLOCK_CELLS));
    assert_eq!(kv.seq_next_pos(second), Some(2 * BLOCK_CELLS as u32));
    let n = 2 * BLOCK_CELLS;
    let rest = decode(model, pool, &mut kv, &mut scratch, second, n, &t[n..]);
    assert_eq!(rest, whole[n * n_vocab..], "{name} {types:?}");

    // Bad adoptions are refused and change nothing.
    let third = kv.new_sequence();
    let free_block = (0..kv.n_blocks() as u32)
        .find(|&b| kv.block_refs(b) == 0)
        .unwrap();
    assert!(kv.adopt_prefix(third, &[cached[0], free_block]).is_err());
    assert_eq!(kv.block_refs(cached[0]), 2);
    assert!(kv.adopt_prefix(second, &cached).is_err(), "not empty");
    assert!(!kv.retain_block(free_block));
    assert!(!kv.release_block(free_block));

    for &b in &cached {
        assert!(kv.release_block(b));
    }
    kv.remove_sequence(second);
    kv.remove_sequence(third);
    assert_eq!(kv.n_free_blocks(), kv.n_blocks(), "{name} {types:?}");
}

#[test]
fn a_full_cache_counts_the_copy_a_shared_partial_block_needs() {
    let pool = ThreadPool::new(1).unwrap();
    let file = tiny_file(tiny::specs()[0].name);
    let model = Model::load(&file).unwrap();
    for types in types_for(model.hparams()) {
        full_cache(&model, &pool, types);
    }
}

fn full_cache(model: &Model<'_>, pool: &ThreadPool, types: KvTypes) {
    let mut scratch = Scratch::new(model, 1, 1).unwrap();
    // Two blocks: the parent's partial one, and one more.
    let mut kv = KvCache::with_types(model.hparams(), 2 * BLOCK_CELLS, types).unwrap();
    let parent = kv.new_sequence();
    let t = tokens();
    decode(model, pool, &mut kv, &mut scratch, parent, 0, &t[..5]);
    let child = kv.fork(parent).unwrap();
    decode(model, pool, &mut kv, &mut scratch, child, 5, &t[5..6]);
    assert_eq!(kv.n_free_blocks(), 0);
    // The parent's block is its own again (the child copied): appends need no copy.
    decode(model, pool, &mut kv, &mut scratch, parent, 5, &t[6..8]);
    // A third fork of the parent, with no block left for its copy, is refused cleanly.
    let third = kv.fork(parent).unwrap();
    let mut batch = Batch::new();
    batch.push(t[8], 7, third, true);
    let err = model.forward(pool, &mut kv, &mut scratch, &batch);
    assert!(err.is_err());
    assert_eq!(kv.seq_len(third), Some(7));
    assert_eq!(kv.seq_blocks(third), kv.seq_blocks(parent));
}

#[test]
fn a_q8_0_cache_needs_head_sizes_in_whole_blocks() {
    let file = tiny_file(tiny::specs()[0].name);
    let model = Model::load(&file).unwrap();
    let mut hp = model.hparams().clone();
    hp.n_embd_head_k = 40;
    let err = KvCache::with_types(&hp, 64, KvTypes::both(KvType::Q8_0)).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Config {
                what: "KV cache type",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    assert!(KvCache::with_types(&hp, 64, KvTypes::both(KvType::F16)).is_ok());
}

#[test]
fn reduced_types_take_fewer_bytes() {
    let file = tiny_file(tiny::specs()[0].name);
    let model = Model::load(&file).unwrap();
    let hp = model.hparams();
    let size = |t| {
        KvCache::with_types(hp, 64, KvTypes::both(t))
            .unwrap()
            .size_bytes()
    };
    let f32_bytes = size(KvType::F32);
    assert_eq!(size(KvType::F16) * 2, f32_bytes);
    assert_eq!(size(KvType::Q8_0) * 64, f32_bytes * 17);
}
