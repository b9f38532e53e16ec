//! Tensor infos: name, type, shape and where the bytes are.

use hearth_kernels::quant::TensorType;

use crate::error::GgufError;

/// ggml's `GGML_MAX_DIMS`: a tensor has at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// A validated tensor info of a [`crate::GgufFile`]: its type and shape agree with its
/// byte size, and its bytes lie, aligned, inside the data section without overlapping
/// another tensor's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub(crate) name: String,
    pub(crate) ty: TensorType,
    pub(crate) shape: Vec<u64>,
    pub(crate) offset: u64,
    pub(crate) n_bytes: u64,
    pub(crate) file_offset: u64,
}

impl TensorInfo {
    /// The GGUF tensor name (`blk.0.attn_q.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tensor type.
    pub fn ty(&self) -> TensorType {
        self.ty
    }

    /// The dimensions in GGUF order: `ne[0]` (the row length, contiguous in memory)
    /// first. Empty for a zero-dimensional tensor, which holds one element.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The row length `ne[0]` (1 for a zero-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The number of elements (checked at read time to fit `i64`).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The offset of the bytes from the start of the data section, as stored in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The offset of the bytes from the start of the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// The size of the bytes, from type and shape.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// The byte size of a `ty` tensor of `shape`, or the error naming `tensor` if the row is
/// not a whole number of blocks or a count overflows ggml's `int64_t`.
pub(crate) fn tensor_bytes(tensor: &str, ty: TensorType, shape: &[u64]) -> Result<u64, GgufError> {
    let overflow = || GgufError::ShapeOverflow {
        tensor: tensor.to_string(),
        shape: shape.to_vec(),
    };
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let ne0 = shape.first().copied().unwrap_or(1);
    let (block_len, _) = ty.layout();
    if ne0 % block_len as u64 != 0 {
        return Err(GgufError::PartialBlock {
            tensor: tensor.to_string(),
            ty,
            ne0,
            block_len,
        });
    }
    let row_bytes = ty.row_bytes(ne0).ok_or_else(overflow)?;
    // n_rows * row_bytes; when ne0 is 0 there are no bytes whatever the other dims.
    let n_rows = n_elements.checked_div(ne0).unwrap_or(0);
    n_rows
        .checked_mul(row_bytes)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)
}
