//! Hearth's engine: the pieces between a loaded model and a server.
//!
//! * [`chat_template`] renders a model's chat template (`tokenizer.chat_template` in GGUF
//!   metadata) the way Hugging Face transformers does;
//! * [`sampler`] chooses each sequence's next token from its logits, with its own seeded
//!   generator;
//! * [`output`] turns tokens into text deltas (stop strings, the reasoning split);
//! * [`scheduler`] is the engine loop that owns the model, the KV pool and the compute
//!   pool, and batches every running request into each forward step;
//! * [`prefix_cache`] finds prompt prefixes already in the KV pool;
//! * [`logprobs`] computes OpenAI's token log-probabilities;
//! * [`grammar`] constrains a sequence's tokens to a JSON schema, grammar or regex.
#![forbid(unsafe_code)]

pub mod chat_template;
pub mod grammar;
pub mod logprobs;
pub mod output;
pub mod prefix_cache;
pub mod sampler;
pub mod scheduler;
pub mod tools;

pub use chat_template::{ChatTemplate, Message, TemplateError};
pub use sampler::{Sampler, SamplerError, SamplerParams};
