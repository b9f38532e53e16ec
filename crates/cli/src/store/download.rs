//! One file downloaded into its `.part`, resumed and verified.
//!
//! The bytes go to `FILE.gguf.part` beside where the file will live. A `.part` left by an
//! earlier run is continued from its length with `Range: bytes=N-` (a 206 continues it; a
//! 200 means the server does not resume, and the part starts over), and a connection cut
//! mid-body is retried with backoff, resuming each time. The SHA-256 runs over the whole
//! file: the bytes already in the part are hashed first, then every byte as it is
//! written, so a resumed file is verified exactly like one fetched in one go. Nothing is
//! renamed here; the caller moves a verified part into place (see `pull.rs`).
//!
//! The part is locked (`flock`) while a `hearth pull` writes it, so two pulls of one file
//! cannot interleave their bytes.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use ureq::http::StatusCode;

use super::client::{status_error, Client, FetchError, Linked};
use super::url::Url;

/// Tries after a cut connection before giving up, each after twice the last wait (1 s
/// first). The count starts again whenever a try brought bytes, so a long download over
/// a flaky line goes on as long as it progresses.
const RETRIES: u32 = 5;

/// What a downloaded file must be, as far as anyone said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Lower-case hex SHA-256.
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

impl Expected {
    /// Adds what the hub said on the way to the file; two sources that disagree are an
    /// error (the file changed between the file list and the download, or one lies).
    pub fn add(&mut self, linked: &Linked, what: &str) -> anyhow::Result<()> {
        if let Some(sha) = &linked.sha256 {
            match &self.sha256 {
                Some(known) if known != sha => bail!(
                    "{what}: the hub gives two SHA-256 for it ({known}, {sha}); \
                     the repository may have changed, try again"
                ),
                _ => self.sha256 = Some(sha.clone()),
            }
        }
        if let Some(size) = linked.size {
            self.add_size(size, what)?;
        }
        Ok(())
    }

    fn add_size(&mut self, size: u64, what: &str) -> anyhow::Result<()> {
        match self.size {
            Some(known) if known != size => bail!(
                "{what}: the server gives two sizes for it ({known} and {size} bytes); \
                 the file may have changed, try again"
            ),
            _ => self.size = Some(size),
        }
        Ok(())
    }
}

/// A file to download: where from, how to call it in messages, what it must be.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub url: Url,
    pub label: String,
    pub expected: Expected,
}

/// A downloaded file's size and SHA-256, and whether the hash was checked against one
/// the hub published.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub size: u64,
    pub sha256: String,
    pub checked: bool,
}

/// A `.part` file, locked for as long as this value lives.
pub(crate) struct PartFile {
    file: File,
    path: PathBuf,
}

impl PartFile {
    /// Opens (or creates) the part at `path` and locks it.
    pub fn open(path: &Path) -> anyhow::Result<PartFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{}: another hearth pull is downloading this file",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        Ok(PartFile {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Empties the part (a download that starts over).
    fn truncate(&mut self) -> anyhow::Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .with_context(|| format!("cannot truncate {}", self.path.display()))
    }

    /// Hashes what the part holds into `hasher`, leaves the position at its end, and
    /// returns its length.
    fn hash_existing(&mut self, hasher: &mut Sha256, progress: &Progress) -> anyhow::Result<u64> {
        let context = || format!("cannot read {}", self.path.display());
        self.file.seek(SeekFrom::Start(0)).with_context(context)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = self.file.read(&mut buf).with_context(context)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
            progress.set(len);
        }
        Ok(len)
    }

    /// Flushes the part to disk and renames it to `dest` (replacing a file there).
    pub fn persist(self, dest: &Path) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        std::fs::rename(&self.path, dest).with_context(|| {
            format!("cannot move {} to {}", self.path.display(), dest.display())
        })?;
        // The rename itself is durable once the folder is synced; best effort.
        if let Some(dir) = dest.parent().and_then(|d| File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Deletes the part.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Downloads `remote` into `part`, resuming what it holds, and verifies its size and
/// (when the hub published one) its SHA-256. A wrong hash removes the part and is an
/// error; a part that merely stopped short is kept (unlocked) for the next try.
pub(crate) fn download(
    client: &Client,
    remote: &Remote,
    mut part: PartFile,
) -> anyhow::Result<(PartFile, Verified)> {
    let mut expected = remote.expected.clone();
    let progress = Progress::start(&remote.label, expected.size);
    let mut hasher = Sha256::new();
    let mut len = part.hash_existing(&mut hasher, &progress)?;
    if len > 0 {
        progress.note(&format!(
            "{}: resuming after the {} already downloaded",
            remote.label,
            human_bytes(len)
        ));
    }
    let mut tries = 0;
    loop {
        if expected.size.is_some_and(|size| len > size) {
            progress.note(&format!(
                "{}: the part is longer than the file; starting over",
                remote.label
            ));
            part.truncate()?;
            (hasher, len) = (Sha256::new(), 0);
        }
        if expected.size == Some(len) {
            break;
        }
        let before = len;
        let state = Transfer {
            client,
            remote,
            progress: &progress,
        };
        match state.fetch_into(&mut part, &mut hasher, &mut len, &mut expected) {
            Ok(()) => break,
            Err(e) if e.transient && (tries < RETRIES || len > before) => {
                tries = if len > before { 1 } else { tries + 1 };
                let wait = Duration::from_secs(1 << (tries - 1));
                progress.note(&format!(
                    "{}: {:#}; trying again in {} s from byte {len}",
                    remote.label,
                    e.error,
                    wait.as_secs()
                ));
                std::thread::sleep(wait);
            }
            Err(e) => {
                progress.abandon();
                return Err(e.error);
            }
        }
    }
    progress.finish(len);

    let sha256 = hex(&hasher.finalize());
    if let Some(want) = &expected.sha256 {
        if *want != sha256 {
            let path = part.path().display().to_string();
            part.remove();
            bail!(
                "{}: SHA-256 mismatch: the hub says {want}, the downloaded file hashes to \
                 {sha256}; it was not stored (removed {path})",
                remote.label
            );
        }
    }
    let verified = Verified {
        size: len,
        checked: expected.sha256.is_some(),
        sha256,
    };
    Ok((part, verified))
}

/// One try at the rest of a file.
struct Transfer<'a> {
    client: &'a Client,
    remote: &'a Remote,
    progress: &'a Progress,
}

impl Transfer<'_> {
    /// Requests the bytes from `len` on and appends them to `part` and `hasher`. `Ok` when
    /// the body ended where the file does; a transient error keeps what arrived.
    fn fetch_into(
        &self,
        part: &mut PartFile,
        hasher: &mut Sha256,
        len: &mut u64,
        expected: &mut Expected,
    ) -> Result<(), FetchError> {
        let url = &self.remote.url;
        let label = &self.remote.label;
        let fatal = FetchError::fatal;
        let fetched = self.client.get(url, (*len > 0).then_some(*len))?;
        expected.add(&fetched.linked, label).map_err(fatal)?;
        let response = fetched.response;
        let at = &fetched.url;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = header("content-range").and_then(parse_content_range);
                let Some((start, total)) = range else {
                    return Err(fatal(anyhow!("{at}: a 206 without a usable Content-Range")));
                };
                if start != *len {
                    return Err(fatal(anyhow!(
                        "{at}: asked for the bytes from {len}, the server sent them from {start}"
                    )));
                }
                if let Some(total) = total {
                    expected.add_size(total, label).map_err(fatal)?;
                }
            }
            StatusCode::OK => {
                if *len > 0 {
                    self.progress.note(&format!(
                        "{label}: the server does not resume downloads; starting over"
                    ));
                    part.truncate().map_err(fatal)?;
                    (*hasher, *len) = (Sha256::new(), 0);
                    self.progress.set(0);
                }
                if let Some(size) = header("content-length").and_then(|v| v.parse().ok()) {
                    expected.add_size(size, label).map_err(fatal)?;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // Past the end: complete if the server's length is the part's, else the
                // part is not a prefix of this file and starts over.
                let total = header("content-range").and_then(|v| v.strip_prefix("bytes */"));
                if total.and_then(|t| t.trim().parse::<u64>().ok()) == Some(*len) {
                    expected.add_size(*len, label).map_err(fatal)?;
                    return Ok(());
                }
                part.truncate().map_err(fatal)?;
                (*hasher, *len) = (Sha256::new(), 0);
                return Err(FetchError::transient(anyhow!(
                    "{at}: the server refused to resume (416)"
                )));
            }
            status => return Err(status_error(at, status, self.client.hub())),
        }
        self.progress.set_total(expected.size);

        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FetchError::transient(anyhow!(
                        "connection lost after {} bytes: {e}",
                        *len
                    )))
                }
            };
            part.file
                .write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", part.path.display()))
                .map_err(fatal)?;
            hasher.update(&buf[..n]);
            *len += n as u64;
            self.progress.inc(n as u64);
            if expected.size.is_some_and(|size| *len > size) {
                part.truncate().map_err(fatal)?;
                return Err(fatal(anyhow!(
                    "{at}: the server sent more bytes than the file has; the part was emptied"
                )));
            }
        }
        match expected.size {
            Some(size) if *len < size => Err(FetchError::transient(anyhow!(
                "connection closed after {} of {size} bytes",
                *len
            ))),
            _ => Ok(()),
        }
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`): the start and, when known, the total.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `253 MB`, `4.92 GB`: decimal units, as the hub shows sizes.
pub(crate) fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// A progress bar on stderr (bytes, speed, ETA) when stderr is a terminal; otherwise a
/// line when a file starts and one when it ends, and the same notes either way.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    /// Bytes the part held before this run, so the closing line gives this run's speed.
    resumed_from: std::cell::Cell<Option<u64>>,
}

impl Progress {
    fn start(label: &str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            // Decimal units, as the hub shows sizes; the name last, cut to the terminal's
            // width, so the bar stays one line.
            let style = ProgressStyle::with_template(
                "[{bar:25}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} \
                 ETA {eta} {wide_msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            let file_name = label.rsplit('/').next().unwrap_or(label);
            bar.set_message(file_name.to_string());
            bar
        });
        if bar.is_none() {
            let size = total.map_or(String::new(), |t| format!(" ({})", human_bytes(t)));
            eprintln!("hearth: downloading {label}{size}");
        }
        Progress {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            resumed_from: std::cell::Cell::new(None),
        }
    }

    /// A line for the user, above the bar if there is one.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("hearth: {line}")),
            None => eprintln!("hearth: {line}"),
        }
    }

    fn set(&self, pos: u64) {
        self.resumed_from.set(Some(pos));
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            bar.reset_eta();
        }
    }

    fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn set_total(&self, total: Option<u64>) {
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn finish(&self, len: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let fetched = len.saturating_sub(self.resumed_from.get().unwrap_or(0));
        eprintln!(
            "hearth: {}: {} ({} fetched in {secs:.1} s, {}/s)",
            self.label,
            human_bytes(len),
            human_bytes(fetched),
            human_bytes((fetched as f64 / secs.max(1e-3)) as u64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        for bad in ["bytes */200", "items 0-1/2", "bytes 5-4/9", "bytes a-4/9"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn expectations_must_agree() {
        let sha = |c: char| Some(c.to_string().repeat(64));
        let mut e = Expected {
            sha256: sha('a'),
            size: None,
        };
        e.add(
            &Linked {
                sha256: sha('a'),
                size: Some(5),
            },
            "f",
        )
        .unwrap();
        assert_eq!(e.size, Some(5));
        let err = e
            .add(
                &Linked {
                    sha256: sha('b'),
                    size: None,
                },
                "f",
            )
            .unwrap_err();
        assert!(err.to_string().contains("two SHA-256"), "{err}");
        assert!(e.add_size(6, "f").is_err());
    }

    /// A part left by an earlier run is hashed whole before anything is appended, so a
    /// resumed download hashes the same as one fetched in one go.
    #[test]
    fn a_resumed_part_hashes_like_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf.part");
        std::fs::write(&path, b"hello ").unwrap();
        let mut part = PartFile::open(&path).unwrap();
        let mut hasher = Sha256::new();
        let progress = Progress {
            bar: None,
            label: "m".into(),
            started: Instant::now(),
            resumed_from: Default::default(),
        };
        assert_eq!(part.hash_existing(&mut hasher, &progress).unwrap(), 6);
        part.file.write_all(b"world").unwrap();
        hasher.update(b"world");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(
            hex(&hasher.finalize()),
            hex(&Sha256::digest(b"hello world"))
        );

        // A second pull of the same file is refused while this one holds the lock.
        let err = PartFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("another hearth pull"), "{err}");
        part.truncate().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(part);
        PartFile::open(&path).unwrap().remove();
        assert!(!path.exists());
    }
}
