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
}

/// Vocabulary size of every tiny model: 3 specials, 256 bytes, 13 words.
pub const N_VOCAB: usize = 272;
/// `context_length` of every tiny model.
pub const N_CTX_TRAIN: usize = 128;

/// Test input: 20 tokens spread over the vocabulary (the fixtures' logits are for these
/// at positions 0..20 of one sequence).
pub fn test_tokens() -> Vec<u32> {
    let mut rng = Rng(0x5eed_70c5);
    let mut t = vec![1]; // <s>
    t.extend((0..19).map(|_| 3 + (rng.next_u64() % (N_VOCAB as u64 - 3)) as u32));
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
    vec![
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
        w.set(key("context_length"), N_CTX_TRAIN as u32);
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
        let add =
            |w: &mut GgufWriter, name: &str, ty: TensorType, values: Vec<f32>, shape: &[usize]| {
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
            };
        // Uniform in [-a, a] with a = sqrt(3 / n_in): unit-variance outputs for
        // unit-variance inputs.
        let matrix = |rng: &mut Rng, n_in: usize, n_out: usize| {
            let a = (3.0 / n_in as f32).sqrt();
            (0..n_in * n_out)
                .map(|_| rng.uniform(a))
                .collect::<Vec<f32>>()
        };
        let norm = |rng: &mut Rng, n: usize| (0..n).map(|_| 1.0 + rng.uniform(0.25)).collect();

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

    /// The model as GGUF file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_gguf().to_bytes()
    }
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
