//! The hub's file list, and the choice of a repository's model by quantization.
//!
//! `GET {endpoint}/api/models/ORG/REPO/tree/REV?recursive=true` answers a JSON array of
//! entries, `{"type": "file", "path": …, "size": …, "lfs": {"oid": SHA256, "size": …}}` for
//! a file (`lfs` only for files kept in LFS, as models are) and `{"type": "directory", …}`
//! for a folder; a long list comes in pages, the next one named by a `Link: <…>;
//! rel="next"` header (as `huggingface_hub`'s `list_repo_tree` follows them).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Deserialize;
use ureq::http::StatusCode;

use super::client::{is_sha256, read_text, status_error, Client};
use super::reference::{check_repo_path, matches_quant, RepoId, SplitName};
use super::url::{percent_encode_path, Url};

/// A file list larger than this is refused (the largest repos list a few thousand
/// entries, well under a megabyte a page).
const MAX_PAGE_BYTES: u64 = 32 << 20;
/// Pages followed at most.
const MAX_PAGES: usize = 100;

/// A file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoFile {
    /// Path in the repository.
    pub path: String,
    pub size: u64,
    /// The LFS object id, which is the file's SHA-256.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
    size: u64,
}

/// Every file of `repo` at `revision`.
pub(crate) fn list_files(
    client: &Client,
    repo: &RepoId,
    revision: &str,
) -> anyhow::Result<Vec<RepoFile>> {
    let base = client.hub().path.trim_end_matches('/');
    let mut url = Url {
        path: format!(
            "{base}/api/models/{}/{}/tree/{}?recursive=true",
            repo.org,
            repo.name,
            percent_encode_path(revision)
        ),
        ..client.hub().clone()
    };
    let mut files = Vec::new();
    for _ in 0..MAX_PAGES {
        let fetched = client.get(&url, None).map_err(|e| e.error)?;
        let status = fetched.response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::UNAUTHORIZED {
            bail!(
                "{repo}: no such repository on {} (or it is private or gated: set HF_TOKEN \
                 to a token that may read it)",
                client.hub()
            );
        }
        if status != StatusCode::OK {
            return Err(status_error(&fetched.url, status, client.hub()).error);
        }
        let next = fetched
            .response
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let text = read_text(fetched.response, &fetched.url, MAX_PAGE_BYTES)?;
        let entries: Vec<Entry> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a file list", fetched.url))?;
        files.extend(entries.into_iter().filter(|e| e.kind == "file").map(|e| {
            let (size, sha256) = match e.lfs {
                Some(lfs) => (
                    lfs.size,
                    is_sha256(&lfs.oid).then(|| lfs.oid.to_lowercase()),
                ),
                None => (e.size, None),
            };
            RepoFile {
                path: e.path,
                size,
                sha256,
            }
        }));
        match next {
            Some(link) => url = fetched.url.join(&link)?,
            None => return Ok(files),
        }
    }
    bail!("{repo}: the file list has more than {MAX_PAGES} pages")
}

/// The target of a `Link` header's `rel="next"` entry.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|entry| {
        let (target, params) = entry.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// A model of a repository: one file, or the parts of a split one (in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoModel {
    pub files: Vec<RepoFile>,
    /// Parts of a split model the list does not show (the model cannot be pulled).
    pub missing: u32,
}

impl RepoModel {
    /// The path of the file, or of the first part listed.
    pub fn path(&self) -> &str {
        &self.files[0].path
    }
}

/// The repository's model whose name ends in `quant` (any, if `None`, when there is only
/// one). The error lists what there is to choose from. Multimodal projectors
/// (`mmproj-*.gguf`) are not models hearth runs and are left out.
pub(crate) fn choose(
    repo: &RepoId,
    files: &[RepoFile],
    quant: Option<&str>,
) -> anyhow::Result<RepoModel> {
    let models = group_models(files);
    let file_name = |m: &RepoModel| m.path().rsplit('/').next().unwrap_or_default().to_string();
    let listing = |ms: &[&RepoModel]| {
        ms.iter()
            .map(|m| m.path().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<&RepoModel> = models.iter().collect();
    if all.is_empty() {
        bail!("{repo}: the repository has no GGUF model files");
    }
    let found: Vec<&RepoModel> = match quant {
        Some(q) => all
            .iter()
            .copied()
            .filter(|m| matches_quant(&file_name(m), q))
            .collect(),
        None => all.clone(),
    };
    match (found.len(), quant) {
        (1, _) if found[0].missing > 0 => bail!(
            "{repo}: the repository lacks {} part(s) of the split model {}",
            found[0].missing,
            found[0].path()
        ),
        (1, _) => Ok(found[0].clone()),
        (0, Some(q)) => bail!(
            "{repo}: no GGUF file matches '{q}'; the repository has: {}",
            listing(&all)
        ),
        (_, None) => bail!(
            "{repo} has {} models; name one as {repo}:QUANT (as Q4_K_M) or \
             hf:{repo}/FILE.gguf: {}",
            found.len(),
            listing(&found)
        ),
        (_, Some(q)) => bail!(
            "{repo}: several GGUF files match '{q}': {}; name one as hf:{repo}/FILE.gguf",
            listing(&found)
        ),
    }
}

/// The repository's `.gguf` files as models: single files, and split parts gathered by
/// folder and name. A split set with parts missing from the list is kept (with the count
/// missing), so that choosing it gives an error that says so.
fn group_models(files: &[RepoFile]) -> Vec<RepoModel> {
    let mut models: Vec<RepoModel> = Vec::new();
    // The path of a split model's first part -> its parts, by number.
    let mut splits: BTreeMap<String, Vec<Option<RepoFile>>> = BTreeMap::new();
    for f in files {
        let (dir, name) = f.path.rsplit_once('/').unwrap_or(("", f.path.as_str()));
        // Projectors are not models hearth runs; a path the store cannot hold is not
        // offered.
        if !name.ends_with(".gguf")
            || name.starts_with("mmproj")
            || check_repo_path(&f.path).is_err()
        {
            continue;
        }
        let Some(split) = SplitName::parse(name) else {
            models.push(RepoModel {
                files: vec![f.clone()],
                missing: 0,
            });
            continue;
        };
        let first = format!("{dir}/{}", split.part(1));
        let parts = splits
            .entry(first)
            .or_insert_with(|| vec![None; split.count as usize]);
        parts[split.no as usize - 1] = Some(f.clone());
    }
    for parts in splits.into_values() {
        let files: Vec<RepoFile> = parts.iter().flatten().cloned().collect();
        models.push(RepoModel {
            missing: (parts.len() - files.len()) as u32,
            files,
        });
    }
    models.sort_by(|a, b| a.path().cmp(b.path()));
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> RepoFile {
        RepoFile {
            path: path.into(),
            size: 1,
            sha256: None,
        }
    }

    fn repo() -> RepoId {
        RepoId::parse("org/repo").unwrap()
    }

    #[test]
    fn chooses_by_quant() {
        let files = [
            file("README.md"),
            file("model-Q4_K_M.gguf"),
            file("model-Q8_0.gguf"),
            file("mmproj-Q8_0.gguf"),
            file("BF16/model-BF16-00002-of-00002.gguf"),
            file("BF16/model-BF16-00001-of-00002.gguf"),
        ];
        let m = choose(&repo(), &files, Some("q8_0")).unwrap();
        assert_eq!(m.files, vec![file("model-Q8_0.gguf")]);
        let m = choose(&repo(), &files, Some("BF16")).unwrap();
        let paths: Vec<_> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "BF16/model-BF16-00001-of-00002.gguf",
                "BF16/model-BF16-00002-of-00002.gguf"
            ]
        );
        let err = choose(&repo(), &files, Some("Q5_K_M"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no GGUF file matches 'Q5_K_M'"), "{err}");
        assert!(
            err.contains("model-Q4_K_M.gguf") && !err.contains("mmproj"),
            "{err}"
        );
        let err = choose(&repo(), &files, None).unwrap_err().to_string();
        assert!(err.contains("has 3 models"), "{err}");
        let gap = [
            file("m-Q4_0-00001-of-00003.gguf"),
            file("m-Q4_0-00003-of-00003.gguf"),
        ];
        let err = choose(&repo(), &gap, Some("Q4_0")).unwrap_err().to_string();
        assert!(err.contains("lacks 1 part(s) of the split model"), "{err}");
        let one = [file("only-Q4_0.gguf"), file("config.json")];
        assert_eq!(
            choose(&repo(), &one, None).unwrap().path(),
            "only-Q4_0.gguf"
        );
    }

    #[test]
    fn ambiguity_and_gaps_are_errors() {
        let files = [file("a-Q4_K_M.gguf"), file("b-Q4_K_M.gguf")];
        let err = choose(&repo(), &files, Some("Q4_K_M"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("several") && err.contains("a-Q4_K_M.gguf, b-Q4_K_M.gguf"),
            "{err}"
        );
        let err = choose(&repo(), &[file("README.md")], Some("Q4_K_M"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no GGUF model files"), "{err}");
    }

    #[test]
    fn link_headers() {
        let h = "<https://hub.example/api/models/o/r/tree/main?cursor=abc>; rel=\"next\"";
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://hub.example/api/models/o/r/tree/main?cursor=abc")
        );
        assert_eq!(next_link("<https://x>; rel=\"prev\""), None);
    }
}
