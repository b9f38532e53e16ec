//! The engine thread: it alone owns the model, the KV cache, the scratch buffers and the
//! compute pool. Requests arrive on a queue and run one at a time; each streams its
//! events back on its own channel. A request is cancelled when that channel's receiver
//! is gone (the client disconnected), which is checked before every token step.

use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::Context;
use axum::http::StatusCode;
use hearth_engine::chat_template::{ChatTemplate, TemplateConfig};
use hearth_engine::output::{OutputStage, ReasoningSplitter, Split};
use hearth_engine::sampler::Sampler;
use hearth_gguf::{GgufFile, Residency};
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, Model, Scratch};
use hearth_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::logprobs::{LogprobScratch, TokenLogprob};
use crate::request::{GenRequest, Prompt};

/// Prompt tokens per forward call (llama.cpp's default `n_ubatch`).
const PROMPT_BATCH: usize = 512;

/// What the engine needs to start.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Context size in tokens (`None`: 4096, or the training context if smaller).
    pub ctx: Option<usize>,
    /// Compute threads.
    pub threads: usize,
    /// Where the weights live: mapped from the file, or copied onto huge pages.
    pub residency: Residency,
}

/// One request for the engine.
pub struct Job {
    /// The validated request.
    pub request: GenRequest,
    /// Where its events go; dropping the receiver cancels the job.
    pub events: UnboundedSender<Event>,
}

/// Why generation ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// End of generation token or a stop string.
    Stop,
    /// `max_tokens` or a full context.
    Length,
}

impl Finish {
    /// `"stop"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Token counts for `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (the end-of-generation token not counted).
    pub completion_tokens: usize,
    /// Generated tokens inside `<think>…</think>`.
    pub reasoning_tokens: usize,
}

/// What the engine sends back for a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The prompt is accepted and generation begins (always first, unless `Error`).
    Started,
    /// New text.
    Delta {
        /// Reasoning text.
        reasoning: String,
        /// Answer text.
        content: String,
        /// The log-probabilities of the tokens behind this delta, when the request asked
        /// for them (a delta may carry a token whose text is still held back, or none).
        logprobs: Vec<TokenLogprob>,
    },
    /// The end.
    Done {
        /// Why it ended.
        finish: Finish,
        /// Token counts.
        usage: Usage,
    },
    /// The job failed (before `Started`: the request is at fault).
    Error(ApiError),
}

/// What the HTTP side learns about the model once it is loaded.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The model's id in `/v1/models`: the file name without `.gguf`.
    pub id: String,
    /// The context size.
    pub n_ctx: usize,
}

/// Runs the engine: loads the model, reports `ready` (or the load error), then serves
/// jobs until the queue closes.
pub fn run(
    config: EngineConfig,
    jobs: mpsc::Receiver<Job>,
    ready: impl FnOnce(Result<ModelInfo, String>),
) {
    let file = match open(&config) {
        Ok(f) => f,
        Err(e) => return ready(Err(format!("{e:#}"))),
    };
    let engine = match Engine::load(&config, &file) {
        Ok(e) => e,
        Err(e) => return ready(Err(format!("{e:#}"))),
    };
    let id = config
        .model
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_owned())
        .unwrap_or_else(|| "model".to_owned());
    let mut engine = engine;
    ready(Ok(ModelInfo {
        id,
        n_ctx: engine.n_ctx,
    }));
    while let Ok(job) = jobs.recv() {
        if job.events.is_closed() {
            continue;
        }
        if let Err(e) = engine.generate(&job) {
            let _ = job.events.send(Event::Error(e));
        }
    }
}

fn open(config: &EngineConfig) -> anyhow::Result<GgufFile> {
    if !config.model.exists() {
        anyhow::bail!("{}: no such file", config.model.display());
    }
    GgufFile::open_with(&config.model, config.residency)
        .with_context(|| format!("{}: not a readable GGUF file", config.model.display()))
}

struct Engine<'a> {
    model: Model<'a>,
    tok: Tokenizer,
    template: Option<ChatTemplate>,
    pool: ThreadPool,
    kv: KvCache,
    scratch: Scratch,
    n_ctx: usize,
}

impl<'a> Engine<'a> {
    fn load(config: &EngineConfig, file: &'a GgufFile) -> anyhow::Result<Engine<'a>> {
        let tok = Tokenizer::from_gguf(file).context("cannot build the tokenizer")?;
        let model = Model::load(file).context("cannot load the model")?;
        let hp = model.hparams();
        let n_ctx = match config.ctx {
            Some(0) => anyhow::bail!("--ctx must be at least 1"),
            Some(n) => n,
            None => 4096.min(hp.n_ctx_train.max(1)),
        };
        let md = file.metadata();
        let embedded = md
            .get_opt::<&str>("tokenizer.chat_template")
            .context("tokenizer.chat_template")?;
        let arch = md.get_str("general.architecture")?;
        let name = md.get_opt::<&str>("general.name").unwrap_or(None);
        let special = tok.special_tokens();
        let text_of = |id: Option<u32>| id.and_then(|id| tok.token_text(id).ok()).unwrap_or("");
        let (bos, eos) = (text_of(special.bos), text_of(special.eos));
        // A model without a usable template still serves /v1/completions.
        let template =
            ChatTemplate::for_model(embedded, arch, name, bos, eos, &TemplateConfig::default())
                .ok();
        let pool = ThreadPool::new(config.threads).context("cannot start the compute threads")?;
        let kv = KvCache::new(hp, n_ctx).context("cannot create the KV cache")?;
        let scratch = Scratch::new(&model, PROMPT_BATCH.min(n_ctx), 1)
            .context("cannot allocate the scratch buffers")?;
        Ok(Engine {
            model,
            tok,
            template,
            pool,
            kv,
            scratch,
            n_ctx,
        })
    }

    /// The prompt's text, and whether it leaves a `<think>` block open.
    fn prompt_text(&self, prompt: &Prompt) -> Result<(String, bool), ApiError> {
        match prompt {
            Prompt::Text(t) => Ok((t.clone(), false)),
            Prompt::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    ApiError::bad_request(
                        "this model has no usable chat template; use /v1/completions",
                    )
                })?;
                let text = template
                    .render_prompt(messages, &[], true, self.tok.add_bos())
                    .map_err(|e| {
                        ApiError::invalid(
                            "messages",
                            format!("cannot apply the chat template: {e}"),
                        )
                    })?;
                let open = ReasoningSplitter::prompt_opens_reasoning(&text);
                Ok((text, open))
            }
        }
    }

    fn generate(&mut self, job: &Job) -> Result<(), ApiError> {
        let req = &job.request;
        let hp = self.model.hparams();
        let n_vocab = hp.n_vocab;
        let (text, opens_reasoning) = self.prompt_text(&req.prompt)?;
        let prompt = self
            .tok
            .encode(&text, true, true)
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e}")))?;
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        if prompt.len() >= self.n_ctx {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::bad_request(format!(
                    "the prompt is {} tokens, which does not fit this server's context of {} tokens (at least one token must be left to generate)",
                    prompt.len(),
                    self.n_ctx
                ))
            });
        }
        let mut params = req.sampler.clone();
        for &(id, _) in &params.logit_bias {
            if id as usize >= self.tok.n_tokens() {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!(
                        "token {id} is not in the vocabulary of {} tokens",
                        self.tok.n_tokens()
                    ),
                ));
            }
        }
        // Padded vocabulary rows have no text: never drawn.
        params
            .logit_bias
            .extend((self.tok.n_tokens()..n_vocab).map(|t| (t as u32, f32::NEG_INFINITY)));
        let mut sampler = Sampler::new(&params, n_vocab)
            .map_err(|e| ApiError::bad_request(format!("bad sampling parameters: {e}")))?;
        for &t in &prompt {
            sampler.accept(t).map_err(internal)?;
        }
        if job.events.send(Event::Started).is_err() {
            return Ok(());
        }

        let t_prompt = std::time::Instant::now();
        self.kv.clear();
        let seq = self.kv.new_sequence();
        let mut batch = Batch::with_capacity(PROMPT_BATCH.min(prompt.len()));
        let mut pos = 0usize;
        let mut logits: Vec<f32> = Vec::new();
        for chunk in prompt.chunks(PROMPT_BATCH) {
            if job.events.is_closed() {
                return Ok(());
            }
            batch.clear();
            for &t in chunk {
                pos += 1;
                batch.push(t, (pos - 1) as u32, seq, pos == prompt.len());
            }
            let out = self
                .model
                .forward(&self.pool, &mut self.kv, &mut self.scratch, &batch)
                .map_err(internal)?;
            if pos == prompt.len() {
                logits.clear();
                logits.extend_from_slice(out);
            }
        }

        let prompt_time = t_prompt.elapsed();
        let t_gen = std::time::Instant::now();
        let mut decoder = self.tok.stream_decoder(false, false);
        let mut output = if req.split_reasoning {
            OutputStage::new(&req.stop, opens_reasoning)
        } else {
            OutputStage::without_reasoning_split(&req.stop)
        };
        let max_new = req.max_tokens.unwrap_or(usize::MAX);
        let mut n_gen = 0usize;
        let mut lp_scratch = LogprobScratch::new(req.logprobs.unwrap_or(0));
        // Padded vocabulary rows are no tokens: left out of the log-softmax.
        let n_text_tokens = self.tok.n_tokens().min(n_vocab);
        let send = |split: Split, logprobs: Vec<TokenLogprob>| -> bool {
            if split.reasoning.is_empty() && split.content.is_empty() && logprobs.is_empty() {
                return true;
            }
            job.events
                .send(Event::Delta {
                    reasoning: split.reasoning,
                    content: split.content,
                    logprobs,
                })
                .is_ok()
        };
        let finish = loop {
            // Cancelled: the client has gone away.
            if job.events.is_closed() {
                return Ok(());
            }
            if n_gen >= max_new {
                break Finish::Length;
            }
            let id = sampler.sample(&logits).map_err(internal)?;
            if self.tok.is_eog(id) {
                break Finish::Stop;
            }
            n_gen += 1;
            // The raw logits: the sampler transforms its own copy, not `logits`.
            let logprobs = match req.logprobs {
                Some(k) => {
                    let text = &logits[..n_text_tokens.min(logits.len())];
                    let logprob = lp_scratch
                        .step(text, id, k)
                        .ok_or_else(|| internal(format!("no finite logit for token {id}")))?;
                    let piece = |t: u32| {
                        self.tok
                            .token_to_piece(t, false)
                            .map(<[u8]>::to_vec)
                            .unwrap_or_default()
                    };
                    vec![TokenLogprob {
                        bytes: piece(id),
                        logprob,
                        top: lp_scratch
                            .top()
                            .iter()
                            .map(|&(t, l)| (piece(t), l))
                            .collect(),
                    }]
                }
                None => Vec::new(),
            };
            let piece = decoder.push(id).map_err(internal)?;
            let step = output.push_token(piece);
            if !send(step.split, logprobs) {
                return Ok(());
            }
            if step.stopped {
                break Finish::Stop;
            }
            if pos >= self.n_ctx {
                break Finish::Length;
            }
            sampler.accept(id).map_err(internal)?;
            batch.clear();
            batch.push(id, pos as u32, seq, true);
            pos += 1;
            let out = self
                .model
                .forward(&self.pool, &mut self.kv, &mut self.scratch, &batch)
                .map_err(internal)?;
            logits.clear();
            logits.extend_from_slice(out);
        };
        // Held text comes out (after a stop string, only what the reasoning split held).
        send(output.finish(&decoder.finish()), Vec::new());
        let usage = Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: n_gen,
            reasoning_tokens: output.reasoning_tokens(),
        };
        let gen_s = t_gen.elapsed().as_secs_f64();
        eprintln!(
            "hearth: request done ({}): prompt {} tokens in {:.1} ms; generated {} tokens at {:.1} tok/s",
            finish.as_str(),
            usage.prompt_tokens,
            prompt_time.as_secs_f64() * 1e3,
            usage.completion_tokens,
            if gen_s > 0.0 { usage.completion_tokens as f64 / gen_s } else { 0.0 },
        );
        let _ = job.events.send(Event::Done { finish, usage });
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::with_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("generation failed: {e}"),
        None,
    )
}
