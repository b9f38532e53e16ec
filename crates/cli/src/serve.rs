//! `hearth serve MODEL`: an OpenAI-compatible HTTP server (see the `hearth-server` crate).
//!
//! It listens on 127.0.0.1 unless told otherwise: exposing a model to the network is a
//! choice, and then `--api-key` (or `HEARTH_API_KEY`) should guard it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use hearth_server::{EngineConfig, ServeConfig};

/// The arguments of `hearth serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 routes (default: the HEARTH_API_KEY
    /// environment variable, which keeps the key out of the process list).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Context size in tokens, prompt included (default: 4096, or the model's training
    /// context if smaller).
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Keep the model file mapped instead of copying it onto huge pages: less memory,
    /// slower decoding.
    #[arg(long)]
    pub mmap: bool,
}

/// Runs `hearth serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let threads = crate::run::threads(args.threads)?;
    if args.ctx == Some(0) {
        anyhow::bail!("--ctx must be at least 1");
    }
    let api_key = args
        .api_key
        .or_else(|| std::env::var("HEARTH_API_KEY").ok())
        .filter(|k| !k.is_empty());
    hearth_server::serve(ServeConfig {
        engine: EngineConfig {
            residency: crate::run::residency(&args.model, args.mmap),
            model: args.model,
            ctx: args.ctx,
            threads,
        },
        addr: SocketAddr::new(args.host, args.port),
        api_key,
    })
}
