//! Helpers shared by the integration tests: where the test vocabularies are, and loading
//! them.

#![allow(dead_code)]

use std::path::PathBuf;

use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;

/// The directory named by `HEARTH_VOCAB_DIR` (filled by
/// `tests/fixtures/tokenizer/fetch-vocabs.sh`), or `None` when the variable is unset, in
/// which case the tests that need it say so and pass. When it is set, every file a test
/// asks for must be there: a missing file fails the test.
pub fn vocab_dir() -> Option<PathBuf> {
    match std::env::var_os("HEARTH_VOCAB_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!(
                "HEARTH_VOCAB_DIR is not set: skipping (run tests/fixtures/tokenizer/fetch-vocabs.sh)"
            );
            None
        }
    }
}

/// `dir/name`, which must exist.
pub fn require(dir: &std::path::Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing (HEARTH_VOCAB_DIR is set, so the test vocabularies must be there; \
         run tests/fixtures/tokenizer/fetch-vocabs.sh)",
        p.display()
    );
    p
}

pub fn load(path: &std::path::Path) -> Tokenizer {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixtures directory of this repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer")
}

use hearth_gguf::{Metadata, Value};

/// GPT-2's byte-to-character mapping (OpenAI's `bytes_to_unicode`), written out again
/// here so the tests do not lean on the crate's own copy.
pub fn gpt2_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A small byte-level BPE vocabulary: all 256 byte characters, merges that spell a few
/// words left to right (every merge result is a token), two control tokens and one
/// user-defined token.
pub fn synthetic_bpe(pre: &str) -> Metadata {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| gpt2_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    let mut merges = Vec::new();
    for word in [
        "the", " the", " quick", " brown", "fox", " fox", "hello", " hello", " world", "ing",
        " in", "  ", "   ", "\n\n", "12", "123", "é", " é", "日本", "ab", "aba", "abab",
    ] {
        let chars: Vec<String> = word.bytes().map(|b| gpt2_char(b).to_string()).collect();
        let mut acc = chars[0].clone();
        for c in &chars[1..] {
            merges.push(format!("{acc} {c}"));
            acc.push_str(c);
            if !tokens.contains(&acc) {
                tokens.push(acc.clone());
                types.push(1);
            }
        }
    }
    for (t, ty) in [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<tool>", 4)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let eot = (tokens.len() - 3) as u32;
    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", "gpt2");
    md.set("tokenizer.ggml.pre", pre);
    md.set("tokenizer.ggml.tokens", Value::from(tokens));
    md.set("tokenizer.ggml.token_type", Value::from(types));
    md.set("tokenizer.ggml.merges", Value::from(merges));
    md.set("tokenizer.ggml.bos_token_id", Value::U32(eot));
    md.set("tokenizer.ggml.eos_token_id", Value::U32(eot));
    md.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    md
}

/// A small SentencePiece vocabulary with byte fallback for every byte.
pub fn synthetic_spm(add_space_prefix: bool) -> Metadata {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2i32, 3, 3];
    let mut scores = vec![0f32, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        "▁",
        "t",
        "h",
        "e",
        "a",
        "n",
        "i",
        "g",
        "o",
        "l",
        "w",
        "r",
        "d",
        "▁t",
        "th",
        "he",
        "▁th",
        "▁the",
        "in",
        "ing",
        "▁in",
        "an",
        "▁a",
        "ll",
        "lo",
        "ello",
        "hello",
        "▁hello",
        "▁w",
        "or",
        "orld",
        "▁world",
        "▁▁",
        "▁▁▁",
        "é",
        "日",
        "本",
        "日本",
    ];
    for (i, p) in pieces.iter().enumerate() {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(-(i as f32) * 0.5);
    }
    tokens.push("<tool>".to_string());
    types.push(4);
    scores.push(0.0);
    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", "llama");
    md.set("tokenizer.ggml.tokens", Value::from(tokens));
    md.set("tokenizer.ggml.token_type", Value::from(types));
    md.set("tokenizer.ggml.scores", Value::from(scores));
    md.set(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(add_space_prefix),
    );
    md
}
