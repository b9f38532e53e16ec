//! Source rewrites applied before a template is compiled.
//!
//! 1. transformers' `{% generation %}` … `{% endgeneration %}` (its `AssistantTracker`
//!    extension, which marks assistant text for training masks and otherwise renders its
//!    body) becomes `{% if true %}` … `{% endif %}`. Only the keyword is replaced, so the
//!    tag's `-`/`+` whitespace markers act exactly as on the original.
//! 2. Every `{% set target = expr %}` becomes `{% set target = (expr) | <guard> %}`, where
//!    the guard filter ([`super::nesting`]) rejects values nested too deeply. Namespace
//!    attributes set in a loop are the only state a template can carry from one iteration to
//!    the next, so without this `{% set ns.x = [ns.x] %}` in a loop builds a list nested a
//!    million levels deep for a few million fuel, and minijinja's recursive drop of it
//!    overflows the stack. The guard returns its input unchanged, so output is unaffected.
//!
//! The scan is a small lexer over Jinja's delimiters: it skips comments, `{% raw %}` blocks
//! and string literals inside tags, so text that only looks like a tag is left alone.

use super::nesting::GUARD_FILTER;

/// Applies both rewrites to `source`.
pub(crate) fn preprocess(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + source.len() / 8);
    let mut rest = source;
    loop {
        let Some(at) = find_tag_open(rest) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let consumed = if rest.starts_with("{#") {
            copy_until(&mut out, rest, "#}")
        } else if rest.starts_with("{{") {
            copy_expression(&mut out, rest)
        } else {
            block_tag(&mut out, rest)
        };
        rest = &rest[consumed..];
    }
}

/// Position of the next `{{`, `{%` or `{#`.
fn find_tag_open(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%' | b'#'))
}

/// Copies `s` up to and including the first `end` (or all of it); returns bytes consumed.
fn copy_until(out: &mut String, s: &str, end: &str) -> usize {
    let n = s[2..].find(end).map_or(s.len(), |i| 2 + i + end.len());
    out.push_str(&s[..n]);
    n
}

/// Copies a `{{ … }}` tag; returns bytes consumed.
fn copy_expression(out: &mut String, s: &str) -> usize {
    let n = expression_end(s, b'}').map_or(s.len(), |i| i + 2);
    out.push_str(&s[..n]);
    n
}

/// Byte offset of the `}}` (`closer` = `}`) or `%}` (`closer` = `%`) that ends the tag
/// starting at `s[0]`, skipping string literals and, for `}}`, braces of dict literals.
fn expression_end(s: &str, closer: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut braces = 0usize;
    let mut i = 2;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i = skip_string(bytes, i, quote);
                continue;
            }
            b if b == closer && braces == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index just past the string literal opening at `bytes[start]`.
fn skip_string(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Handles a `{% … %}` tag at the start of `s`; returns bytes consumed.
fn block_tag(out: &mut String, s: &str) -> usize {
    let Some(close) = expression_end(s, b'%') else {
        out.push_str(s);
        return s.len();
    };
    let end = close + 2; // past `%}`
                         // `{%`, an optional whitespace marker, spaces, then the keyword.
    let mut head = 2;
    if matches!(s.as_bytes().get(head), Some(b'-' | b'+')) {
        head += 1;
    }
    let body = &s[head..close];
    let keyword_at = head + (body.len() - body.trim_start().len());
    let word_len = s[keyword_at..close]
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(close - keyword_at);
    match &s[keyword_at..keyword_at + word_len] {
        "raw" => {
            // Copy verbatim through the matching `{% endraw %}`.
            let after = &s[end..];
            let stop = find_endraw(after).map_or(after.len(), |i| i);
            out.push_str(&s[..end + stop]);
            end + stop
        }
        "generation" => {
            out.push_str(&s[..keyword_at]);
            out.push_str("if true");
            out.push_str(&s[keyword_at + word_len..end]);
            end
        }
        "endgeneration" => {
            out.push_str(&s[..keyword_at]);
            out.push_str("endif");
            out.push_str(&s[keyword_at + word_len..end]);
            end
        }
        "set" => {
            let inner_end = if s[..close].ends_with(['-', '+']) {
                close - 1
            } else {
                close
            };
            match assignment_at(s, keyword_at + word_len, inner_end) {
                Some(eq) => {
                    let expr = s[eq + 1..inner_end].trim();
                    out.push_str(&s[..eq + 1]);
                    out.push_str(" (");
                    out.push_str(expr);
                    out.push_str(") | ");
                    out.push_str(GUARD_FILTER);
                    out.push(' ');
                    out.push_str(&s[inner_end..end]);
                }
                // `{% set x %}…{% endset %}` captures output: a string, nothing to guard.
                None => out.push_str(&s[..end]),
            }
            end
        }
        _ => {
            out.push_str(&s[..end]);
            end
        }
    }
}

/// Offset of the `{% endraw %}` tag (any whitespace markers) in `s`.
fn find_endraw(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("{%") {
        let at = from + i;
        let rest = s[at + 2..].trim_start_matches(['-', '+']).trim_start();
        if rest.starts_with("endraw") {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

/// The top-level `=` of a `set` tag between `from` and `to`: not inside brackets or strings
/// and not part of `==`, `!=`, `<=`, `>=`.
fn assignment_at(s: &str, from: usize, to: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < to {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i = skip_string(bytes, i, quote);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'=' if depth == 0 => {
                let prev = if i > 0 { bytes[i - 1] } else { 0 };
                let next = bytes.get(i + 1).copied().unwrap_or(0);
                if next != b'=' && !matches!(prev, b'=' | b'!' | b'<' | b'>') {
                    return Some(i);
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(expr: &str) -> String {
        format!("({expr}) | {GUARD_FILTER}")
    }

    #[test]
    fn generation_tags_keep_whitespace_markers() {
        assert_eq!(
            preprocess("a{%- generation -%}b{% endgeneration %}c"),
            "a{%- if true -%}b{% endif %}c"
        );
        assert_eq!(
            preprocess("{%generation%}x{%+endgeneration+%}"),
            "{%if true%}x{%+endif+%}"
        );
        assert_eq!(
            preprocess("{% if generation %}{% for generations in x %}"),
            "{% if generation %}{% for generations in x %}"
        );
    }

    #[test]
    fn set_values_pass_the_guard() {
        assert_eq!(
            preprocess("{% set ns.x = [ns.x] %}"),
            format!("{{% set ns.x = {} %}}", guarded("[ns.x]"))
        );
        assert_eq!(
            preprocess("{%- set a, b = 1, 2 -%}"),
            format!("{{%- set a, b = {} -%}}", guarded("1, 2"))
        );
        assert_eq!(
            preprocess("{% set d = {'a': {'b': 1}} %}"),
            format!("{{% set d = {} %}}", guarded("{'a': {'b': 1}}"))
        );
        assert_eq!(
            preprocess("{%set x=y if a == b else '%}='%}"),
            format!("{{%set x= {} %}}", guarded("y if a == b else '%}='"))
        );
        // Block set, comparisons only, and look-alikes are untouched.
        for s in [
            "{% set x %}a{% endset %}",
            "{% set x | upper %}a{% endset %}",
            "{{ '{% set x = 1 %}' }}",
            "{# {% set x = 1 %} #}",
            "{% raw %}{% set x = 1 %}{% endraw %}",
            "{%- raw -%}{% set x = 1 %}{%- endraw -%}",
            "{% if x == 1 %}",
            "{{ {'a': {'b': '{% set y = 2 %}'}} }}",
        ] {
            assert_eq!(preprocess(s), s);
        }
    }

    #[test]
    fn unterminated_input_is_copied() {
        for s in [
            "{% set x = 1",
            "{{ 'abc",
            "{# open",
            "{% raw %}x",
            "{",
            "x{",
        ] {
            assert_eq!(preprocess(s), s);
        }
    }
}
