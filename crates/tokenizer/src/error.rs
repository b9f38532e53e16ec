//! Why a tokenizer could not be built from a file's metadata, or a call could not complete.
//!
//! Messages name the metadata key (or token id) at fault, so that one line of output tells
//! a user where the file is broken.

/// A refused tokenizer definition, or a failed encode/decode call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A metadata key is missing, or holds another type than the one the tokenizer needs.
    #[error(transparent)]
    Metadata(#[from] hearth_gguf::GgufError),

    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error(
        "metadata key 'tokenizer.ggml.model': tokenizer '{0}' is not supported \
         (supported: 'llama' (SentencePiece), 'gpt2' (byte-level BPE), 'gemma4')"
    )]
    UnsupportedModel(String),

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know. Guessing one
    /// would silently produce different token ids than the model was trained on.
    #[error("metadata key 'tokenizer.ggml.pre': unknown pre-tokenizer '{0}'")]
    UnknownPreTokenizer(String),

    /// An array the tokenizer needs has the wrong element type or is too short.
    #[error("metadata key '{key}': {reason}")]
    BadArray { key: String, reason: String },

    /// A token id read from metadata is not in the vocabulary.
    #[error(
        "metadata key '{key}': token id {id} is out of range (vocabulary has {n_tokens} tokens)"
    )]
    IdOutOfRange {
        key: String,
        id: u64,
        n_tokens: usize,
    },

    /// Two vocabulary entries with the same text: which id the text maps to would be
    /// ambiguous (llama.cpp refuses such vocabularies too).
    #[error("metadata key 'tokenizer.ggml.tokens': token {id} duplicates the text of token {first} ({text:?})")]
    DuplicateToken { id: u32, first: u32, text: String },

    /// A score that is NaN: the merge order would be undefined.
    #[error("metadata key 'tokenizer.ggml.scores': score of token {id} is NaN")]
    NanScore { id: u32 },

    /// The vocabulary is empty or larger than token ids can address.
    #[error("metadata key 'tokenizer.ggml.tokens': {0} tokens (must be between 1 and 2^31 - 1)")]
    VocabSize(usize),

    /// The metadata asks for a special token (BOS/EOS) to be added, but names none.
    #[error("the model asks for a {0} token to be added but does not define one")]
    MissingSpecialToken(&'static str),

    /// Byte fallback needs a token for this byte and the vocabulary has none
    /// (llama.cpp aborts here).
    #[error("the vocabulary has no byte token for byte 0x{0:02X}")]
    NoByteToken(u8),

    /// The text is too long to tokenize in one call (more than 2 GiB).
    #[error("text of {0} bytes is too long to tokenize in one call")]
    TextTooLong(usize),

    /// A token id given to the decoder is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary has {n_tokens} tokens)")]
    InvalidToken { id: u32, n_tokens: usize },

    /// The pre-tokenizer's regular expression gave up on this input (its backtracking
    /// limit was reached); the input is refused rather than split differently.
    #[error("pre-tokenizer regex failed on this input: {0}")]
    Regex(String),
}
