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

use hearth_kernels::ops::select::{order_key, raw_key, KEY_BLOCK};
use hearth_kernels::ops::Ops;

use super::penalties::PenaltyWindow;
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
    /// `[n_vocab / BLOCK]` (rounded up): the largest key of each block of a step's logits,
    /// as loaded (before any mask, bias or penalty).
    block_max: Vec<i32>,
    /// The CPU's kernels, chosen at construction (choosing them allocates once).
    ops: &'static Ops,
}

/// The order of the sorted prefix: larger logit first, then smaller id.
fn descending(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Logits scanned per block in the selections below: each block's largest key comes
/// from one pass over the whole vocabulary at the CPU's widest level
/// ([`Ops::block_max_keys`]), and a block that no mask or bias touches is passed over
/// when that key cannot win.
const BLOCK: usize = KEY_BLOCK;

/// What the chain's first steps make of the logits when they are only a grammar's mask,
/// a logit bias (sorted by token) and penalties: loading reads NaN as `-inf`, the mask
/// sets refused tokens to `-inf`, then the bias is added and the window's tokens are
/// penalized. The selections below apply them token by token where they touch a block,
/// so they never write a candidate for each of a large vocabulary's tokens.
#[derive(Clone, Copy)]
pub(super) struct FirstSteps<'a> {
    /// Bit `t % 32` of word `t / 32` admits token `t`; tokens past the end are refused.
    pub(super) allowed: Option<&'a [u32]>,
    pub(super) bias: &'a [(u32, f32)],
    /// The window and its distinct tokens, sorted, when its penalties are active.
    pub(super) penalties: Option<(&'a PenaltyWindow, &'a [u32])>,
}

/// How far a scan has gone through a [`FirstSteps`]' sorted lists.
#[derive(Default)]
struct Cursor {
    bias: usize,
    penalized: usize,
}

impl FirstSteps<'_> {
    /// Whether no token before `end` has its logit changed by the bias or penalties,
    /// given the lists' positions `at`.
    fn unbiased(&self, at: &Cursor, end: usize) -> bool {
        let before = |t: Option<&u32>| t.is_some_and(|&t| (t as usize) < end);
        !before(self.bias.get(at.bias).map(|(t, _)| t))
            && !self
                .penalties
                .is_some_and(|(_, tokens)| before(tokens.get(at.penalized)))
    }

    /// Whether the tokens from the current one to `end` are exactly as loaded (no mask,
    /// no bias or penalty among them).
    fn untouched(&self, at: &Cursor, end: usize) -> bool {
        self.allowed.is_none() && self.unbiased(at, end)
    }

    /// Token `id`'s logit `l` after these steps, and its key: [`order_key`]'s, except that
    /// a biased or penalized result keeps a NaN as the full chain does. Moves `at` past
    /// `id`.
    fn adjust(&self, id: usize, l: f32, at: &mut Cursor) -> (f32, i32) {
        let mut l = if l.is_nan() || !admitted(self.allowed, id) {
            f32::NEG_INFINITY
        } else {
            l
        };
        if let Some(&(t, b)) = self.bias.get(at.bias) {
            if t as usize == id {
                at.bias += 1;
                l += b;
            }
        }
        if let Some((w, tokens)) = self.penalties {
            if tokens.get(at.penalized).is_some_and(|&t| t as usize == id) {
                at.penalized += 1;
                l = w.penalized(l, id as u32);
            }
        }
        (l, raw_key(l))
    }
}

/// Whether token `i` survives a grammar's mask (see [`super::Sampler::apply_masked`]).
fn admitted(allowed: Option<&[u32]>, i: usize) -> bool {
    allowed.is_none_or(|bits| bits.get(i / 32).is_some_and(|w| w >> (i % 32) & 1 == 1))
}

impl Candidates {
    pub(super) fn new(n_vocab: usize) -> Candidates {
        Candidates {
            data: vec![Candidate { id: 0, logit: 0.0 }; n_vocab],
            len: 0,
            by_id: true,
            sorted: 0,
            block_max: vec![i32::MIN; n_vocab.div_ceil(BLOCK)],
            ops: Ops::get(),
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

    /// Loads only the `k` (`0 < k < logits.len()`) largest of one step's logits after
    /// `first`, sorted: the state that [`Candidates::load`], the mask, the bias and
    /// [`Candidates::top_k`] leave, without writing a candidate for each of a large
    /// vocabulary's tokens. The scan keeps a pool of up to `4k` entrants; a full pool is
    /// cut back to its `k` best, whose last becomes the bar a later token must pass.
    /// Tokens come in id order, so one that only ties the bar ranks below it (same logit,
    /// higher id) and stays out, as in the full order.
    pub(super) fn load_top_k(
        &mut self,
        logits: &[f32],
        keys: Option<&[i32]>,
        first: FirstSteps<'_>,
        k: usize,
    ) {
        let cap = (4 * k).max(BLOCK);
        self.block_maxima(logits, keys);
        let mut fill = 0;
        let mut bar: Option<i32> = None;
        let mut next = Cursor::default();
        for (b, block) in logits.chunks(BLOCK).enumerate() {
            let start = b * BLOCK;
            if let Some(bar) = bar {
                // Masking only lowers a logit, so the unmasked block bounds the masked
                // one; a bias or penalty may raise one, so such a block is always looked
                // into.
                if first.unbiased(&next, start + block.len()) && self.block_max[b] <= bar {
                    continue;
                }
            }
            for (j, &l) in block.iter().enumerate() {
                let id = start + j;
                let (logit, key) = first.adjust(id, l, &mut next);
                if bar.is_some_and(|bar| key <= bar) {
                    continue;
                }
                self.data[fill] = Candidate {
                    id: id as u32,
                    logit,
                };
                fill += 1;
                if fill == cap {
                    self.data[..fill].select_nth_unstable_by(k - 1, descending);
                    fill = k;
                    bar = Some(raw_key(self.data[k - 1].logit));
                }
            }
        }
        if fill > k {
            self.data[..fill].select_nth_unstable_by(k - 1, descending);
        }
        let kept = fill.min(k);
        self.data[..kept].sort_unstable_by(descending);
        self.len = kept;
        self.sorted = kept;
        self.by_id = false;
    }

    /// Each block's largest key of `logits` (`logits.len() == data.len()`, checked by the
    /// caller), in the scratch kept for it: `keys` where they are given (one per block),
    /// else a pass over `logits`.
    fn block_maxima(&mut self, logits: &[f32], keys: Option<&[i32]>) -> &[i32] {
        match keys {
            Some(k) if k.len() == self.block_max.len() => self.block_max.copy_from_slice(k),
            _ => self.ops.block_max_keys(logits, &mut self.block_max),
        }
        &self.block_max
    }

    /// The token with the largest logit after `first` (the lowest id on a tie); `None` when
    /// that logit is `-inf`. What loading the candidates, masking, biasing and taking
    /// [`Candidates::argmax`] gives, without writing a candidate per token: greedy decoding
    /// over a 262k vocabulary does this once per token per sequence.
    pub(super) fn argmax_of(
        &mut self,
        logits: &[f32],
        keys: Option<&[i32]>,
        first: FirstSteps<'_>,
    ) -> Option<u32> {
        let block_max = self.block_maxima(logits, keys);
        let floor = order_key(f32::NEG_INFINITY);
        let mut best = floor;
        // Where the best is: a token, or the first untouched block holding its key.
        let (mut at, mut in_block) = (0, false);
        let mut next = Cursor::default();
        let plain = first.untouched(&next, logits.len());
        if plain {
            // Nothing changes any logit (plain greedy): the first block with the largest
            // key holds the winner, and the scan below has nothing to do.
            best = block_max.iter().copied().max().unwrap_or(floor);
            let b = block_max.iter().position(|&m| m == best).unwrap_or(0);
            (at, in_block) = (b * BLOCK, true);
        }
        let scanned = if plain { 0 } else { block_max.len() };
        for (b, block) in logits.chunks(BLOCK).enumerate().take(scanned) {
            let start = b * BLOCK;
            if first.untouched(&next, start + block.len()) {
                let m = block_max[b];
                if m > best {
                    (best, at, in_block) = (m, start, true);
                }
                continue;
            }
            for (j, &l) in block.iter().enumerate() {
                let (_, k) = first.adjust(start + j, l, &mut next);
                if k > best {
                    (best, at, in_block) = (k, start + j, false);
                }
            }
        }
        if in_block {
            // Searching for the first maximum does not vectorize; one block of it is cheap.
            at += logits[at..].iter().position(|&l| order_key(l) == best)?;
        }
        (best > floor).then_some(at as u32)
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
