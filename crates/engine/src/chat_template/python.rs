//! How Python prints template values: `str()` for `{{ x }}`, `repr()` inside containers, and
//! `float.__repr__`.
//!
//! Chat templates are written against Jinja2, where `{{ none }}` prints `None`, `{{ true }}`
//! prints `True` and `{{ [1, 'a'] }}` prints `[1, 'a']`. minijinja prints `none`, `true` and
//! `[1, "a"]`, so the environment installs [`write_str`] as its formatter.
//!
//! References: CPython `Objects/unicodeobject.c` (`unicode_repr`), `Python/pystrtod.c`
//! (`format_float_short`, mode `'r'`). Checked against CPython 3.11 through the `pyisms`
//! fixture (`tests/fixtures/templates/`).

use std::fmt::{self, Write};

use minijinja::value::{Value, ValueKind};

/// Containers nested deeper than this are not printed or serialized. Python would recurse
/// until its own recursion limit; we stop at the depth `set` allows ([`super::nesting`]).
pub(crate) const MAX_NESTING: usize = super::nesting::MAX_DEPTH;

/// Error raised when a value is nested deeper than [`MAX_NESTING`].
#[derive(Debug)]
pub(crate) struct TooDeep;

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value nested deeper than {MAX_NESTING} levels")
    }
}

impl std::error::Error for TooDeep {}

/// Writes Python's `str(value)`; what `{{ value }}` prints in Jinja2.
///
/// Undefined prints as the empty string (Jinja2's default `Undefined`).
pub(crate) fn write_str(out: &mut impl Write, value: &Value) -> Result<(), PrintError> {
    match value.kind() {
        ValueKind::Undefined => Ok(()),
        ValueKind::String => Ok(out.write_str(value.as_str().unwrap_or_default())?),
        _ => write_repr(out, value, 0),
    }
}

/// Why a value could not be printed.
#[derive(Debug)]
pub(crate) enum PrintError {
    /// The sink failed (for the render output: the output cap was hit).
    Fmt(fmt::Error),
    /// See [`TooDeep`].
    TooDeep,
}

impl From<fmt::Error> for PrintError {
    fn from(e: fmt::Error) -> Self {
        PrintError::Fmt(e)
    }
}

/// Writes Python's `repr(value)`, as used for the items of a printed list or dict.
fn write_repr(out: &mut impl Write, value: &Value, depth: usize) -> Result<(), PrintError> {
    if depth > MAX_NESTING {
        return Err(PrintError::TooDeep);
    }
    match value.kind() {
        // Jinja2's Undefined has no useful repr inside containers; templates never put one
        // there on purpose. Print it as Python prints a missing value.
        ValueKind::Undefined | ValueKind::None => out.write_str("None")?,
        ValueKind::Bool => out.write_str(if value.is_true() { "True" } else { "False" })?,
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => write_str_repr(out, value.as_str().unwrap_or_default())?,
        ValueKind::Seq | ValueKind::Iterable => {
            let tuple = value.is_tuple();
            let (open, close) = if tuple { ('(', ')') } else { ('[', ']') };
            out.write_char(open)?;
            let mut n = 0;
            if let Ok(items) = value.try_iter() {
                for item in items {
                    if n > 0 {
                        out.write_str(", ")?;
                    }
                    write_repr(out, &item, depth + 1)?;
                    n += 1;
                }
            }
            if tuple && n == 1 {
                out.write_char(',')?;
            }
            out.write_char(close)?;
        }
        ValueKind::Map => {
            out.write_char('{')?;
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.write_str(", ")?;
                    }
                    write_repr(out, &key, depth + 1)?;
                    out.write_str(": ")?;
                    let item = value.get_item(&key).unwrap_or_default();
                    write_repr(out, &item, depth + 1)?;
                }
            }
            out.write_char('}')?;
        }
        // Bytes, plain objects (loop, namespace, macros) and invalid values: Python would
        // print an object address; minijinja's own rendering is as good as any.
        _ => write!(out, "{value}")?,
    }
    Ok(())
}

/// Writes an integer in decimal or a float as `float.__repr__` does.
fn write_number(out: &mut impl Write, value: &Value) -> fmt::Result {
    if value.is_integer() {
        // minijinja prints every integer width (up to i128/u128) in plain decimal.
        write!(out, "{value}")
    } else {
        match f64::try_from(value.clone()) {
            Ok(x) => out.write_str(&float_repr(x)),
            Err(_) => write!(out, "{value}"),
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation when
/// the decimal exponent is in `-4 ..= 15` (always with a `.0` if integral), otherwise in
/// scientific notation with a signed, at least two-digit exponent (`1e+16`, `2.5e-07`).
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits as CPython's repr
    // (both are "shortest, correctly rounded"), as `d.ddde<exp>`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // CPython's `decpt` is the position of the decimal point relative to the digits.
    let decpt = exp + 1;
    if (-3..=16).contains(&decpt) {
        let n = digits.len() as i32;
        let body = if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
        } else if decpt < n {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        } else {
            format!("{}{}.0", digits, "0".repeat((decpt - n) as usize))
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

/// Python's `repr(str)`: single quotes unless the text contains `'` and no `"`; backslash
/// escapes for the quote, `\\`, `\t`, `\n`, `\r`; `\xNN`/`\uNNNN`/`\UNNNNNNNN` for characters
/// Python does not consider printable.
pub(crate) fn write_str_repr(out: &mut impl Write, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '\t' => out.write_str("\\t")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            c if c == quote => {
                out.write_char('\\')?;
                out.write_char(c)?;
            }
            c if !is_printable(c) => {
                let u = c as u32;
                if u < 0x100 {
                    write!(out, "\\x{u:02x}")?;
                } else if u < 0x10000 {
                    write!(out, "\\u{u:04x}")?;
                } else {
                    write!(out, "\\U{u:08x}")?;
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char(quote)
}

/// An approximation of CPython's `Py_UNICODE_ISPRINTABLE`: false for control characters,
/// separators other than the ASCII space, the common format characters and private-use
/// code points. The full rule needs the Unicode category tables; the difference only shows
/// when a template prints a list or dict holding unusual characters.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0x00..=0x1f | 0x7f..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0xf0000..=0x10ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings are CPython 3.11's `repr(float)`.
    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1.5e300, "1.5e+300"),
            (-3.25, "-3.25"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (100.0, "100.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for &(x, want) in cases {
            assert_eq!(float_repr(x), want, "repr({x:e})");
        }
    }

    /// Expected strings are CPython 3.11's `repr(str)`.
    #[test]
    fn str_repr_matches_python() {
        let cases: &[(&str, &str)] = &[
            ("a", "'a'"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            ("tab\tnl\ncr\r", "'tab\\tnl\\ncr\\r'"),
            ("back\\slash", "'back\\\\slash'"),
            ("\u{1}\u{7f}\u{a0}é", "'\\x01\\x7f\\xa0é'"),
            ("\u{200b}😀", "'\\u200b😀'"),
        ];
        for &(s, want) in cases {
            let mut out = String::new();
            write_str_repr(&mut out, s).unwrap();
            assert_eq!(out, want, "repr({s:?})");
        }
    }
}
