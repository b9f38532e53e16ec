//! What goes into the engine (a [`Job`]: a [`Request`] and where its [`Event`]s go) and
//! what comes back. The HTTP server and the CLI speak only these types to the engine.

use tokio::sync::mpsc::UnboundedSender;

use crate::chat_template::Message;
use crate::grammar::Constraint;
use crate::logprobs::TokenLogprob;
use crate::sampler::SamplerParams;
use crate::tools::{ToolCall, Tools};

/// What to generate from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Chat messages, rendered with the model's template.
    Chat(Vec<Message>),
    /// Raw text, continued as is (tokenized as llama.cpp's CLI does: BOS as the model
    /// asks, special-token text parsed).
    Text(String),
}

/// A validated generation request: every field was range-checked by whoever built it;
/// the engine checks what needs the model (the prompt's length, token ids).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The prompt.
    pub prompt: Prompt,
    /// Tokens to generate at most per choice (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// The sampler's settings; choice `i` of `n` draws with seed `seed + i`. (The
    /// vocabulary's padding bans are added by the engine.)
    pub sampler: SamplerParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability with this many top alternatives.
    pub logprobs: Option<usize>,
    /// Split `<think>…</think>` into reasoning text.
    pub split_reasoning: bool,
    /// Choices to generate from the one prompt (OpenAI's `n`), at least 1.
    pub n: usize,
    /// Never end at an end-of-generation token (llama.cpp's `ignore_eos`: they are banned
    /// from sampling), for benchmarks that need a fixed length.
    pub ignore_eos: bool,
    /// What the answer must match (a JSON schema, grammar or regex). With the reasoning
    /// split on, the constraint starts after the reasoning block.
    pub constraint: Option<Constraint>,
    /// The most tokens a choice may spend reasoning: when they are spent, `</think>` is
    /// written for the model, and the answer follows.
    pub reasoning_budget: Option<usize>,
    /// Tools offered to a chat model and how they may be used: rendered by the model's
    /// template (or described in a system message when it knows none), calls enforced
    /// by a grammar where the choice asks for one, and parsed out of the answer.
    pub tools: Option<Tools>,
    /// Extra variables for the chat template (`chat_template_kwargs`, e.g. Qwen3's
    /// `enable_thinking`).
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
}

impl Request {
    /// Whether the prompt is a conversation (tools only apply to those).
    pub fn prompt_is_chat(&self) -> bool {
        matches!(self.prompt, Prompt::Chat(_))
    }

    /// A request for `prompt` with the given sampler and every other setting at its
    /// default (one choice, no stop strings, no log-probabilities, no reasoning split).
    pub fn new(prompt: Prompt, sampler: SamplerParams) -> Request {
        Request {
            prompt,
            max_tokens: None,
            sampler,
            stop: Vec::new(),
            logprobs: None,
            split_reasoning: false,
            n: 1,
            ignore_eos: false,
            constraint: None,
            reasoning_budget: None,
            tools: None,
            template_kwargs: serde_json::Map::new(),
        }
    }
}

/// One request for the engine.
#[derive(Debug)]
pub struct Job {
    /// The request.
    pub request: Request,
    /// Where its events go; dropping the receiver cancels the job (checked every step).
    pub events: UnboundedSender<Event>,
}

/// Why a choice ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of generation token or a stop string.
    Stop,
    /// `max_tokens` or a full context.
    Length,
    /// The answer called tools.
    ToolCalls,
}

impl Finish {
    /// `"stop"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of one choice, for `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    /// Generated tokens (the end-of-generation token not counted).
    pub completion_tokens: usize,
    /// Generated tokens inside `<think>…</think>`.
    pub reasoning_tokens: usize,
}

/// Where one choice's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// From arrival to the first generated token: queueing and the prompt.
    pub first_token_s: f64,
    /// From admission to the first generated token: the prompt alone.
    pub prompt_s: f64,
    /// Prompt tokens computed (not taken from the cache).
    pub prompt_computed: usize,
    /// From the first generated token to the last.
    pub generation_s: f64,
    /// Token masks a grammar computed, and the time they took (inside `generation_s`).
    pub masks: (usize, f64),
}

/// What the engine sends back for a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The request is valid and queued (always first, unless `Error`).
    Started {
        /// Prompt tokens.
        prompt_tokens: usize,
    },
    /// New text of choice `index`.
    Delta {
        /// The choice.
        index: usize,
        /// Reasoning text.
        reasoning: String,
        /// Answer text.
        content: String,
        /// The log-probabilities of the tokens behind this delta, when the request asked
        /// for them (a delta may carry a token whose text is still held back, or none).
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` has ended; the job is over when every choice has.
    Done {
        /// The choice.
        index: usize,
        /// Why it ended.
        finish: Finish,
        /// Its token counts.
        usage: Usage,
        /// Its timings.
        timings: Timings,
    },
    /// The tool calls of choice `index`, parsed from its answer; sent once, just before
    /// its `Done` (the answer text they came from is not sent as content).
    ToolCalls {
        /// The choice.
        index: usize,
        /// The calls, in order.
        calls: Vec<ToolCall>,
    },
    /// The job failed (before `Started`: the request is at fault); nothing follows.
    Error(RequestError),
}

/// Why a request was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A field of the request is wrong (`param` names it).
    Invalid,
    /// The prompt does not fit the context.
    ContextLength,
    /// The model has no usable chat template.
    NoTemplate,
    /// The wait queue is full: try again after about `retry_after_s` seconds.
    QueueFull {
        /// A hint for `Retry-After`.
        retry_after_s: u64,
    },
    /// Something inside the engine failed.
    Internal,
}

/// A refused or failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For a person.
    pub message: String,
    /// The request field at fault, where there is one.
    pub param: Option<&'static str>,
}

impl RequestError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> RequestError {
        RequestError {
            kind: ErrorKind::Invalid,
            message: message.into(),
            param: Some(param),
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> RequestError {
        RequestError {
            kind: ErrorKind::Internal,
            message: format!("generation failed: {e}"),
            param: None,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RequestError {}
