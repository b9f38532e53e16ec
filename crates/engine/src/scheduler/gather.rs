//! An idle engine's wait for the rest of a burst.
//!
//! Requests sent together reach the engine a millisecond or two apart. Without a wait,
//! the first one's prompt filled a step alone and started decoding, and the others then
//! crawled through the small chunks that decoding allows ([`super::budget`]): on Gemma 3
//! 270M at 2 threads, four clients sending at once got their last first token at 1.2–1.6 s
//! instead of 0.6 s, every time the race went that way. So a job that wakes an idle
//! engine waits up to [`QUIET`] for company, as long as more could start; the prompts
//! that came together then share one step and start decoding together. A lone request
//! pays the wait once, against a prompt step of tens of milliseconds or more.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long to wait for the next job of a burst; each arrival restarts the wait.
pub const QUIET: Duration = Duration::from_millis(3);
/// The longest a burst is gathered, however steadily jobs arrive.
pub const MAX: Duration = Duration::from_millis(20);

/// Takes jobs from `jobs` while `wants_more` (then what `take` says after each job) and
/// each arrives within [`QUIET`] of the previous one, for at most [`MAX`]. Says whether
/// the queue is still open.
pub fn gather<T>(
    jobs: &Receiver<T>,
    mut wants_more: bool,
    mut take: impl FnMut(T) -> bool,
) -> bool {
    let start = Instant::now();
    while wants_more {
        let left = MAX.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match jobs.recv_timeout(QUIET.min(left)) {
            Ok(job) => wants_more = take(job),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn takes_what_is_queued_until_full_and_leaves_the_rest() {
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let mut taken = Vec::new();
        let open = gather(&rx, true, |job| {
            taken.push(job);
            taken.len() < 3
        });
        assert!(open);
        assert_eq!(taken, [0, 1, 2]);
        assert_eq!(rx.try_recv(), Ok(3), "a full engine leaves jobs queued");
    }

    #[test]
    fn a_full_engine_does_not_wait() {
        let (tx, rx) = mpsc::channel();
        tx.send(0).unwrap();
        assert!(gather(&rx, false, |_: i32| panic!(
            "took a job with no room"
        )));
    }

    #[test]
    fn a_late_job_is_left_for_the_next_step() {
        let (tx, rx) = mpsc::channel();
        let late = thread::spawn(move || {
            thread::sleep(MAX * 10);
            tx.send(1).unwrap();
            tx
        });
        let start = Instant::now();
        let open = gather(&rx, true, |_: i32| panic!("waited for a late job"));
        assert!(open);
        assert!(
            start.elapsed() < MAX * 10,
            "gathered past the late job's arrival"
        );
        drop(late.join().unwrap());
        assert_eq!(rx.recv(), Ok(1));
    }

    #[test]
    fn a_closed_queue_is_reported() {
        let (tx, rx) = mpsc::channel::<i32>();
        drop(tx);
        assert!(!gather(&rx, true, |_| true));
    }
}
