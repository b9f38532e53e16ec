//! The `tojson` filter as transformers defines it: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//!
//! transformers replaces Jinja2's own `tojson` (which HTML-escapes `<`, `>`, `&`, `'`) with
//! this, so tool schemas reach the model verbatim; templates also pass `indent=4` (Llama 3.x)
//! and `separators` through. Output must match Python byte for byte: a tool schema the model
//! saw in training with `", "` and `": "` separators is a different token sequence with `","`.
//!
//! Reference: CPython `Lib/json/encoder.py` (`_make_iterencode`, `py_encode_basestring`,
//! `py_encode_basestring_ascii`); checked through the `pyisms` fixture.

use std::fmt::Write;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

use super::python::{float_repr, MAX_NESTING};

/// The keyword arguments of `json.dumps` that transformers' filter forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DumpOptions {
    /// Escape every non-ASCII character as `\uXXXX` (UTF-16 units, lowercase hex).
    pub ensure_ascii: bool,
    /// Pretty-printing unit; `None` puts everything on one line.
    pub indent: Option<String>,
    /// Separator between items; Python's default is `", "`, or `","` when indenting.
    pub item_separator: String,
    /// Separator between a key and its value; Python's default is `": "`.
    pub key_separator: String,
    /// Sort object keys (Python sorts `str` keys by code point).
    pub sort_keys: bool,
}

impl DumpOptions {
    /// Reads the filter's arguments. Positional arguments bind in the order of transformers'
    /// signature `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
    pub fn from_args(args: &[Value], kwargs: &Kwargs) -> Result<Self, Error> {
        let mut ensure_ascii = Value::from(false);
        let mut indent = Value::from(());
        let mut separators = Value::from(());
        let mut sort_keys = Value::from(false);
        for (i, arg) in args.iter().enumerate() {
            let slot = match i {
                0 => &mut ensure_ascii,
                1 => &mut indent,
                2 => &mut separators,
                3 => &mut sort_keys,
                _ => return Err(Error::from(ErrorKind::TooManyArguments)),
            };
            *slot = arg.clone();
        }
        for (name, slot) in [
            ("ensure_ascii", &mut ensure_ascii),
            ("indent", &mut indent),
            ("separators", &mut separators),
            ("sort_keys", &mut sort_keys),
        ] {
            if let Some(v) = kwargs.get::<Option<Value>>(name)? {
                *slot = v;
            }
        }
        kwargs.assert_all_used()?;

        // json.dumps: a non-str indent is an int count of spaces ("' ' * indent").
        let indent = if indent.is_none() || indent.is_undefined() {
            None
        } else if let Some(s) = indent.as_str() {
            Some(s.to_owned())
        } else if let Some(n) = indent.as_i64() {
            Some(" ".repeat(n.clamp(0, 64) as usize))
        } else if indent.kind() == ValueKind::Bool {
            Some(" ".repeat(usize::from(indent.is_true())))
        } else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson(): indent must be an int or a str",
            ));
        };
        let (item_separator, key_separator) = if separators.is_none() || separators.is_undefined() {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        } else {
            let pair: Vec<Value> = separators.try_iter()?.collect();
            match pair.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_owned(),
                    b.as_str().unwrap_or_default().to_owned(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson(): separators must be a (item_separator, key_separator) pair",
                    ))
                }
            }
        };
        Ok(DumpOptions {
            ensure_ascii: ensure_ascii.is_true(),
            indent,
            item_separator,
            key_separator,
            sort_keys: sort_keys.is_true(),
        })
    }
}

/// `json.dumps(value, **options)`.
pub(crate) fn dumps(value: &Value, options: &DumpOptions) -> Result<String, Error> {
    let mut out = String::new();
    encode(&mut out, value, options, 0)?;
    Ok(out)
}

fn encode(out: &mut String, value: &Value, o: &DumpOptions, level: usize) -> Result<(), Error> {
    if level > MAX_NESTING {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson(): value nested deeper than {MAX_NESTING} levels"),
        ));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => push_number(out, value),
        ValueKind::String => push_string(out, value.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separate(out, i == 0, o, level + 1);
                encode(out, item, o, level + 1)?;
            }
            close(out, o, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                separate(out, i == 0, o, level + 1);
                push_string(out, key, o.ensure_ascii);
                out.push_str(&o.key_separator);
                encode(out, item, o, level + 1)?;
            }
            close(out, o, level);
            out.push('}');
        }
        // Undefined, bytes, loop/namespace/macro objects: Python raises TypeError.
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson(): object of kind {kind} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Before an item: the item separator (except before the first), then with `indent` a newline
/// and `level` indents. Python: `separator = item_separator + newline_indent`.
fn separate(out: &mut String, first: bool, o: &DumpOptions, level: usize) {
    if !first {
        out.push_str(&o.item_separator);
    }
    if let Some(indent) = &o.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

/// Before a closing bracket: with `indent`, a newline and the enclosing level's indents.
fn close(out: &mut String, o: &DumpOptions, level: usize) {
    if let Some(indent) = &o.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

/// Object keys as `json.dumps` converts them: str as is, numbers via repr, `true`/`false`/
/// `null` for bool and None.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::None => "null".to_owned(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_owned(),
        ValueKind::Number => {
            let mut s = String::new();
            push_number(&mut s, key);
            s
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson(): keys must be str, int, float, bool or None, not {kind}"),
            ))
        }
    })
}

/// Integers in decimal; floats as `float.__repr__`, with `NaN`/`Infinity` spelled as
/// `json.dumps` spells them (it allows them by default).
fn push_number(out: &mut String, value: &Value) {
    if value.is_integer() {
        let _ = write!(out, "{value}");
        return;
    }
    match f64::try_from(value.clone()) {
        Ok(x) if x.is_nan() => out.push_str("NaN"),
        Ok(x) if x.is_infinite() => out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" }),
        Ok(x) => out.push_str(&float_repr(x)),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// A JSON string literal. Without `ensure_ascii` only `"`, `\`, and control characters below
/// U+0020 are escaped (`\n`, `\r`, `\t`, `\b`, `\f` by name, the rest as `\u00XX`); with it,
/// everything outside `' '..='~'` is escaped as UTF-16 `\uXXXX` units.
fn push_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DumpOptions {
        DumpOptions::from_args(&[], &Kwargs::from_iter(Vec::<(&str, Value)>::new())).unwrap()
    }

    /// Expected strings are CPython 3.11's `json.dumps(..., ensure_ascii=False)`.
    #[test]
    fn strings_escape_like_python() {
        let v = Value::from("é\"\\\n\t\u{1}\u{7f}\u{8}\u{c}</>&'😀");
        assert_eq!(
            dumps(&v, &opts()).unwrap(),
            "\"é\\\"\\\\\\n\\t\\u0001\u{7f}\\b\\f</>&'😀\""
        );
        let ascii = DumpOptions {
            ensure_ascii: true,
            ..opts()
        };
        assert_eq!(
            dumps(&Value::from("é😀\u{7f}~"), &ascii).unwrap(),
            "\"\\u00e9\\ud83d\\ude00\\u007f~\""
        );
    }

    #[test]
    fn default_separators_and_empty_containers() {
        let v = Value::from(minijinja::value::Serde(
            serde_json::json!({"a": [1, 2.5, null, true], "b": {}, "c": []}),
        ));
        assert_eq!(
            dumps(&v, &opts()).unwrap(),
            r#"{"a": [1, 2.5, null, true], "b": {}, "c": []}"#
        );
    }

    #[test]
    fn undefined_is_not_serializable() {
        assert!(dumps(&Value::UNDEFINED, &opts()).is_err());
    }
}
