//! A dispatch allocates nothing, on the caller or on the workers. A counting global
//! allocator sees every allocation in this test binary, which holds this one test only so
//! that no other test allocates concurrently.

use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_kernels::alloc_counter::CountingAlloc;
use hearth_kernels::pool::ThreadPool;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// No test harness (`harness = false` in Cargo.toml): libtest's own threads allocate now
/// and then (a qemu run caught one during a dispatch), and the counter is process-wide.
fn main() {
    dispatch_does_not_allocate();
    println!("pool_noalloc: ok");
}

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
        let before = CountingAlloc::count();
        for _ in 0..10_000 {
            pool.run(&|ith, _| {
                sum.fetch_add(ith, Ordering::Relaxed);
            });
        }
        let after = CountingAlloc::count();
        assert_eq!(after - before, 0, "{n} threads: dispatches allocated");
        assert_eq!(sum.into_inner(), (0..n).sum::<usize>() * 10_100);
    }
}
