//! The minijinja environment that imitates the one Hugging Face transformers renders chat
//! templates in (`transformers/utils/chat_template_utils.py::_compile_jinja_template`):
//!
//! | transformers (Jinja2)                          | here                                   |
//! |------------------------------------------------|----------------------------------------|
//! | `ImmutableSandboxedEnvironment`                | no loader, no `include`/`import`/`extends` (minijinja built without `multi_template`), values are read-only |
//! | `trim_blocks=True, lstrip_blocks=True`         | [`SyntaxConfig`]                       |
//! | `jinja2.ext.loopcontrols`                      | minijinja `loop_controls` feature      |
//! | `AssistantTracker` (`{% generation %}`)        | [`super::preprocess`]                  |
//! | `filters["tojson"] = json.dumps(...)`          | [`super::tojson`]                      |
//! | `globals["raise_exception"]`                   | [`raise_exception`] → [`Raised`]       |
//! | `globals["strftime_now"]`                      | [`strftime_now`] with a [`Clock`]      |
//! | Python `str` methods, `dict.items()`, ...      | minijinja-contrib `pycompat`           |
//! | Python `str()` of printed values               | [`super::python::write_str`] formatter |
//!
//! Bounds that Jinja2 does not have: fuel (instructions and bytes allocated), a recursion
//! limit, a nesting limit on values ([`super::nesting`]), and (in the caller) an output cap
//! and a render thread with a known stack.

use std::fmt;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::nesting;
use super::preprocess::preprocess;
use super::python::{self, PrintError};
use super::tojson::{dumps, DumpOptions};
use super::{Clock, Limits, TemplateError};

/// Name under which the one template is stored in its environment.
pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// The payload of the error `raise_exception` returns, so the caller can tell a template's
/// deliberate rejection from an evaluation failure.
#[derive(Debug)]
pub(crate) struct Raised(pub String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// Compiles `source` into an environment configured like transformers'.
pub(crate) fn build(
    source: &str,
    limits: &Limits,
    clock: Clock,
) -> Result<Environment<'static>, TemplateError> {
    if source.len() > limits.max_source_bytes {
        return Err(TemplateError::SourceTooLarge {
            len: source.len(),
            limit: limits.max_source_bytes,
        });
    }
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Syntax {
            line: None,
            message: e.to_string(),
        })?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.max_recursion);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        python::write_str(out, value).map_err(|e| match e {
            PrintError::Fmt(_) => Error::from(ErrorKind::WriteFailure),
            PrintError::TooDeep => Error::new(ErrorKind::InvalidOperation, "cannot print value")
                .with_source(python::TooDeep),
        })
    });
    nesting::install(&mut env);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |format: &str| {
        strftime_now(clock, format)
    });

    env.add_template_owned(TEMPLATE_NAME, preprocess(source))
        .map_err(|e| TemplateError::Syntax {
            line: e.line(),
            message: e.detail().unwrap_or("syntax error").to_owned(),
        })?;
    Ok(env)
}

/// `{{ x | tojson(...) }}`: see [`super::tojson`].
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let options = DumpOptions::from_args(&args, &kwargs)?;
    dumps(value, &options).map(Value::from)
}

/// `raise_exception(message)`: fails the render with `message`, which the caller surfaces
/// as [`TemplateError::Raised`].
fn raise_exception(message: Option<Value>) -> Result<Value, Error> {
    let mut text = String::new();
    if let Some(message) = &message {
        // str(message), as Python's TemplateError(message) would show it.
        let _ = python::write_str(&mut text, message);
    }
    Err(Error::new(ErrorKind::InvalidOperation, text.clone()).with_source(Raised(text)))
}

/// `strftime_now(format)`: the clock's current time formatted with C `strftime` codes.
///
/// Python passes unknown `%` codes through to the platform's `strftime`; chrono rejects them,
/// and so do we, with an error rather than a guess.
fn strftime_now(clock: Clock, format: &str) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now(): unsupported format {format:?}"),
        ));
    }
    let now = match clock {
        Clock::Local => chrono::Local::now().naive_local(),
        Clock::Fixed(t) => t,
    };
    // A valid code can still fail to format: `%z` needs an offset, which a naive time has
    // none of. `to_string` would panic on that error (found by fuzz/chat_template).
    let mut out = String::new();
    use std::fmt::Write;
    write!(out, "{}", now.format_with_items(items.into_iter())).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now(): cannot format {format:?} (e.g. %z: the time has no zone)"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_rejects_unknown_codes() {
        let t = chrono::NaiveDate::from_ymd_opt(2025, 7, 4)
            .and_then(|d| d.and_hms_opt(13, 5, 9))
            .unwrap();
        assert_eq!(
            strftime_now(Clock::Fixed(t), "%d %b %Y").unwrap(),
            "04 Jul 2025"
        );
        assert!(strftime_now(Clock::Fixed(t), "%Q").is_err());
        // Regression (fuzz/chat_template): a code that needs a zone panicked.
        assert!(strftime_now(Clock::Fixed(t), "%H %z").is_err());
    }
}
