//! Tiny random-weight models of every supported architecture, for tests and fixtures.
//!
//! Each [`TinySpec`] describes a model a few megabytes large (two to six layers, a
//! 272-token vocabulary) whose weights come from a fixed-seed generator and are stored
//! in the tensor types the spec names, quantized with the kernels crate's reference
//! quantizers. [`TinySpec::to_bytes`] is deterministic: the same spec gives the same
//! file, byte for byte, on every machine, which is what lets `tests/fixtures/models`
//! hold reference logits (from a numpy implementation and from llama.cpp) for files that
//! the tests regenerate rather than store. `examples/tiny_models.rs` writes them out.
//!
//! The files carry a small SentencePiece-style vocabulary (`<unk>`, `<s>`, `</s>`, the 256
//! byte tokens, a few words), so llama.cpp and Hearth's tokenizer can load them too.
//!
//! Not a model zoo: the weights are noise, scaled so that activations stay near unit
//! size and attention is neither uniform nor one-hot.

use hearth_gguf::{GgufWriter, TensorType};
use hearth_kernels::quant::quantize_row;

use crate::hparams::Arch;

/// The tensor type of each kind of weight of a tiny model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyTypes {
    pub token_embd: TensorType,
    /// `attn_q` and `attn_k`.
    pub attn_qk: TensorType,
    pub attn_v: TensorType,
    pub attn_output: TensorType,
    /// `ffn_gate` and `ffn_up`.
    pub ffn_gate_up: TensorType,
    pub ffn_down: TensorType,
    /// `output` (ignored when the output is tied to the embedding).
    pub output: TensorType,
    /// DeepSeek's per-head latent matrices (`attn_k_b`, `attn_v_b`, `attn_kv_b`) and
    /// `attn_q_b`, whose rows are too short for k-quants.
    pub attn_mla: TensorType,
    /// `ffn_down_exps` and `ffn_down_shexp`.
    pub ffn_down_exps: TensorType,
}

impl TinyTypes {
    /// Every weight in one type.
    pub const fn all(ty: TensorType) -> TinyTypes {
        TinyTypes {
            token_embd: ty,
            attn_qk: ty,
            attn_v: ty,
            attn_output: ty,
            ffn_gate_up: ty,
            ffn_down: ty,
            output: ty,
            attn_mla: ty,
            ffn_down_exps: ty,
        }
    }
}

/// A tiny model: architecture, sizes, tensor types and the seed of its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    /// File stem and fixture name.
    pub name: &'static str,
    pub arch: Arch,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// `attention.key_length` / `value_length`, written only when set.
    pub head_dim: Option<usize>,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_freq_base: f32,
    /// `rope.scaling.factor` with `rope.scaling.type = linear`, when set.
    pub rope_linear_factor: Option<f32>,
    /// Whether to write Llama 3 style `rope_freqs.weight`.
    pub rope_freqs: bool,
    /// Q/K/V biases (Qwen2).
    pub qkv_bias: bool,
    /// Per-head Q/K norms (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// No `output.weight`: the output is the token embedding.
    pub tied_output: bool,
    /// Gemma 3: `attention.sliding_window`.
    pub sliding_window: Option<u32>,
    /// Gemma 3: `final_logit_softcapping`.
    pub final_logit_softcapping: Option<f32>,
    pub types: TinyTypes,
    pub seed: u64,
    /// `context_length`.
    pub n_ctx_train: usize,
    /// How many of [`test_tokens`] the fixtures hold logits for.
    pub n_tokens: usize,
    /// `rope.dimension_count`, written only when set.
    pub n_rot: Option<usize>,
    /// `rope.scaling.type = yarn` with these settings, when set.
    pub yarn: Option<TinyYarn>,
    /// Mixture-of-experts layers (`deepseek2`, `qwen3moe`).
    pub moe: Option<TinyMoe>,
    /// Multi-head Latent Attention (`deepseek2`).
    pub mla: Option<TinyMla>,
}

/// YaRN settings of a tiny model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TinyYarn {
    /// `rope.scaling.factor`
    pub factor: f32,
    /// `rope.scaling.original_context_length`
    pub n_ctx_orig: u32,
    /// `rope.scaling.yarn_log_multiplier`, written only when set.
    pub log_mul: Option<f32>,
}

/// The experts of a tiny model; each `Option` key is written only when set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TinyMoe {
    pub n_expert: usize,
    pub n_used: usize,
    /// `expert_feed_forward_length`
    pub n_ff_exp: usize,
    /// `expert_shared_count` (written for `deepseek2` only).
    pub n_shared: usize,
    /// `leading_dense_block_count` (written for `deepseek2` only).
    pub n_dense_lead: usize,
    /// `expert_gating_func` (1 softmax, 2 sigmoid).
    pub gating: Option<u32>,
    /// `expert_group_count`, `expert_group_used_count`.
    pub groups: Option<(usize, usize)>,
    /// `expert_weights_norm`
    pub norm: Option<bool>,
    /// `expert_weights_scale`
    pub scale: Option<f32>,
    /// `exp_probs_b.bias`: DeepSeek-V3's selection bias.
    pub probs_bias: bool,
    /// One `ffn_gate_up_exps` instead of `ffn_gate_exps` and `ffn_up_exps`.
    pub fused_gate_up: bool,
}

/// The latent attention of a tiny `deepseek2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyMla {
    /// `attention.q_lora_rank`; 0 for V2-Lite's single `attn_q`.
    pub q_lora: usize,
    pub kv_lora: usize,
    pub qk_nope: usize,
    pub v_mla: usize,
    /// Split `attn_k_b` / `attn_v_b` (with the `*_length_mla` keys) rather than the
    /// legacy combined `attn_kv_b`.
    pub split: bool,
}

/// Vocabulary size of every tiny model: 3 specials, 256 bytes, 13 words.
pub const N_VOCAB: usize = 272;
/// `context_length` of every tiny model.
pub const N_CTX_TRAIN: usize = 128;

/// Test input: `n` tokens spread over the vocabulary (the fixtures' logits are for the
/// first [`TinySpec::n_tokens`] of these at positions 0.. of one sequence; a shorter
/// list is a prefix of a longer one).
pub fn test_tokens(n: usize) -> Vec<u32> {
    let mut rng = Rng(0x5eed_70c5);
    let mut t = vec![1]; // <s>
    t.extend((1..n).map(|_| 3 + (rng.next_u64() % (N_VOCAB as u64 - 3)) as u32));
    t
}

/// The tiny models the fixtures cover: each architecture in full precision and in
/// quantized formats (every k-quant and legacy format the kernels implement, F16 and
/// BF16), tied and untied outputs, biases, Q/K norms, grouped- and multi-query
/// attention, Llama 3 RoPE factors, linear RoPE scaling, sliding windows and
/// soft-capping.
pub fn specs() -> Vec<TinySpec> {
    use TensorType::*;
    let base = TinySpec {
        name: "",
        arch: Arch::Llama,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        head_dim: None,
        n_ff: 512,
        rms_eps: 1e-5,
        rope_freq_base: 10000.0,
        rope_linear_factor: None,
        rope_freqs: false,
        qkv_bias: false,
        qk_norm: false,
        tied_output: false,
        sliding_window: None,
        final_logit_softcapping: None,
        types: TinyTypes::all(F32),
        seed: 1,
        n_ctx_train: N_CTX_TRAIN,
        n_tokens: 20,
        n_rot: None,
        yarn: None,
        moe: None,
        mla: None,
    };
    let qwen2 = TinySpec {
        arch: Arch::Qwen2,
        qkv_bias: true,
        rms_eps: 1e-6,
        rope_freq_base: 1_000_000.0,
        ..base.clone()
    };
    let qwen3 = TinySpec {
        arch: Arch::Qwen3,
        qk_norm: true,
        head_dim: Some(128),
        rms_eps: 1e-6,
        rope_freq_base: 1_000_000.0,
        ..base.clone()
    };
    let gemma3 = TinySpec {
        arch: Arch::Gemma3,
        n_layer: 6,
        n_head_kv: 1,
        head_dim: Some(128),
        qk_norm: true,
        tied_output: true,
        rms_eps: 1e-6,
        rope_freq_base: 1_000_000.0,
        sliding_window: Some(4),
        ..base.clone()
    };
    let mut specs = vec![
        TinySpec {
            name: "llama_f32",
            seed: 11,
            ..base.clone()
        },
        TinySpec {
            name: "llama_q4_k",
            rope_freqs: true,
            rope_linear_factor: Some(2.0),
            types: TinyTypes {
                token_embd: Q4_K,
                attn_qk: Q4_K,
                attn_v: Q6_K,
                attn_output: Q4_K,
                ffn_gate_up: Q4_K,
                ffn_down: Q6_K,
                output: Q6_K,
                ..TinyTypes::all(F32)
            },
            seed: 12,
            ..base.clone()
        },
        TinySpec {
            name: "qwen2_f16",
            tied_output: true,
            types: TinyTypes {
                attn_output: BF16,
                ffn_down: BF16,
                ..TinyTypes::all(F16)
            },
            seed: 21,
            ..qwen2.clone()
        },
        TinySpec {
            name: "qwen2_q8_0",
            n_head_kv: 1,
            types: TinyTypes::all(Q8_0),
            seed: 22,
            ..qwen2.clone()
        },
        TinySpec {
            name: "qwen3_f32",
            seed: 31,
            ..qwen3.clone()
        },
        TinySpec {
            name: "qwen3_mixed",
            types: TinyTypes {
                token_embd: Q3_K,
                attn_qk: Q5_K,
                attn_v: Q4_0,
                attn_output: IQ4_NL,
                ffn_gate_up: Q4_1,
                ffn_down: Q5_1,
                output: IQ4_XS,
                ..TinyTypes::all(F32)
            },
            seed: 32,
            ..qwen3.clone()
        },
        TinySpec {
            name: "gemma3_f32",
            seed: 41,
            ..gemma3.clone()
        },
        TinySpec {
            name: "gemma3_q",
            // The mix of the published gemma-3-270m Q4_K_M file.
            types: TinyTypes {
                token_embd: Q8_0,
                attn_qk: Q5_0,
                attn_v: Q8_0,
                attn_output: Q4_K,
                ffn_gate_up: Q5_0,
                ffn_down: Q6_K,
                output: Q8_0,
                ..TinyTypes::all(F32)
            },
            seed: 42,
            ..gemma3.clone()
        },
        TinySpec {
            name: "gemma3_softcap",
            n_layer: 2,
            sliding_window: None,
            final_logit_softcapping: Some(3.0),
            tied_output: false,
            seed: 43,
            ..gemma3
        },
    ];
    // YaRN on an architecture other than DeepSeek's (Qwen2.5's long-context files):
    // positions past `original_context_length` within 64 tokens.
    specs.push(TinySpec {
        name: "qwen2_yarn",
        yarn: Some(TinyYarn {
            factor: 4.0,
            n_ctx_orig: 16,
            log_mul: None,
        }),
        n_tokens: 64,
        seed: 23,
        ..qwen2.clone()
    });
    specs.extend(moe_specs(&base));
    specs
}

/// The tiny mixture-of-experts models: DeepSeek's V3/R1 layout, its V2-Lite layout, a
/// legacy `attn_kv_b` file and Qwen3-MoE, each in F32 and in a quantized mix; 256 test
/// tokens each, so that YaRN's scaling and the latent cache see long positions.
fn moe_specs(base: &TinySpec) -> Vec<TinySpec> {
    use TensorType::*;
    let ds3 = TinySpec {
        arch: Arch::Deepseek2,
        n_layer: 3,
        n_head_kv: 1,
        rms_eps: 1e-6,
        n_ctx_train: 512,
        n_tokens: 256,
        n_rot: Some(32),
        yarn: Some(TinyYarn {
            factor: 4.0,
            n_ctx_orig: 64,
            log_mul: Some(0.1),
        }),
        moe: Some(TinyMoe {
            n_expert: 8,
            n_used: 3,
            n_ff_exp: 160,
            n_shared: 1,
            n_dense_lead: 1,
            gating: Some(2),
            groups: Some((4, 2)),
            norm: Some(true),
            scale: Some(2.5),
            probs_bias: true,
            fused_gate_up: false,
        }),
        mla: Some(TinyMla {
            q_lora: 128,
            kv_lora: 128,
            qk_nope: 64,
            v_mla: 64,
            split: true,
        }),
        ..base.clone()
    };
    let ds2lite = TinySpec {
        yarn: Some(TinyYarn {
            factor: 4.0,
            n_ctx_orig: 64,
            log_mul: Some(0.0707),
        }),
        moe: Some(TinyMoe {
            n_shared: 2,
            gating: None,
            groups: None,
            norm: Some(false),
            scale: Some(1.0),
            probs_bias: false,
            fused_gate_up: true,
            ..ds3.moe.unwrap()
        }),
        mla: Some(TinyMla {
            q_lora: 0,
            ..ds3.mla.unwrap()
        }),
        ..ds3.clone()
    };
    let ds2legacy = TinySpec {
        n_head_kv: 4,
        yarn: None,
        moe: Some(TinyMoe {
            fused_gate_up: false,
            ..ds2lite.moe.unwrap()
        }),
        mla: Some(TinyMla {
            split: false,
            ..ds2lite.mla.unwrap()
        }),
        ..ds2lite.clone()
    };
    let qwen3moe = TinySpec {
        arch: Arch::Qwen3Moe,
        qk_norm: true,
        head_dim: Some(64),
        rms_eps: 1e-6,
        rope_freq_base: 1_000_000.0,
        n_ctx_train: 512,
        n_tokens: 256,
        moe: Some(TinyMoe {
            n_expert: 8,
            n_used: 2,
            n_ff_exp: 256,
            n_shared: 0,
            n_dense_lead: 0,
            gating: None,
            groups: None,
            norm: None,
            scale: None,
            probs_bias: false,
            fused_gate_up: false,
        }),
        ..base.clone()
    };
    // Rows of 256 (the model width) take k-quants; DeepSeek's shorter rows (the latent
    // matrices, 64 to 160 wide, and the experts' 160-wide down rows) take 32-blocks, as
    // llama.cpp's Q4_K_M falls back for them.
    let ds_q = |down_exps, attn_mla| TinyTypes {
        token_embd: Q4_K,
        attn_qk: Q4_K,
        attn_v: Q4_K,
        attn_output: Q4_K,
        ffn_gate_up: Q4_K,
        ffn_down: Q6_K,
        output: Q6_K,
        attn_mla,
        ffn_down_exps: down_exps,
    };
    vec![
        TinySpec {
            name: "ds3_f32",
            seed: 51,
            ..ds3.clone()
        },
        TinySpec {
            name: "ds3_q",
            types: ds_q(Q8_0, Q8_0),
            seed: 52,
            ..ds3
        },
        TinySpec {
            name: "ds2lite_f32",
            seed: 53,
            ..ds2lite.clone()
        },
        TinySpec {
            name: "ds2lite_q",
            types: ds_q(Q5_0, Q8_0),
            seed: 54,
            ..ds2lite
        },
        TinySpec {
            name: "ds2legacy_f32",
            seed: 55,
            ..ds2legacy.clone()
        },
        TinySpec {
            name: "ds2legacy_q",
            types: ds_q(Q8_0, Q4_0),
            seed: 56,
            ..ds2legacy
        },
        TinySpec {
            name: "qwen3moe_f32",
            seed: 61,
            ..qwen3moe.clone()
        },
        TinySpec {
            name: "qwen3moe_q",
            types: TinyTypes {
                token_embd: Q4_K,
                attn_qk: Q4_K,
                attn_v: Q6_K,
                attn_output: Q4_K,
                ffn_gate_up: Q4_K,
                ffn_down: Q6_K,
                output: Q6_K,
                attn_mla: Q8_0,
                ffn_down_exps: Q6_K,
            },
            seed: 62,
            ..qwen3moe
        },
    ]
}

impl TinySpec {
    /// The model as a GGUF writer (metadata, vocabulary and tensors).
    pub fn to_gguf(&self) -> GgufWriter {
        let mut w = GgufWriter::new();
        let mut rng = Rng(self.seed);
        let arch = self.arch.name();
        let key = |k: &str| format!("{arch}.{k}");
        w.set("general.architecture", arch);
        w.set("general.name", format!("hearth tiny {}", self.name));
        w.set(key("context_length"), self.n_ctx_train as u32);
        w.set(key("embedding_length"), self.n_embd as u32);
        w.set(key("block_count"), self.n_layer as u32);
        w.set(key("feed_forward_length"), self.n_ff as u32);
        w.set(key("attention.head_count"), self.n_head as u32);
        w.set(key("attention.head_count_kv"), self.n_head_kv as u32);
        if let Some(d) = self.head_dim {
            w.set(key("attention.key_length"), d as u32);
            w.set(key("attention.value_length"), d as u32);
        }
        w.set(key("attention.layer_norm_rms_epsilon"), self.rms_eps);
        w.set(key("rope.freq_base"), self.rope_freq_base);
        if let Some(f) = self.rope_linear_factor {
            w.set(key("rope.scaling.type"), "linear");
            w.set(key("rope.scaling.factor"), f);
        }
        if let Some(n) = self.n_rot {
            w.set(key("rope.dimension_count"), n as u32);
        }
        if let Some(y) = self.yarn {
            w.set(key("rope.scaling.type"), "yarn");
            w.set(key("rope.scaling.factor"), y.factor);
            w.set(key("rope.scaling.original_context_length"), y.n_ctx_orig);
            if let Some(m) = y.log_mul {
                w.set(key("rope.scaling.yarn_log_multiplier"), m);
            }
        }
        if let Some(m) = self.moe {
            self.set_moe_keys(&mut w, m);
        }
        if let Some(m) = self.mla {
            self.set_mla_keys(&mut w, m);
        }
        if let Some(n) = self.sliding_window {
            w.set(key("attention.sliding_window"), n);
        }
        if let Some(c) = self.final_logit_softcapping {
            w.set(key("final_logit_softcapping"), c);
        }
        set_vocab(&mut w);

        let (n_embd, n_ff) = (self.n_embd, self.n_ff);
        let hd = self.head_dim.unwrap_or(n_embd / self.n_head);
        let (n_q, n_kv) = (self.n_head * hd, self.n_head_kv * hd);
        let t = self.types;
        let add = add_tensor;
        let embd = (0..n_embd * N_VOCAB).map(|_| rng.uniform(1.0)).collect();
        add(
            &mut w,
            "token_embd.weight",
            t.token_embd,
            embd,
            &[n_embd, N_VOCAB],
        );
        let v = norm(&mut rng, n_embd);
        add(&mut w, "output_norm.weight", TensorType::F32, v, &[n_embd]);
        if !self.tied_output {
            let v = matrix(&mut rng, n_embd, N_VOCAB);
            add(&mut w, "output.weight", t.output, v, &[n_embd, N_VOCAB]);
        }
        if self.rope_freqs {
            // Llama 3.1's factors grow from 1 (high frequencies) to 8 (low ones).
            let n = hd / 2;
            let v = (0..n)
                .map(|i| 1.0 + 7.0 * i as f32 / (n - 1) as f32)
                .collect();
            add(&mut w, "rope_freqs.weight", TensorType::F32, v, &[n]);
        }
        let gemma = self.arch == Arch::Gemma3;
        for il in 0..self.n_layer {
            if let (Some(mla), Some(moe)) = (self.mla, self.moe) {
                self.deepseek2_layer(&mut w, &mut rng, il, mla, moe);
                continue;
            }
            let p = |name: &str| format!("blk.{il}.{name}");
            let f32t = TensorType::F32;
            let v = norm(&mut rng, n_embd);
            add(&mut w, &p("attn_norm.weight"), f32t, v, &[n_embd]);
            for (name, ty, n_out) in [
                ("attn_q", t.attn_qk, n_q),
                ("attn_k", t.attn_qk, n_kv),
                ("attn_v", t.attn_v, n_kv),
            ] {
                let v = matrix(&mut rng, n_embd, n_out);
                add(
                    &mut w,
                    &p(&format!("{name}.weight")),
                    ty,
                    v,
                    &[n_embd, n_out],
                );
                if self.qkv_bias {
                    let v = (0..n_out).map(|_| rng.uniform(0.5)).collect();
                    add(&mut w, &p(&format!("{name}.bias")), f32t, v, &[n_out]);
                }
            }
            if self.qk_norm {
                let v = norm(&mut rng, hd);
                add(&mut w, &p("attn_q_norm.weight"), f32t, v, &[hd]);
                let v = norm(&mut rng, hd);
                add(&mut w, &p("attn_k_norm.weight"), f32t, v, &[hd]);
            }
            let v = matrix(&mut rng, n_q, n_embd);
            add(
                &mut w,
                &p("attn_output.weight"),
                t.attn_output,
                v,
                &[n_q, n_embd],
            );
            if gemma {
                let v = norm(&mut rng, n_embd);
                add(&mut w, &p("post_attention_norm.weight"), f32t, v, &[n_embd]);
            }
            let v = norm(&mut rng, n_embd);
            add(&mut w, &p("ffn_norm.weight"), f32t, v, &[n_embd]);
            if let Some(moe) = self.moe {
                self.moe_ffn(&mut w, &mut rng, il, moe);
                continue;
            }
            let v = matrix(&mut rng, n_embd, n_ff);
            add(
                &mut w,
                &p("ffn_gate.weight"),
                t.ffn_gate_up,
                v,
                &[n_embd, n_ff],
            );
            let v = matrix(&mut rng, n_embd, n_ff);
            add(
                &mut w,
                &p("ffn_up.weight"),
                t.ffn_gate_up,
                v,
                &[n_embd, n_ff],
            );
            let v = matrix(&mut rng, n_ff, n_embd);
            add(
                &mut w,
                &p("ffn_down.weight"),
                t.ffn_down,
                v,
                &[n_ff, n_embd],
            );
            if gemma {
                let v = norm(&mut rng, n_embd);
                add(&mut w, &p("post_ffw_norm.weight"), f32t, v, &[n_embd]);
            }
        }
        w
    }

    /// The `expert_*` keys (and DeepSeek's `leading_dense_block_count`).
    fn set_moe_keys(&self, w: &mut GgufWriter, m: TinyMoe) {
        let key = |k: &str| format!("{}.{k}", self.arch.name());
        w.set(key("expert_count"), m.n_expert as u32);
        w.set(key("expert_used_count"), m.n_used as u32);
        w.set(key("expert_feed_forward_length"), m.n_ff_exp as u32);
        if self.arch == Arch::Deepseek2 {
            w.set(key("expert_shared_count"), m.n_shared as u32);
            w.set(key("leading_dense_block_count"), m.n_dense_lead as u32);
        }
        if let Some(g) = m.gating {
            w.set(key("expert_gating_func"), g);
        }
        if let Some((n, used)) = m.groups {
            w.set(key("expert_group_count"), n as u32);
            w.set(key("expert_group_used_count"), used as u32);
        }
        if let Some(b) = m.norm {
            w.set(key("expert_weights_norm"), b);
        }
        if let Some(s) = m.scale {
            w.set(key("expert_weights_scale"), s);
        }
    }

    /// DeepSeek's attention keys: the latent ranks, and the head sizes as llama.cpp's
    /// converter writes them (the latent row as `key_length`/`value_length` with the
    /// per-head sizes as `*_mla` for split files; the per-head sizes for legacy ones).
    fn set_mla_keys(&self, w: &mut GgufWriter, m: TinyMla) {
        let key = |k: &str| format!("{}.{k}", self.arch.name());
        let n_rot = self.n_rot.expect("deepseek2 tiny specs set n_rot");
        // llama.cpp requires the key unless the file has V2-Lite's 26 or 27 layers.
        w.set(key("attention.q_lora_rank"), m.q_lora as u32);
        w.set(key("attention.kv_lora_rank"), m.kv_lora as u32);
        let (k_len, v_len) = match m.split {
            true => {
                w.set(key("attention.key_length_mla"), (m.qk_nope + n_rot) as u32);
                w.set(key("attention.value_length_mla"), m.v_mla as u32);
                (m.kv_lora + n_rot, m.kv_lora)
            }
            false => (m.qk_nope + n_rot, m.v_mla),
        };
        w.set(key("attention.key_length"), k_len as u32);
        w.set(key("attention.value_length"), v_len as u32);
    }

    /// One `deepseek2` block: latent attention, then a dense or expert feed-forward.
    fn deepseek2_layer(
        &self,
        w: &mut GgufWriter,
        rng: &mut Rng,
        il: usize,
        m: TinyMla,
        moe: TinyMoe,
    ) {
        let p = |name: &str| format!("blk.{il}.{name}.weight");
        let (n_embd, n_head, t) = (self.n_embd, self.n_head, self.types);
        let n_rot = self.n_rot.expect("deepseek2 tiny specs set n_rot");
        let k_mla = m.qk_nope + n_rot;
        let f32t = TensorType::F32;
        add_tensor(w, &p("attn_norm"), f32t, norm(rng, n_embd), &[n_embd]);
        if m.q_lora > 0 {
            let v = matrix(rng, n_embd, m.q_lora);
            add_tensor(w, &p("attn_q_a"), t.attn_qk, v, &[n_embd, m.q_lora]);
            add_tensor(
                w,
                &p("attn_q_a_norm"),
                f32t,
                norm(rng, m.q_lora),
                &[m.q_lora],
            );
            let v = matrix(rng, m.q_lora, n_head * k_mla);
            add_tensor(
                w,
                &p("attn_q_b"),
                t.attn_mla,
                v,
                &[m.q_lora, n_head * k_mla],
            );
        } else {
            let v = matrix(rng, n_embd, n_head * k_mla);
            add_tensor(w, &p("attn_q"), t.attn_qk, v, &[n_embd, n_head * k_mla]);
        }
        let v = matrix(rng, n_embd, m.kv_lora + n_rot);
        add_tensor(
            w,
            &p("attn_kv_a_mqa"),
            t.attn_qk,
            v,
            &[n_embd, m.kv_lora + n_rot],
        );
        add_tensor(
            w,
            &p("attn_kv_a_norm"),
            f32t,
            norm(rng, m.kv_lora),
            &[m.kv_lora],
        );
        if m.split {
            let v = matrix(rng, m.qk_nope, m.kv_lora * n_head);
            add_tensor(
                w,
                &p("attn_k_b"),
                t.attn_mla,
                v,
                &[m.qk_nope, m.kv_lora, n_head],
            );
            let v = matrix(rng, m.kv_lora, m.v_mla * n_head);
            add_tensor(
                w,
                &p("attn_v_b"),
                t.attn_mla,
                v,
                &[m.kv_lora, m.v_mla, n_head],
            );
        } else {
            let n_out = n_head * (m.qk_nope + m.v_mla);
            let v = matrix(rng, m.kv_lora, n_out);
            add_tensor(w, &p("attn_kv_b"), t.attn_mla, v, &[m.kv_lora, n_out]);
        }
        let v = matrix(rng, n_head * m.v_mla, n_embd);
        add_tensor(
            w,
            &p("attn_output"),
            t.attn_output,
            v,
            &[n_head * m.v_mla, n_embd],
        );
        add_tensor(w, &p("ffn_norm"), f32t, norm(rng, n_embd), &[n_embd]);
        if il < moe.n_dense_lead {
            let n_ff = self.n_ff;
            let v = matrix(rng, n_embd, n_ff);
            add_tensor(w, &p("ffn_gate"), t.ffn_gate_up, v, &[n_embd, n_ff]);
            let v = matrix(rng, n_embd, n_ff);
            add_tensor(w, &p("ffn_up"), t.ffn_gate_up, v, &[n_embd, n_ff]);
            let v = matrix(rng, n_ff, n_embd);
            add_tensor(w, &p("ffn_down"), t.ffn_down, v, &[n_ff, n_embd]);
        } else {
            self.moe_ffn(w, rng, il, moe);
        }
    }

    /// One block's router, routed experts and shared experts.
    fn moe_ffn(&self, w: &mut GgufWriter, rng: &mut Rng, il: usize, m: TinyMoe) {
        let p = |name: &str| format!("blk.{il}.{name}");
        let (n_embd, n_exp, n_ff, t) = (self.n_embd, m.n_expert, m.n_ff_exp, self.types);
        // Routers stay F32 in llama.cpp's quantized files.
        let v = matrix(rng, n_embd, n_exp);
        add_tensor(
            w,
            &p("ffn_gate_inp.weight"),
            TensorType::F32,
            v,
            &[n_embd, n_exp],
        );
        if m.probs_bias {
            let v = (0..n_exp).map(|_| rng.uniform(0.2)).collect();
            add_tensor(w, &p("exp_probs_b.bias"), TensorType::F32, v, &[n_exp]);
        }
        if m.fused_gate_up {
            let v = matrix(rng, n_embd, 2 * n_ff * n_exp);
            let shape = [n_embd, 2 * n_ff, n_exp];
            add_tensor(w, &p("ffn_gate_up_exps.weight"), t.ffn_gate_up, v, &shape);
        } else {
            for name in ["ffn_gate_exps.weight", "ffn_up_exps.weight"] {
                let v = matrix(rng, n_embd, n_ff * n_exp);
                add_tensor(w, &p(name), t.ffn_gate_up, v, &[n_embd, n_ff, n_exp]);
            }
        }
        let v = matrix(rng, n_ff, n_embd * n_exp);
        add_tensor(
            w,
            &p("ffn_down_exps.weight"),
            t.ffn_down_exps,
            v,
            &[n_ff, n_embd, n_exp],
        );
        if m.n_shared > 0 {
            let n_sh = n_ff * m.n_shared;
            for name in ["ffn_gate_shexp.weight", "ffn_up_shexp.weight"] {
                let v = matrix(rng, n_embd, n_sh);
                add_tensor(w, &p(name), t.ffn_gate_up, v, &[n_embd, n_sh]);
            }
            let v = matrix(rng, n_sh, n_embd);
            add_tensor(
                w,
                &p("ffn_down_shexp.weight"),
                t.ffn_down_exps,
                v,
                &[n_sh, n_embd],
            );
        }
    }

    /// The model as GGUF file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_gguf().to_bytes()
    }
}

/// Adds tensor `name` of GGUF shape `shape` (`ne[0]` first) holding `values`, quantized
/// row by row to `ty` with the kernels crate's reference quantizers.
fn add_tensor(w: &mut GgufWriter, name: &str, ty: TensorType, values: Vec<f32>, shape: &[usize]) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let row = shape[0] as usize;
    let row_bytes = ty.row_bytes(row as u64).expect("tiny dims fit the type") as usize;
    let mut data = vec![0u8; values.len() / row * row_bytes];
    for (x, out) in values
        .chunks_exact(row)
        .zip(data.chunks_exact_mut(row_bytes))
    {
        quantize_row(ty, x, out).expect("tiny types have quantizers");
    }
    w.add_tensor(name, ty, &shape, data)
        .expect("tiny tensors are well formed");
}

/// Uniform in [-a, a] with a = sqrt(3 / n_in): unit-variance outputs for unit-variance
/// inputs.
fn matrix(rng: &mut Rng, n_in: usize, n_out: usize) -> Vec<f32> {
    let a = (3.0 / n_in as f32).sqrt();
    (0..n_in * n_out).map(|_| rng.uniform(a)).collect()
}

/// Norm weights near 1.
fn norm(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| 1.0 + rng.uniform(0.25)).collect()
}

/// A SentencePiece (`llama`) vocabulary of [`N_VOCAB`] tokens.
fn set_vocab(w: &mut GgufWriter) {
    let words = [
        "a", "b", "c", "the", "of", "and", "to", "in", "is", "it", "on", "at", "hearth",
    ];
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for word in words {
        tokens.push(format!("\u{2581}{word}"));
        types.push(1);
    }
    debug_assert_eq!(tokens.len(), N_VOCAB);
    let scores: Vec<f32> = (0..N_VOCAB)
        .map(|i| if types[i] == 1 { -(i as f32) } else { 0.0 })
        .collect();
    w.set("tokenizer.ggml.model", "llama");
    w.set("tokenizer.ggml.tokens", tokens);
    w.set("tokenizer.ggml.scores", scores);
    w.set("tokenizer.ggml.token_type", types);
    w.set("tokenizer.ggml.unknown_token_id", 0u32);
    w.set("tokenizer.ggml.bos_token_id", 1u32);
    w.set("tokenizer.ggml.eos_token_id", 2u32);
}

/// 64-bit FNV-1a of `bytes`: the fixtures name the exact file they were computed for.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// SplitMix64: a tiny, portable, seedable generator (the weights must not depend on a
/// crate's version).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-a, a)`.
    fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
        (2.0 * u - 1.0) * a
    }
}
