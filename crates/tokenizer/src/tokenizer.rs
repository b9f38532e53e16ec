//! [`Tokenizer`]: a vocabulary with its algorithm, pre-tokenizer and special-token
//! matcher, and the encode/decode entry points (llama.cpp's `llama_vocab::impl::tokenize`
//! and `detokenize`).

use std::borrow::Cow;

use hearth_gguf::{GgufFile, Metadata};

use crate::bpe::{BpeModel, BpeScratch, WordCache};
use crate::decode::{self, Pieces, StreamDecoder};
use crate::error::TokenizerError;
use crate::pre::{PreKind, PreTokenizer, SplitScratch};
use crate::special::{Fragment, PartitionScratch, SpecialMatcher};
use crate::spm::{SpmModel, SpmScratch, SpmWordCache};
use crate::vocab::{SpecialTokens, TokenAttr, TokenId, Vocab, VocabKind};

/// Texts longer than this are refused: symbol positions are kept in 32 bits.
const MAX_TEXT_LEN: usize = (u32::MAX / 2) as usize;

/// A tokenizer built from GGUF metadata, producing the same ids as llama.cpp.
///
/// Immutable after construction and `Sync`: share one between threads. Each call keeps
/// its working buffers to itself.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    algo: Algo,
    specials: SpecialMatcher,
    pieces: Pieces,
}

#[derive(Debug)]
enum Algo {
    Spm(Box<SpmModel>),
    Bpe {
        model: Box<BpeModel>,
        pre: PreTokenizer,
        /// Gemma 4: a word of newlines that is a token stays whole.
        whole_newline_words: bool,
    },
}

impl Tokenizer {
    /// The tokenizer of a GGUF file (its `tokenizer.ggml.*` metadata).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Self::from_metadata(file.metadata())
    }

    /// The tokenizer described by `tokenizer.ggml.*` keys of `md`.
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let vocab = Vocab::from_metadata(md)?;
        // The loader gives BPE vocabularies, and only them, a pre-tokenizer.
        let algo = match vocab.pre {
            None => Algo::Spm(Box::new(SpmModel::new(&vocab))),
            Some(spec) => Algo::Bpe {
                model: Box::new(BpeModel::new(&vocab, md)?),
                pre: PreTokenizer::new(spec.kind)?,
                whole_newline_words: spec.kind == PreKind::Gemma4,
            },
        };
        let specials = SpecialMatcher::new(&vocab)?;
        let pieces = Pieces::new(&vocab);
        Ok(Tokenizer {
            vocab,
            algo,
            specials,
            pieces,
        })
    }

    /// Tokenizes `text`.
    ///
    /// `add_special` adds BOS / EOS where the model's metadata asks for them
    /// (`tokenizer.ggml.add_bos_token` / `add_eos_token`). `parse_special` lets the text of
    /// control tokens (`<|im_start|>`, `<start_of_turn>`) stand for those tokens; without
    /// it such text is tokenized as ordinary text. User-defined tokens are matched either
    /// way, as in llama.cpp. The same as llama.cpp's `llama_tokenize(vocab, text,
    /// add_special, parse_special)`.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, add_special, parse_special, &mut out)?;
        Ok(out)
    }

    /// [`Tokenizer::encode`] with special tokens parsed except inside the `protected` byte
    /// ranges of `text`: a chat prompt rendered by its template, whose message contents
    /// (the ranges) must stay text even when a user writes `<start_of_turn>` or
    /// `<|im_end|>` in them, so that no one can forge the conversation's structure.
    pub fn encode_protected(
        &self,
        text: &str,
        add_special: bool,
        protected: &[std::ops::Range<usize>],
    ) -> Result<Vec<TokenId>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_ranges(text, add_special, true, protected, &mut out)?;
        Ok(out)
    }

    /// Where control tokens' texts occur in `text` (what [`Tokenizer::encode`] with
    /// `parse_special` could turn into control tokens).
    pub fn control_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.specials.control_spans(text)
    }

    /// [`Tokenizer::encode`], appending to `out`.
    pub fn encode_into(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        out: &mut Vec<TokenId>,
    ) -> Result<(), TokenizerError> {
        self.encode_ranges(text, add_special, parse_special, &[], out)
    }

    fn encode_ranges(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        protected: &[std::ops::Range<usize>],
        out: &mut Vec<TokenId>,
    ) -> Result<(), TokenizerError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(TokenizerError::TextTooLong(text.len()));
        }
        let v = &self.vocab;
        let mut fragments = Vec::new();
        self.specials.partition(
            text,
            parse_special,
            protected,
            &mut fragments,
            &mut PartitionScratch::default(),
        );

        if add_special && v.add_bos {
            out.push(
                v.special
                    .bos
                    .ok_or(TokenizerError::MissingSpecialToken("BOS"))?,
            );
        }
        // The text between special tokens, as the algorithm sees it; the word caches
        // borrow from these.
        let pieces = self.text_pieces(text, &fragments);
        let mut next_piece = pieces.iter().map(|p| &**p);
        match &self.algo {
            Algo::Spm(model) => {
                let mut cache = SpmWordCache::default();
                let mut scratch = SpmScratch::default();
                for f in &fragments {
                    match f {
                        Fragment::Token(id) => out.push(*id),
                        Fragment::Text(_) => {
                            let piece = next_piece.next().unwrap_or_default();
                            model.encode(v, piece, out, &mut cache, &mut scratch)?;
                        }
                    }
                }
            }
            Algo::Bpe {
                model,
                pre,
                whole_newline_words,
            } => {
                let mut cache = WordCache::default();
                let mut split = SplitScratch::default();
                let mut scratch = BpeScratch::default();
                for f in &fragments {
                    let piece = match f {
                        Fragment::Token(id) => {
                            out.push(*id);
                            continue;
                        }
                        Fragment::Text(_) => next_piece.next().unwrap_or_default(),
                    };
                    for w in pre.split(piece, &mut split)? {
                        let word = &piece[w.clone()];
                        // Gemma 4: a run of newlines that is a token stays whole.
                        if *whole_newline_words && word.bytes().all(|b| b == b'\n') {
                            if let Some(id) = v.id_of(word) {
                                out.push(id);
                                continue;
                            }
                        }
                        model.encode_word(v, word, out, &mut cache, &mut scratch);
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.push(
                v.special
                    .eos
                    .ok_or(TokenizerError::MissingSpecialToken("EOS"))?,
            );
        }
        Ok(())
    }

    /// The text fragments of `fragments` as the tokenizer works on them. SentencePiece (and
    /// SentencePiece-style BPE) writes spaces as U+2581, and SentencePiece adds one before
    /// the text and after each special token when `add_space_prefix` (llama.cpp: "prefix
    /// with space if previous is special"); byte-level BPE takes the text as is.
    fn text_pieces<'a>(&self, text: &'a str, fragments: &[Fragment]) -> Vec<Cow<'a, str>> {
        let v = &self.vocab;
        let spm = v.kind == VocabKind::Spm;
        let mut pieces = Vec::new();
        let mut prev_special = true;
        for f in fragments {
            match f {
                Fragment::Token(_) => prev_special = true,
                Fragment::Text(r) => {
                    let t = &text[r.clone()];
                    pieces.push(if spm || v.escape_whitespaces {
                        let mut e = String::with_capacity(t.len() + 8);
                        if spm && v.add_space_prefix && prev_special {
                            e.push('\u{2581}');
                        }
                        push_escaped(&mut e, t);
                        Cow::Owned(e)
                    } else {
                        Cow::Borrowed(t)
                    });
                    prev_special = false;
                }
            }
        }
        pieces
    }

    /// The bytes token `id` stands for (llama.cpp's `token_to_piece`). Control and unknown
    /// tokens give nothing unless `special`. Pieces may be partial UTF-8 (byte tokens).
    pub fn token_to_piece(&self, id: TokenId, special: bool) -> Result<&[u8], TokenizerError> {
        self.pieces.get(id, special)
    }

    /// Joins the pieces of `tokens` as llama.cpp's `llama_detokenize` does: drops a leading
    /// BOS and a trailing EOS if `remove_special` (and the model adds them), renders
    /// control tokens only if `unparse_special`, removes the space SentencePiece put before
    /// the first word, and undoes tokenization spaces where the vocabulary asks for it.
    /// Bytes that are not UTF-8 become U+FFFD.
    pub fn decode(
        &self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(tokens, remove_special, unparse_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// [`Tokenizer::decode`] without the UTF-8 conversion.
    pub fn decode_bytes(
        &self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>, TokenizerError> {
        decode::detokenize(
            &self.vocab,
            &self.pieces,
            tokens,
            remove_special,
            unparse_special,
        )
    }

    /// A decoder for a stream of generated tokens that yields only whole characters.
    ///
    /// `strip_leading_space` removes one leading space from the first piece, as
    /// [`Tokenizer::decode`] does for SentencePiece vocabularies (see
    /// [`Tokenizer::add_space_prefix`]); pass it when the stream starts the text, not when
    /// it continues a prompt.
    pub fn stream_decoder(
        &self,
        unparse_special: bool,
        strip_leading_space: bool,
    ) -> StreamDecoder<'_> {
        StreamDecoder::new(&self.pieces, unparse_special, strip_leading_space)
    }

    /// The number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// SentencePiece or BPE.
    pub fn kind(&self) -> VocabKind {
        self.vocab.kind
    }

    /// The pre-tokenizer type (BPE vocabularies only).
    pub fn pre_kind(&self) -> Option<PreKind> {
        self.vocab.pre.map(|p| p.kind)
    }

    /// Whether `tokenizer.ggml.pre` was missing from a BPE vocabulary, so that llama.cpp's
    /// default pre-tokenizer is used (llama.cpp warns that quality may suffer).
    pub fn pre_tokenizer_missing(&self) -> bool {
        self.vocab.pre_missing
    }

    /// The special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.vocab.special
    }

    /// Whether encoding with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether encoding with `add_special` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether SentencePiece adds a space before the text (so decoding removes one).
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }

    /// Whether `id` ends generation (EOS, end of turn, and the like).
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation tokens, sorted.
    pub fn eog_tokens(&self) -> &[TokenId] {
        &self.vocab.eog
    }

    /// The text of token `id` as stored in the vocabulary.
    pub fn token_text(&self, id: TokenId) -> Result<&str, TokenizerError> {
        self.vocab
            .texts
            .get(id as usize)
            .map(|t| &**t)
            .ok_or(TokenizerError::InvalidToken {
                id,
                n_tokens: self.n_tokens(),
            })
    }

    /// The attributes of token `id`.
    pub fn token_attr(&self, id: TokenId) -> Result<TokenAttr, TokenizerError> {
        self.vocab
            .attrs
            .get(id as usize)
            .copied()
            .ok_or(TokenizerError::InvalidToken {
                id,
                n_tokens: self.n_tokens(),
            })
    }

    /// The id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.vocab.id_of(text)
    }
}

/// Appends `s` with spaces written as U+2581, SentencePiece's visible space.
fn push_escaped(out: &mut String, s: &str) {
    for (i, part) in s.split(' ').enumerate() {
        if i > 0 {
            out.push('\u{2581}');
        }
        out.push_str(part);
    }
}
