//! `hearth pull REF`: a model from the hub (or any https URL) into the store.
//!
//! The steps, for each file of the model (one, or every part of a split one):
//! 1. HEAD it, to learn its size and SHA-256 before any byte is written (the hub puts
//!    them on its redirect; a `ORG/REPO:QUANT` reference already has them from the file
//!    list) and to fail early on a missing file or a refused token.
//! 2. Download it into `FILE.gguf.part`, resuming and verifying (`download.rs`).
//! 3. Check that it opens as GGUF, and only then rename it into place.
//!
//! A split model's parts stay `.part` files until all are verified; they are then merged
//! into one GGUF file (`hearth_gguf::merge_split`) under the model's name without the
//! `-00001-of-0000N` suffix, and removed. So the store only ever holds whole models,
//! which every command loads as any other file.
//!
//! Only this command uses the network.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_gguf::{merge_split, GgufFile};
use ureq::http::StatusCode;

use super::client::{status_error, Client};
use super::download::{download, human_bytes, Expected, PartFile, Remote};
use super::hub;
use super::reference::{check_component, Ref, RepoId, SplitName};
use super::url::{percent_encode_path, Url};

/// The hub's tools default to this when `HF_ENDPOINT` is not set.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `hearth pull`'s arguments.
#[derive(clap::Args)]
pub struct PullArgs {
    /// What to download: ORG/REPO:QUANT (as unsloth/gemma-3-270m-it-GGUF:Q4_K_M),
    /// hf:ORG/REPO/FILE.gguf, or an https:// URL of a GGUF file.
    pub reference: String,
}

/// A model to pull: its files, and where it goes.
struct Plan {
    /// The model's name in the store.
    name: String,
    /// Its file in the store.
    dest: PathBuf,
    /// One file, or a split model's parts in order, each with its `.part` path.
    files: Vec<(Remote, PathBuf)>,
}

/// Runs `hearth pull`: prints the stored model's name on stdout, everything else on
/// stderr.
pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let hub = Url::parse(endpoint.trim_end_matches('/'))
        .and_then(|u| u.check_fetchable().map(|()| u))
        .context("HF_ENDPOINT")?;
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    let reference = Ref::parse(&args.reference, &hub)?;
    let client = Client::new(hub, token.map(|t| t.trim().to_string()));
    let root = super::root();
    let plan = plan(&client, &reference, &root)?;
    pull(&client, &plan)?;
    println!("{}", plan.name);
    Ok(())
}

/// The files of `reference`, with what is known of them so far.
fn plan(client: &Client, reference: &Ref, root: &Path) -> anyhow::Result<Plan> {
    match reference {
        Ref::HubFile {
            repo,
            revision,
            file,
        } => {
            let files = expand_split(file)
                .into_iter()
                .map(|path| (path, Expected::default()))
                .collect();
            hub_plan(client, repo, revision, files, root)
        }
        Ref::HubQuant { repo, quant } => {
            let files = hub::list_files(client, repo, "main")?;
            let model = hub::choose(repo, &files, quant.as_deref())?;
            let what = quant
                .as_ref()
                .map_or(repo.to_string(), |q| format!("{repo}:{q}"));
            eprintln!("hearth: {what} is {}", model.path());
            let files = model
                .files
                .into_iter()
                .map(|f| {
                    let expected = Expected {
                        sha256: f.sha256,
                        size: Some(f.size),
                    };
                    (f.path, expected)
                })
                .collect();
            hub_plan(client, repo, "main", files, root)
        }
        Ref::Url(url) => {
            // The host names the folder (a port or IPv6 brackets would make odd names).
            let host = url.host.trim_matches(['[', ']']).replace(':', "_");
            check_component(&host)?;
            let dir = root.join(host);
            let name = url.file_name().context("the URL has no file name")?;
            let split = expand_split(&name).len() > 1;
            let files = expand_split(&name)
                .into_iter()
                .map(|file| {
                    // The URL as given for one file (its query kept), its siblings' for
                    // the parts of a split one.
                    let url = match split {
                        true => url.join(&percent_encode_path(&file))?,
                        false => url.clone(),
                    };
                    let remote = Remote {
                        label: file.clone(),
                        url,
                        expected: Expected::default(),
                    };
                    Ok((remote, dir.join(format!("{file}.part"))))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let dest = dir.join(merged_name(&name));
            Ok(Plan {
                name: super::name_of(root, &dest),
                dest,
                files,
            })
        }
    }
}

/// A file's path, or every part's if it is one part of a split model.
fn expand_split(path: &str) -> Vec<String> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    match SplitName::parse(name) {
        Some(split) => (1..=split.count)
            .map(|no| format!("{dir}{}", split.part(no)))
            .collect(),
        None => vec![path.to_string()],
    }
}

/// The file name a model is stored under: a split model's without the part suffix.
fn merged_name(file_name: &str) -> String {
    SplitName::parse(file_name).map_or_else(|| file_name.to_string(), |s| s.merged())
}

fn hub_plan(
    client: &Client,
    repo: &RepoId,
    revision: &str,
    files: Vec<(String, Expected)>,
    root: &Path,
) -> anyhow::Result<Plan> {
    let dir = root.join(&repo.org).join(&repo.name);
    let base = client.hub().path.trim_end_matches('/');
    let mut planned = Vec::with_capacity(files.len());
    for (path, expected) in &files {
        let url = Url {
            path: format!(
                "{base}/{}/{}/resolve/{}/{}",
                repo.org,
                repo.name,
                percent_encode_path(revision),
                percent_encode_path(path)
            ),
            ..client.hub().clone()
        };
        let remote = Remote {
            url,
            label: format!("{repo}/{path}"),
            expected: expected.clone(),
        };
        planned.push((remote, dir.join(format!("{path}.part"))));
    }
    let first = &files[0].0;
    let dest = match first.rsplit_once('/') {
        Some((sub, name)) => dir.join(sub).join(merged_name(name)),
        None => dir.join(merged_name(first)),
    };
    Ok(Plan {
        name: super::name_of(root, &dest),
        dest,
        files: planned,
    })
}

/// Downloads, verifies and stores the plan's model.
fn pull(client: &Client, plan: &Plan) -> anyhow::Result<()> {
    if plan.dest.is_file() {
        eprintln!(
            "hearth: {} is already in the store ({}); `hearth rm {}` first to download it again",
            plan.name,
            plan.dest.display(),
            plan.name
        );
        return Ok(());
    }
    // What every file is, before any byte is written: a missing part or a refused token
    // fails now, not after the first part's gigabytes.
    let mut remotes = Vec::with_capacity(plan.files.len());
    for (remote, part) in &plan.files {
        remotes.push((probe(client, remote)?, part));
    }
    let mut parts = Vec::with_capacity(remotes.len());
    for (remote, part_path) in &remotes {
        let part = PartFile::open(part_path)?;
        let (part, verified) = match download(client, remote, part) {
            Ok(done) => done,
            Err(e) => {
                forget_empty_part(part_path);
                return Err(e);
            }
        };
        if verified.checked {
            eprintln!(
                "hearth: {}: {} bytes, SHA-256 {} verified",
                remote.label, verified.size, verified.sha256
            );
        } else {
            eprintln!(
                "hearth: {}: the server published no SHA-256 for it; its size and GGUF \
                 layout were checked, its content could not be (SHA-256 {})",
                remote.label, verified.sha256
            );
        }
        parts.push(part);
    }

    if parts.len() == 1 {
        let part = parts.pop().expect("one part");
        if let Err(e) = GgufFile::open(part.path()) {
            part.remove();
            bail!(
                "{}: downloaded, but it is not a usable GGUF file ({e}); it was not stored",
                remotes[0].0.label
            );
        }
        part.persist(&plan.dest)?;
    } else {
        merge_parts(plan, parts)?;
    }
    let size = std::fs::metadata(&plan.dest).map_or(0, |m| m.len());
    eprintln!(
        "hearth: stored {} ({}) at {}",
        plan.name,
        human_bytes(size),
        plan.dest.display()
    );
    Ok(())
}

/// After a failed download: a part that holds nothing (and that no other pull holds)
/// is removed, with the folders made for it, so a failure leaves the store as it was. A
/// part with bytes stays for the next try to resume.
fn forget_empty_part(path: &Path) {
    if let Ok(part) = PartFile::open(path) {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            part.remove();
            super::remove_empty_folders(&super::root(), path);
        }
    }
}

/// HEADs the file and adds what the answer says to what is expected of it.
fn probe(client: &Client, remote: &Remote) -> anyhow::Result<Remote> {
    let mut remote = remote.clone();
    let fetched = match client.head(&remote.url) {
        Ok(fetched) => fetched,
        // The download retries the same; a server that refuses for good says so there.
        Err(e) if e.transient => return Ok(remote),
        Err(e) => return Err(e.error),
    };
    remote.expected.add(&fetched.linked, &remote.label)?;
    match fetched.response.status() {
        StatusCode::OK => {
            let length = fetched
                .response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // The hub's own size wins; a CDN's length is the same or the probe lies.
            if let (Some(length), None) = (length, fetched.linked.size) {
                remote.expected.add(
                    &super::client::Linked {
                        sha256: None,
                        size: Some(length),
                    },
                    &remote.label,
                )?;
            }
        }
        // Servers that do not answer HEAD: the GET finds out.
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {}
        status => {
            let e = status_error(&fetched.url, status, client.hub());
            if !e.transient {
                return Err(e.error.context(remote.label.clone()));
            }
        }
    }
    Ok(remote)
}

/// Merges a split model's verified parts into the model's file, then removes them. On an
/// error the parts stay, so a second pull only merges again.
fn merge_parts(plan: &Plan, parts: Vec<PartFile>) -> anyhow::Result<()> {
    let mut files = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let file = GgufFile::open(part.path()).with_context(|| {
            format!(
                "part {} of {} is not a usable GGUF file",
                i + 1,
                plan.files[i].0.label
            )
        })?;
        files.push(file);
    }
    let merged_path = part_path(&plan.dest);
    let merged = PartFile::open(&merged_path)?;
    let result = merge_split(&files, &merged_path)
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(GgufFile::open(&merged_path)?));
    if let Err(e) = result {
        merged.remove();
        return Err(e.context(format!(
            "{}: cannot merge the {} parts (they are kept; pull again to retry)",
            plan.name,
            parts.len()
        )));
    }
    drop(files);
    merged.persist(&plan.dest)?;
    eprintln!(
        "hearth: merged {} parts into {}",
        parts.len(),
        plan.dest.display()
    );
    for part in parts {
        part.remove();
    }
    Ok(())
}

/// `FILE.gguf.part` beside `FILE.gguf`.
fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_expansion() {
        assert_eq!(
            expand_split("Q4_K_M/m-Q4_K_M-00002-of-00003.gguf"),
            [
                "Q4_K_M/m-Q4_K_M-00001-of-00003.gguf",
                "Q4_K_M/m-Q4_K_M-00002-of-00003.gguf",
                "Q4_K_M/m-Q4_K_M-00003-of-00003.gguf"
            ]
        );
        assert_eq!(expand_split("m.gguf"), ["m.gguf"]);
        assert_eq!(merged_name("m-00001-of-00002.gguf"), "m.gguf");
        assert_eq!(
            part_path(Path::new("/s/o/r/m.gguf")),
            Path::new("/s/o/r/m.gguf.part")
        );
    }

    #[test]
    fn plans_name_files_under_the_store() {
        let hub = Url::parse("http://127.0.0.1:9/base").unwrap();
        let client = Client::new(hub.clone(), None);
        let root = Path::new("/store");
        let reference = Ref::parse("hf:org/repo/sub/m-00001-of-00002.gguf", &hub).unwrap();
        let p = plan(&client, &reference, root).unwrap();
        assert_eq!(p.name, "org/repo/sub/m");
        assert_eq!(p.dest, Path::new("/store/org/repo/sub/m.gguf"));
        let urls: Vec<String> = p.files.iter().map(|(r, _)| r.url.to_string()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:9/base/org/repo/resolve/main/sub/m-00001-of-00002.gguf",
                "http://127.0.0.1:9/base/org/repo/resolve/main/sub/m-00002-of-00002.gguf"
            ]
        );
        assert_eq!(
            p.files[1].1,
            Path::new("/store/org/repo/sub/m-00002-of-00002.gguf.part")
        );

        let reference = Ref::parse("https://[::1]:8/x/My%20Model.gguf", &hub).unwrap();
        let p = plan(&client, &reference, root).unwrap();
        assert_eq!(p.dest, Path::new("/store/__1/My Model.gguf"));
        assert_eq!(
            p.files[0].0.url.to_string(),
            "https://[::1]:8/x/My%20Model.gguf"
        );
    }
}
