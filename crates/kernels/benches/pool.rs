//! Dispatch latency of the persistent pool: the cost of `run` with an empty job, which is
//! what every matrix-vector product pays on top of its arithmetic (about 200 per token).

use criterion::{criterion_group, criterion_main, Criterion};
use hearth_kernels::pool::ThreadPool;

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_dispatch");
    g.sample_size(20);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for n in [1usize, 2] {
        let pool = ThreadPool::new(n).expect("spawn pool threads");
        g.bench_function(format!("{n}_threads"), |b| {
            b.iter(|| {
                pool.run(&|ith, nth| {
                    std::hint::black_box((ith, nth));
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
