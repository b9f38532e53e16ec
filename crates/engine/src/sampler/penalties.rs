//! Repetition, frequency and presence penalties over the last `n` accepted tokens, as
//! llama.cpp's `llama_sampler_penalties` applies them (`src/llama-sampling.cpp`):
//!
//! * `repeat`: a logit of a token seen in the window is divided by `repeat` when positive
//!   and multiplied by it when `<= 0` (so `repeat > 1` always makes the token less likely);
//! * `frequency`: `count * frequency` is subtracted, `count` being the token's occurrences
//!   in the window (OpenAI's `frequency_penalty`);
//! * `presence`: `presence` is subtracted once if the token occurs at all (OpenAI's
//!   `presence_penalty`).
//!
//! The window is a ring of the last `last_n` tokens with a count per vocabulary token, so
//! accepting a token and applying the penalties cost O(1) and O(last_n): nothing is
//! allocated after construction.

use super::{Candidate, Penalties};

/// The token window and its counts.
#[derive(Clone, Debug)]
pub(super) struct PenaltyWindow {
    params: Penalties,
    /// The last `params.last_n` tokens, oldest at `head` once full.
    ring: Vec<u32>,
    head: usize,
    /// Occurrences of each token in `ring`. `[n_vocab]`
    counts: Vec<u32>,
    /// `stamps[id] == stamp` marks a token already penalized in this application, so a
    /// token repeated in the window is penalized once. `[n_vocab]`
    stamps: Vec<u32>,
    stamp: u32,
}

impl PenaltyWindow {
    pub(super) fn new(params: Penalties, n_vocab: usize) -> PenaltyWindow {
        PenaltyWindow {
            params,
            ring: Vec::with_capacity(params.last_n),
            head: 0,
            counts: vec![0; n_vocab],
            stamps: vec![0; n_vocab],
            stamp: 0,
        }
    }

    /// Whether applying the penalties can change any logit (llama.cpp's early return).
    pub(super) fn is_noop(&self) -> bool {
        let p = &self.params;
        p.last_n == 0 || (p.repeat == 1.0 && p.frequency == 0.0 && p.presence == 0.0)
    }

    /// Adds `token` (already checked to be in the vocabulary) to the window, dropping the
    /// oldest token once the window is full.
    pub(super) fn accept(&mut self, token: u32) {
        if self.params.last_n == 0 {
            return;
        }
        if self.ring.len() < self.params.last_n {
            self.ring.push(token);
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], token);
            self.counts[old as usize] -= 1;
            self.head = (self.head + 1) % self.params.last_n;
        }
        self.counts[token as usize] += 1;
    }

    /// Empties the window.
    pub(super) fn reset(&mut self) {
        for &t in &self.ring {
            self.counts[t as usize] = 0;
        }
        self.ring.clear();
        self.head = 0;
    }

    /// The window's length: the most distinct tokens it can hold.
    pub(super) fn last_n(&self) -> usize {
        self.params.last_n
    }

    /// Lists the window's distinct tokens into `out`, sorted (no allocation once `out`
    /// holds [`PenaltyWindow::last_n`]).
    pub(super) fn distinct_tokens(&self, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.ring);
        out.sort_unstable();
        out.dedup();
    }

    /// The penalized logit of token `t` (one in the window).
    pub(super) fn penalized(&self, logit: f32, t: u32) -> f32 {
        self.penalize(logit, self.counts[t as usize])
    }

    fn penalize(&self, logit: f32, count: u32) -> f32 {
        let p = &self.params;
        let logit = if logit <= 0.0 {
            logit * p.repeat
        } else {
            logit / p.repeat
        };
        logit - count as f32 * p.frequency - p.presence
    }

    /// Applies the penalties to `cands`. When `by_id` holds, `cands[id].id == id` for
    /// every token, and only the window's tokens are visited; otherwise every candidate
    /// is looked up.
    pub(super) fn apply(&mut self, cands: &mut [Candidate], by_id: bool) {
        if self.is_noop() {
            return;
        }
        if !by_id {
            for c in cands.iter_mut() {
                let count = self.counts[c.id as usize];
                if count > 0 {
                    c.logit = self.penalize(c.logit, count);
                }
            }
            return;
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // The stamps wrapped around: old marks could collide with the new stamp.
            self.stamps.fill(0);
            self.stamp = 1;
        }
        for &t in &self.ring {
            let t = t as usize;
            if self.stamps[t] != self.stamp {
                self.stamps[t] = self.stamp;
                cands[t].logit = self.penalize(cands[t].logit, self.counts[t]);
            }
        }
    }
}
