//! Hyper-parameters shared by every architecture, read from GGUF metadata.
//!
//! Keys are `{arch}.{name}` as llama.cpp's `llama-arch.cpp` names them
//! (`llama.embedding_length`, `gemma3.attention.head_count_kv`, ...), with llama.cpp's
//! defaults where a key is optional (`llama-model.cpp`, `load_hparams`): the head sizes
//! default to `n_embd / n_head`, the rotated dimensions to the key head size, the KV head
//! count to the head count, the RoPE base to 10000.
//!
//! Every value is checked for range and consistency here, before anything is sized by
//! it; the tensor shapes are checked against these values when the weights are loaded.

use hearth_gguf::{GgufFile, Metadata, Value};
use hearth_kernels::ops::{RopeMode, RopeParams};

use crate::error::ModelError;

/// A model architecture, named by GGUF's `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 2/3, Mistral, and the models converted as `llama` (R1-Distill-Llama, ...).
    Llama,
    /// Qwen2 / Qwen2.5: Llama with Q/K/V biases and NeoX RoPE.
    Qwen2,
    /// Qwen3 (dense): Llama with per-head RMSNorm of Q and K, NeoX RoPE.
    Qwen3,
    /// Gemma 3 (text): interleaved sliding-window and global attention, pre- and
    /// post-norms, GeGLU, scaled embeddings.
    Gemma3,
    /// DeepSeek-V2, V2-Lite, V3 and R1: Multi-head Latent Attention and mixture-of-experts
    /// layers with shared experts.
    Deepseek2,
    /// Qwen3's mixture-of-experts models (Qwen3-30B-A3B, 235B-A22B): the Qwen3 block with
    /// routed experts in place of the feed-forward network.
    Qwen3Moe,
}

impl Arch {
    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Deepseek2 => "deepseek2",
            Arch::Qwen3Moe => "qwen3moe",
        }
    }

    /// The architecture named `name`, if it is one Hearth implements.
    pub fn parse(name: &str) -> Option<Arch> {
        [
            Arch::Llama,
            Arch::Qwen2,
            Arch::Qwen3,
            Arch::Gemma3,
            Arch::Deepseek2,
            Arch::Qwen3Moe,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// How RoPE pairs dimensions for this architecture (llama.cpp's `llama_model_rope_type`).
    pub fn rope_mode(self) -> RopeMode {
        match self {
            Arch::Llama | Arch::Deepseek2 => RopeMode::Normal,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 | Arch::Qwen3Moe => RopeMode::Neox,
        }
    }

    /// Whether the architecture has mixture-of-experts layers (and so reads the
    /// `expert_*` keys; any other refuses a file that has experts).
    pub fn has_experts(self) -> bool {
        matches!(self, Arch::Deepseek2 | Arch::Qwen3Moe)
    }
}

/// Upper bounds that no real model comes near, so that a corrupt value is refused before
/// it sizes anything. Tensor shapes bound the real sizes more tightly once loaded.
const MAX_EMBD: u64 = 1 << 20;
const MAX_HEADS: u64 = 1 << 14;
const MAX_HEAD_DIM: u64 = 1 << 16;
/// Llama 4 Scout advertises 10M tokens; 2^27 leaves room and still catches garbage.
const MAX_CTX_TRAIN: u64 = 1 << 27;
/// DeepSeek-V3 has 256 routed experts; 2^16 leaves room.
const MAX_EXPERTS: u64 = 1 << 16;

/// The hyper-parameters every supported architecture has, with llama.cpp's names.
///
/// Architecture-specific ones (Gemma's sliding window, attention scale) live with the
/// architecture; this is what the engine and the CLI need to size caches and report.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    /// The architecture.
    pub arch: Arch,
    /// Vocabulary size: rows of `token_embd`.
    pub n_vocab: usize,
    /// Context length the model was trained with (`context_length`).
    pub n_ctx_train: usize,
    /// Width of the residual stream (`embedding_length`).
    pub n_embd: usize,
    /// Transformer blocks a forward pass runs: `block_count` less the
    /// multi-token-prediction blocks.
    pub n_layer: usize,
    /// Multi-token-prediction blocks after the trunk (`nextn_predict_layers`, DeepSeek-V3's
    /// MTP module): their tensors are in the file but not used (speculative decoding
    /// could use them later).
    pub n_layer_nextn: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`); divides `n_head`.
    pub n_head_kv: usize,
    /// Size of a query/key head (`attention.key_length`).
    pub n_embd_head_k: usize,
    /// Size of a value head (`attention.value_length`).
    pub n_embd_head_v: usize,
    /// Hidden size of the feed-forward network (`feed_forward_length`).
    pub n_ff: usize,
    /// Dimensions of each head that RoPE rotates (`rope.dimension_count`).
    pub n_rot: usize,
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// RoPE base (`rope.freq_base`).
    pub rope_freq_base: f32,
    /// RoPE position scale: `1 / rope.scaling.factor` for linear and YaRN scaling, else 1.
    pub rope_freq_scale: f32,
    /// YaRN context extension, when `rope.scaling.type` is `yarn`.
    pub rope_yarn: Option<Yarn>,
    /// Extra magnitude scale of RoPE's cos and sin (`rope.scaling.attn_factor`, 1 when
    /// absent).
    pub rope_attn_factor: f32,
    /// Routed experts per MoE layer (`expert_count`); 0 for a dense model.
    pub n_expert: usize,
    /// Experts each token is routed to (`expert_used_count`); 0 for a dense model.
    pub n_expert_used: usize,
    /// Width of the one latent row per token and layer that Multi-head Latent Attention
    /// caches instead of keys and values (`kv_lora_rank + n_rot`, 576 for DeepSeek-V3);
    /// `None` for ordinary attention.
    pub kv_latent: Option<usize>,
}

/// YaRN RoPE scaling (`rope.scaling.type = yarn`), as llama.cpp reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// The context the model was trained with before extension
    /// (`rope.scaling.original_context_length`, `context_length` when absent).
    pub n_ctx_orig: u32,
    /// DeepSeek's `mscale_all_dim` (`rope.scaling.yarn_log_multiplier`, which the
    /// converter stores multiplied by 0.1; undone here, as llama.cpp's deepseek2 loader
    /// does). 0 when absent.
    pub log_mul: f32,
}

impl HParams {
    /// Floats of K per token and layer in the cache: `n_head_kv · n_embd_head_k`, or the
    /// latent row of Multi-head Latent Attention.
    pub fn n_embd_k_gqa(&self) -> usize {
        self.kv_latent
            .unwrap_or(self.n_head_kv * self.n_embd_head_k)
    }

    /// Floats of V per token and layer in the cache: `n_head_kv · n_embd_head_v`, or 0
    /// with Multi-head Latent Attention, whose values are part of the cached latent row.
    pub fn n_embd_v_gqa(&self) -> usize {
        match self.kv_latent {
            Some(_) => 0,
            None => self.n_head_kv * self.n_embd_head_v,
        }
    }

    /// The sizes of one cached key and one cached value head: the head sizes, or the
    /// latent row and nothing with Multi-head Latent Attention.
    pub fn kv_head_dims(&self) -> (usize, usize) {
        match self.kv_latent {
            Some(w) => (w, 0),
            None => (self.n_embd_head_k, self.n_embd_head_v),
        }
    }

    /// The RoPE parameters for `n_dims` rotated dimensions at base `freq_base` and
    /// position scale `freq_scale`, with this model's YaRN settings; the magnitude
    /// factor as llama.cpp's `llama_context` derives it (`yarn_attn_factor`: YaRN's
    /// `0.1·ln(factor) + 1` is applied by the rotation itself, so the factor here
    /// cancels it unless DeepSeek's `mscale` / `mscale_all_dim` say otherwise).
    pub fn rope_params(&self, n_dims: usize, freq_base: f32, freq_scale: f32) -> RopeParams {
        let mut p = RopeParams::new(n_dims, self.arch.rope_mode(), freq_base);
        p.freq_scale = freq_scale;
        let mut attn_factor = 1.0;
        if let Some(y) = self.rope_yarn {
            p.ext_factor = 1.0;
            p.n_ctx_orig = y.n_ctx_orig;
            let factor = 1.0 / freq_scale;
            let mscale = |m: f32| {
                if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * m * factor.ln() + 1.0
                }
            };
            attn_factor = if y.log_mul != 0.0 {
                let m = if self.arch == Arch::Deepseek2 && y.log_mul != 1.0 {
                    y.log_mul
                } else {
                    1.0
                };
                mscale(m) / mscale(y.log_mul)
            } else {
                mscale(1.0)
            };
            attn_factor *= 1.0 / (1.0 + 0.1 * factor.ln());
        }
        p.attn_factor = attn_factor * self.rope_attn_factor;
        p
    }

    /// Reads and checks the hyper-parameters of `file`, its architecture named by
    /// `general.architecture`, without touching the weights (what `hearth inspect`
    /// reports; [`crate::Model::load`] checks the tensors against them too).
    pub fn from_file(file: &GgufFile) -> Result<HParams, ModelError> {
        let name = file.metadata().get_str("general.architecture")?;
        let arch =
            Arch::parse(name).ok_or_else(|| ModelError::UnsupportedArchitecture(name.into()))?;
        HParams::read(file, arch)
    }

    /// Reads and checks the shared hyper-parameters of an `arch` file. `n_vocab` comes
    /// from the `token_embd.weight` tensor, which must exist.
    pub(crate) fn read(file: &GgufFile, arch: Arch) -> Result<HParams, ModelError> {
        let k = Keys {
            md: file.metadata(),
            arch: arch.name(),
        };
        let n_embd = k.count("embedding_length", 1, MAX_EMBD)?;
        // Every block has at least one tensor, so a count above the file's tensor count
        // is corrupt; checked before anything is allocated per layer.
        let n_layer_all = k.count("block_count", 1, file.tensors().len() as u64)?;
        // Multi-token-prediction blocks (DeepSeek-V3's `nextn`) come after the trunk; a
        // forward pass does not run them.
        let n_layer_nextn = k
            .opt_count("nextn_predict_layers", 0, n_layer_all as u64 - 1)?
            .unwrap_or(0);
        let n_layer = n_layer_all - n_layer_nextn;
        let n_head = k.count("attention.head_count", 1, MAX_HEADS)?;
        let n_head_kv = k
            .opt_count("attention.head_count_kv", 1, MAX_HEADS)?
            .unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(k.bad(
                "attention.head_count_kv",
                format!("{n_head_kv} KV heads do not divide {n_head} query heads"),
            ));
        }
        let default_head = if n_embd % n_head == 0 {
            Some(n_embd / n_head)
        } else {
            None
        };
        let head_dim = |name: &str| -> Result<usize, ModelError> {
            match k.opt_count(name, 1, MAX_HEAD_DIM)? {
                Some(d) => Ok(d),
                None => default_head.ok_or_else(|| {
                    k.bad(
                        name,
                        format!(
                            "missing, and {n_head} heads do not divide embedding_length {n_embd}"
                        ),
                    )
                }),
            }
        };
        let n_embd_head_k = head_dim("attention.key_length")?;
        let n_embd_head_v = head_dim("attention.value_length")?;
        let n_rot = k
            .opt_count("rope.dimension_count", 1, MAX_HEAD_DIM)?
            .unwrap_or(n_embd_head_k);
        if n_rot % 2 != 0 || n_rot > n_embd_head_k {
            return Err(k.bad(
                "rope.dimension_count",
                format!("{n_rot} is not an even number of at most key_length {n_embd_head_k}"),
            ));
        }
        let kv_latent = match arch {
            Arch::Deepseek2 => Some(k.count("attention.kv_lora_rank", 1, MAX_HEAD_DIM)? + n_rot),
            _ => None,
        };
        // MoE models may have no dense layer, hence no dense width.
        let n_ff = match arch.has_experts() {
            true => k
                .opt_count("feed_forward_length", 1, u64::MAX)?
                .unwrap_or(0),
            false => k.count("feed_forward_length", 1, u64::MAX)?,
        };
        let n_ctx_train = k.count("context_length", 1, MAX_CTX_TRAIN)?;

        let rms_eps = k.float("attention.layer_norm_rms_epsilon")?;
        if !(rms_eps.is_finite() && (0.0..1.0).contains(&rms_eps)) {
            return Err(k.bad(
                "attention.layer_norm_rms_epsilon",
                format!("{rms_eps} is not in [0, 1)"),
            ));
        }
        let rope_freq_base = k.opt_float("rope.freq_base")?.unwrap_or(10000.0);
        let (rope_freq_scale, yarn) = rope_scale(&k)?;
        let rope_yarn = match yarn {
            false => None,
            true => {
                let n_ctx_orig = k
                    .opt_count("rope.scaling.original_context_length", 1, MAX_CTX_TRAIN)?
                    .unwrap_or(n_ctx_train) as u32;
                let mut log_mul = k
                    .opt_float("rope.scaling.yarn_log_multiplier")?
                    .unwrap_or(0.0);
                if !log_mul.is_finite() || log_mul < 0.0 {
                    return Err(k.bad(
                        "rope.scaling.yarn_log_multiplier",
                        format!("{log_mul} is not a non-negative number"),
                    ));
                }
                if arch == Arch::Deepseek2 {
                    // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX] in llama.cpp: the converter
                    // stored 0.1 · mscale_all_dim.
                    log_mul /= 0.1;
                }
                Some(Yarn {
                    n_ctx_orig,
                    log_mul,
                })
            }
        };
        let rope_attn_factor = k.opt_float("rope.scaling.attn_factor")?.unwrap_or(1.0);
        if !(rope_attn_factor.is_finite() && rope_attn_factor > 0.0) {
            return Err(k.bad(
                "rope.scaling.attn_factor",
                format!("{rope_attn_factor} is not a positive number"),
            ));
        }

        let n_expert = k.opt_count("expert_count", 0, MAX_EXPERTS)?.unwrap_or(0);
        let n_expert_used = if n_expert == 0 {
            0
        } else if !arch.has_experts() {
            return Err(ModelError::Unsupported(format!(
                "{} with mixture-of-experts layers ({n_expert} experts)",
                arch.name()
            )));
        } else {
            k.count("expert_used_count", 1, n_expert as u64)?
        };
        if arch.has_experts() && n_expert == 0 {
            return Err(k.bad(
                "expert_count",
                "missing or 0 in a mixture-of-experts model".into(),
            ));
        }

        let n_vocab = match file.tensor_info("token_embd.weight") {
            Some(t) if t.shape().len() >= 2 => usize::try_from(t.shape()[1]).unwrap_or(0),
            Some(t) => {
                return Err(ModelError::TensorShape {
                    tensor: "token_embd.weight".into(),
                    expected: vec![n_embd as u64, 0],
                    actual: t.shape().to_vec(),
                })
            }
            None => return Err(ModelError::MissingTensor("token_embd.weight".into())),
        };

        Ok(HParams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_layer_nextn,
            n_head,
            n_head_kv,
            n_embd_head_k,
            n_embd_head_v,
            n_ff,
            n_rot,
            rms_eps,
            rope_freq_base,
            rope_freq_scale,
            rope_yarn,
            rope_attn_factor,
            n_expert,
            n_expert_used,
            kv_latent,
        })
    }
}

/// The RoPE position scale from `rope.scaling.type` and `rope.scaling.factor` (or the
/// older `rope.scale_linear`), as llama.cpp's `load_hparams` and `llama_context` combine
/// them: the type defaults to linear, `none` disables scaling, and a missing or zero
/// factor means no scaling. The second value says whether the type is YaRN.
fn rope_scale(k: &Keys<'_>) -> Result<(f32, bool), ModelError> {
    let ty = k.md.get_opt::<&str>(&k.key("rope.scaling.type"))?;
    let yarn = match ty.unwrap_or("linear") {
        "none" => return Ok((1.0, false)),
        "linear" => false,
        "yarn" => true,
        "longrope" => {
            return Err(ModelError::Unsupported(format!(
                "rope scaling type '{}' ({})",
                ty.unwrap_or_default(),
                k.key("rope.scaling.type")
            )))
        }
        other => {
            return Err(k.bad(
                "rope.scaling.type",
                format!("unknown scaling type '{other}'"),
            ))
        }
    };
    let (name, factor) = match k.opt_float("rope.scaling.factor")? {
        Some(f) => ("rope.scaling.factor", f),
        None => (
            "rope.scale_linear",
            k.opt_float("rope.scale_linear")?.unwrap_or(0.0),
        ),
    };
    if factor == 0.0 {
        return Ok((1.0, yarn));
    }
    if !(factor.is_finite() && factor > 0.0) {
        return Err(k.bad(name, format!("{factor} is not a positive factor")));
    }
    Ok((1.0 / factor, yarn))
}

/// Typed access to `{arch}.*` keys.
pub(crate) struct Keys<'a> {
    pub(crate) md: &'a Metadata,
    pub(crate) arch: &'a str,
}

impl Keys<'_> {
    /// The full key for `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch)
    }

    /// A consistency error about `{arch}.{name}`.
    pub(crate) fn bad(&self, name: &str, reason: String) -> ModelError {
        ModelError::HParam {
            key: self.key(name),
            reason,
        }
    }

    /// A required count in `min..=max`.
    pub(crate) fn count(&self, name: &str, min: u64, max: u64) -> Result<usize, ModelError> {
        self.opt_count(name, min, max)?.ok_or_else(|| {
            ModelError::Metadata(hearth_gguf::GgufError::MissingKey {
                key: self.key(name),
            })
        })
    }

    /// An optional count in `min..=max`, stored as any non-negative integer type.
    pub(crate) fn opt_count(
        &self,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<usize>, ModelError> {
        let key = self.key(name);
        if !self.md.contains(&key) {
            return Ok(None);
        }
        if let Some(Value::Array(_)) = self.md.get(&key) {
            return Err(ModelError::Unsupported(format!(
                "per-layer values of '{key}'"
            )));
        }
        let v = self.md.get_uint(&key)?;
        if v < min || v > max {
            return Err(self.bad(name, format!("{v} is outside {min}..={max}")));
        }
        usize::try_from(v)
            .map(Some)
            .map_err(|_| self.bad(name, format!("{v} does not fit this machine's usize")))
    }

    /// A required FLOAT32.
    pub(crate) fn float(&self, name: &str) -> Result<f32, ModelError> {
        Ok(self.md.get_f32(&self.key(name))?)
    }

    /// An optional FLOAT32.
    pub(crate) fn opt_float(&self, name: &str) -> Result<Option<f32>, ModelError> {
        Ok(self.md.get_opt::<f32>(&self.key(name))?)
    }
}
