//! Hand-written split passes: the ones llama.cpp's `unicode.cpp` implements in code
//! instead of running a regex (`unicode_regex_split_custom_gpt2`, `_llama3`, `_qwen2`,
//! `_qwen35`, `_newlines`).
//!
//! These are ports, including their departures from the regexes they stand for (for
//! example, `\s+(?!\S)` is decided on the segment being split, and a lone space before a
//! segment end is its own piece): llama.cpp's tokens are defined by this code, not by the
//! regex in its comment, so exactness means copying its behaviour.

use std::ops::Range;

use crate::unicode::{self, Flags};

/// The code points of the segment being split, with their flags and byte offsets, kept
/// between calls so that splitting allocates nothing once warm.
#[derive(Default, Debug)]
pub(crate) struct CodePoints {
    cpts: Vec<char>,
    flags: Vec<Flags>,
    /// Byte offset of each code point in the text, plus the segment end.
    offs: Vec<usize>,
}

impl CodePoints {
    fn load(&mut self, text: &str, seg: &Range<usize>) {
        self.cpts.clear();
        self.flags.clear();
        self.offs.clear();
        for (i, c) in text[seg.clone()].char_indices() {
            self.cpts.push(c);
            self.flags.push(unicode::flags(c));
            self.offs.push(seg.start + i);
        }
        self.offs.push(seg.end);
    }

    /// llama.cpp's `_get_cpt`: the code point at `pos`, `None` outside the segment.
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        self.cpts.get(pos).copied()
    }

    /// llama.cpp's `_get_flags`: no flags at all outside the segment.
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        self.flags.get(pos).copied().unwrap_or(Flags::OUTSIDE)
    }

    fn len(&self) -> usize {
        self.cpts.len()
    }
}

/// Collects pieces of one segment: llama.cpp's `_add_token`, in code point positions.
struct Pieces<'a> {
    cps: &'a CodePoints,
    out: &'a mut Vec<Range<usize>>,
    prev_end: usize,
}

impl Pieces<'_> {
    /// Ends the current piece at `end`; returns its length in code points.
    #[inline]
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out
                .push(self.cps.offs[self.prev_end]..self.cps.offs[end]);
        }
        self.prev_end = end;
        len
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` — GPT-2's
/// split, as `unicode_regex_split_custom_gpt2` does it.
pub(crate) fn split_gpt2(
    text: &str,
    segments: &[Range<usize>],
    out: &mut Vec<Range<usize>>,
    cps: &mut CodePoints,
) {
    for seg in segments {
        cps.load(text, seg);
        let cps = &*cps;
        let end = cps.len();
        let mut p = Pieces {
            cps,
            out: &mut *out,
            prev_end: 0,
        };
        let mut pos = 0;
        while pos < end {
            let cpt = cps.cpt(pos);
            let flags = cps.flags(pos);

            // 's|'t|'re|'ve|'m|'ll|'d
            if cpt == Some('\'') && pos + 1 < end {
                let next = cps.cpt(pos + 1);
                if matches!(next, Some('s' | 't' | 'm' | 'd')) {
                    pos += p.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next_next = cps.cpt(pos + 2);
                    if matches!(
                        (next, next_next),
                        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                    ) {
                        pos += p.add(pos + 3);
                        continue;
                    }
                }
            }

            let is_space = cpt == Some(' ');
            let mut flags2 = if is_space { cps.flags(pos + 1) } else { flags };
            // <space>?\p{L}+
            if flags2.is_letter() {
                pos += usize::from(is_space);
                while flags2.is_letter() {
                    pos += 1;
                    flags2 = cps.flags(pos);
                }
                p.add(pos);
                continue;
            }
            // <space>?\p{N}+
            if flags2.is_number() {
                pos += usize::from(is_space);
                while flags2.is_number() {
                    pos += 1;
                    flags2 = cps.flags(pos);
                }
                p.add(pos);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+
            if other(flags2) {
                pos += usize::from(is_space);
                while other(flags2) {
                    pos += 1;
                    flags2 = cps.flags(pos);
                }
                p.add(pos);
                continue;
            }

            let mut num_whitespaces = 0;
            while cps.flags(pos + num_whitespaces).is_whitespace() {
                num_whitespaces += 1;
            }
            // \s+(?!\S)
            if num_whitespaces > 1 && cps.cpt(pos + num_whitespaces).is_some() {
                pos += num_whitespaces - 1;
                p.add(pos);
                continue;
            }
            // \s+
            if num_whitespaces > 0 {
                pos += num_whitespaces;
                p.add(pos);
                continue;
            }
            // no match
            pos += 1;
            p.add(pos);
        }
    }
}

/// `[^\s\p{L}\p{N}]` for a position inside the segment (llama.cpp's
/// `!(is_whitespace | is_letter | is_number) && as_uint()`).
#[inline]
fn other(f: Flags) -> bool {
    !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.any()
}

/// The variants of the Llama 3 split that llama.cpp implements by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Llama3Style {
    /// Digits per number piece: 3 for Llama 3 (`\p{N}{1,3}`), 1 for Qwen 2 (`\p{N}`).
    pub max_digits: usize,
    /// Whether letter runs also take combining marks (Qwen 3.5: `[\p{L}\p{M}]+`).
    pub marks: bool,
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` and its Qwen variants, as
/// `unicode_regex_split_custom_llama3` / `_qwen2` / `_qwen35` do it.
pub(crate) fn split_llama3(
    style: Llama3Style,
    text: &str,
    segments: &[Range<usize>],
    out: &mut Vec<Range<usize>>,
    cps: &mut CodePoints,
) {
    let letter = |f: Flags| f.is_letter() || (style.marks && f.is_accent_mark());
    let other = |f: Flags| {
        !(f.is_whitespace()
            || f.is_letter()
            || (style.marks && f.is_accent_mark())
            || f.is_number())
    };
    for seg in segments {
        cps.load(text, seg);
        let cps = &*cps;
        let end = cps.len();
        let mut p = Pieces {
            cps,
            out: &mut *out,
            prev_end: 0,
        };
        let mut pos = 0;
        while pos < end {
            let cpt = cps.cpt(pos);
            let flags = cps.flags(pos);

            // (?i:'s|'t|'re|'ve|'m|'ll|'d): llama.cpp lowercases with its Unicode table,
            // but no other code point lowercases to these ASCII letters (only U+0130 and
            // U+212A map into ASCII at all, to 'i' and 'k'), so ASCII lowercasing agrees.
            if cpt == Some('\'') && pos + 1 < end {
                let next = cps.cpt(pos + 1).map(|c| c.to_ascii_lowercase());
                if matches!(next, Some('s' | 't' | 'm' | 'd')) {
                    pos += p.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next_next = cps.cpt(pos + 2).map(|c| c.to_ascii_lowercase());
                    if matches!(
                        (next, next_next),
                        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                    ) {
                        pos += p.add(pos + 3);
                        continue;
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(cpt == Some('\r') || cpt == Some('\n') || flags.is_number())
                && (letter(flags) || letter(cps.flags(pos + 1)))
            {
                pos += 1;
                while letter(cps.flags(pos)) {
                    pos += 1;
                }
                p.add(pos);
                continue;
            }

            // \p{N}{1,3}
            if flags.is_number() {
                let mut ini = pos;
                while cps.flags(pos).is_number() {
                    pos += 1;
                    if pos - ini >= style.max_digits {
                        p.add(pos);
                        ini = pos;
                    }
                }
                p.add(pos);
                continue;
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (the entry test reads the current code
            // point's flags, the loop the next one's, as in llama.cpp)
            let is_space = cpt == Some(' ');
            let mut flags2 = if is_space { cps.flags(pos + 1) } else { flags };
            if other(flags2) && flags.any() {
                pos += usize::from(is_space);
                while other(flags2) && flags2.any() {
                    pos += 1;
                    flags2 = cps.flags(pos);
                }
                while matches!(cps.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                p.add(pos);
                continue;
            }

            let mut num_whitespaces = 0;
            let mut last_end_r_or_n = 0;
            while cps.flags(pos + num_whitespaces).is_whitespace() {
                if matches!(cps.cpt(pos + num_whitespaces), Some('\r' | '\n')) {
                    last_end_r_or_n = pos + num_whitespaces + 1;
                }
                num_whitespaces += 1;
            }
            // \s*[\r\n]+
            if last_end_r_or_n > 0 {
                pos = last_end_r_or_n;
                p.add(pos);
                continue;
            }
            // \s+(?!\S)
            if num_whitespaces > 1 && cps.cpt(pos + num_whitespaces).is_some() {
                pos += num_whitespaces - 1;
                p.add(pos);
                continue;
            }
            // \s+
            if num_whitespaces > 0 {
                pos += num_whitespaces;
                p.add(pos);
                continue;
            }
            // no match
            pos += 1;
            p.add(pos);
        }
    }
}

/// `[^\n]+|[\n]+`: runs of newlines and runs of everything else
/// (`unicode_regex_split_custom_newlines`, used by SentencePiece-style BPE).
pub(crate) fn split_newlines(text: &str, segments: &[Range<usize>], out: &mut Vec<Range<usize>>) {
    for seg in segments {
        let bytes = &text.as_bytes()[seg.clone()];
        let mut start = 0;
        while start < bytes.len() {
            let newline = bytes[start] == b'\n';
            let len = bytes[start..]
                .iter()
                .position(|&b| (b == b'\n') != newline)
                .unwrap_or(bytes.len() - start);
            out.push(seg.start + start..seg.start + start + len);
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(f: impl Fn(&str, &mut Vec<Range<usize>>), text: &str) -> Vec<String> {
        let mut out = Vec::new();
        f(text, &mut out);
        out.into_iter().map(|r| text[r].to_string()).collect()
    }

    fn gpt2(text: &str) -> Vec<String> {
        pieces(
            |t, out| {
                split_gpt2(
                    t,
                    std::slice::from_ref(&(0..t.len())),
                    out,
                    &mut CodePoints::default(),
                )
            },
            text,
        )
    }

    fn llama3(text: &str) -> Vec<String> {
        let style = Llama3Style {
            max_digits: 3,
            marks: false,
        };
        pieces(
            |t, out| {
                split_llama3(
                    style,
                    t,
                    std::slice::from_ref(&(0..t.len())),
                    out,
                    &mut CodePoints::default(),
                )
            },
            text,
        )
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(gpt2("Hello world"), ["Hello", " world"]);
        assert_eq!(gpt2("it's  12ab!!"), ["it", "'s", " ", " 12", "ab", "!!"]);
        assert_eq!(gpt2("a   "), ["a", "   "]);
    }

    #[test]
    fn llama3_split() {
        assert_eq!(llama3("1234567"), ["123", "456", "7"]);
        assert_eq!(
            llama3("Hello, World!\n\n  x"),
            ["Hello", ",", " World", "!\n\n", " ", " x"]
        );
        assert_eq!(llama3("I'LL"), ["I", "'LL"]);
        assert_eq!(llama3("a \n b"), ["a", " \n", " b"]);
    }

    #[test]
    fn newline_runs() {
        let out = pieces(
            |t, out| split_newlines(t, std::slice::from_ref(&(0..t.len())), out),
            "ab\n\ncd\n",
        );
        assert_eq!(out, ["ab", "\n\n", "cd", "\n"]);
    }
}
