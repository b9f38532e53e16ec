//! Prompt-processing and decoding speed of a model, llama-bench style: a prompt of
//! `N_PROMPT` tokens in one batch (logits of the last row only), then `N_GEN` single-token
//! decode steps, each timed over the best of a few runs.
//!
//! ```text
//! cargo run --release -p hearth-models --example forward_bench -- MODEL.gguf [THREADS] [N_PROMPT] [N_GEN]
//! ```
//!
//! Token ids are arbitrary (a fixed pattern over the vocabulary): speed does not depend
//! on them. `PACK=1` packs the weights first, as `hearth serve` does when several
//! sequences may run (`Model::pack_for_batches`), `PACK=all` as it does where it can
//! spare the memory (`Model::pack_for_batches_within`); `RUNS=N` takes the best of `N` runs
//! (default 3), so that a profiler sees enough of them. `SEQS=N` splits the prompt into
//! `N` sequences of equal length (each with its last token's logits, as every prompt
//! here), as a server's step holds the prompts of clients that arrive together.

use std::time::Instant;

use hearth_gguf::{GgufFile, Residency};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, Model, Scratch, BLOCK_CELLS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: forward_bench MODEL.gguf [THREADS] [N_PROMPT] [N_GEN]")?;
    let n_threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let n_prompt: usize = args.get(3).map_or(Ok(512), |s| s.parse())?;
    let n_gen: usize = args.get(4).map_or(Ok(128), |s| s.parse())?;

    // Weights on huge pages, as `hearth run` and `hearth serve` load them.
    let file = GgufFile::open_with(path, Residency::HugePages)?;
    let t = Instant::now();
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
    let runs: usize = std::env::var("RUNS").map_or(Ok(3), |s| s.parse())?;
    let hp = model.hparams();
    eprintln!(
        "{} {:?}: n_embd {}, n_layer {}, n_vocab {} (loaded in {:.1} ms)",
        path,
        model.arch(),
        hp.n_embd,
        hp.n_layer,
        hp.n_vocab,
        t.elapsed().as_secs_f64() * 1e3
    );
    let pool = ThreadPool::new(n_threads)?;
    let mut scratch = Scratch::new(&model, n_prompt.min(512), 1)?;
    let tokens: Vec<u32> = (0..n_prompt)
        .map(|i| (1000 + 7919 * i as u64 % (hp.n_vocab as u64 - 1000)) as u32)
        .collect();
    let mut batch = Batch::with_capacity(n_prompt);

    let n_seqs: usize = std::env::var("SEQS").map_or(Ok(1), |s| s.parse())?;
    if n_seqs == 0 || !n_prompt.is_multiple_of(n_seqs) {
        return Err(format!("SEQS={n_seqs} does not divide {n_prompt} prompt tokens").into());
    }
    // Each sequence takes whole blocks, so the cache holds every one's rounded up.
    let per_seq = (n_prompt / n_seqs + n_gen).next_multiple_of(BLOCK_CELLS);
    let mut kv = KvCache::new(hp, n_seqs * per_seq)?;
    if n_seqs > 1 {
        scratch = Scratch::new(&model, n_prompt.min(512), n_seqs)?;
    }
    let mut best_pp = f64::INFINITY;
    let mut best_tg = f64::INFINITY;
    for _ in 0..runs {
        kv.clear();
        batch.clear();
        let mut seq = kv.new_sequence();
        if n_seqs == 1 {
            batch.push_seq(&tokens, 0, seq, false);
        } else {
            let len = n_prompt / n_seqs;
            let first = seq;
            for (i, chunk) in tokens.chunks(len).enumerate() {
                let s = if i == 0 { first } else { kv.new_sequence() };
                batch.push_seq(chunk, 0, s, false);
            }
            seq = first;
        }
        let t = Instant::now();
        model.forward(&pool, &mut kv, &mut scratch, &batch)?;
        best_pp = best_pp.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut token = 1000;
        for i in 0..n_gen {
            batch.clear();
            let pos = n_prompt / n_seqs + i;
            batch.push(token, pos as u32, seq, true);
            let logits = model.forward(&pool, &mut kv, &mut scratch, &batch)?;
            token =
                (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b }) as u32;
        }
        best_tg = best_tg.min(t.elapsed().as_secs_f64());
    }
    println!(
        "threads {n_threads}: pp{n_prompt} {:.1} tok/s, tg{n_gen} {:.1} tok/s",
        n_prompt as f64 / best_pp,
        n_gen as f64 / best_tg
    );
    Ok(())
}
