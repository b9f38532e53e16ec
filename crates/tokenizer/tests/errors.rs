//! Broken tokenizer metadata is refused with an error that names the key at fault, and no
//! metadata — however mangled — makes the loader or the tokenizer panic.

mod common;

use common::{synthetic_bpe, synthetic_spm};
use hearth_gguf::{GgufError, Metadata, Value};
use hearth_tokenizer::{Tokenizer, TokenizerError};
use proptest::prelude::*;

fn err(md: &Metadata) -> TokenizerError {
    Tokenizer::from_metadata(md).expect_err("metadata should be refused")
}

fn with(mut md: Metadata, key: &str, v: impl Into<Value>) -> Metadata {
    md.set(key, v);
    md
}

#[test]
fn missing_model_names_the_key() {
    let e = err(&Metadata::new());
    assert!(
        matches!(&e, TokenizerError::Metadata(GgufError::MissingKey { key }) if key == "tokenizer.ggml.model"),
        "{e}"
    );
}

#[test]
fn unsupported_model_and_unknown_pre() {
    let e = err(&with(synthetic_spm(true), "tokenizer.ggml.model", "bert"));
    assert!(
        matches!(&e, TokenizerError::UnsupportedModel(m) if m == "bert"),
        "{e}"
    );
    let e = err(&synthetic_bpe("no-such-pre-tokenizer"));
    assert!(matches!(&e, TokenizerError::UnknownPreTokenizer(p) if p == "no-such-pre-tokenizer"));
    assert!(e.to_string().contains("tokenizer.ggml.pre"), "{e}");
    // A name llama.cpp knows but this crate does not implement is refused too.
    assert!(matches!(
        err(&synthetic_bpe("kimi-k2")),
        TokenizerError::UnknownPreTokenizer(_)
    ));
}

#[test]
fn missing_pre_uses_llama_cpps_default_and_says_so() {
    let mut md = synthetic_bpe("gpt-2");
    let mut md2 = Metadata::new();
    for (k, v) in md.iter() {
        if k != "tokenizer.ggml.pre" {
            md2.set(k, v.clone());
        }
    }
    md = md2;
    let tok = Tokenizer::from_metadata(&md).unwrap();
    assert!(tok.pre_tokenizer_missing());
}

#[test]
fn wrong_array_types_name_the_key() {
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
    ] {
        let e = err(&with(
            synthetic_spm(true),
            key,
            Value::from(vec![true, false]),
        ));
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    let e = err(&with(
        synthetic_bpe("gpt-2"),
        "tokenizer.ggml.merges",
        Value::from(vec![1u32]),
    ));
    assert!(e.to_string().contains("tokenizer.ggml.merges"), "{e}");
    let e = err(&with(
        synthetic_spm(true),
        "tokenizer.ggml.tokens",
        "not an array",
    ));
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
}

#[test]
fn short_arrays_are_refused() {
    let e = err(&with(
        synthetic_spm(true),
        "tokenizer.ggml.scores",
        Value::from(vec![0f32; 3]),
    ));
    assert!(
        matches!(&e, TokenizerError::BadArray { key, .. } if key == "tokenizer.ggml.scores"),
        "{e}"
    );
    let e = err(&with(
        synthetic_spm(true),
        "tokenizer.ggml.token_type",
        Value::from(vec![1i32; 3]),
    ));
    assert!(
        matches!(&e, TokenizerError::BadArray { key, .. } if key == "tokenizer.ggml.token_type"),
        "{e}"
    );
}

#[test]
fn nan_scores_duplicates_and_empty_vocabularies() {
    let md = synthetic_spm(true);
    let n = md
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let mut scores = vec![0f32; n];
    scores[7] = f32::NAN;
    assert!(matches!(
        err(&with(
            md.clone(),
            "tokenizer.ggml.scores",
            Value::from(scores)
        )),
        TokenizerError::NanScore { id: 7 }
    ));

    let mut tokens: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    tokens[9] = "t3".into();
    let e = err(&with(
        md.clone(),
        "tokenizer.ggml.tokens",
        Value::from(tokens),
    ));
    assert!(
        matches!(
            e,
            TokenizerError::DuplicateToken {
                id: 9,
                first: 3,
                ..
            }
        ),
        "{e}"
    );

    let e = err(&with(
        md,
        "tokenizer.ggml.tokens",
        Value::from(Vec::<String>::new()),
    ));
    assert!(matches!(e, TokenizerError::VocabSize(0)), "{e}");
}

#[test]
fn special_ids_are_bounds_checked() {
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.fim_pre_token_id",
    ] {
        let e = err(&with(synthetic_bpe("gpt-2"), key, Value::U32(1_000_000)));
        assert!(
            matches!(&e, TokenizerError::IdOutOfRange { key: k, id: 1_000_000, .. } if k == key),
            "{key}: {e}"
        );
        let e = err(&with(synthetic_bpe("gpt-2"), key, Value::I32(-1)));
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
}

#[test]
fn adding_a_missing_bos_is_an_error_not_a_panic() {
    // ChatGLM's pre-tokenizer has no default BOS; the metadata asks for one anyway.
    let mut md = synthetic_bpe("chatglm-bpe");
    let mut md2 = Metadata::new();
    for (k, v) in md.iter() {
        if k != "tokenizer.ggml.bos_token_id" {
            md2.set(k, v.clone());
        }
    }
    md = md2;
    let tok = Tokenizer::from_metadata(&md).unwrap();
    assert!(matches!(
        tok.encode("x", true, false),
        Err(TokenizerError::MissingSpecialToken("BOS"))
    ));
    assert_eq!(tok.encode("x", false, false).unwrap().len(), 1);
}

/// Random values of random types for the keys the loader reads.
fn any_value() -> impl Strategy<Value = Value> {
    let strings = prop::collection::vec(
        prop_oneof![
            any::<String>(),
            Just(String::new()),
            Just("a b".to_string()),
            Just(" ".to_string())
        ],
        0..12,
    );
    prop_oneof![
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        (0u32..600).prop_map(Value::U32),
        any::<bool>().prop_map(Value::Bool),
        any::<f32>().prop_map(Value::F32),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "gpt2",
            "llama",
            "gemma4",
            "qwen2",
            "llama-bpe",
            "deepseek-v3",
            "tekken",
            ""
        ])
        .prop_map(Value::from),
        strings.prop_map(Value::from),
        prop::collection::vec(any::<i32>(), 0..300).prop_map(Value::from),
        prop::collection::vec(-7i32..8, 250..300).prop_map(Value::from),
        prop::collection::vec(any::<f32>(), 0..300).prop_map(Value::from),
    ]
}

const KEYS: &[&str] = &[
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
    "general.name",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Mangled metadata never panics the loader; whatever loads, tokenizes and decodes
    /// any text without panicking.
    #[test]
    fn mangled_metadata_never_panics(
        spm in any::<bool>(),
        edits in prop::collection::vec((prop::sample::select(KEYS), any_value()), 1..4),
        text in any::<String>(),
    ) {
        let mut md = if spm { synthetic_spm(true) } else { synthetic_bpe("llama-bpe") };
        for (key, value) in edits {
            md.set(key, value);
        }
        if let Ok(tok) = Tokenizer::from_metadata(&md) {
            for (add, parse) in [(false, false), (true, true)] {
                if let Ok(ids) = tok.encode(&text, add, parse) {
                    prop_assert!(ids.iter().all(|&id| (id as usize) < tok.n_tokens()));
                    let _ = tok.decode(&ids, true, true).unwrap();
                }
            }
            let all: Vec<u32> = (0..tok.n_tokens() as u32).collect();
            let _ = tok.decode(&all, false, true).unwrap();
        }
    }
}
