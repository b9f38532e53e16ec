//! This machine's memory read bandwidth, measured the simple way: the sum of a buffer far
//! larger than the caches, on 1 and 2 threads of the kernels' own pool. It is the ceiling
//! that `benches/matvec.rs` (weights streamed once per token) is compared with.
//!
//! Run: `cargo bench -p hearth-kernels --bench bandwidth`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth_kernels::pool::ThreadPool;

/// Buffer size: 8× this machine's 32 MiB L3.
const BYTES: usize = 256 << 20;

/// Wrapping sum with eight independent accumulators, so that the loop is limited by loads
/// rather than by the latency of one add chain (and vectorizes with baseline SSE2).
fn sum(x: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = x.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &v| a.wrapping_add(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    acc.iter().fold(tail, |a, &v| a.wrapping_add(v))
}

fn bench_bandwidth(c: &mut Criterion) {
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64 * 0x9E37_79B9).collect();
    let mut g = c.benchmark_group("read_bandwidth");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(BYTES as u64));
    for n in [1usize, 2] {
        let pool = ThreadPool::new(n).unwrap();
        let parts: Vec<std::sync::atomic::AtomicU64> = (0..n)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        g.bench_function(BenchmarkId::new("sum", format!("{n}t")), |b| {
            b.iter(|| {
                pool.run(&|ith, nth| {
                    let len = buf.len();
                    let s = sum(&buf[len * ith / nth..len * (ith + 1) / nth]);
                    parts[ith].store(s, std::sync::atomic::Ordering::Relaxed);
                });
                std::hint::black_box(&parts);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_bandwidth);
criterion_main!(benches);
