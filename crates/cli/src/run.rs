//! `hearth run MODEL -p PROMPT`: generates a continuation of a prompt and streams it.
//!
//! Only the generated text goes to stdout, flushed token by token through the
//! tokenizer's streaming decoder (a character split across byte tokens comes out whole);
//! the seed, the load time and the prompt and generation speeds go to stderr, so
//! `hearth run ... > out.txt` captures the text alone. Generation stops at an
//! end-of-generation token (EOS, end of turn; not printed), after `-n` tokens, or when the
//! context is full. The generation speed is generated tokens over the wall time from the
//! end of the prompt to the last token, sampling and output included.
//!
//! The prompt is tokenized as llama.cpp's CLI does (BOS as the model asks, special-token
//! text parsed) and run through the model in batches of `-b` tokens (512), logits for the
//! last row only; each generated token is then one decode step. The prompt's tokens go
//! into the sampler's penalty window, as llama.cpp's CLI does.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_engine::chat_template::Message;
use hearth_engine::grammar::Constraint;
use hearth_engine::sampler::{Penalties, Sampler, SamplerParams};
use hearth_engine::scheduler::{
    self, EngineConfig, Event, Finish, Job, LoadProgress, ModelInfo, Prompt, Request,
};
use hearth_gguf::{GgufFile, Residency};
use hearth_models::{KvType, KvTypes};

/// Prompt tokens per forward call by default (llama.cpp's default `n_ubatch`).
const PROMPT_BATCH: usize = scheduler::DEFAULT_BATCH;

/// The arguments of `hearth run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The GGUF model file, or a stored model's name (see `hearth list`).
    pub model: PathBuf,
    /// The prompt to continue.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate at most; -1 generates until end of generation or a full
    /// context.
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Seed of the sampler's generator (default: from the clock, printed on stderr).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context size in tokens, prompt included (default: 4096, or the model's training
    /// context if smaller).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Prompt tokens per forward call.
    #[arg(short = 'b', long = "batch-size", default_value_t = PROMPT_BATCH)]
    pub batch: usize,
    /// End the text where it would contain STR (repeatable; not printed), as the API's
    /// `stop`; `--stop $'\n\n'` ends a base model's text at its first paragraph.
    #[arg(long, value_name = "STR")]
    pub stop: Vec<String>,
    /// Wrap the prompt in the model's chat template as a user message, ready for the
    /// assistant's reply.
    #[arg(long)]
    pub chat: bool,
    /// Keep the model file mapped instead of copying it onto huge pages (see
    /// `open_model_with`): less memory, slower decoding.
    #[arg(long)]
    pub mmap: bool,
    /// Once the model is loaded, seal the process (as `hearth serve --sealed`: no network,
    /// no files but the model) before generating.
    #[arg(long)]
    pub sealed: bool,
    /// Constrain the output to JSON valid against the JSON schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<PathBuf>,
    /// Constrain the output to the grammar in FILE (llguidance's Lark syntax, which can
    /// embed JSON schemas as `%json { ... }`).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheTypeArgs,
}

/// The constraint `--json-schema` or `--grammar` asks for, read before the model loads
/// so that a bad file fails at once.
fn constraint(args: &RunArgs) -> anyhow::Result<Option<Constraint>> {
    const LIMIT: u64 = 1 << 20;
    let read = |path: &PathBuf| -> anyhow::Result<String> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len > LIMIT {
            bail!("{} is larger than {LIMIT} bytes", path.display());
        }
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if let Some(path) = &args.json_schema {
        let schema: serde_json::Value = serde_json::from_str(&read(path)?)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if !schema.is_object() {
            bail!("{} must hold a JSON schema object", path.display());
        }
        return Ok(Some(Constraint::JsonSchema(schema)));
    }
    match &args.grammar {
        Some(path) => Ok(Some(Constraint::Lark(read(path)?))),
        None => Ok(None),
    }
}

/// The sampling settings of `run` and `chat`, with llama.cpp's CLI defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to probability P (1: all).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep tokens at least P times as likely as the most likely one (0: all).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize the last 64 tokens by this factor (1: off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub repeat_penalty: f32,
}

impl SamplingArgs {
    /// The sampler's parameters with `seed`.
    pub fn params(&self, seed: u64) -> SamplerParams {
        SamplerParams {
            seed,
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            penalties: Penalties {
                repeat: self.repeat_penalty,
                ..Penalties::default()
            },
            logit_bias: Vec::new(),
        }
    }
}

/// `--cache-type-k` / `--cache-type-v`, as llama.cpp names them; shared by every
/// command that builds a KV cache.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct CacheTypeArgs {
    /// How the KV cache stores keys: f32, f16 or q8_0 (q8_0 needs head sizes that are
    /// multiples of 32).
    #[arg(long = "cache-type-k", value_name = "TYPE", default_value_t = KvTypes::default().k)]
    pub k: KvType,
    /// How the KV cache stores values: f32, f16 or q8_0.
    #[arg(long = "cache-type-v", value_name = "TYPE", default_value_t = KvTypes::default().v)]
    pub v: KvType,
}

impl CacheTypeArgs {
    /// The types as the cache takes them.
    pub fn types(&self) -> KvTypes {
        KvTypes {
            k: self.k,
            v: self.v,
        }
    }
}

/// Runs `hearth run`: one request through the engine (the same scheduler `hearth serve`
/// runs), its text streamed to stdout.
pub fn run(mut args: RunArgs) -> anyhow::Result<()> {
    args.model = crate::store::resolve(&args.model)?;
    let params = sampler_params(&args)?;
    let n_threads = threads(args.threads)?;
    let constraint = constraint(&args)?;
    if args.stop.iter().any(String::is_empty) {
        bail!("--stop needs a non-empty string");
    }
    if args.batch == 0 {
        bail!("-b must be at least 1");
    }
    if args.ctx == Some(0) {
        bail!("-c must be at least 1");
    }

    let t_load = Instant::now();
    let config = EngineConfig {
        ctx: args.ctx,
        parallel: Some(1),
        queue: 1,
        batch: args.batch,
        kv_types: args.cache.types(),
        load_progress: load_progress(&args.model),
        ..EngineConfig::new(
            args.model.clone(),
            n_threads,
            residency(&args.model, args.mmap),
        )
    };
    let engine = Engine::start(config)?;
    let info = engine.info.clone();
    if args.ctx.is_some_and(|c| c > info.n_ctx_train) {
        eprintln!(
            "hearth: warning: context {} is longer than the model was trained on ({})",
            info.n_ctx, info.n_ctx_train
        );
    }
    eprintln!(
        "hearth: {} loaded in {:.2} s; seed {}; context {}; KV cache {} bytes per token; \
         {n_threads} threads",
        args.model.display(),
        t_load.elapsed().as_secs_f64(),
        params.seed,
        info.n_ctx,
        info.kv_bytes_per_token
    );

    if args.sealed {
        hearth_server::seal_process(&args.model, &[], None)?;
    }
    let prompt = if args.chat {
        Prompt::Chat(vec![Message::user(args.prompt.as_str())])
    } else {
        Prompt::Text(args.prompt.clone())
    };
    let request = Request {
        max_tokens: usize::try_from(args.n_predict).ok(),
        stop: args.stop.clone(),
        constraint,
        ..Request::new(prompt, params)
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    engine.submit(Job {
        request,
        events: tx,
    })?;

    let mut stdout = std::io::stdout().lock();
    let mut done = None;
    while let Some(event) = rx.blocking_recv() {
        match event {
            Event::Started { .. } => {}
            Event::Delta {
                reasoning, content, ..
            } => {
                if emit(&mut stdout, reasoning.as_bytes())?
                    || emit(&mut stdout, content.as_bytes())?
                {
                    // The reader has gone: dropping the receiver cancels the request.
                    break;
                }
            }
            Event::Done {
                finish,
                usage,
                timings,
                ..
            } => {
                done = Some((finish, usage, timings));
                break;
            }
            // `hearth run` offers no tools.
            Event::ToolCalls { .. } => {}
            Event::Error(e) => bail!("{e}"),
        }
    }
    drop(rx);
    drop(engine);
    let Some((finish, usage, timings)) = done else {
        // Broken pipe: quietly, as `head` expects.
        return Ok(());
    };
    if std::io::stdout().is_terminal() {
        emit(&mut stdout, b"\n")?;
    }
    let hit_limit = args.n_predict >= 0 && usage.completion_tokens >= args.n_predict as usize;
    if finish == Finish::Length && !hit_limit {
        eprintln!(
            "hearth: stopped: the context of {} tokens is full",
            info.n_ctx
        );
    }
    eprintln!(
        "{}",
        rate(
            "prompt",
            timings.prompt_computed,
            Duration::from_secs_f64(timings.prompt_s)
        )
    );
    eprintln!(
        "{}",
        rate(
            "generation",
            usage.completion_tokens,
            Duration::from_secs_f64(timings.generation_s)
        )
    );
    let (n_masks, mask_s) = timings.masks;
    if n_masks > 0 {
        eprintln!(
            "hearth: grammar: {n_masks} token masks in {:.1} ms, {:.0} µs each",
            mask_s * 1e3,
            mask_s * 1e6 / n_masks as f64
        );
    }
    Ok(())
}

/// Writes and flushes; `Ok(true)` when the reader has gone away (a closed pipe ends the
/// run quietly, as `head` expects).
fn emit(out: &mut impl Write, bytes: &[u8]) -> anyhow::Result<bool> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// `prompt: 6 tokens in 52.1 ms, 115.2 tok/s`.
fn rate(what: &str, n: usize, t: Duration) -> String {
    let s = t.as_secs_f64();
    let tps = if s > 0.0 { n as f64 / s } else { 0.0 };
    format!(
        "hearth: {what}: {n} tokens in {:.1} ms, {tps:.1} tok/s",
        s * 1e3
    )
}

/// The engine on a thread of its own, loaded and ready for jobs; dropping it stops the
/// engine (once its running jobs end) and waits for the thread.
pub(crate) struct Engine {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the engine reported once the model was loaded.
    pub info: ModelInfo,
}

impl Engine {
    /// Starts the engine and waits for the model to load.
    pub fn start(config: EngineConfig) -> anyhow::Result<Engine> {
        let (jobs, jobs_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                scheduler::run(config, jobs_rx, move |r| {
                    let _ = ready_tx.send(r);
                })
            })
            .context("cannot start the engine thread")?;
        let info = ready_rx
            .recv()
            .context("the engine stopped while loading")?
            .map_err(anyhow::Error::msg)?;
        Ok(Engine {
            jobs: Some(jobs),
            thread: Some(thread),
            info,
        })
    }

    /// Queues a job; its events arrive on the job's channel.
    pub fn submit(&self, job: Job) -> anyhow::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| anyhow::anyhow!("the engine has stopped"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the queue is what tells the engine to stop.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A progress bar on stderr for loading `model`, when stderr is a terminal and the file
/// is large enough to take a noticeable while (copying a 4 GiB model onto huge pages
/// takes a few seconds); the bar disappears once the weights are in memory.
pub(crate) fn load_progress(model: &Path) -> Option<LoadProgress> {
    const SHOWN_FROM: u64 = 256 << 20;
    let len = std::fs::metadata(model).map_or(0, |m| m.len());
    if len < SHOWN_FROM || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "loading {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let name = model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    bar.set_message(name);
    Some(LoadProgress(std::sync::Arc::new(move |done, total| {
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    })))
}

/// A seed from the clock: not cryptographic, just different per run (the commands print
/// it so that a run can be repeated).
pub(crate) fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// Hearth's cache folder: `$HEARTH_CACHE`, else `~/.cache/hearth` (as the scripts use).
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    home.map_or_else(
        || PathBuf::from(".cache/hearth"),
        |h| Path::new(&h).join(".cache/hearth"),
    )
}

fn sampler_params(args: &RunArgs) -> anyhow::Result<SamplerParams> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let params = args.sampling.params(seed);
    // Validate before the (slow) model load; the vocabulary size does not matter here.
    Sampler::new(&params, 1).context("bad sampling parameters")?;
    Ok(params)
}

/// `-t`, or every core.
pub(crate) fn threads(arg: Option<usize>) -> anyhow::Result<usize> {
    match arg {
        Some(0) => bail!("-t must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Opens a model file with a message that names it, on huge pages where it fits (see
/// [`open_model_with`]).
pub(crate) fn open_model(path: &Path) -> anyhow::Result<GgufFile> {
    open_model_with(path, false)
}

/// Opens a model file with a message that names it.
///
/// Unless `mmap` is set, the file is copied onto huge pages ([`Residency::HugePages`]):
/// decoding streams every weight once per token, and on a Zen 5 core the copy read at
/// ~29 GiB/s where the mapped file's 4 KiB pages gave ~15.6 GiB/s. A file larger than
/// half the memory the OS reports available stays mapped, since a copy, unlike a
/// mapping, cannot be paged back to the file.
pub(crate) fn open_model_with(path: &Path, mmap: bool) -> anyhow::Result<GgufFile> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    GgufFile::open_with(path, residency(path, mmap))
        .with_context(|| format!("{}: not a readable GGUF file", path.display()))
}

/// Where `open_model_with` puts the weights of `path` (see there).
pub(crate) fn residency(path: &Path, mmap: bool) -> Residency {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if mmap || scheduler::mem_available().is_some_and(|avail| len > avail / 2) {
        Residency::Mapped
    } else {
        Residency::HugePages
    }
}
