//! The persistent pool: every thread index runs exactly once per dispatch, over many
//! dispatches, with 1 and N threads; borrows from the caller's stack; panics propagate
//! without deadlock; re-entrant calls fall back to running inline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hearth_kernels::pool::ThreadPool;

/// Runs `n_dispatch` jobs and checks that each one called every `ith` exactly once with
/// the pool's `nth`, and that all calls of a dispatch finished before `run` returned.
fn check_dispatches(pool: &ThreadPool, n_dispatch: usize) {
    let nth = pool.n_threads();
    let per_thread: Vec<AtomicU64> = (0..nth).map(|_| AtomicU64::new(0)).collect();
    for round in 0..n_dispatch as u64 {
        pool.run(&|ith, n| {
            assert_eq!(n, nth);
            // Each thread sees its own counter at the previous round: no dispatch lost or
            // repeated, and the previous dispatch fully finished.
            let prev = per_thread[ith].fetch_add(1, Ordering::Relaxed);
            assert_eq!(prev, round, "thread {ith} out of step");
        });
        for (ith, c) in per_thread.iter().enumerate() {
            assert_eq!(
                c.load(Ordering::Relaxed),
                round + 1,
                "thread {ith} after run"
            );
        }
    }
}

#[test]
fn many_dispatches_one_thread() {
    check_dispatches(&ThreadPool::new(1).unwrap(), 10_000);
}

#[test]
fn many_dispatches_n_threads() {
    for n in [2, 3, 4] {
        check_dispatches(&ThreadPool::new(n).unwrap(), 20_000);
    }
}

#[test]
fn dispatches_after_workers_parked() {
    // Zero spin: workers park after every job, so each dispatch goes through unpark.
    let pool = ThreadPool::with_spin(3, Duration::ZERO).unwrap();
    check_dispatches(&pool, 2_000);
    // And with a pause long enough for the default-spin workers to park.
    let pool = ThreadPool::new(2).unwrap();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(2));
        check_dispatches(&pool, 10);
    }
}

#[test]
fn jobs_write_disjoint_parts_of_a_borrowed_buffer() {
    let pool = ThreadPool::new(4).unwrap();
    let n = 10_007usize;
    let out: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let input: Vec<usize> = (0..n).collect();
    for _ in 0..100 {
        pool.run(&|ith, nth| {
            let (lo, hi) = (n * ith / nth, n * (ith + 1) / nth);
            for i in lo..hi {
                out[i].fetch_add(input[i] * 2, Ordering::Relaxed);
            }
        });
    }
    for (i, v) in out.iter().enumerate() {
        assert_eq!(v.load(Ordering::Relaxed), 200 * i);
    }
}

#[test]
fn worker_panic_propagates_and_pool_survives() {
    let pool = ThreadPool::new(3).unwrap();
    for bad in [0, 1, 2] {
        let finished = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|ith, _| {
                if ith == bad {
                    panic!("job failed on thread {ith}");
                }
                std::thread::sleep(Duration::from_millis(1));
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let msg = r.expect_err("the panic must reach the caller");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(msg, format!("job failed on thread {bad}"));
        // The other threads were waited for before the panic was re-raised.
        assert_eq!(finished.load(Ordering::Relaxed), 2);
        check_dispatches(&pool, 100);
    }
}

#[test]
fn nested_run_falls_back_to_inline() {
    let pool = ThreadPool::new(2).unwrap();
    let inner_calls = AtomicUsize::new(0);
    pool.run(&|_, _| {
        pool.run(&|ith, nth| {
            assert_eq!((ith, nth), (0, 1));
            inner_calls.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(inner_calls.into_inner(), 2);
    check_dispatches(&pool, 10);
}

#[test]
fn concurrent_callers_each_get_every_call() {
    let pool = ThreadPool::new(2).unwrap();
    let total = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..2_000 {
                    // Whether this call got the pool or ran inline, the slices cover 0..nth.
                    pool.run(&|_, nth| {
                        total.fetch_add(12 / nth, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(total.into_inner(), 3 * 2_000 * 12);
}

#[test]
fn drop_joins_parked_and_spinning_workers() {
    for spin in [Duration::ZERO, Duration::from_secs(1)] {
        let pool = ThreadPool::with_spin(4, spin).unwrap();
        check_dispatches(&pool, 3);
        drop(pool);
    }
}

/// `run_with` hands every part its own slot: after each dispatch, slot `ith` holds what
/// part `ith` wrote and nothing else, for any thread count and many dispatches.
#[test]
fn run_with_gives_each_part_its_own_slot() {
    for n in 1..=4 {
        let pool = ThreadPool::new(n).unwrap();
        let mut slots = vec![(usize::MAX, 0usize); n + 1];
        for round in 0..2_000 {
            pool.run_with(&mut slots, &|ith, nth, slot: &mut (usize, usize)| {
                *slot = (ith * 1000 + nth, round);
            });
            for (ith, slot) in slots.iter().take(n).enumerate() {
                assert_eq!(*slot, (ith * 1000 + n, round), "{n} threads, round {round}");
            }
            assert_eq!(slots[n].0, usize::MAX, "the spare slot is never touched");
        }
    }
}

/// Fewer slots than threads is refused before any part runs.
#[test]
#[should_panic(expected = "a slot per thread")]
fn run_with_refuses_too_few_slots() {
    let pool = ThreadPool::new(2).unwrap();
    let mut slots = [0u8; 1];
    pool.run_with(&mut slots, &|_, _, _| {});
}

/// `zip_pieces` hands every element to exactly one piece, matching pieces of `a` and `b`,
/// cut on multiples of `PIECE_ALIGN`, whatever the length and thread count; small inputs
/// stay whole.
#[test]
fn zip_pieces_covers_every_element_once_on_aligned_cuts() {
    use hearth_kernels::pool::PIECE_ALIGN;
    use std::sync::Mutex;
    for n_threads in 1..=3 {
        let pool = ThreadPool::new(n_threads).unwrap();
        for n in [0, 1, 63, 64, 127, 128, 129, 1000, 4096, 4097, 100_003] {
            let mut a: Vec<u64> = vec![0; n];
            let b: Vec<u64> = (0..n as u64).collect();
            let starts = Mutex::new(Vec::new());
            pool.zip_pieces(&mut a, &b, 256, &|a, b| {
                assert_eq!(a.len(), b.len());
                starts.lock().unwrap().push((b.first().copied(), b.len()));
                for (a, &b) in a.iter_mut().zip(b) {
                    *a += b + 1;
                }
            });
            assert!(
                a.iter().enumerate().all(|(i, &x)| x == i as u64 + 1),
                "{n_threads} threads, {n}"
            );
            let starts = starts.into_inner().unwrap();
            for &(first, _) in &starts {
                assert!(
                    first.is_none_or(|f| (f as usize).is_multiple_of(PIECE_ALIGN)),
                    "{starts:?}"
                );
            }
            if n < 256 || n_threads == 1 {
                assert_eq!(starts.len(), 1, "{n} elements stay whole");
            }
        }
    }
}
