//! Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata, producing exactly the
//! token ids llama.cpp produces, and a streaming detokenizer.
//!
//! Two algorithms cover the models Hearth runs:
//!
//! * SentencePiece BPE by scores with byte fallback (`tokenizer.ggml.model = "llama"`:
//!   Llama 2, Mistral, Gemma 1–3) — [`spm`];
//! * byte-level BPE by merge ranks (`"gpt2"`: Llama 3, Qwen 2/2.5/3, DeepSeek, GPT-2, …,
//!   and Gemma 4's `"gemma4"`) — [`bpe`], after a pre-tokenizer chosen by
//!   `tokenizer.ggml.pre` — [`pre`].
//!
//! Before either runs, text that spells a special token is cut out ([`special`]), and
//! BOS/EOS are added as the metadata says. References: llama.cpp's `src/llama-vocab.cpp`
//! and `src/unicode.cpp` (the version vendored by llama-cpp-python 0.3.36), whose behaviour
//! — quirks included — is the specification here; the tests compare against its output.
//!
//! Not done here: WordPiece (BERT), Unigram (T5), RWKV and PLaMo vocabularies; text
//! normalization beyond what those two algorithms do; chat templates (`hearth-engine`).
//! Untrusted files and inputs give [`TokenizerError`]s, never panics.

#![forbid(unsafe_code)]

mod bpe;
mod decode;
mod error;
mod hash;
mod pre;
mod special;
mod spm;
mod tokenizer;
mod unicode;
mod vocab;

pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use pre::PreKind;
pub use tokenizer::Tokenizer;
pub use vocab::{SpecialTokens, TokenAttr, TokenId, VocabKind};

#[cfg(test)]
mod tests {
    /// One tokenizer serves every thread.
    #[test]
    fn tokenizer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Tokenizer>();
    }
}
