//! How long one packed product (`matmul::packed`) takes at 1, 2, 4 and 8 tokens on the
//! pool's threads, wall time: the output head of a decoding step that holds that many
//! sequences. By default the matrix is Gemma 3 270M's head (262,144 × 640, Q8_0,
//! 178 MB), so every call streams it from DRAM; a small matrix (`ROWS=1024`) stays in
//! L2 and shows the arithmetic alone.
//!
//! ```text
//! [TYPE=q8_0|q5_0|q4_k|q6_k] [ROWS=262144] [COLS=640] [THREADS=2] [REPS=50] \
//!   cargo run --release -p hearth-kernels --example packed_speed
//! ```

use std::time::Instant;

use hearth_kernels::matmul::packed::{matmul_packed, PackedMatrix};
use hearth_kernels::matmul::{MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let ty = match std::env::var("TYPE").as_deref().unwrap_or("q8_0") {
        "q8_0" => TensorType::Q8_0,
        "q5_0" => TensorType::Q5_0,
        "q4_k" => TensorType::Q4_K,
        "q6_k" => TensorType::Q6_K,
        other => panic!("TYPE {other}: one of q8_0, q5_0, q4_k, q6_k"),
    };
    let (n_rows, n_cols) = (env("ROWS", 262_144), env("COLS", 640));
    let (threads, reps) = (env("THREADS", 2), env("REPS", 50).max(1));
    let row_bytes = ty
        .row_bytes(n_cols as u64)
        .expect("a whole number of blocks") as usize;
    let mut data = vec![0u8; n_rows * row_bytes];
    let mut row = vec![0f32; n_cols];
    for (r, dst) in data.chunks_exact_mut(row_bytes).enumerate() {
        for (i, v) in row.iter_mut().enumerate() {
            *v = (((r * 31 + i * 7919) % 1999) as f32 / 999.0 - 1.0) * 0.05;
        }
        quantize_row(ty, &row, dst).expect("quantizes");
    }
    let w = WeightMatrix::new(ty, n_rows, n_cols, &data).expect("a matrix");
    let p = PackedMatrix::pack(&w)
        .expect("memory for the packed copy")
        .expect("a format and shape that pack");
    drop(data);
    let pool = ThreadPool::new(threads).expect("a pool");
    let mut scratch = MatmulScratch::new();
    let x: Vec<f32> = (0..8 * n_cols)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    let mut out = vec![0f32; 8 * n_rows];
    println!(
        "{ty} {n_rows} x {n_cols}, {:.1} MB packed, {threads} threads",
        p.bytes() as f64 / 1e6
    );
    // The token counts take turns, so that a change in the machine's memory bandwidth
    // (a shared host's neighbours) falls on all of them alike and their ratios hold.
    let counts = [1, 2, 4, 8];
    let mut times = vec![Vec::with_capacity(reps); counts.len()];
    for rep in 0..reps + 2 {
        for (i, &n_tokens) in counts.iter().enumerate() {
            let (x, out) = (&x[..n_tokens * n_cols], &mut out[..n_tokens * n_rows]);
            let t = Instant::now();
            matmul_packed(&pool, &p, x, n_tokens, out, &mut scratch).expect("a product");
            if rep >= 2 {
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let one = median(&mut times[0]);
    for (n_tokens, t) in counts.iter().zip(&mut times) {
        let m = median(t);
        println!(
            "{n_tokens} tokens: median {m:.3} ms, best {:.3} ms, {:.2}x one token's",
            t[0],
            m / one
        );
    }
}
