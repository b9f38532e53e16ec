//! The general-purpose split pass: one of llama.cpp's pre-tokenizer regexes, run the way
//! llama.cpp's `unicode_regex_split` runs it when no hand-written splitter exists.
//!
//! llama.cpp runs these regexes with C++ `std::regex` (ECMAScript grammar), which has no
//! Unicode classes. It therefore rewrites the text before matching:
//!
//! * **Collapsed mode** — used when the regex names a Unicode category (`\p{L}`, `\p{N}`,
//!   `\p{P}`, `\p{M}`, `\p{S}`, `\p{Lu}`, …): every non-ASCII code point becomes one
//!   stand-in character for its category (letter, number, punctuation, mark, symbol,
//!   other), non-ASCII whitespace becomes `\v`, and `\p{X}` becomes a class of the
//!   category's stand-in plus its ASCII members. ASCII is matched as itself.
//! * **Plain mode** — otherwise: the text is matched as is, except that non-ASCII
//!   whitespace becomes `\v` (C++ `\s` only knows ASCII whitespace).
//!
//! We do the same rewriting, translate the ECMAScript regex into `fancy_regex` syntax
//! (which has the look-arounds some of these regexes use, and the same leftmost-first,
//! backtracking semantics), and map match positions back to the original text: each
//! original code point became exactly one character, so walking both strings in step
//! converts offsets.

use std::ops::Range;

use crate::error::TokenizerError;
use crate::unicode::{self, Flags};

/// The stand-ins llama.cpp uses for the categories (`k_ucat_cpt`: 0xD0..=0xD5). As bytes
/// they would not be UTF-8; as the code points U+00D0..=U+00D5 they are, and they cannot be
/// confused with text because every non-ASCII code point of the text is replaced.
const STAND_IN_OTHER: char = '\u{D0}';
const STAND_IN_NUMBER: char = '\u{D1}';
const STAND_IN_LETTER: char = '\u{D2}';
const STAND_IN_PUNCTUATION: char = '\u{D3}';
const STAND_IN_ACCENT_MARK: char = '\u{D4}';
const STAND_IN_SYMBOL: char = '\u{D5}';

/// What non-ASCII whitespace becomes, in both modes (vertical tab).
const WHITESPACE_STAND_IN: char = '\u{0B}';

/// ECMAScript `\s` as C++ `std::regex` matches it with the "C" locale: ASCII whitespace.
const SPACE_CLASS_ITEMS: &str = r"\t\n\x0B\x0C\r ";

/// One compiled split pass.
#[derive(Debug)]
pub(crate) struct RegexPass {
    regex: fancy_regex::Regex,
    collapsed: bool,
}

impl RegexPass {
    /// Compiles llama.cpp regex `pattern` (as the C++ string literal evaluates). The
    /// patterns come from this crate's table, so failure is a bug in the table; it is
    /// still reported as an error rather than a panic.
    pub(crate) fn new(pattern: &str) -> Result<RegexPass, TokenizerError> {
        let collapsed = uses_categories(pattern);
        let translated = translate(pattern, collapsed)
            .map_err(|e| TokenizerError::Regex(format!("cannot translate {pattern:?}: {e}")))?;
        let regex = fancy_regex::RegexBuilder::new(&translated)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| TokenizerError::Regex(format!("cannot compile {translated:?}: {e}")))?;
        Ok(RegexPass { regex, collapsed })
    }

    /// Splits each of `segments` (byte ranges of `text`, in order, covering it) into the
    /// regex's matches and the gaps between them, appending the pieces to `out`.
    pub(crate) fn split(
        &self,
        text: &str,
        segments: &[Range<usize>],
        out: &mut Vec<Range<usize>>,
        scratch: &mut String,
    ) -> Result<(), TokenizerError> {
        for seg in segments {
            let original = &text[seg.clone()];
            scratch.clear();
            for c in original.chars() {
                scratch.push(self.rewrite(c));
            }
            let mut cursor = Cursor {
                original,
                rewritten: scratch.as_str(),
                orig: 0,
                rew: 0,
            };
            let mut prev_end = 0; // in original bytes, relative to the segment
            for m in self.regex.find_iter(scratch.as_str()) {
                let m = m.map_err(|e| TokenizerError::Regex(e.to_string()))?;
                let start = cursor.advance_to(m.start());
                let end = cursor.advance_to(m.end());
                // A gap before the match is a piece of its own (llama.cpp keeps unmatched
                // text). An empty match only splits; none of the table's regexes has one.
                if start > prev_end {
                    out.push(seg.start + prev_end..seg.start + start);
                }
                if end > start {
                    out.push(seg.start + start..seg.start + end);
                }
                prev_end = end;
            }
            if prev_end < original.len() {
                out.push(seg.start + prev_end..seg.end);
            }
        }
        Ok(())
    }

    #[inline]
    fn rewrite(&self, c: char) -> char {
        if c.is_ascii() {
            return c;
        }
        let f = unicode::flags(c);
        if f.is_whitespace() {
            return WHITESPACE_STAND_IN;
        }
        if !self.collapsed {
            return c;
        }
        match f.0 & Flags::CATEGORIES {
            Flags::NUMBER => STAND_IN_NUMBER,
            Flags::LETTER => STAND_IN_LETTER,
            Flags::PUNCTUATION => STAND_IN_PUNCTUATION,
            Flags::ACCENT_MARK => STAND_IN_ACCENT_MARK,
            Flags::SYMBOL => STAND_IN_SYMBOL,
            _ => STAND_IN_OTHER,
        }
    }
}

/// fancy-regex's default; reached only by pathological inputs to the look-around
/// regexes, which are then refused with [`TokenizerError::Regex`].
const BACKTRACK_LIMIT: usize = 1_000_000;

/// Walks the original and the rewritten segment in step (one character each per step)
/// to turn rewritten byte offsets into original ones. Offsets only move forward.
struct Cursor<'a> {
    original: &'a str,
    rewritten: &'a str,
    orig: usize,
    rew: usize,
}

impl Cursor<'_> {
    fn advance_to(&mut self, rew_target: usize) -> usize {
        while self.rew < rew_target {
            let (Some(r), Some(o)) = (
                self.rewritten[self.rew..].chars().next(),
                self.original[self.orig..].chars().next(),
            ) else {
                break;
            };
            self.rew += r.len_utf8();
            self.orig += o.len_utf8();
        }
        self.orig
    }
}

/// The category names llama.cpp recognises (`k_ucat_enum`); the letter subcategories all
/// collapse to "letter", as there.
const CATEGORIES: [(&str, char, &str); 10] = [
    ("N", STAND_IN_NUMBER, r"0-9"),
    ("L", STAND_IN_LETTER, r"A-Za-z"),
    (
        "P",
        STAND_IN_PUNCTUATION,
        r"\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\x5B-\x5D\x5F\x7B\x7D",
    ),
    ("M", STAND_IN_ACCENT_MARK, ""),
    ("S", STAND_IN_SYMBOL, r"\x24\x2B\x3C-\x3E\x5E\x60\x7C\x7E"),
    ("Lu", STAND_IN_LETTER, r"A-Za-z"),
    ("Ll", STAND_IN_LETTER, r"A-Za-z"),
    ("Lt", STAND_IN_LETTER, r"A-Za-z"),
    ("Lm", STAND_IN_LETTER, r"A-Za-z"),
    ("Lo", STAND_IN_LETTER, r"A-Za-z"),
];

fn uses_categories(pattern: &str) -> bool {
    CATEGORIES
        .iter()
        .any(|(name, _, _)| pattern.contains(&format!("\\p{{{name}}}")))
}

/// The class items (no brackets) of category `\p{name}` in collapsed text.
fn category_items(name: &str) -> Option<String> {
    let (_, stand_in, ascii) = CATEGORIES.iter().find(|(n, _, _)| *n == name)?;
    Some(format!("\\x{{{:X}}}{ascii}", *stand_in as u32))
}

/// Writes `c` so that it is a literal in fancy-regex syntax, in or out of a class.
fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || !c.is_ascii() || c == ' ' {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}

/// Translates an ECMAScript regex (the subset llama.cpp's table uses) to fancy-regex
/// syntax over rewritten text. Literals are re-escaped, so that sequences ECMAScript reads
/// literally inside a class (`[`, `&&`, `--`, `~~`) cannot become class operators.
fn translate(pattern: &str, collapsed: bool) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    let mut in_class = false;
    // Inside a class: whether the last item was a single character (which a following
    // '-' can turn into a range), and whether a range is waiting for its upper end.
    let mut last_single = false;
    let mut range_open = false;
    while i < chars.len() {
        let c = chars[i];
        if in_class {
            match c {
                ']' => {
                    out.push(']');
                    in_class = false;
                    i += 1;
                }
                '-' if last_single && !range_open && i + 1 < chars.len() && chars[i + 1] != ']' => {
                    out.push('-');
                    range_open = true;
                    i += 1;
                }
                '\\' => {
                    let (item, single, next) = class_escape(&chars, i, collapsed)?;
                    out.push_str(&item);
                    last_single = single && !range_open;
                    range_open = false;
                    i = next;
                }
                _ => {
                    push_literal(&mut out, c);
                    last_single = !range_open;
                    range_open = false;
                    i += 1;
                }
            }
            continue;
        }
        match c {
            '[' => {
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                in_class = true;
                last_single = false;
                range_open = false;
            }
            '\\' => {
                let next = *chars.get(i + 1).ok_or("trailing backslash")?;
                match next {
                    'p' => {
                        let (name, end) = property_name(&chars, i)?;
                        if !collapsed {
                            return Err(format!("\\p{{{name}}} in plain mode"));
                        }
                        let items = category_items(&name)
                            .ok_or_else(|| format!("unsupported category \\p{{{name}}}"))?;
                        out.push('[');
                        out.push_str(&items);
                        out.push(']');
                        i = end;
                    }
                    's' => {
                        out.push('[');
                        out.push_str(SPACE_CLASS_ITEMS);
                        out.push(']');
                        i += 2;
                    }
                    'S' => {
                        out.push_str("[^");
                        out.push_str(SPACE_CLASS_ITEMS);
                        out.push(']');
                        i += 2;
                    }
                    'd' => {
                        out.push_str("[0-9]");
                        i += 2;
                    }
                    'r' | 'n' | 't' => {
                        out.push('\\');
                        out.push(next);
                        i += 2;
                    }
                    _ if next.is_ascii_alphanumeric() => {
                        return Err(format!("unsupported escape \\{next}"));
                    }
                    _ => {
                        push_literal(&mut out, next);
                        i += 2;
                    }
                }
            }
            // Metacharacters keep their meaning; everything else is a literal.
            '(' | ')' | '|' | '?' | '*' | '+' | '{' | '}' | '.' | '^' | '$' | ',' | ':' | '='
            | '!' => {
                out.push(c);
                i += 1;
            }
            _ => {
                push_literal(&mut out, c);
                i += 1;
            }
        }
    }
    if in_class {
        return Err("unterminated class".into());
    }
    Ok(out)
}

/// An escape inside a class: the items it stands for, whether that is a single character
/// (which can bound a range), and where parsing continues.
fn class_escape(
    chars: &[char],
    i: usize,
    collapsed: bool,
) -> Result<(String, bool, usize), String> {
    let next = *chars.get(i + 1).ok_or("trailing backslash")?;
    Ok(match next {
        'p' => {
            let (name, end) = property_name(chars, i)?;
            if !collapsed {
                return Err(format!("\\p{{{name}}} in plain mode"));
            }
            let items = category_items(&name)
                .ok_or_else(|| format!("unsupported category \\p{{{name}}}"))?;
            (items, false, end)
        }
        's' => (SPACE_CLASS_ITEMS.to_string(), false, i + 2),
        'd' => ("0-9".to_string(), false, i + 2),
        'r' => (r"\r".to_string(), true, i + 2),
        'n' => (r"\n".to_string(), true, i + 2),
        't' => (r"\t".to_string(), true, i + 2),
        _ if next.is_ascii_alphanumeric() => return Err(format!("unsupported escape \\{next}")),
        _ => {
            let mut s = String::new();
            push_literal(&mut s, next);
            (s, true, i + 2)
        }
    })
}

/// `\p{NAME}` starting at `i`: NAME and the index after the closing brace.
fn property_name(chars: &[char], i: usize) -> Result<(String, usize), String> {
    if chars.get(i + 2) != Some(&'{') {
        return Err("\\p without braces".into());
    }
    let close = chars[i + 3..]
        .iter()
        .position(|&c| c == '}')
        .ok_or("unterminated \\p{")?;
    let name: String = chars[i + 3..i + 3 + close].iter().collect();
    Ok((name, i + 3 + close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: &str, text: &str) -> Vec<String> {
        let pass = RegexPass::new(pattern).unwrap();
        let mut out = Vec::new();
        pass.split(
            text,
            std::slice::from_ref(&(0..text.len())),
            &mut out,
            &mut String::new(),
        )
        .unwrap();
        out.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn gaps_are_kept_and_matches_isolated() {
        assert_eq!(split(r"\p{N}", "ab12c"), ["ab", "1", "2", "c"]);
        assert_eq!(split("[\r\n]", "a\nb"), ["a", "\n", "b"]);
    }

    #[test]
    fn categories_collapse_non_ascii() {
        // Cyrillic letters are letters; '١' (Arabic-Indic one) is a number.
        assert_eq!(split(r"\s?\p{L}+", "да нет١"), ["да", " нет", "١"]);
        assert_eq!(split(r"\p{N}+", "x١٢3y"), ["x", "١٢3", "y"]);
    }

    #[test]
    fn non_ascii_whitespace_is_only_whitespace() {
        // U+3000 lies inside the range ࠀ-一 but, as in llama.cpp, it is matched as \v.
        assert_eq!(
            split("[一-龥ࠀ-一가-퟿]+", "中\u{3000}文"),
            ["中", "\u{3000}", "文"]
        );
        assert_eq!(split(r"\s+$", "a\u{3000} "), ["a", "\u{3000} "]);
    }

    #[test]
    fn class_operators_stay_literal() {
        assert_eq!(split(r"[&&]+", "a&&b"), ["a", "&&", "b"]);
        assert_eq!(split(r"[a\-z]+", "x-az"), ["x", "-az"]);
    }

    #[test]
    fn lookahead() {
        assert_eq!(split(r"\s+(?!\S)|\s+", "a   b"), ["a", "  ", " ", "b"]);
    }
}
