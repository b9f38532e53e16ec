//! The real tokenizers of the models Hearth targets, against ids llama.cpp produced for
//! tests/fixtures/tokenizer/corpus.json (by tests/fixtures/tokenizer/make_fixtures.py):
//!
//! * Gemma 3 270M (SentencePiece, with user-defined whitespace and HTML tokens);
//! * DeepSeek-R1-Distill-Qwen-7B (byte-level BPE, pre-tokenizer `deepseek-r1-qwen`);
//! * every implemented pre-tokenizer, on llama.cpp's Qwen 2 test vocabulary with
//!   `tokenizer.ggml.pre` replaced.
//!
//! Both modes: "default" (BOS/EOS as the model asks, special-token text parsed) and
//! "plain" (nothing added, special-token text tokenized as text).

mod common;

use std::path::Path;

use common::{fixtures, load, require, vocab_dir};
use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    default: Vec<u32>,
    plain: Vec<u32>,
}

/// pre-tokenizers.json: the texts once, then each pre-tokenizer's ids in both modes.
#[derive(Deserialize)]
struct PreFixture {
    texts: Vec<String>,
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    pre: String,
    default: Vec<Vec<u32>>,
    plain: Vec<Vec<u32>>,
}

fn read_fixture(name: &str) -> Fixture {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares every case in both modes; returns the failures.
fn check(tok: &Tokenizer, label: &str, case: &Case, failures: &mut Vec<String>) {
    for (mode, add_special, parse_special, expected) in [
        ("default", true, true, &case.default),
        ("plain", false, false, &case.plain),
    ] {
        let got = tok.encode(&case.text, add_special, parse_special).unwrap();
        if &got != expected {
            failures.push(format!(
                "{label} [{mode}] {:?}\n   expected {expected:?}\n   got      {got:?}",
                case.text
            ));
        }
    }
}

fn check_model(vocab: &Path, fixture: &str) {
    let tok = load(vocab);
    let fx = read_fixture(fixture);
    assert!(fx.cases.len() > 50, "{fixture}: too few cases");
    let mut failures = Vec::new();
    for case in &fx.cases {
        check(&tok, fixture, case, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma3_270m_matches_llama_cpp() {
    let Some(dir) = vocab_dir() else { return };
    check_model(
        &require(&dir, "gemma-3-270m.vocab.gguf"),
        "gemma-3-270m.json",
    );
}

#[test]
fn deepseek_r1_distill_qwen_matches_llama_cpp() {
    let Some(dir) = vocab_dir() else { return };
    check_model(
        &require(&dir, "deepseek-r1-distill-qwen-7b.vocab.gguf"),
        "deepseek-r1-distill-qwen-7b.json",
    );
}

#[test]
fn every_pre_tokenizer_matches_llama_cpp() {
    let Some(dir) = vocab_dir() else { return };
    let file = GgufFile::open(require(&dir, "ggml-vocab-qwen2.gguf")).unwrap();
    let path = fixtures().join("pre-tokenizers.json");
    let fx: PreFixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        fx.variants.len() >= 20,
        "only {} pre-tokenizers in the fixture",
        fx.variants.len()
    );
    let mut failures = Vec::new();
    for v in &fx.variants {
        let mut md = file.metadata().clone();
        md.set("tokenizer.ggml.pre", v.pre.as_str());
        let tok = Tokenizer::from_metadata(&md).unwrap_or_else(|e| panic!("{}: {e}", v.pre));
        assert_eq!(v.default.len(), fx.texts.len(), "{}", v.pre);
        assert_eq!(v.plain.len(), fx.texts.len(), "{}", v.pre);
        for (i, text) in fx.texts.iter().enumerate() {
            let case = Case {
                text: text.clone(),
                default: v.default[i].clone(),
                plain: v.plain[i].clone(),
            };
            check(&tok, &v.pre, &case, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Decoding the ids of every corpus text gives the text back (SentencePiece's leading
/// space removed as llama.cpp removes it; DeepSeek's vocabulary does no space clean-up).
#[test]
fn real_vocabularies_round_trip() {
    let Some(dir) = vocab_dir() else { return };
    for (vocab, fixture) in [
        ("gemma-3-270m.vocab.gguf", "gemma-3-270m.json"),
        (
            "deepseek-r1-distill-qwen-7b.vocab.gguf",
            "deepseek-r1-distill-qwen-7b.json",
        ),
    ] {
        let tok = load(&require(&dir, vocab));
        for case in read_fixture(fixture).cases {
            // SentencePiece cannot tell U+2581 in the text from a space.
            let text = if vocab.starts_with("gemma") {
                case.text.replace('\u{2581}', " ")
            } else {
                case.text.clone()
            };
            let back = tok.decode(&case.plain, false, false).unwrap();
            assert_eq!(back, text, "{vocab}");
            // With special tokens parsed and BOS added, rendering specials and dropping
            // the BOS gives the text back too.
            let back = tok.decode(&case.default, true, true).unwrap();
            assert_eq!(back, text, "{vocab} (default mode)");
        }
    }
}
