//! GGUF: read (mapped, validated, zero-copy) and write.
//!
//! [`GgufFile::open`] maps a GGUF v2/v3 file ([`GgufFile::open_with`] can copy it onto
//! huge pages instead, see [`Residency`]), decodes its metadata and validates every
//! tensor info before handing anything out: a file that passes can be used without
//! further bounds checks, and one that fails gets a [`GgufError`] naming the key or
//! tensor at fault. [`GgufWriter`] builds files (test fixtures, generated models).
//! [`merge_split`] joins a model split by llama.cpp's `gguf-split` into one file.
//!
//! The format is specified in ggml's `docs/gguf.md`; behaviour on edge cases was checked
//! against llama.cpp's `gguf.cpp` and the `gguf` Python package's `GGUFReader`.
//!
//! Strings (keys, tensor names, string values) must be valid UTF-8, as the spec says: a
//! file that breaks this is refused rather than read lossily, because replacing bytes
//! could make two distinct tokenizer entries equal and silently change tokenization.
//!
//! Not done here: interpreting metadata (that is each model's job), dequantizing tensors
//! (`hearth_kernels`), big-endian files and GGUF v1 (both refused).

#![deny(unsafe_code)]

mod error;
mod file;
mod file_type;
mod metadata;
mod mmap;
mod read;
mod split;
mod tensor;
mod value;
mod write;

pub use error::GgufError;
pub use file::{GgufFile, Residency, TensorView};
pub use file_type::{file_type_long_name, file_type_name};
pub use hearth_kernels::quant::TensorType;
pub use metadata::{FromValue, Metadata};
pub use read::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH};
pub use split::{
    merge_split, split_part, SplitPart, SPLIT_COUNT_KEY, SPLIT_NO_KEY, SPLIT_TENSORS_COUNT_KEY,
};
pub use tensor::{TensorInfo, MAX_DIMS};
pub use value::{Array, StringArray, Strings, Value, ValueType};
pub use write::GgufWriter;
