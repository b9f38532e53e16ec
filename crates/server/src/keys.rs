//! API keys and their quotas (`--keys FILE`): who may use the server and how much.
//!
//! The file is TOML, one `[[key]]` table per key, holding the key's SHA-256 (never the
//! key) and its limits, e.g. what `hearth key new alice` prints:
//!
//! ```toml
//! [[key]]
//! name = "alice"
//! sha256 = "…64 hex digits…"
//! requests_per_minute = 60    # optional, each limit
//! tokens_per_day = 200000     # prompt + completion tokens, per UTC day
//! concurrent = 4              # requests at once
//! max_tokens = 4096           # the largest max_tokens a request may ask for
//! ```
//!
//! A presented key is hashed and compared with every entry in constant time (no early
//! exit, no byte-wise short cut), so the time taken says nothing about which key or how
//! much of it matched. Quotas are kept in memory: a restart forgets them.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The limits of one key; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests started in any 60 seconds.
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Requests running at once.
    pub concurrent: Option<u32>,
    /// The largest `max_tokens` a request may ask for (and the default when it asks
    /// for none).
    pub max_tokens: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntryFile {
    name: String,
    sha256: String,
    #[serde(flatten)]
    limits: Limits,
}

/// One named key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// Its name, as the usage log records it.
    pub name: String,
    hash: [u8; 32],
    /// Its limits.
    pub limits: Limits,
}

/// The keys a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    entries: Vec<KeyEntry>,
}

/// SHA-256 of a key, as the file stores it.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A fresh key (`hk-` and 64 hex digits from the kernel's random source) and the TOML
/// block that admits it under `name`.
pub fn new_key(name: &str) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let key = format!("hk-{}", hex(&bytes));
    let block = format!(
        "[[key]]\nname = {}\nsha256 = \"{}\"\n# requests_per_minute = 60\n# tokens_per_day = 200000\n# concurrent = 4\n# max_tokens = 4096\n",
        toml_string(name),
        hex(&hash_key(&key))
    );
    Ok((key, block))
}

fn toml_string(s: &str) -> String {
    // TOML basic strings share JSON's escapes for what a name may hold.
    serde_json::to_string(s).unwrap_or_else(|_| "\"key\"".to_owned())
}

impl Keys {
    /// The one-key form (`--api-key`, `HEARTH_API_KEY`): a key named `default`, no limits.
    pub fn single(key: &str) -> Keys {
        Keys {
            entries: vec![KeyEntry {
                name: "default".into(),
                hash: hash_key(key),
                limits: Limits::default(),
            }],
        }
    }

    /// Reads a keys file; errors name the file and what is wrong.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Keys::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a keys file's text.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries: Vec<KeyEntry> = Vec::with_capacity(file.key.len());
        for k in file.key {
            if k.name.is_empty() || k.name.len() > 64 {
                return Err(format!("key name {:?} must be 1 to 64 characters", k.name));
            }
            if entries.iter().any(|e| e.name == k.name) {
                return Err(format!("two keys are named {:?}", k.name));
            }
            let hash = unhex(&k.sha256.to_ascii_lowercase())
                .ok_or_else(|| format!("key {:?}: sha256 must be 64 hex digits", k.name))?;
            entries.push(KeyEntry {
                name: k.name,
                hash,
                limits: k.limits,
            });
        }
        if entries.is_empty() {
            return Err("no [[key]] entries".into());
        }
        Ok(Keys { entries })
    }

    /// The entry `presented` belongs to. Every entry is compared, each in constant time.
    pub fn identify(&self, presented: &str) -> Option<&KeyEntry> {
        let h = hash_key(presented);
        let mut found = None;
        for e in &self.entries {
            let diff = e.hash.iter().zip(&h).fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some(e);
            }
        }
        found
    }
}

/// Why a request is held back: which limit, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// The limit, in words.
    pub what: &'static str,
    /// Seconds until it would pass.
    pub retry_after_s: u64,
}

/// Each key's use so far, shared by all requests.
#[derive(Debug, Default)]
pub struct Quotas {
    state: Mutex<HashMap<String, KeyUse>>,
}

#[derive(Debug, Default)]
struct KeyUse {
    /// When the requests of the last 60 seconds started.
    starts: VecDeque<Instant>,
    running: u32,
    /// The UTC day `tokens` counts, and the count.
    day: u64,
    tokens: u64,
}

/// Holds one of a key's concurrent slots until dropped (when the response ends).
#[derive(Debug)]
pub struct Permit {
    quotas: Arc<Quotas>,
    name: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.quotas.state.lock() {
            if let Some(u) = s.get_mut(&self.name) {
                u.running = u.running.saturating_sub(1);
            }
        }
    }
}

fn utc_day_and_rest() -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (now / 86_400, 86_400 - now % 86_400)
}

impl Quotas {
    /// Admits a request of `key` if its limits allow one more now; the permit holds its
    /// concurrent slot.
    pub fn admit(self: &Arc<Self>, key: &KeyEntry) -> Result<Permit, OverLimit> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let u = s.entry(key.name.clone()).or_default();
        let now = Instant::now();
        while u
            .starts
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(60))
        {
            u.starts.pop_front();
        }
        let (day, rest_of_day) = utc_day_and_rest();
        if u.day != day {
            u.day = day;
            u.tokens = 0;
        }
        let l = &key.limits;
        if l.tokens_per_day.is_some_and(|max| u.tokens >= max) {
            return Err(OverLimit {
                what: "tokens per day",
                retry_after_s: rest_of_day,
            });
        }
        if l.requests_per_minute
            .is_some_and(|max| u.starts.len() >= max as usize)
        {
            let oldest = u.starts.front().copied().unwrap_or(now);
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
            return Err(OverLimit {
                what: "requests per minute",
                retry_after_s: wait.as_secs().max(1),
            });
        }
        if l.concurrent.is_some_and(|max| u.running >= max) {
            return Err(OverLimit {
                what: "concurrent requests",
                retry_after_s: 1,
            });
        }
        u.starts.push_back(now);
        u.running += 1;
        Ok(Permit {
            quotas: self.clone(),
            name: key.name.clone(),
        })
    }

    /// Counts a finished request's tokens against its key's daily quota.
    pub fn spend(&self, name: &str, tokens: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let u = s.entry(name.to_owned()).or_default();
        let (day, _) = utc_day_and_rest();
        if u.day != day {
            u.day = day;
            u.tokens = 0;
        }
        u.tokens = u.tokens.saturating_add(tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_round_trip() {
        let (key, block) = new_key("alice").unwrap();
        assert!(key.starts_with("hk-") && key.len() == 67);
        let keys = Keys::parse(&format!(
            "{block}\n[[key]]\nname = \"bob\"\nsha256 = \"{}\"\nrequests_per_minute = 2\n",
            hex(&hash_key("bob-key"))
        ))
        .unwrap();
        assert_eq!(keys.identify(&key).unwrap().name, "alice");
        assert_eq!(
            keys.identify("bob-key").unwrap().limits.requests_per_minute,
            Some(2)
        );
        assert!(keys.identify("nobody").is_none());
        for bad in [
            "",
            "[[key]]\nname = \"a\"\nsha256 = \"00\"\n",
            "[[key]]\nname = \"a\"\nsha256 = \"x\"\nrpm = 3\n",
            "[[key]]\nname = \"\"\nsha256 = \"00\"\n",
        ] {
            assert!(Keys::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quotas_hold_each_key_apart() {
        let keys = Keys::parse(&format!(
            "[[key]]\nname = \"a\"\nsha256 = \"{}\"\nrequests_per_minute = 2\nconcurrent = 1\ntokens_per_day = 100\n\n[[key]]\nname = \"b\"\nsha256 = \"{}\"\n",
            hex(&hash_key("ka")),
            hex(&hash_key("kb"))
        ))
        .unwrap();
        let (a, b) = (keys.identify("ka").unwrap(), keys.identify("kb").unwrap());
        let q = Arc::new(Quotas::default());
        let p = q.admit(a).unwrap();
        assert_eq!(q.admit(a).unwrap_err().what, "concurrent requests");
        drop(p);
        drop(q.admit(a).unwrap());
        let over = q.admit(a).unwrap_err();
        assert_eq!(over.what, "requests per minute");
        assert!((1..=60).contains(&over.retry_after_s));
        for _ in 0..5 {
            drop(q.admit(b).unwrap());
        }
        q.spend("b", 1_000_000);
        drop(q.admit(b).unwrap());
        let q2 = Arc::new(Quotas::default());
        q2.spend("a", 100);
        assert_eq!(q2.admit(a).unwrap_err().what, "tokens per day");
    }
}
