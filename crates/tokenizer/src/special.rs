//! Finding special-token text in the input before tokenizing
//! (llama.cpp's `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens longest first and, for each, splits every
//! remaining text fragment at each leftmost occurrence, so a token found earlier blocks
//! any later token that would overlap it. Done literally that is one pass over the text
//! per special token (Gemma 3 has about 6400 of them). We replay the same order over only
//! the tokens that occur: one Aho-Corasick pass (overlapping, so that no occurrence is
//! missed) says which do, then each of those, by priority, takes its occurrences left to
//! right wherever none of the bytes is taken yet. That yields llama.cpp's fragments, in
//! time and memory linear in the text for the inputs that matter: a long run of spaces
//! meets Gemma's thirty space tokens at every position, and keeping every overlapping
//! occurrence of them would take gigabytes.
//!
//! Control and unknown tokens are matched only when special tokens are parsed;
//! user-defined tokens always are (as in llama.cpp and Hugging Face `tokenizers`).
//! Tokens with the LSTRIP/RSTRIP attribute also swallow the ASCII whitespace next to
//! them, up to the neighbouring token.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;

use crate::error::TokenizerError;
use crate::vocab::{TokenAttr, TokenId, Vocab};

/// A piece of the input: text still to be tokenized, or a special token found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(TokenId),
}

#[derive(Debug)]
struct Pattern {
    id: TokenId,
    /// Control or unknown: matched only when special tokens are parsed.
    needs_parse_special: bool,
    lstrip: bool,
    rstrip: bool,
}

/// The special tokens of a vocabulary, ready to be found in text.
#[derive(Debug)]
pub(crate) struct SpecialMatcher {
    /// `None` when the vocabulary has no special tokens.
    automaton: Option<AhoCorasick>,
    /// In priority order (pattern index = priority).
    patterns: Vec<Pattern>,
    /// The text of each pattern.
    texts: Vec<Box<[u8]>>,
    /// Whether any pattern is matched without parse_special.
    any_always: bool,
}

/// Buffers reused between calls.
#[derive(Debug, Default)]
pub(crate) struct PartitionScratch {
    /// Whether each pattern occurs in the text.
    present: Vec<bool>,
    /// Accepted (start, end, id).
    accepted: Vec<(usize, usize, TokenId)>,
    /// 1 for each byte taken by an accepted token (or the whitespace it strips).
    taken: Vec<u8>,
}

impl SpecialMatcher {
    pub(crate) fn new(vocab: &Vocab) -> Result<SpecialMatcher, TokenizerError> {
        let patterns: Vec<Pattern> = vocab
            .special_cache
            .iter()
            .map(|&id| {
                let attr = vocab.attrs[id as usize];
                Pattern {
                    id,
                    needs_parse_special: attr.intersects(TokenAttr::CONTROL | TokenAttr::UNKNOWN),
                    lstrip: attr.intersects(TokenAttr::LSTRIP),
                    rstrip: attr.intersects(TokenAttr::RSTRIP),
                }
            })
            .collect();
        let texts: Vec<Box<[u8]>> = patterns
            .iter()
            .map(|p| vocab.texts[p.id as usize].as_bytes().into())
            .collect();
        let automaton = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&texts)
                    .map_err(|e| TokenizerError::BadArray {
                        key: "tokenizer.ggml.tokens".into(),
                        reason: format!("cannot index the special tokens: {e}"),
                    })?,
            )
        };
        let any_always = patterns.iter().any(|p| !p.needs_parse_special);
        Ok(SpecialMatcher {
            automaton,
            patterns,
            texts,
            any_always,
        })
    }

    /// Where control tokens' texts occur in `text` (overlapping occurrences included).
    pub(crate) fn control_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        ac.find_overlapping_iter(text)
            .filter(|m| self.patterns[m.pattern().as_usize()].needs_parse_special)
            .map(|m| m.start()..m.end())
            .collect()
    }

    /// Splits `text` into fragments, appending them to `out`.
    ///
    /// Control tokens are not matched where they overlap a `protected` byte range (text a
    /// user wrote, inside a rendered chat prompt): there they stay text.
    pub(crate) fn partition(
        &self,
        text: &str,
        parse_special: bool,
        protected: &[std::ops::Range<usize>],
        out: &mut Vec<Fragment>,
        scratch: &mut PartitionScratch,
    ) {
        let whole = |out: &mut Vec<Fragment>| {
            if !text.is_empty() {
                out.push(Fragment::Text(0..text.len()));
            }
        };
        let Some(ac) = &self.automaton else {
            return whole(out);
        };
        if !parse_special && !self.any_always {
            return whole(out);
        }
        let PartitionScratch {
            present,
            accepted,
            taken,
        } = scratch;

        // Which patterns occur at all (overlapping: an occurrence inside another one may
        // still be taken once the other is rejected).
        present.clear();
        present.resize(self.patterns.len(), false);
        let mut any = false;
        for m in ac.find_overlapping_iter(text) {
            let p = m.pattern().as_usize();
            if parse_special || !self.patterns[p].needs_parse_special {
                present[p] = true;
                any = true;
            }
        }
        if !any {
            return whole(out);
        }

        let bytes = text.as_bytes();
        taken.clear();
        taken.resize(bytes.len(), 0);
        accepted.clear();
        for (p, pat) in self.patterns.iter().enumerate() {
            if !present[p] {
                continue;
            }
            let needle = &self.texts[p];
            let finder = memmem::Finder::new(needle);
            let mut pos = 0;
            // Occurrences left to right, overlapping ones included; each is accepted if
            // none of its bytes is taken.
            while let Some(off) = finder.find(&bytes[pos..]) {
                let start = pos + off;
                let end = start + needle.len();
                if pat.needs_parse_special
                    && protected.iter().any(|r| r.start < end && start < r.end)
                {
                    pos = start + 1;
                    continue;
                }
                if let Some(t) = memchr::memchr(1, &taken[start..end]) {
                    // Every occurrence starting up to the taken byte overlaps it: resume
                    // after it and the taken run it belongs to.
                    let t = start + t + 1;
                    pos = t + memchr::memchr(0, &taken[t..]).unwrap_or(bytes.len() - t);
                    continue;
                }
                taken[start..end].fill(1);
                accepted.push((start, end, pat.id));
                // Stripped whitespace belongs to no fragment (llama.cpp drops it), so it
                // is marked taken; it never reaches past the neighbouring token.
                if pat.lstrip {
                    let mut i = start;
                    while i > 0 && taken[i - 1] == 0 && is_c_space(bytes[i - 1]) {
                        i -= 1;
                        taken[i] = 1;
                    }
                }
                pos = end;
                if pat.rstrip {
                    while pos < bytes.len() && taken[pos] == 0 && is_c_space(bytes[pos]) {
                        taken[pos] = 1;
                        pos += 1;
                    }
                }
            }
        }
        accepted.sort_unstable();

        // Text fragments are the untaken runs between accepted tokens.
        let push_text = |from: usize, to: usize, out: &mut Vec<Fragment>| {
            let mut i = from;
            while i < to {
                match memchr::memchr(0, &taken[i..to]) {
                    None => break,
                    Some(off) => {
                        let s = i + off;
                        let e = memchr::memchr(1, &taken[s..to]).map_or(to, |o| s + o);
                        out.push(Fragment::Text(s..e));
                        i = e;
                    }
                }
            }
        };
        let mut pos = 0;
        for &(start, end, id) in accepted.iter() {
            push_text(pos, start, out);
            out.push(Fragment::Token(id));
            pos = end;
        }
        push_text(pos, bytes.len(), out);
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for LSTRIP/RSTRIP.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}
