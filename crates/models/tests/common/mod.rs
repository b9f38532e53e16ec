//! Shared helpers of the model tests: tiny models in memory, fixtures, running tokens.

#![allow(dead_code)]

use std::path::PathBuf;

use hearth_gguf::GgufFile;
use hearth_kernels::pool::ThreadPool;
use hearth_models::tiny::{self, TinySpec};
use hearth_models::{Batch, KvCache, Model, Scratch};

/// `tests/fixtures/models` of the repository.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models")
}

/// The tiny model spec named `name`.
pub fn spec(name: &str) -> TinySpec {
    tiny::specs()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no tiny model {name}"))
}

/// The tiny model `name` as an in-memory GGUF file.
pub fn tiny_file(name: &str) -> GgufFile {
    GgufFile::from_bytes(spec(name).to_bytes()).expect("tiny models are valid GGUF")
}

/// Logits of every token of `tokens` (one sequence from position 0), in one batch
/// processed `n_ubatch` tokens at a time. `[n_tokens, n_vocab]`.
pub fn logits_batch(
    model: &Model<'_>,
    pool: &ThreadPool,
    tokens: &[u32],
    n_ubatch: usize,
) -> Vec<f32> {
    let mut kv = KvCache::new(model.hparams(), tokens.len().max(64)).unwrap();
    let mut scratch = Scratch::new(model, n_ubatch, tokens.len()).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(tokens, 0, seq, true);
    model
        .forward(pool, &mut kv, &mut scratch, &batch)
        .unwrap()
        .to_vec()
}

/// Logits of every token of `tokens`, fed one token per forward call (decoding).
pub fn logits_decode(model: &Model<'_>, pool: &ThreadPool, tokens: &[u32]) -> Vec<f32> {
    let mut kv = KvCache::new(model.hparams(), tokens.len().max(64)).unwrap();
    let mut scratch = Scratch::new(model, 1, 1).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    let mut out = Vec::new();
    for (pos, &t) in tokens.iter().enumerate() {
        batch.clear();
        batch.push(t, pos as u32, seq, true);
        out.extend_from_slice(model.forward(pool, &mut kv, &mut scratch, &batch).unwrap());
    }
    out
}

/// `max |a - b| / max |b|`: the error relative to the reference's largest logit.
pub fn rel_max_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    err / scale
}

/// Reads a little-endian f32 file.
pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}
