//! Decoding speed with several sequences in each step (continuous batching's steady
//! state): `B` sequences, each with a short prompt, then `N_GEN` steps that each carry one
//! token of every sequence. Prints the step time and the aggregate tokens/s for each `B`,
//! best of three runs, so the cost of a wider batch can be read against one sequence's.
//! Then mixed steps: 3 decode tokens plus a prompt chunk of `C` tokens of another
//! sequence, the chunk through the row path (as the scheduler runs it beside decoding
//! streams) and through the GEMM (what that would cost), median of 9. `DECODE_ONLY=1`
//! skips the mixed steps, so that a profiler sees the decode steps alone; `PACK=1`
//! packs the weights first, as `hearth serve` does when several sequences may run
//! (`Model::pack_for_batches`), and `PACK=all` as it does where it can spare the memory
//! (`Model::pack_for_batches_within`).
//!
//! ```text
//! cargo run --release -p hearth-models --example batched_decode -- MODEL.gguf [THREADS] [N_GEN] [B...]
//! ```

use std::time::Instant;

use hearth_gguf::{GgufFile, Residency};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, KvTypes, Model, Scratch};

const N_PROMPT: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: batched_decode MODEL.gguf [THREADS] [N_GEN] [B...]")?;
    let n_threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let n_gen: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let widths: Vec<usize> = if args.len() > 4 {
        args[4..]
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    } else {
        vec![1, 2, 4, 8]
    };
    let file = GgufFile::open_with(path, Residency::HugePages)?;
    let mut model = Model::load(&file)?;
    if std::env::var_os("PACK").is_some() {
        // `PACK=all`: whatever packs, however much memory (as `serve` does where it can
        // spare the memory); any other value: as the share rule alone allows.
        let spare = if std::env::var("PACK").as_deref() == Ok("all") {
            u64::MAX
        } else {
            0
        };
        eprintln!("packed: {} bytes", model.pack_for_batches_within(spare)?);
    }
    let hp = model.hparams();
    let pool = ThreadPool::new(n_threads)?;
    let max_b = widths.iter().copied().max().unwrap_or(1);
    let mut kv = KvCache::with_types(hp, max_b * (N_PROMPT + n_gen + 16), KvTypes::default())?;
    let mut scratch = Scratch::new(&model, 512, max_b)?;
    let mut batch = Batch::with_capacity(512);
    for &b in &widths {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            kv.clear();
            let seqs: Vec<_> = (0..b).map(|_| kv.new_sequence()).collect();
            for (i, &s) in seqs.iter().enumerate() {
                let tokens: Vec<u32> = (0..N_PROMPT)
                    .map(|j| {
                        (1000 + 7919 * (i * N_PROMPT + j) as u64 % (hp.n_vocab as u64 - 1000))
                            as u32
                    })
                    .collect();
                batch.clear();
                batch.push_seq(&tokens, 0, s, false);
                model.forward(&pool, &mut kv, &mut scratch, &batch)?;
            }
            let t = Instant::now();
            for step in 0..n_gen {
                batch.clear();
                for (i, &s) in seqs.iter().enumerate() {
                    batch.push(
                        (1000 + 31 * (step + i)) as u32,
                        (N_PROMPT + step) as u32,
                        s,
                        true,
                    );
                }
                model.forward(&pool, &mut kv, &mut scratch, &batch)?;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "B={b}: step {:.2} ms, aggregate {:.1} tok/s",
            best / n_gen as f64 * 1e3,
            (b * n_gen) as f64 / best
        );
    }
    if std::env::var_os("DECODE_ONLY").is_some() {
        return Ok(());
    }
    // Mixed steps: 3 decoding sequences and one prompt chunk.
    for gemm in [false, true] {
        for chunk in [0usize, 1, 4, 8, 16, 32, 64] {
            let mut times = Vec::new();
            for _ in 0..9 {
                kv.clear();
                let seqs: Vec<_> = (0..3).map(|_| kv.new_sequence()).collect();
                let newcomer = kv.new_sequence();
                for &s in &seqs {
                    batch.clear();
                    batch.push(1000, 0, s, true);
                    model.forward(&pool, &mut kv, &mut scratch, &batch)?;
                }
                batch.clear();
                for &s in &seqs {
                    batch.push(1001, 1, s, true);
                }
                for j in 0..chunk {
                    batch.push((2000 + j) as u32, j as u32, newcomer, j + 1 == chunk);
                }
                batch.set_gemm_from(if gemm { 3 } else { batch.len() });
                let t = Instant::now();
                model.forward(&pool, &mut kv, &mut scratch, &batch)?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let path = if gemm { "GEMM" } else { "rows" };
            println!(
                "3 decode + {chunk} prompt ({path}): step {:.2} ms",
                times[4] * 1e3
            );
        }
    }
    Ok(())
}
