//! After construction, sampling and accepting tokens allocate nothing: a sampler runs once
//! per sequence per decode step, inside the loop that must not touch the allocator. A
//! counting global allocator counts the allocations of the thread that asks it to (the
//! test harness's own threads allocate at times of their choosing: counting them made
//! this test fail on a loaded machine).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_engine::sampler::{Penalties, Sampler, SamplerParams};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (`const`: no allocation to read it).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn sampling_does_not_allocate() {
    let n_vocab = 32_000;
    let logits: Vec<f32> = (0..n_vocab)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    for temperature in [0.0, 0.8] {
        for (top_k, top_p) in [(40, 0.95), (0, 0.99)] {
            let params = SamplerParams {
                temperature,
                top_k,
                top_p,
                min_p: 0.01,
                penalties: Penalties {
                    last_n: 64,
                    repeat: 1.1,
                    frequency: 0.1,
                    presence: 0.1,
                },
                logit_bias: vec![(3, 1.0), (5, f32::NEG_INFINITY)],
                ..SamplerParams::default()
            };
            let mut s = Sampler::new(&params, n_vocab).unwrap();
            let before = ALLOCS.load(Ordering::Relaxed);
            COUNTING.with(|c| c.set(true));
            for _ in 0..200 {
                let t = s.sample(&logits).unwrap();
                s.accept(t).unwrap();
            }
            COUNTING.with(|c| c.set(false));
            let after = ALLOCS.load(Ordering::Relaxed);
            assert_eq!(after - before, 0, "temperature {temperature} top_k {top_k}");
        }
    }
}
