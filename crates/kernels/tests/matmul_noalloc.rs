//! Once its scratch has grown, a product allocates nothing, on any thread: the decode loop
//! can call it ~200 times per token without touching the allocator. A counting global
//! allocator sees every allocation in this test binary, which holds this one test only.

use hearth_kernels::alloc_counter::CountingAlloc;
use hearth_kernels::matmul::packed::{matmul_rows_packed, PackedMatrix};
use hearth_kernels::matmul::{matmul, GemmTokens, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// No test harness (`harness = false` in Cargo.toml): libtest's own threads allocate now
/// and then (a qemu run caught one during a dispatch), and the counter is process-wide.
fn main() {
    products_do_not_allocate_after_warm_up();
    packed_products_do_not_allocate_after_warm_up();
    println!("matmul_noalloc: ok");
}

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
        let before = CountingAlloc::count();
        for _ in 0..50 {
            for n_tokens in [1, 4, 16] {
                let (x, out) = (&x[..n_tokens * n_cols], &mut out[..n_tokens * n_rows]);
                matmul(&pool, &w, x, n_tokens, out, &mut scratch).unwrap();
            }
        }
        assert_eq!(
            CountingAlloc::count() - before,
            0,
            "{ty}: products allocated"
        );
    }
}

/// The same for packed matrices (`matmul::packed`), two of one input in one call, with
/// the tokens split between the packed form (the first 4) and the GEMM (the rest).
fn packed_products_do_not_allocate_after_warm_up() {
    let pool = ThreadPool::new(2).unwrap();
    let (n_rows, n_cols) = (256, 1024);
    let x: Vec<f32> = (0..16 * n_cols)
        .map(|i| (i % 13) as f32 * 0.1 - 0.6)
        .collect();
    let (mut a, mut b) = (vec![0.0; 16 * n_rows], vec![0.0; 16 * n_rows]);
    for ty in [TensorType::Q5_0, TensorType::Q8_0] {
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let mut data = vec![0u8; n_rows * row_bytes];
        for row in data.chunks_exact_mut(row_bytes) {
            quantize_row(ty, &x[..n_cols], row).unwrap();
        }
        let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
        let p = PackedMatrix::pack(&w).unwrap().unwrap();
        let mut scratch = MatmulScratch::new();
        scratch.gemm_tokens = GemmTokens::From(4);
        let mut run = |n_tokens: usize, scratch: &mut MatmulScratch| {
            let x = &x[..n_tokens * n_cols];
            let (a, b) = (&mut a[..n_tokens * n_rows], &mut b[..n_tokens * n_rows]);
            let list = &mut [(&w, &p, a), (&w, &p, b)];
            matmul_rows_packed(&pool, list, x, n_tokens, scratch).unwrap();
        };
        run(16, &mut scratch);
        let before = CountingAlloc::count();
        for _ in 0..50 {
            for n_tokens in [1, 4, 16] {
                run(n_tokens, &mut scratch);
            }
        }
        assert_eq!(
            CountingAlloc::count() - before,
            0,
            "{ty}: packed products allocated"
        );
    }
}
