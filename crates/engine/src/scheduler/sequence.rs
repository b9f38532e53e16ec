//! One choice of one request as the scheduler tracks it: its tokens, how many of them
//! are in the KV pool, and its per-sequence stages (sampler, detokenizer, text out,
//! log-probabilities).
//!
//! A sequence's tokens are its prompt followed by what it generated; `n_fed` of them are
//! in the pool. Everything not yet fed is fed by the next steps, in chunks, and the last
//! one asks for logits. So a prompt being processed, a sequence decoding (one token not
//! yet fed: the one it just drew), and a sequence recomputing its tokens after it was
//! preempted are the same state with different counts.

use std::sync::Arc;
use std::time::Instant;

use hearth_models::SeqId;
use hearth_tokenizer::{StreamDecoder, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use std::collections::VecDeque;

use crate::grammar::Grammar;
use crate::logprobs::{LogprobScratch, TokenLogprob};
use crate::output::{OutputStage, Split};
use crate::sampler::{Sampler, SamplerParams};
use crate::scheduler::job::{Event, Finish, Request, RequestError, Timings, Usage};
use crate::scheduler::metrics;
use crate::tools::ToolText;

/// One choice being generated.
pub(crate) struct Seq<'t> {
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) req: Arc<Request>,
    /// The sampler settings with the engine's bans added; choice `i` seeds with
    /// `seed + i`.
    pub(crate) params: Arc<SamplerParams>,
    /// The choice's index (`choices[index]`).
    pub(crate) index: usize,
    /// Choices still to fork from this one when its prompt is done (`n - 1` for the
    /// first choice of a request, then 0).
    pub(crate) n_forks: usize,
    /// Its sequence in the pool while it runs.
    pub(crate) kv: Option<SeqId>,
    /// The prompt, then the generated tokens.
    pub(crate) tokens: Vec<u32>,
    pub(crate) n_prompt: usize,
    /// Tokens in the pool.
    pub(crate) n_fed: usize,
    /// Prompt tokens found in the prefix cache at its first admission.
    pub(crate) cached: usize,
    /// Prompt tokens it computed.
    pub(crate) prompt_computed: usize,
    /// When it was last admitted (the youngest is preempted first).
    pub(crate) admitted: u64,
    pub(crate) sampler: Sampler,
    /// The request's constraint, started when the answer starts (after any reasoning).
    grammar: Option<Grammar>,
    /// Tokens written for the model instead of drawn: the end of the reasoning block once
    /// the reasoning budget is spent.
    forced: VecDeque<u32>,
    /// The reasoning budget has been spent (and its closing tag forced).
    budget_spent: bool,
    /// Where the answer may call tools: holds call text back and parses it at the end.
    tool_text: Option<ToolText>,
    /// The grammar's mask with `<think>` added (kept to reuse its memory).
    mask_with_open: Vec<u32>,
    /// A tool call's grammar, waiting for the call's marker in the answer.
    lazy: Option<LazyGrammar>,
    /// The end of the answer text so far, as long as the marker (to find it).
    tail: String,
    decoder: StreamDecoder<'t>,
    output: OutputStage,
    lp: LogprobScratch,
    pub(crate) n_gen: usize,
    /// The prompt left a `<think>` block open.
    opens_reasoning: bool,
    pub(crate) t_arrival: Instant,
    t_admitted: Option<Instant>,
    t_prompt_done: Option<Instant>,
    t_last_token: Option<Instant>,
}

/// What the scheduler works out for a request before its first choice exists.
pub(crate) struct Prepared {
    /// The prompt's tokens.
    pub(crate) tokens: Vec<u32>,
    /// The prompt left a `<think>` block open.
    pub(crate) opens_reasoning: bool,
    /// The request's constraint, compiled.
    pub(crate) grammar: Option<Grammar>,
    /// The tool-call stage, when the answer may call tools.
    pub(crate) tool_text: Option<ToolText>,
    /// With `tool_choice` `auto`, the grammar a call follows once it starts.
    pub(crate) lazy: Option<LazyGrammar>,
}

/// A grammar that starts when its marker ends the answer text.
pub(crate) struct LazyGrammar {
    /// The grammar, which begins with the marker.
    pub(crate) grammar: Grammar,
    /// The marker's text.
    pub(crate) marker: &'static str,
    /// The marker's tokens, fed to the grammar when it starts.
    pub(crate) marker_tokens: Vec<u32>,
}

impl LazyGrammar {
    /// An independent copy, for another choice of the same request.
    fn fork(&self) -> LazyGrammar {
        LazyGrammar {
            grammar: self.grammar.fork(),
            marker: self.marker,
            marker_tokens: self.marker_tokens.clone(),
        }
    }
}

/// The reasoning tags as tokens.
#[derive(Clone, Debug, Default)]
pub(crate) struct ThinkTokens {
    /// `<think>`, where the vocabulary has it as one token.
    pub(crate) open: Option<u32>,
    /// The tokens of `</think>`, written for a model whose reasoning budget is spent
    /// (empty when the vocabulary cannot spell it).
    pub(crate) close: Vec<u32>,
}

/// What happened to a sequence in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// It goes on.
    Running,
    /// It has ended and said so to its client.
    Done,
    /// Its client has gone away.
    Cancelled,
}

impl<'t> Seq<'t> {
    /// The running slots it holds: its own and those of the forks it will make.
    pub(crate) fn slots(&self) -> usize {
        1 + self.n_forks
    }

    /// The first choice of a request, from what the scheduler prepared.
    pub(crate) fn new(
        tok: &'t Tokenizer,
        job_events: UnboundedSender<Event>,
        req: Arc<Request>,
        params: Arc<SamplerParams>,
        prepared: Prepared,
        n_vocab: usize,
    ) -> Result<Seq<'t>, RequestError> {
        let Prepared {
            tokens,
            opens_reasoning,
            grammar,
            tool_text,
            lazy,
        } = prepared;
        let n_prompt = tokens.len();
        let mut seq = Seq {
            events: job_events,
            n_forks: req.n.saturating_sub(1),
            output: output_stage(&req, opens_reasoning),
            lp: LogprobScratch::new(req.logprobs.unwrap_or(0)),
            sampler: sampler(&params, 0, &tokens[..n_prompt], n_vocab)?,
            grammar,
            forced: VecDeque::new(),
            budget_spent: false,
            tool_text,
            mask_with_open: Vec::new(),
            lazy,
            tail: String::new(),
            req,
            params,
            index: 0,
            kv: None,
            tokens,
            n_prompt,
            n_fed: 0,
            cached: 0,
            prompt_computed: 0,
            admitted: 0,
            decoder: tok.stream_decoder(false, false),
            n_gen: 0,
            opens_reasoning,
            t_arrival: Instant::now(),
            t_admitted: None,
            t_prompt_done: None,
            t_last_token: None,
        };
        seq.tokens
            .reserve(seq.req.max_tokens.unwrap_or(256).min(4096));
        Ok(seq)
    }

    /// Choice `index` of the same request, continuing from this one's prompt in `kv`
    /// (a fork of this sequence's cells). Called when the prompt is done, before this
    /// one has drawn anything.
    pub(crate) fn fork(
        &self,
        tok: &'t Tokenizer,
        index: usize,
        kv: SeqId,
        n_vocab: usize,
    ) -> Result<Seq<'t>, RequestError> {
        Ok(Seq {
            events: self.events.clone(),
            req: self.req.clone(),
            params: self.params.clone(),
            index,
            n_forks: 0,
            kv: Some(kv),
            tokens: self.tokens.clone(),
            n_prompt: self.n_prompt,
            n_fed: self.n_fed,
            cached: self.cached,
            prompt_computed: self.prompt_computed,
            admitted: self.admitted,
            sampler: sampler(&self.params, index, &self.tokens[..self.n_prompt], n_vocab)?,
            grammar: self.grammar.as_ref().map(Grammar::fork),
            forced: VecDeque::new(),
            budget_spent: false,
            tool_text: self.tool_text.clone(),
            mask_with_open: Vec::new(),
            lazy: self.lazy.as_ref().map(LazyGrammar::fork),
            tail: String::new(),
            decoder: tok.stream_decoder(false, false),
            output: output_stage(&self.req, self.opens_reasoning),
            lp: LogprobScratch::new(self.req.logprobs.unwrap_or(0)),
            n_gen: 0,
            opens_reasoning: self.opens_reasoning,
            t_arrival: self.t_arrival,
            t_admitted: self.t_admitted,
            t_prompt_done: self.t_prompt_done,
            t_last_token: None,
        })
    }

    /// Tokens not yet in the pool.
    pub(crate) fn pending(&self) -> usize {
        self.tokens.len() - self.n_fed
    }

    /// Whether its client has gone away.
    pub(crate) fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Marks an admission that found `cached` tokens in the prefix cache; `true` for
    /// the first (not a return after preemption).
    pub(crate) fn admit(&mut self, kv: SeqId, cached: usize, order: u64) -> bool {
        self.kv = Some(kv);
        self.n_fed = cached;
        self.admitted = order;
        let first = self.t_admitted.is_none();
        if first {
            self.cached = cached.min(self.n_prompt);
            self.t_admitted = Some(Instant::now());
        }
        first
    }

    /// Notes `n` tokens fed in the step just run.
    pub(crate) fn fed(&mut self, n: usize) {
        if self.n_fed < self.n_prompt {
            self.prompt_computed += n.min(self.n_prompt - self.n_fed);
        }
        self.n_fed += n;
        if self.n_fed == self.n_prompt && self.t_prompt_done.is_none() {
            self.t_prompt_done = Some(Instant::now());
        }
    }

    /// Draws the next token from `logits` (this sequence's row of the step), sends its
    /// text, and says whether the choice goes on. `n_text` is the tokenizer's vocabulary
    /// size (padded rows past it are no tokens), `n_ctx` the most tokens a sequence may
    /// hold, `think` the reasoning tags' tokens.
    pub(crate) fn take_token(
        &mut self,
        tok: &Tokenizer,
        (logits, keys): (&[f32], Option<&[i32]>),
        (n_text, n_ctx): (usize, usize),
        think: &ThinkTokens,
    ) -> Result<Progress, RequestError> {
        let think_close = &think.close[..];
        if self.req.max_tokens.is_some_and(|m| self.n_gen >= m) {
            return Ok(self.finish(Finish::Length));
        }
        let in_reasoning = self.output.in_reasoning();
        if in_reasoning && !self.budget_spent && !think_close.is_empty() {
            // The closing tag counts as reasoning: start it so that the tag's last token
            // is the budget's last.
            let spent = self.output.reasoning_tokens() + think_close.len();
            if self.req.reasoning_budget.is_some_and(|b| spent >= b) {
                self.budget_spent = true;
                self.forced.extend(think_close);
            }
        }
        let constrained = self.grammar.is_some() && !in_reasoning;
        let id = match self.forced.pop_front() {
            Some(t) => t,
            None => {
                let allowed = match &mut self.grammar {
                    Some(g) if constrained => {
                        let mask = g.allowed().map_err(RequestError::internal)?;
                        // The answer's constraint starts after any reasoning: while a
                        // reasoning block may still open, `<think>` is allowed too.
                        match think.open {
                            Some(open) if self.output.may_open_reasoning() => {
                                self.mask_with_open.clear();
                                self.mask_with_open.extend_from_slice(mask);
                                let word = open as usize / 32;
                                if word >= self.mask_with_open.len() {
                                    self.mask_with_open.resize(word + 1, 0);
                                }
                                self.mask_with_open[word] |= 1 << (open % 32);
                                Some(&self.mask_with_open[..])
                            }
                            _ => Some(mask),
                        }
                    }
                    _ => None,
                };
                self.sampler
                    .sample_keyed(logits, keys, allowed)
                    .map_err(RequestError::internal)?
            }
        };
        if tok.is_eog(id) {
            return Ok(self.finish(Finish::Stop));
        }
        let opens_reasoning = think.open == Some(id) && self.output.may_open_reasoning();
        if constrained && !opens_reasoning {
            if let Some(g) = &mut self.grammar {
                g.accept(id).map_err(RequestError::internal)?;
            }
        }
        self.n_gen += 1;
        let now = Instant::now();
        match self.t_last_token {
            Some(t) => metrics::inter_token(now - t),
            None => metrics::first_token(now - self.t_arrival),
        }
        self.t_last_token = Some(now);
        metrics::generated(1);

        let logprobs = match self.req.logprobs {
            Some(k) => {
                let text = &logits[..n_text.min(logits.len())];
                let logprob = self.lp.step(text, id, k).ok_or_else(|| {
                    RequestError::internal(format!("no finite logit for token {id}"))
                })?;
                let piece = |t: u32| {
                    tok.token_to_piece(t, false)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default()
                };
                vec![TokenLogprob {
                    bytes: piece(id),
                    logprob,
                    top: self.lp.top().iter().map(|&(t, l)| (piece(t), l)).collect(),
                }]
            }
            None => Vec::new(),
        };
        let piece = self.decoder.push(id).map_err(RequestError::internal)?;
        let mut step = self.output.push_token(piece);
        if self.lazy.is_some() && !step.split.content.is_empty() {
            self.start_call_grammar(&step.split.content);
        }
        if let Some(t) = &mut self.tool_text {
            step.split.content = t.push(&step.split.content);
        }
        if !self.send(step.split, logprobs) {
            return Ok(Progress::Cancelled);
        }
        if step.stopped || (constrained && self.grammar.as_ref().is_some_and(Grammar::is_done)) {
            return Ok(self.finish(Finish::Stop));
        }
        if self.req.max_tokens.is_some_and(|m| self.n_gen >= m) {
            return Ok(self.finish(Finish::Length));
        }
        // The token is fed at position `tokens.len()`: it must fit the context.
        if self.tokens.len() >= n_ctx {
            return Ok(self.finish(Finish::Length));
        }
        self.sampler.accept(id).map_err(RequestError::internal)?;
        self.tokens.push(id);
        Ok(Progress::Running)
    }

    /// Adds answer text to the tail; when it ends with the lazy grammar's marker, the
    /// grammar takes the marker's tokens and constrains what follows. A marker that does
    /// not end at a token boundary (text after it in the same token) is not followed:
    /// the call is then only parsed.
    fn start_call_grammar(&mut self, content: &str) {
        let Some(marker) = self.lazy.as_ref().map(|l| l.marker) else {
            return;
        };
        self.tail.push_str(content);
        if self.tail.ends_with(marker) {
            let mut lazy = self.lazy.take().expect("checked above");
            let started = lazy
                .marker_tokens
                .iter()
                .try_for_each(|&t| lazy.grammar.accept(t));
            if started.is_ok() {
                self.grammar = Some(lazy.grammar);
            }
            return;
        }
        let keep = self.tail.len().saturating_sub(marker.len());
        let mut cut = keep;
        while !self.tail.is_char_boundary(cut) {
            cut += 1;
        }
        self.tail.drain(..cut);
    }

    /// Sends a delta, unless it is empty; `false` when the client has gone away.
    fn send(&self, split: Split, logprobs: Vec<TokenLogprob>) -> bool {
        if split.reasoning.is_empty() && split.content.is_empty() && logprobs.is_empty() {
            return !self.cancelled();
        }
        self.events
            .send(Event::Delta {
                index: self.index,
                reasoning: split.reasoning,
                content: split.content,
                logprobs,
            })
            .is_ok()
    }

    /// Sends the held text and the end of this choice.
    fn finish(&mut self, mut finish: Finish) -> Progress {
        let rest = self.decoder.finish();
        let mut tail = self.output.finish(&rest);
        let mut calls = Vec::new();
        if let Some(t) = &mut self.tool_text {
            let mut content = t.push(&tail.content);
            let (held, found) = t.finish();
            content.push_str(&held);
            tail.content = content;
            calls = found;
        }
        self.send(tail, Vec::new());
        if !calls.is_empty() {
            if finish == Finish::Stop {
                finish = Finish::ToolCalls;
            }
            let _ = self.events.send(Event::ToolCalls {
                index: self.index,
                calls,
            });
        }
        let now = Instant::now();
        let since = |t: Option<Instant>| t.map_or(0.0, |t| (now - t).as_secs_f64());
        let timings = Timings {
            first_token_s: (self.t_prompt_done.unwrap_or(now) - self.t_arrival).as_secs_f64(),
            prompt_s: match (self.t_admitted, self.t_prompt_done) {
                (Some(a), Some(p)) => (p - a).as_secs_f64(),
                _ => 0.0,
            },
            prompt_computed: self.prompt_computed,
            generation_s: since(self.t_prompt_done),
            masks: self.grammar.as_ref().map_or((0, 0.0), Grammar::mask_time),
        };
        let usage = Usage {
            prompt_tokens: self.n_prompt,
            cached_tokens: self.cached,
            completion_tokens: self.n_gen,
            reasoning_tokens: self.output.reasoning_tokens(),
        };
        metrics::finished(finish.as_str());
        let _ = self.events.send(Event::Done {
            index: self.index,
            finish,
            usage,
            timings,
        });
        Progress::Done
    }

    /// Ends the choice with an error (the whole request fails).
    pub(crate) fn fail(&self, e: RequestError) {
        metrics::finished("error");
        let _ = self.events.send(Event::Error(e));
    }
}

/// The sampler of choice `index`, with the prompt in its penalty window.
fn sampler(
    params: &SamplerParams,
    index: usize,
    prompt: &[u32],
    n_vocab: usize,
) -> Result<Sampler, RequestError> {
    let mut p = params.clone();
    p.seed = p.seed.wrapping_add(index as u64);
    let mut s = Sampler::new(&p, n_vocab).map_err(|e| {
        RequestError::invalid("temperature", format!("bad sampling parameters: {e}"))
    })?;
    for &t in prompt {
        s.accept(t).map_err(RequestError::internal)?;
    }
    Ok(s)
}

fn output_stage(req: &Request, opens_reasoning: bool) -> OutputStage {
    if req.split_reasoning {
        OutputStage::new(&req.stop, opens_reasoning)
    } else {
        OutputStage::without_reasoning_split(&req.stop)
    }
}
