//! Model architectures over GGUF weights: loading, the KV cache, and a batched forward
//! pass whose numerics follow llama.cpp's graphs.
//!
//! One file per architecture, named by GGUF's `general.architecture`: `llama.rs`
//! (Llama 2/3, Mistral), `qwen2.rs` (the Llama graph with Q/K/V biases), `qwen3.rs`
//! (per-head Q/K norms), `gemma3.rs` (sliding-window and global layers, post-norms).
//! Their shared pieces are plain functions in `blocks.rs`.
//!
//! # Use
//!
//! ```no_run
//! # use hearth_gguf::GgufFile;
//! # use hearth_kernels::pool::ThreadPool;
//! # use hearth_models::{Batch, KvCache, Model, Scratch};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = GgufFile::open("model.gguf")?;
//! let model = Model::load(&file)?;
//! let pool = ThreadPool::new(2)?;
//! let mut kv = KvCache::new(model.hparams(), 4096)?; // cells, shared by all sequences
//! let mut scratch = Scratch::new(&model, 512, 512)?; // n_ubatch, max rows of logits
//!
//! let seq = kv.new_sequence();
//! let mut batch = Batch::new();
//! batch.push_seq(&[2, 651, 6037], 0, seq, false); // a prompt: logits of the last row
//! let logits = model.forward(&pool, &mut kv, &mut scratch, &batch)?; // [1, n_vocab]
//! # let _ = logits;
//! batch.clear();
//! batch.push(1234, 3, seq, true); // one decode step
//! let logits = model.forward(&pool, &mut kv, &mut scratch, &batch)?;
//! # let _ = logits;
//! # Ok(()) }
//! ```
//!
//! The model borrows the file; the caller (the engine) owns the file, the model, the
//! cache, the scratch and the pool, and may run several sequences in one batch.
//!
//! What this crate deliberately does not do: tokenization (`hearth-tokenizer`: BOS/EOS
//! come from there), sampling, scheduling of requests (the engine), or choosing how
//! large the cache is.

#![forbid(unsafe_code)]

mod batch;
mod blocks;
mod deepseek2;
mod error;
mod gemma3;
mod head;
mod hparams;
mod kv_cache;
mod llama;
mod model;
mod moe;
mod qwen2;
mod qwen3;
mod scratch;
pub mod tiny;
mod weights;

pub use batch::Batch;
pub use error::ModelError;
pub use hearth_kernels::ops::attention::{KvType, UnknownKvType};
pub use hparams::{Arch, HParams};
pub use kv_cache::{KvCache, KvTypes, SeqId, BLOCK_CELLS};
pub use model::{Logits, Model};
pub use scratch::Scratch;
