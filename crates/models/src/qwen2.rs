//! `qwen2`: Qwen2 and Qwen2.5 (dense).
//!
//! llama.cpp's `src/models/qwen2.cpp` builds exactly the Llama graph, with two
//! differences that are both in the weights and hyper-parameters rather than in the
//! computation: the Q, K and V projections carry biases (required), and RoPE pairs the
//! two halves of each head (NeoX layout, from [`crate::Arch::rope_mode`]). So a Qwen2
//! file loads into the Llama graph of `llama.rs`. Small Qwen2.5 models tie the output
//! projection to the token embedding, which the Llama loader handles.

use crate::error::ModelError;
use crate::hparams::HParams;
use crate::llama::{Llama, QkvBias};
use crate::weights::Weights;

/// Loads a `qwen2` file.
pub(crate) fn load<'a>(w: &mut Weights<'a>, hp: &HParams) -> Result<Llama<'a>, ModelError> {
    Llama::load_with(w, hp, QkvBias::Required)
}
