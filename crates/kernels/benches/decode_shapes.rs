//! Matrix-vector products in the shapes of one decode step of Gemma 3 270M Q4_K_M (and
//! the Q6_K matrices of DeepSeek-R1-Distill-Qwen 1.5B Q4_K_M), in
//! GiB/s of weights streamed, on huge pages (as the CLI holds weights) and on 4 KiB ones.
//!
//! `benches/matvec.rs` measures 4096-wide rows; decoding small models multiplies much
//! narrower ones (640 columns: 20 Q8_0 blocks), where the per-row overhead of the row
//! loop (call, reduction, tail) weighs far more. Each shape is repeated until it spans
//! four times the largest cache (`common::dram_span`), so every pass reads from DRAM, and
//! the figure is the median of the passes (the machine this was tuned on is shared:
//! medians, not means).
//!
//! Run: `cargo bench -p hearth-kernels --bench decode_shapes [-- FILTER]`.

use std::time::Instant;

use hearth_kernels::matmul::{matvec, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

mod common;
use common::{buffer, dram_span, values, Pages};

/// Passes per shape and thread count.
const PASSES: usize = 15;

fn main() {
    use TensorType::*;
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // (type, rows, columns): the output head, then one layer's matrices.
    let shapes = [
        (Q8_0, 262_144, 640),
        (Q5_0, 2048, 640),
        (Q5_0, 1024, 640),
        (Q5_0, 256, 640),
        (Q8_0, 256, 640),
        (Q4_K, 640, 1024),
        (Q6_K, 640, 2048),
        // DeepSeek-R1-Distill-Qwen 1.5B's Q6_K matrices (Q4_K_M): the output head and
        // one layer's ffn_down.
        (Q6_K, 151_936, 1536),
        (Q6_K, 1536, 8960),
        // Its Q4_K matrices: ffn_gate/ffn_up (8960×1536) and ffn_down's Q4_K layers
        // (1536×8960); the 7B's ffn_up (18944×3584).
        (Q4_K, 8960, 1536),
        (Q4_K, 1536, 8960),
        (Q4_K, 18_944, 3584),
    ];
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    for ((ty, n_rows, n_cols), pages) in
        shapes.into_iter().flat_map(|s| Pages::BOTH.map(|p| (s, p)))
    {
        let name = format!("{}_{n_rows}x{n_cols}_{}", ty.name(), pages.name());
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let bytes = n_rows * row_bytes;
        let copies = dram_span().div_ceil(bytes);
        let mut data = buffer(copies * bytes, pages);
        let mut row = vec![0u8; row_bytes];
        for (i, dst) in data.chunks_exact_mut(row_bytes).enumerate().take(4096) {
            quantize_row(ty, &values(n_cols, i as u64 + 1), &mut row).unwrap();
            dst.copy_from_slice(&row);
        }
        let first: Vec<u8> = data[..4096.min(copies * n_rows) * row_bytes].to_vec();
        for chunk in data.chunks_exact_mut(first.len()) {
            chunk.copy_from_slice(&first);
        }
        let x = values(n_cols, 99);
        let mut out = vec![0.0; n_rows];
        let mut scratch = MatmulScratch::new();
        for pool in &pools {
            let mut times = Vec::with_capacity(PASSES);
            for _ in 0..PASSES {
                let t = Instant::now();
                for m in data.chunks_exact(bytes) {
                    let w = WeightMatrix::new(ty, n_rows, n_cols, m).unwrap();
                    matvec(pool, &w, &x, &mut out, &mut scratch).unwrap();
                }
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let gib = (copies * bytes) as f64 / (1u64 << 30) as f64;
            println!(
                "{name:<23} {}t {:6.2} GiB/s (median; best {:6.2})",
                pool.n_threads(),
                gib / times[PASSES / 2],
                gib / times[0]
            );
        }
    }
}
