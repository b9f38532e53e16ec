//! Multi-head Latent Attention's cache holds one latent row per token and layer
//! (`kv_lora_rank + n_rot` values), as llama.cpp's MLA cache does, not per-head keys and
//! values; and long prompts run through it.

mod common;

use common::*;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{tiny, Arch, Batch, HParams, KvCache, KvType, KvTypes, Model, Scratch};

/// DeepSeek-V3/R1's attention (`config.json`: 61 layers, 128 heads, kv_lora_rank 512,
/// qk_rope_head_dim 64, qk_nope 128, v_head 128), as its GGUF states it.
fn v3() -> HParams {
    HParams {
        arch: Arch::Deepseek2,
        n_vocab: 129280,
        n_ctx_train: 163840,
        n_embd: 7168,
        n_layer: 61,
        n_layer_nextn: 1,
        n_head: 128,
        n_head_kv: 1,
        n_embd_head_k: 576,
        n_embd_head_v: 512,
        n_ff: 18432,
        n_rot: 64,
        rms_eps: 1e-6,
        rope_freq_base: 10000.0,
        rope_freq_scale: 1.0 / 40.0,
        rope_yarn: None,
        rope_attn_factor: 1.0,
        n_expert: 256,
        n_expert_used: 8,
        kv_latent: Some(512 + 64),
    }
}

/// 576 values per token and layer: 61 · 576 · 2 = 70 272 bytes per token in f16, the
/// 576-wide K-only cache llama.cpp allocates for MLA (on the V2-Lite shape, whose latent
/// is the same 512 + 64, llama.cpp reports 121.50 MiB for 4096 cells and 27 layers:
/// 31 104 bytes per token, which `hearth inspect` gives too); per-head keys and values
/// would be 128 · (192 + 128) = 40 960 values.
#[test]
fn v3_caches_576_values_per_token_and_layer() {
    let hp = v3();
    assert_eq!((hp.n_embd_k_gqa(), hp.n_embd_v_gqa()), (576, 0));
    assert_eq!(
        KvTypes::both(KvType::F16).bytes_per_token(&hp),
        61 * 576 * 2
    );
    assert_eq!(
        KvTypes::both(KvType::Q8_0).bytes_per_token(&hp),
        61 * 18 * 34
    );
    let kv = KvCache::with_types(&hp, 64, KvTypes::default()).unwrap();
    assert_eq!(kv.size_bytes(), 64 * 61 * 576 * 2);
}

/// A tiny DeepSeek-V3-layout model takes a 4096-token prompt (YaRN far past its original
/// context) in slices of 512, into a cache of exactly that size, with finite logits,
/// and keeps decoding after it.
#[test]
fn a_4096_token_prompt_runs() {
    let file = tiny_file("ds3_q");
    let model = Model::load(&file).unwrap();
    let pool = ThreadPool::new(2).unwrap();
    let n = 4096;
    let tokens: Vec<u32> = (0..n)
        .map(|i| 3 + (i * 7919 % (tiny::N_VOCAB - 3)) as u32)
        .collect();
    let mut kv = KvCache::with_types(model.hparams(), n + 1, KvTypes::default()).unwrap();
    let mut scratch = Scratch::new(&model, 512, 1).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(&tokens, 0, seq, false); // logits of the last token only
    let logits = model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    batch.clear();
    batch.push(5, n as u32, seq, true);
    let logits = model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
    assert_eq!(kv.seq_len(seq), Some(n + 1));
}
