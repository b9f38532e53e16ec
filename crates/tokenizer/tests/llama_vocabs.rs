//! llama.cpp's tokenizer test vocabularies (`models/ggml-vocab-*.gguf` with their `.inp`
//! texts and `.out` ids, as its `test-tokenizer-0` reads them): every case must come out
//! exactly, tokenizing as that test does (no BOS/EOS, special-token text not parsed).

mod common;

use common::{load, require, vocab_dir};

/// The vocabularies with test cases whose tokenizer this crate implements.
const VOCABS: &[&str] = &[
    "llama-spm",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "gpt-2",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "mpt",
    "starcoder",
    "refact",
    "command-r",
    "phi-3",
    "gemma-4",
];

/// The cases of `ggml-vocab-NAME.gguf.inp/.out`, split as `read_tests` in llama.cpp's
/// `tests/test-tokenizer-0.cpp` splits them.
fn read_cases(dir: &std::path::Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp =
        std::fs::read_to_string(require(dir, &format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out =
        std::fs::read_to_string(require(dir, &format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    texts.into_iter().zip(ids).collect()
}

#[test]
fn llama_cpp_vocab_cases_are_exact() {
    let Some(dir) = vocab_dir() else { return };
    let mut failures = Vec::new();
    let mut total = 0;
    for name in VOCABS {
        let tok = load(&require(&dir, &format!("ggml-vocab-{name}.gguf")));
        for (text, expected) in read_cases(&dir, name) {
            total += 1;
            let got = tok.encode(&text, false, false).unwrap();
            if got != expected {
                failures.push(format!(
                    "{name}: {text:?}\n   expected {expected:?}\n   got      {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} cases exact");
}
