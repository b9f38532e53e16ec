//! Constrained decoding: a JSON schema, a Lark grammar or a regex turned into a token
//! mask per sequence per step, with llguidance (the engine behind OpenAI's own
//! structured outputs) over a token trie built from the GGUF vocabulary.
//!
//! - [`GrammarVocab`] is built once per model (a trie of every token's bytes, then
//!   llguidance's parser factory): about a second on a 262k vocabulary, so the engine
//!   builds it on the first request that needs it, not at load.
//! - [`Grammar`] is one sequence's parser: [`Grammar::allowed`] gives the mask for the
//!   next token, [`Grammar::accept`] advances it by the token drawn.
//!
//! Control tokens (`<|im_end|>`, `<end_of_turn>`) enter the trie as llguidance's special
//! tokens (a `0xFF` byte, then their text), so grammar text never matches them by
//! accident; user-defined tokens such as `<tool_call>` or `</think>` enter as their text
//! and so match the grammar's literals. The end-of-generation tokens are the trie's EOS
//! set: a mask allows them exactly where the grammar may end.
//!
//! What this does not do: fast-forward tokens (tokens the grammar forces are still drawn,
//! one forward step each), and grammars that start inside a reasoning block (the
//! scheduler starts the constraint after `</think>`).

use std::sync::Arc;
use std::time::Instant;

use hearth_tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid against this JSON schema.
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (which may embed `%json { schema }`).
    Lark(String),
    /// A regular expression over the whole output.
    Regex(String),
}

impl Constraint {
    /// The llguidance grammar. JSON is generated compactly (`", "` and `": "` between
    /// items, no free whitespace): small models given free whitespace tend to fill the
    /// budget with newlines. A schema's own `x-guidance` options win.
    fn to_grammar(&self) -> TopLevelGrammar {
        let json = |schema: Value| TopLevelGrammar::from_json_schema(compact_json(schema));
        match self {
            Constraint::JsonObject => json(serde_json::json!({ "type": "object" })),
            Constraint::JsonSchema(s) => json(s.clone()),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
        }
    }
}

/// `schema` with llguidance's options for compact JSON (`", "` and `": "` between items,
/// no free whitespace) unless it sets its own `x-guidance`: small models given free
/// whitespace tend to fill the budget with newlines. Also for `%json` inside a grammar.
pub fn compact_json(mut schema: Value) -> Value {
    if let Value::Object(o) = &mut schema {
        o.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// The model's vocabulary as llguidance sees it, shared by every constrained sequence.
pub struct GrammarVocab {
    factory: Arc<ParserFactory>,
    n_tokens: usize,
}

impl std::fmt::Debug for GrammarVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarVocab")
            .field("n_tokens", &self.n_tokens)
            .finish()
    }
}

impl GrammarVocab {
    /// The trie and parser factory for `tok`'s vocabulary; also returns how long the
    /// build took, for the log.
    pub fn new(tok: &Tokenizer) -> Result<(GrammarVocab, f64), String> {
        let t0 = Instant::now();
        let n_tokens = tok.n_tokens();
        let eog = tok.eog_tokens();
        let Some(&first_eog) = eog.first() else {
            return Err("the vocabulary has no end-of-generation token".into());
        };
        let words: Vec<Vec<u8>> = (0..n_tokens as u32)
            .map(|id| {
                let piece = tok.token_to_piece(id, false).unwrap_or_default();
                if piece.is_empty() {
                    // Control and unknown tokens: llguidance's special-token form.
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tok.token_text(id).unwrap_or("").as_bytes());
                    w
                } else {
                    piece.to_vec()
                }
            })
            .collect();
        let info = TokRxInfo::new(n_tokens as u32, first_eog);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eog);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        let vocab = GrammarVocab {
            factory: Arc::new(factory),
            n_tokens,
        };
        Ok((vocab, t0.elapsed().as_secs_f64()))
    }

    /// A parser for `c`; the error names what cannot be enforced (an unsupported schema
    /// keyword, a grammar syntax error), in llguidance's words.
    pub fn compile(&self, c: &Constraint) -> Result<Grammar, String> {
        // The grammar is a client's: should the compiler ever panic on one, the request
        // fails, not the engine thread that serves everyone. (Steps after this run
        // inside llguidance's own panic guard.)
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(c.to_grammar())
        }))
        .map_err(|_| "the grammar compiler failed on this grammar".to_owned())?
        .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Grammar {
            matcher,
            mask: None,
            n_tokens: self.n_tokens,
            masks: (0, 0.0),
        })
    }
}

/// One sequence's parser state.
pub struct Grammar {
    matcher: Matcher,
    /// The mask for the next token, once computed.
    mask: Option<SimpleVob>,
    n_tokens: usize,
    /// Masks computed and the seconds they took: the constraint's cost, reported.
    masks: (usize, f64),
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Grammar {
    /// The tokens allowed next, as bits (token `t` is bit `t % 32` of word `t / 32`).
    /// End-of-generation tokens are allowed exactly where the grammar may end.
    pub fn allowed(&mut self) -> Result<&[u32], String> {
        if self.mask.is_none() {
            let t0 = Instant::now();
            let mask = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| format!("grammar: {e}"))?;
            self.masks.0 += 1;
            self.masks.1 += t0.elapsed().as_secs_f64();
            self.mask = Some(mask);
        }
        let mask = self.mask.as_ref().expect("computed above");
        Ok(&mask.as_slice()[..self.n_tokens.div_ceil(32).min(mask.as_slice().len())])
    }

    /// Advances by the token the sequence continues with (not an end-of-generation
    /// token: those end the sequence instead).
    pub fn accept(&mut self, token: u32) -> Result<(), String> {
        self.mask = None;
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("grammar: {e}"))
    }

    /// An independent copy in the same state (choice `i` of `n` forks the first one's).
    pub fn fork(&self) -> Grammar {
        Grammar {
            matcher: self.matcher.deep_clone(),
            mask: None,
            n_tokens: self.n_tokens,
            masks: (0, 0.0),
        }
    }

    /// Masks computed so far and the seconds they took.
    pub fn mask_time(&self) -> (usize, f64) {
        self.masks
    }

    /// Whether the grammar is complete and admits nothing more, so the output ends here.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny SentencePiece vocabulary: `<unk>`, `<s>`, every byte as a token, then
    /// `<eos>` (control) and the user-defined `<tool_call>`.
    pub(crate) fn vocab() -> (GrammarVocab, Vec<Vec<u8>>) {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into()];
        let mut types = vec![2i32, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        tokens.extend(["<eos>".into(), "<tool_call>".into()]);
        types.extend([3, 4]);
        let mut w = hearth_gguf::GgufWriter::new();
        w.set("tokenizer.ggml.model", "llama");
        w.set("tokenizer.ggml.scores", vec![0f32; tokens.len()]);
        w.set("tokenizer.ggml.eos_token_id", tokens.len() as u32 - 2);
        w.set("tokenizer.ggml.tokens", tokens);
        w.set("tokenizer.ggml.token_type", types);
        w.set("tokenizer.ggml.unknown_token_id", 0u32);
        w.set("tokenizer.ggml.bos_token_id", 1u32);
        let tok = Tokenizer::from_metadata(w.metadata()).unwrap();
        let words = (0..tok.n_tokens() as u32)
            .map(|t| tok.token_to_piece(t, false).unwrap().to_vec())
            .collect();
        (GrammarVocab::new(&tok).unwrap().0, words)
    }

    fn allows(mask: &[u32], t: usize) -> bool {
        mask[t / 32] >> (t % 32) & 1 == 1
    }

    /// Drives `g` greedily through `text` (one byte token at a time), checking each byte
    /// is allowed, and returns whether the end is allowed after it.
    pub(crate) fn walk(g: &mut Grammar, words: &[Vec<u8>], text: &str) -> bool {
        for b in text.bytes() {
            let t = words.iter().position(|w| w == &[b]).unwrap();
            assert!(allows(g.allowed().unwrap(), t), "{:?} refused", b as char);
            g.accept(t as u32).unwrap();
        }
        let eos = words.len() - 2;
        g.is_done() || allows(g.allowed().unwrap(), eos)
    }

    #[test]
    fn a_schema_allows_exactly_its_documents() {
        let (v, words) = vocab();
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0}},
            "required": ["n"],
            "additionalProperties": false,
        });
        let mut g = v.compile(&Constraint::JsonSchema(schema.clone())).unwrap();
        assert!(walk(&mut g, &words, "{\"n\": 12}"));
        // Not ended: the end-of-generation token is refused mid-document.
        let mut g = v.compile(&Constraint::JsonSchema(schema)).unwrap();
        assert!(!walk(&mut g, &words, "{\"n\": 1"));
        // A negative number is refused at the `-`.
        let mut g = v
            .compile(&Constraint::JsonSchema(
                serde_json::json!({"type": "integer", "minimum": 0}),
            ))
            .unwrap();
        let minus = words.iter().position(|w| w == b"-").unwrap();
        assert!(!allows(g.allowed().unwrap(), minus));
    }

    #[test]
    fn control_tokens_never_match_grammar_text() {
        let (v, words) = vocab();
        let mut g = v.compile(&Constraint::Regex("<eos>x".into())).unwrap();
        let eos = words.len() - 2;
        assert!(!allows(g.allowed().unwrap(), eos));
        assert!(walk(&mut g, &words, "<eos>x"));
        // A user-defined token matches its text.
        let mut g = v
            .compile(&Constraint::Lark("start: \"<tool_call>\" \"!\"".into()))
            .unwrap();
        let call = words.len() - 1;
        assert!(allows(g.allowed().unwrap(), call));
        g.accept(call as u32).unwrap();
        assert!(walk(&mut g, &words, "!"));
    }

    #[test]
    fn bad_grammars_are_refused_with_a_reason() {
        let (v, _) = vocab();
        let e = v.compile(&Constraint::Lark("start: (".into())).unwrap_err();
        assert!(!e.is_empty());
        let e = v
            .compile(&Constraint::JsonSchema(
                serde_json::json!({"type": "array", "uniqueItems": true}),
            ))
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("uniqueItems"), "{e}");
    }
}
