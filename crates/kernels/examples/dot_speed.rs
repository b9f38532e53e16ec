//! How fast each multi-row dot kernel (or, at levels without one, the single-row kernel
//! row by row) consumes weights when memory is not the limit: a
//! small matrix that stays in L2 is multiplied over and over, and the figure is GiB of
//! weights per CPU-second on one thread. Decoding streams weights from DRAM at roughly
//! 15–30 GiB/s per core; a kernel whose in-cache rate is not well above that is
//! compute-bound there and will not reach the bandwidth limit however the memory side is
//! tuned. `decode_shapes` (a bench) measures the DRAM-bound rate.
//!
//! With `--dram`, the matrix is repeated over 512 MiB of huge pages and read once per
//! pass instead (one thread, wall time), with the multi-row kernel and with the
//! single-row one (which leaves prefetching to the hardware).
//!
//! ```text
//! cargo run --release -p hearth-kernels --example dot_speed [--dram] [COLS] [ROWS]
//! ```

use hearth_kernels::dispatch::{DotFn, Kernels};
use hearth_kernels::quant::{activation_type, quantize_row, TensorType};

mod common;
use common::cpu_time;

/// Spread of the test values: real weights are this small, and at this scale Q6_K's
/// super-block scales are subnormal halves, as in real models (a unit scale would hide
/// what converting those costs).
const SCALE: f32 = 0.05;

fn main() {
    let dram = std::env::args().any(|a| a == "--dram");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("a number"))
        .collect();
    let n_cols = *args.first().unwrap_or(&1536);
    let n_rows = *args.get(1).unwrap_or(&64);
    let kernels = Kernels::get();
    println!("level {}", kernels.level().name());
    let x: Vec<f32> = (0..n_rows * n_cols)
        .map(|i| (((i * 7919) % 1999) as f32 / 999.0 - 1.0) * SCALE)
        .collect();
    for ty in [
        TensorType::Q4_0,
        TensorType::Q5_0,
        TensorType::Q8_0,
        TensorType::Q4_K,
        TensorType::Q5_K,
        TensorType::Q6_K,
        TensorType::IQ4_NL,
        TensorType::IQ4_XS,
    ] {
        let (Some(row_bytes), Some(dot)) = (ty.row_bytes(n_cols as u64), kernels.dot(ty)) else {
            continue;
        };
        let dot_rows = rows_fn(kernels, ty, dot);
        let row_bytes = row_bytes as usize;
        let mut w = vec![0u8; row_bytes * n_rows];
        for (r, row) in w.chunks_exact_mut(row_bytes).enumerate() {
            quantize_row(ty, &x[r * n_cols..][..n_cols], row).expect("quantize");
        }
        let act = activation_type(ty);
        let mut a = vec![0u8; act.row_bytes(n_cols as u64).expect("act") as usize];
        quantize_row(act, &x[..n_cols], &mut a).expect("quantize activations");
        if dram {
            dram_rates(ty, &w, row_bytes, &a);
            continue;
        }
        let mut out = vec![0f32; n_rows];
        // Enough repetitions for ~20 ms per pass.
        let reps = (256 << 20) / w.len().max(1) + 1;
        let mut best = f64::INFINITY;
        for _ in 0..7 {
            let t = cpu_time();
            for _ in 0..reps {
                dot_rows(std::hint::black_box(&w), row_bytes, &a, &mut out);
            }
            best = best.min((cpu_time() - t).as_secs_f64());
        }
        let gib = (w.len() * reps) as f64 / (1u64 << 30) as f64;
        println!(
            "{ty:>5} {n_rows}x{n_cols}: {:6.1} GiB/s per CPU-second in cache ({:.2} ns per block)",
            gib / best,
            best * 1e9 / (reps * w.len() / ty.block_bytes()) as f64
        );
    }
}

/// Reads `w` repeated over 512 MiB of huge pages with the multi-row and the single-row
/// kernel; prints the median GiB/s of each.
fn dram_rates(ty: TensorType, w: &[u8], row_bytes: usize, a: &[u8]) {
    let kernels = Kernels::get();
    let Some(dot) = kernels.dot(ty) else { return };
    let dot_rows = rows_fn(kernels, ty, dot);
    let copies = (512usize << 20) / w.len();
    let mut map = memmap2::MmapMut::map_anon(copies * w.len()).expect("map");
    let _ = map.advise(memmap2::Advice::HugePage);
    for c in map.chunks_exact_mut(w.len()) {
        c.copy_from_slice(w);
    }
    let mut out = vec![0f32; map.len() / row_bytes];
    let gib = map.len() as f64 / (1u64 << 30) as f64;
    let median = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..9)
            .map(|_| {
                let s = std::time::Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        gib / t[4]
    };
    let rows = median(&mut || dot_rows(&map, row_bytes, a, &mut out));
    let single = median(&mut || {
        for (o, r) in out.iter_mut().zip(map.chunks_exact(row_bytes)) {
            *o = dot(r, a);
        }
    });
    println!("{ty:>5} from DRAM: {rows:6.1} GiB/s multi-row, {single:6.1} single-row");
}

/// The level's multi-row kernel for `ty`, or (levels without one) the single-row kernel
/// row by row, as `matmul` falls back to.
fn rows_fn(
    kernels: &Kernels,
    ty: TensorType,
    dot: DotFn,
) -> impl Fn(&[u8], usize, &[u8], &mut [f32]) {
    let rows = kernels.dot_rows(ty);
    move |w, row_bytes, a, out| match rows {
        Some(f) => f(w, row_bytes, a, out),
        None => {
            for (o, r) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
                *o = dot(r, a);
            }
        }
    }
}
