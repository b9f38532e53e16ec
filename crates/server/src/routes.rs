//! The HTTP side: routes, authentication, and formatting the engine's events as OpenAI's
//! JSON and server-sent events. Nothing here touches the model.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use hearth_engine::logprobs::TokenLogprob;
use hearth_engine::scheduler::{ErrorKind, Event, Finish, Job, ModelInfo, RequestError, Usage};
use hearth_engine::tools::ToolCall;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::ApiError;
use crate::keys::{Keys, Limits, Permit, Quotas};
use crate::request::{self, GenRequest};
use crate::usage::{self, UsageLog};

/// `Retry-After` of a request refused while the server drains.
const DRAIN_RETRY_AFTER_S: u64 = 1;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What every handler shares.
pub struct AppState {
    /// The engine's queue.
    pub jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    /// Set once the model is loaded.
    pub model: OnceLock<ModelInfo>,
    /// The keys clients must send as `Authorization: Bearer KEY`, if any (`--keys`, or
    /// the one key of `--api-key`).
    pub keys: Option<Keys>,
    /// Each key's use against its limits.
    pub quotas: Arc<Quotas>,
    /// Where each request's usage is written (`--usage-log`).
    pub usage: Option<UsageLog>,
    /// Renders the engine's metrics (`None`: `/metrics` answers 404).
    pub metrics: Option<PrometheusHandle>,
    /// The seal's mechanisms, when the process is sealed (`--sealed`).
    pub sealed: OnceLock<String>,
    /// Set on SIGTERM: `/health` turns not-ready and new API requests get 503 while the
    /// running ones finish.
    pub draining: AtomicBool,
    /// API requests in progress (their [`Account`]s alive).
    pub in_flight: AtomicUsize,
}

type Shared = Arc<AppState>;

/// The router.
pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(v1)
        .merge(crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Who is asking: the key's name and limits, and its concurrent slot, held (through the
/// response's [`Account`]) until the response ends.
#[derive(Clone, Debug, Default)]
struct Caller {
    key: Option<String>,
    limits: Limits,
    _permit: Option<Arc<Permit>>,
}

/// Identifies the caller's key and admits the request under its limits: 401 for a
/// missing or unknown key, 429 with `Retry-After` over a limit (both logged as usage).
async fn auth(
    State(state): State<Shared>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let t0 = Instant::now();
    if state.draining.load(Ordering::Relaxed) {
        return ApiError {
            retry_after: Some(DRAIN_RETRY_AFTER_S),
            ..ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down; retry on another replica",
                Some("shutting_down"),
            )
        }
        .into_response();
    }
    let Some(keys) = &state.keys else {
        req.extensions_mut().insert(Caller::default());
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refuse = |e: ApiError, key: Option<String>| {
        let mut account = Account::new(
            &state,
            req.uri().path(),
            Caller {
                key,
                ..Caller::default()
            },
            t0,
        );
        account.failed(&e);
        drop(account);
        e.into_response()
    };
    let Some(entry) = given.and_then(|g| keys.identify(g)) else {
        let msg = if given.is_none() {
            "missing API key: send it as 'Authorization: Bearer KEY'"
        } else {
            "incorrect API key"
        };
        let e = ApiError::with_status(StatusCode::UNAUTHORIZED, msg, Some("invalid_api_key"));
        return refuse(e, None);
    };
    match state.quotas.admit(entry) {
        Ok(permit) => {
            req.extensions_mut().insert(Caller {
                key: Some(entry.name.clone()),
                limits: entry.limits.clone(),
                _permit: Some(Arc::new(permit)),
            });
            next.run(req).await
        }
        Err(over) => {
            let e = ApiError {
                retry_after: Some(over.retry_after_s),
                ..ApiError::with_status(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("key '{}' is over its limit of {}", entry.name, over.what),
                    Some("rate_limit_exceeded"),
                )
            };
            refuse(e, Some(entry.name.clone()))
        }
    }
}

/// One request's accounting: when it ends (dropped, whatever the path), its tokens count
/// against its key's daily quota and its line goes to the usage log.
struct Account {
    state: Shared,
    caller: Caller,
    endpoint: String,
    model: String,
    t0: Instant,
    usage: TotalUsage,
    status: u16,
}

impl Account {
    fn new(state: &Shared, endpoint: &str, caller: Caller, t0: Instant) -> Account {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Account {
            state: state.clone(),
            caller,
            endpoint: endpoint.to_owned(),
            model: state.model.get().map(|m| m.id.clone()).unwrap_or_default(),
            t0,
            usage: TotalUsage::default(),
            status: 200,
        }
    }
}

impl Account {
    /// Records the error status the request ended with.
    fn failed(&mut self, e: &ApiError) {
        self.status = e.status.as_u16();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        let u = &self.usage;
        if let Some(name) = &self.caller.key {
            self.state
                .quotas
                .spend(name, (u.prompt + u.completion) as u64);
        }
        if let Some(log) = &self.state.usage {
            log.record(&usage::Record {
                time: usage::now_rfc3339(),
                key: self.caller.key.clone(),
                endpoint: self.endpoint.clone(),
                model: self.model.clone(),
                prompt_tokens: u.prompt as u64,
                cached_tokens: u.cached as u64,
                completion_tokens: u.completion as u64,
                reasoning_tokens: u.reasoning as u64,
                duration_ms: self.t0.elapsed().as_millis() as u64,
                status: self.status,
            });
        }
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::with_status(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
        Some("not_found"),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
        Some("method_not_allowed"),
    )
}

async fn health(State(state): State<Shared>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    if state.model.get().is_some() {
        let sealed = match state.sealed.get() {
            Some(m) => json!({"sealed": true, "mechanisms": m}),
            None => json!({"sealed": false}),
        };
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "seal": sealed})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

/// The engine's metrics in Prometheus' text format. Like `/health`, it needs no key: a
/// load balancer polls it, and it says nothing about what anyone asked.
async fn metrics(State(state): State<Shared>) -> Response {
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => not_found_path("/metrics"),
    }
}

fn not_found_path(path: &str) -> Response {
    ApiError::with_status(
        StatusCode::NOT_FOUND,
        format!("no route GET {path}"),
        Some("not_found"),
    )
    .into_response()
}

/// An engine error as the client sees it.
fn api_error(e: RequestError) -> ApiError {
    let param = e.param.map(str::to_owned);
    match e.kind {
        ErrorKind::Invalid => ApiError {
            param,
            ..ApiError::bad_request(e.message)
        },
        ErrorKind::ContextLength => ApiError {
            param,
            code: Some("context_length_exceeded"),
            ..ApiError::bad_request(e.message)
        },
        ErrorKind::NoTemplate => ApiError::bad_request(e.message),
        ErrorKind::QueueFull { retry_after_s } => ApiError {
            retry_after: Some(retry_after_s),
            ..ApiError::with_status(
                StatusCode::TOO_MANY_REQUESTS,
                e.message,
                Some("rate_limit_exceeded"),
            )
        },
        ErrorKind::Internal => {
            ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.message, None)
        }
    }
}

fn loaded(state: &AppState) -> Result<&ModelInfo, ApiError> {
    state.model.get().ok_or_else(|| {
        ApiError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading",
            Some("model_loading"),
        )
    })
}

async fn models(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let info = loaded(&state)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": info.id,
            "object": "model",
            "created": now(),
            "owned_by": "hearth",
            "meta": {"n_ctx": info.n_ctx},
        }],
    })))
}

/// The body, with a too-large body as a 413 in OpenAI's shape.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::with_status(
                status,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                Some("request_too_large"),
            )
        } else {
            ApiError::with_status(status, e.body_text(), None)
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let account = Account::new(&state, "/v1/chat/completions", caller, Instant::now());
    let r = body_bytes(body).and_then(|b| request::parse_chat(&b));
    respond(state, r, Kind::Chat, account).await
}

async fn completions(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let account = Account::new(&state, "/v1/completions", caller, Instant::now());
    let r = body_bytes(body).and_then(|b| request::parse_completion(&b));
    respond(state, r, Kind::Text, account).await
}

/// Holds a request to its key's largest `max_tokens` (the default when it asks for none).
fn within_key_limits(req: GenRequest, limits: &Limits) -> Result<GenRequest, ApiError> {
    let mut req = req;
    if let Some(max) = limits.max_tokens {
        match req.request.max_tokens {
            Some(m) if m > max => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!("'max_tokens' may be at most {max} for this key, not {m}"),
                ))
            }
            Some(_) => {}
            None => req.request.max_tokens = Some(max),
        }
    }
    Ok(req)
}

async fn respond(
    state: Shared,
    req: Result<GenRequest, ApiError>,
    kind: Kind,
    mut account: Account,
) -> Response {
    let req = req.and_then(|r| within_key_limits(r, &account.caller.limits));
    match start(&state, req).await {
        Ok((info, req, rx)) => {
            let meta = Meta {
                id: format!(
                    "{}-{:016x}",
                    if kind == Kind::Chat {
                        "chatcmpl"
                    } else {
                        "cmpl"
                    },
                    request::random_seed()
                ),
                created: now(),
                model: info.id.clone(),
                kind,
                n: req.request.n,
                account,
            };
            let logprobs = req.request.logprobs.is_some();
            if req.stream {
                stream(meta, req.include_usage, rx)
            } else {
                whole(meta, logprobs, rx).await
            }
        }
        Err(e) => {
            account.failed(&e);
            e.into_response()
        }
    }
}

/// Queues the job and waits for the engine to accept it, so that a bad prompt or a full
/// queue is a plain error response rather than an error inside a stream.
async fn start(
    state: &AppState,
    req: Result<GenRequest, ApiError>,
) -> Result<(ModelInfo, GenRequest, UnboundedReceiver<Event>), ApiError> {
    let info = loaded(state)?.clone();
    let req = req?;
    let (tx, mut rx) = unbounded_channel();
    let job = Job {
        request: req.request.clone(),
        events: tx,
    };
    let sent = state
        .jobs
        .lock()
        .map(|q| q.send(job).is_ok())
        .unwrap_or(false);
    if !sent {
        return Err(engine_gone());
    }
    match rx.recv().await {
        Some(Event::Started { .. }) => Ok((info, req, rx)),
        Some(Event::Error(e)) => Err(api_error(e)),
        _ => Err(engine_gone()),
    }
}

fn engine_gone() -> ApiError {
    ApiError::with_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the engine has stopped",
        None,
    )
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    /// Choices.
    n: usize,
    /// Counts the request when the response ends.
    account: Account,
}

/// The usage of a whole request: the prompt once, the choices' generated tokens summed.
#[derive(Default)]
struct TotalUsage {
    prompt: usize,
    cached: usize,
    completion: usize,
    reasoning: usize,
}

impl TotalUsage {
    fn add(&mut self, u: &Usage) {
        self.prompt = u.prompt_tokens;
        self.cached = u.cached_tokens;
        self.completion += u.completion_tokens;
        self.reasoning += u.reasoning_tokens;
    }

    fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }
}

/// One choice of a non-streamed answer, as it is collected.
#[derive(Default)]
struct Collected {
    content: String,
    reasoning: String,
    logprobs: Vec<TokenLogprob>,
    tool_calls: Vec<Value>,
    finish: Option<Finish>,
}

/// A non-streamed answer: collects every event of every choice.
async fn whole(mut meta: Meta, want_logprobs: bool, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut choices: Vec<Collected> = (0..meta.n).map(|_| Collected::default()).collect();
    let mut open = meta.n;
    while open > 0 {
        match rx.recv().await {
            Some(Event::Delta {
                index,
                reasoning,
                content,
                logprobs,
            }) => {
                if let Some(c) = choices.get_mut(index) {
                    c.reasoning.push_str(&reasoning);
                    c.content.push_str(&content);
                    c.logprobs.extend(logprobs);
                }
            }
            Some(Event::Done {
                index,
                finish,
                usage: u,
                ..
            }) => {
                if let Some(c) = choices.get_mut(index) {
                    c.finish = Some(finish);
                    meta.account.usage.add(&u);
                    open -= 1;
                }
            }
            Some(Event::ToolCalls { index, calls }) => {
                if let Some(c) = choices.get_mut(index) {
                    c.tool_calls = meta.tool_calls(index, &calls, false);
                }
            }
            Some(Event::Error(e)) => {
                let e = api_error(e);
                meta.account.failed(&e);
                return e.into_response();
            }
            Some(Event::Started { .. }) => {}
            None => return engine_gone().into_response(),
        }
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let finish = c.finish.map(Finish::as_str);
            match meta.kind {
                Kind::Chat => {
                    let mut message = json!({"role": "assistant", "content": c.content});
                    if !c.tool_calls.is_empty() {
                        // OpenAI's shape for a turn that only calls: no content.
                        if c.content.is_empty() {
                            message["content"] = Value::Null;
                        }
                        message["tool_calls"] = Value::Array(c.tool_calls);
                    }
                    if !c.reasoning.is_empty() {
                        message["reasoning_content"] = Value::String(c.reasoning);
                    }
                    let logprobs = if want_logprobs {
                        chat_logprobs(&c.logprobs)
                    } else {
                        Value::Null
                    };
                    json!({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
                }
                Kind::Text => {
                    let logprobs = if want_logprobs {
                        text_logprobs(&c.logprobs, &mut 0)
                    } else {
                        Value::Null
                    };
                    json!({"index": index, "text": c.content, "logprobs": logprobs, "finish_reason": finish})
                }
            }
        })
        .collect();
    Json(json!({
        "id": meta.id,
        "object": if meta.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": meta.account.usage.json(),
    }))
    .into_response()
}

impl Meta {
    /// One streamed chunk with one choice.
    fn chunk(&self, choice: Value, include_usage: bool) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// A delta chunk of choice `index`; `lps` are its tokens' log-probabilities (`null`
    /// when there are none), `offset` the choice's text offset of the next token for the
    /// legacy shape.
    #[allow(clippy::too_many_arguments)]
    fn delta(
        &self,
        index: usize,
        reasoning: &str,
        content: &str,
        lps: &[TokenLogprob],
        offset: &mut usize,
        first: bool,
        include_usage: bool,
    ) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if !content.is_empty() || first {
                    delta["content"] = json!(content);
                }
                if !reasoning.is_empty() {
                    delta["reasoning_content"] = json!(reasoning);
                }
                let logprobs = if lps.is_empty() {
                    Value::Null
                } else {
                    chat_logprobs(lps)
                };
                self.chunk(
                    json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}),
                    include_usage,
                )
            }
            Kind::Text => {
                let logprobs = if lps.is_empty() {
                    Value::Null
                } else {
                    text_logprobs(lps, offset)
                };
                self.chunk(
                    json!({"index": index, "text": content, "logprobs": logprobs, "finish_reason": null}),
                    include_usage,
                )
            }
        }
    }

    /// Choice `index`'s calls as OpenAI's `tool_calls` entries (with `index` each, for a
    /// streamed delta). Ids are the response id's and the choice's and call's numbers, so
    /// they are unique within the conversation as long as response ids are.
    fn tool_calls(&self, index: usize, calls: &[ToolCall], streamed: bool) -> Vec<Value> {
        let base = self.id.trim_start_matches("chatcmpl-");
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({
                    "id": format!("call_{base}_{index}_{i}"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                });
                if streamed {
                    v["index"] = json!(i);
                }
                v
            })
            .collect()
    }

    fn finish(&self, index: usize, finish: Finish, include_usage: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish.as_str()})
            }
            Kind::Text => {
                json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish.as_str()})
            }
        };
        self.chunk(choice, include_usage)
    }
}

/// A token's text for JSON: its bytes, with partial UTF-8 as U+FFFD (the exact bytes go
/// in `bytes`).
fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chat's shape: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`.
fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|(b, l)| json!({"token": token_text(b), "logprob": l, "bytes": b}))
                .collect();
            json!({
                "token": token_text(&lp.bytes),
                "logprob": lp.logprob,
                "bytes": lp.bytes,
                "top_logprobs": top,
            })
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The legacy completions shape: parallel lists, `top_logprobs` as `{token: logprob}`
/// objects, and `text_offset` in characters into the generated text (`offset` carries it
/// from one streamed chunk to the next).
fn text_logprobs(lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(lps.len());
    let mut logprobs = Vec::with_capacity(lps.len());
    let mut tops = Vec::with_capacity(lps.len());
    let mut offsets = Vec::with_capacity(lps.len());
    for lp in lps {
        let text = token_text(&lp.bytes);
        offsets.push(*offset);
        *offset += text.chars().count();
        tokens.push(text);
        logprobs.push(lp.logprob);
        let top: serde_json::Map<String, Value> = lp
            .top
            .iter()
            .map(|(b, l)| (token_text(b), json!(l)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    })
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// A streamed answer. A task turns engine events into SSE chunks; when the client goes
/// away the body (and so the task's sender) is dropped, the task ends, its engine
/// receiver is dropped, and the engine stops at its next step.
fn stream(mut meta: Meta, include_usage: bool, mut rx: UnboundedReceiver<Event>) -> Response {
    let (out, body_rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        // Per choice: whether its first chunk is still to come, and its text offset.
        let mut first = vec![true; meta.n];
        let mut offset = vec![0usize; meta.n];
        if meta.kind == Kind::Chat {
            // The role comes first, as OpenAI sends it.
            for (index, first) in first.iter_mut().enumerate() {
                let c = meta.delta(index, "", "", &[], &mut 0, true, include_usage);
                if out.send(Ok(sse(&c))).await.is_err() {
                    return;
                }
                *first = false;
            }
        }
        let mut open = meta.n;
        loop {
            let chunk = match rx.recv().await {
                Some(Event::Delta {
                    index,
                    reasoning,
                    content,
                    logprobs,
                }) if index < meta.n => {
                    let c = meta.delta(
                        index,
                        &reasoning,
                        &content,
                        &logprobs,
                        &mut offset[index],
                        first[index],
                        include_usage,
                    );
                    first[index] = false;
                    c
                }
                Some(Event::Done {
                    index,
                    finish,
                    usage: u,
                    ..
                }) => {
                    meta.account.usage.add(&u);
                    open = open.saturating_sub(1);
                    if out
                        .send(Ok(sse(&meta.finish(index, finish, include_usage))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if open > 0 {
                        continue;
                    }
                    if include_usage {
                        let mut u = json!({
                            "id": meta.id,
                            "object": if meta.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": meta.created,
                            "model": meta.model,
                            "choices": [],
                        });
                        u["usage"] = meta.account.usage.json();
                        if out.send(Ok(sse(&u))).await.is_err() {
                            return;
                        }
                    }
                    let _ = out.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                    return;
                }
                Some(Event::ToolCalls { index, calls }) if index < meta.n => {
                    let mut delta = json!({"tool_calls": meta.tool_calls(index, &calls, true)});
                    if first[index] {
                        delta["role"] = json!("assistant");
                        first[index] = false;
                    }
                    meta.chunk(
                        json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null}),
                        include_usage,
                    )
                }
                Some(Event::Error(e)) => {
                    let e = api_error(e);
                    meta.account.failed(&e);
                    let _ = out.send(Ok(sse(&e.body()))).await;
                    return;
                }
                Some(_) => continue,
                None => return,
            };
            if out.send(Ok(sse(&chunk))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| engine_gone().into_response())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
