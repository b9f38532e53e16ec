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
use hearth_engine::chat_template::{ChatTemplate, Message, TemplateConfig};
use hearth_engine::sampler::{Penalties, Sampler, SamplerParams};
use hearth_gguf::{GgufFile, Residency};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, Model, Scratch};
use hearth_tokenizer::Tokenizer;

/// Prompt tokens per forward call by default (llama.cpp's default `n_ubatch`).
const PROMPT_BATCH: usize = 512;

/// Context when `-c` is not given, unless the model was trained on less (llama.cpp's
/// default `n_ctx`).
const DEFAULT_CTX: usize = 4096;

/// The arguments of `hearth run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The prompt to continue.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate at most; -1 generates until end of generation or a full
    /// context.
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    pub temp: f32,
    /// Seed of the sampler's generator (default: from the clock, printed on stderr).
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// Wrap the prompt in the model's chat template as a user message, ready for the
    /// assistant's reply.
    #[arg(long)]
    pub chat: bool,
    /// Keep the model file mapped instead of copying it onto huge pages (see
    /// `open_model_with`): less memory, slower decoding.
    #[arg(long)]
    pub mmap: bool,
}

/// Runs `hearth run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut params = sampler_params(&args)?;
    let n_threads = threads(args.threads)?;
    if args.batch == 0 {
        bail!("-b must be at least 1");
    }

    let t_load = Instant::now();
    let file = open_model_with(&args.model, args.mmap)?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: cannot build the tokenizer", args.model.display()))?;
    let model = Model::load(&file)
        .with_context(|| format!("{}: cannot load the model", args.model.display()))?;
    let hp = model.hparams();
    let n_ctx = context_size(args.ctx, hp.n_ctx_train)?;

    let text = if args.chat {
        chat_prompt(&file, &tok, &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let prompt = tok
        .encode(&text, true, true)
        .context("cannot tokenize the prompt")?;
    if prompt.is_empty() {
        bail!("the prompt is empty (and the model adds no BOS token)");
    }
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt is {} tokens, which does not fit a context of {n_ctx} (raise it with -c)",
            prompt.len()
        );
    }

    let pool = ThreadPool::new(n_threads).context("cannot start the compute threads")?;
    let mut kv = KvCache::new(hp, n_ctx).context("cannot create the KV cache")?;
    let mut scratch = Scratch::new(&model, args.batch.min(n_ctx), 1)
        .context("cannot allocate the scratch buffers")?;
    // The model's output can have more rows than the tokenizer has tokens (a padded
    // vocabulary): those ids have no text, so they are never drawn.
    params.logit_bias = (tok.n_tokens()..hp.n_vocab)
        .map(|t| (t as u32, f32::NEG_INFINITY))
        .collect();
    let mut sampler = Sampler::new(&params, hp.n_vocab).context("bad sampling parameters")?;
    for &t in &prompt {
        sampler
            .accept(t)
            .context("prompt token outside the model's vocabulary")?;
    }
    eprintln!(
        "hearth: {} loaded in {:.2} s; seed {}; context {n_ctx}; {n_threads} threads",
        args.model.display(),
        t_load.elapsed().as_secs_f64(),
        params.seed
    );

    // Prompt: batches of `-b` tokens, logits for the very last row only.
    let t_prompt = Instant::now();
    let seq = kv.new_sequence();
    let mut batch = Batch::with_capacity(args.batch.min(prompt.len()));
    let mut pos = 0usize;
    let mut logits: &[f32] = &[];
    for chunk in prompt.chunks(args.batch) {
        batch.clear();
        for &t in chunk {
            pos += 1;
            batch.push(t, (pos - 1) as u32, seq, pos == prompt.len());
        }
        logits = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .context("prompt processing failed")?;
    }
    let prompt_time = t_prompt.elapsed();

    // Generation.
    let t_gen = Instant::now();
    let mut decoder = tok.stream_decoder(false, false);
    let mut stdout = std::io::stdout().lock();
    let max_new = if args.n_predict < 0 {
        usize::MAX
    } else {
        args.n_predict as usize
    };
    let mut n_gen = 0usize;
    let mut stop = Stop::Limit;
    while n_gen < max_new {
        let id = sampler.sample(logits).context("sampling failed")?;
        if tok.is_eog(id) {
            stop = Stop::EndOfGeneration;
            break;
        }
        n_gen += 1;
        let piece = decoder
            .push(id)
            .context("cannot decode a generated token")?;
        if emit(&mut stdout, piece.as_bytes())? {
            stop = Stop::BrokenPipe;
            break;
        }
        if n_gen == max_new {
            break;
        }
        if pos >= n_ctx {
            stop = Stop::ContextFull;
            break;
        }
        sampler.accept(id)?;
        batch.clear();
        batch.push(id, pos as u32, seq, true);
        pos += 1;
        logits = model
            .forward(&pool, &mut kv, &mut scratch, &batch)
            .context("decoding failed")?;
    }
    let rest = decoder.finish();
    if !matches!(stop, Stop::BrokenPipe) {
        emit(&mut stdout, rest.as_bytes())?;
        if std::io::stdout().is_terminal() {
            emit(&mut stdout, b"\n")?;
        }
    }
    let gen_time = t_gen.elapsed();

    if matches!(stop, Stop::ContextFull) {
        eprintln!("hearth: stopped: the context of {n_ctx} tokens is full");
    }
    eprintln!("{}", rate("prompt", prompt.len(), prompt_time));
    eprintln!("{}", rate("generation", n_gen, gen_time));
    Ok(())
}

/// Why generation ended.
enum Stop {
    Limit,
    EndOfGeneration,
    ContextFull,
    BrokenPipe,
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

fn sampler_params(args: &RunArgs) -> anyhow::Result<SamplerParams> {
    let seed = args.seed.unwrap_or_else(|| {
        // Not cryptographic, just different per run; printed so a run can be repeated.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    });
    let params = SamplerParams {
        seed,
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        penalties: Penalties {
            repeat: args.repeat_penalty,
            ..Penalties::default()
        },
        logit_bias: Vec::new(),
    };
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
    if mmap || mem_available().is_some_and(|avail| len > avail / 2) {
        Residency::Mapped
    } else {
        Residency::HugePages
    }
}

/// Bytes of memory available to new allocations, from Linux's `/proc/meminfo`; `None`
/// elsewhere (the copy is then made regardless).
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `-c`, or the default bounded by the training context.
fn context_size(arg: Option<usize>, n_ctx_train: usize) -> anyhow::Result<usize> {
    match arg {
        Some(0) => bail!("-c must be at least 1"),
        Some(n) => {
            if n > n_ctx_train {
                eprintln!(
                    "hearth: warning: context {n} is longer than the model was trained on ({n_ctx_train})"
                );
            }
            Ok(n)
        }
        None => Ok(DEFAULT_CTX.min(n_ctx_train.max(1))),
    }
}

/// The prompt as one user message in the model's chat template, ending with the header
/// of the assistant's turn.
fn chat_prompt(file: &GgufFile, tok: &Tokenizer, prompt: &str) -> anyhow::Result<String> {
    let md = file.metadata();
    let embedded = md
        .get_opt::<&str>("tokenizer.chat_template")
        .context("tokenizer.chat_template")?;
    let arch = md.get_str("general.architecture")?;
    let name = md.get_opt::<&str>("general.name").unwrap_or(None);
    let special = tok.special_tokens();
    let text_of = |id: Option<u32>| id.and_then(|id| tok.token_text(id).ok()).unwrap_or("");
    let bos = text_of(special.bos);
    let eos = text_of(special.eos);
    let template =
        ChatTemplate::for_model(embedded, arch, name, bos, eos, &TemplateConfig::default())
            .context("cannot use the model's chat template")?;
    template
        .render_prompt(&[Message::user(prompt)], &[], true, tok.add_bos())
        .context("cannot apply the chat template")
}
