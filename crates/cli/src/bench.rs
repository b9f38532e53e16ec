//! `hearth bench MODEL [-p 512] [-n 128] [-d 0] [-t 1,2] [-r 5] [--cache-type-k f16]
//! [--cache-type-v f16] [--json]`: prompt-processing and generation speed as llama-bench
//! measures them, and how close generation comes to the memory-bandwidth limit.
//!
//! # What is measured (llama-bench's semantics, `tools/llama-bench/llama-bench.cpp`)
//! For each thread count:
//! - **pp** (`pp512`): `n_prompt` random tokens as one batch into an empty KV cache,
//!   logits for the last row only. The forward pass splits the batch into ubatches of
//!   at most 512 tokens, as llama.cpp does with its default `n_ubatch`.
//! - **tg** (`tg128`): `n_gen` single-token decode steps from an empty cache, each with
//!   logits (tokens are random, not sampled, as in llama-bench).
//! - **depth** (`-d N`, llama-bench's `-d/--n-depth`; the tests are then named
//!   `pp512 @ d4096`, `tg128 @ d4096`): both tests start with `N` random tokens already
//!   in the cache. The depth is filled once per thread count, untimed, and each run
//!   truncates the sequence back to it, so every run sees the same `N` cached tokens
//!   (llama-bench fills it once and restores that state before each run).
//!
//! Each test runs once as warm-up, then `-r` timed repetitions; t/s is reported as the
//! mean ± sample standard deviation of the per-repetition rates.
//!
//! # The bandwidth limit
//! Generating a token multiplies every layer matrix and the output head once, so it must
//! stream those bytes from memory: `weight_bytes_per_token` is their sum (a tied
//! embedding counts once, as the output head; the embedding rows a token looks up are
//! not counted). The machine's read bandwidth is measured here and now with the same
//! thread pool: every thread sums its share of a 1 GiB buffer (far larger than any
//! cache), best of several passes, once with the buffer on 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`) and once on 4 KiB pages. The better of the two is the limit:
//! `bandwidth / weight_bytes_per_token` tokens per second, and tg's share of it says how
//! much of the hardware the decode loop uses.
//!
//! # JSON shape (`--json`)
//! llama-bench's: an array with one object per (thread count, test), so tools that read
//! llama-bench's output read this:
//! ```text
//! [ { "model_filename": str, "model_type": str, "model_size": int (bytes),
//!     "model_n_params": int, "n_batch": int, "n_ubatch": int, "n_threads": int,
//!     "n_prompt": int, "n_gen": int, "n_depth": int, "backends": "CPU",
//!     "type_k": str, "type_v": str,                 // "f32", "f16", "q8_0"
//!     "avg_ns": int, "stddev_ns": int, "avg_ts": float, "stddev_ts": float,
//!     "samples_ns": [int], "samples_ts": [float],
//!     // ours:
//!     "engine": "hearth",
//!     "weight_bytes_per_token": int,
//!     "read_bandwidth_bytes_per_s": float,          // the better of the two below
//!     "read_bandwidth_hugepage_bytes_per_s": float | null,  // null: not measurable here
//!     "read_bandwidth_4k_bytes_per_s": float,
//!     "bandwidth_limit_ts": float,                  // bandwidth / weight bytes per token
//!     "share_of_limit": float | null } ]            // avg_ts / limit; tg rows only
//! ```

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use hearth_gguf::GgufFile;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, HParams, KvCache, KvTypes, Model, Scratch, SeqId};
use memmap2::MmapMut;
use serde_json::{json, Value as Json};

/// Largest ubatch a forward call processes at once (llama.cpp's default `n_ubatch`).
const N_UBATCH: usize = 512;

/// Size of the bandwidth-measurement buffer: 1 GiB, 30× this machine's 32 MiB L3 and
/// several times the largest L3 of current desktop and server parts, so that a pass
/// streams from DRAM. A debug build (whose figures mean nothing) uses 64 MiB, so that
/// the CLI's tests stay quick.
const BANDWIDTH_BYTES: usize = if cfg!(debug_assertions) {
    64 << 20
} else {
    1 << 30
};

/// Timed read passes over the buffer (after one untimed one); the best counts, as in
/// STREAM: interruptions on a shared machine only ever make a pass slower.
const BANDWIDTH_PASSES: usize = if cfg!(debug_assertions) { 1 } else { 8 };

/// A transparent huge page on x86-64 and on aarch64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// The arguments of `hearth bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The GGUF model file, or a stored model's name (see `hearth list`).
    pub model: PathBuf,
    /// Prompt tokens of the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Decode steps of the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the cache when each test starts (filled untimed).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    /// Thread counts to measure, comma-separated.
    #[arg(short = 't', long = "threads", default_value = "1,2")]
    pub threads: String,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Print llama-bench's JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: crate::run::CacheTypeArgs,
}

/// Runs `hearth bench`.
pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.model = crate::store::resolve(&args.model)?;
    let threads = parse_threads(&args.threads)?;
    if args.reps == 0 {
        bail!("-r must be at least 1");
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }

    let file = crate::run::open_model(&args.model)?;
    let model = Model::load(&file)
        .with_context(|| format!("{}: cannot load the model", args.model.display()))?;
    let hp = model.hparams();
    let n_ctx = args
        .n_prompt
        .checked_add(args.n_gen)
        .and_then(|n| n.checked_add(args.n_depth))
        .filter(|&n| n <= hp.n_ctx_train)
        .with_context(|| {
            format!(
                "-p {}, -n {} and -d {} need more than the model's {} positions of context",
                args.n_prompt, args.n_gen, args.n_depth, hp.n_ctx_train
            )
        })?;
    let types = args.cache.types();
    let info = ModelInfo::of(&file, &args.model.display().to_string());

    // The bandwidth first, while no model pages are being streamed.
    let bandwidth = measure_bandwidth(&threads)?;

    let mut rows = Vec::new();
    let mut table = Table::new(!args.json);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (&n_threads, bw) in threads.iter().zip(&bandwidth) {
        let pool = ThreadPool::new(n_threads).context("cannot start the compute threads")?;
        let mut kv =
            KvCache::with_types(hp, n_ctx, types).context("cannot allocate the KV cache")?;
        let ubatch = args.n_prompt.max(args.n_depth).clamp(1, N_UBATCH);
        let mut scratch =
            Scratch::new(&model, ubatch, 1).context("cannot allocate the scratch buffers")?;
        let mut bench = Bench {
            model: &model,
            pool: &pool,
            kv: &mut kv,
            scratch: &mut scratch,
            batch: Batch::with_capacity(args.n_prompt.max(args.n_depth).max(1)),
            seq: None,
            n_depth: args.n_depth,
        };
        let depth_tokens: Vec<u32> = (0..args.n_depth)
            .map(|_| rng.below(hp.n_vocab as u64) as u32)
            .collect();
        bench.fill_depth(&depth_tokens)?;
        let tests = [(args.n_prompt, 0), (0, args.n_gen)];
        for (n_prompt, n_gen) in tests.into_iter().filter(|&(p, g)| p + g > 0) {
            let tokens: Vec<u32> = (0..n_prompt + n_gen)
                .map(|_| rng.below(hp.n_vocab as u64) as u32)
                .collect();
            let time = |bench: &mut Bench| {
                if n_prompt > 0 {
                    bench.prompt(&tokens)
                } else {
                    bench.generate(&tokens)
                }
            };
            time(&mut bench)?; // warm-up
            let samples_ns = (0..args.reps)
                .map(|_| time(&mut bench))
                .collect::<anyhow::Result<Vec<u64>>>()?;
            let row = Row {
                n_threads,
                n_prompt,
                n_gen,
                n_depth: args.n_depth,
                types,
                samples_ns,
            };
            table.print_row(&info, &row);
            rows.push(row.to_json(&info, bw));
        }
    }

    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &Json::Array(rows))?;
        writeln!(out)?;
    } else {
        print_bandwidth(&info, &threads, &bandwidth, &rows);
    }
    Ok(())
}

/// `-t`: a comma-separated list of thread counts, each at least 1.
fn parse_threads(list: &str) -> anyhow::Result<Vec<usize>> {
    let threads = list
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|t| !t.is_empty())
        .with_context(|| format!("-t {list:?}: expected thread counts like 1,2"))?;
    if threads.contains(&0) {
        bail!("-t {list:?}: thread counts must be at least 1");
    }
    Ok(threads)
}

/// What llama-bench reports about the model: totals over every tensor in the file.
struct ModelInfo {
    filename: String,
    /// `"qwen2 7B Q4_K - Medium"`: architecture, size label, file type.
    model_type: String,
    /// Bytes of tensor data (llama.cpp's `llama_model_size`).
    size: u64,
    /// Elements of all tensors (llama.cpp's `llama_model_n_params`).
    n_params: u64,
    weight_bytes_per_token: u64,
}

impl ModelInfo {
    fn of(file: &GgufFile, filename: &str) -> ModelInfo {
        let meta = file.metadata();
        let size = file.tensors().iter().map(|t| t.n_bytes()).sum();
        let n_params = file.tensors().iter().map(|t| t.n_elements()).sum();
        let arch = meta.get_str("general.architecture").unwrap_or("?");
        let size_label = match meta.get_str("general.size_label") {
            Ok(label) => label.to_owned(),
            Err(_) => crate::inspect::human_count(n_params),
        };
        let ftype = meta.get_u32("general.file_type").ok();
        let model_type = match ftype.and_then(|t| hearth_gguf::file_type_long_name(t.into())) {
            Some(ftype) => format!("{arch} {size_label} {ftype}"),
            None => format!("{arch} {size_label}"),
        };
        ModelInfo {
            filename: filename.to_owned(),
            model_type,
            size,
            n_params,
            weight_bytes_per_token: weight_bytes_per_token(file),
        }
    }
}

/// Bytes of the matrices one decode step multiplies: every layer matrix (2 or more
/// dimensions, so norms and biases are left out) and the output head, which is
/// `output.weight` or, when the model ties it, `token_embd.weight` read once as a whole.
/// Embedding rows looked up by token are a few KiB and not counted.
///
/// Mixture-of-experts layers read only their routed experts: an expert tensor
/// (`*_exps`) counts for `expert_used_count / expert_count` of its bytes, the average a
/// token reads (a given token may read a little more where its experts' rows are not
/// cached, or less where they are).
fn weight_bytes_per_token(file: &GgufFile) -> u64 {
    let share = HParams::from_file(file)
        .ok()
        .filter(|hp| hp.n_expert > 0)
        .map_or(1.0, |hp| hp.n_expert_used as f64 / hp.n_expert as f64);
    let layers: f64 = file
        .tensors()
        .iter()
        .filter(|t| {
            t.name().starts_with("blk.") && t.shape().iter().filter(|&&d| d > 1).count() >= 2
        })
        .map(|t| match t.name().ends_with("_exps.weight") {
            true => t.n_bytes() as f64 * share,
            false => t.n_bytes() as f64,
        })
        .sum();
    let head = file
        .tensor_info("output.weight")
        .or_else(|| file.tensor_info("token_embd.weight"))
        .map_or(0, |t| t.n_bytes());
    layers as u64 + head
}

/// The model, cache and buffers one thread count's tests run on.
struct Bench<'a, 'm> {
    model: &'a Model<'m>,
    pool: &'a ThreadPool,
    kv: &'a mut KvCache,
    scratch: &'a mut Scratch,
    batch: Batch,
    /// The sequence holding the depth tokens (set by [`Bench::fill_depth`]).
    seq: Option<SeqId>,
    n_depth: usize,
}

impl Bench<'_, '_> {
    /// Starts the one sequence the tests run in, with `tokens` (the depth) in the cache.
    fn fill_depth(&mut self, tokens: &[u32]) -> anyhow::Result<()> {
        self.kv.clear();
        let seq = self.kv.new_sequence();
        self.seq = Some(seq);
        if !tokens.is_empty() {
            self.batch.clear();
            self.batch.push_seq(tokens, 0, seq, false);
            self.model
                .forward(self.pool, self.kv, self.scratch, &self.batch)
                .context("cannot fill the cache to the depth")?;
        }
        Ok(())
    }

    /// The test sequence with only the depth tokens cached, and the next position.
    fn at_depth(&mut self) -> (SeqId, usize) {
        let seq = self.seq.expect("fill_depth runs before any test");
        self.kv.truncate_sequence(seq, self.n_depth);
        (seq, self.n_depth)
    }

    /// Nanoseconds to process `tokens` as one prompt after the depth.
    fn prompt(&mut self, tokens: &[u32]) -> anyhow::Result<u64> {
        let (seq, pos0) = self.at_depth();
        self.batch.clear();
        self.batch.push_seq(tokens, pos0 as u32, seq, false);
        let t = Instant::now();
        let logits = self
            .model
            .forward(self.pool, self.kv, self.scratch, &self.batch)?;
        black_box(logits);
        Ok(elapsed_ns(t))
    }

    /// Nanoseconds to decode `tokens` one at a time after the depth.
    fn generate(&mut self, tokens: &[u32]) -> anyhow::Result<u64> {
        let (seq, pos0) = self.at_depth();
        let t = Instant::now();
        for (pos, &token) in (pos0..).zip(tokens) {
            self.batch.clear();
            self.batch.push(token, pos as u32, seq, true);
            let logits = self
                .model
                .forward(self.pool, self.kv, self.scratch, &self.batch)?;
            black_box(logits);
        }
        Ok(elapsed_ns(t))
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos().try_into().unwrap_or(u64::MAX)
}

/// Token ids for the tests: xorshift64, so runs are repeatable. Speed does not depend on
/// which tokens these are.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One test's timings.
struct Row {
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    types: KvTypes,
    samples_ns: Vec<u64>,
}

impl Row {
    fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    /// llama-bench's test name: `pp512`, `tg128`, `tg128 @ d4096`.
    fn test_name(&self) -> String {
        let test = if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        match self.n_depth {
            0 => test,
            d => format!("{test} @ d{d}"),
        }
    }

    /// Tokens per second of each repetition.
    fn samples_ts(&self) -> Vec<f64> {
        self.samples_ns
            .iter()
            .map(|&ns| self.n_tokens() as f64 * 1e9 / ns.max(1) as f64)
            .collect()
    }

    fn to_json(&self, info: &ModelInfo, bw: &Bandwidth) -> Json {
        let ns: Vec<f64> = self.samples_ns.iter().map(|&n| n as f64).collect();
        let ts = self.samples_ts();
        let (avg_ts, stddev_ts) = mean_sd(&ts);
        let (avg_ns, stddev_ns) = mean_sd(&ns);
        let limit_ts = bw.best() / info.weight_bytes_per_token.max(1) as f64;
        json!({
            "model_filename": info.filename,
            "model_type": info.model_type,
            "model_size": info.size,
            "model_n_params": info.n_params,
            "n_batch": self.n_tokens().max(1),
            "n_ubatch": self.n_prompt.clamp(1, N_UBATCH),
            "n_threads": self.n_threads,
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "n_depth": self.n_depth,
            "backends": "CPU",
            "type_k": self.types.k.name(),
            "type_v": self.types.v.name(),
            "avg_ns": avg_ns.round() as u64,
            "stddev_ns": stddev_ns.round() as u64,
            "avg_ts": avg_ts,
            "stddev_ts": stddev_ts,
            "samples_ns": self.samples_ns,
            "samples_ts": ts,
            "engine": "hearth",
            "weight_bytes_per_token": info.weight_bytes_per_token,
            "read_bandwidth_bytes_per_s": bw.best(),
            "read_bandwidth_hugepage_bytes_per_s": bw.huge,
            "read_bandwidth_4k_bytes_per_s": bw.small,
            "bandwidth_limit_ts": limit_ts,
            "share_of_limit": (self.n_gen > 0).then(|| avg_ts / limit_ts),
        })
    }
}

/// Mean and sample standard deviation (n − 1, as llama-bench); 0 for one sample.
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The markdown table, printed a row at a time as tests finish (as llama-bench does).
struct Table {
    enabled: bool,
    header_done: bool,
}

impl Table {
    fn new(enabled: bool) -> Table {
        Table {
            enabled,
            header_done: false,
        }
    }

    fn print_row(&mut self, info: &ModelInfo, row: &Row) {
        if !self.enabled {
            return;
        }
        let mut out = std::io::stdout().lock();
        if !self.header_done {
            self.header_done = true;
            let _ = writeln!(
                out,
                "| {:<30} | {:>10} | {:>10} | {:>7} | {:>6} | {:>6} | {:>15} | {:>20} |",
                "model", "size", "params", "threads", "type_k", "type_v", "test", "t/s"
            );
            let _ = writeln!(
                out,
                "| {:-<30} | {:->9}: | {:->9}: | {:->6}: | {:->5}: | {:->5}: | {:->14}: | {:->19}: |",
                "", "", "", "", "", "", "", ""
            );
        }
        let (avg, sd) = mean_sd(&row.samples_ts());
        let _ = writeln!(
            out,
            "| {:<30} | {:>10} | {:>10} | {:>7} | {:>6} | {:>6} | {:>15} | {:>20} |",
            info.model_type,
            human_bytes(info.size),
            human_params(info.n_params),
            row.n_threads,
            row.types.k.name(),
            row.types.v.name(),
            row.test_name(),
            format!("{avg:.2} ± {sd:.2}"),
        );
        let _ = out.flush();
    }
}

/// llama-bench's size column: MiB below 1 GiB, else GiB.
fn human_bytes(n: u64) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib < 1.0 {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{gib:.2} GiB")
    }
}

/// llama-bench's params column: `268.10 M`, `7.62 B`.
fn human_params(n: u64) -> String {
    if n < 1_000_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.2} B", n as f64 / 1e9)
    }
}

/// The text report's second part: bandwidth, limit and tg's share of it.
fn print_bandwidth(info: &ModelInfo, threads: &[usize], bandwidth: &[Bandwidth], rows: &[Json]) {
    let gb = |b: f64| format!("{:.2} GB/s", b / 1e9);
    println!();
    println!(
        "weights read per generated token: {:.2} MB (every layer matrix and the output head)",
        info.weight_bytes_per_token as f64 / 1e6
    );
    println!(
        "read bandwidth: {} MiB streaming read, best of {BANDWIDTH_PASSES} passes; \
         the limit uses the better page size",
        BANDWIDTH_BYTES >> 20
    );
    if let Some(share) = bandwidth.first().and_then(|b| b.huge_share) {
        println!(
            "huge pages backed {:.0} % of the 2 MiB-page buffer",
            share * 100.0
        );
    }
    println!();
    println!(
        "| threads | {:>12} | {:>12} | {:>10} | {:>10} | {:>14} |",
        "2 MiB pages", "4 KiB pages", "limit t/s", "tg t/s", "share of limit"
    );
    println!(
        "| ------: | {:->11}: | {:->11}: | {:->9}: | {:->9}: | {:->13}: |",
        "", "", "", "", ""
    );
    for (&n_threads, bw) in threads.iter().zip(bandwidth) {
        let limit = bw.best() / info.weight_bytes_per_token.max(1) as f64;
        let tg = rows.iter().find(|r| {
            r["n_threads"] == json!(n_threads) && r["n_gen"].as_u64().is_some_and(|n| n > 0)
        });
        let (tg_ts, share) = match tg {
            Some(r) => (
                format!("{:.2}", r["avg_ts"].as_f64().unwrap_or(0.0)),
                format!(
                    "{:.1} %",
                    r["share_of_limit"].as_f64().unwrap_or(0.0) * 100.0
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {n_threads:>7} | {:>12} | {:>12} | {limit:>10.2} | {tg_ts:>10} | {share:>14} |",
            bw.huge.map_or("-".into(), gb),
            gb(bw.small),
        );
    }
}

/// Read bandwidth with one thread count, in bytes per second.
struct Bandwidth {
    /// On 2 MiB pages; `None` where huge pages cannot be asked for.
    huge: Option<f64>,
    /// Share of that buffer the kernel actually put on huge pages, where known.
    huge_share: Option<f64>,
    /// On 4 KiB pages.
    small: f64,
}

impl Bandwidth {
    /// The limit: the better of the two.
    fn best(&self) -> f64 {
        self.huge.map_or(self.small, |h| h.max(self.small))
    }
}

/// Measures the read bandwidth with each thread count, on both page sizes.
fn measure_bandwidth(threads: &[usize]) -> anyhow::Result<Vec<Bandwidth>> {
    let mut results: Vec<Bandwidth> = threads
        .iter()
        .map(|_| Bandwidth {
            huge: None,
            huge_share: None,
            small: 0.0,
        })
        .collect();
    for huge in [true, false] {
        let Some(buffer) = ReadBuffer::new(BANDWIDTH_BYTES, huge)? else {
            continue;
        };
        for (&n_threads, result) in threads.iter().zip(&mut results) {
            let pool = ThreadPool::new(n_threads).context("cannot start the compute threads")?;
            let bytes_per_s = read_bandwidth(&pool, buffer.values());
            if huge {
                result.huge = Some(bytes_per_s);
                result.huge_share = buffer.huge_share;
            } else {
                result.small = bytes_per_s;
            }
        }
    }
    Ok(results)
}

/// Best bytes per second over [`BANDWIDTH_PASSES`] passes in which every pool thread
/// sums its contiguous share of `values`.
fn read_bandwidth(pool: &ThreadPool, values: &[f64]) -> f64 {
    let mut sums = vec![0f64; pool.n_threads()];
    let mut best = f64::INFINITY;
    for pass in 0..=BANDWIDTH_PASSES {
        let t = Instant::now();
        pool.run_with(&mut sums, &|ith, nth, sum| {
            let chunk = values.len().div_ceil(nth);
            let start = (ith * chunk).min(values.len());
            let end = (start + chunk).min(values.len());
            *sum = sum_widest(&values[start..end]);
        });
        let dt = t.elapsed().as_secs_f64();
        black_box(&sums);
        if pass > 0 {
            best = best.min(dt);
        }
    }
    std::mem::size_of_val(values) as f64 / best
}

/// [`sum_values`] compiled for the widest vector loads the CPU has. A baseline x86-64
/// build loads 16 bytes at a time, which reads DRAM measurably slower than 64-byte loads
/// (see `crates/kernels/benches/bandwidth.rs`), and the limit must not be set low.
fn sum_widest(values: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(values: &[f64]) -> f64 {
            sum_values(values)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(values: &[f64]) -> f64 {
            sum_values(values)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX-512F, the only feature `avx512` is compiled for.
            return unsafe { avx512(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2, the only feature `avx2` is compiled for.
            return unsafe { avx2(values) };
        }
    }
    sum_values(values)
}

/// Sums values in sixteen independent chains. Float adds may not be reordered, so the
/// compiler keeps each chunk's loads contiguous (vector loads of the widest enabled kind)
/// instead of vectorizing across chunks with gathers, which it does for integer sums
/// under `-C target-cpu=native` and which reads at a tenth of the speed.
#[inline(always)]
fn sum_values(values: &[f64]) -> f64 {
    let mut acc = [0f64; 16];
    let (chunks, tail) = values.as_chunks::<16>();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().chain(tail).sum()
}

/// Anonymous memory aligned to 2 MiB, advised to use huge pages or to avoid them, and
/// filled (so every page is backed before a timed read touches it). Mapped as the GGUF
/// reader's huge-page copy is (`hearth_gguf::Residency::HugePages`): memmap2's anonymous
/// map, 2 MiB more than asked so an aligned start fits.
struct ReadBuffer {
    map: MmapMut,
    /// Offset of the first 2 MiB boundary in `map`.
    start: usize,
    len: usize,
    /// Share of the buffer the kernel backed with huge pages, where Linux says
    /// (`AnonHugePages` of `/proc/self/smaps_rollup`, before and after the fill).
    huge_share: Option<f64>,
}

impl ReadBuffer {
    /// `bytes` (a multiple of 2 MiB) on huge pages if `huge`, else on base pages.
    /// `Ok(None)`: huge pages cannot be asked for on this platform.
    fn new(bytes: usize, huge: bool) -> anyhow::Result<Option<ReadBuffer>> {
        debug_assert!(bytes > 0 && bytes.is_multiple_of(HUGE_PAGE));
        if huge && !cfg!(target_os = "linux") {
            return Ok(None);
        }
        let Ok(mut map) = MmapMut::map_anon(bytes + HUGE_PAGE) else {
            bail!("cannot allocate {} MiB to measure bandwidth", bytes >> 20);
        };
        let huge_before = anon_huge_bytes();
        // Advice before the first touch, so the first fault already picks the page size.
        // Failure only means the kernel keeps its default page size: still measurable.
        #[cfg(target_os = "linux")]
        let _ = map.advise(if huge {
            memmap2::Advice::HugePage
        } else {
            memmap2::Advice::NoHugePage
        });
        let start = (map.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - map.as_ptr() as usize;
        let values: &mut [f64] = bytemuck::cast_slice_mut(&mut map[start..start + bytes]);
        for (i, v) in values.iter_mut().enumerate() {
            // Small normal numbers: no subnormal slow path, no overflow.
            *v = 1.0 + (i % 7) as f64;
        }
        let huge_share = match (huge_before, anon_huge_bytes()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / bytes as f64),
            _ => None,
        };
        Ok(Some(ReadBuffer {
            map,
            start,
            len: bytes,
            huge_share,
        }))
    }

    fn values(&self) -> &[f64] {
        bytemuck::cast_slice(&self.map[self.start..self.start + self.len])
    }
}

/// Bytes of this process's anonymous memory on transparent huge pages (Linux).
fn anon_huge_bytes() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_lists() {
        assert_eq!(parse_threads("1,2").unwrap(), [1, 2]);
        assert_eq!(parse_threads(" 4 ").unwrap(), [4]);
        for bad in ["", "1,", "x", "1,-2", "0", "2,0"] {
            assert!(parse_threads(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        // Sample variance: 32 / 7.
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn sums_every_value() {
        let values: Vec<f64> = (1..=1001).map(f64::from).collect();
        assert_eq!(sum_values(&values), 1001.0 * 1002.0 / 2.0);
        assert_eq!(sum_widest(&values), 1001.0 * 1002.0 / 2.0);
    }
}
