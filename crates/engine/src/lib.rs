//! Hearth's engine: the pieces between a loaded model and a server.
//!
//! For now this holds only [`chat_template`], which renders a model's chat template
//! (`tokenizer.chat_template` in GGUF metadata) the way Hugging Face transformers does.
#![forbid(unsafe_code)]

pub mod chat_template;

pub use chat_template::{ChatTemplate, Message, TemplateError};
