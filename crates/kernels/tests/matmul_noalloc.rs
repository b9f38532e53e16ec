//! Once its scratch has grown, a product allocates nothing, on any thread: the decode loop
//! can call it ~200 times per token without touching the allocator. A counting global
//! allocator sees every allocation in this test binary, which holds this one test only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_kernels::matmul::{matmul, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

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
fn products_do_not_allocate_after_warm_up() {
    let pool = ThreadPool::new(2).unwrap();
    let (n_rows, n_cols) = (256, 1024);
    let x: Vec<f32> = (0..16 * n_cols)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    let mut out = vec![0.0; 16 * n_rows];
    for ty in [
        TensorType::Q4_K,
        TensorType::Q4_1,
        TensorType::Q8_0,
        TensorType::F16,
    ] {
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let mut data = vec![0u8; n_rows * row_bytes];
        for row in data.chunks_exact_mut(row_bytes) {
            quantize_row(ty, &x[..n_cols], row).unwrap();
        }
        let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
        let mut scratch = MatmulScratch::new();
        // Warm-up: grows the scratch to the largest call (16 tokens) and builds the
        // kernel table.
        matmul(&pool, &w, &x, 16, &mut out, &mut scratch).unwrap();
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..50 {
            for n_tokens in [1, 4, 16] {
                let (x, out) = (&x[..n_tokens * n_cols], &mut out[..n_tokens * n_rows]);
                matmul(&pool, &w, x, n_tokens, out, &mut scratch).unwrap();
            }
        }
        assert_eq!(
            ALLOCS.load(Ordering::SeqCst) - before,
            0,
            "{ty}: products allocated"
        );
    }
}
