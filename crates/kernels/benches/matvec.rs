//! Matrix-vector product throughput per weight format, in GB/s of weights streamed.
//!
//! Decoding one token multiplies every weight matrix by one activation vector, so its
//! speed is set by how fast the weights stream from memory. Each matrix here is 4096
//! columns wide and spans four times the largest cache (`common::dram_span`), so every
//! iteration reads it from DRAM. Compare the figures with `benches/bandwidth.rs` on the
//! same machine.
//!
//! The kernels are those of `Kernels::get()` (the CPU's best level, or `HEARTH_CPU`).
//! Run: `cargo bench -p hearth-kernels --bench matvec [-- Q4_K]`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth_kernels::matmul::{matvec, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};
use memmap2::MmapMut;

mod common;
use common::{buffer, dram_span, values, Pages};

const N_COLS: usize = 4096;

/// A `[n_rows, N_COLS]` matrix spanning at least [`dram_span`]: 64 distinct quantized
/// rows, repeated (quantizing hundreds of MiB of k-quants from scratch would take longer
/// than the bench).
fn matrix(ty: TensorType, pages: Pages) -> (usize, MmapMut) {
    let row_bytes = ty.row_bytes(N_COLS as u64).expect("4096 columns") as usize;
    let mut distinct = vec![0u8; 64 * row_bytes];
    for (i, row) in distinct.chunks_exact_mut(row_bytes).enumerate() {
        quantize_row(ty, &values(N_COLS, i as u64 + 1), row).expect("quantizable type");
    }
    let n_rows = dram_span().div_ceil(row_bytes).next_multiple_of(64);
    let mut data = buffer(n_rows * row_bytes, pages);
    for chunk in data.chunks_exact_mut(distinct.len()) {
        chunk.copy_from_slice(&distinct);
    }
    (n_rows, data)
}

fn bench_matvec(c: &mut Criterion) {
    use TensorType::*;
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    let x = values(N_COLS, 99);
    let mut g = c.benchmark_group("matvec");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, F16, BF16,
    ] {
        for pages in Pages::BOTH {
            let (n_rows, data) = matrix(ty, pages);
            let w = WeightMatrix::new(ty, n_rows, N_COLS, &data).expect("valid shape");
            let mut out = vec![0.0; n_rows];
            let mut scratch = MatmulScratch::new();
            g.throughput(Throughput::Bytes(data.len() as u64));
            for pool in &pools {
                let id = BenchmarkId::new(
                    format!("{}_{}", ty.name(), pages.name()),
                    format!("{}t", pool.n_threads()),
                );
                g.bench_function(id, |b| {
                    b.iter(|| matvec(pool, &w, &x, &mut out, &mut scratch).expect("valid shapes"))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_matvec);
criterion_main!(benches);
