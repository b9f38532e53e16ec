//! A persistent thread pool for the kernels.
//!
//! A decoded token costs a couple of hundred small matrix-vector products, each a few
//! microseconds long, so handing work to other threads must cost far less than that. The
//! pool therefore works the way ggml's CPU threadpool does rather than the way a general
//! task queue does:
//!
//! - its threads are created once, in [`ThreadPool::new`], and live until the pool drops;
//! - a dispatch ([`ThreadPool::run`]) publishes one job, a plain `&dyn Fn(ith, nth)`, and
//!   bumps a generation counter; nothing is allocated, queued or boxed;
//! - the job is called once for every part `ith` in `0..nth`; the calling thread takes part
//!   too (a pool of `n` threads spawns `n - 1`), so `nth == n` parts run on `n` threads;
//! - an idle worker spins on the generation counter for a short while (the next product of
//!   the same token is usually only microseconds away) and then parks, so an idle engine
//!   does not burn its cores; a dispatcher unparks only the workers that said they sleep.
//!
//! Parts are claimed, not assigned: each thread, the caller included, takes the next
//! unclaimed part until none is left. Normally every thread gets one. But when a worker
//! has lost its core (the machine is busy with other work) or is still waking up, the
//! caller runs that worker's part itself instead of waiting for the scheduler, so a
//! dispatch degrades to serial work rather than to a scheduler time slice. `ith` therefore
//! names a part of the work, not a thread.
//!
//! The job borrows freely from the caller's stack: `run` returns only after every part has
//! finished, even when one of them panicked.
//!
//! # Panics in jobs
//!
//! A panic inside a part, on any thread, is caught there; once all parts are done, `run`
//! re-raises the first panic on the calling thread (with [`std::panic::resume_unwind`]).
//! The workers survive and the pool stays usable. Under `panic = "abort"` a panicking job
//! aborts the process, as any panic does.
//!
//! # Re-entrancy
//!
//! Only one job runs at a time. A `run` that arrives while another is in progress (a job
//! that calls `run` on its own pool, or a second thread sharing the pool) does not wait,
//! which could deadlock: it runs its job on the calling thread alone, as `f(0, 1)`. Jobs
//! must therefore split their work by the `nth` they are given, not by
//! [`ThreadPool::n_threads`].

use std::any::Any;
use std::cell::UnsafeCell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The job type: called once per part with `(ith, nth)`.
type Job<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// How long an idle worker spins before it parks, unless the pool was built with
/// [`ThreadPool::with_spin`]. Long enough to bridge the gap between two products of the
/// same token (the norms, RoPE and attention in between take microseconds), short enough
/// that a pool left idle between requests stops using its cores almost at once.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// Most threads a pool may have: the part index lives in the low bits of [`Shared::state`].
pub const MAX_THREADS: usize = 1 << PART_BITS;

/// Bits of [`Shared::state`] that hold the next unclaimed part; the rest is the generation.
const PART_BITS: u32 = 12;
const PART_MASK: u64 = (1 << PART_BITS) - 1;

/// Pads a value to its own cache line pair, so that the counters written by different
/// threads do not share a line (128 bytes covers the adjacent-line prefetcher of x86 and
/// the 128-byte lines of Apple's cores).
#[repr(align(128))]
struct CachePadded<T>(T);

/// State shared by the dispatching thread and the workers.
struct Shared {
    /// `generation << PART_BITS | next_part`. The dispatcher stores a new generation with
    /// part 0 to publish a job; every thread then claims parts by incrementing the low bits
    /// with a compare-exchange that also checks the generation, so a late worker can never
    /// claim a part of a job that is not the one it woke up for.
    state: CachePadded<AtomicU64>,
    /// Parts of the current job not yet finished.
    pending: CachePadded<AtomicUsize>,
    /// The current job, its lifetime erased. Written only by the dispatcher while no part
    /// of any job is claimed and unfinished (before publishing, after `pending` hit zero).
    job: UnsafeCell<Option<NonNull<Job<'static>>>>,
    /// Set before the final generation bump in `Drop`.
    shutdown: AtomicBool,
    /// The first panic payload of a part of the current job run by a worker.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// One flag per worker (index `worker - 1`): set while the worker is about to park or
    /// parked, so the dispatcher knows whom to unpark.
    sleeping: Box<[CachePadded<AtomicBool>]>,
    /// How long a worker spins before parking.
    spin: Duration,
    /// Workers that have started and finished their own setup.
    started: AtomicUsize,
}

// SAFETY: every field but `job` is Sync by itself. `job` is an `UnsafeCell` holding a
// pointer to a `Sync` closure; the dispatcher writes it only while no thread holds an
// unfinished part (so nobody reads it), and readers read it only while holding one,
// after an acquire of `state` that synchronizes with the dispatcher's publishing store.
unsafe impl Sync for Shared {}
// SAFETY: the closure behind `job` is `Sync`, so using it from another thread is sound;
// the pointer itself carries no thread affinity.
unsafe impl Send for Shared {}

/// A fixed set of threads that run one job at a time, split into numbered parts.
///
/// See the [module documentation](self) for how dispatch works and what happens on panics.
pub struct ThreadPool {
    shared: Arc<Shared>,
    /// The spawned workers.
    workers: Vec<JoinHandle<()>>,
    /// Held for the duration of a dispatch; see "Re-entrancy" in the module docs.
    busy: AtomicBool,
    /// The generation of the last job published.
    generation: AtomicU64,
}

impl ThreadPool {
    /// Starts a pool of `n_threads` threads in all, the caller included: `n_threads - 1`
    /// workers are spawned. Zero is treated as one (no workers; every job runs inline),
    /// and more than [`MAX_THREADS`] as `MAX_THREADS`.
    ///
    /// Fails only when the operating system refuses to create a thread.
    pub fn new(n_threads: usize) -> io::Result<ThreadPool> {
        ThreadPool::with_spin(n_threads, DEFAULT_SPIN)
    }

    /// As [`ThreadPool::new`], with idle workers spinning for `spin` before they park.
    /// `Duration::ZERO` parks at once (lowest CPU use, highest dispatch latency).
    pub fn with_spin(n_threads: usize, spin: Duration) -> io::Result<ThreadPool> {
        let n_threads = n_threads.clamp(1, MAX_THREADS);
        let shared = Arc::new(Shared {
            state: CachePadded(AtomicU64::new(0)),
            pending: CachePadded(AtomicUsize::new(0)),
            job: UnsafeCell::new(None),
            shutdown: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleeping: (1..n_threads)
                .map(|_| CachePadded(AtomicBool::new(false)))
                .collect(),
            spin,
            started: AtomicUsize::new(0),
        });
        let mut pool = ThreadPool {
            shared,
            workers: Vec::with_capacity(n_threads - 1),
            busy: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        };
        for worker in 1..n_threads {
            let shared = Arc::clone(&pool.shared);
            let handle = thread::Builder::new()
                .name(format!("hearth-pool-{worker}"))
                .spawn(move || worker_loop(&shared, worker, n_threads))?;
            // On an early return the pool drops here and shuts down the workers spawned so
            // far; each of them only ever waits on the generation.
            pool.workers.push(handle);
        }
        // Wait until every worker runs, so that thread start-up (which allocates) is over
        // when `new` returns and the first dispatches find all threads ready.
        while pool.shared.started.load(Ordering::Acquire) != n_threads - 1 {
            thread::yield_now();
        }
        Ok(pool)
    }

    /// Threads that take part in a job, the calling thread included.
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(ith, nth)` once for each part `ith` in `0..nth`, spread over the pool's
    /// threads (the calling thread included), and returns when all parts have returned.
    ///
    /// `nth` is [`ThreadPool::n_threads`], except for a re-entrant or concurrent call,
    /// which runs `f(0, 1)` inline (see the module docs). A panic in `f` on any thread is
    /// re-raised here after every part has finished.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let nth = self.n_threads();
        if nth == 1 {
            f(0, 1);
            return;
        }
        if self.busy.swap(true, Ordering::Acquire) {
            f(0, 1);
            return;
        }
        // Clears `busy` however this function is left.
        struct Idle<'a>(&'a AtomicBool);
        impl Drop for Idle<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _idle = Idle(&self.busy);

        let shared = &*self.shared;
        // SAFETY: this only erases the closure's lifetime. The pointer is dereferenced
        // only by threads holding an unfinished part, and this function does not return
        // (normally or by unwinding: parts run under `catch_unwind`) before `pending` is
        // zero, that is before every part has finished, so `f` outlives every use.
        let job: NonNull<Job<'static>> = unsafe {
            std::mem::transmute::<NonNull<Job<'_>>, NonNull<Job<'static>>>(NonNull::from(f))
        };
        // SAFETY: `busy` makes this the only dispatcher, and the previous job has no
        // unfinished part (we waited for `pending == 0`), so no thread reads `job` now.
        // The SeqCst (hence release) store of `state` below publishes the write.
        unsafe { *shared.job.get() = Some(job) };
        shared.pending.0.store(nth, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.generation.store(generation, Ordering::Relaxed);
        // SeqCst pairs with the workers' SeqCst store of `sleeping` followed by their load
        // of `state`: either a worker sees the new generation before it parks, or we see
        // its `sleeping` flag below and unpark it (a Dekker-style handshake).
        shared
            .state
            .0
            .store(generation << PART_BITS, Ordering::SeqCst);
        for (flag, worker) in shared.sleeping.iter().zip(&self.workers) {
            if flag.0.load(Ordering::SeqCst) {
                worker.thread().unpark();
            }
        }

        let mut own_panic = None;
        run_parts(shared, generation, nth, &mut |payload| {
            own_panic.get_or_insert(payload);
        });

        wait_until_zero(&shared.pending.0);
        // SAFETY: every part has finished (`pending == 0`, acquired above), so no thread
        // reads `job`; clearing the pointer leaves no dangling copy behind.
        unsafe { *shared.job.get() = None };
        let worker_panic = lock(&shared.panic).take();
        if let Some(payload) = own_panic.or(worker_panic) {
            panic::resume_unwind(payload);
        }
    }
}

impl ThreadPool {
    /// [`ThreadPool::run`] with a slot of mutable state per part: `f(ith, nth, &mut
    /// parts[ith])`. Parts that each fill their own buffer (attention's per-part scores
    /// and outputs) use this instead of a lock per slot, so a dispatch stays lock-free.
    ///
    /// Panics (before running anything) when `parts` has fewer slots than the pool has
    /// threads: size it with [`ThreadPool::n_threads`].
    pub fn run_with<T: Send>(&self, parts: &mut [T], f: &(dyn Fn(usize, usize, &mut T) + Sync)) {
        assert!(
            parts.len() >= self.n_threads(),
            "run_with needs a slot per thread: {} slots for {} threads",
            parts.len(),
            self.n_threads()
        );
        /// The slots' base pointer, shared with the parts.
        struct Slots<T>(*mut T);
        // SAFETY: each part dereferences only its own slot (see below), so sharing the
        // pointer between threads hands each `T` to one thread at a time: `T: Send` is
        // what that requires.
        unsafe impl<T: Send> Sync for Slots<T> {}
        let slots = Slots(parts.as_mut_ptr());
        let slots = &slots;
        self.run(&|ith, nth| {
            // `run` calls the job exactly once for each `ith` in `0..nth` of this dispatch
            // and `nth <= n_threads() <= parts.len()`, so every call gets a distinct slot.
            assert!(ith < nth && nth <= self.n_threads());
            // SAFETY: `ith < parts.len()` (asserted above), the slots are borrowed mutably
            // for the whole of `run`, which returns only after every part has finished,
            // and no two parts of a dispatch share an `ith`: the `&mut` are disjoint.
            let slot = unsafe { &mut *slots.0.add(ith) };
            f(ith, nth, slot);
        });
    }
}

impl ThreadPool {
    /// Runs `f` on `a` and `b` cut at the same places into one piece per thread, for
    /// element-wise work (an FFN's gate over a whole prompt) that would otherwise leave
    /// the other threads waiting. Cuts fall on multiples of [`PIECE_ALIGN`] elements, so a
    /// SIMD kernel's vectors and tail fall where they would on the whole slices and the
    /// results do not depend on the thread count. Under `min_len` elements everything runs
    /// on the calling thread: a dispatch costs more than the work.
    ///
    /// # Panics
    /// When `a` and `b` differ in length.
    pub fn zip_pieces<A: Send, B: Sync>(
        &self,
        a: &mut [A],
        b: &[B],
        min_len: usize,
        f: &(dyn Fn(&mut [A], &[B]) + Sync),
    ) {
        assert_eq!(a.len(), b.len(), "zip_pieces: lengths");
        let n = a.len();
        if n < min_len.max(2 * PIECE_ALIGN) || self.n_threads() == 1 {
            f(a, b);
            return;
        }
        /// `a`'s base pointer, shared with the parts.
        struct Base<A>(*mut A);
        // SAFETY: each part dereferences only its own piece of `a` (see below), so
        // sharing the pointer hands each element to one thread at a time: `A: Send` is
        // what that requires.
        unsafe impl<A: Send> Sync for Base<A> {}
        let base = Base(a.as_mut_ptr());
        let base = &base;
        self.run(&|ith, nth| {
            let blocks = n.div_ceil(PIECE_ALIGN);
            let cut = |i: usize| (blocks * i / nth * PIECE_ALIGN).min(n);
            let (lo, hi) = (cut(ith), cut(ith + 1));
            // SAFETY: `lo..hi` lies within `a` (cuts are clamped to `n`), the pieces of
            // distinct parts are disjoint (cuts increase with `i`), and `a` is borrowed
            // mutably for the whole of `run`, which returns only after every part.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.0.add(lo), hi - lo) };
            f(piece, &b[lo..hi]);
        });
    }
}

/// Elements per unit of [`ThreadPool::zip_pieces`]' cuts: a multiple of every SIMD
/// width the kernels use.
pub const PIECE_ALIGN: usize = 64;

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let shared = &*self.shared;
        shared.shutdown.store(true, Ordering::Relaxed);
        // A new generation with every part already claimed: workers wake, see `shutdown`
        // (released by this store) and leave. The unpark reaches those already parked.
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        shared
            .state
            .0
            .store(generation << PART_BITS | PART_MASK, Ordering::SeqCst);
        for worker in &self.workers {
            worker.thread().unpark();
        }
        for worker in self.workers.drain(..) {
            // A worker catches every panic of its jobs, so join fails only if the thread
            // was killed by other means; there is nothing useful to do about that here.
            let _ = worker.join();
        }
    }
}

/// Claims and runs parts of job `generation` until none is left; `on_panic` receives the
/// payload of each part that panicked.
fn run_parts(
    shared: &Shared,
    generation: u64,
    nth: usize,
    on_panic: &mut dyn FnMut(Box<dyn Any + Send>),
) {
    let state = &shared.state.0;
    let mut s = state.load(Ordering::Acquire);
    loop {
        let part = (s & PART_MASK) as usize;
        if s >> PART_BITS != generation || part >= nth {
            return;
        }
        // Acquire: synchronizes with the dispatcher's store of this generation (the CASes
        // of other threads continue its release sequence), which the job write precedes.
        if let Err(now) =
            state.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Acquire)
        {
            s = now;
            continue;
        }
        // SAFETY: we hold the unfinished part `part` of this generation, so the dispatcher
        // has published this job (acquired above) and cannot replace or drop it before our
        // decrement of `pending` below.
        let job: &Job<'_> = match unsafe { *shared.job.get() } {
            // SAFETY: as above; the pointer was made from a live `&Job`.
            Some(job) => unsafe { job.as_ref() },
            None => unreachable!("a generation was published without a job"),
        };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| job(part, nth))) {
            on_panic(payload);
        }
        // Release: this part's writes happen before the dispatcher returns.
        shared.pending.0.fetch_sub(1, Ordering::Release);
        s = state.load(Ordering::Acquire);
    }
}

/// The body of a worker: wait for a generation, run parts of its job, repeat.
fn worker_loop(shared: &Shared, worker: usize, nth: usize) {
    // `park` needs this thread's handle, which the standard library may allocate lazily on
    // first use; make that happen now rather than inside some later dispatch.
    drop(thread::current());
    shared.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u64;
    loop {
        seen = wait_for_generation(shared, worker, seen);
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        run_parts(shared, seen, nth, &mut |payload| {
            let mut first = lock(&shared.panic);
            if first.is_none() {
                *first = Some(payload);
            }
        });
    }
}

/// Spins, then parks, until the generation differs from `seen`; returns the new one.
fn wait_for_generation(shared: &Shared, worker: usize, seen: u64) -> u64 {
    let state = &shared.state.0;
    let sleeping = &shared.sleeping[worker - 1].0;
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = state.load(Ordering::Acquire) >> PART_BITS;
        if g != seen {
            return g;
        }
        spins = spins.wrapping_add(1);
        // Reading the clock costs about as much as a few dozen spins; do it rarely.
        if !spins.is_multiple_of(64) || start.elapsed() < shared.spin {
            std::hint::spin_loop();
            continue;
        }
        // Announce the sleep, then look once more (see the handshake note in `run`).
        sleeping.store(true, Ordering::SeqCst);
        if state.load(Ordering::SeqCst) >> PART_BITS == seen {
            // Spurious wake-ups and stale unpark tokens just loop back to the check.
            thread::park();
        }
        sleeping.store(false, Ordering::Relaxed);
    }
}

/// The dispatcher's wait for parts still running on workers. Every part is claimed by
/// now, so this is only the tail of the slowest part; after a while it yields, in case
/// that part's thread lost its core to this one.
fn wait_until_zero(pending: &AtomicUsize) {
    let mut spins = 0u32;
    while pending.load(Ordering::Acquire) != 0 {
        spins = spins.saturating_add(1);
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// Locks the panic slot, ignoring poisoning: the slot is only ever assigned, so a panic
/// while it was held cannot have left it half-written.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_means_one() {
        let pool = ThreadPool::new(0).unwrap();
        assert_eq!(pool.n_threads(), 1);
        let calls = AtomicUsize::new(0);
        pool.run(&|ith, nth| {
            assert_eq!((ith, nth), (0, 1));
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.into_inner(), 1);
    }
}
