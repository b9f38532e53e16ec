//! Smoke test on the real Gemma 3 270M (Q4_K_M): the forward pass runs and continues
//! two prompts the way llama.cpp does. The statistical comparison with llama.cpp over
//! a long text is the fidelity suite's (`tests/fixtures/fidelity`); this checks that
//! the model loads, that batch and decode paths agree on it, and that the answers are
//! the sensible ones.
//!
//! The file is looked for at `$HEARTH_GEMMA3_270M`, else
//! `~/.cache/hearth/models/gemma-3-270m-q4_k_m.gguf`; without it the test passes with a
//! note (CI downloads it).
//!
//! Expected tokens and logits are llama.cpp's (llama-cpp-python 0.3.36, f32 KV cache,
//! `Llama.tokenize(add_bos=True)`, `eval`, `scores`), e.g. for "Monday, Tuesday,
//! Wednesday," its top three are " Thursday" 26.63, " and" 25.37, " Friday" 22.56.

mod common;

use std::path::PathBuf;

use common::rel_max_err;
use hearth_gguf::GgufFile;
use hearth_kernels::dispatch::Kernels;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Arch, Batch, KvCache, Model, Scratch};

fn model_path() -> Option<PathBuf> {
    let p = match std::env::var_os("HEARTH_GEMMA3_270M") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/hearth/models/gemma-3-270m-q4_k_m.gguf"),
    };
    p.exists().then_some(p)
}

/// `(prompt, its tokens with BOS, llama.cpp's top token, its logit)`.
const PROMPTS: &[(&str, &[u32], u32, f32)] = &[
    (
        "Monday, Tuesday, Wednesday,",
        &[2, 49381, 236764, 9863, 236764, 10119, 236764],
        9853, // " Thursday"
        26.63,
    ),
    (
        "The capital of France is Paris. The capital of Germany is",
        &[
            2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 5279, 529, 9405, 563,
        ],
        15687, // " Berlin"
        23.15,
    ),
];

/// How far the top logit may be from llama.cpp's. With the weights dequantized to F32
/// (a one-off check), Hearth and llama.cpp agree on this model to 0.01 over every
/// position and the whole vocabulary, the difference being llama.cpp's f16 GELU table.
/// With the Q4_K_M weights both quantize activations to 8 bits before each product, and
/// which way a value near a rounding boundary goes differs between the two; 18 layers of
/// Gemma's large activations amplify that to a few tenths (measured: 0.28 and 0.03 on
/// these prompts; each is itself ~0.5 from a float64 reference). A wrong graph is off by
/// whole units or picks another token.
const LOGIT_TOLERANCE: f32 = 1.0;

#[test]
fn gemma3_270m_continues_prompts_like_llama_cpp() {
    let Some(path) = model_path() else {
        eprintln!("gemma-3-270m-q4_k_m.gguf not found: skipped");
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let model = Model::load(&file).unwrap();
    let hp = model.hparams();
    assert_eq!(model.arch(), Arch::Gemma3);
    assert_eq!((hp.n_layer, hp.n_embd, hp.n_vocab), (18, 640, 262144));
    let pool = ThreadPool::new(2).unwrap();

    for &(prompt, tokens, want, want_logit) in PROMPTS {
        // All rows' logits in one batch (what perplexity and the fidelity suite use).
        let mut kv = KvCache::new(hp, 64).unwrap();
        let mut scratch = Scratch::new(&model, 64, tokens.len()).unwrap();
        let seq = kv.new_sequence();
        let mut batch = Batch::new();
        batch.push_seq(tokens, 0, seq, true);
        let all = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .unwrap()
            .to_vec();
        assert_eq!(all.len(), tokens.len() * hp.n_vocab);
        assert!(
            all.iter().all(|v| v.is_finite()),
            "{prompt}: non-finite logits"
        );
        let last = &all[(tokens.len() - 1) * hp.n_vocab..];
        let top = argmax(last);
        eprintln!(
            "{prompt:?} -> {top} ({:.3}); llama.cpp {want} ({want_logit})",
            last[top]
        );
        assert_eq!(top as u32, want, "{prompt}: top token");
        assert!(
            (last[top] - want_logit).abs() <= LOGIT_TOLERANCE,
            "{prompt}: logit {} vs llama.cpp {want_logit}",
            last[top]
        );

        // The same prompt decoded token by token gives the same rows (checked on the
        // shorter prompt only: a debug build spends seconds per 262k-row output).
        if tokens.len() > 8 {
            continue;
        }
        let mut kv = KvCache::new(hp, 64).unwrap();
        let mut scratch = Scratch::new(&model, 1, 1).unwrap();
        let seq = kv.new_sequence();
        let mut decoded = Vec::new();
        for (pos, &t) in tokens.iter().enumerate() {
            batch.clear();
            batch.push(t, pos as u32, seq, true);
            decoded.extend_from_slice(model.forward(&pool, &mut kv, &mut scratch, &batch).unwrap());
        }
        if Kernels::get().gemm().is_none() {
            // The same arithmetic per row: equal to rounding noise.
            let err = rel_max_err(&decoded, &all);
            assert!(err <= 1e-5, "{prompt}: decode vs batch {err:e}");
        } else {
            // The batch went through the GEMM micro-kernel: the same integer products,
            // summed in another f32 order. This model amplifies such reorderings to
            // ~1e-3 KL from the third position on (exactly what the AVX2 level does
            // against the scalar one: 8.6e-4 … 2.6e-3), so the rows must agree as
            // distributions, with the same top token.
            for (r, (d, a)) in decoded
                .chunks(hp.n_vocab)
                .zip(all.chunks(hp.n_vocab))
                .enumerate()
            {
                let kl = kl_div(a, d);
                assert!(kl <= 1e-2, "{prompt}: row {r}: decode vs batch KL {kl:e}");
                assert_eq!(argmax(d), argmax(a), "{prompt}: row {r}: top token");
            }
        }
    }
}

/// KL(p‖q) of the softmaxes of logits `p` and `q`, in f64.
fn kl_div(p: &[f32], q: &[f32]) -> f64 {
    fn log_softmax(x: &[f32]) -> Vec<f64> {
        let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
        x.iter().map(|&v| v as f64 - lse).collect()
    }
    log_softmax(p)
        .iter()
        .zip(log_softmax(q))
        .map(|(lp, lq)| lp.exp() * (lp - lq))
        .sum()
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}
