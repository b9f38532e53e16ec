//! `hearth run` as a user runs it: the real binary, on a tiny random-weight model (built
//! by `hearth_models::tiny`, checked against a plain token-by-token loop written here) and
//! on the default model, gemma-3-270m Q4_K_M, against llama.cpp's output
//! (`run_reference.json`, made by `run_reference.py` with llama-cpp-python).
//!
//! Every refused input must give a non-zero exit, a one-line `hearth: ...` message and
//! no panic.

mod common;

use std::path::Path;

use common::{gemma, hearth, refused, scratch_file, stderr, stdout, tiny_model};

use hearth_gguf::{GgufFile, GgufWriter};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{tiny, Batch, KvCache, Model, Scratch};
use hearth_tokenizer::Tokenizer;

fn reference() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run_reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Greedy generation written the plain way: the prompt one token per forward call, an
/// argmax (lowest id on a tie) per step, every token's piece appended, invalid UTF-8
/// replaced at the end.
fn reference_greedy(model_path: &Path, prompt: &str, n: usize) -> String {
    let file = GgufFile::open(model_path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::load(&file).unwrap();
    let pool = ThreadPool::new(1).unwrap();
    let mut kv = KvCache::new(model.hparams(), 128).unwrap();
    let mut scratch = Scratch::new(&model, 1, 1).unwrap();
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    let tokens = tok.encode(prompt, true, true).unwrap();
    let mut logits = Vec::new();
    let mut pos = 0;
    for &t in &tokens {
        batch.clear();
        batch.push(t, pos, seq, true);
        pos += 1;
        logits = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .unwrap()
            .to_vec();
    }
    let mut bytes = Vec::new();
    for _ in 0..n {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        let id = best as u32;
        if tok.is_eog(id) {
            break;
        }
        bytes.extend_from_slice(tok.token_to_piece(id, false).unwrap());
        batch.clear();
        batch.push(id, pos, seq, true);
        pos += 1;
        logits = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .unwrap()
            .to_vec();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `prompt: N tokens in X ms, Y tok/s` from stderr: (N, Y).
fn rate(err: &str, what: &str) -> (usize, f64) {
    let line = err
        .lines()
        .find(|l| l.starts_with(&format!("hearth: {what}: ")))
        .unwrap_or_else(|| panic!("no {what} line in stderr:\n{err}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = words[2].parse().unwrap();
    let tps = words[words.len() - 2].parse().unwrap();
    (n, tps)
}

#[test]
fn tiny_greedy_matches_a_plain_loop() {
    let model = tiny_model("run_tiny_llama_f32.gguf");
    let m = model.to_str().unwrap();
    // A prompt longer than one word, with text the vocabulary spells in bytes.
    let prompt = "the hearth is on a b, ü";
    let out = hearth(&["run", m, "-p", prompt, "-n", "24", "--temp", "0", "-t", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text, reference_greedy(&model, prompt, 24));
    let err = stderr(&out);
    let file = GgufFile::open(&model).unwrap();
    let n_tokens = Tokenizer::from_gguf(&file)
        .unwrap()
        .encode(prompt, true, true)
        .unwrap()
        .len();
    assert!(n_tokens > 20);
    assert_eq!(rate(&err, "prompt").0, n_tokens, "{err}");
    let (n_gen, _) = rate(&err, "generation");
    assert!(n_gen <= 24);
    // The same text whatever the thread count and however the prompt is batched
    // (7 tokens per call: the prompt takes several calls, the last one partial).
    let again = hearth(&[
        "run", m, "-p", prompt, "-n", "24", "--temp", "0", "-t", "1", "-b", "7",
    ]);
    assert_eq!(stdout(&again), text);
}

#[test]
fn seeded_sampling_reproduces() {
    let model = tiny_model("run_tiny_llama_f32.gguf");
    let m = model.to_str().unwrap();
    let run = |seed: &str| {
        let out = hearth(&[
            "run",
            m,
            "-p",
            "the",
            "-n",
            "32",
            "--temp",
            "1.5",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
            "--seed",
            seed,
            "--repeat-penalty",
            "1.1",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("seed {seed};")));
        stdout(&out)
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert_ne!(a, run("8"));
}

#[test]
fn zero_tokens_prints_nothing() {
    let model = tiny_model("run_tiny_llama_f32.gguf");
    let out = hearth(&["run", model.to_str().unwrap(), "-p", "the", "-n", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"");
}

#[test]
fn refused_inputs_are_messages_not_panics() {
    let model = tiny_model("run_tiny_llama_f32.gguf");
    let m = model.to_str().unwrap();
    refused(
        &["run", "/nonexistent/model.gguf", "-p", "x"],
        "no such file",
    );
    let junk = scratch_file("run_junk.gguf", b"this is not a gguf file at all");
    refused(
        &["run", junk.to_str().unwrap(), "-p", "x"],
        "not a readable GGUF file",
    );
    // A valid GGUF with a vocabulary but no weights.
    let mut w = GgufWriter::new();
    let full = GgufFile::from_bytes(tiny::specs()[0].to_bytes()).unwrap();
    for (k, v) in full.metadata().iter() {
        w.set(k, v.clone());
    }
    let no_weights = scratch_file("run_no_weights.gguf", &w.to_bytes());
    refused(
        &["run", no_weights.to_str().unwrap(), "-p", "x"],
        "cannot load the model",
    );
    let long = "the hearth is on a b ".repeat(10);
    refused(
        &["run", m, "-p", &long, "-c", "16"],
        "does not fit a context of 16",
    );
    refused(&["run", m, "-p", "x", "--temp", "-1"], "temperature");
    refused(&["run", m, "-p", "x", "--top-p", "0"], "top_p");
    refused(&["run", m, "-p", "x", "--min-p", "2"], "min_p");
    refused(
        &["run", m, "-p", "x", "--repeat-penalty", "0"],
        "repeat_penalty",
    );
    refused(&["run", m, "-p", "x", "-t", "0"], "-t must be at least 1");
    refused(&["run", m, "-p", "x", "-c", "0"], "-c must be at least 1");
    refused(&["run", m, "-p", "x", "-b", "0"], "-b must be at least 1");
}

/// Below this top-2 logit margin in llama.cpp's own run, two correct implementations may
/// pick different tokens: llama.cpp's AVX2 and AVX-512 builds differ by up to 0.07 in
/// these logits, and the AVX2 level here turns " country" (margin 0.031) into " United".
const NEAR_TIE: f64 = 0.1;

/// How many of llama.cpp's greedy tokens `text` reproduces. It may leave them only at a
/// token whose margin in llama.cpp's run is below [`NEAR_TIE`] (after that the two
/// continue from different histories, so nothing more is compared).
fn agrees_until_a_near_tie(model: &Path, text: &str, want: &serde_json::Value) -> usize {
    let tok = Tokenizer::from_gguf(&GgufFile::open(model).unwrap()).unwrap();
    let tokens = want["tokens"].as_array().unwrap();
    let margins = want["top2_margins"].as_array().unwrap();
    let mut prefix = Vec::new();
    for (k, id) in tokens.iter().enumerate() {
        prefix.extend_from_slice(
            tok.token_to_piece(id.as_u64().unwrap() as u32, false)
                .unwrap(),
        );
        if !text.as_bytes().starts_with(&prefix) {
            let margin = margins[k].as_f64().unwrap();
            eprintln!("hearth:    {text:?}\nllama.cpp: {:?}", want["text"]);
            eprintln!("they part at token {k}, where llama.cpp's margin is {margin}");
            assert!(
                margin < NEAR_TIE,
                "hearth left llama.cpp's tokens at {k} (margin {margin})"
            );
            return k;
        }
    }
    tokens.len()
}

/// The default model, greedy, against llama.cpp's continuation. Hearth's logits differ
/// from llama.cpp's by a few hundredths (f32 vs f16 KV cache and GELU table, summation
/// order), so greedy text agrees until a step where llama.cpp's top two are that close
/// (the fixture's margins, by llama-cpp-python): the 5th token, " country" over
/// " United" by 0.031, is the first such step, and which side Hearth takes has moved with
/// kernel summation orders and CPU levels.
#[test]
fn gemma_greedy_agrees_with_llama_cpp() {
    let Some(model) = gemma() else { return };
    let m = model.to_str().unwrap();
    let out = hearth(&[
        "run",
        m,
        "-p",
        "The capital of France is",
        "-n",
        "32",
        "--temp",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let agreed = agrees_until_a_near_tie(&model, &text, &reference()["greedy"]);
    assert!(agreed >= 4, "{text:?}");
    let err = stderr(&out);
    let (n_prompt, pp) = rate(&err, "prompt");
    let (n_gen, tg) = rate(&err, "generation");
    assert_eq!((n_prompt, n_gen), (6, 32));
    eprintln!("prompt {pp:.1} tok/s, generation {tg:.1} tok/s");
}

/// `--chat` wraps the prompt in Gemma's template (one BOS, `<start_of_turn>` parsed as
/// a special token). gemma-3-270m is a base model, so llama.cpp's greedy answer is an
/// echo of the question; Hearth must produce the same start (llama.cpp's margin after
/// it is 0.013, a tie).
#[test]
fn gemma_chat_applies_the_template() {
    let Some(model) = gemma() else { return };
    let out = hearth(&[
        "run",
        model.to_str().unwrap(),
        "-p",
        "What is the capital of France?",
        "-n",
        "16",
        "--temp",
        "0",
        "--chat",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let want_prompt = reference()["chat_greedy"]["prompt_tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(rate(&err, "prompt").0, want_prompt, "{err}");
    let text = stdout(&out);
    assert!(
        text.starts_with("What is the capital of France?"),
        "{text:?}"
    );
}
