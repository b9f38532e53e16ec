//! The step's draws: every sequence with logits in a step samples its next token and
//! tells its client. The sequences share nothing while they do, so with several of them
//! the pool's threads draw side by side. Each draw passes over the whole vocabulary (the
//! greedy argmax's block maxima, a temperature draw's softmax: 262,144 logits for Gemma
//! 3), about 0.15 ms each when the logits have left the cache. Done one after another on
//! the scheduler's thread, they left the pool's other threads waiting at every step: on
//! Gemma 3 270M at 2 threads (`hearth serve`, four greedy streams, AMD Zen 5), a
//! four-sequence step's draws took 0.56–0.66 ms one after another and 0.39–0.42 ms
//! dealt over the two threads.

use std::sync::{Mutex, PoisonError};

use hearth_kernels::pool::ThreadPool;
use hearth_tokenizer::Tokenizer;

use super::metrics;
use super::sequence::{Progress, Seq, ThinkTokens};

/// A sequence's draw from its row of the step's logits (and their block keys, where the
/// model gave them); `ended` is set when the sequence is done (finished, cancelled or
/// failed) after it.
pub(super) struct Draw<'s, 't> {
    pub(super) seq: &'s mut Seq<'t>,
    pub(super) logits: &'s [f32],
    pub(super) keys: Option<&'s [i32]>,
    pub(super) ended: &'s mut bool,
}

/// Runs every draw: on the calling thread when there is one, else dealt round the pool.
/// `limits` is `(n_text, n_ctx)` as [`Seq::take_token`] takes it.
pub(super) fn draw_all<'s, 't: 's>(
    pool: &ThreadPool,
    draws: impl Iterator<Item = Draw<'s, 't>>,
    tok: &Tokenizer,
    limits: (usize, usize),
    think: &ThinkTokens,
) {
    // One lock per draw: each is taken by exactly one thread, so none is ever contended;
    // it only lends the `&mut` to whichever thread the draw is dealt to.
    let draws: Vec<Mutex<Draw<'s, 't>>> = draws.map(Mutex::new).collect();
    let run = |d: &Mutex<Draw<'s, 't>>| {
        let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
        let Draw {
            seq,
            logits,
            keys,
            ended,
        } = &mut *d;
        let progress = match seq.take_token(tok, (logits, *keys), limits, think) {
            Ok(p) => p,
            Err(e) => {
                seq.fail(e);
                Progress::Done
            }
        };
        if progress != Progress::Running {
            if progress == Progress::Cancelled {
                metrics::finished("cancelled");
            }
            **ended = true;
        }
    };
    if draws.len() < 2 || pool.n_threads() < 2 {
        draws.iter().for_each(run);
        return;
    }
    pool.run(&|ith, nth| draws.iter().skip(ith).step_by(nth).for_each(run));
}
