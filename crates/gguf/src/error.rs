//! Why a GGUF file was refused, or a metadata lookup failed.
//!
//! Every message names the header field, metadata key or tensor at fault, so that a user
//! who sees one line of `hearth inspect` output knows where the file is broken.

use std::path::PathBuf;

use hearth_kernels::quant::TensorType;

/// A refused GGUF file, a failed metadata lookup, or an invalid tensor given to the writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, sized or mapped.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    /// Version 1 used 32-bit counts and string lengths; nothing current writes it.
    #[error("GGUF version 1 is not supported (it used 32-bit counts); re-convert the model")]
    Version1,

    /// A version this reader does not know (it knows 2 and 3).
    #[error("GGUF version {0} is not supported (supported: 2 and 3)")]
    UnknownVersion(u32),

    /// A version that reads as 2 or 3 once byte-swapped: a big-endian file.
    #[error("big-endian GGUF (version field {0:#010x}) is not supported")]
    BigEndian(u32),

    /// The file ends inside `field`.
    #[error("file truncated in {field}: {need} bytes needed at offset {offset}, {left} left")]
    Truncated {
        field: String,
        offset: u64,
        need: u64,
        left: u64,
    },

    /// A string length larger than what is left of the file.
    #[error("{field}: string length {len} exceeds the {left} bytes left in the file")]
    StringTooLong { field: String, len: u64, left: u64 },

    /// An item count that cannot fit in what is left of the file, even if every item took
    /// its smallest encoding. Checked before anything is allocated for the items.
    #[error(
        "{field}: count {count} cannot fit in the {left} bytes left \
         (each item needs at least {min_size} bytes)"
    )]
    CountTooLarge {
        field: String,
        count: u64,
        min_size: u64,
        left: u64,
    },

    /// A key, tensor name or string value that is not UTF-8 (the GGUF spec requires it).
    #[error("{field}: string is not valid UTF-8")]
    InvalidUtf8 { field: String },

    /// A metadata value type id outside 0..=12.
    #[error("metadata key '{key}': unknown value type id {id}")]
    UnknownValueType { key: String, id: u32 },

    /// A bool stored as something other than 0 or 1.
    #[error("metadata key '{key}': bool byte is {byte}, expected 0 or 1")]
    InvalidBool { key: String, byte: u8 },

    /// Arrays of arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("metadata key '{key}': arrays nested deeper than {max} levels")]
    ArrayTooDeep { key: String, max: usize },

    /// The same metadata key twice.
    #[error("metadata key '{key}' appears twice")]
    DuplicateKey { key: String },

    /// `general.alignment` is not a non-zero power of two stored as UINT32.
    #[error("metadata key 'general.alignment': {reason}")]
    BadAlignment { reason: String },

    /// The tensor infos end past the end of the file, once padded to the alignment.
    #[error("file truncated: the data section starts at offset {data_offset}, the file has {file_len} bytes")]
    NoDataSection { data_offset: u64, file_len: u64 },

    /// More dimensions than ggml's four.
    #[error("tensor '{tensor}': {n_dims} dimensions, at most {max} supported")]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: usize,
    },

    /// A tensor type id ggml does not define.
    #[error("tensor '{tensor}': unknown tensor type id {id}")]
    UnknownTensorType { tensor: String, id: u32 },

    /// The element count or byte size does not fit ggml's `int64_t`.
    #[error("tensor '{tensor}': shape {shape:?} is too large (element or byte count overflows)")]
    ShapeOverflow { tensor: String, shape: Vec<u64> },

    /// A row (ne\[0\]) that is not a whole number of the type's blocks.
    #[error(
        "tensor '{tensor}': row length {ne0} is not a multiple of {ty}'s block size {block_len}"
    )]
    PartialBlock {
        tensor: String,
        ty: TensorType,
        ne0: u64,
        block_len: usize,
    },

    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor '{tensor}': offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    /// Tensor bytes that reach past the end of the data section.
    #[error(
        "tensor '{tensor}': {n_bytes} bytes at offset {offset} reach past the end of the \
         data section ({data_len} bytes)"
    )]
    OutOfBounds {
        tensor: String,
        offset: u64,
        n_bytes: u64,
        data_len: u64,
    },

    /// Two tensors whose bytes overlap.
    #[error("tensor '{tensor}' overlaps tensor '{other}'")]
    Overlap { tensor: String, other: String },

    /// The same tensor name twice.
    #[error("tensor '{tensor}' appears twice")]
    DuplicateTensor { tensor: String },

    /// Writer: the bytes given do not match the tensor's type and shape.
    #[error(
        "tensor '{tensor}': {len} bytes given, a {ty} tensor of shape {shape:?} takes {expected}"
    )]
    DataSize {
        tensor: String,
        ty: TensorType,
        shape: Vec<u64>,
        len: u64,
        expected: u64,
    },

    /// Split parts (see [`crate::merge_split`]) that do not make one model; `part` counts
    /// from 1, as the file names do.
    #[error("split part {part}: {reason}")]
    Split { part: usize, reason: String },

    /// Lookup: a required metadata key is absent.
    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },

    /// Lookup: a metadata key holds another type than the one asked for.
    #[error("metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

/// A key or tensor name as it appears in error messages: whole if it is of a plausible
/// length, else its start and its size, so that a hostile file cannot make an error
/// message as large as itself (or an unreadable screenful).
pub(crate) fn shown_name(name: &str) -> String {
    const MAX: usize = 96;
    if name.len() <= MAX {
        return name.to_string();
    }
    let mut end = 64;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &name[..end], name.len())
}
