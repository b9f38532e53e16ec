//! Typed errors for compiling and rendering chat templates.

use std::fmt;

/// Why a chat template could not be compiled or rendered.
///
/// Templates come from model files, so every variant is an expected outcome of hostile or
/// broken input, never a bug to panic on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template source is larger than [`Limits::max_source_bytes`](super::Limits).
    #[error("chat template is {len} bytes, more than the limit of {limit}")]
    SourceTooLarge {
        /// Size of the source.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The template does not parse.
    #[error("chat template does not parse{}: {message}", AtLine(*line))]
    Syntax {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// What the parser said.
        message: String,
    },
    /// The template called `raise_exception(message)`: it rejects this conversation
    /// (for instance roles that do not alternate). The message is meant for the client.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// The render did more work or allocated more than its fuel budget allows.
    #[error("chat template exceeded its work budget of {budget} fuel")]
    OutOfFuel {
        /// The budget, in minijinja fuel units (about one per instruction or 64 bytes).
        budget: u64,
    },
    /// The rendered prompt grew past [`Limits::max_output_bytes`](super::Limits).
    #[error("chat template output exceeded the limit of {limit} bytes")]
    OutputTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Macros, loops or conditionals nested deeper than the recursion limit.
    #[error("chat template exceeded the recursion limit of {limit}")]
    RecursionLimit {
        /// The limit.
        limit: usize,
    },
    /// An extra template variable tried to replace one the engine sets.
    #[error("`{0}` is set by the engine and cannot be passed as an extra template variable")]
    ReservedVariable(String),
    /// The model file has no chat template and no built-in one matches its architecture.
    #[error(
        "the model has no chat template and none is built in for architecture `{architecture}`"
    )]
    NoTemplate {
        /// `general.architecture` of the model.
        architecture: String,
    },
    /// Any other failure while rendering: an undefined variable's attribute, a type error
    /// (`'a' + none`), an unknown filter, a bad `strftime_now` format, ...
    #[error("chat template failed{}: {message}", AtLine(*line))]
    Render {
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
}

/// Formats an optional line number as ` at line N`.
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " at line {line}"),
            None => Ok(()),
        }
    }
}
