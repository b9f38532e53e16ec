//! Special-token text in the input, cut out as llama.cpp's `tokenizer_st_partition` does:
//! longest token first, each taking its leftmost free occurrences; control tokens only
//! when parsing special tokens, user-defined ones always; RSTRIP eating the whitespace
//! after a token.

mod common;

use common::synthetic_spm;
use hearth_gguf::{Metadata, Value};
use hearth_tokenizer::Tokenizer;

/// The synthetic SentencePiece vocabulary plus control tokens `abc`, `xa`, `<|end|>` and
/// user-defined `<u>`, without the space prefix (so text maps to plain byte tokens).
fn vocab(name: &str) -> (Tokenizer, impl Fn(&str) -> u32) {
    let base = synthetic_spm(false);
    let mut tokens: Vec<String> = base
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .and_then(|a| a.as_strings())
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let mut types: Vec<i32> = base
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .and_then(|a| a.as_i32())
        .unwrap()
        .to_vec();
    for (t, ty) in [("abc", 3), ("xa", 3), ("<|end|>", 3), ("<u>", 4)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let n = tokens.len();
    let mut md = Metadata::new();
    for (k, v) in base.iter() {
        md.set(k, v.clone());
    }
    md.set("tokenizer.ggml.tokens", Value::from(tokens));
    md.set("tokenizer.ggml.token_type", Value::from(types));
    md.set("tokenizer.ggml.scores", Value::from(vec![0f32; n]));
    md.set("general.name", name);
    let tok = Tokenizer::from_metadata(&md).unwrap();
    let ids: Vec<(String, u32)> = ["abc", "xa", "<|end|>", "<u>"]
        .iter()
        .map(|t| (t.to_string(), tok.token_id(t).unwrap()))
        .collect();
    (tok, move |t: &str| {
        ids.iter().find(|(s, _)| s == t).map(|(_, id)| *id).unwrap()
    })
}

/// The special tokens in `ids`, by text; other ids as "·".
fn shape(tok: &Tokenizer, ids: &[u32]) -> String {
    ids.iter()
        .map(|&id| {
            let t = tok.token_text(id).unwrap();
            if ["abc", "xa", "<|end|>", "<u>"].contains(&t) {
                format!("[{t}]")
            } else {
                "·".to_string()
            }
        })
        .collect()
}

#[test]
fn longer_tokens_win_even_when_a_shorter_one_starts_first() {
    let (tok, _) = vocab("test");
    // llama.cpp takes "abc" (longer) before "xa", although "xa" starts earlier.
    assert_eq!(
        shape(&tok, &tok.encode("xabc", false, true).unwrap()),
        "·[abc]"
    );
    // Overlapping occurrences of one token: leftmost first.
    assert_eq!(
        shape(&tok, &tok.encode("xaxa", false, true).unwrap()),
        "[xa][xa]"
    );
    assert_eq!(
        shape(&tok, &tok.encode("xxaa", false, true).unwrap()),
        "·[xa]·"
    );
}

#[test]
fn control_tokens_need_parse_special_user_defined_do_not() {
    let (tok, _) = vocab("test");
    assert_eq!(
        shape(&tok, &tok.encode("abc<u>", false, true).unwrap()),
        "[abc][<u>]"
    );
    assert_eq!(
        shape(&tok, &tok.encode("abc<u>", false, false).unwrap()),
        "···[<u>]"
    );
}

#[test]
fn rstrip_eats_following_whitespace_for_phi3() {
    // llama.cpp gives every special token RSTRIP when the model is named Phi-3.
    let (tok, id) = vocab("Phi-3-mini");
    let ids = tok.encode("a<|end|> \n\tb", false, true).unwrap();
    assert_eq!(shape(&tok, &ids), "·[<|end|>]·");
    assert_eq!(tok.token_text(*ids.last().unwrap()).unwrap(), "<0x62>");
    assert!(ids.contains(&id("<|end|>")));
    // Without the name, the whitespace stays.
    let (tok, _) = vocab("other");
    assert_eq!(
        shape(&tok, &tok.encode("a<|end|> \n\tb", false, true).unwrap()),
        "·[<|end|>]····"
    );
}
