//! Matrix products of a few tokens (continuous batching's decode steps: 1–8 sequences)
//! in the shapes of Gemma 3 270M Q4_K_M and a Qwen-style Q4_K_M layer, on one thread:
//! the time per token and row, so the cost of a wider batch reads against one token's.
//!
//! Q8_0 and Q5_0 shapes are measured twice: rows as stored, and packed sixteen at a
//! time (`matmul::packed`, as a server packs the output head and Q5_0 layers).
//!
//! Two regimes per shape: weights streamed from DRAM (each pass walks copies spanning four
//! times the largest cache, as decoding does) and weights in L2 (one copy of at most
//! 512 KiB, the kernels' compute cost alone). Figures are medians of the passes (shared
//! machines).
//!
//! Run: `cargo bench -p hearth-kernels --bench batch_shapes [-- FILTER]`; set
//! `HEARTH_CPU` to compare levels.

use std::time::Instant;

use hearth_kernels::matmul::packed::{matmul_packed, PackedMatrix};
use hearth_kernels::matmul::{matmul, MatmulScratch, WeightMatrix};
use hearth_kernels::pool::ThreadPool;
use hearth_kernels::quant::{quantize_row, TensorType};

// Shared with benches that measure both page kinds; this one uses huge pages only.
#[allow(dead_code)]
mod common;
use common::{buffer, dram_span, values, Pages};

/// Passes per shape and token count.
const PASSES: usize = 9;

fn main() {
    use TensorType::*;
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let shapes = [
        (Q8_0, 262_144, 640),
        (Q5_0, 2048, 640),
        (Q8_0, 2048, 640),
        (Q4_K, 640, 1024),
        (Q6_K, 640, 2048),
        (Q4_K, 8960, 1536),
        (Q6_K, 1536, 8960),
        (Q4_0, 2048, 640),
        (IQ4_NL, 2048, 640),
        (Q5_K, 2048, 1024),
    ];
    let pool = ThreadPool::new(1).unwrap();
    for (ty, n_rows, n_cols) in shapes {
        let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
        for (regime, max_bytes, min_total) in
            [("dram", usize::MAX, dram_span()), ("l2", 512 << 10, 0)]
        {
            let name = format!("{}_{n_rows}x{n_cols}_{regime}", ty.name());
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let rows = n_rows.min(max_bytes / row_bytes);
            let m_bytes = rows * row_bytes;
            let copies = min_total.div_ceil(m_bytes).max(1);
            let mut data = buffer(copies * m_bytes, Pages::Huge);
            let mut row = vec![0u8; row_bytes];
            for (i, dst) in data.chunks_exact_mut(row_bytes).enumerate() {
                if i < 1024 {
                    quantize_row(ty, &values(n_cols, i as u64 + 1), &mut row).unwrap();
                }
                dst.copy_from_slice(&row);
            }
            let x = values(8 * n_cols, 99);
            let mut out = vec![0.0; 8 * rows];
            let mut scratch = MatmulScratch::new();
            // Q8_0 and Q5_0 also packed sixteen rows at a time (matmul::packed), as a
            // model packs them for batched decoding.
            let packed: Vec<PackedMatrix> = data
                .chunks_exact(m_bytes)
                .filter_map(|m| {
                    PackedMatrix::pack(&WeightMatrix::new(ty, rows, n_cols, m).unwrap()).unwrap()
                })
                .collect();
            for layout in ["rows", "packed"] {
                if layout == "packed" && packed.is_empty() {
                    continue;
                }
                let mut line = format!("{name:<26}{layout:>7}");
                let mut base = 0.0;
                for n_tokens in [1, 2, 4, 8] {
                    let reps = if regime == "l2" { 64 } else { 1 };
                    let mut times = Vec::with_capacity(PASSES);
                    for _ in 0..PASSES {
                        let t = Instant::now();
                        for _ in 0..reps {
                            let (x, out) = (&x[..n_tokens * n_cols], &mut out[..n_tokens * rows]);
                            if layout == "packed" {
                                for p in &packed {
                                    matmul_packed(&pool, p, x, n_tokens, out, &mut scratch)
                                        .unwrap();
                                }
                                continue;
                            }
                            for m in data.chunks_exact(m_bytes) {
                                let w = WeightMatrix::new(ty, rows, n_cols, m).unwrap();
                                matmul(&pool, &w, x, n_tokens, out, &mut scratch).unwrap();
                            }
                        }
                        times.push(t.elapsed().as_secs_f64() / (reps * copies) as f64);
                    }
                    times.sort_by(f64::total_cmp);
                    let per_call = times[PASSES / 2];
                    if n_tokens == 1 {
                        base = per_call;
                    }
                    line += &format!(
                        " T={n_tokens}: {:7.1} us ({:4.2}x)",
                        per_call * 1e6,
                        per_call / base
                    );
                }
                println!("{line}");
            }
        }
    }
}
