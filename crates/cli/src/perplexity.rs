//! `hearth perplexity MODEL -f FILE`: the perplexity of a model on a text, computed the
//! way llama.cpp's `llama-perplexity` computes it, so the two numbers can be compared.
//!
//! As in llama.cpp's `tools/perplexity/perplexity.cpp` (`perplexity()`): the whole text is
//! tokenized once with BOS (special-token text not parsed), cut into `n_chunk = n_tokens /
//! n_ctx` chunks of `n_ctx` tokens (the rest is dropped; at least two chunks' worth is
//! required), and each chunk is evaluated from an empty cache with its first token
//! replaced by BOS (when the model adds BOS). Only the second half of each chunk is
//! scored: the logits at positions `first = n_ctx / 2` through `n_ctx - 2` predict the
//! tokens after them, so every scored token has at least `n_ctx / 2` tokens of context.
//! After each chunk the running perplexity is printed as `[1]12.3456,[2]...`; the last line
//! is `PPL = X +/- E`, E being the standard error as llama.cpp prints it.
//!
//! With `-b` below `-c`, a chunk goes through the model in several calls; with `-b` a
//! multiple of `-c`, that many chunks go through together as separate sequences.
//! Neither changes the result beyond float rounding.
//!
//! `--dump-logprobs FILE` also writes, for every scored position, the target token's
//! log-probability, the logsumexp, the entropy and the top-20 log-probabilities, in the
//! fidelity format `HFTOPK01` (`tests/fixtures/fidelity/topk_format.py`), for comparing
//! Hearth's distributions with a reference's position by position.
//!
//! `--decode-path` scores every position the way `serve` computes a decoding token
//! instead of through the prompt GEMM: the weights packed as `serve` packs them when
//! several sequences may run (`Model::pack_for_batches`), every product through the row
//! kernels. Those round differently from the GEMM, so CI checks their fidelity too.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, Model, Scratch};
use hearth_tokenizer::Tokenizer;

use crate::run::{open_model_with, threads};

/// Tokens per pass through the layers (llama.cpp's default `n_ubatch`).
const UBATCH: usize = 512;

/// The arguments of `hearth perplexity`.
#[derive(Debug, clap::Args)]
pub struct PerplexityArgs {
    /// The GGUF model file, or a stored model's name (see `hearth list`).
    pub model: PathBuf,
    /// The text to score (UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx: usize,
    /// Tokens per forward call: below the chunk size, a chunk takes several calls; a
    /// multiple of it runs that many chunks at once (default: the chunk size).
    #[arg(short = 'b', long = "batch-size")]
    pub batch: Option<usize>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Score only the first N chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Also write every scored position's top-20 log-probabilities to FILE (fidelity
    /// format HFTOPK01).
    #[arg(long, value_name = "FILE")]
    pub dump_logprobs: Option<PathBuf>,
    /// Keep the model file mapped instead of copying it onto huge pages.
    #[arg(long)]
    pub mmap: bool,
    /// Score as `serve` computes decoding tokens: the weights packed as it packs them,
    /// every product through the row kernels instead of the prompt GEMM (slower).
    #[arg(long)]
    pub decode_path: bool,
    #[command(flatten)]
    pub cache: crate::run::CacheTypeArgs,
}

/// Runs `hearth perplexity`.
pub fn run(mut args: PerplexityArgs) -> anyhow::Result<()> {
    args.model = crate::store::resolve(&args.model)?;
    let n_ctx = args.ctx;
    if n_ctx < 4 {
        bail!("-c must be at least 4 (half of each chunk is scored), got {n_ctx}");
    }
    let n_batch = args.batch.unwrap_or(n_ctx);
    if n_batch == 0 || (n_batch > n_ctx && !n_batch.is_multiple_of(n_ctx)) {
        bail!("-b must be below -c ({n_ctx}) or a multiple of it, got {n_batch}");
    }
    let n_threads = threads(args.threads)?;
    let text = read_text(&args.file)?;

    let file = open_model_with(&args.model, args.mmap)?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: cannot build the tokenizer", args.model.display()))?;
    let mut model = Model::load(&file)
        .with_context(|| format!("{}: cannot load the model", args.model.display()))?;
    if args.decode_path {
        model
            .pack_for_batches()
            .with_context(|| format!("{}: cannot pack the weights", args.model.display()))?;
    }
    let model = model;
    let hp = model.hparams();
    let n_vocab = hp.n_vocab;
    if n_ctx > hp.n_ctx_train {
        eprintln!(
            "hearth: warning: context {n_ctx} is longer than the model was trained on ({})",
            hp.n_ctx_train
        );
    }

    let t_tok = Instant::now();
    let tokens = tok
        .encode(&text, true, false)
        .context("cannot tokenize the text")?;
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{} is {} tokens; perplexity with a context of {n_ctx} needs at least {}",
            args.file.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let bos = match (tok.add_bos(), tok.special_tokens().bos) {
        (true, Some(bos)) => Some(bos),
        _ => None,
    };
    let n_chunk_max = tokens.len() / n_ctx;
    let n_chunk = args.chunks.map_or(n_chunk_max, |n| n.min(n_chunk_max));
    if n_chunk == 0 {
        bail!("--chunks must be at least 1");
    }
    let first = n_ctx / 2;
    let n_scored = n_ctx - 1 - first;
    let n_seq = (n_batch / n_ctx).max(1);
    let n_ubatch = UBATCH.min(n_batch);
    // Rows of logits per forward call: the scored positions among the call's tokens.
    let rows_per_call = if n_batch >= n_ctx {
        n_seq * n_scored
    } else {
        n_batch.min(n_scored)
    };
    eprintln!(
        "hearth: {} tokens ({:.2} s to tokenize); {n_chunk} chunks of {n_ctx}, batch {n_batch}, {n_threads} threads",
        tokens.len(),
        t_tok.elapsed().as_secs_f64()
    );

    let pool = ThreadPool::new(n_threads).context("cannot start the compute threads")?;
    let mut kv = KvCache::with_types(hp, n_seq * n_ctx, args.cache.types())
        .context("cannot create the KV cache")?;
    let mut scratch = Scratch::new(&model, n_ubatch, rows_per_call)
        .context("cannot allocate the scratch buffers")?;
    let mut dump = match &args.dump_logprobs {
        Some(path) => Some(TopkWriter::create(path, n_vocab, n_ctx, n_chunk, first)?),
        None => None,
    };
    let k = dump.as_ref().map_or(0, |d| d.k);
    let slots: Vec<Mutex<RowOut>> = (0..rows_per_call)
        .map(|_| Mutex::new(RowOut::new(k)))
        .collect();

    let mut nll = Nll::default();
    let mut stdout = std::io::stdout().lock();
    let mut batch = Batch::with_capacity(n_batch.max(n_ctx));
    // The rows of a call, in output order: (the row's target token).
    let mut targets: Vec<u32> = Vec::with_capacity(rows_per_call);
    let t_start = Instant::now();
    for i in (0..n_chunk).step_by(n_seq) {
        let n_seq_batch = n_seq.min(n_chunk - i);
        kv.clear();
        let seqs: Vec<_> = (0..n_seq_batch).map(|_| kv.new_sequence()).collect();
        for j in (0..n_ctx).step_by(n_batch.min(n_ctx)) {
            let size = n_batch.min(n_ctx - j);
            batch.clear();
            targets.clear();
            for (s, &seq) in seqs.iter().enumerate() {
                let chunk = &tokens[(i + s) * n_ctx..(i + s + 1) * n_ctx];
                for p in j..j + size {
                    let token = match (p, bos) {
                        (0, Some(bos)) => bos,
                        _ => chunk[p],
                    };
                    let scored = (first..n_ctx - 1).contains(&p);
                    batch.push(token, p as u32, seq, scored);
                    if scored {
                        targets.push(chunk[p + 1]);
                    }
                }
            }
            if args.decode_path {
                // Every token of the call on the row path, as decoding tokens take it.
                batch.set_gemm_from(batch.len());
            }
            let logits = model
                .forward(&pool, &mut kv, &mut scratch, &batch)
                .with_context(|| format!("chunk {}: the forward pass failed", i + 1))?;
            score_rows(&pool, logits, n_vocab, k, &targets, &slots[..targets.len()]);
            for slot in &slots[..targets.len()] {
                let row = slot.lock().unwrap_or_else(|e| e.into_inner());
                nll.add(row.scored.target_logprob);
                if let Some(d) = &mut dump {
                    d.out
                        .write_all(&row.record)
                        .context("cannot write the logprob dump")?;
                }
                // Rows come chunk by chunk (a call holds either part of one chunk or whole
                // chunks), so a chunk is done after every `n_scored` rows: print the
                // running value then, as llama-perplexity does.
                if nll.count.is_multiple_of(n_scored) {
                    write!(stdout, "[{}]{:.4},", nll.count / n_scored, nll.ppl())?;
                    stdout.flush()?;
                }
            }
        }
        if i == 0 {
            let t = t_start.elapsed().as_secs_f64();
            eprintln!(
                "hearth: {:.2} s per pass of {n_seq_batch} chunk(s); about {:.1} min in all",
                t,
                t * n_chunk.div_ceil(n_seq) as f64 / 60.0
            );
        }
    }
    writeln!(stdout)?;
    match nll.ppl_error() {
        Some(err) => writeln!(stdout, "PPL = {:.4} +/- {:.5}", nll.ppl(), err)?,
        None => writeln!(stdout, "PPL = {:.4}", nll.ppl())?,
    }
    if let Some(d) = dump {
        d.out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .context("cannot write the logprob dump")?;
    }
    eprintln!(
        "hearth: {} positions scored in {:.2} s",
        nll.count,
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// One scored row: its statistics and, when dumping, its encoded record.
struct RowOut {
    scored: Scored,
    record: Vec<u8>,
    top: Vec<(u32, f32)>,
}

impl RowOut {
    fn new(k: usize) -> RowOut {
        RowOut {
            scored: Scored {
                target_logprob: 0.0,
                lse: 0.0,
                entropy: 0.0,
            },
            record: Vec::with_capacity(16 + 8 * k),
            top: Vec::with_capacity(k + 1),
        }
    }
}

/// Scores every row of `logits` (`[targets.len(), n_vocab]`) on the pool, encoding a dump
/// record with the top `k` when `k > 0`. Parts claim rows one at a time, so the split
/// adapts to however many parts the pool runs.
fn score_rows(
    pool: &ThreadPool,
    logits: &[f32],
    n_vocab: usize,
    k: usize,
    targets: &[u32],
    slots: &[Mutex<RowOut>],
) {
    let next = AtomicUsize::new(0);
    pool.run(&|_, _| loop {
        let r = next.fetch_add(1, Ordering::Relaxed);
        if r >= targets.len() {
            break;
        }
        let row = &logits[r * n_vocab..(r + 1) * n_vocab];
        let mut out = slots[r].lock().unwrap_or_else(|e| e.into_inner());
        let out = &mut *out;
        out.scored = score_row(row, targets[r]);
        if k > 0 {
            encode_record(
                row,
                targets[r],
                &out.scored,
                k,
                &mut out.top,
                &mut out.record,
            );
        }
    });
}

/// What one predicted distribution says about the token that followed.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scored {
    /// log-softmax of the actual next token (natural log).
    target_logprob: f64,
    /// logsumexp of the raw logits.
    lse: f64,
    /// Entropy of the whole distribution, nats.
    entropy: f64,
}

/// Scores one row of logits against `target`. Math in f64: the fidelity references are
/// computed in float64 from their logits, so differences measure the model, not this.
/// llama.cpp sums `expf` into a double; the two agree to about 1e-7 relative.
fn score_row(logits: &[f32], target: u32) -> Scored {
    let max = f64::from(logits.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let mut sum = 0.0f64;
    // Σ e_i (x_i - max), for the entropy: H = ln Σe - Σ e (x - max) / Σe.
    let mut weighted = 0.0f64;
    for &l in logits {
        let d = f64::from(l) - max;
        let e = d.exp();
        // A -inf logit has e == 0 and would make 0 * -inf = NaN.
        if e > 0.0 {
            sum += e;
            weighted += e * d;
        }
    }
    let log_sum = sum.ln();
    let lse = max + log_sum;
    Scored {
        target_logprob: f64::from(logits[target as usize]) - lse,
        lse,
        entropy: log_sum - weighted / sum,
    }
}

/// The `k` largest logits of a row as `(id, logit)`, largest first, lower id first on a
/// tie: one pass keeping a small sorted buffer (k is 20; the row is the vocabulary).
fn top_k_row(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (id, &l) in logits.iter().enumerate() {
        // An equal logit has a larger id than every kept one, so it ranks after them.
        if out.len() == k && l <= out[k - 1].1 {
            continue;
        }
        let at = out.partition_point(|&(_, kept)| kept >= l);
        if out.len() == k {
            out.pop();
        }
        out.insert(at, (id as u32, l));
    }
}

/// One `HFTOPK01` record: target id and log-probability, logsumexp, entropy, then the
/// top-k ids and their log-probabilities, little-endian.
fn encode_record(
    logits: &[f32],
    target: u32,
    scored: &Scored,
    k: usize,
    top: &mut Vec<(u32, f32)>,
    out: &mut Vec<u8>,
) {
    top_k_row(logits, k, top);
    out.clear();
    out.extend_from_slice(&(target as i32).to_le_bytes());
    out.extend_from_slice(&(scored.target_logprob as f32).to_le_bytes());
    out.extend_from_slice(&(scored.lse as f32).to_le_bytes());
    out.extend_from_slice(&(scored.entropy as f32).to_le_bytes());
    for &(id, _) in top.iter() {
        out.extend_from_slice(&(id as i32).to_le_bytes());
    }
    for &(_, l) in top.iter() {
        out.extend_from_slice(&((f64::from(l) - scored.lse) as f32).to_le_bytes());
    }
}

/// Top entries per record: 20, as the fidelity references hold.
const TOPK_K: usize = 20;

/// The fidelity dump file: a 32-byte header, then the records, chunk-major.
struct TopkWriter {
    out: BufWriter<File>,
    k: usize,
}

impl TopkWriter {
    fn create(
        path: &Path,
        n_vocab: usize,
        n_ctx: usize,
        n_chunks: usize,
        first: usize,
    ) -> anyhow::Result<TopkWriter> {
        let k = TOPK_K.min(n_vocab);
        let n_records = n_chunks * (n_ctx - 1 - first);
        let mut header = Vec::with_capacity(32);
        header.extend_from_slice(b"HFTOPK01");
        for v in [n_vocab, n_ctx, n_chunks, first, k, n_records] {
            let v = u32::try_from(v).context("the logprob dump's header overflows u32")?;
            header.extend_from_slice(&v.to_le_bytes());
        }
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        out.write_all(&header)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(TopkWriter { out, k })
    }
}

/// Running negative log-likelihood, as llama-perplexity accumulates it.
#[derive(Default)]
struct Nll {
    sum: f64,
    sum2: f64,
    count: usize,
}

impl Nll {
    fn add(&mut self, logprob: f64) {
        self.sum -= logprob;
        self.sum2 += logprob * logprob;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// llama.cpp's `+/-`: the standard error of the mean NLL times the PPL (first-order
    /// error propagation through `exp`).
    fn ppl_error(&self) -> Option<f64> {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum2 / n - mean * mean;
        (var > 0.0 && self.count > 1).then(|| (var / (n - 1.0)).sqrt() * self.ppl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log-softmax, logsumexp and entropy written the plain way, in f64.
    fn reference(logits: &[f32], target: usize) -> (f64, f64, f64) {
        let x: Vec<f64> = logits.iter().map(|&l| f64::from(l)).collect();
        let lse = x.iter().map(|v| v.exp()).sum::<f64>().ln();
        let lp: Vec<f64> = x.iter().map(|v| v - lse).collect();
        let entropy = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
        (lp[target], lse, entropy)
    }

    #[test]
    fn score_row_matches_the_plain_formulas() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.07 - 3.0)
            .collect();
        for target in [0, 17, 999] {
            let s = score_row(&logits, target as u32);
            let (lp, lse, h) = reference(&logits, target);
            assert!((s.target_logprob - lp).abs() < 1e-9);
            assert!((s.lse - lse).abs() < 1e-9);
            assert!((s.entropy - h).abs() < 1e-9);
        }
        // -inf logits: no NaN, zero probability, no entropy contribution.
        let mut masked = vec![f32::NEG_INFINITY; 10];
        masked[3] = 1.0;
        masked[4] = 1.0;
        let s = score_row(&masked, 3);
        assert!((s.target_logprob - 0.5f64.ln()).abs() < 1e-12);
        assert!((s.entropy - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn top_k_orders_by_logit_then_id() {
        let logits = [0.5f32, 2.0, -1.0, 2.0, 0.7, 3.0, 0.5, f32::NEG_INFINITY];
        let mut top = Vec::new();
        top_k_row(&logits, 4, &mut top);
        assert_eq!(top, [(5, 3.0), (1, 2.0), (3, 2.0), (4, 0.7)]);
        top_k_row(&logits, 6, &mut top);
        assert_eq!(top[4..], [(0, 0.5), (6, 0.5)]);
        // Against a full sort on a bigger row with many ties.
        let row: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 613) as f32 * 0.25)
            .collect();
        let mut all: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        top_k_row(&row, 20, &mut top);
        assert_eq!(top, all[..20]);
    }

    #[test]
    fn record_layout() {
        let logits = [1.0f32, 3.0, 2.0];
        let s = score_row(&logits, 2);
        let mut top = Vec::new();
        let mut rec = Vec::new();
        encode_record(&logits, 2, &s, 3, &mut top, &mut rec);
        assert_eq!(rec.len(), 16 + 8 * 3);
        let f = |o: usize| f32::from_le_bytes(rec[o..o + 4].try_into().unwrap());
        let i = |o: usize| i32::from_le_bytes(rec[o..o + 4].try_into().unwrap());
        assert_eq!(i(0), 2);
        assert_eq!(f(4), s.target_logprob as f32);
        assert_eq!(f(8), s.lse as f32);
        assert_eq!(f(12), s.entropy as f32);
        assert_eq!([i(16), i(20), i(24)], [1, 2, 0]);
        assert_eq!(f(28), (3.0 - s.lse) as f32);
    }

    #[test]
    fn nll_matches_llama_cpp_formulas() {
        let mut n = Nll::default();
        for lp in [-1.0, -2.0, -3.0] {
            n.add(lp);
        }
        assert!((n.ppl() - 2f64.exp()).abs() < 1e-12);
        // Sample variance of (1, 2, 3) over n: 2/3; se = sqrt(var / (n - 1)).
        let se = ((2.0f64 / 3.0) / 2.0).sqrt();
        assert!((n.ppl_error().unwrap() - se * 2f64.exp()).abs() < 1e-12);
    }
}
