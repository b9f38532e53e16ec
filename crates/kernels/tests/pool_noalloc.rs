//! A dispatch allocates nothing, on the caller or on the workers. A counting global
//! allocator sees every allocation in this test binary, which holds this one test only so
//! that no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_kernels::pool::ThreadPool;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn dispatch_does_not_allocate() {
    for (n, spin) in [(1, 200), (2, 200), (3, 0)] {
        let pool = ThreadPool::with_spin(n, std::time::Duration::from_micros(spin)).unwrap();
        let sum = AtomicUsize::new(0);
        // Warm up: thread-locals of the workers (parking state) are set up lazily.
        for _ in 0..100 {
            pool.run(&|ith, _| {
                sum.fetch_add(ith, Ordering::Relaxed);
            });
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..10_000 {
            pool.run(&|ith, _| {
                sum.fetch_add(ith, Ordering::Relaxed);
            });
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "{n} threads: dispatches allocated");
        assert_eq!(sum.into_inner(), (0..n).sum::<usize>() * 10_100);
    }
}
