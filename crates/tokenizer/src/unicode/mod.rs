//! Code point classes and GPT-2's byte-to-character mapping, as llama.cpp's `unicode.cpp`
//! defines them.
//!
//! The class table is generated from llama.cpp's own `unicode-data.cpp` (see
//! `scripts/gen_unicode_tables.py`), so the pre-tokenizers agree with llama.cpp on every
//! code point, including ones whose category changed between Unicode versions.

#[rustfmt::skip]
mod tables;

/// llama.cpp's `unicode_cpt_flags`, as a bit set. Only the bits the pre-tokenizers read
/// are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(pub u16);

impl Flags {
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    pub const ACCENT_MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    pub const WHITESPACE: u16 = 0x0100;
    /// The category bits (llama.cpp's `MASK_CATEGORIES`).
    pub const CATEGORIES: u16 = 0x00ff;

    /// The flags of a position outside the text being split: none at all. llama.cpp's
    /// custom splitters rely on this "no flags" value (`as_uint() == 0`) at segment ends.
    pub const OUTSIDE: Flags = Flags(0);

    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub fn is_accent_mark(self) -> bool {
        self.0 & Self::ACCENT_MARK != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// Whether any flag is set (llama.cpp's `as_uint() != 0`): false only for
    /// [`Flags::OUTSIDE`].
    #[inline]
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// The flags of code point `cp` (any `char`).
#[inline]
pub(crate) fn flags(cp: char) -> Flags {
    let cp = cp as u32;
    let block = tables::BLOCK_OF[(cp >> 8) as usize] as usize;
    let class = tables::CLASSES[block][(cp & 0xff) as usize] as usize;
    Flags(tables::CLASS_FLAGS[class])
}

/// GPT-2's reversible byte-to-character mapping (`bytes_to_unicode` in OpenAI's
/// `encoder.py`, `unicode_byte_to_utf8_map` in llama.cpp): printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100.. in byte order, so every byte string becomes
/// a printable string and vocabularies can be stored as text.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte that [`byte_to_char`] maps to `c`, if any.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        let b = cp as u8;
        if is_printable_latin1(b) {
            return Some(b);
        }
        return None;
    }
    // The non-printable bytes, in order, took U+0100 + n.
    let n = cp.checked_sub(0x100)?;
    NON_PRINTABLE.get(n as usize).copied()
}

fn is_printable_latin1(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff)
}

/// The 68 bytes that are not printable Latin-1, in increasing order.
const NON_PRINTABLE: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        let byte = b as u8;
        if !matches!(byte, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff) {
            out[n] = byte;
            n += 1;
        }
        b += 1;
    }
    out
};

const BYTE_TO_CHAR: [char; 256] = {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let byte = b as u8;
        let cp = if matches!(byte, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff) {
            b as u32
        } else {
            n += 1;
            0x100 + n - 1
        };
        out[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_is_gpt2s() {
        // Checked against OpenAI's bytes_to_unicode(): space is 'Ġ' (U+0120), newline 'Ċ'
        // (U+010A), 0x7f is U+0121, 0xad is U+0143.
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0x7f), '\u{121}');
        assert_eq!(byte_to_char(0xad), '\u{143}');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }

    #[test]
    fn classes_match_llama_cpp() {
        assert_eq!(flags('a').0, Flags::LETTER);
        assert_eq!(flags('7').0, Flags::NUMBER);
        assert_eq!(flags(' ').0, 0x0108);
        assert_eq!(flags('\n').0, 0x0180);
        assert_eq!(flags('$').0, Flags::SYMBOL);
        assert_eq!(flags('!').0, Flags::PUNCTUATION);
        assert_eq!(flags('\u{3000}').0, 0x0108);
        assert_eq!(flags('\u{0301}').0, Flags::ACCENT_MARK);
        assert_eq!(flags('中').0, Flags::LETTER);
        assert_eq!(flags('\u{10ffff}').0, 0x0001);
    }
}
