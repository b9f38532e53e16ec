//! The usage log (`--usage-log DIR`): one JSON line per API request in `DIR/usage.jsonl`,
//! saying who used what and how much, never what was said: no prompt, no output, no
//! request body. `hearth usage` sums it up.
//!
//! A line: `{"time": "2026-12-05T20:51:07Z", "key": "alice", "endpoint":
//! "/v1/chat/completions", "model": "gemma-3-270m-q4_k_m", "prompt_tokens": 15,
//! "cached_tokens": 0, "completion_tokens": 29, "reasoning_tokens": 0, "duration_ms":
//! 412, "status": 200}`. `key` is `null` without keys or for a refused key.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One request's line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it ended, UTC, RFC 3339 to the second.
    pub time: String,
    /// The key's name.
    pub key: Option<String>,
    /// The route.
    pub endpoint: String,
    /// The model id.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Of those, found in the prefix cache.
    pub cached_tokens: u64,
    /// Generated tokens, all choices.
    pub completion_tokens: u64,
    /// Of those, reasoning.
    pub reasoning_tokens: u64,
    /// From arrival to the end of the response.
    pub duration_ms: u64,
    /// The HTTP status.
    pub status: u16,
}

/// The open log.
#[derive(Debug)]
pub struct UsageLog {
    file: Mutex<std::fs::File>,
    path: PathBuf,
}

impl UsageLog {
    /// Opens (creating) `dir/usage.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<UsageLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("usage.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(UsageLog {
            file: Mutex::new(file),
            path,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a failed write is reported on stderr, never to the client).
    pub fn record(&self, r: &Record) {
        let Ok(mut line) = serde_json::to_vec(r) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            eprintln!(
                "hearth: cannot write the usage log {}: {e}",
                self.path.display()
            );
        }
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sums of a group of lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    /// Token sums.
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
}

/// How `hearth usage` groups lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Per key name (`-` for none).
    Key,
    /// Per UTC day.
    Day,
}

/// Sums the lines of a log by `by`; a line that is not a record is an error naming it.
pub fn summarise(log: impl BufRead, by: By) -> Result<BTreeMap<String, Totals>, String> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for (i, line) in log.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let group = match by {
            By::Key => r.key.clone().unwrap_or_else(|| "-".into()),
            By::Day => r.time.get(..10).unwrap_or("-").to_owned(),
        };
        let t = out.entry(group).or_default();
        t.requests += 1;
        t.errors += u64::from(r.status >= 400);
        t.prompt_tokens += r.prompt_tokens;
        t.cached_tokens += r.cached_tokens;
        t.completion_tokens += r.completion_tokens;
        t.reasoning_tokens += r.reasoning_tokens;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_sum_by_key_and_day() {
        let dir = std::env::temp_dir().join(format!("hearth-usage-{}", std::process::id()));
        let log = UsageLog::open(&dir).unwrap();
        let rec = |key: Option<&str>, time: &str, p, c, status| Record {
            time: time.into(),
            key: key.map(str::to_owned),
            endpoint: "/v1/chat/completions".into(),
            model: "m".into(),
            prompt_tokens: p,
            completion_tokens: c,
            status,
            ..Record::default()
        };
        log.record(&rec(Some("a"), "2026-12-05T01:00:00Z", 10, 5, 200));
        log.record(&rec(Some("a"), "2026-12-06T01:00:00Z", 1, 2, 200));
        log.record(&rec(None, "2026-12-06T02:00:00Z", 0, 0, 401));
        let read = || std::io::BufReader::new(std::fs::File::open(log.path()).unwrap());
        let by_key = summarise(read(), By::Key).unwrap();
        assert_eq!(by_key["a"].prompt_tokens, 11);
        assert_eq!(by_key["a"].completion_tokens, 7);
        assert_eq!(by_key["-"].errors, 1);
        let by_day = summarise(read(), By::Day).unwrap();
        assert_eq!(by_day["2026-12-06"].requests, 2);
        assert!(summarise(std::io::Cursor::new("{not json}\n"), By::Key).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
