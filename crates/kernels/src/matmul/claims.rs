//! Hands out a dispatch's chunks so that each thread walks a contiguous run of the
//! weights, and threads that finish early take what is left from the others' ends.
//!
//! One shared counter deals chunks 0, 1, 2, ... to whichever thread asks: with two
//! threads, each one's next chunk is two chunks on, so every chunk starts where neither
//! the kernel's prefetch (which runs ahead into the *following* chunk) nor the hardware
//! prefetchers (which follow a stream) had fetched anything, and waits on memory. A
//! decoding step has about 110 dispatches of 16 chunks each. Here thread `i` starts at
//! the `i`-th of `n` equal runs and takes its chunks in order, so its prefetches land in
//! its own next chunk; a thread whose run is done steals chunks from the end of another
//! run, so a slow thread still does not hold the dispatch up by more than one chunk.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most runs: threads beyond this share runs (claims stay correct, each run then
/// served from its front by several threads).
const MAX_RUNS: usize = 64;

/// Chunks `0..n`, split into runs claimed from the front by their owner and from the back
/// by others.
pub(super) struct Runs {
    /// Per run, `next << 32 | end`: the chunks `next..end` are still unclaimed.
    runs: [AtomicU64; MAX_RUNS],
    n_runs: usize,
}

impl Runs {
    /// `n_chunks` chunks in `n_runs.min(MAX_RUNS)` runs of (nearly) equal length.
    pub(super) fn new(n_chunks: usize, n_runs: usize) -> Runs {
        assert!(n_chunks < 1 << 32, "{n_chunks} chunks in one dispatch");
        let n_runs = n_runs.clamp(1, MAX_RUNS);
        let runs = std::array::from_fn(|r| {
            let (start, end) = if r < n_runs {
                (n_chunks * r / n_runs, n_chunks * (r + 1) / n_runs)
            } else {
                (0, 0)
            };
            AtomicU64::new(pack(start, end))
        });
        Runs { runs, n_runs }
    }

    /// The next chunk for thread `ith`: the front of its own run, else the back of
    /// another's (the next runs first, so that thieves spread out); `None` once every
    /// chunk is claimed. Each chunk is returned exactly once over all callers.
    pub(super) fn claim(&self, ith: usize) -> Option<usize> {
        let own = ith % self.n_runs;
        if let Some(c) = self.take(own, true) {
            return Some(c);
        }
        (1..self.n_runs).find_map(|k| self.take((own + k) % self.n_runs, false))
    }

    /// Takes the first (`front`) or last chunk of run `r`, if any is left.
    fn take(&self, r: usize, front: bool) -> Option<usize> {
        let run = &self.runs[r];
        // Relaxed: the runs only hand out chunk numbers; the data every thread reads was
        // published by the pool's dispatch.
        let mut s = run.load(Ordering::Relaxed);
        loop {
            let (next, end) = unpack(s);
            if next >= end {
                return None;
            }
            let (taken, new) = if front {
                (next, pack(next + 1, end))
            } else {
                (end - 1, pack(next, end - 1))
            };
            match run.compare_exchange_weak(s, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(taken),
                Err(now) => s = now,
            }
        }
    }
}

fn pack(next: usize, end: usize) -> u64 {
    (next as u64) << 32 | end as u64
}

fn unpack(s: u64) -> (usize, usize) {
    ((s >> 32) as usize, (s & 0xFFFF_FFFF) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every chunk goes out exactly once, whatever the chunk and thread counts, with
    /// threads racing.
    #[test]
    fn every_chunk_is_claimed_once() {
        for n_chunks in [0, 1, 2, 5, 16, 17, 100] {
            for n_threads in [1, 2, 3, 4] {
                let runs = Runs::new(n_chunks, n_threads);
                let seen = Mutex::new(vec![0u32; n_chunks]);
                std::thread::scope(|s| {
                    for ith in 0..n_threads {
                        let (runs, seen) = (&runs, &seen);
                        s.spawn(move || {
                            while let Some(c) = runs.claim(ith) {
                                seen.lock().unwrap()[c] += 1;
                            }
                        });
                    }
                });
                let seen = seen.into_inner().unwrap();
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{n_chunks} chunks, {n_threads} threads: {seen:?}"
                );
            }
        }
    }

    /// Alone, a thread takes its own run in order, then the others' from their ends.
    #[test]
    fn a_lone_thread_walks_its_run_then_steals_from_the_back() {
        let runs = Runs::new(8, 2);
        let order: Vec<usize> = std::iter::from_fn(|| runs.claim(0)).collect();
        assert_eq!(order, [0, 1, 2, 3, 7, 6, 5, 4]);
        let runs = Runs::new(8, 2);
        let order: Vec<usize> = std::iter::from_fn(|| runs.claim(1)).collect();
        assert_eq!(order, [4, 5, 6, 7, 3, 2, 1, 0]);
    }
}
