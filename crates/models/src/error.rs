//! Why a model could not be loaded, or a batch could not be run.
//!
//! Load errors name the metadata key or tensor at fault, so that one line tells a user
//! what is wrong with a file; batch errors name the batch entry. Nothing in a model file
//! or a batch can make this crate panic: every such problem is one of these variants.

use hearth_gguf::{GgufError, TensorType};
use hearth_kernels::matmul::MatmulError;
use hearth_kernels::ops::RopeError;

use crate::kv_cache::SeqId;

/// A refused model file, a refused batch, or a cache that cannot take a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Metadata(#[from] GgufError),

    /// `general.architecture` names an architecture Hearth does not implement.
    #[error("architecture '{0}' is not supported (supported: llama, qwen2, qwen3, gemma3)")]
    UnsupportedArchitecture(String),

    /// A feature of an otherwise supported architecture that is not implemented.
    #[error("{0} is not supported")]
    Unsupported(String),

    /// Hyper-parameters that contradict each other or are out of range.
    #[error("metadata key '{key}': {reason}")]
    HParam { key: String, reason: String },

    /// A tensor the architecture needs is absent.
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),

    /// A tensor whose shape is not the one the hyper-parameters imply.
    #[error("tensor '{tensor}' has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        tensor: String,
        expected: Vec<u64>,
        actual: Vec<u64>,
    },

    /// A tensor stored in a type that cannot be used where it is.
    #[error("tensor '{tensor}': type {ty} {reason}")]
    TensorType {
        tensor: String,
        ty: TensorType,
        reason: &'static str,
    },

    /// A tensor the architecture does not use: the file is of a variant this code does
    /// not know (llama.cpp refuses such files too, rather than ignoring weights).
    #[error("tensor '{0}' is not used by this architecture (unsupported model variant?)")]
    UnusedTensor(String),

    /// A scratch or cache size that is zero or too large.
    #[error("{what}: {reason}")]
    Config { what: &'static str, reason: String },

    /// The KV cache memory could not be allocated.
    #[error("KV cache of {bytes} bytes could not be allocated")]
    CacheAlloc { bytes: u128 },

    /// A batch entry's token id is not in the vocabulary.
    #[error("batch entry {index}: token {token} is outside the vocabulary (n_vocab {n_vocab})")]
    TokenOutOfRange {
        index: usize,
        token: u32,
        n_vocab: usize,
    },

    /// A batch entry names a sequence the cache does not hold.
    #[error("batch entry {index}: sequence {seq:?} does not exist in the KV cache")]
    UnknownSequence { index: usize, seq: SeqId },

    /// A batch entry's position does not come after its sequence's previous one.
    #[error(
        "batch entry {index}: position {pos} of sequence {seq:?} must be greater than its \
         previous position {prev}"
    )]
    Position {
        index: usize,
        seq: SeqId,
        pos: u32,
        prev: u32,
    },

    /// More rows ask for logits than the scratch has room for.
    #[error("batch asks for {n_outputs} rows of logits, the scratch holds at most {max}")]
    TooManyOutputs { n_outputs: usize, max: usize },

    /// The KV cache has too few free cells for the batch.
    #[error("KV cache full: the batch needs {needed} more cells, {free} are free")]
    CacheFull { needed: usize, free: usize },

    /// A RoPE parameter from the file was refused.
    #[error("rope: {0}")]
    Rope(#[from] RopeError),

    /// A product's shapes did not agree. Loading checks every weight's shape, so this is
    /// a bug in Hearth, reported rather than panicking.
    #[error("internal shape error: {0}")]
    Kernel(#[from] MatmulError),
}
