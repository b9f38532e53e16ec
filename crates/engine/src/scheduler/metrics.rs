//! The engine's measurements, recorded through the `metrics` facade: whoever installs a
//! recorder (the server's Prometheus exporter at `/metrics`) gets them; without one
//! (`hearth run`) each call is a no-op. These are the signals an inference-aware load
//! balancer routes on when Hearth runs as several replicas: queue depth, KV pool
//! occupancy, prefix-cache hits, token rates and latencies.
//!
//! Every name is listed in [`NAMES`] once, with its kind and help text, so the exporter
//! can describe them and tests can check them.

use std::time::Duration;

/// Sequences in the running set.
pub const RUNNING: &str = "hearth_requests_running";
/// Requests waiting for admission (new and preempted).
pub const WAITING: &str = "hearth_requests_waiting";
/// KV pool blocks held by sequences or the prefix cache.
pub const KV_BLOCKS_USED: &str = "hearth_kv_blocks_used";
/// KV pool blocks in all.
pub const KV_BLOCKS_TOTAL: &str = "hearth_kv_blocks_total";
/// KV pool blocks the prefix cache holds.
pub const KV_BLOCKS_CACHED: &str = "hearth_kv_blocks_cached";
/// Tokens per KV block.
pub const KV_BLOCK_TOKENS: &str = "hearth_kv_block_tokens";
/// The fraction (0 to 1) of the KV pool's blocks that running sequences hold: blocks only
/// the prefix cache holds count as free, since admission evicts them when it needs room
/// (vLLM's `kv_cache_usage_perc` counts the same way). The gauge an inference-aware
/// router compares replicas by; `KV_BLOCKS_USED` also counts the cache's blocks, and
/// nears the total on a server that is merely warm.
pub const KV_USAGE_RATIO: &str = "hearth_kv_cache_usage_ratio";
/// Prompt tokens taken from the prefix cache.
pub const PREFIX_HIT_TOKENS: &str = "hearth_prefix_cache_hit_tokens_total";
/// Prompt tokens of accepted requests.
pub const PROMPT_TOKENS: &str = "hearth_prompt_tokens_total";
/// Prompt tokens run through the model (not found in the cache; recomputations after
/// preemption included).
pub const PROMPT_TOKENS_COMPUTED: &str = "hearth_prompt_tokens_computed_total";
/// Generated tokens.
pub const GENERATED_TOKENS: &str = "hearth_generation_tokens_total";
/// Requests accepted into the queue.
pub const REQUESTS: &str = "hearth_requests_total";
/// Requests refused (label `reason`: `queue_full` or `invalid`).
pub const REJECTED: &str = "hearth_requests_rejected_total";
/// Choices ended (label `reason`: `stop`, `length`, `cancelled` or `error`).
pub const FINISHED: &str = "hearth_choices_finished_total";
/// Sequences preempted (their cells given back, to be recomputed) for lack of room.
pub const PREEMPTIONS: &str = "hearth_preemptions_total";
/// Arrival to first generated token, seconds.
pub const TTFT: &str = "hearth_time_to_first_token_seconds";
/// Between two generated tokens of one choice, seconds.
pub const ITL: &str = "hearth_inter_token_latency_seconds";
/// Tokens in a forward step.
pub const BATCH_TOKENS: &str = "hearth_batch_tokens";
/// Sequences in a forward step.
pub const BATCH_SEQUENCES: &str = "hearth_batch_sequences";
/// Duration of a forward step, seconds.
pub const STEP_SECONDS: &str = "hearth_step_seconds";

/// A metric's kind, for its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up.
    Counter,
    /// A distribution.
    Histogram,
}

/// Every metric: name, kind, help text.
pub const NAMES: &[(&str, Kind, &str)] = &[
    (
        RUNNING,
        Kind::Gauge,
        "Sequences running (decoding or processing their prompt)",
    ),
    (WAITING, Kind::Gauge, "Requests waiting for admission"),
    (
        KV_BLOCKS_USED,
        Kind::Gauge,
        "KV pool blocks in use (sequences and prefix cache)",
    ),
    (KV_BLOCKS_TOTAL, Kind::Gauge, "KV pool blocks in all"),
    (
        KV_BLOCKS_CACHED,
        Kind::Gauge,
        "KV pool blocks held by the prefix cache",
    ),
    (KV_BLOCK_TOKENS, Kind::Gauge, "Tokens per KV pool block"),
    (
        KV_USAGE_RATIO,
        Kind::Gauge,
        "Fraction of KV pool blocks held by running sequences (prefix-cache-only blocks count as free), 0 to 1",
    ),
    (
        PREFIX_HIT_TOKENS,
        Kind::Counter,
        "Prompt tokens reused from the prefix cache",
    ),
    (
        PROMPT_TOKENS,
        Kind::Counter,
        "Prompt tokens of accepted requests",
    ),
    (
        PROMPT_TOKENS_COMPUTED,
        Kind::Counter,
        "Prompt tokens run through the model",
    ),
    (GENERATED_TOKENS, Kind::Counter, "Generated tokens"),
    (REQUESTS, Kind::Counter, "Requests accepted"),
    (REJECTED, Kind::Counter, "Requests refused, by reason"),
    (FINISHED, Kind::Counter, "Choices ended, by reason"),
    (
        PREEMPTIONS,
        Kind::Counter,
        "Sequences preempted for lack of KV room",
    ),
    (
        TTFT,
        Kind::Histogram,
        "Seconds from arrival to the first generated token",
    ),
    (
        ITL,
        Kind::Histogram,
        "Seconds between generated tokens of one choice",
    ),
    (BATCH_TOKENS, Kind::Histogram, "Tokens per forward step"),
    (
        BATCH_SEQUENCES,
        Kind::Histogram,
        "Sequences per forward step",
    ),
    (STEP_SECONDS, Kind::Histogram, "Seconds per forward step"),
];

/// Bucket bounds for the latency histograms (seconds).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
];
/// Bucket bounds for the batch-size histograms.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Registers every metric (counters at 0, the labelled ones with each label), so that a
/// scrape before the first request already lists them all.
pub(crate) fn register_all() {
    for &(name, kind, _) in NAMES {
        match (kind, name) {
            (Kind::Counter, FINISHED) => {
                for reason in ["stop", "length", "cancelled", "error"] {
                    metrics::counter!(FINISHED, "reason" => reason).increment(0);
                }
            }
            (Kind::Counter, REJECTED) => {
                for reason in ["queue_full", "invalid"] {
                    metrics::counter!(REJECTED, "reason" => reason).increment(0);
                }
            }
            (Kind::Counter, _) => metrics::counter!(name).increment(0),
            (Kind::Gauge, _) => metrics::gauge!(name).set(0.0),
            (Kind::Histogram, _) => {
                let _ = metrics::histogram!(name);
            }
        }
    }
}

pub(crate) fn first_token(d: Duration) {
    metrics::histogram!(TTFT).record(d.as_secs_f64());
}

pub(crate) fn inter_token(d: Duration) {
    metrics::histogram!(ITL).record(d.as_secs_f64());
}

pub(crate) fn generated(n: u64) {
    metrics::counter!(GENERATED_TOKENS).increment(n);
}

pub(crate) fn finished(reason: &'static str) {
    metrics::counter!(FINISHED, "reason" => reason).increment(1);
}

pub(crate) fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED, "reason" => reason).increment(1);
}

pub(crate) fn accepted(prompt_tokens: usize) {
    metrics::counter!(REQUESTS).increment(1);
    metrics::counter!(PROMPT_TOKENS).increment(prompt_tokens as u64);
}

pub(crate) fn admitted(cached: usize) {
    metrics::counter!(PREFIX_HIT_TOKENS).increment(cached as u64);
}

pub(crate) fn preempted() {
    metrics::counter!(PREEMPTIONS).increment(1);
}

/// One forward step.
pub(crate) fn step(n_tokens: usize, n_prompt: usize, n_seqs: usize, d: Duration) {
    metrics::histogram!(BATCH_TOKENS).record(n_tokens as f64);
    metrics::histogram!(BATCH_SEQUENCES).record(n_seqs as f64);
    metrics::histogram!(STEP_SECONDS).record(d.as_secs_f64());
    metrics::counter!(PROMPT_TOKENS_COMPUTED).increment(n_prompt as u64);
}

/// The occupancy gauges, after each step. `evictable`: blocks only the prefix cache holds.
pub(crate) fn occupancy(
    running: usize,
    waiting: usize,
    used: usize,
    total: usize,
    cached: usize,
    evictable: usize,
) {
    metrics::gauge!(RUNNING).set(running as f64);
    metrics::gauge!(WAITING).set(waiting as f64);
    metrics::gauge!(KV_BLOCKS_USED).set(used as f64);
    metrics::gauge!(KV_BLOCKS_TOTAL).set(total as f64);
    metrics::gauge!(KV_BLOCKS_CACHED).set(cached as f64);
    metrics::gauge!(KV_BLOCK_TOKENS).set(hearth_models::BLOCK_CELLS as f64);
    let held = used.saturating_sub(evictable);
    let ratio = if total == 0 {
        0.0
    } else {
        held as f64 / total as f64
    };
    metrics::gauge!(KV_USAGE_RATIO).set(ratio);
}
