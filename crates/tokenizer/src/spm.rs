//! SentencePiece-style BPE (llama.cpp's `llm_tokenizer_spm`): start from the text's
//! characters and repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring token (leftmost first among equal scores), until no adjacent pair
//! forms a token. Characters that are not tokens become byte tokens (`<0xXX>`).
//!
//! The symbols form a linked list over one buffer and the candidate pairs sit in a
//! binary heap; a pair made stale by an earlier merge is recognised (its symbols' lengths
//! no longer add up) and skipped, so nothing is removed from the heap early. Pair lookups
//! hash a slice of the text; nothing is allocated per merge.
//!
//! llama.cpp runs this over a whole text fragment at once. Where no token can span a
//! boundary, the pieces on either side never interact (no merge crosses it, and ties are
//! broken by position within each side), so we cut the fragment there into words and
//! cache each distinct word's tokens: the boundaries used are those before a U+2581 (an
//! escaped space) whose preceding character never precedes U+2581 inside a token — in
//! Gemma's vocabulary that is every space but one after `>`, in Llama 2's every space not
//! after another space.

use std::collections::BinaryHeap;

use crate::error::TokenizerError;
use crate::hash::FxHashMap;
use crate::vocab::{TokenId, Vocab};

/// What a SentencePiece vocabulary needs besides its tokens.
#[derive(Debug)]
pub(crate) struct SpmModel {
    /// The byte-fallback token of each byte.
    byte_tokens: [Option<TokenId>; 256],
    /// Characters that some token has right before a U+2581: a fragment is not cut
    /// before a U+2581 that follows one of these.
    glue_before_space: Vec<char>,
}

/// Each distinct word's tokens, for one encode call; keys borrow the escaped text.
#[derive(Debug, Default)]
pub(crate) struct SpmWordCache<'t> {
    map: FxHashMap<&'t str, (u32, u32)>,
    ids: Vec<TokenId>,
}

impl SpmModel {
    pub(crate) fn new(vocab: &Vocab) -> SpmModel {
        let mut glue: Vec<char> = Vec::new();
        for t in &vocab.texts {
            let mut prev = None;
            for c in t.chars() {
                if c == SPACE {
                    if let Some(p) = prev {
                        if !glue.contains(&p) {
                            glue.push(p);
                        }
                    }
                }
                prev = Some(c);
            }
        }
        SpmModel {
            byte_tokens: byte_tokens(vocab),
            glue_before_space: glue,
        }
    }

    /// Tokenizes `text` (spaces already replaced by U+2581), appending ids to `out`.
    pub(crate) fn encode<'t>(
        &self,
        vocab: &Vocab,
        text: &'t str,
        out: &mut Vec<TokenId>,
        cache: &mut SpmWordCache<'t>,
        scratch: &mut SpmScratch,
    ) -> Result<(), TokenizerError> {
        let mut start = 0;
        let mut prev: Option<char> = None;
        for (i, c) in text.char_indices() {
            if c == SPACE && i > start && prev.is_some_and(|p| !self.glue_before_space.contains(&p))
            {
                self.encode_word(vocab, &text[start..i], out, cache, scratch)?;
                start = i;
            }
            prev = Some(c);
        }
        if start < text.len() {
            self.encode_word(vocab, &text[start..], out, cache, scratch)?;
        }
        Ok(())
    }

    fn encode_word<'t>(
        &self,
        vocab: &Vocab,
        word: &'t str,
        out: &mut Vec<TokenId>,
        cache: &mut SpmWordCache<'t>,
        scratch: &mut SpmScratch,
    ) -> Result<(), TokenizerError> {
        if let Some(&(s, n)) = cache.map.get(word) {
            out.extend_from_slice(&cache.ids[s as usize..(s + n) as usize]);
            return Ok(());
        }
        let s = cache.ids.len();
        encode(vocab, &self.byte_tokens, word, &mut cache.ids, scratch)?;
        out.extend_from_slice(&cache.ids[s..]);
        cache
            .map
            .insert(word, (s as u32, (cache.ids.len() - s) as u32));
        Ok(())
    }
}

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// A candidate merge: the heap's maximum is the highest score, then the leftmost pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    score: u32,
    left: std::cmp::Reverse<u32>,
    right: u32,
    size: u32,
}

/// `f32` as a `u32` that orders the same way (scores are never NaN: the vocabulary loader
/// refuses them), with -0.0 equal to 0.0 as in C++'s comparison.
fn score_key(s: f32) -> u32 {
    let bits = (s + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Buffers reused between calls.
#[derive(Debug, Default)]
pub(crate) struct SpmScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

/// Tokenizes `text` as one sequence (llama.cpp's algorithm as is), appending ids to
/// `out`. `byte_tokens` are the byte-fallback tokens.
pub(crate) fn encode(
    vocab: &Vocab,
    byte_tokens: &[Option<TokenId>; 256],
    text: &str,
    out: &mut Vec<TokenId>,
    scratch: &mut SpmScratch,
) -> Result<(), TokenizerError> {
    let SpmScratch { symbols, heap } = scratch;
    symbols.clear();
    heap.clear();
    let n = text.len();
    for (i, c) in text.char_indices() {
        let idx = symbols.len() as u32;
        symbols.push(Symbol {
            start: i as u32,
            len: c.len_utf8() as u32,
            prev: if idx == 0 { NONE } else { idx - 1 },
            next: if i + c.len_utf8() == n { NONE } else { idx + 1 },
        });
    }

    let try_add = |symbols: &[Symbol], heap: &mut BinaryHeap<Bigram>, left: u32, right: u32| {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let span = &text[l.start as usize..(r.start + r.len) as usize];
        if let Some(id) = vocab.id_of(span) {
            heap.push(Bigram {
                score: score_key(vocab.scores[id as usize]),
                left: std::cmp::Reverse(left),
                right,
                size: span.len() as u32,
            });
        }
    };

    for i in 1..symbols.len() as u32 {
        try_add(symbols, heap, i - 1, i);
    }
    while let Some(b) = heap.pop() {
        let left = b.left.0 as usize;
        let right = b.right as usize;
        let (l, r) = (symbols[left], symbols[right]);
        // Stale: one side was merged away or grew since the pair was queued.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[left].len += r.len;
        symbols[right].len = 0;
        symbols[left].next = r.next;
        if r.next != NONE {
            symbols[r.next as usize].prev = left as u32;
        }
        let (prev, next) = (symbols[left].prev, symbols[left].next);
        try_add(symbols, heap, prev, left as u32);
        try_add(symbols, heap, left as u32, next);
    }

    let mut i = if symbols.is_empty() { NONE } else { 0 };
    while i != NONE {
        let s = symbols[i as usize];
        let piece = &text[s.start as usize..(s.start + s.len) as usize];
        match vocab.id_of(piece) {
            Some(id) => out.push(id),
            // Merged symbols are always tokens, so this is a single character that is not
            // in the vocabulary: one byte token per UTF-8 byte.
            None => {
                for &b in piece.as_bytes() {
                    out.push(byte_tokens[b as usize].ok_or(TokenizerError::NoByteToken(b))?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

/// The byte-fallback token of each byte, as llama.cpp's `byte_to_token` finds it for a
/// SentencePiece vocabulary: `<0xXX>`, else the byte itself as a one-character token.
fn byte_tokens(vocab: &Vocab) -> [Option<TokenId>; 256] {
    let mut t = [None; 256];
    for (b, slot) in t.iter_mut().enumerate() {
        *slot = vocab.id_of(&format!("<0x{b:02X}>")).or_else(|| {
            let c = b as u8;
            if c.is_ascii() {
                vocab.id_of(std::str::from_utf8(&[c]).unwrap_or(""))
            } else {
                None
            }
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keys_order_like_floats() {
        let xs = [-1e9f32, -3.5, -1.0, -0.0, 0.0, 1e-30, 2.0, 1e9];
        for w in xs.windows(2) {
            assert!(score_key(w[0]) <= score_key(w[1]), "{w:?}");
        }
        assert_eq!(score_key(-0.0), score_key(0.0));
    }
}
