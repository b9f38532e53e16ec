//! This machine's memory read bandwidth, measured the simple way: the sum of a buffer far
//! larger than the caches, on 1 and 2 threads of the kernels' own pool. It is the ceiling
//! that `benches/matvec.rs` (weights streamed once per token) is compared with.
//!
//! Run: `cargo bench -p hearth-kernels --bench bandwidth`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hearth_kernels::pool::ThreadPool;

/// XOR of every 64-bit word with eight independent accumulators, so that the loop is
/// limited by loads rather than by one dependency chain. A plain-Rust build vectorizes
/// only to SSE2 (16-byte loads), which on this machine reads about a third slower than
/// numpy's `sum`; [`sum`] therefore picks the widest loads the CPU has, so that the
/// ceiling we compare the kernels with is not set low.
fn sum_portable(x: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = x.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &v| a ^ v);
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a ^= v;
        }
    }
    acc.iter().fold(tail, |a, &v| a ^ v)
}

/// [`sum_portable`] with explicit 64-byte loads, four accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_avx512(x: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let chunks = x.chunks_exact(32);
    let tail = sum_portable(chunks.remainder());
    let mut acc = [_mm512_setzero_si512(); 4];
    for c in chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 32 words, so words 8k..8k+8 are in bounds; unaligned load.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * k).cast()) };
            *a = _mm512_xor_si512(*a, v);
        }
    }
    let v = _mm512_xor_si512(
        _mm512_xor_si512(acc[0], acc[1]),
        _mm512_xor_si512(acc[2], acc[3]),
    );
    let mut words = [0u64; 8];
    // SAFETY: `words` is 64 bytes; unaligned store.
    unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) };
    words.iter().fold(tail, |a, &w| a ^ w)
}

/// [`sum_portable`] with explicit 32-byte loads, four accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_avx2(x: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let chunks = x.chunks_exact(16);
    let tail = sum_portable(chunks.remainder());
    let mut acc = [_mm256_setzero_si256(); 4];
    for c in chunks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 16 words, so words 4k..4k+4 are in bounds; unaligned load.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * k).cast()) };
            *a = _mm256_xor_si256(*a, v);
        }
    }
    let v = _mm256_xor_si256(
        _mm256_xor_si256(acc[0], acc[1]),
        _mm256_xor_si256(acc[2], acc[3]),
    );
    let mut words = [0u64; 4];
    // SAFETY: `words` is 32 bytes; unaligned store.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) };
    words.iter().fold(tail, |a, &w| a ^ w)
}

fn sum(x: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { sum_avx512(x) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { sum_avx2(x) };
        }
    }
    sum_portable(x)
}

mod common;
use common::{buffer, dram_span, Pages};

fn bench_bandwidth(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_bandwidth");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let bytes = 2 * dram_span();
    g.throughput(Throughput::Bytes(bytes as u64));
    for pages in Pages::BOTH {
        let map = buffer(bytes, pages);
        let buf: &[u64] = bytemuck::cast_slice(&map[..]);
        for n in [1usize, 2] {
            let pool = ThreadPool::new(n).unwrap();
            let parts: Vec<std::sync::atomic::AtomicU64> = (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect();
            let id = BenchmarkId::new(format!("sum_{}", pages.name()), format!("{n}t"));
            g.bench_function(id, |b| {
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
    }
    g.finish();
}

criterion_group!(benches, bench_bandwidth);
criterion_main!(benches);
