//! Hearth's engine: the pieces between a loaded model and a server.
//!
//! * [`chat_template`] renders a model's chat template (`tokenizer.chat_template` in GGUF
//!   metadata) the way Hugging Face transformers does;
//! * [`sampler`] chooses each sequence's next token from its logits, with its own seeded
//!   generator.
#![forbid(unsafe_code)]

pub mod chat_template;
pub mod output;
pub mod sampler;

pub use chat_template::{ChatTemplate, Message, TemplateError};
pub use sampler::{Sampler, SamplerError, SamplerParams};
