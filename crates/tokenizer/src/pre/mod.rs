//! Pre-tokenizers: how byte-level BPE vocabularies cut text into words before merging,
//! selected by the GGUF key `tokenizer.ggml.pre`.
//!
//! The table is llama.cpp's (`llama-vocab.cpp`: the `tokenizer_pre` names, each type's
//! list of regexes, and the per-type tokenizer flags). A type's regexes run in order, each
//! splitting every piece the previous one left (matches and the gaps between them both
//! become pieces). Where llama.cpp recognises a regex string and runs hand-written code
//! instead, so do we ([`custom`]); the rest run through [`regex::RegexPass`], which
//! reproduces llama.cpp's `std::regex` semantics.
//!
//! Names llama.cpp knows but we do not implement (BERT-style and custom splitters such as
//! `kimi-k2`) are refused with an error naming them, as are names nobody knows.

mod custom;
mod regex;

use std::ops::Range;

use crate::error::TokenizerError;
use custom::{CodePoints, Llama3Style};
use regex::RegexPass;

/// llama.cpp's GPT-2 regex; recognised and run by [`custom::split_gpt2`].
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's regex (case-insensitive contractions spelled out); [`custom::split_llama3`].
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 3.5's: Qwen 2's with combining marks in letter runs.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Newline runs, for SentencePiece-style BPE (Gemma 4).
const NEWLINES: &str = r"[^\n]+|[\n]+";

/// The regex list of each pre-tokenizer type, verbatim from llama.cpp's
/// `llm_tokenizer_bpe` constructor (as the C++ string literals evaluate: "\r" there is a
/// carriage return, "\\r" the regex escape; both mean the same to the regex).
fn regexes(kind: PreKind) -> &'static [&'static str] {
    use PreKind::*;
    match kind {
        Default => &[
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
        Llama3 | Dbrx | Smaug | Chatglm4 => &[LLAMA3],
        Jais2 => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ],
        DeepseekLlm => &[
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            r"\p{N}+",
        ],
        Deepseek3Llm => &[
            r"\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ],
        Spark25 => &[
            r"\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            r"\p{N}",
        ],
        DeepseekCoder => &[
            "[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            r"\p{N}",
        ],
        Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
        Starcoder => &[r"\p{N}", GPT2],
        Gpt2 => &[GPT2],
        Qwen2 => &[QWEN2],
        Qwen35 => &[QWEN35],
        Poro => &[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+"],
        Viking => &[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+", r"\p{N}"],
        Tekken => &[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Gpt4o => &[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        BailingMoe => &[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        SeedCoder => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Ufakzeka => &[
            r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Grok2 => &[QWEN2],
        Laguna => &[NEWLINES, QWEN2],
        ExaoneMoe => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        Gemma4 | SarvamMoe => &[NEWLINES],
        Minicpm5 => &[
            r"\p{N}{1,3}",
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
    }
}

/// The pre-tokenizer types we implement, named as in llama.cpp's `llama_vocab_pre_type`
/// (several `tokenizer.ggml.pre` names map to one type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreKind {
    Default,
    Llama3,
    Dbrx,
    Smaug,
    Chatglm4,
    Jais2,
    DeepseekLlm,
    Deepseek3Llm,
    Spark25,
    DeepseekCoder,
    Falcon,
    Starcoder,
    Gpt2,
    Qwen2,
    Qwen35,
    Poro,
    Viking,
    Tekken,
    Gpt4o,
    BailingMoe,
    SeedCoder,
    Ufakzeka,
    Grok2,
    Laguna,
    ExaoneMoe,
    Gemma4,
    SarvamMoe,
    Minicpm5,
}

impl PreKind {
    /// Every type, in declaration order.
    pub const ALL: [PreKind; 28] = {
        use PreKind::*;
        [
            Default,
            Llama3,
            Dbrx,
            Smaug,
            Chatglm4,
            Jais2,
            DeepseekLlm,
            Deepseek3Llm,
            Spark25,
            DeepseekCoder,
            Falcon,
            Starcoder,
            Gpt2,
            Qwen2,
            Qwen35,
            Poro,
            Viking,
            Tekken,
            Gpt4o,
            BailingMoe,
            SeedCoder,
            Ufakzeka,
            Grok2,
            Laguna,
            ExaoneMoe,
            Gemma4,
            SarvamMoe,
            Minicpm5,
        ]
    };
}

/// A pre-tokenizer type with the tokenizer flags llama.cpp sets alongside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreSpec {
    pub kind: PreKind,
    /// Undo "clean_up_tokenization_spaces" when detokenizing (" ," → ",").
    pub clean_spaces: bool,
    /// Take a word that is itself a token as one token, without merging.
    pub ignore_merges: bool,
    /// The default of `add_bos_token` for this type (the metadata key overrides it).
    pub add_bos: bool,
    /// The type has no BOS unless the metadata names one (ChatGLM).
    pub no_default_bos: bool,
    /// Spaces become U+2581 before splitting (SentencePiece-style BPE).
    pub escape_whitespaces: bool,
}

impl PreSpec {
    /// The type named `name` in `tokenizer.ggml.pre`, with llama.cpp's flags for it.
    pub(crate) fn from_name(name: &str) -> Result<PreSpec, TokenizerError> {
        use PreKind::*;
        // (type, keeps clean_spaces) — the defaults below, then per-name changes, as in
        // `llama_vocab::impl::load`.
        let spec = |kind: PreKind, clean_spaces: bool| PreSpec {
            kind,
            clean_spaces,
            ignore_merges: false,
            add_bos: false,
            no_default_bos: false,
            escape_whitespaces: false,
        };
        let s = match name {
            "default" => spec(Default, true),
            "minicpm5" => PreSpec {
                ignore_merges: true,
                ..spec(Minicpm5, true)
            },
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => PreSpec {
                ignore_merges: true,
                add_bos: true,
                ..spec(Llama3, true)
            },
            "deepseek-llm" => spec(DeepseekLlm, false),
            "deepseek-coder" => spec(DeepseekCoder, false),
            "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => spec(Deepseek3Llm, false),
            "spark2_5" => spec(Spark25, false),
            "falcon" => spec(Falcon, true),
            "mpt" | "olmo" | "jais" | "exaone4" => spec(Gpt2, true),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                spec(Starcoder, true)
            }
            "command-r" | "smollm" => spec(Starcoder, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" => spec(Gpt2, true),
            "jais-2" => spec(Jais2, true),
            "gemma4" | "granite-embed-multi-311m" => PreSpec {
                escape_whitespaces: true,
                ..spec(Gemma4, true)
            },
            "sarvam-moe" => PreSpec {
                escape_whitespaces: true,
                ..spec(SarvamMoe, false)
            },
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
                spec(Qwen2, false)
            }
            "megrez" | "stablelm2" => spec(Qwen2, true),
            "qwen35" => spec(Qwen35, false),
            "dbrx" => spec(Dbrx, true),
            "smaug-bpe" => spec(Smaug, true),
            "poro-chat" => spec(Poro, false),
            "bloom" | "gpt3-finnish" => spec(Poro, true),
            "chatglm-bpe" => PreSpec {
                no_default_bos: true,
                ..spec(Chatglm4, true)
            },
            "glm4" | "glm5" => PreSpec {
                no_default_bos: true,
                ignore_merges: true,
                ..spec(Chatglm4, true)
            },
            "viking" => spec(Viking, false),
            "tekken" => PreSpec {
                ignore_merges: true,
                add_bos: true,
                ..spec(Tekken, false)
            },
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => spec(Gpt4o, false),
            "trillion" | "granite-docling" => spec(Gpt2, false),
            "bailingmoe" | "bailingmoe2" | "llada-moe" => spec(BailingMoe, false),
            "seed-coder" => spec(SeedCoder, false),
            "ufakzeka" => spec(Ufakzeka, false),
            "grok-2" => spec(Grok2, false),
            "laguna" => spec(Laguna, false),
            "exaone-moe" => spec(ExaoneMoe, true),
            // Known to llama.cpp, not implemented here: custom splitters (kimi-k2, afmoe,
            // tiny_aya, superbpe's empty-match regex, chameleon, youtu, granite-embed-multi-97m)
            // and non-BPE pipelines (whitespace, jina-v1-en/roberta/BERT-style SEP handling).
            _ => return Err(TokenizerError::UnknownPreTokenizer(name.to_string())),
        };
        Ok(s)
    }
}

/// One split pass.
#[derive(Debug)]
enum Pass {
    Gpt2,
    Llama3(Llama3Style),
    Newlines,
    Regex(RegexPass),
}

/// A compiled pre-tokenizer: its passes, run in order.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    passes: Vec<Pass>,
}

/// Buffers a [`PreTokenizer`] reuses between calls.
#[derive(Debug, Default)]
pub(crate) struct SplitScratch {
    a: Vec<Range<usize>>,
    b: Vec<Range<usize>>,
    cps: CodePoints,
    rewritten: String,
}

impl PreTokenizer {
    pub(crate) fn new(kind: PreKind) -> Result<PreTokenizer, TokenizerError> {
        let passes = regexes(kind)
            .iter()
            .map(|&re| {
                // As in llama.cpp's `unicode_regex_split_custom`: a regex with a
                // hand-written implementation is recognised by its exact text.
                Ok(match re {
                    GPT2 => Pass::Gpt2,
                    LLAMA3 => Pass::Llama3(Llama3Style {
                        max_digits: 3,
                        marks: false,
                    }),
                    QWEN2 => Pass::Llama3(Llama3Style {
                        max_digits: 1,
                        marks: false,
                    }),
                    QWEN35 => Pass::Llama3(Llama3Style {
                        max_digits: 1,
                        marks: true,
                    }),
                    NEWLINES => Pass::Newlines,
                    _ => Pass::Regex(RegexPass::new(re)?),
                })
            })
            .collect::<Result<Vec<_>, TokenizerError>>()?;
        Ok(PreTokenizer { passes })
    }

    /// Splits `text` into words: byte ranges, in order, covering all of `text`. The result
    /// lives in `scratch` until the next call.
    pub(crate) fn split<'s>(
        &self,
        text: &str,
        scratch: &'s mut SplitScratch,
    ) -> Result<&'s [Range<usize>], TokenizerError> {
        let SplitScratch {
            a,
            b,
            cps,
            rewritten,
        } = scratch;
        a.clear();
        if !text.is_empty() {
            a.push(0..text.len());
        }
        for pass in &self.passes {
            b.clear();
            match pass {
                Pass::Gpt2 => custom::split_gpt2(text, a, b, cps),
                Pass::Llama3(style) => custom::split_llama3(*style, text, a, b, cps),
                Pass::Newlines => custom::split_newlines(text, a, b),
                Pass::Regex(re) => re.split(text, a, b, rewritten)?,
            }
            std::mem::swap(a, b);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_compiles() {
        for kind in PreKind::ALL {
            let pre = PreTokenizer::new(kind).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let text = "Hello, World! 123 4567 ΑΒΓ 中文 \u{3000}x\n\n  end";
            let mut scratch = SplitScratch::default();
            let words = pre.split(text, &mut scratch).unwrap();
            let joined: String = words.iter().map(|r| &text[r.clone()]).collect();
            assert_eq!(joined, text, "{kind:?}");
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(matches!(
            PreSpec::from_name("no-such-pre"),
            Err(TokenizerError::UnknownPreTokenizer(_))
        ));
        assert!(PreSpec::from_name("kimi-k2").is_err());
        assert_eq!(
            PreSpec::from_name("deepseek-r1-qwen").unwrap().kind,
            PreKind::Qwen2
        );
    }
}
