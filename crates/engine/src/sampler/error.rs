//! Typed errors for building and running a sampler.

/// Why a sampler could not be built or could not draw a token.
///
/// Parameters come from requests and command lines, so a bad value is an expected outcome
/// reported here, never a panic.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// The vocabulary is empty.
    #[error("the vocabulary is empty")]
    EmptyVocab,
    /// `temperature` is negative, NaN or infinite.
    #[error("temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
    /// `top_p` is outside `(0, 1]`.
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    /// `min_p` is outside `[0, 1]`.
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    /// `repeat_penalty` is not a finite number > 0.
    #[error("repeat_penalty must be a finite number > 0, got {0}")]
    RepeatPenalty(f32),
    /// `frequency_penalty` or `presence_penalty` is NaN or infinite.
    #[error("{name} must be a finite number, got {value}")]
    Penalty {
        /// Which penalty.
        name: &'static str,
        /// The value given.
        value: f32,
    },
    /// The penalty window is longer than [`MAX_PENALTY_LAST_N`](super::MAX_PENALTY_LAST_N).
    #[error("penalty_last_n is {got}, more than the limit of {limit}")]
    PenaltyWindow {
        /// The window asked for.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// A chain holds more than one penalties step (they would share one token window).
    #[error("a sampler chain can hold only one penalties step")]
    DuplicatePenalties,
    /// A logit bias names a token outside the vocabulary.
    #[error("logit_bias names token {token}, outside the vocabulary of {n_vocab} tokens")]
    BiasToken {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// A logit bias is NaN or `+inf` (`-inf` is allowed: it bans the token).
    #[error("logit_bias for token {token} must be finite or -inf, got {value}")]
    BiasValue {
        /// The token id.
        token: u32,
        /// The value given.
        value: f32,
    },
    /// The logits passed in are not one per vocabulary token.
    #[error("expected {expected} logits (one per token), got {got}")]
    LogitsLength {
        /// The vocabulary size.
        expected: usize,
        /// The number of logits given.
        got: usize,
    },
    /// A token passed to [`Sampler::accept`](super::Sampler::accept) is outside the
    /// vocabulary.
    #[error("token {token} is outside the vocabulary of {n_vocab} tokens")]
    Token {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// Every token has probability zero (all logits `-inf` or NaN after the chain): there
    /// is nothing to draw. A grammar or bias that bans every token ends here.
    #[error("every token is masked out: nothing to sample")]
    AllMasked,
}
