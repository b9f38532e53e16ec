//! Multiply-adds per CPU-second of `matmul` for prompt-sized products, per format, on
//! one thread: thread CPU time, so a busy machine disturbs the figure less than wall
//! time would (the repo's wall-clock benchmarks are `hearth bench` and bench/).
//!
//! ```text
//! cargo run --release -p hearth-kernels --example gemm_speed [TOKENS] [ROWS] [COLS] [TYPES]
//! ```
//!
//! `TYPES` (e.g. `Q4_K,Q6_K`) limits the run to those formats, so that a profile of it
//! shows one format's kernel. Formats that pack (`matmul::packed`: Q8_0, Q5_0, Q4_K, Q6_K) are
//! also measured packed, as a server multiplies them.

use hearth_kernels::matmul::packed::{matmul_packed, PackedMatrix};
use hearth_kernels::matmul::{matmul, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

mod common;
use common::cpu_time;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Option<Vec<String>> = args
        .get(3)
        .map(|t| t.split(',').map(String::from).collect());
    let args: Vec<usize> = args
        .iter()
        .take(3)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n_tokens = *args.first().unwrap_or(&512);
    let n_rows = *args.get(1).unwrap_or(&2048);
    let n_cols = *args.get(2).unwrap_or(&2048);
    let pool = ThreadPool::new(1).expect("pool");
    let x: Vec<f32> = (0..n_tokens * n_cols)
        .map(|i| ((i * 7919) % 1999) as f32 / 999.0 - 1.0)
        .collect();
    for ty in [
        TensorType::Q4_0,
        TensorType::Q5_0,
        TensorType::Q8_0,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::F16,
        TensorType::BF16,
    ] {
        if only
            .as_ref()
            .is_some_and(|only| !only.contains(&ty.to_string()))
        {
            continue;
        }
        let Some(row_bytes) = ty.row_bytes(n_cols as u64) else {
            continue;
        };
        let row_bytes = row_bytes as usize;
        let mut data = vec![0u8; row_bytes * n_rows];
        for (r, row) in data.chunks_exact_mut(row_bytes).enumerate() {
            quantize_row(ty, &x[(r % n_tokens) * n_cols..][..n_cols], row).expect("quantize");
        }
        let w = WeightMatrix::new(ty, n_rows, n_cols, &data).expect("shape");
        let mut out = vec![0f32; n_tokens * n_rows];
        let mut scratch = MatmulScratch::new();
        matmul(&pool, &w, &x, n_tokens, &mut out, &mut scratch).expect("matmul");
        let best = best_cpu_s(|| {
            matmul(&pool, &w, &x, n_tokens, &mut out, &mut scratch).expect("matmul");
        });
        let macs = (n_tokens * n_rows * n_cols) as f64;
        report(&ty.to_string(), macs, best);
        if let Some(p) = PackedMatrix::pack(&w).expect("pack") {
            let best = best_cpu_s(|| {
                matmul_packed(&pool, &p, &x, n_tokens, &mut out, &mut scratch).expect("packed");
            });
            report(&format!("{ty} packed"), macs, best);
        }
    }
}

/// The least CPU time of five runs of `run`, in seconds.
fn best_cpu_s(mut run: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = cpu_time();
            run();
            (cpu_time() - t).as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(label: &str, macs: f64, seconds: f64) {
    println!(
        "{label}: {:.1} GMAC per CPU-second ({:.1} ms)",
        macs / seconds / 1e9,
        seconds * 1e3
    );
}
