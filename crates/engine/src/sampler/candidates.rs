//! The candidate buffer and the steps that reshape it: top-k, top-p, min-p, temperature,
//! and the final draw.
//!
//! Each step follows llama.cpp's sampler of the same name (`src/llama-sampling.cpp`) on the
//! points that change which token comes out: top-k keeps the `k` largest logits, top-p the
//! smallest most-probable prefix whose probability reaches `p` (the token that crosses `p`
//! included), min-p the tokens whose probability is at least `p` times the largest, and a
//! temperature of 0 keeps only the largest logit.
//!
//! Sorting all of a 262k-token vocabulary on every step would cost more than the steps
//! themselves, so only a prefix is kept sorted: `data[..sorted]` holds the `sorted`
//! largest candidates in descending order, and the rest is in no particular order. Top-k
//! sorts exactly `k`; top-p grows the prefix until it reaches `p`. The order used is total
//! (logit descending, then id ascending), so which tokens survive and the order the draw
//! walks them never depend on the sort algorithm.

use std::cmp::Ordering;

use super::rng::Pcg64;
use super::Candidate;

/// The candidates of one sampling step. `data` has one slot per vocabulary token, filled
/// once per step; the steps only shrink `len`.
#[derive(Clone, Debug)]
pub(super) struct Candidates {
    /// `[n_vocab]`; `data[..len]` are the live candidates.
    pub(super) data: Vec<Candidate>,
    pub(super) len: usize,
    /// `data[i].id == i` for every live candidate (nothing reordered or removed yet), so
    /// a step can index by token id.
    pub(super) by_id: bool,
    /// `data[..sorted]` is sorted descending and no smaller than any of `data[sorted..len]`.
    pub(super) sorted: usize,
}

/// The order of the sorted prefix: larger logit first, then smaller id.
fn descending(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

impl Candidates {
    pub(super) fn new(n_vocab: usize) -> Candidates {
        Candidates {
            data: vec![Candidate { id: 0, logit: 0.0 }; n_vocab],
            len: 0,
            by_id: true,
            sorted: 0,
        }
    }

    /// Loads one step's logits (`logits.len() == data.len()`, checked by the caller).
    /// NaN becomes `-inf`: a token whose logit is not a number can never be drawn, and no
    /// NaN reaches the sums below.
    pub(super) fn load(&mut self, logits: &[f32]) {
        for (i, (c, &l)) in self.data.iter_mut().zip(logits).enumerate() {
            *c = Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
            };
        }
        self.len = logits.len();
        self.by_id = true;
        self.sorted = 0;
    }

    pub(super) fn live(&self) -> &[Candidate] {
        &self.data[..self.len]
    }

    /// Marks that logits changed in place, so the sorted prefix no longer holds.
    pub(super) fn logits_changed(&mut self) {
        self.sorted = 0;
    }

    /// Extends the sorted prefix to at least `k` (`k <= len`) candidates.
    fn sort_prefix(&mut self, k: usize) {
        if k <= self.sorted {
            return;
        }
        let rest = &mut self.data[self.sorted..self.len];
        let want = k - self.sorted;
        if want < rest.len() {
            rest.select_nth_unstable_by(want - 1, descending);
        }
        rest[..want].sort_unstable_by(descending);
        self.sorted = k;
        self.by_id = false;
    }

    /// The largest live logit (`-inf` when none).
    fn max_logit(&self) -> f32 {
        if self.sorted > 0 {
            return self.data[0].logit;
        }
        self.live()
            .iter()
            .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
    }

    /// Keeps the `k` most likely candidates; `k == 0` keeps all.
    pub(super) fn top_k(&mut self, k: usize) {
        if k == 0 || k >= self.len {
            return;
        }
        self.sort_prefix(k);
        self.len = k;
    }

    /// Keeps the smallest most-probable prefix whose probability sum reaches `p`.
    pub(super) fn top_p(&mut self, p: f32) {
        if p >= 1.0 || self.len == 0 {
            return;
        }
        let max = self.max_logit();
        if max == f32::NEG_INFINITY {
            return;
        }
        let total: f64 = self
            .live()
            .iter()
            .map(|c| f64::from(c.logit - max).exp())
            .sum();
        let target = f64::from(p) * total;
        // Sort in growing slices: the nucleus is usually tens of tokens, rarely thousands.
        let mut cum = 0.0;
        let mut i = 0;
        let mut chunk = 64;
        loop {
            let end = chunk.min(self.len);
            self.sort_prefix(end);
            while i < end {
                cum += f64::from(self.data[i].logit - max).exp();
                i += 1;
                if cum >= target {
                    self.len = i;
                    return;
                }
            }
            if end == self.len {
                return;
            }
            chunk = chunk.saturating_mul(8);
        }
    }

    /// Keeps the candidates whose probability is at least `p` times the largest one's.
    pub(super) fn min_p(&mut self, p: f32) {
        if p <= 0.0 || self.len == 0 {
            return;
        }
        // p_i >= p * p_max  <=>  logit_i >= max + ln(p); no softmax needed.
        let threshold = self.max_logit() + p.ln();
        let mut kept = 0;
        let mut kept_sorted = 0;
        for i in 0..self.len {
            let c = self.data[i];
            if c.logit >= threshold {
                if i < self.sorted {
                    kept_sorted += 1;
                }
                self.data[kept] = c;
                kept += 1;
            }
        }
        // Filtering keeps the order, and the sorted prefix's survivors are still the
        // largest, so they stay a sorted prefix.
        if kept < self.len {
            self.by_id = false;
        }
        self.len = kept;
        self.sorted = kept_sorted;
    }

    /// Divides the logits by `t`; `t == 0` keeps only the largest logit (lowest id on a
    /// tie), which makes the draw greedy.
    pub(super) fn temperature(&mut self, t: f32) {
        if self.len == 0 {
            return;
        }
        if t == 0.0 {
            let best = self.argmax();
            self.data[0] = self.data[best];
            self.len = 1;
            self.sorted = 1;
            self.by_id = self.data[0].id == 0;
            return;
        }
        for c in &mut self.data[..self.len] {
            c.logit /= t;
        }
        // Dividing by t > 0 keeps the order, so the sorted prefix stays sorted.
    }

    /// The index of the largest live logit, the lowest id on a tie (llama.cpp's greedy
    /// sampler keeps the first maximum, and ids start in order).
    pub(super) fn argmax(&self) -> usize {
        let mut best = 0;
        for (i, c) in self.live().iter().enumerate().skip(1) {
            if descending(c, &self.data[best]) == Ordering::Less {
                best = i;
            }
        }
        best
    }

    /// Draws a live candidate with probability `softmax(logit)`, walking them in their
    /// current order. `None` when every live logit is `-inf`.
    pub(super) fn draw(&self, rng: &mut Pcg64) -> Option<u32> {
        let max = self.max_logit();
        if max == f32::NEG_INFINITY {
            return None;
        }
        let total: f64 = self
            .live()
            .iter()
            .map(|c| f64::from(c.logit - max).exp())
            .sum();
        let target = rng.next_f64() * total;
        let mut cum = 0.0;
        let mut last = None;
        for c in self.live() {
            let w = f64::from(c.logit - max).exp();
            if w == 0.0 {
                continue;
            }
            cum += w;
            last = Some(c.id);
            if target < cum {
                return last;
            }
        }
        // Rounding left `target` at or past the last sum: the last token with weight.
        last
    }
}
