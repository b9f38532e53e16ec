//! Arbitrary input to the two real tokenizers Hearth ships tests for — DeepSeek-R1-Distill-
//! Qwen's byte-level BPE and Gemma 3's SentencePiece — must never panic:
//!
//! - encoding any text (the input's bytes, lossily UTF-8) in every mode gives ids inside
//!   the vocabulary, and on the byte-level vocabulary `decode(encode(s)) == s`;
//! - decoding any id sequence (the input read as little-endian u32s), whole or streamed,
//!   succeeds exactly when every id is inside the vocabulary.
//!
//! The vocabularies come from `tests/fixtures/tokenizer/fetch-vocabs.sh` (the directory it
//! prints, in `HEARTH_VOCAB_DIR`, default `~/.cache/hearth/vocab`).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_gguf::GgufFile;
use hearth_tokenizer::{Tokenizer, VocabKind};
use libfuzzer_sys::fuzz_target;

fn tokenizers() -> &'static [Tokenizer] {
    static TOKENIZERS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let dir = std::env::var_os("HEARTH_VOCAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/hearth/vocab")
            });
        ["deepseek-r1-distill-qwen-7b.vocab.gguf", "gemma-3-270m.vocab.gguf"]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let file = GgufFile::open(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (run fetch-vocabs.sh)", path.display()));
                Tokenizer::from_gguf(&file).expect("the real vocabularies load")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let tokenizers = tokenizers();
    let tok = &tokenizers[selector as usize % tokenizers.len()];
    let n = tok.n_tokens();
    if selector & 0x80 == 0 {
        let text = String::from_utf8_lossy(rest);
        let (add, parse) = (selector & 2 != 0, selector & 4 != 0);
        let ids = tok.encode(&text, add, parse).expect("any text encodes");
        assert!(ids.iter().all(|&id| (id as usize) < n));
        if tok.kind() == VocabKind::Bpe && !add && !parse {
            assert_eq!(tok.decode(&ids, false, false).expect("own ids decode"), text);
        }
    } else {
        let ids: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (n as u32 + 16))
            .collect();
        let in_range = ids.iter().all(|&id| (id as usize) < n);
        assert_eq!(tok.decode(&ids, selector & 2 != 0, selector & 4 != 0).is_ok(), in_range);
        let mut stream = tok.stream_decoder(selector & 4 != 0, selector & 8 != 0);
        for &id in &ids {
            assert_eq!(stream.push(id).is_ok(), (id as usize) < n);
        }
        let _ = stream.finish();
    }
});
