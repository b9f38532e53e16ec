//! The vocabulary read from a GGUF file's `tokenizer.ggml.*` metadata: token texts,
//! scores and attributes, the special tokens, and the flags that steer encoding.
//!
//! Loading follows llama.cpp's `llama_vocab::impl::load` step by step (defaults per
//! tokenizer model and pre-tokenizer, then metadata, then llama.cpp's detection of
//! end-of-turn and fill-in-the-middle tokens by their text), because the attributes it
//! settles on decide which text is matched as a special token and how tokens print.
//! Where llama.cpp only warns about a broken file (a special token id past the end of the
//! vocabulary), we refuse it with an error naming the key.

use hearth_gguf::{Array, GgufError, Metadata, Value};

use crate::error::TokenizerError;
use crate::hash::{FxHashMap, TextKey};
use crate::pre::PreSpec;

/// A token id: an index into the vocabulary.
pub type TokenId = u32;

/// Token attributes, as llama.cpp's `llama_token_attr` bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TokenAttr(pub u32);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    /// Marks turns and documents (`<s>`, `<|im_end|>`): printed only when asked.
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    /// Added by the model's authors; matched in text even when special tokens are not
    /// parsed, and always printed.
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    /// One byte (`<0x0A>`), for SentencePiece byte fallback.
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const NORMALIZED: TokenAttr = TokenAttr(1 << 6);
    /// Matching this special token also eats the whitespace before it.
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    /// Matching this special token also eats the whitespace after it.
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);
    pub const SINGLE_WORD: TokenAttr = TokenAttr(1 << 9);

    /// Whether any of `bits` is set.
    pub fn intersects(self, bits: TokenAttr) -> bool {
        self.0 & bits.0 != 0
    }

    fn set(&mut self, bits: TokenAttr, on: bool) {
        if on {
            self.0 |= bits.0;
        } else {
            self.0 &= !bits.0;
        }
    }

    /// The attribute of GGUF `tokenizer.ggml.token_type` value `t` (llama.cpp's
    /// `llama_token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte; anything else is undefined.
    fn from_token_type(t: i32) -> TokenAttr {
        match t {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

/// Which algorithm turns text into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece BPE by scores with byte fallback (`tokenizer.ggml.model = "llama"`;
    /// Llama 1/2, Mistral, Gemma 1-3).
    Spm,
    /// BPE by merge ranks over pre-tokenized words (`"gpt2"`: GPT-2, Llama 3, Qwen,
    /// DeepSeek; `"gemma4"`).
    Bpe,
}

/// The special tokens a vocabulary defines (`None`: it has none of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    /// End of turn (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`).
    pub eot: Option<TokenId>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<TokenId>,
    pub unk: Option<TokenId>,
    pub sep: Option<TokenId>,
    pub pad: Option<TokenId>,
    pub mask: Option<TokenId>,
    pub fim_pre: Option<TokenId>,
    pub fim_suf: Option<TokenId>,
    pub fim_mid: Option<TokenId>,
    pub fim_pad: Option<TokenId>,
    pub fim_rep: Option<TokenId>,
    pub fim_sep: Option<TokenId>,
}

/// The vocabulary and the flags read with it.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabKind,
    /// The pre-tokenizer (BPE only).
    pub pre: Option<PreSpec>,
    /// Whether `tokenizer.ggml.pre` was absent, so that the default pre-tokenizer was
    /// used as llama.cpp does (it warns that quality will be degraded).
    pub pre_missing: bool,
    pub texts: Vec<Box<str>>,
    pub scores: Vec<f32>,
    pub attrs: Vec<TokenAttr>,
    pub to_id: FxHashMap<TextKey, TokenId>,
    pub special: SpecialTokens,
    /// Tokens that end generation, sorted.
    pub eog: Vec<TokenId>,
    /// Tokens matched in text before tokenizing (control, user-defined and unknown
    /// tokens), longest text first.
    pub special_cache: Vec<TokenId>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    pub escape_whitespaces: bool,
    pub ignore_merges: bool,
    /// For `"gemma4"`-style BPE: byte tokens are `<0xXX>`, not GPT-2's mapped bytes.
    pub byte_encode: bool,
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

/// Texts that llama.cpp treats as end of generation wherever they appear in a vocabulary
/// (and then forces to be control tokens).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

impl Vocab {
    pub(crate) fn from_metadata(md: &Metadata) -> Result<Vocab, TokenizerError> {
        let model = md.get_str(KEY_MODEL)?;
        let mut pre_name: Option<&str> = md.get_opt::<&str>(KEY_PRE)?;

        // Per-model defaults (llama.cpp: "determine vocab type"), then the pre-tokenizer's
        // flags for BPE.
        let mut special = SpecialTokens::default();
        let kind;
        let mut add_space_prefix = false;
        let add_bos;
        let clean_spaces;
        let escape_whitespaces;
        let mut ignore_merges = false;
        let mut pre = None;
        let mut pre_missing = false;
        match model {
            "llama" => {
                kind = VocabKind::Spm;
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                add_space_prefix = true;
                add_bos = true;
                clean_spaces = false;
                escape_whitespaces = true;
            }
            "gpt2" | "gemma4" => {
                kind = VocabKind::Bpe;
                if model == "gpt2" {
                    special.bos = Some(11);
                    special.eos = Some(11);
                } else {
                    pre_name = Some("gemma4");
                }
                let spec = match pre_name {
                    None | Some("") => {
                        pre_missing = true;
                        PreSpec::from_name("default")?
                    }
                    Some(name) => PreSpec::from_name(name)?,
                };
                clean_spaces = spec.clean_spaces;
                ignore_merges = spec.ignore_merges;
                add_bos = spec.add_bos;
                escape_whitespaces = spec.escape_whitespaces;
                if spec.no_default_bos {
                    special.bos = None;
                }
                pre = Some(spec);
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
        // Byte-level vocabularies store bytes through GPT-2's mapping; SentencePiece-style
        // BPE (which escapes spaces) stores raw UTF-8 with <0xXX> byte tokens.
        let byte_encode = !escape_whitespaces;
        if let Some(v) = md.get_opt::<bool>("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // Tokens, scores, types.
        let tokens = md
            .get_array(KEY_TOKENS)?
            .as_strings()
            .ok_or_else(|| bad_array(md, KEY_TOKENS, "expected an array of strings"))?;
        let n = tokens.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(TokenizerError::VocabSize(n));
        }
        let scores = read_scores(md, n)?;
        let types = read_types(md, n)?;

        let mut texts = Vec::with_capacity(n);
        let mut to_id = FxHashMap::default();
        to_id.reserve(n);
        let mut attrs = Vec::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            let id = i as TokenId;
            // llama.cpp names empty tokens so that they stay distinct.
            let text: Box<str> = if t.is_empty() {
                format!("[EMPTY_{i}]").into()
            } else {
                Box::from(t)
            };
            if let Some(&first) = to_id.get(text.as_bytes()) {
                return Err(TokenizerError::DuplicateToken {
                    id,
                    first,
                    text: text.into(),
                });
            }
            to_id.insert(TextKey::new(&text), id);
            texts.push(text);
            attrs.push(match &types {
                Some(t) => TokenAttr::from_token_type(t[i]),
                None => TokenAttr::NORMAL,
            });
        }

        let mut v = Vocab {
            kind,
            pre,
            pre_missing,
            texts,
            scores,
            attrs,
            to_id,
            special,
            eog: Vec::new(),
            special_cache: Vec::new(),
            add_bos,
            add_eos: false,
            add_space_prefix,
            clean_spaces,
            escape_whitespaces,
            ignore_merges,
            byte_encode,
        };
        v.read_special_ids(md)?;
        if let Some(b) = md.get_opt::<bool>("tokenizer.ggml.add_bos_token")? {
            v.add_bos = b;
        }
        if let Some(b) = md.get_opt::<bool>("tokenizer.ggml.add_eos_token")? {
            v.add_eos = b;
        }
        // llama.cpp: Gemma 4 always starts with BOS, whatever its metadata says.
        if model == "gemma4" {
            v.add_bos = true;
        }
        v.detect_special_by_text();
        v.mark_unused();
        v.collect_eog();
        v.build_special_cache();
        v.apply_model_strip_attrs(md);
        Ok(v)
    }

    pub(crate) fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    /// The id of the token whose text is `text`.
    #[inline]
    pub(crate) fn id_of(&self, text: &str) -> Option<TokenId> {
        self.to_id.get(text.as_bytes()).copied()
    }

    /// The special token ids from metadata, bounds-checked; defaults that do not fit the
    /// vocabulary are dropped (as llama.cpp does).
    fn read_special_ids(&mut self, md: &Metadata) -> Result<(), TokenizerError> {
        let n = self.n_tokens();
        type Slot = fn(&mut SpecialTokens) -> &mut Option<TokenId>;
        let slots: [(&str, Slot); 17] = [
            ("tokenizer.ggml.bos_token_id", |s| &mut s.bos),
            ("tokenizer.ggml.eos_token_id", |s| &mut s.eos),
            ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
            ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
            ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
            ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
            ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
            ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
            ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
            ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
            ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
            ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
            // Deprecated names of the first three FIM tokens; they win when present.
            ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
            ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
            ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
        ];
        for (key, field) in slots {
            let slot = field(&mut self.special);
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
            let Some(value) = md.get(key) else {
                continue;
            };
            let id = value
                .to_u64_lossless()
                .ok_or_else(|| GgufError::WrongType {
                    key: key.to_string(),
                    expected: "a non-negative integer",
                    found: value.type_description(),
                })?;
            if id >= n as u64 {
                return Err(TokenizerError::IdOutOfRange {
                    key: key.to_string(),
                    id,
                    n_tokens: n,
                });
            }
            *slot = Some(id as TokenId);
        }
        Ok(())
    }

    /// llama.cpp finds end-of-turn, end-of-message and fill-in-the-middle tokens the
    /// metadata did not name by their text, and makes each one it finds a control token.
    /// (It scans a hash map, so which of two candidates wins is unspecified there; we take
    /// the lowest id.)
    fn detect_special_by_text(&mut self) {
        let s = &mut self.special;
        let slots: [(&mut Option<TokenId>, &[&str]); 8] = [
            (&mut s.eot, EOT_TEXTS),
            (&mut s.eom, EOM_TEXTS),
            (&mut s.fim_pre, FIM_PRE_TEXTS),
            (&mut s.fim_suf, FIM_SUF_TEXTS),
            (&mut s.fim_mid, FIM_MID_TEXTS),
            (&mut s.fim_pad, FIM_PAD_TEXTS),
            (&mut s.fim_rep, FIM_REP_TEXTS),
            (&mut s.fim_sep, FIM_SEP_TEXTS),
        ];
        for (slot, texts) in slots {
            if slot.is_some() {
                continue;
            }
            let found = texts
                .iter()
                .filter_map(|t| self.to_id.get(t.as_bytes()))
                .min();
            if let Some(&id) = found {
                *slot = Some(id);
                self.attrs[id as usize].set(TokenAttr::CONTROL, true);
            }
        }
    }

    /// Control tokens named "unused…" are unused (llama.cpp's auto-detection).
    fn mark_unused(&mut self) {
        for (text, attr) in self.texts.iter().zip(&mut self.attrs) {
            if attr.intersects(TokenAttr::CONTROL) && text.contains("unused") {
                attr.set(TokenAttr::UNUSED, true);
            }
        }
    }

    /// The end-of-generation set, with llama.cpp's per-model corrections.
    fn collect_eog(&mut self) {
        let mut eog: Vec<TokenId> = Vec::new();
        let s = self.special;
        eog.extend([s.fim_pad, s.fim_rep, s.fim_sep].into_iter().flatten());
        for t in EOG_TEXTS {
            if let Some(&id) = self.to_id.get(t.as_bytes()) {
                eog.push(id);
                self.attrs[id as usize].set(TokenAttr::CONTROL, true);
            }
        }
        // gpt-oss: these are always rendered.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = self.to_id.get(t.as_bytes()) {
                self.attrs[id as usize] = TokenAttr::USER_DEFINED;
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let text_of = |id: TokenId| &*self.texts[id as usize];
        let has = |t: &str| eog.iter().any(|&id| text_of(id) == t);
        // o200k_harmony and solar-open: "<|end|>" ends a message, not generation.
        let call = has("<|call|>") || has("<|calls|>");
        if call && (has("<|return|>") || has("<|flush|>")) && has("<|end|>") {
            if let Some(&id) = self.to_id.get("<|end|>".as_bytes()) {
                eog.retain(|&e| e != id);
                self.attrs[id as usize] = TokenAttr::USER_DEFINED;
            }
        }
        let has = |t: &str| eog.iter().any(|&id| &*self.texts[id as usize] == t);
        // Gemma 4 and PLaMo: "</s>" is an ordinary token there.
        if (has("<|tool_response>") || has("<|plamo:eos|>")) && has("</s>") {
            if let Some(&id) = self.to_id.get("</s>".as_bytes()) {
                eog.retain(|&e| e != id);
                self.attrs[id as usize] = TokenAttr::NORMAL;
            }
        }
        self.eog = eog;
    }

    fn build_special_cache(&mut self) {
        let special = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
        let mut cache: Vec<TokenId> = (0..self.n_tokens() as TokenId)
            .filter(|&id| self.attrs[id as usize].intersects(special))
            .collect();
        // Longest first, as llama.cpp sorts them; equal lengths by id (llama.cpp's sort is
        // not stable, so its order among those is unspecified).
        cache.sort_by_key(|&id| std::cmp::Reverse(self.texts[id as usize].len()));
        self.special_cache = cache;
    }

    /// Whitespace-stripping attributes llama.cpp sets by model name (they are not stored
    /// in GGUF files).
    fn apply_model_strip_attrs(&mut self, md: &Metadata) {
        let get = |k: &str| md.get(k).and_then(Value::as_str).unwrap_or("");
        let name = get("general.name").to_lowercase();
        let pre = get(KEY_PRE);
        let arch = get("general.architecture");
        let mut set = |text: &str, bits: TokenAttr, on: bool| {
            if let Some(&id) = self.to_id.get(text.as_bytes()) {
                self.attrs[id as usize].set(bits, on);
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            set("<mask>", TokenAttr::LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for &id in &self.special_cache {
                self.attrs[id as usize].set(TokenAttr::RSTRIP, true);
            }
            let mut set = |text: &str, on: bool| {
                if let Some(&id) = self.to_id.get(text.as_bytes()) {
                    self.attrs[id as usize].set(TokenAttr::RSTRIP, on);
                }
            };
            set("</s>", true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(t, false);
            }
        } else if name.contains("modern-bert") {
            set("[MASK]", TokenAttr::LSTRIP, true);
        }
    }
}

fn bad_array(md: &Metadata, key: &str, reason: &str) -> TokenizerError {
    let found = md.get(key).map(Value::type_description).unwrap_or_default();
    TokenizerError::BadArray {
        key: key.to_string(),
        reason: format!("{reason}, found {found}"),
    }
}

/// `tokenizer.ggml.scores`: FLOAT32 or INT32, at least one per token; zero when absent.
fn read_scores(md: &Metadata, n: usize) -> Result<Vec<f32>, TokenizerError> {
    let Some(arr) = md.get_opt::<&Array>(KEY_SCORES)? else {
        return Ok(vec![0.0; n]);
    };
    let scores: Vec<f32> = match arr {
        Array::F32(v) => v.iter().take(n).copied().collect(),
        Array::I32(v) => v.iter().take(n).map(|&s| s as f32).collect(),
        _ => {
            return Err(bad_array(
                md,
                KEY_SCORES,
                "expected FLOAT32 or INT32 elements",
            ))
        }
    };
    if scores.len() < n {
        return Err(TokenizerError::BadArray {
            key: KEY_SCORES.to_string(),
            reason: format!("{} scores for {n} tokens", scores.len()),
        });
    }
    if let Some(id) = scores.iter().position(|s| s.is_nan()) {
        return Err(TokenizerError::NanScore { id: id as u32 });
    }
    Ok(scores)
}

/// `tokenizer.ggml.token_type`: INT32, at least one per token; absent means all normal.
fn read_types(md: &Metadata, n: usize) -> Result<Option<Vec<i32>>, TokenizerError> {
    let Some(arr) = md.get_opt::<&Array>(KEY_TOKEN_TYPE)? else {
        return Ok(None);
    };
    let types = arr
        .as_i32()
        .ok_or_else(|| bad_array(md, KEY_TOKEN_TYPE, "expected INT32 elements"))?;
    if types.len() < n {
        return Err(TokenizerError::BadArray {
            key: KEY_TOKEN_TYPE.to_string(),
            reason: format!("{} types for {n} tokens", types.len()),
        });
    }
    Ok(Some(types[..n].to_vec()))
}
