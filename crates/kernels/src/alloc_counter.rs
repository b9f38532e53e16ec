//! A global allocator that counts allocations, for tests that prove a hot loop (a kernel
//! dispatch, a matrix product, a decode step) allocates nothing. Install it in a test
//! binary of its own, so that no other test allocates concurrently:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: hearth_kernels::alloc_counter::CountingAlloc =
//!     hearth_kernels::alloc_counter::CountingAlloc;
//! ```
//!
//! Not meant for production binaries: the counter is one shared atomic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// Forwards to the system allocator, counting every `alloc` and `realloc`.
pub struct CountingAlloc;

impl CountingAlloc {
    /// Allocations (and reallocations) made so far by the whole process.
    pub fn count() -> usize {
        ALLOCATIONS.load(Ordering::SeqCst)
    }
}

// SAFETY: every method forwards to the system allocator with the same arguments, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches no memory
// that is handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
