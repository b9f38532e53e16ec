//! Byte-level BPE by merge ranks (llama.cpp's `llm_tokenizer_bpe_session`): each
//! pre-tokenized word starts as one symbol per byte (GPT-2 byte mapping) or per character
//! (SentencePiece-style BPE), and the adjacent pair with the lowest merge rank is merged
//! (leftmost first among equal ranks) until no listed merge applies.
//!
//! Symbols are identified by id, not text: every string that a merge rule mentions or
//! produces gets an id once, at load time — its token id if it is a token, otherwise an id
//! past the end of the vocabulary — so a merge is one hash lookup of a pair of integers.
//! A finished symbol that is not a token falls back to per-byte tokens exactly as llama.cpp
//! does (for GPT-2-mapped vocabularies that keeps only printable ASCII bytes; llama.cpp
//! looks up each byte of the mapped text on its own).
//!
//! Words repeat, so each distinct word's tokens are cached for the length of one call.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hearth_gguf::Metadata;

use crate::error::TokenizerError;
use crate::hash::FxHashMap;
use crate::unicode;
use crate::vocab::{TokenId, Vocab};

const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// No symbol id: a string no merge rule mentions and no token has.
const NO_ID: u32 = u32::MAX;

/// The merge table and byte tables of a BPE vocabulary.
#[derive(Debug)]
pub(crate) struct BpeModel {
    /// `(left << 32 | right)` → `(rank, merged)`.
    merges: FxHashMap<u64, (u32, u32)>,
    /// Strings that merge rules mention but the vocabulary lacks, with their ids
    /// (`n_vocab..`).
    extra: FxHashMap<Box<str>, u32>,
    n_vocab: u32,
    /// GPT-2 byte mapping (true) or raw UTF-8 with `<0xXX>` byte tokens (false).
    byte_encode: bool,
    /// With `byte_encode`: the symbol id of each raw byte's mapped character.
    byte_symbol: [u32; 256],
    /// The token each byte of an untokenizable symbol becomes, if any.
    byte_fallback: [Option<TokenId>; 256],
}

/// Buffers reused between calls, and the per-call word cache.
#[derive(Debug, Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    encoded: String,
}

/// Caches each distinct word's tokens for one encode call; keys borrow the text.
#[derive(Debug, Default)]
pub(crate) struct WordCache<'t> {
    map: FxHashMap<&'t str, (u32, u32)>,
    ids: Vec<TokenId>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

impl BpeModel {
    pub(crate) fn new(vocab: &Vocab, md: &Metadata) -> Result<BpeModel, TokenizerError> {
        let merges_arr = md.get_array(KEY_MERGES)?;
        let merges_list = merges_arr
            .as_strings()
            .ok_or_else(|| TokenizerError::BadArray {
                key: KEY_MERGES.to_string(),
                reason: format!(
                    "expected an array of strings, found ARRAY[{}]",
                    merges_arr.element_type()
                ),
            })?;
        let n_vocab = vocab.n_tokens() as u32;
        let mut extra: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let intern = |s: &str, extra: &mut FxHashMap<Box<str>, u32>| -> u32 {
            if let Some(id) = vocab.id_of(s) {
                return id;
            }
            if let Some(&id) = extra.get(s) {
                return id;
            }
            let id = n_vocab + extra.len() as u32;
            extra.insert(s.into(), id);
            id
        };
        // Each rule can add up to three strings past the vocabulary; ids must stay below
        // `NO_ID`.
        if merges_list.len() as u64 * 3 >= u64::from(NO_ID - n_vocab) {
            return Err(TokenizerError::BadArray {
                key: KEY_MERGES.to_string(),
                reason: format!(
                    "{} merge rules are more than token ids can number",
                    merges_list.len()
                ),
            });
        }
        let mut merges = FxHashMap::default();
        merges.reserve(merges_list.len());
        let mut joined = String::new();
        for (rank, rule) in merges_list.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; a rule without one
            // becomes the pair ("", ""), which never matches.
            let Some(pos) = rule.as_bytes().iter().skip(1).position(|&b| b == b' ') else {
                continue;
            };
            let (first, second) = (&rule[..pos + 1], &rule[pos + 2..]);
            if first.is_empty() || second.is_empty() {
                continue;
            }
            let l = intern(first, &mut extra);
            let r = intern(second, &mut extra);
            joined.clear();
            joined.push_str(first);
            joined.push_str(second);
            let m = intern(&joined, &mut extra);
            // The first rule for a pair wins (llama.cpp inserts with `emplace`).
            merges
                .entry(u64::from(l) << 32 | u64::from(r))
                .or_insert((rank as u32, m));
        }

        let lookup = |s: &str| {
            vocab
                .id_of(s)
                .or_else(|| extra.get(s).copied())
                .unwrap_or(NO_ID)
        };
        let byte_encode = vocab.byte_encode;
        let mut byte_symbol = [NO_ID; 256];
        let mut byte_fallback = [None; 256];
        let mut buf = [0u8; 4];
        for b in 0..=255u8 {
            if byte_encode {
                byte_symbol[b as usize] = lookup(unicode::byte_to_char(b).encode_utf8(&mut buf));
                // llama.cpp looks up each byte of the mapped character alone; only bytes
                // that map to themselves (printable ASCII) can be tokens that way.
                if (0x21..=0x7e).contains(&b) {
                    byte_fallback[b as usize] = vocab.id_of(char::from(b).encode_utf8(&mut buf));
                }
            } else {
                byte_fallback[b as usize] = vocab.id_of(&format!("<0x{b:02X}>"));
            }
        }
        Ok(BpeModel {
            merges,
            extra,
            n_vocab,
            byte_encode,
            byte_symbol,
            byte_fallback,
        })
    }

    fn lookup(&self, vocab: &Vocab, s: &str) -> u32 {
        vocab
            .id_of(s)
            .or_else(|| self.extra.get(s).copied())
            .unwrap_or(NO_ID)
    }

    /// Tokenizes one word (a piece of the pre-tokenized text), appending to `out`,
    /// through `cache`.
    pub(crate) fn encode_word<'t>(
        &self,
        vocab: &Vocab,
        word: &'t str,
        out: &mut Vec<TokenId>,
        cache: &mut WordCache<'t>,
        scratch: &mut BpeScratch,
    ) {
        if let Some(&(start, len)) = cache.map.get(word) {
            out.extend_from_slice(&cache.ids[start as usize..(start + len) as usize]);
            return;
        }
        let start = cache.ids.len();
        self.merge_word(vocab, word, &mut cache.ids, scratch);
        let len = cache.ids.len() - start;
        out.extend_from_slice(&cache.ids[start..]);
        cache.map.insert(word, (start as u32, len as u32));
    }

    fn merge_word(
        &self,
        vocab: &Vocab,
        word: &str,
        out: &mut Vec<TokenId>,
        scratch: &mut BpeScratch,
    ) {
        let BpeScratch {
            symbols,
            heap,
            encoded,
        } = scratch;

        // A word that is itself a token stays whole when the pre-tokenizer says so
        // (llama.cpp's `ignore_merges`, for Llama 3 and others).
        if vocab.ignore_merges {
            let whole = if self.byte_encode {
                encoded.clear();
                encoded.extend(word.bytes().map(unicode::byte_to_char));
                vocab.id_of(encoded)
            } else {
                vocab.id_of(word)
            };
            if let Some(id) = whole {
                out.push(id);
                return;
            }
        }

        symbols.clear();
        heap.clear();
        if self.byte_encode {
            let n = word.len() as u32;
            for (i, &b) in word.as_bytes().iter().enumerate() {
                let i = i as u32;
                symbols.push(Symbol {
                    id: self.byte_symbol[b as usize],
                    start: i,
                    len: 1,
                    prev: if i == 0 { NONE } else { i - 1 },
                    next: if i + 1 == n { NONE } else { i + 1 },
                });
            }
        } else {
            let n = word.len();
            for (i, c) in word.char_indices() {
                let idx = symbols.len() as u32;
                let len = c.len_utf8();
                symbols.push(Symbol {
                    id: self.lookup(vocab, &word[i..i + len]),
                    start: i as u32,
                    len: len as u32,
                    prev: if idx == 0 { NONE } else { idx - 1 },
                    next: if i + len == n { NONE } else { idx + 1 },
                });
            }
        }

        let merge_of = |l: u32, r: u32| -> Option<(u32, u32)> {
            if l == NO_ID || r == NO_ID {
                return None;
            }
            self.merges
                .get(&(u64::from(l) << 32 | u64::from(r)))
                .copied()
        };
        let push = |heap: &mut BinaryHeap<Reverse<(u64, u32)>>, symbols: &[Symbol], left: u32| {
            let l = symbols[left as usize];
            if l.next == NONE {
                return;
            }
            let r = symbols[l.next as usize];
            if let Some((rank, _)) = merge_of(l.id, r.id) {
                // Lowest rank first, then leftmost; the size detects staleness.
                heap.push(Reverse((
                    u64::from(rank) << 32 | u64::from(left),
                    l.len + r.len,
                )));
            }
        };
        for i in 0..symbols.len() as u32 {
            push(heap, symbols, i);
        }
        while let Some(Reverse((key, size))) = heap.pop() {
            let left = (key & 0xffff_ffff) as usize;
            let l = symbols[left];
            if l.len == 0 || l.next == NONE {
                continue;
            }
            let right = l.next as usize;
            let r = symbols[right];
            // Stale: the left symbol grew, or its right neighbour did.
            if r.len == 0 || l.len + r.len != size {
                continue;
            }
            let Some((_, merged)) = merge_of(l.id, r.id) else {
                continue;
            };
            symbols[left].id = merged;
            symbols[left].len += r.len;
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if r.next != NONE {
                symbols[r.next as usize].prev = left as u32;
            }
            if l.prev != NONE {
                push(heap, symbols, l.prev);
            }
            push(heap, symbols, left as u32);
        }

        let bytes = word.as_bytes();
        let mut i = if symbols.is_empty() { NONE } else { 0 };
        while i != NONE {
            let s = symbols[i as usize];
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                let span = &bytes[s.start as usize..(s.start + s.len) as usize];
                out.extend(span.iter().filter_map(|&b| self.byte_fallback[b as usize]));
            }
            i = s.next;
        }
    }
}
