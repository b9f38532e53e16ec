//! Taking weights out of a GGUF file: shape and type checks, and a record of which
//! tensors were used.
//!
//! Matrices stay in the (mapped) file, borrowed; small vectors (norm weights, biases,
//! RoPE factors) are converted to f32 once at load, since every token reads them whole.
//! A shape is compared with the one the hyper-parameters imply, in GGUF order (`ne[0]`,
//! the row length, first), trailing 1s ignored as llama.cpp's `create_tensor` does.

use std::collections::HashSet;

use hearth_gguf::{GgufFile, TensorInfo, TensorType};
use hearth_kernels::dispatch::Kernels;
use hearth_kernels::matmul::packed::{PackedFormat, PackedMatrix};
use hearth_kernels::matmul::WeightMatrix;
use hearth_kernels::quant::dequantize_row;

use crate::error::ModelError;
use crate::head::Head;

/// A linear layer: `y = W·x (+ b)`. `W` is `[n_out, n_in]` (GGUF shape `[n_in, n_out]`).
#[derive(Debug)]
pub(crate) struct Linear<'a> {
    pub(crate) w: WeightMatrix<'a>,
    /// `[n_out]`
    pub(crate) b: Option<Vec<f32>>,
    /// `W` packed for the products of a few tokens, where the model packed it
    /// ([`Linear::pack`]); every token of the row path then goes through it.
    pub(crate) packed: Option<PackedMatrix>,
}

impl<'a> Linear<'a> {
    pub(crate) fn new(w: WeightMatrix<'a>, b: Option<Vec<f32>>) -> Linear<'a> {
        Linear { w, b, packed: None }
    }

    /// Packs `W` when its format is one of `formats` and this CPU level has a packed
    /// kernel for it; returns the bytes the packed copy takes (0 when it stays as it is).
    pub(crate) fn pack(&mut self, formats: &[PackedFormat]) -> Result<usize, ModelError> {
        pack_into(&mut self.packed, &self.w, formats, "packed weights")
    }
}

/// Packs `w` into `slot` (once) when its format is one of `formats` and this CPU level
/// has a packed kernel for it; returns the bytes the packed copy takes (0 when `w`
/// stays as it is). `what` names the matrix in the error.
pub(crate) fn pack_into(
    slot: &mut Option<PackedMatrix>,
    w: &WeightMatrix<'_>,
    formats: &[PackedFormat],
    what: &'static str,
) -> Result<usize, ModelError> {
    let format = PackedFormat::of(w.ty()).filter(|f| formats.contains(f));
    if slot.is_none() && format.is_some_and(|f| Kernels::get().packed(f).is_some()) {
        *slot = PackedMatrix::pack(w).map_err(|e| ModelError::Config {
            what,
            reason: format!("no memory for its packed copy: {e}"),
        })?;
    }
    Ok(slot.as_ref().map_or(0, PackedMatrix::bytes))
}

/// The weights of one GGUF file, handed out by name, with every use recorded.
pub(crate) struct Weights<'a> {
    file: &'a GgufFile,
    used: HashSet<&'a str>,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(file: &'a GgufFile) -> Weights<'a> {
        Weights {
            file,
            used: HashSet::new(),
        }
    }

    /// The info of `name`, marked used, with its shape checked against `dims`.
    fn info(&mut self, name: &str, dims: &[usize]) -> Result<Option<&'a TensorInfo>, ModelError> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        let shape = info.shape();
        let matches = shape.len() >= dims.len()
            && shape.iter().zip(dims).all(|(&a, &e)| a == e as u64)
            && shape[dims.len()..].iter().all(|&d| d == 1);
        if !matches {
            return Err(ModelError::TensorShape {
                tensor: name.to_string(),
                expected: dims.iter().map(|&d| d as u64).collect(),
                actual: shape.to_vec(),
            });
        }
        self.used.insert(info.name());
        Ok(Some(info))
    }

    /// The type and bytes of tensor `name` of shape `dims`, which must be a type the
    /// kernels can multiply with; `None` if absent.
    fn multipliable(
        &mut self,
        name: &str,
        dims: &[usize],
    ) -> Result<Option<(TensorType, &'a [u8])>, ModelError> {
        let Some(info) = self.info(name, dims)? else {
            return Ok(None);
        };
        let ty = info.ty();
        if Kernels::get().dot(ty).is_none() {
            return Err(ModelError::TensorType {
                tensor: name.to_string(),
                ty,
                reason: "has no matrix product kernel",
            });
        }
        Ok(Some((ty, self.file.tensor_data(info))))
    }

    /// The matrix `name` of GGUF shape `[n_in, n_out]`, in a type the kernels can
    /// multiply with; `None` if absent.
    pub(crate) fn matrix_opt(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Option<WeightMatrix<'a>>, ModelError> {
        let Some((ty, data)) = self.multipliable(name, &[n_in, n_out])? else {
            return Ok(None);
        };
        Ok(Some(WeightMatrix::new(ty, n_out, n_in, data)?))
    }

    /// As [`Weights::matrix_opt`], required.
    pub(crate) fn matrix(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<WeightMatrix<'a>, ModelError> {
        self.matrix_opt(name, n_in, n_out)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// The 3-D expert tensor `name` (GGUF shape `[n_in, n_out, n_expert]`) as one matrix
    /// `[n_out, n_in]` per expert, each borrowing its slice of the tensor; `None` if
    /// absent.
    pub(crate) fn experts_opt(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
        n_expert: usize,
    ) -> Result<Option<Vec<WeightMatrix<'a>>>, ModelError> {
        let Some((ty, data)) = self.multipliable(name, &[n_in, n_out, n_expert])? else {
            return Ok(None);
        };
        let per_expert = data.len() / n_expert.max(1);
        data.chunks_exact(per_expert.max(1))
            .take(n_expert)
            .map(|d| Ok(WeightMatrix::new(ty, n_out, n_in, d)?))
            .collect::<Result<Vec<_>, ModelError>>()
            .map(Some)
    }

    /// As [`Weights::experts_opt`], required.
    pub(crate) fn experts(
        &mut self,
        name: &str,
        n_in: usize,
        n_out: usize,
        n_expert: usize,
    ) -> Result<Vec<WeightMatrix<'a>>, ModelError> {
        self.experts_opt(name, n_in, n_out, n_expert)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// The linear layer `{prefix}.weight` (`[n_in, n_out]`) with its bias
    /// `{prefix}.bias` (`[n_out]`), which must be present when `bias_required`.
    pub(crate) fn linear(
        &mut self,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        bias_required: bool,
    ) -> Result<Linear<'a>, ModelError> {
        let w = self.matrix(&format!("{prefix}.weight"), n_in, n_out)?;
        let bias = format!("{prefix}.bias");
        let b = if bias_required {
            Some(self.vector(&bias, n_out)?)
        } else {
            self.vector_opt(&bias, n_out)?
        };
        Ok(Linear::new(w, b))
    }

    /// The vector `name` (`[n]`) converted to f32; `None` if absent.
    pub(crate) fn vector_opt(
        &mut self,
        name: &str,
        n: usize,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(info) = self.info(name, &[n])? else {
            return Ok(None);
        };
        let ty = info.ty();
        let mut out = vec![0.0; n];
        dequantize_row(ty, self.file.tensor_data(info), &mut out).map_err(|_| {
            ModelError::TensorType {
                tensor: name.to_string(),
                ty,
                reason: "cannot be converted to f32",
            }
        })?;
        Ok(Some(out))
    }

    /// As [`Weights::vector_opt`], required.
    pub(crate) fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        self.vector_opt(name, n)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// The token embedding table `name` (`[n_embd, n_vocab]`): rows are looked up, not
    /// multiplied, so any type that dequantizes will do; it must also multiply when the
    /// output projection is tied to it.
    pub(crate) fn embedding(
        &mut self,
        name: &str,
        n_embd: usize,
        n_vocab: usize,
    ) -> Result<WeightMatrix<'a>, ModelError> {
        let info = self
            .info(name, &[n_embd, n_vocab])?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let ty = info.ty();
        if !ty.is_computable() {
            return Err(ModelError::TensorType {
                tensor: name.to_string(),
                ty,
                reason: "cannot be converted to f32",
            });
        }
        Ok(WeightMatrix::new(
            ty,
            n_vocab,
            n_embd,
            self.file.tensor_data(info),
        )?)
    }

    /// The output head (`[n_embd, n_vocab]`): `output.weight`, or the token embedding
    /// table when the file ties the two.
    pub(crate) fn head(&mut self, n_embd: usize, n_vocab: usize) -> Result<Head<'a>, ModelError> {
        let w = match self.matrix_opt("output.weight", n_embd, n_vocab)? {
            Some(m) => m,
            None => self.matrix("token_embd.weight", n_embd, n_vocab)?,
        };
        Ok(Head::new(w))
    }

    /// Marks every tensor whose name starts with `prefix` as deliberately unused (a
    /// block the forward pass does not run), so that [`Weights::finish`] accepts it.
    pub(crate) fn skip_prefix(&mut self, prefix: &str) {
        for t in self.file.tensors() {
            if t.name().starts_with(prefix) {
                self.used.insert(t.name());
            }
        }
    }

    /// Refuses the file if it holds a tensor nothing asked for.
    pub(crate) fn finish(self) -> Result<(), ModelError> {
        match self
            .file
            .tensors()
            .iter()
            .find(|t| !self.used.contains(t.name()))
        {
            Some(t) => Err(ModelError::UnusedTensor(t.name().to_string())),
            None => Ok(()),
        }
    }
}
