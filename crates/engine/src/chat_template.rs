//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! A GGUF file carries its model's template as Jinja source in `tokenizer.chat_template`,
//! written for Hugging Face transformers, which renders it with Jinja2 in a particular
//! environment. [`ChatTemplate`] renders it with minijinja in an imitation of that
//! environment (`chat_template/environment.rs` maps it feature by feature), so that the prompt
//! is byte-identical to what `tokenizer.apply_chat_template(..., tokenize=False)` gives.
//! That equality is the test: `crates/engine/tests/chat_template.rs` compares against
//! outputs Jinja2 produced (`tests/fixtures/templates/make_fixtures.py`).
//!
//! Templates are untrusted programs from model files. Rendering one has no file, network or
//! environment access (no loader: `include`/`import` cannot resolve), and is bounded by
//! [`Limits`]: a fuel budget on instructions and allocated bytes, a recursion limit, and a
//! cap on output size. Every failure is a [`TemplateError`]; nothing here panics on template
//! input (as a last line of defence, a panic inside the interpreter is caught and reported
//! as an error).
//!
//! Not done here: tokenization (the rendered text still has to be tokenized with special
//! tokens parsed), and `apply_chat_template` options that only matter for training
//! (`continue_final_message`, assistant masks; `{% generation %}` tags render their body).

mod builtin;
mod environment;
mod error;
mod message;
mod nesting;
mod preprocess;
mod python;
mod tojson;

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use minijinja::value::{Serde, Value};
use minijinja::{Environment, ErrorKind};

pub use builtin::BuiltinTemplate;
pub use error::TemplateError;
pub use message::{Content, ContentPart, FunctionCall, Message, ToolCall};

use environment::{Raised, TEMPLATE_NAME};

/// Bounds on the work one render of an untrusted template may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted template source. Real templates are 0.3–30 KB.
    pub max_source_bytes: usize,
    /// minijinja fuel per render: about one unit per instruction executed and per 64 bytes
    /// of strings and lists created. Bounds both time and memory (≈ `fuel × 64` bytes).
    pub fuel: u64,
    /// Largest rendered prompt.
    pub max_output_bytes: usize,
    /// Nesting depth of loops, conditionals and macro calls; minijinja caps it at 500.
    pub max_recursion: usize,
}

impl Default for Limits {
    /// Sized for conversations of several MB with room to spare: the fixture conversations
    /// use under 500 fuel each, and a 1,000-turn, 2 MB conversation through the Qwen3
    /// template about 350,000 (`tests/chat_template.rs::long_conversation_fits_default_limits`
    /// renders it on a quarter of this budget). A hostile loop burns the whole budget in about
    /// 0.1 s in a release build.
    fn default() -> Self {
        Limits {
            max_source_bytes: 1 << 20,
            fuel: 2_000_000,
            max_output_bytes: 16 << 20,
            max_recursion: 100,
        }
    }
}

/// Where `strftime_now()` gets the time from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The machine's local time, as transformers' `datetime.now()`.
    #[default]
    Local,
    /// A fixed time, for reproducible prompts and tests.
    Fixed(chrono::NaiveDateTime),
}

/// Settings fixed when a template is compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateConfig {
    /// Work bounds.
    pub limits: Limits,
    /// Time source of `strftime_now()`.
    pub clock: Clock,
}

/// Per-render settings beyond messages and tools.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RenderOptions {
    /// End the prompt with the header of a new assistant turn, so the model writes the reply.
    pub add_generation_prompt: bool,
    /// Extra template variables, as transformers' `apply_chat_template(**kwargs)`: e.g.
    /// `enable_thinking` (Qwen3) or `date_string` (Llama 3.x). They may replace
    /// `bos_token`/`eos_token` but not the variables the engine sets (`messages`, `tools`,
    /// `documents`, `add_generation_prompt`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Where a [`ChatTemplate`]'s source came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model file's `tokenizer.chat_template` (or a caller-supplied source).
    Embedded,
    /// A template built into the engine.
    Builtin(BuiltinTemplate),
}

/// A compiled chat template, ready to render conversations. Cheap to share across threads.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    limits: Limits,
    origin: TemplateOrigin,
    /// Whether the template renders OpenAI-style content-part lists itself (Gemma 3 does);
    /// if not, text parts are joined into a string before rendering.
    takes_typed_content: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("limits", &self.limits)
            .field("takes_typed_content", &self.takes_typed_content)
            .finish_non_exhaustive()
    }
}

/// The variables the engine sets; [`RenderOptions::extra`] cannot replace them.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// Text of the typed-content probe (see [`ChatTemplate::takes_typed_content`]).
const PROBE_TEXT: &str = "hearth-typed-content-probe";

impl ChatTemplate {
    /// Compiles `source` with default [`Limits`] and the local clock. `bos_token` and
    /// `eos_token` are the token *texts* (e.g. `<bos>`), which templates print.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        Self::with_config(source, bos_token, eos_token, &TemplateConfig::default())
    }

    /// Compiles `source` with explicit limits and clock.
    pub fn with_config(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        config: &TemplateConfig,
    ) -> Result<Self, TemplateError> {
        let env = guard(|| environment::build(source, &config.limits, config.clock))?;
        let mut template = ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            limits: config.limits.clone(),
            origin: TemplateOrigin::Embedded,
            takes_typed_content: false,
        };
        template.takes_typed_content = template.probe_typed_content();
        Ok(template)
    }

    /// The template for a model: its own `tokenizer.chat_template` when it has a non-empty
    /// one, else the built-in one for its family ([`BuiltinTemplate::for_model`]).
    pub fn for_model(
        embedded: Option<&str>,
        architecture: &str,
        name: Option<&str>,
        bos_token: &str,
        eos_token: &str,
        config: &TemplateConfig,
    ) -> Result<Self, TemplateError> {
        if let Some(source) = embedded.filter(|s| !s.trim().is_empty()) {
            return Self::with_config(source, bos_token, eos_token, config);
        }
        let builtin = BuiltinTemplate::for_model(architecture, name).ok_or_else(|| {
            TemplateError::NoTemplate {
                architecture: architecture.to_owned(),
            }
        })?;
        let mut template = Self::with_config(builtin.source(), bos_token, eos_token, config)?;
        template.origin = TemplateOrigin::Builtin(builtin);
        Ok(template)
    }

    /// Where the source came from.
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    /// Whether the template renders content-part lists itself. Decided at compile time the
    /// way llama.cpp does: render one user message whose content is `[{"type": "text",
    /// "text": PROBE}]` and check the text shows up without the part's `type` key. When it
    /// does not, [`render`](Self::render) joins text parts into a string first
    /// ([`Content::joined_text`]).
    pub fn takes_typed_content(&self) -> bool {
        self.takes_typed_content
    }

    /// Renders `messages` with `tools` (OpenAI tool objects; empty means none, which
    /// templates see as `tools = None`).
    pub fn render(
        &self,
        messages: &[Message],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let options = RenderOptions {
            add_generation_prompt,
            ..RenderOptions::default()
        };
        self.render_with(messages, tools, &options)
    }

    /// [`ChatTemplate::render`] for a prompt that a tokenizer will encode. Templates print
    /// BOS themselves; when the tokenizer adds one too (`tokenizer_adds_bos`), the
    /// template's is dropped, as llama.cpp does, so the prompt does not start with two.
    pub fn render_prompt(
        &self,
        messages: &[Message],
        tools: &[serde_json::Value],
        options: &RenderOptions,
        tokenizer_adds_bos: bool,
    ) -> Result<String, TemplateError> {
        let rendered = self.render_with(messages, tools, options)?;
        Ok(match rendered.strip_prefix(self.bos_token.as_str()) {
            Some(rest) if tokenizer_adds_bos && !self.bos_token.is_empty() => rest.to_owned(),
            _ => rendered,
        })
    }

    /// Renders with [`RenderOptions`].
    pub fn render_with(
        &self,
        messages: &[Message],
        tools: &[serde_json::Value],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        if let Some(name) = RESERVED.iter().find(|n| options.extra.contains_key(**n)) {
            return Err(TemplateError::ReservedVariable((*name).to_owned()));
        }
        let messages = if self.takes_typed_content {
            Value::from(Serde(messages))
        } else {
            let flattened: Vec<Message> = messages
                .iter()
                .map(|m| match &m.content {
                    Some(content @ Content::Parts(_)) => Message {
                        content: Some(Content::Text(content.joined_text())),
                        ..m.clone()
                    },
                    _ => m.clone(),
                })
                .collect();
            Value::from(Serde(&flattened))
        };
        let tools = if tools.is_empty() {
            Value::from(())
        } else {
            Value::from(Serde(tools))
        };
        // Order as transformers passes them: messages, tools, documents,
        // add_generation_prompt, then special tokens overridden by kwargs.
        let mut context: Vec<(String, Value)> = vec![
            ("messages".into(), messages),
            ("tools".into(), tools),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(options.add_generation_prompt),
            ),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
        ];
        for (key, value) in &options.extra {
            let value = Value::from(Serde(value));
            match context.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => context.push((key.clone(), value)),
            }
        }
        self.render_context(Value::from_pairs(context))
    }

    /// Runs the template on a prepared context, on a thread with a stack large enough for
    /// the deepest values [`nesting`] allows, with the output cap in place.
    fn render_context(&self, context: Value) -> Result<String, TemplateError> {
        let render = || {
            let mut sink = CappedOutput {
                buf: Vec::new(),
                limit: self.limits.max_output_bytes,
                exceeded: false,
            };
            let template = self
                .env
                .get_template(TEMPLATE_NAME)
                .map_err(|e| internal(&e))?;
            let result = template
                .render_captured_to(context, &mut sink)
                .map(drop)
                .map_err(|e| self.classify(&e));
            if sink.exceeded {
                return Err(TemplateError::OutputTooLarge {
                    limit: self.limits.max_output_bytes,
                });
            }
            result?;
            // minijinja only writes whole `str`s, so this cannot fail; map it anyway.
            String::from_utf8(sink.buf).map_err(|e| TemplateError::Render {
                line: None,
                message: format!("output is not UTF-8: {e}"),
            })
        };
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("chat-template".into())
                .stack_size(render_stack_bytes(&self.limits))
                .spawn_scoped(scope, render)
                .map_err(|e| TemplateError::Render {
                    line: None,
                    message: format!("cannot start the render thread: {e}"),
                })?;
            // A panic in the interpreter (a bug, but one untrusted input may find) costs
            // this render, not the process.
            thread
                .join()
                .unwrap_or_else(|_| Err(interpreter_panicked()))
        })
    }

    /// Maps a minijinja error to the [`TemplateError`] a caller can act on.
    fn classify(&self, err: &minijinja::Error) -> TemplateError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = source {
            if let Some(raised) = e.downcast_ref::<Raised>() {
                return TemplateError::Raised(raised.0.clone());
            }
            source = e.source();
        }
        match err.kind() {
            ErrorKind::OutOfFuel => TemplateError::OutOfFuel {
                budget: self.limits.fuel,
            },
            ErrorKind::InvalidOperation if err.detail() == Some("recursion limit exceeded") => {
                TemplateError::RecursionLimit {
                    limit: self.limits.max_recursion,
                }
            }
            _ => TemplateError::Render {
                line: err.line(),
                message: describe(err),
            },
        }
    }

    /// See [`takes_typed_content`](Self::takes_typed_content).
    fn probe_typed_content(&self) -> bool {
        let probe = [Message {
            role: "user".into(),
            content: Some(Content::Parts(vec![ContentPart::text(PROBE_TEXT)])),
            ..Message::default()
        }];
        let context = Value::from_pairs([
            ("messages", Value::from(Serde(&probe))),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(false)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
        ]);
        match self.render_context(context) {
            Ok(out) => {
                out.contains(PROBE_TEXT) && !out.contains("'type'") && !out.contains("\"type\"")
            }
            Err(_) => false,
        }
    }
}

/// A minijinja error's message with its chain of causes.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

fn internal(err: &minijinja::Error) -> TemplateError {
    TemplateError::Render {
        line: None,
        message: describe(err),
    }
}

/// Runs `f`, turning a panic into an error: the compiler parses untrusted programs, and a
/// bug in it must cost one model load, not the process.
fn guard<T>(f: impl FnOnce() -> Result<T, TemplateError>) -> Result<T, TemplateError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(interpreter_panicked()))
}

fn interpreter_panicked() -> TemplateError {
    TemplateError::Render {
        line: None,
        message: "internal error in the template interpreter".into(),
    }
}

/// Stack for the render thread. The deepest value a template can build is about
/// `max_recursion × (150 + nesting::MAX_DEPTH)` levels ([`nesting`]); minijinja's recursive
/// drop, comparison and printing take up to ~550 bytes per level in a release build and
/// several times that in a debug build. 256 MiB per 100 units of recursion covers both. It
/// is address space, not memory: pages are only committed as deep values actually use them.
fn render_stack_bytes(limits: &Limits) -> usize {
    const PER_100_RECURSION: usize = 256 << 20;
    limits.max_recursion.div_ceil(100).max(1) * PER_100_RECURSION
}

/// The render's output sink: refuses to grow past `limit` bytes.
struct CappedOutput {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for CappedOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("chat template output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
