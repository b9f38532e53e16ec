//! Hearth's OpenAI-compatible HTTP server.
//!
//! The engine ([`hearth_engine::scheduler`]) runs on its own thread and owns the model,
//! the KV pool and the compute pool, batching every running request into each forward
//! step; the HTTP side ([`routes`], on tokio and axum) parses and validates requests
//! ([`request`]), queues them to the engine, and formats the deltas it streams back. A
//! request whose client has gone away is cancelled at the engine's next step. `/metrics`
//! renders the engine's measurements in Prometheus' text format. A chat page for people
//! ([`web`]) is served at `/`.

pub mod error;
pub mod exposure;
pub mod keys;
pub mod listen;
pub mod request;
pub mod routes;
pub mod structured;
pub mod usage;
pub mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;

pub use hearth_engine::scheduler::EngineConfig;
use hearth_engine::scheduler::{self, metrics as engine_metrics};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Everything `hearth serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The keys clients must present as `Authorization: Bearer KEY` (with their limits),
    /// if any.
    pub keys: Option<keys::Keys>,
    /// The directory of the usage log (`usage.jsonl`), if any.
    pub usage_log: Option<std::path::PathBuf>,
    /// Seal the process (`hearth_seal`) once the model is loaded, before serving.
    pub sealed: bool,
    /// Host names to answer besides localhost and IP literals (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// The origin browsers may call from (`--cors`).
    pub cors: Option<String>,
    /// Connection limits and the header-read timeout.
    pub conn_limits: listen::ConnLimits,
}

/// Runs the server until the process is interrupted or the model fails to load.
pub fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(config))
}

/// Installs the process-wide recorder the engine's metrics go to, with histogram buckets
/// for the latencies and batch sizes, and describes every metric. `None` if a recorder
/// was already installed (a second server in one process, in tests).
fn install_metrics() -> Option<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for &(name, kind, _) in engine_metrics::NAMES {
        if kind == engine_metrics::Kind::Histogram {
            let buckets = if name.ends_with("_seconds") {
                engine_metrics::LATENCY_BUCKETS
            } else {
                engine_metrics::BATCH_BUCKETS
            };
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .ok()?;
        }
    }
    let handle = builder.install_recorder().ok()?;
    for &(name, kind, help) in engine_metrics::NAMES {
        match kind {
            engine_metrics::Kind::Gauge => metrics::describe_gauge!(name, help),
            engine_metrics::Kind::Counter => metrics::describe_counter!(name, help),
            engine_metrics::Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    Some(handle)
}

async fn serve_async(config: ServeConfig) -> anyhow::Result<()> {
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let state = Arc::new(routes::AppState {
        jobs: Mutex::new(jobs_tx),
        model: OnceLock::new(),
        keys: config.keys.clone(),
        quotas: Arc::new(keys::Quotas::default()),
        usage: match &config.usage_log {
            Some(dir) => Some(
                usage::UsageLog::open(dir)
                    .with_context(|| format!("cannot open the usage log in {}", dir.display()))?,
            ),
            None => None,
        },
        metrics: install_metrics(),
        sealed: OnceLock::new(),
        draining: std::sync::atomic::AtomicBool::new(false),
        in_flight: std::sync::atomic::AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let local = listener.local_addr().context("no local address")?;
    eprintln!(
        "hearth: listening on http://{local} (loading {})",
        config.engine.model.display()
    );

    let (loaded_tx, mut loaded_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let engine_state = state.clone();
    let engine_config = config.engine.clone();
    let kv_types = engine_config.kv_types;
    let needs_key = config.keys.is_some();
    std::thread::Builder::new()
        .name("hearth-engine".into())
        .spawn(move || {
            scheduler::run(engine_config, jobs_rx, move |loaded| match loaded {
                Ok(info) => {
                    eprintln!(
                        "hearth: model {} ready; KV pool {} tokens ({:.0} MiB, keys {}, values {}), up to {} tokens per sequence; {} sequences at once, {} waiting at most",
                        info.id,
                        info.n_ctx_pool,
                        (info.n_ctx_pool * info.kv_bytes_per_token) as f64 / (1 << 20) as f64,
                        kv_types.k,
                        kv_types.v,
                        info.n_ctx,
                        info.parallel,
                        info.queue
                    );
                    if info.packed_bytes > 0 {
                        eprintln!(
                            "hearth: weights packed for batched decoding ({:.0} MiB more memory)",
                            info.packed_bytes as f64 / (1 << 20) as f64
                        );
                    }
                    eprintln!("{}", web::ready_text(local, &info.id, needs_key));
                    let _ = engine_state.model.set(info);
                    let _ = loaded_tx.send(Ok(()));
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                }
            })
        })
        .context("cannot start the engine thread")?;

    if config.sealed {
        // Nothing is served before the seal: wait for the model, then seal every thread.
        match (&mut loaded_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("cannot load the model: {e}"),
            Err(_) => anyhow::bail!("the engine stopped while loading"),
        }
        let writable: Vec<_> = config.usage_log.iter().cloned().collect();
        let mechanisms = seal_process(&config.engine.model, &writable, Some(local.port()))?;
        let _ = state.sealed.set(mechanisms);
    }
    let exposure = Arc::new(exposure::Exposure {
        bound: Some(local),
        allow_hosts: config
            .allow_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        cors: config.cors.clone(),
    });
    // The last layer runs first: the Host check, then CORS, then the routes.
    let drain_state = state.clone();
    let app = routes::router(state)
        .layer(axum::middleware::from_fn_with_state(
            exposure.clone(),
            exposure::cors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            exposure,
            exposure::check_host,
        ));
    let server = listen::serve(listener, app, config.conn_limits, async move {
        stop_signal().await;
        drain(&drain_state).await;
    });
    if config.sealed {
        // The model is loaded: nothing is left to wait for but the server.
        server.await;
        return Ok(());
    }
    tokio::select! {
        () = server => Ok(()),
        Ok(Err(e)) = loaded_rx => Err(anyhow::anyhow!("cannot load the model: {e}")),
    }
}

/// How long running requests may take to finish after SIGTERM or Ctrl-C (Kubernetes
/// gives 30 s by default before it kills the pod).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

/// SIGTERM (how Kubernetes and systemd stop a service) or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The drain: `/health` turns not-ready and new API requests get 503 with `Retry-After`
/// (so a load balancer moves on), while the requests already running finish, for at most
/// [`DRAIN_TIMEOUT`]. The server then stops and the process exits 0.
async fn drain(state: &routes::AppState) {
    use std::sync::atomic::Ordering;
    state.draining.store(true, Ordering::Relaxed);
    let running = state.in_flight.load(Ordering::Relaxed);
    eprintln!("hearth: stopping: {running} request(s) running, new ones refused (503)");
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while state.in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = state.in_flight.load(Ordering::Relaxed);
    if left > 0 {
        eprintln!("hearth: stopping with {left} request(s) unfinished after {DRAIN_TIMEOUT:?}");
    } else {
        eprintln!("hearth: stopped: every request finished");
    }
}

/// Seals the process for `--sealed` (`hearth serve` and `hearth run`): reading the model
/// and writing in `writable` (the usage log's directory) stay allowed, TCP only to bind
/// `port`; then the self-test must find every way out
/// closed. Prints the result and returns the mechanisms in force; refuses (an error) if
/// the seal or its self-test fails.
pub fn seal_process(
    model: &std::path::Path,
    writable: &[std::path::PathBuf],
    port: Option<u16>,
) -> anyhow::Result<String> {
    let report = hearth_seal::seal(&hearth_seal::SealConfig {
        read: vec![model.to_owned()],
        write: writable.to_vec(),
        bind_port: port,
    })?;
    // The root folder: it exists everywhere, even in an image built `FROM scratch` (which
    // has no /etc/passwd: the open failed there for want of the file, not because of the
    // seal, and the self-test refused to start), and the seal never grants it.
    let test = hearth_seal::self_test(&report, std::path::Path::new("/"))?;
    let mechanisms = report.mechanisms();
    let probes: Vec<String> = test
        .probes
        .iter()
        .map(|(probe, outcome)| format!("{probe}: {outcome}"))
        .collect();
    eprintln!(
        "hearth: sealed: {mechanisms}; self-test: {}",
        probes.join("; ")
    );
    Ok(mechanisms)
}
