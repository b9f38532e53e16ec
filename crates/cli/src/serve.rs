//! `hearth serve MODEL`: an OpenAI-compatible HTTP server (see the `hearth-server` crate).
//!
//! It listens on 127.0.0.1 unless told otherwise: exposing a model to the network is a
//! choice, and then `--api-key` (or `HEARTH_API_KEY`) should guard it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use hearth_server::keys::Keys;
use hearth_server::{EngineConfig, ServeConfig};

/// The arguments of `hearth serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The GGUF model file, or a stored model's name (see `hearth list`).
    pub model: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port to listen on (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 routes (default: the HEARTH_API_KEY
    /// environment variable, which keeps the key out of the process list).
    #[arg(long, conflicts_with = "keys")]
    pub api_key: Option<String>,
    /// Named keys with limits, from a TOML file of SHA-256 hashes (see `hearth key new`);
    /// over a limit the answer is 429 with Retry-After.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Write one JSON line per API request (key, endpoint, token counts, duration,
    /// status; never prompt or output text) to DIR/usage.jsonl; `hearth usage` sums it.
    #[arg(long, value_name = "DIR")]
    pub usage_log: Option<PathBuf>,
    /// Tokens of KV cache shared by all requests (the pool); one request may use all of
    /// it. Default: room for two sequences of 4096 tokens (or of the training context if
    /// shorter), within a quarter of the available memory.
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Most requests generating at once (each step batches all of them). Default: one
    /// per 1024 tokens of --ctx, between 1 and 8. Above 1, the output head and the layer
    /// matrices are packed for batched steps where the CPU has kernels for their format
    /// (x86 AVX2 or AVX-512 VNNI), which costs a second copy of them in memory: the
    /// layers' Q8_0, Q4_K and Q6_K matrices only where the copy is at most half the
    /// layers or fits in a quarter of the available memory (the size is printed at
    /// start). With AVX-512 VNNI, where every matrix packs, the copies replace the
    /// file's bytes instead.
    #[arg(short = 'n', long)]
    pub parallel: Option<usize>,
    /// Most requests waiting for a free slot; beyond it a request is answered 429 with
    /// Retry-After.
    #[arg(long, default_value_t = hearth_engine::scheduler::DEFAULT_QUEUE)]
    pub queue: usize,
    /// Most tokens per forward step (decode tokens plus prompt chunks).
    #[arg(short = 'b', long = "batch-size", default_value_t = hearth_engine::scheduler::DEFAULT_BATCH)]
    pub batch: usize,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Keep the model file mapped instead of copying it onto huge pages: less memory,
    /// slower decoding.
    #[arg(long)]
    pub mmap: bool,
    /// Also answer requests for this host name (repeatable); localhost and IP literals
    /// are always answered, other names refused (against DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Let web pages from ORIGIN (e.g. `http://localhost:3000`, or `*`) call the API;
    /// CORS is off by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// Most open connections; more are closed as they arrive.
    #[arg(long, default_value_t = hearth_server::listen::ConnLimits::default().max_connections)]
    pub max_connections: usize,
    /// Most open connections per client address; more are answered 429.
    #[arg(long, default_value_t = hearth_server::listen::ConnLimits::default().max_per_address)]
    pub max_connections_per_address: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = hearth_server::listen::ConnLimits::default().header_timeout.as_secs())]
    pub header_timeout: u64,
    /// Once the model is loaded, seal the process before serving: seccomp denies new
    /// network sockets, connect and sends to any address, Landlock limits files to
    /// reading the model and TCP to this port (as far as the kernel supports); a
    /// self-test proves it. Refuses to start if the seal cannot be applied.
    #[arg(long)]
    pub sealed: bool,
    #[command(flatten)]
    pub cache: crate::run::CacheTypeArgs,
}

/// Runs `hearth serve`.
pub fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    args.model = crate::store::resolve(&args.model)?;
    return_large_buffers_to_the_os();
    let threads = crate::run::threads(args.threads)?;
    if args.ctx == Some(0) {
        anyhow::bail!("--ctx must be at least 1");
    }
    if args.parallel == Some(0) {
        anyhow::bail!("--parallel must be at least 1");
    }
    if args.batch == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let keys = match &args.keys {
        Some(path) => Some(Keys::load(path).map_err(anyhow::Error::msg)?),
        None => args
            .api_key
            .or_else(|| std::env::var("HEARTH_API_KEY").ok())
            .filter(|k| !k.is_empty())
            .map(|k| Keys::single(&k)),
    };
    if args.max_connections == 0
        || args.max_connections_per_address == 0
        || args.header_timeout == 0
    {
        anyhow::bail!("--max-connections, --max-connections-per-address and --header-timeout must be at least 1");
    }
    if !args.host.is_loopback() && keys.is_none() {
        eprintln!(
            "hearth: warning: listening on {} without an API key: anyone who can reach this \
             address can use the model (use --keys FILE or --api-key)",
            args.host
        );
    }
    hearth_server::serve(ServeConfig {
        engine: EngineConfig {
            residency: crate::run::residency(&args.model, args.mmap),
            load_progress: crate::run::load_progress(&args.model),
            model: args.model,
            ctx: args.ctx,
            threads,
            parallel: args.parallel,
            queue: args.queue,
            batch: args.batch,
            kv_types: args.cache.types(),
        },
        addr: SocketAddr::new(args.host, args.port),
        keys,
        usage_log: args.usage_log,
        sealed: args.sealed,
        allow_hosts: args.allow_hosts,
        cors: args.cors,
        conn_limits: hearth_server::listen::ConnLimits {
            max_connections: args.max_connections,
            max_per_address: args.max_connections_per_address,
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
        },
    })
}

/// Makes glibc's allocator serve every block of 256 KiB or more with its own mapping,
/// given back to the OS when freed.
///
/// A server allocates and frees a few such buffers per request (a sampler's candidate
/// list is 8 bytes per vocabulary entry: 2 MiB for Gemma 3). glibc raises its mapping
/// threshold to the size of each mapped block freed, after which those buffers come from
/// the heap and their pages stay with the process: in a 5-minute soak (2,000 requests, 16
/// clients) the resident size crept 5.8 % above its level after warm-up. Setting the
/// threshold explicitly turns that adjustment off. Elsewhere (other C libraries, other
/// systems) this does nothing.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; it is called
    // before the server's threads start, and 256 KiB is within its accepted range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
