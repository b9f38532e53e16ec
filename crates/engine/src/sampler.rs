//! Choosing the next token from a sequence's logits: a per-sequence chain of steps
//! (logit bias, penalties, top-k, top-p, min-p, temperature) and a seeded draw.
//!
//! Each sequence owns one [`Sampler`]: its parameters, its penalty window and its random
//! generator, so two requests never influence each other and a seed always reproduces
//! the same tokens for the same logits. Everything is allocated when the sampler is built
//! (buffers of `n_vocab`); [`Sampler::sample`] and [`Sampler::accept`] allocate nothing.
//!
//! The default chain, built by [`Sampler::new`] from [`SamplerParams`], runs in
//! llama.cpp's default order (`common/sampling.cpp`): logit bias, penalties, top-k, top-p,
//! min-p, temperature, draw. Temperature comes *after* the truncations there, so top-p and
//! min-p see the untempered distribution; Hearth keeps that so the same settings mean the
//! same thing in both. A temperature of 0 is greedy: the largest logit after bias and
//! penalties, with no random number drawn. [`Sampler::with_steps`] builds any other order.
//!
//! A grammar's mask ([`Sampler::sample_masked`]) comes before every step.
//!
//! What this does not do: typical-p, XTC, DRY and
//! Mirostat; token log-probabilities for clients (read them from [`Sampler::apply`]).
//! Draws are reproducible across platforms up to the last bit of `f64::exp`, which could
//! in principle move a draw that lands exactly on a boundary between two tokens.

mod candidates;
mod error;
mod penalties;
mod rng;

use candidates::{Candidates, FirstSteps};
use penalties::PenaltyWindow;

pub use error::SamplerError;
pub use rng::Pcg64;

/// The longest penalty window accepted: the window's ring is allocated up front, so an
/// unchecked request could ask for any amount of memory. A million tokens is past any
/// context we run.
pub const MAX_PENALTY_LAST_N: usize = 1 << 20;

/// A token and its (adjusted) logit, as the chain passes them along.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The token id.
    pub id: u32,
    /// Its logit after the steps run so far.
    pub logit: f32,
}

/// Repetition, frequency and presence penalties (see the `penalties` module for the exact
/// formulas, llama.cpp's).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalties {
    /// How many of the last accepted tokens are penalized; 0 turns the step off.
    pub last_n: usize,
    /// llama.cpp's `repeat_penalty`: divides positive logits, multiplies the others;
    /// 1.0 is off.
    pub repeat: f32,
    /// OpenAI's `frequency_penalty`: subtracted once per occurrence; 0.0 is off.
    pub frequency: f32,
    /// OpenAI's `presence_penalty`: subtracted once if the token occurs; 0.0 is off.
    pub presence: f32,
}

impl Default for Penalties {
    /// llama.cpp's defaults: a 64-token window, every penalty off.
    fn default() -> Penalties {
        Penalties {
            last_n: 64,
            repeat: 1.0,
            frequency: 0.0,
            presence: 0.0,
        }
    }
}

/// The settings of the default chain.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// Seeds the sampler's own generator.
    pub seed: u64,
    /// Divides the logits; 0 is greedy.
    pub temperature: f32,
    /// Keeps the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Nucleus sampling: keeps the most likely tokens up to probability `top_p`, in
    /// `(0, 1]`; 1 keeps all.
    pub top_p: f32,
    /// Keeps tokens at least `min_p` times as likely as the most likely one, in `[0, 1]`;
    /// 0 keeps all.
    pub min_p: f32,
    /// Penalties on recently accepted tokens.
    pub penalties: Penalties,
    /// Added to the logits of the listed tokens; `-inf` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerParams {
    /// llama.cpp's defaults (`common/common.h`): temperature 0.8, top-k 40, top-p 0.95,
    /// min-p 0.05, penalties off, seed 0.
    fn default() -> SamplerParams {
        SamplerParams {
            seed: 0,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            penalties: Penalties::default(),
            logit_bias: Vec::new(),
        }
    }
}

/// A logit bias: `(token, added)`, sorted by token once validated.
type Bias = [(u32, f32)];

/// One step of a chain. The draw that ends every chain is implicit.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Adds a bias to the listed tokens' logits.
    LogitBias(Vec<(u32, f32)>),
    /// Penalizes tokens in the window of accepted tokens.
    Penalties(Penalties),
    /// Keeps the `k` largest logits (0: all).
    TopK(usize),
    /// Keeps the most probable tokens up to probability `p`.
    TopP(f32),
    /// Keeps tokens at least `p` times as probable as the most probable.
    MinP(f32),
    /// Divides the logits by `t`; 0 keeps only the largest.
    Temperature(f32),
}

/// One sequence's sampler: a validated chain, its buffers, its penalty window and its
/// random generator.
#[derive(Clone, Debug)]
pub struct Sampler {
    steps: Vec<Step>,
    /// Set when the chain is plain greedy (temperature 0, nothing random left), so the
    /// draw is an argmax and the truncation steps, which always keep the argmax, are
    /// skipped.
    greedy: bool,
    n_vocab: usize,
    cands: Candidates,
    window: Option<PenaltyWindow>,
    /// The window's distinct tokens, sorted, for a scan that applies the penalties
    /// ([`Scan`]); allocated with the window.
    window_tokens: Vec<u32>,
    rng: Pcg64,
}

/// The first steps of a chain that a scan over the logits applies token by token
/// ([`candidates::FirstSteps`]): a bias (empty without one), then the window's
/// penalties when they are active.
#[derive(Clone, Copy)]
struct Scan<'s> {
    bias: &'s Bias,
    penalties: bool,
}

impl<'s> Scan<'s> {
    /// The scan's view of the steps for one sampling step (the window's tokens listed
    /// into `tokens`, which keeps its capacity).
    fn first_steps<'a>(
        self,
        allowed: Option<&'a [u32]>,
        window: Option<&'a PenaltyWindow>,
        tokens: &'a mut Vec<u32>,
    ) -> FirstSteps<'a>
    where
        's: 'a,
    {
        let penalties = match window {
            Some(w) if self.penalties => {
                w.distinct_tokens(tokens);
                Some((w, &tokens[..]))
            }
            _ => None,
        };
        FirstSteps {
            allowed,
            bias: self.bias,
            penalties,
        }
    }
}

impl Sampler {
    /// The default chain for `params` over a vocabulary of `n_vocab` tokens: logit bias,
    /// penalties, top-k, top-p, min-p, temperature (greedy at 0), draw.
    pub fn new(params: &SamplerParams, n_vocab: usize) -> Result<Sampler, SamplerError> {
        let mut steps = Vec::new();
        if !params.logit_bias.is_empty() {
            steps.push(Step::LogitBias(params.logit_bias.clone()));
        }
        steps.push(Step::Penalties(params.penalties));
        steps.extend([
            Step::TopK(params.top_k),
            Step::TopP(params.top_p),
            Step::MinP(params.min_p),
            Step::Temperature(params.temperature),
        ]);
        let mut sampler = Sampler::with_steps(steps, params.seed, n_vocab)?;
        if params.temperature == 0.0 {
            // Top-k, top-p and min-p always keep the largest logit, so they cannot change
            // the argmax; dropping them saves partial sorts of the whole vocabulary.
            sampler
                .steps
                .retain(|s| matches!(s, Step::LogitBias(_) | Step::Penalties(_)));
            sampler.greedy = true;
        }
        Ok(sampler)
    }

    /// A chain of `steps` in the given order, then a draw seeded by `seed`.
    pub fn with_steps(
        mut steps: Vec<Step>,
        seed: u64,
        n_vocab: usize,
    ) -> Result<Sampler, SamplerError> {
        if n_vocab == 0 || n_vocab > u32::MAX as usize {
            return Err(SamplerError::EmptyVocab);
        }
        let mut window = None;
        for step in &mut steps {
            validate(step, n_vocab)?;
            if let Step::Penalties(p) = *step {
                if window.is_some() {
                    return Err(SamplerError::DuplicatePenalties);
                }
                window = Some(PenaltyWindow::new(p, n_vocab));
            }
        }
        let window_tokens = Vec::with_capacity(window.as_ref().map_or(0, PenaltyWindow::last_n));
        Ok(Sampler {
            steps,
            greedy: false,
            n_vocab,
            cands: Candidates::new(n_vocab),
            window,
            window_tokens,
            rng: Pcg64::from_seed(seed),
        })
    }

    /// The vocabulary size this sampler was built for.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Records a token of the sequence (prompt or generated) in the penalty window.
    /// llama.cpp's CLI feeds the prompt's tokens too; callers choose.
    pub fn accept(&mut self, token: u32) -> Result<(), SamplerError> {
        if token as usize >= self.n_vocab {
            return Err(SamplerError::Token {
                token,
                n_vocab: self.n_vocab,
            });
        }
        if let Some(w) = &mut self.window {
            w.accept(token);
        }
        Ok(())
    }

    /// Forgets the accepted tokens (a new sequence). The generator keeps its state.
    pub fn reset(&mut self) {
        if let Some(w) = &mut self.window {
            w.reset();
        }
    }

    /// Runs the chain on `logits` (one per token) and returns the surviving candidates
    /// with their adjusted logits, in the order the draw would walk them. For a greedy
    /// sampler the truncation steps are skipped, so all tokens survive.
    pub fn apply(&mut self, logits: &[f32]) -> Result<&[Candidate], SamplerError> {
        self.apply_masked(logits, None)
    }

    /// [`Sampler::apply`] with only the tokens set in `allowed` (bit `t % 32` of word
    /// `t / 32`; tokens past its end are refused) able to survive: a grammar's mask, laid
    /// over the logits before every other step, so that top-k, top-p and min-p choose
    /// among tokens the grammar admits.
    pub fn apply_masked(
        &mut self,
        logits: &[f32],
        allowed: Option<&[u32]>,
    ) -> Result<&[Candidate], SamplerError> {
        self.apply_keyed(logits, None, allowed)
    }

    /// [`Sampler::apply_masked`], with the logits' block keys where the model gave them
    /// (see [`Sampler::sample_keyed`]).
    fn apply_keyed(
        &mut self,
        logits: &[f32],
        keys: Option<&[i32]>,
        allowed: Option<&[u32]>,
    ) -> Result<&[Candidate], SamplerError> {
        self.check_len(logits)?;
        let Sampler {
            steps,
            window,
            cands,
            window_tokens,
            n_vocab,
            ..
        } = self;
        let rest = match Sampler::top_k_first(steps, window.as_ref(), *n_vocab) {
            Some((i, k, scan)) => {
                let first = scan.first_steps(allowed, window.as_ref(), window_tokens);
                cands.load_top_k(logits, keys, first, k);
                &steps[i + 1..]
            }
            None => {
                cands.load(logits);
                if let Some(bits) = allowed {
                    for (i, c) in cands.data[..cands.len].iter_mut().enumerate() {
                        if bits.get(i / 32).is_none_or(|w| w >> (i % 32) & 1 == 0) {
                            c.logit = f32::NEG_INFINITY;
                        }
                    }
                }
                &steps[..]
            }
        };
        for step in rest {
            match step {
                Step::LogitBias(bias) => {
                    apply_bias(cands, bias);
                    cands.logits_changed();
                }
                Step::Penalties(_) => {
                    if let Some(w) = window {
                        let by_id = cands.by_id;
                        let len = cands.len;
                        w.apply(&mut cands.data[..len], by_id);
                        cands.logits_changed();
                    }
                }
                Step::TopK(k) => cands.top_k(*k),
                Step::TopP(p) => cands.top_p(*p),
                Step::MinP(p) => cands.min_p(*p),
                Step::Temperature(t) => cands.temperature(*t),
            }
        }
        Ok(cands.live())
    }

    /// One logit per vocabulary token, or the typed error.
    fn check_len(&self, logits: &[f32]) -> Result<(), SamplerError> {
        if logits.len() != self.n_vocab {
            return Err(SamplerError::LogitsLength {
                expected: self.n_vocab,
                got: logits.len(),
            });
        }
        Ok(())
    }

    /// What `steps` do when a scan over the logits can apply it token by token as it
    /// goes (see [`candidates::FirstSteps`]): a logit bias, then penalties (active or
    /// not), nothing else. `None` for anything else (a bias after active penalties too:
    /// the order would change the sums).
    fn scan_prefix<'s>(steps: &'s [Step], window: Option<&PenaltyWindow>) -> Option<Scan<'s>> {
        let mut scan = Scan {
            bias: &[],
            penalties: false,
        };
        let mut biased = false;
        for step in steps {
            match step {
                Step::LogitBias(b) if !biased && !scan.penalties => {
                    scan.bias = b;
                    biased = true;
                }
                Step::Penalties(_) => {
                    scan.penalties = window.is_some_and(|w| !w.is_noop());
                }
                _ => return None,
            }
        }
        Some(scan)
    }

    /// The index and `k` of a top-k step that only what a scan applies precedes (see
    /// [`Sampler::scan_prefix`]): the chain can then start from the `k` largest logits
    /// instead of the whole vocabulary ([`Candidates::load_top_k`]). The default chain is
    /// such a chain.
    fn top_k_first<'s>(
        steps: &'s [Step],
        window: Option<&PenaltyWindow>,
        n_vocab: usize,
    ) -> Option<(usize, usize, Scan<'s>)> {
        let i = steps.iter().position(|s| matches!(s, Step::TopK(_)))?;
        match steps[i] {
            Step::TopK(k) if k > 0 && k < n_vocab => {
                Some((i, k, Sampler::scan_prefix(&steps[..i], window)?))
            }
            _ => None,
        }
    }

    /// Runs the chain on `logits` and draws the next token. Does not accept it: call
    /// [`Sampler::accept`] with the token the sequence actually continues with.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        self.sample_masked(logits, None)
    }

    /// [`Sampler::sample`] among the tokens `allowed` admits (see
    /// [`Sampler::apply_masked`]).
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        allowed: Option<&[u32]>,
    ) -> Result<u32, SamplerError> {
        self.sample_keyed(logits, None, allowed)
    }

    /// [`Sampler::sample_masked`], given `keys`, the block keys of `logits` as
    /// `Ops::block_max_keys` computes them (a packed output head takes them while its
    /// outputs are in the cache; `hearth_models::Logits`). The greedy argmax and the top-k
    /// scan then skip their own pass over the logits; they trust the keys as given.
    /// Keys of another length are ignored.
    pub fn sample_keyed(
        &mut self,
        logits: &[f32],
        keys: Option<&[i32]>,
        allowed: Option<&[u32]>,
    ) -> Result<u32, SamplerError> {
        let scan = if self.greedy {
            Sampler::scan_prefix(&self.steps, self.window.as_ref())
        } else {
            None
        };
        if let Some(scan) = scan {
            self.check_len(logits)?;
            let first = scan.first_steps(allowed, self.window.as_ref(), &mut self.window_tokens);
            return self
                .cands
                .argmax_of(logits, keys, first)
                .ok_or(SamplerError::AllMasked);
        }
        self.apply_keyed(logits, keys, allowed)?;
        if self.greedy {
            let best = self.cands.data[self.cands.argmax()];
            if best.logit == f32::NEG_INFINITY {
                return Err(SamplerError::AllMasked);
            }
            return Ok(best.id);
        }
        self.cands
            .draw(&mut self.rng)
            .ok_or(SamplerError::AllMasked)
    }
}

/// Checks a step's parameters, and sorts a logit bias by token so that it can be looked
/// up by binary search.
fn validate(step: &mut Step, n_vocab: usize) -> Result<(), SamplerError> {
    match step {
        Step::Temperature(t) => {
            if !(t.is_finite() && *t >= 0.0) {
                return Err(SamplerError::Temperature(*t));
            }
        }
        Step::TopP(p) => {
            if !(*p > 0.0 && *p <= 1.0) {
                return Err(SamplerError::TopP(*p));
            }
        }
        Step::MinP(p) => {
            if !(*p >= 0.0 && *p <= 1.0) {
                return Err(SamplerError::MinP(*p));
            }
        }
        Step::TopK(_) => {}
        Step::Penalties(p) => {
            if !(p.repeat.is_finite() && p.repeat > 0.0) {
                return Err(SamplerError::RepeatPenalty(p.repeat));
            }
            for (name, value) in [
                ("frequency_penalty", p.frequency),
                ("presence_penalty", p.presence),
            ] {
                if !value.is_finite() {
                    return Err(SamplerError::Penalty { name, value });
                }
            }
            if p.last_n > MAX_PENALTY_LAST_N {
                return Err(SamplerError::PenaltyWindow {
                    got: p.last_n,
                    limit: MAX_PENALTY_LAST_N,
                });
            }
        }
        Step::LogitBias(bias) => {
            for &(token, value) in bias.iter() {
                if token as usize >= n_vocab {
                    return Err(SamplerError::BiasToken { token, n_vocab });
                }
                if value.is_nan() || value == f32::INFINITY {
                    return Err(SamplerError::BiasValue { token, value });
                }
            }
            // A token listed twice gets the sum, as two separate biases would give.
            bias.sort_unstable_by_key(|&(t, _)| t);
            bias.dedup_by(|b, a| {
                if a.0 == b.0 {
                    a.1 += b.1;
                    true
                } else {
                    false
                }
            });
        }
    }
    Ok(())
}

/// Adds `bias` (sorted by token) to the live candidates' logits.
fn apply_bias(cands: &mut Candidates, bias: &[(u32, f32)]) {
    if cands.by_id {
        for &(t, b) in bias {
            cands.data[t as usize].logit += b;
        }
        return;
    }
    let len = cands.len;
    for c in &mut cands.data[..len] {
        if let Ok(i) = bias.binary_search_by_key(&c.id, |&(t, _)| t) {
            c.logit += bias[i].1;
        }
    }
}
