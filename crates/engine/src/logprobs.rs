//! Token log-probabilities for OpenAI's `logprobs` / `top_logprobs`.
//!
//! A log-probability here is the log-softmax of the model's *raw* logits, before any
//! sampling transform (temperature, penalties, `logit_bias`, top-k/top-p/min-p): it says
//! what the model thinks of a token, not how likely the sampler was to draw it. This is
//! what llama.cpp's server reports by default (`post_sampling_probs: false`), and it is the
//! same for a greedy and a sampled request. Padded vocabulary rows (past the tokenizer's
//! vocabulary) are left out: they are not tokens.
//!
//! [`LogprobScratch::step`] costs one pass over the logits for the log-sum-exp and one
//! for the top-k (kept in a small sorted buffer, k ≤ 20), and allocates nothing once the
//! buffer has grown to `k`.

/// The most `top_logprobs` a chat request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS_CHAT: usize = 20;
/// The most `logprobs` a legacy completion request may ask for (OpenAI's limit).
pub const MAX_LOGPROBS_COMPLETION: usize = 5;

/// One generated token's log-probability, as the engine sends it to the HTTP side.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token's bytes (possibly partial UTF-8, for byte tokens).
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens at this step, best first: `(bytes, logprob)`.
    pub top: Vec<(Vec<u8>, f32)>,
}

/// Reusable state for one request's log-probabilities.
#[derive(Clone, Debug, Default)]
pub struct LogprobScratch {
    /// The k best `(token, logit)` so far, best first.
    top: Vec<(u32, f32)>,
}

impl LogprobScratch {
    /// A scratch for `k` top alternatives.
    pub fn new(k: usize) -> LogprobScratch {
        LogprobScratch {
            top: Vec::with_capacity(k),
        }
    }

    /// The log-probability of `chosen` under `logits`, and the `k` most likely tokens with
    /// theirs (best first, ties to the lower id), read with [`LogprobScratch::top`].
    /// Returns `None` if `chosen` is out of range or no logit is finite.
    pub fn step(&mut self, logits: &[f32], chosen: u32, k: usize) -> Option<f32> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return None;
        }
        // Log-sum-exp around the maximum, summed in f64 so that a large vocabulary of tiny
        // terms does not lose precision.
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        // Subtracting the maximum first keeps the precision of large logits.
        let log_sum = sum.ln() as f32;
        let chosen_lp = (logits.get(chosen as usize)? - max) - log_sum;

        self.top.clear();
        if k > 0 {
            for (id, &l) in logits.iter().enumerate() {
                if self.top.len() == k && self.top[k - 1].1 >= l {
                    continue;
                }
                if self.top.len() == k {
                    self.top.pop();
                }
                // Strictly greater goes first, so equal logits keep id order.
                let at = self.top.partition_point(|&(_, t)| t >= l);
                self.top.insert(at, (id as u32, l));
            }
            for e in &mut self.top {
                e.1 = (e.1 - max) - log_sum;
            }
        }
        Some(chosen_lp)
    }

    /// The top alternatives of the last [`LogprobScratch::step`]: `(token, logprob)`.
    pub fn top(&self) -> &[(u32, f32)] {
        &self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log-softmax in f64, the obvious way.
    fn reference(logits: &[f32]) -> Vec<f64> {
        let max = logits
            .iter()
            .map(|&l| f64::from(l))
            .fold(f64::MIN, f64::max);
        let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
        logits
            .iter()
            .map(|&l| f64::from(l) - max - sum.ln())
            .collect()
    }

    #[test]
    fn matches_log_softmax_and_sorts_top_k() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5, 10.0, -1e9];
        let want = reference(&logits);
        let mut s = LogprobScratch::new(4);
        let lp = s.step(&logits, 2, 4).unwrap();
        assert!(
            (f64::from(lp) - want[2]).abs() < 1e-5,
            "{lp} vs {}",
            want[2]
        );
        let ids: Vec<u32> = s.top().iter().map(|e| e.0).collect();
        // 3.0 appears twice: the lower id first.
        assert_eq!(ids, [5, 1, 3, 0]);
        for &(id, lp) in s.top() {
            assert!((f64::from(lp) - want[id as usize]).abs() < 1e-5);
        }
        let total: f64 = want.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let logits = [1000.0f32, 999.0, 998.0];
        let mut s = LogprobScratch::new(3);
        let lp = s.step(&logits, 0, 3).unwrap();
        let want = reference(&logits);
        assert!((f64::from(lp) - want[0]).abs() < 1e-4);
        let p: f32 = s.top().iter().map(|e| e.1.exp()).sum();
        assert!((p - 1.0).abs() < 1e-5, "{p}");
    }

    #[test]
    fn k_zero_and_k_above_vocab() {
        let logits = [0.0f32, 1.0];
        let mut s = LogprobScratch::new(0);
        assert!(s.step(&logits, 1, 0).is_some());
        assert!(s.top().is_empty());
        s.step(&logits, 1, 20).unwrap();
        assert_eq!(s.top().len(), 2);
        assert_eq!(s.top()[0].0, 1);
    }

    #[test]
    fn bad_input_is_none_not_a_panic() {
        let mut s = LogprobScratch::new(2);
        assert_eq!(s.step(&[0.0, 1.0], 2, 2), None);
        assert_eq!(s.step(&[f32::NEG_INFINITY; 3], 0, 2), None);
        assert_eq!(s.step(&[], 0, 2), None);
    }

    #[test]
    fn reuse_does_not_grow_past_k() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
        let want = reference(&logits);
        let mut s = LogprobScratch::new(20);
        for chosen in [0u32, 500, 999] {
            let lp = s.step(&logits, chosen, 20).unwrap();
            assert!((f64::from(lp) - want[chosen as usize]).abs() < 1e-4);
            assert_eq!(s.top().len(), 20);
            assert!(s.top().windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(s.top.capacity() <= 21);
        }
        // The best is the largest logit (100 -> 10.0 at the first such index).
        let best = (0..1000).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)));
        assert_eq!(s.top()[0].0 as usize, best.unwrap());
    }
}
