//! Hearth's OpenAI-compatible HTTP server.
//!
//! One engine thread owns the model, the KV cache and the compute pool ([`worker`]); the
//! HTTP side ([`routes`], on tokio and axum) parses and validates requests
//! ([`request`]), queues them to the engine, and formats the deltas it streams back. The
//! engine serves one request at a time, in arrival order; a request whose client has gone
//! away is cancelled at the next token step.

pub mod error;
pub mod logprobs;
pub mod request;
pub mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;

pub use worker::EngineConfig;

/// Everything `hearth serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
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

async fn serve_async(config: ServeConfig) -> anyhow::Result<()> {
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let state = Arc::new(routes::AppState {
        jobs: Mutex::new(jobs_tx),
        model: OnceLock::new(),
        api_key: config.api_key.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let local = listener.local_addr().context("no local address")?;
    eprintln!(
        "hearth: listening on http://{local} (loading {})",
        config.engine.model.display()
    );

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let engine_state = state.clone();
    let engine_config = config.engine.clone();
    std::thread::Builder::new()
        .name("hearth-engine".into())
        .spawn(move || {
            worker::run(engine_config, jobs_rx, move |loaded| match loaded {
                Ok(info) => {
                    eprintln!("hearth: model {} ready; context {}", info.id, info.n_ctx);
                    let _ = engine_state.model.set(info);
                }
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            })
        })
        .context("cannot start the engine thread")?;

    let app = routes::router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    tokio::select! {
        r = server => r.context("the HTTP server failed"),
        Ok(e) = failed_rx => Err(anyhow::anyhow!("cannot load the model: {e}")),
    }
}
