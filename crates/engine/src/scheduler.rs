//! The engine loop: one thread owns the model, the KV pool, the prefix cache, the scratch
//! buffers and the compute pool, takes [`Job`]s from a queue and streams [`Event`]s back.
//! `hearth serve` and `hearth run` both drive it; the server only parses, validates and
//! formats.
//!
//! # A step
//! Each step is one forward pass over a batch holding one token for every decoding
//! sequence and, within a token budget ([`budget`]), prompt chunks of admitted sequences
//! (chunked prefill: a long prompt never stalls the running streams for its whole
//! length). The weights are read once per step for all of them.
//!
//! # Admission and room
//! At most `parallel` sequences run; new requests wait in a bounded queue (beyond it,
//! [`ErrorKind::QueueFull`]). A request is admitted, in arrival order, when a slot is free
//! and the pool has room for its prompt (free blocks plus cached blocks nobody holds,
//! keeping one block of headroom per running sequence). Its prompt is first looked up in
//! the [`PrefixCache`]: whole blocks found there are adopted, not recomputed. Sequences
//! take blocks as they grow; when a step's decode tokens find no room even after the
//! prefix cache gave back what it could, the most recently admitted sequence is
//! preempted: its full blocks go to the prefix cache and its cells back to the pool, and
//! it waits at the head of the queue to recompute (often from the cache) what it had, then
//! continues exactly where it was. A running sequence is never truncated or corrupted;
//! it ends only by its own stop, its `max_tokens`, or the per-sequence context.
//!
//! # Bursts
//! A job that wakes an idle engine waits a few milliseconds for the rest of its burst
//! before the first step ([`gather`]), so that prompts sent together share that step.
//!
//! # n > 1
//! A request for `n` choices is admitted with `n` slots; its prompt is processed once,
//! then forked into `n` sequences sharing the prompt's blocks, each with its own sampler
//! (seed `seed + i`).
//!
//! # Cancellation
//! A job is cancelled when its event receiver is dropped; every step checks, before it
//! plans, and a cancelled sequence's cells go back at once (its full blocks stay in the
//! prefix cache).

mod budget;
mod draw;
mod gather;
pub mod job;
pub mod metrics;
mod sequence;

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use hearth_gguf::{GgufFile, Residency};
use hearth_kernels::dispatch::Kernels;
use hearth_kernels::ops::select::KEY_BLOCK;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, KvTypes, Model, Scratch, BLOCK_CELLS};
use hearth_tokenizer::Tokenizer;

use crate::chat_template::{
    ChatTemplate, Content, Message, RenderOptions, TemplateConfig, TemplateOrigin,
};
use crate::grammar::{Constraint, Grammar, GrammarVocab};
use crate::output::ReasoningSplitter;
use crate::prefix_cache::PrefixCache;
use crate::sampler::SamplerParams;
use crate::tools::{self, ToolChoice, ToolFormat, ToolText};
pub use budget::Budget;
use draw::{draw_all, Draw};
pub use job::{ErrorKind, Event, Finish, Job, Prompt, Request, RequestError, Timings, Usage};
use sequence::{LazyGrammar, Prepared, Seq, ThinkTokens};

/// Most tokens a step carries by default (llama.cpp's default `n_ubatch`).
pub const DEFAULT_BATCH: usize = 512;
/// Requests that may wait for admission by default.
pub const DEFAULT_QUEUE: usize = 64;
/// Context per sequence when `--ctx` is not given, unless the model was trained on less
/// (llama.cpp's default `n_ctx`).
pub const DEFAULT_SEQ_CTX: usize = 4096;
/// Without `--ctx`, the pool holds this many full-length sequences...
const DEFAULT_POOL_SEQS: usize = 2;
/// ...but takes at most this share of the memory available at start.
const DEFAULT_POOL_MEMORY_SHARE: u64 = 4;
/// The packed weights' copies take at most this fraction (1/n) of the memory available
/// after loading, beyond what `Model::pack_for_batches`'s share rule packs anyway. Packing
/// the layers of the R1-Distill-Qwen-1.5B shape (Q4_K_M, 805 MB more) made a four-sequence
/// step 29-31 ms instead of 44-45 and a 188-token prompt 365-378 tokens/s instead of
/// 221-236 (AMD Zen 5, AVX-512 VNNI, 2 threads).
const PACK_MEMORY_SHARE: u64 = 4;
/// Without `--parallel`, one running sequence per this many pool cells...
const CELLS_PER_DEFAULT_SLOT: usize = 1024;
/// ...and at most this many.
const MAX_DEFAULT_PARALLEL: usize = 8;

/// What the engine needs to start.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Cells of the KV pool shared by all sequences (`None`: see [`plan_context`]).
    pub ctx: Option<usize>,
    /// Compute threads.
    pub threads: usize,
    /// Where the weights live: mapped from the file, or copied onto huge pages.
    pub residency: Residency,
    /// Most sequences running at once (`None`: see [`default_parallel`]).
    pub parallel: Option<usize>,
    /// Most requests waiting for admission.
    pub queue: usize,
    /// Most tokens per forward step.
    pub batch: usize,
    /// How the KV cache stores keys and values.
    pub kv_types: KvTypes,
    /// Told how far the model's load has come (see [`LoadProgress`]).
    pub load_progress: Option<LoadProgress>,
}

/// Called with (bytes read, bytes in all) while the weights are copied into memory, so
/// that a command can draw a progress bar for a model that takes seconds to load.
#[derive(Clone)]
pub struct LoadProgress(pub Arc<dyn Fn(u64, u64) + Send + Sync>);

impl std::fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgress")
    }
}

impl EngineConfig {
    /// A configuration with every default for `model`.
    pub fn new(model: PathBuf, threads: usize, residency: Residency) -> EngineConfig {
        EngineConfig {
            model,
            ctx: None,
            threads,
            residency,
            parallel: None,
            queue: DEFAULT_QUEUE,
            batch: DEFAULT_BATCH,
            kv_types: KvTypes::default(),
            load_progress: None,
        }
    }
}

/// What the caller learns once the model is loaded.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The model's id: the file name without `.gguf`.
    pub id: String,
    /// The most tokens one sequence may hold, prompt included.
    pub n_ctx: usize,
    /// Cells of the KV pool.
    pub n_ctx_pool: usize,
    /// Most sequences running at once.
    pub parallel: usize,
    /// Most requests waiting.
    pub queue: usize,
    /// Bytes of KV cache per token.
    pub kv_bytes_per_token: usize,
    /// The model's `general.architecture`.
    pub arch: String,
    /// The context the model was trained on.
    pub n_ctx_train: usize,
    /// Where the chat template comes from: the model file's own, or a built-in one for
    /// its family (a base model's file often has none); `None`: chat prompts are refused.
    pub chat_template: Option<TemplateOrigin>,
    /// Bytes of the weights' packed copies, made when several sequences may run at once
    /// (see `Model::pack_for_batches`); 0 when everything stays as the file stores it.
    pub packed_bytes: usize,
}

/// The pool's size and the most one sequence may hold: `ctx` (when given) is the pool;
/// otherwise the pool holds [`DEFAULT_POOL_SEQS`] sequences (1 when only one may run) of
/// `min(DEFAULT_SEQ_CTX, n_ctx_train)`, within a quarter of `mem_available` (but never
/// less than one such sequence). A sequence may use the whole pool: up to the training
/// context by default, and as much as an explicit `ctx` says (the caller warns when that
/// is more than the model was trained on).
pub fn plan_context(
    ctx: Option<usize>,
    parallel: Option<usize>,
    n_ctx_train: usize,
    kv_bytes_per_token: usize,
    mem_available: Option<u64>,
) -> (usize, usize) {
    let seq_default = DEFAULT_SEQ_CTX.min(n_ctx_train.max(1));
    match ctx {
        Some(pool) => (pool, pool),
        None => {
            let seqs = parallel.map_or(DEFAULT_POOL_SEQS, |p| p.min(DEFAULT_POOL_SEQS));
            let mut pool = seqs * seq_default;
            if let Some(avail) = mem_available {
                let fits = avail / DEFAULT_POOL_MEMORY_SHARE / kv_bytes_per_token.max(1) as u64;
                pool = pool.min(fits as usize).max(seq_default);
            }
            (pool, pool.min(n_ctx_train.max(1)))
        }
    }
}

/// `--parallel`'s default: one running sequence per [`CELLS_PER_DEFAULT_SLOT`] pool
/// cells, between 1 and [`MAX_DEFAULT_PARALLEL`].
pub fn default_parallel(pool_cells: usize) -> usize {
    (pool_cells / CELLS_PER_DEFAULT_SLOT).clamp(1, MAX_DEFAULT_PARALLEL)
}

/// Runs the engine: loads the model, reports `ready` (or the load error), then serves
/// jobs until the queue closes and the last running job is done.
pub fn run(
    config: EngineConfig,
    jobs: mpsc::Receiver<Job>,
    ready: impl FnOnce(Result<ModelInfo, String>),
) {
    // Where the packed kernels take every token of a packed matrix (AVX-512 VNNI) and
    // several sequences may run, a model whose every matrix packs never reads the file's
    // copy again: it is loaded mapped, and the copies replace the file's bytes in memory
    // (`Model::release_packed`) instead of doubling them. Only where the caller found room
    // for a copy of the file (`Residency::HugePages`): the copies take about as much.
    // Otherwise (or where not every matrix packs, which only packing tells) it loads as
    // `config.residency` says.
    let in_place = config.residency == Residency::HugePages
        && config.parallel != Some(1)
        && Kernels::get().packed_prompts();
    let ready = if in_place {
        match run_in_place(&config, &jobs, ready) {
            Ok(()) => return,
            Err(ready) => ready,
        }
    } else {
        ready
    };
    let file = match open(&config, config.residency) {
        Ok(f) => f,
        Err(e) => return ready(Err(e)),
    };
    let mut model = match Model::load(&file) {
        Ok(m) => m,
        Err(e) => return ready(Err(format!("cannot load the model: {e}"))),
    };
    // Batched decode steps multiply each matrix by several tokens: packed weights make
    // them cost about what one token's does. One sequence at a time gains too little for
    // the memory (the packed copies are second copies). The copies may take as large a
    // share of the memory free now as the KV pool's default does (planned just before,
    // from the same figure), so the two together leave at least half of it.
    let plan = plan_limits(&config, &model);
    let packed_bytes = if plan.2 > 1 {
        let spare = mem_available().map_or(0, |free| free / PACK_MEMORY_SHARE);
        match model.pack_for_batches_within(spare) {
            Ok(bytes) => bytes,
            Err(e) => return ready(Err(format!("cannot load the model: {e}"))),
        }
    } else {
        0
    };
    serve_model(&config, &file, &model, plan, packed_bytes, &jobs, ready);
}

/// [`run`] with the file mapped and every matrix packed, its file bytes released. Gives
/// `ready` back, having loaded nothing that stays, where that does not hold (one sequence
/// at a time, or a matrix that does not pack).
fn run_in_place<R: FnOnce(Result<ModelInfo, String>)>(
    config: &EngineConfig,
    jobs: &mpsc::Receiver<Job>,
    ready: R,
) -> Result<(), R> {
    let file = match open(config, Residency::Mapped) {
        Ok(f) => f,
        Err(e) => {
            ready(Err(e));
            return Ok(());
        }
    };
    let mut model = match Model::load(&file) {
        Ok(m) => m,
        Err(e) => {
            ready(Err(format!("cannot load the model: {e}")));
            return Ok(());
        }
    };
    let plan = plan_limits(config, &model);
    if plan.2 < 2 {
        return Err(ready);
    }
    let packed_bytes = match model.pack_for_batches_within(u64::MAX) {
        Ok(bytes) => bytes,
        Err(e) => {
            ready(Err(format!("cannot load the model: {e}")));
            return Ok(());
        }
    };
    if !model.fully_packed() {
        return Err(ready);
    }
    let released = model.release_packed(&file);
    serve_model(
        config,
        &file,
        &model,
        plan,
        packed_bytes.saturating_sub(released),
        jobs,
        ready,
    );
    Ok(())
}

/// Makes the scheduler for a loaded model, reports `ready`, and serves `jobs`.
fn serve_model(
    config: &EngineConfig,
    file: &GgufFile,
    model: &Model<'_>,
    plan: (usize, usize, usize),
    packed_bytes: usize,
    jobs: &mpsc::Receiver<Job>,
    ready: impl FnOnce(Result<ModelInfo, String>),
) {
    let tok = match Tokenizer::from_gguf(file) {
        Ok(t) => t,
        Err(e) => return ready(Err(format!("cannot build the tokenizer: {e}"))),
    };
    let mut sched = match Scheduler::new(config, plan, file, model, &tok) {
        Ok(s) => s,
        Err(e) => return ready(Err(e)),
    };
    sched.info.packed_bytes = packed_bytes;
    metrics::register_all();
    sched.publish();
    ready(Ok(sched.info.clone()));
    sched.serve(jobs);
}

fn open(config: &EngineConfig, residency: Residency) -> Result<GgufFile, String> {
    if !config.model.exists() {
        return Err(format!("{}: no such file", config.model.display()));
    }
    let progress = config
        .load_progress
        .as_ref()
        .map(|p| &*p.0 as &dyn Fn(u64, u64));
    GgufFile::open_with_progress(&config.model, residency, progress)
        .map_err(|e| format!("{}: not a readable GGUF file: {e}", config.model.display()))
}

/// The KV pool's cells, the most tokens per sequence and the most sequences at once, as
/// `config` asks for them or [`plan_context`] and [`default_parallel`] choose. Made once,
/// before anything else takes memory (the default pool is sized from what is free).
fn plan_limits(config: &EngineConfig, model: &Model<'_>) -> (usize, usize, usize) {
    let hp = model.hparams();
    let (n_pool, n_ctx) = plan_context(
        config.ctx,
        config.parallel,
        hp.n_ctx_train,
        config.kv_types.bytes_per_token(hp),
        mem_available(),
    );
    let parallel = config.parallel.unwrap_or_else(|| default_parallel(n_pool));
    (n_pool, n_ctx, parallel)
}

/// Bytes of memory available to new allocations, from Linux's `/proc/meminfo`; `None`
/// elsewhere. (Sizes the default KV pool here; the CLI uses it to decide whether weights
/// are copied onto huge pages.)
pub fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The limits a scheduler works within.
#[derive(Debug, Clone, Copy)]
struct Limits {
    parallel: usize,
    queue: usize,
    /// Most tokens per sequence.
    n_ctx: usize,
}

/// One batch entry's owner: `n` tokens of `running[seq]`, with a row of logits or not.
#[derive(Debug, Clone, Copy)]
struct Planned {
    seq: usize,
    n: usize,
    logits: bool,
}

/// The engine's state. See the module docs.
struct Scheduler<'m, 'a> {
    model: &'m Model<'a>,
    tok: &'m Tokenizer,
    template: Option<ChatTemplate>,
    pool: ThreadPool,
    kv: KvCache,
    scratch: Scratch,
    prefix: PrefixCache,
    batch: Batch,
    budget: Budget,
    limits: Limits,
    info: ModelInfo,
    running: Vec<Seq<'m>>,
    waiting: VecDeque<Seq<'m>>,
    plan: Vec<Planned>,
    /// Per running sequence, whether it ended in the step being processed (kept between
    /// steps so that the token loop does not allocate it).
    ended: Vec<bool>,
    /// Per running sequence, the logits row it draws its next token from in the step
    /// being processed (kept between steps, as `ended`).
    rows: Vec<Option<usize>>,
    /// Admissions so far: the order of `Seq::admitted`.
    admissions: u64,
    /// The vocabulary as the grammar engine sees it, built for the first constrained
    /// request (about a second on a large vocabulary; most servers never need it).
    grammar_vocab: OnceCell<Result<GrammarVocab, String>>,
    /// The reasoning tags as tokens.
    think: ThinkTokens,
    /// How the chat template writes tool calls.
    tool_format: ToolFormat,
    /// Whether the template lists the tools it is given (else a system message does).
    template_shows_tools: bool,
    /// Whether the template can turn thinking off (Qwen3's `enable_thinking`).
    template_thinking_switch: bool,
}

impl<'m, 'a> Scheduler<'m, 'a> {
    fn new(
        config: &EngineConfig,
        (n_pool, n_ctx, parallel): (usize, usize, usize),
        file: &GgufFile,
        model: &'m Model<'a>,
        tok: &'m Tokenizer,
    ) -> Result<Scheduler<'m, 'a>, String> {
        let hp = model.hparams();
        if config.ctx == Some(0) {
            return Err("--ctx must be at least 1".into());
        }
        if config.batch == 0 {
            return Err("the batch size must be at least 1".into());
        }
        if config.parallel == Some(0) {
            return Err("--parallel must be at least 1".into());
        }
        let kv_bytes_per_token = config.kv_types.bytes_per_token(hp);
        let md = file.metadata();
        let embedded = md
            .get_opt::<&str>("tokenizer.chat_template")
            .map_err(|e| format!("tokenizer.chat_template: {e}"))?;
        let arch = md
            .get_str("general.architecture")
            .map_err(|e| e.to_string())?
            .to_owned();
        let name = md.get_opt::<&str>("general.name").unwrap_or(None);
        let special = tok.special_tokens();
        let text_of = |id: Option<u32>| id.and_then(|id| tok.token_text(id).ok()).unwrap_or("");
        let (bos, eos) = (text_of(special.bos), text_of(special.eos));
        // A model without a usable template still serves raw-text prompts.
        let template =
            ChatTemplate::for_model(embedded, &arch, name, bos, eos, &TemplateConfig::default())
                .ok();
        let pool = ThreadPool::new(config.threads)
            .map_err(|e| format!("cannot start the compute threads: {e}"))?;
        let kv = KvCache::with_types(hp, n_pool, config.kv_types)
            .map_err(|e| format!("cannot create the KV cache: {e}"))?;
        let batch = config.batch.min(n_pool);
        let scratch = Scratch::new(model, batch, parallel.max(1))
            .map_err(|e| format!("cannot allocate the scratch buffers: {e}"))?;
        let id = config
            .model
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_owned())
            .unwrap_or_else(|| "model".to_owned());
        let info = ModelInfo {
            id,
            n_ctx,
            n_ctx_pool: kv.n_cells(),
            parallel,
            queue: config.queue,
            kv_bytes_per_token,
            arch,
            n_ctx_train: hp.n_ctx_train,
            chat_template: template.as_ref().map(ChatTemplate::origin),
            packed_bytes: 0,
        };
        let tool_format = ToolFormat::detect(embedded.unwrap_or_default());
        Ok(Scheduler {
            model,
            tok,
            template,
            pool,
            kv,
            scratch,
            prefix: PrefixCache::new(),
            batch: Batch::with_capacity(batch + parallel),
            budget: Budget::new(batch),
            limits: Limits {
                parallel,
                queue: config.queue,
                n_ctx,
            },
            info,
            running: Vec::with_capacity(parallel),
            waiting: VecDeque::new(),
            plan: Vec::with_capacity(parallel + 1),
            ended: Vec::with_capacity(parallel),
            rows: Vec::with_capacity(parallel),
            admissions: 0,
            grammar_vocab: OnceCell::new(),
            think: ThinkTokens {
                // Only for templates of thinking models (they mention the tags): a
                // vocabulary may carry `<think>` for a model that never thinks.
                open: match tok.encode("<think>", false, true).as_deref() {
                    Ok([one]) if embedded.is_some_and(|t| t.contains("</think>")) => Some(*one),
                    _ => None,
                },
                close: tok.encode("</think>", false, true).unwrap_or_default(),
            },
            tool_format,
            template_thinking_switch: embedded.is_some_and(|t| t.contains("enable_thinking")),
            template_shows_tools: embedded.is_some_and(|t| t.contains("tools"))
                && tool_format != ToolFormat::Generic,
        })
    }

    /// Takes jobs and steps until the queue is closed and nothing is left to do.
    fn serve(&mut self, jobs: &mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    return;
                }
                match jobs.recv() {
                    Ok(job) => self.intake(job),
                    Err(_) => return,
                }
                open = gather::gather(jobs, self.has_slots(), |job| {
                    self.intake(job);
                    self.has_slots()
                });
            }
            while open {
                match jobs.try_recv() {
                    Ok(job) => self.intake(job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            self.step();
        }
    }

    /// Whether another sequence could start beside those running and waiting.
    fn has_slots(&self) -> bool {
        let held: usize = self
            .running
            .iter()
            .chain(&self.waiting)
            .map(Seq::slots)
            .sum();
        held < self.limits.parallel
    }

    /// Validates a job and queues it, or answers it with an error.
    fn intake(&mut self, job: Job) {
        if job.events.is_closed() {
            return;
        }
        // Whoever can start now is not waiting: only a queue that stays full refuses.
        self.admit();
        if self.waiting.len() >= self.limits.queue {
            metrics::rejected("queue_full");
            let retry = 1 + (self.waiting.len() / self.limits.parallel.max(1)) as u64;
            let _ = job.events.send(Event::Error(RequestError {
                kind: ErrorKind::QueueFull {
                    retry_after_s: retry,
                },
                message: format!(
                    "the server is busy: {} requests are running and {} waiting (the most this server queues); try again later",
                    self.running.len(),
                    self.waiting.len()
                ),
                param: None,
            }));
            return;
        }
        match self.prepare(job.request, job.events.clone()) {
            Ok(seq) => {
                metrics::accepted(seq.n_prompt);
                let _ = job.events.send(Event::Started {
                    prompt_tokens: seq.n_prompt,
                });
                self.waiting.push_back(seq);
            }
            Err(e) => {
                metrics::rejected("invalid");
                let _ = job.events.send(Event::Error(e));
            }
        }
    }

    /// The prompt's tokens, checks that need the model, and the request's first choice.
    fn prepare(
        &self,
        req: Request,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Result<Seq<'m>, RequestError> {
        let n_vocab = self.model.hparams().n_vocab;
        let n_text = self.tok.n_tokens();
        if req.n == 0 || req.n > self.limits.parallel {
            return Err(RequestError::invalid(
                "n",
                format!(
                    "'n' must be between 1 and {} (the sequences this server runs at once), not {}",
                    self.limits.parallel, req.n
                ),
            ));
        }
        let tools = req
            .tools
            .as_ref()
            .filter(|t| !t.tools.is_empty() && req.prompt_is_chat());
        let (text, opens_reasoning, protected) = match &req.prompt {
            Prompt::Text(t) => (t.clone(), false, None),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| RequestError {
                    kind: ErrorKind::NoTemplate,
                    message: "this model has no usable chat template; use /v1/completions".into(),
                    param: None,
                })?;
                // A template that does not list tools gets them described in a system
                // message.
                let history = tools::history_for(self.tool_format, messages);
                let (messages, tool_list) = match tools {
                    Some(t) if !self.template_shows_tools => (
                        with_system_text(&history, &t.instructions(self.tool_format)),
                        &[][..],
                    ),
                    Some(t) => (history, &t.tools[..]),
                    None => (history, &[][..]),
                };
                let text = template
                    .render_prompt(
                        &messages,
                        tool_list,
                        &RenderOptions {
                            add_generation_prompt: true,
                            extra: self.template_kwargs(&req),
                        },
                        self.tok.add_bos(),
                    )
                    .map_err(|e| {
                        RequestError::invalid(
                            "messages",
                            format!("cannot apply the chat template: {e}"),
                        )
                    })?;
                let open = ReasoningSplitter::prompt_opens_reasoning(&text);
                let protected = message_spans(self.tok, &text, &messages);
                (text, open, Some(protected))
            }
        };
        let tokens = match &protected {
            Some(ranges) => self.tok.encode_protected(&text, true, ranges),
            None => self.tok.encode(&text, true, true),
        }
        .map_err(|e| RequestError::invalid("prompt", format!("cannot tokenize the prompt: {e}")))?;
        if tokens.is_empty() {
            return Err(RequestError::invalid("prompt", "the prompt is empty"));
        }
        if tokens.len() >= self.limits.n_ctx {
            return Err(RequestError {
                kind: ErrorKind::ContextLength,
                message: format!(
                    "the prompt is {} tokens, which does not fit a context of {} tokens per sequence (at least one token must be left to generate)",
                    tokens.len(),
                    self.limits.n_ctx
                ),
                param: Some("messages"),
            });
        }
        if let Some(m) = req.max_tokens.filter(|&m| m > self.limits.n_ctx) {
            return Err(RequestError::invalid(
                "max_tokens",
                format!(
                    "'max_tokens' is {m}, more than the {} tokens a sequence may hold here",
                    self.limits.n_ctx
                ),
            ));
        }
        let mut params: SamplerParams = req.sampler.clone();
        for &(id, _) in &params.logit_bias {
            if id as usize >= n_text {
                return Err(RequestError::invalid(
                    "logit_bias",
                    format!("token {id} is not in the vocabulary of {n_text} tokens"),
                ));
            }
        }
        // Padded vocabulary rows have no text: never drawn.
        params
            .logit_bias
            .extend((n_text..n_vocab).map(|t| (t as u32, f32::NEG_INFINITY)));
        if req.ignore_eos {
            params.logit_bias.extend(
                self.tok
                    .eog_tokens()
                    .iter()
                    .map(|&t| (t, f32::NEG_INFINITY)),
            );
        }
        // A call the request demands wins over a response format; otherwise the format,
        // or the tools' own grammar (the generic format's JSON).
        let tool_constraint = tools.and_then(|t| t.constraint(self.tool_format));
        let forced_call =
            tools.is_some_and(|t| matches!(t.choice, ToolChoice::Required | ToolChoice::Named(_)));
        let (constraint, param) = match (&req.constraint, tool_constraint) {
            (Some(c), None) => (Some(c.clone()), "response_format"),
            (Some(c), Some(_)) if !forced_call => (Some(c.clone()), "response_format"),
            (_, Some(t)) => (Some(t), "tools"),
            (None, None) => (None, "response_format"),
        };
        let grammar = match &constraint {
            Some(c) => Some(self.compile(c, param)?),
            None => None,
        };
        let tool_text = tools
            .filter(|t| t.choice != ToolChoice::None)
            .map(|_| ToolText::new(self.tool_format));
        let lazy = match tools.and_then(|t| t.lazy_constraint(self.tool_format)) {
            Some((c, marker)) if grammar.is_none() => Some(LazyGrammar {
                grammar: self.compile(&c, "tools")?,
                marker,
                marker_tokens: self.tok.encode(marker, false, true).map_err(|e| {
                    RequestError::internal(format!("cannot tokenize {marker:?}: {e}"))
                })?,
            }),
            _ => None,
        };
        Seq::new(
            self.tok,
            events,
            Arc::new(req),
            Arc::new(params),
            Prepared {
                tokens,
                opens_reasoning,
                grammar,
                tool_text,
                lazy,
            },
            n_vocab,
        )
    }

    /// The request's template variables; a budget of 0 turns thinking off where the
    /// template has a switch for it (and the client did not set it).
    fn template_kwargs(&self, req: &Request) -> serde_json::Map<String, serde_json::Value> {
        let mut kwargs = req.template_kwargs.clone();
        if req.reasoning_budget == Some(0) && self.template_thinking_switch {
            kwargs
                .entry("enable_thinking")
                .or_insert(serde_json::Value::Bool(false));
        }
        kwargs
    }

    /// `c` compiled against the vocabulary; a constraint that cannot be enforced is the
    /// fault of the request field `param`.
    fn compile(&self, c: &Constraint, param: &'static str) -> Result<Grammar, RequestError> {
        self.grammar_vocab()?.compile(c).map_err(|e| {
            RequestError::invalid(
                param,
                format!("the output constraint cannot be enforced: {e}"),
            )
        })
    }

    /// The grammar engine's view of the vocabulary, built on first use.
    fn grammar_vocab(&self) -> Result<&GrammarVocab, RequestError> {
        self.grammar_vocab
            .get_or_init(|| {
                let built = GrammarVocab::new(self.tok);
                if let Ok((_, secs)) = &built {
                    eprintln!(
                        "hearth: grammar vocabulary of {} tokens built in {secs:.2} s",
                        self.tok.n_tokens()
                    );
                }
                built.map(|(v, _)| v)
            })
            .as_ref()
            .map_err(|e| {
                RequestError::internal(format!("cannot build the grammar vocabulary: {e}"))
            })
    }

    /// One step: drops cancelled work, admits what fits, plans a batch, runs it and
    /// hands each sequence its logits.
    fn step(&mut self) {
        self.drop_cancelled();
        self.admit();
        self.plan_batch();
        if self.batch.is_empty() {
            self.publish();
            return;
        }
        let t0 = Instant::now();
        let Scheduler {
            model,
            tok,
            pool,
            kv,
            scratch,
            prefix,
            batch,
            running,
            plan,
            limits,
            ended,
            rows,
            think,
            ..
        } = self;
        let logits = match model.forward_keyed(pool, kv, scratch, batch) {
            Ok(l) => l,
            Err(e) => {
                // Only an internal error gets here (the batch was planned to fit): the
                // sequences in it fail, the others go on.
                let mut failed: Vec<usize> = plan.iter().map(|p| p.seq).collect();
                failed.sort_unstable();
                failed.dedup();
                for &i in failed.iter().rev() {
                    let seq = running.remove(i);
                    seq.fail(RequestError::internal(&e));
                    if let Some(id) = seq.kv {
                        kv.remove_sequence(id);
                    }
                }
                plan.clear();
                return;
            }
        };
        let elapsed = t0.elapsed();
        let n_vocab = model.hparams().n_vocab;
        let n_text = tok.n_tokens().min(n_vocab);
        // A decode token is the one a sequence just drew; anything else is prompt (or a
        // recomputation after preemption).
        let is_prompt = |p: &Planned, s: &Seq<'_>| p.n > 1 || s.tokens.len() == s.n_prompt;
        let n_prompt: usize = plan
            .iter()
            .filter(|p| is_prompt(p, &running[p.seq]))
            .map(|p| p.n)
            .sum();
        let n_decode = batch.len() - n_prompt;
        // Recorded before any client hears of this step's tokens, so that a scrape after
        // a response always includes the steps behind it.
        metrics::step(batch.len(), n_prompt, plan.len(), elapsed);
        self.budget
            .record(n_decode, n_prompt, elapsed.as_secs_f64());
        ended.clear();
        ended.resize(running.len(), false);
        // Which logits row each sequence draws from this step, if any.
        rows.clear();
        rows.resize(running.len(), None);
        let mut row = 0;
        for p in plan.iter() {
            let prefilled = is_prompt(p, &running[p.seq]);
            running[p.seq].fed(p.n);
            if !p.logits {
                continue;
            }
            rows[p.seq] = Some(row);
            if prefilled {
                // The prompt (or a recomputation) is done: its blocks go to the cache.
                let s = &running[p.seq];
                let blocks = kv.seq_blocks(s.kv.expect("admitted")).to_vec();
                prefix.insert(kv, &s.tokens[..s.n_fed], &blocks);
            }
            // Its forks made now (appended at the end) draw from the same row.
            if running[p.seq].n_forks > 0 {
                let n = std::mem::take(&mut running[p.seq].n_forks);
                for index in 1..=n {
                    let parent = running[p.seq].kv.expect("admitted");
                    let child_kv = kv.fork(parent).expect("the parent exists");
                    match running[p.seq].fork(tok, index, child_kv, n_vocab) {
                        Ok(child) => {
                            running.push(child);
                            ended.push(false);
                            rows.push(Some(row));
                        }
                        Err(e) => {
                            kv.remove_sequence(child_kv);
                            running[p.seq].fail(e);
                            ended[p.seq] = true;
                        }
                    }
                }
            }
            row += 1;
        }
        let n_keys = n_vocab.div_ceil(KEY_BLOCK);
        let draws = running
            .iter_mut()
            .zip(rows.iter())
            .zip(ended.iter_mut())
            .filter_map(|((seq, row), ended)| {
                let row = (*row)?;
                (!*ended).then_some(Draw {
                    seq,
                    logits: &logits.values[row * n_vocab..][..n_vocab],
                    keys: logits.keys.map(|k| &k[row * n_keys..][..n_keys]),
                    ended,
                })
            });
        draw_all(pool, draws, tok, (n_text, limits.n_ctx), think);
        // Ended sequences leave, highest index first so the others keep theirs.
        for i in (0..self.ended.len()).rev() {
            if self.ended[i] {
                let seq = self.running.remove(i);
                self.release(&seq);
            }
        }
        self.publish();
    }

    /// Gives a sequence's cells back, its full blocks entered in the prefix cache.
    fn release(&mut self, seq: &Seq<'_>) {
        if let Some(id) = seq.kv {
            let blocks = self.kv.seq_blocks(id).to_vec();
            self.prefix
                .insert(&mut self.kv, &seq.tokens[..seq.n_fed], &blocks);
            self.kv.remove_sequence(id);
        }
    }

    /// Drops the sequences whose clients have gone away.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].cancelled() {
                let seq = self.running.remove(i);
                metrics::finished("cancelled");
                self.release(&seq);
            } else {
                i += 1;
            }
        }
        self.waiting.retain(|s| {
            let gone = s.cancelled();
            if gone {
                metrics::finished("cancelled");
            }
            !gone
        });
    }

    /// Free blocks, counting those the prefix cache would give back.
    fn room(&self) -> usize {
        self.kv.n_free_blocks() + self.prefix.n_evictable(&self.kv)
    }

    /// Admits waiting requests in order while slots and room allow.
    fn admit(&mut self) {
        while let Some(front) = self.waiting.front() {
            // A sequence with forks to come holds their slots already.
            let used: usize = self.running.iter().map(Seq::slots).sum();
            if used + front.slots() > self.limits.parallel {
                return;
            }
            // At least the last token is computed: its logits start generation.
            let hit = self.prefix.lookup(&front.tokens[..front.tokens.len() - 1]);
            let need =
                front.tokens.len().div_ceil(BLOCK_CELLS) - hit.blocks.len() + front.n_forks + used;
            let room = self.room() - self.prefix.n_evictable_among(&self.kv, &hit.blocks);
            if need > room && !self.running.is_empty() {
                return;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            let id = self.kv.new_sequence();
            if self.kv.adopt_prefix(id, &hit.blocks).is_err() {
                // Cannot happen (the cache holds every block it returns); recompute.
                self.kv.truncate_sequence(id, 0);
            }
            let cached = self.kv.seq_len(id).unwrap_or(0);
            self.admissions += 1;
            if seq.admit(id, cached, self.admissions) {
                metrics::admitted(seq.cached);
            }
            self.running.push(seq);
        }
    }

    /// Makes room for `need` more blocks: the prefix cache gives back idle blocks first.
    /// `false` if even that is not enough.
    fn make_room(&mut self, need: usize) -> bool {
        let free = self.kv.n_free_blocks();
        if need <= free {
            return true;
        }
        self.prefix.evict(&mut self.kv, need - free);
        need <= self.kv.n_free_blocks()
    }

    /// Sends the most recently admitted running sequence back to the head of the queue,
    /// its cells given back (its full blocks stay in the prefix cache).
    fn preempt_youngest(&mut self) {
        let Some(i) = (0..self.running.len()).max_by_key(|&i| self.running[i].admitted) else {
            return;
        };
        let mut seq = self.running.remove(i);
        self.release(&seq);
        seq.kv = None;
        seq.n_fed = 0;
        metrics::preempted();
        self.waiting.push_front(seq);
    }

    /// Fills `self.batch` and `self.plan`: every decoding sequence's token, then prompt
    /// chunks within the budget and the room left.
    fn plan_batch(&mut self) {
        loop {
            self.batch.clear();
            self.plan.clear();
            // Decode tokens first: they must fit, or someone makes way.
            let need: usize = self
                .running
                .iter()
                .filter(|s| s.pending() == 1)
                .map(|s| self.kv.blocks_to_append(s.kv.expect("admitted"), 1))
                .sum();
            if !self.make_room(need) {
                self.preempt_youngest();
                continue;
            }
            let mut n_decode = 0;
            for (i, s) in self.running.iter().enumerate() {
                if s.pending() == 1 {
                    let id = s.kv.expect("admitted");
                    self.batch.push(s.tokens[s.n_fed], s.n_fed as u32, id, true);
                    self.plan.push(Planned {
                        seq: i,
                        n: 1,
                        logits: true,
                    });
                    n_decode += 1;
                }
            }
            // Prompt chunks: row-path ones first, then GEMM ones (see `takes_gemm`).
            let mut budget = self.budget.prompt_tokens(n_decode);
            // Blocks this batch will take: the pool hands them out only during the pass.
            let mut reserved = need;
            for gemm in [false, true] {
                if gemm {
                    self.batch.set_gemm_from(self.batch.len());
                }
                for i in 0..self.running.len() {
                    let s = &self.running[i];
                    if s.pending() <= 1 || budget == 0 || takes_gemm(s, n_decode) != gemm {
                        continue;
                    }
                    let id = s.kv.expect("admitted");
                    let mut n = s.pending().min(budget);
                    // Within the room left: shorten the chunk to the blocks there are.
                    let room = self.room().saturating_sub(reserved);
                    while n > 0 && self.kv.blocks_to_append(id, n) > room {
                        n -= if n > BLOCK_CELLS { BLOCK_CELLS } else { 1 };
                    }
                    let blocks = self.kv.blocks_to_append(id, n);
                    if n == 0 || !self.make_room(reserved + blocks) {
                        continue;
                    }
                    reserved += blocks;
                    let s = &self.running[i];
                    let logits = n == s.pending();
                    for j in s.n_fed..s.n_fed + n {
                        let last = j + 1 == s.n_fed + n;
                        self.batch.push(s.tokens[j], j as u32, id, logits && last);
                    }
                    self.plan.push(Planned { seq: i, n, logits });
                    budget -= n;
                }
            }
            if self.batch.is_empty() && !self.running.is_empty() {
                // Nobody could go on (prompts waiting for room held by others): the
                // youngest steps back, so the oldest always progresses.
                self.preempt_youngest();
                continue;
            }
            return;
        }
    }

    /// The occupancy gauges.
    fn publish(&self) {
        metrics::occupancy(
            self.running.len(),
            self.waiting.len(),
            self.kv.n_blocks() - self.kv.n_free_blocks(),
            self.kv.n_blocks(),
            self.prefix.len(),
            self.prefix.n_evictable(&self.kv),
        );
    }
}

/// Prompts at least this long go through the GEMM when a step has no decode tokens. The
/// GEMM decodes every weight once per call (~65 ms for Gemma 3 270M's layers at 2
/// threads, measured with `batched_decode`), which the row path's ~3.4 ms per token
/// repays from about 20 tokens on; 64 leaves room.
const GEMM_MIN_PROMPT: usize = 64;

/// Whether a sequence's pending tokens go through the GEMM in a step with `n_decode`
/// decode tokens: only long prompts, and only when nobody decodes — a GEMM call's fixed
/// cost would stall every decoding stream for it. The rule reads nothing about the other
/// prompts in the step, so a short prompt takes the same path alone or in company (and
/// gives the same tokens); a long one takes the row path for the chunks it shares with
/// decoding streams, and so rounds differently from a run alone.
fn takes_gemm(s: &Seq<'_>, n_decode: usize) -> bool {
    n_decode == 0 && s.tokens.len() >= GEMM_MIN_PROMPT
}

/// `messages` with `text` added to the system message (one is put first if there is
/// none).
fn with_system_text(messages: &[Message], text: &str) -> Vec<Message> {
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(m) if m.role == "system" => {
            let old = m
                .content
                .as_ref()
                .map(|c| c.joined_text())
                .unwrap_or_default();
            m.content = Some(Content::Text(format!("{old}\n\n{text}")));
        }
        _ => out.insert(0, Message::new("system", text)),
    }
    out
}

/// Where the messages' own text sits in the rendered prompt `text`: these byte ranges are
/// tokenized with control tokens off, so that a user who writes `<start_of_turn>` or
/// `<|im_end|>` cannot forge the conversation's structure. Each content is looked for in
/// order (as written, else trimmed, as Gemma's template prints it), and an occurrence
/// counts only if it cuts through no control token of the template's: a content of
/// `turn` must not match inside `<end_of_turn>`. A content the template transformed is not
/// found and stays unprotected.
fn message_spans(tok: &Tokenizer, text: &str, messages: &[Message]) -> Vec<std::ops::Range<usize>> {
    let controls = tok.control_spans(text);
    let cuts = |r: &std::ops::Range<usize>| {
        controls
            .iter()
            .any(|c| c.start < r.end && r.start < c.end && !(r.start <= c.start && c.end <= r.end))
    };
    let mut spans = Vec::new();
    let mut from = 0;
    for m in messages {
        let content = m
            .content
            .as_ref()
            .map(|c| c.joined_text())
            .unwrap_or_default();
        for needle in [content.as_str(), content.trim()] {
            if needle.is_empty() {
                break;
            }
            let found = text[from..]
                .match_indices(needle)
                .map(|(i, _)| from + i..from + i + needle.len())
                .find(|r| !cuts(r));
            if let Some(r) = found {
                from = r.end;
                spans.push(r);
                break;
            }
        }
    }
    spans
}
