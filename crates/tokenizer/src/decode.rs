//! Tokens back to text: each token's piece (llama.cpp's `token_to_piece`), whole-sequence
//! detokenizing (`llama_detokenize`, with its space clean-up), and a streaming decoder
//! that only ever hands out whole UTF-8 characters.

use crate::error::TokenizerError;
use crate::unicode;
use crate::vocab::{TokenAttr, TokenId, Vocab, VocabKind};

/// Every token's piece, computed once at load (llama.cpp's `cache_token_to_piece`): the
/// bytes the token stands for, with special tokens spelled out.
#[derive(Debug)]
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    /// Start of each token's piece in `bytes`, plus the end.
    offsets: Vec<usize>,
    /// Control and unknown tokens: printed only when special tokens are rendered.
    hidden: Vec<bool>,
}

impl Pieces {
    pub(crate) fn new(vocab: &Vocab) -> Pieces {
        let n = vocab.n_tokens();
        let mut bytes = Vec::with_capacity(vocab.texts.iter().map(|t| t.len()).sum());
        let mut offsets = Vec::with_capacity(n + 1);
        let mut hidden = Vec::with_capacity(n);
        for (text, &attr) in vocab.texts.iter().zip(&vocab.attrs) {
            offsets.push(bytes.len());
            hidden.push(attr.intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL));
            piece_of(vocab, text, attr, &mut bytes);
        }
        offsets.push(bytes.len());
        Pieces {
            bytes,
            offsets,
            hidden,
        }
    }

    /// The piece of token `id`; empty for a control or unknown token unless `special`.
    pub(crate) fn get(&self, id: TokenId, special: bool) -> Result<&[u8], TokenizerError> {
        let i = id as usize;
        let n_tokens = self.hidden.len();
        if i >= n_tokens {
            return Err(TokenizerError::InvalidToken { id, n_tokens });
        }
        if !special && self.hidden[i] {
            return Ok(&[]);
        }
        Ok(&self.bytes[self.offsets[i]..self.offsets[i + 1]])
    }
}

/// Appends the piece of one token (llama.cpp's `token_to_piece` with `special = true`).
fn piece_of(vocab: &Vocab, text: &str, attr: TokenAttr, out: &mut Vec<u8>) {
    if attr.intersects(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
        out.extend_from_slice(text.as_bytes());
    } else if attr.intersects(TokenAttr::NORMAL) {
        if vocab.kind == VocabKind::Spm || vocab.escape_whitespaces {
            // SentencePiece writes spaces as U+2581.
            for (i, part) in text.split('\u{2581}').enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(part.as_bytes());
            }
        } else {
            decode_byte_level(text, out);
        }
    } else if attr.intersects(TokenAttr::BYTE) {
        out.push(token_to_byte(text));
    }
    // Undefined and unused tokens print as nothing, as in llama.cpp.
}

/// Undoes GPT-2's byte mapping (llama.cpp's `llama_decode_text`). A character outside the
/// mapping is written the way llama.cpp writes it, `[UNK_BYTE_0x…<token text>]`.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// The byte of a byte token `<0xXX>`: llama.cpp parses the two characters after `<0x`
/// with `strtol(…, 16)`; a malformed token yields what `strtol` would (0 if no digits)
/// instead of llama.cpp's exception on a too-short text.
fn token_to_byte(text: &str) -> u8 {
    let digits = text.as_bytes().get(3..text.len().min(5)).unwrap_or(&[]);
    let (neg, digits) = match digits.first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits),
    };
    let mut v: i32 = 0;
    for &d in digits {
        match (d as char).to_digit(16) {
            Some(x) => v = v * 16 + x as i32,
            None => break,
        }
    }
    (if neg { -v } else { v }) as u8
}

/// llama.cpp's `llama_detokenize`: joins pieces, dropping a leading BOS / trailing EOS
/// when `remove_special`, removing the space SentencePiece put before the first word
/// (`add_space_prefix`), and, for vocabularies that ask for it, undoing Hugging Face's
/// "clean_up_tokenization_spaces" (" ," → ",", " 's" → "'s").
pub(crate) fn detokenize(
    vocab: &Vocab,
    pieces: &Pieces,
    tokens: &[TokenId],
    remove_special: bool,
    unparse_special: bool,
) -> Result<Vec<u8>, TokenizerError> {
    let mut tokens = tokens;
    let mut remove_space = vocab.add_space_prefix;
    if remove_special && vocab.add_bos {
        if let (Some(&first), Some(bos)) = (tokens.first(), vocab.special.bos) {
            if first == bos {
                remove_space = false;
                tokens = &tokens[1..];
            }
        }
    }
    if remove_special && vocab.add_eos {
        if let (Some(&last), Some(eos)) = (tokens.last(), vocab.special.eos) {
            if last == eos {
                tokens = &tokens[..tokens.len() - 1];
            }
        }
    }
    let mut text = Vec::new();
    for &id in tokens {
        let mut piece = pieces.get(id, unparse_special)?;
        if remove_space {
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        remove_space = false;
        text.extend_from_slice(piece);
    }
    if vocab.clean_spaces {
        clean_up_spaces(&mut text);
    }
    Ok(text)
}

/// The three passes of llama.cpp's `clean_spaces` (byte for byte).
fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ," lose the space.
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // " ' " becomes "'". llama.cpp overwrites the skipped space with NUL in place, so that
    // space no longer counts as the space before a following apostrophe.
    let mut t = std::mem::take(&mut out);
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            out.push(x);
            t[i + 1] = 0;
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // " 's", " 'm", " 're", " 've" lose the space.
    let t = std::mem::take(&mut out);
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied();
            if matches!(x1, b's' | b'm')
                || (i + 2 < t.len() && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))))
            {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}

/// Turns a stream of token ids into text, one call per token, handing out only whole
/// UTF-8 characters: the bytes of a character split across byte tokens wait until the
/// character is complete. Bytes that can never form a character come out as U+FFFD.
///
/// Pieces are joined as llama.cpp's `token_to_piece` gives them, without
/// [`detokenize`]'s space clean-up (llama.cpp's server streams the same way).
#[derive(Debug)]
pub struct StreamDecoder<'t> {
    pieces: &'t Pieces,
    unparse_special: bool,
    strip_leading_space: bool,
    pending: Vec<u8>,
    ready: String,
}

impl<'t> StreamDecoder<'t> {
    pub(crate) fn new(
        pieces: &'t Pieces,
        unparse_special: bool,
        strip_leading_space: bool,
    ) -> Self {
        StreamDecoder {
            pieces,
            unparse_special,
            strip_leading_space,
            pending: Vec::new(),
            ready: String::new(),
        }
    }

    /// Adds one token; returns the text it completes (possibly empty). The returned text
    /// is valid until the next call.
    pub fn push(&mut self, id: TokenId) -> Result<&str, TokenizerError> {
        let mut piece = self.pieces.get(id, self.unparse_special)?;
        if self.strip_leading_space {
            self.strip_leading_space = false;
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        self.pending.extend_from_slice(piece);
        self.ready.clear();
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(s) => {
                    self.ready.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix before `valid_up_to` is UTF-8, so this always succeeds.
                    if let Ok(s) = std::str::from_utf8(&self.pending[consumed..consumed + valid]) {
                        self.ready.push_str(s);
                    }
                    consumed += valid;
                    match e.error_len() {
                        // Invalid bytes: no later byte can complete them.
                        Some(n) => {
                            self.ready.push(char::REPLACEMENT_CHARACTER);
                            consumed += n;
                        }
                        // An incomplete character at the end: wait for more.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        Ok(&self.ready)
    }

    /// Ends the stream: bytes of an unfinished character come out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_spaces_like_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("it 's a ' b"), "it's a'b");
        assert_eq!(clean("we 're they 've I 'll"), "we're they've I 'll");
        assert_eq!(clean(" ."), ".");
        assert_eq!(clean("a ' ' b"), "a'' b");
    }

    #[test]
    fn byte_tokens_parse_like_strtol() {
        assert_eq!(token_to_byte("<0x0A>"), 0x0a);
        assert_eq!(token_to_byte("<0xFF>"), 0xff);
        assert_eq!(token_to_byte("<0x"), 0);
        assert_eq!(token_to_byte("x"), 0);
        assert_eq!(token_to_byte("<0xG1>"), 0);
    }
}
