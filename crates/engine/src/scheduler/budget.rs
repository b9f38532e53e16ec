//! How many prompt tokens a step may carry while other sequences are decoding.
//!
//! A step is one forward pass, and every decoding sequence waits for it: a step that also
//! carries 512 prompt tokens delays each of their next tokens by the whole chunk (on Gemma
//! 3 270M at 2 threads, ~0.4 s against ~10 ms). So while anyone decodes, the prompt chunk
//! is sized from measurements to keep a step within [`STALL`] times a decode-only step:
//! the cost of a prompt token and of a decode-only step are tracked as moving averages
//! of this machine's own steps, so the rule holds on a slow laptop and a fast server
//! alike. With nobody decoding, a step takes up to [`IDLE_STEPS`] times the step budget
//! (the forward pass slices it into batches of the step budget): prompts that arrive
//! together are then all done in one step and start decoding together, instead of the
//! first ones decoding while the rest crawl through the small chunks decoding allows.

/// A mixed step may take this many times a decode-only step. The users of the running
/// streams see a percentile, not the mean this sets, and on a shared machine single
/// steps take twice their share now and then. On Gemma 3 270M at 2 threads on an AMD
/// Zen 5 VM (bench/server: interference, p99 gap in the window over the streams'
/// median), 2.0 here gave 2.7, 2.7, 4.5 and 3.0 in four runs, 1.75 gave 2.6, 3.0, 2.8
/// and 2.4, and 1.5 gave 2.4, 2.3, 2.5 and 2.5, the arriving 963-token prompt's first
/// token then coming at 1.1–1.3 s instead of 0.9–1.0 (llama.cpp's server: about 1.2 s,
/// stalling every stream meanwhile).
pub const STALL: f64 = 1.5;
/// Fewest prompt tokens per step while decoding (progress even when prompts are costly;
/// on Gemma 3 270M at 2 threads a prompt token on the row path costs about a third of a
/// 3-stream decode step, so more would break the stall bound by itself).
const MIN_CHUNK: usize = 4;
/// With nobody decoding, a step carries up to this many times the step budget.
pub const IDLE_STEPS: usize = 4;
/// Weight of a new measurement in the moving averages.
const ALPHA: f64 = 0.2;

/// Decode-step costs kept apart by the number of decode tokens: 1, 2, ..., and one slot
/// for this many or more.
const DECODE_SLOTS: usize = 16;

/// The measured costs, and the chunk they allow.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Most tokens a step may carry.
    max_tokens: usize,
    /// Seconds of a step with decode tokens only, by their number (slot `n - 1`; `None`
    /// until one is seen). One average over every count lagged behind a change in the
    /// number of streams (four decoding, then three: the four's cost for several steps),
    /// and a long prompt arriving then got chunks sized from the wrong cost.
    decode_step_s: [Option<f64>; DECODE_SLOTS],
    /// Seconds per prompt token in mixed steps (`None` until measured).
    prompt_token_s: Option<f64>,
}

impl Budget {
    /// A budget of at most `max_tokens` per step.
    pub fn new(max_tokens: usize) -> Budget {
        Budget {
            max_tokens: max_tokens.max(1),
            decode_step_s: [None; DECODE_SLOTS],
            prompt_token_s: None,
        }
    }

    /// The cost of a decode-only step of `n_decode` (> 0) tokens: its own average, or
    /// the nearest count's while it has none.
    fn decode_s(&self, n_decode: usize) -> Option<f64> {
        let at = n_decode.clamp(1, DECODE_SLOTS) - 1;
        (0..DECODE_SLOTS).find_map(|d| {
            let below = at.checked_sub(d).and_then(|i| self.decode_step_s[i]);
            below.or_else(|| self.decode_step_s.get(at + d).copied().flatten())
        })
    }

    /// Prompt tokens the next step may carry beside `n_decode` decode tokens.
    pub fn prompt_tokens(&self, n_decode: usize) -> usize {
        if n_decode == 0 {
            return IDLE_STEPS * self.max_tokens;
        }
        let room = self.max_tokens.saturating_sub(n_decode);
        let chunk = match (self.decode_s(n_decode), self.prompt_token_s) {
            (Some(d), Some(p)) if p > 0.0 => ((STALL - 1.0) * d / p) as usize,
            // Not measured yet: a cautious start.
            _ => 4 * MIN_CHUNK,
        };
        chunk.clamp(MIN_CHUNK.min(room), room)
    }

    /// Records a step of `n_decode` decode and `n_prompt` prompt tokens that took
    /// `seconds`.
    pub fn record(&mut self, n_decode: usize, n_prompt: usize, seconds: f64) {
        let ema = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| o + ALPHA * (new - o)));
        if n_prompt == 0 {
            if n_decode > 0 {
                let slot = &mut self.decode_step_s[n_decode.min(DECODE_SLOTS) - 1];
                *slot = ema(*slot, seconds);
            }
            return;
        }
        // Only mixed steps tell what a prompt token costs beside decoding (prompts alone
        // take the GEMM, whose cost per token is another matter): what is left after
        // the decode part is the prompt's.
        if n_decode == 0 {
            return;
        }
        let decode = self.decode_s(n_decode).unwrap_or(0.0);
        let per_token = (seconds - decode).max(0.0) / n_prompt as f64;
        self.prompt_token_s = ema(self.prompt_token_s, per_token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_decoding_takes_the_whole_step() {
        let b = Budget::new(512);
        assert_eq!(b.prompt_tokens(0), IDLE_STEPS * 512);
        assert_eq!(b.prompt_tokens(3), 16, "unmeasured: a cautious start");
    }

    #[test]
    fn each_stream_count_has_its_own_decode_cost() {
        let mut b = Budget::new(512);
        // Four streams at 26 ms a step, three at 20 ms, and steps of three with 20
        // prompt tokens of 1 ms each: each count's chunk follows its own decode cost.
        for _ in 0..50 {
            b.record(4, 0, 0.026);
            b.record(3, 0, 0.020);
            b.record(3, 20, 0.020 + 20.0 * 0.001);
        }
        // (STALL - 1) decode steps' worth of 1 ms tokens.
        let near =
            |got: usize, decode_ms: f64| got.abs_diff(((STALL - 1.0) * decode_ms) as usize) <= 1;
        assert!(near(b.prompt_tokens(3), 20.0), "{}", b.prompt_tokens(3));
        assert!(near(b.prompt_tokens(4), 26.0), "{}", b.prompt_tokens(4));
        // A count never seen takes the nearest one's cost.
        assert!(near(b.prompt_tokens(2), 20.0), "{}", b.prompt_tokens(2));
        assert!(near(b.prompt_tokens(7), 26.0), "{}", b.prompt_tokens(7));
    }

    #[test]
    fn the_chunk_keeps_a_mixed_step_within_the_stall_factor() {
        let mut b = Budget::new(512);
        // Decode steps of 10 ms; prompt tokens of 1 ms each.
        for _ in 0..50 {
            b.record(3, 0, 0.010);
            b.record(3, 20, 0.010 + 20.0 * 0.001);
        }
        // (STALL - 1) · 10 ms of 1 ms tokens.
        let want = ((STALL - 1.0) * 10.0) as usize;
        let chunk = b.prompt_tokens(3);
        assert!(chunk.abs_diff(want) <= 1 || chunk == MIN_CHUNK, "{chunk}");
        // Cheap prompt tokens allow more, up to the step's room.
        let mut b = Budget::new(512);
        for _ in 0..50 {
            b.record(2, 0, 0.010);
            b.record(2, 100, 0.010 + 100.0 * 0.00005);
        }
        // (STALL - 1) · 10 ms of 0.05 ms tokens.
        let want = ((STALL - 1.0) * 200.0) as usize;
        let chunk = b.prompt_tokens(2);
        assert!(chunk.abs_diff(want) <= 10, "{chunk}");
        let mut b = Budget::new(64);
        for _ in 0..50 {
            b.record(2, 0, 0.010);
            b.record(2, 10, 0.010 + 10.0 * 0.00001);
        }
        assert_eq!(b.prompt_tokens(2), 62, "capped by the step's room");
    }
}
