//! What `hearth pull` is asked for, and the file names it deals in.
//!
//! A reference is one of
//! - `hf:ORG/REPO/PATH.gguf`: a file of a hub repository (PATH may go through folders);
//! - `ORG/REPO:QUANT` (or `ORG/REPO` when the repo holds one model): the repo's GGUF file
//!   whose name ends in that quantization, found in the repo's file list;
//! - an `https://` URL (plain `http://` to this machine only). A hub file's URL
//!   (`{endpoint}/ORG/REPO/resolve/REV/PATH`, or the `blob` page a browser shows) is read as
//!   the hub reference it is, so it lands in the same place and is verified the same way.
//!
//! Split models follow llama.cpp's naming, `NAME-00001-of-00003.gguf` (`llama_split_path`
//! in `src/llama.cpp` writes `%s-%05d-of-%05d.gguf`).

use std::fmt;

use anyhow::{bail, Context};

use super::url::Url;

/// A hub repository, `ORG/REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoId {
    pub org: String,
    pub name: String,
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

impl RepoId {
    /// `ORG/REPO`, each part as the hub allows names (letters, digits, `-`, `_`, `.`).
    pub fn parse(text: &str) -> anyhow::Result<RepoId> {
        let (org, name) = text
            .split_once('/')
            .with_context(|| format!("'{text}' is not ORG/REPO"))?;
        for part in [org, name] {
            let ok = !part.is_empty()
                && part.len() <= 96
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                bail!("'{text}': '{part}' is not a repository or organisation name");
            }
        }
        Ok(RepoId {
            org: org.to_string(),
            name: name.to_string(),
        })
    }
}

/// A parsed `hearth pull` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ref {
    /// One file of a hub repository at a revision (`main` unless a URL named another).
    HubFile {
        repo: RepoId,
        revision: String,
        file: String,
    },
    /// The file of a hub repository whose name ends in `quant` (any when `None`).
    HubQuant { repo: RepoId, quant: Option<String> },
    /// A GGUF file anywhere else.
    Url(Url),
}

impl Ref {
    /// Parses `text`; `hub` is the hub's base URL (from `HF_ENDPOINT`), so that URLs of
    /// hub files are read as hub references.
    pub fn parse(text: &str, hub: &Url) -> anyhow::Result<Ref> {
        if let Some(rest) = text.strip_prefix("hf:") {
            let mut parts = rest.splitn(3, '/');
            let (Some(org), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("'{text}': expected hf:ORG/REPO/FILE.gguf");
            };
            let repo = RepoId::parse(&format!("{org}/{name}"))?;
            check_repo_path(file).with_context(|| format!("'{text}'"))?;
            return Ok(Ref::HubFile {
                repo,
                revision: "main".into(),
                file: file.to_string(),
            });
        }
        if text.contains("://") {
            let url = Url::parse(text)?;
            url.check_fetchable()?;
            if url.origin() == hub.origin() {
                if let Some(hub_ref) = hub_file_url(&url, hub)? {
                    return Ok(hub_ref);
                }
            }
            let name = url
                .file_name()
                .with_context(|| format!("{text}: the URL does not end in a file name"))?;
            check_file_name(&name).with_context(|| text.to_string())?;
            return Ok(Ref::Url(url));
        }
        let (repo, quant) = match text.split_once(':') {
            Some((repo, quant)) => {
                let ok = !quant.is_empty()
                    && quant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok {
                    bail!("'{text}': '{quant}' is not a quantization name (as Q4_K_M)");
                }
                (repo, Some(quant.to_string()))
            }
            None => (text, None),
        };
        if repo.matches('/').count() != 1 {
            bail!(
                "'{text}' is not a model reference: use ORG/REPO:QUANT, hf:ORG/REPO/FILE.gguf \
                 or an https:// URL"
            );
        }
        Ok(Ref::HubQuant {
            repo: RepoId::parse(repo)?,
            quant,
        })
    }
}

/// `/ORG/REPO/resolve/REV/PATH` (or `/blob/`, the page a browser shows for it) under the
/// hub's base path, as a hub reference; `None` for any other path.
fn hub_file_url(url: &Url, hub: &Url) -> anyhow::Result<Option<Ref>> {
    let base = hub
        .path
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_end_matches('/');
    let path = url.path.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix(base).and_then(|p| p.strip_prefix('/')) else {
        return Ok(None);
    };
    let segments: Vec<&str> = rest.splitn(5, '/').collect();
    let [org, name, kind, revision, file] = segments[..] else {
        return Ok(None);
    };
    if kind != "resolve" && kind != "blob" {
        return Ok(None);
    }
    let file = super::url::percent_decode(file)
        .with_context(|| format!("{url}: bad percent escape in the file path"))?;
    let revision = super::url::percent_decode(revision).unwrap_or_default();
    check_repo_path(&file).with_context(|| format!("{url}"))?;
    if revision.is_empty() || revision.contains(['/', '\\']) || revision.starts_with('.') {
        bail!("{url}: '{revision}' is not a revision");
    }
    Ok(Some(Ref::HubFile {
        repo: RepoId::parse(&format!("{org}/{name}"))?,
        revision,
        file,
    }))
}

/// A path inside a repository that can also be a path inside the store: folders and a
/// `.gguf` file, no empty, `.`, `..` or hidden component.
pub(crate) fn check_repo_path(path: &str) -> anyhow::Result<()> {
    let mut components = path.split('/').peekable();
    while let Some(c) = components.next() {
        if components.peek().is_none() {
            return check_file_name(c);
        }
        check_component(c)?;
    }
    Ok(())
}

/// A file name the store can hold: a `.gguf` name, usable as one path component.
pub(crate) fn check_file_name(name: &str) -> anyhow::Result<()> {
    check_component(name)?;
    if !name.ends_with(".gguf") || name.len() == ".gguf".len() {
        bail!("'{name}' is not a .gguf file (hearth stores GGUF models)");
    }
    Ok(())
}

/// A name usable as one path component in the store: not empty, `.`/`..` or hidden, no
/// separator or control character.
pub(crate) fn check_component(c: &str) -> anyhow::Result<()> {
    let ok = !c.is_empty()
        && c.len() <= 255
        && !c.starts_with('.')
        && !c
            .chars()
            .any(|ch| ch.is_control() || ch == '\\' || ch == '/');
    if !ok {
        bail!("'{c}' cannot be a file or folder name in the store");
    }
    Ok(())
}

/// One part of a split model, from its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitName {
    /// The name before `-00001-of-00003.gguf`.
    pub prefix: String,
    /// 1-based part number.
    pub no: u32,
    pub count: u32,
    /// Digits of the part number as written (llama.cpp writes 5).
    width: usize,
    count_text: String,
}

impl SplitName {
    /// `PREFIX-NNNNN-of-MMMMM.gguf` with 1 <= N <= M and M >= 2; `None` for any other name.
    pub fn parse(file_name: &str) -> Option<SplitName> {
        let stem = file_name.strip_suffix(".gguf")?;
        let (rest, count_text) = stem.rsplit_once("-of-")?;
        let (prefix, no_text) = rest.rsplit_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        if prefix.is_empty() || !digits(no_text) || !digits(count_text) {
            return None;
        }
        let (no, count) = (no_text.parse().ok()?, count_text.parse().ok()?);
        if no == 0 || no > count || count < 2 {
            return None;
        }
        Some(SplitName {
            prefix: prefix.to_string(),
            no,
            count,
            width: no_text.len(),
            count_text: count_text.to_string(),
        })
    }

    /// The file name of part `no` (1-based) of the same model.
    pub fn part(&self, no: u32) -> String {
        format!(
            "{}-{no:0width$}-of-{}.gguf",
            self.prefix,
            self.count_text,
            width = self.width
        )
    }

    /// The file name of the merged model: `PREFIX.gguf`.
    pub fn merged(&self) -> String {
        format!("{}.gguf", self.prefix)
    }
}

/// Whether a file name ends in the quantization `quant` (case-insensitive), the way
/// published GGUF files are named: `Model-Q4_K_M.gguf`, `model.q4_k_m.gguf`,
/// `Model-Q4_K_M-00001-of-00002.gguf`, `Q4_K_M/Model-Q4_K_M.gguf`. The quantization must
/// stand as its own word: `Q4_K` does not match `Q4_K_M`, nor `Q4_XS` `IQ4_XS`.
pub(crate) fn matches_quant(file_name: &str, quant: &str) -> bool {
    let stem = match SplitName::parse(file_name) {
        Some(split) => split.prefix,
        None => file_name
            .strip_suffix(".gguf")
            .unwrap_or(file_name)
            .to_string(),
    };
    let stem = stem.to_ascii_uppercase();
    let quant = quant.to_ascii_uppercase();
    stem.match_indices(&quant).any(|(i, _)| {
        let before = stem[..i].chars().next_back();
        let after = stem[i + quant.len()..].chars().next();
        before.is_none_or(|c| "-._".contains(c)) && after.is_none_or(|c| "-.".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Url {
        Url::parse("https://hub.example").unwrap()
    }

    fn repo(s: &str) -> RepoId {
        RepoId::parse(s).unwrap()
    }

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            Ref::parse("hf:org/repo/sub/dir/m-Q4_K_M.gguf", &hub()).unwrap(),
            Ref::HubFile {
                repo: repo("org/repo"),
                revision: "main".into(),
                file: "sub/dir/m-Q4_K_M.gguf".into()
            }
        );
        assert_eq!(
            Ref::parse("unsloth/gemma-3-270m-it-GGUF:q4_k_m", &hub()).unwrap(),
            Ref::HubQuant {
                repo: repo("unsloth/gemma-3-270m-it-GGUF"),
                quant: Some("q4_k_m".into())
            }
        );
        assert_eq!(
            Ref::parse("org/repo", &hub()).unwrap(),
            Ref::HubQuant {
                repo: repo("org/repo"),
                quant: None
            }
        );
        let Ref::Url(url) = Ref::parse("https://models.example/x/m.gguf?dl=1", &hub()).unwrap()
        else {
            panic!("not a URL ref");
        };
        assert_eq!(url.file_name().as_deref(), Some("m.gguf"));
    }

    #[test]
    fn hub_urls_are_hub_references() {
        for (url, revision) in [
            (
                "https://hub.example/org/repo/resolve/main/sub/m%20x.gguf",
                "main",
            ),
            (
                "https://hub.example/org/repo/blob/v1.0/sub/m%20x.gguf?download=true",
                "v1.0",
            ),
        ] {
            assert_eq!(
                Ref::parse(url, &hub()).unwrap(),
                Ref::HubFile {
                    repo: repo("org/repo"),
                    revision: revision.into(),
                    file: "sub/m x.gguf".into()
                },
                "{url}"
            );
        }
        // Another host, or another path on the hub, is a plain URL.
        assert!(matches!(
            Ref::parse("https://other.example/org/repo/resolve/main/m.gguf", &hub()),
            Ok(Ref::Url(_))
        ));
        let mirror = Url::parse("http://127.0.0.1:8080/hub/").unwrap();
        assert!(matches!(
            Ref::parse("http://127.0.0.1:8080/hub/o/r/resolve/main/m.gguf", &mirror),
            Ok(Ref::HubFile { .. })
        ));
    }

    #[test]
    fn refuses_bad_references() {
        let cases = [
            ("hf:org/repo", "hf:ORG/REPO/FILE.gguf"),
            (
                "hf:org/repo/../../x.gguf",
                "cannot be a file or folder name",
            ),
            (
                "hf:org/repo/.hidden/x.gguf",
                "cannot be a file or folder name",
            ),
            ("hf:org/repo/model.bin", "not a .gguf file"),
            ("hf:org/re po/m.gguf", "not a repository"),
            ("hf:../repo/m.gguf", "not a repository"),
            ("http://models.example/m.gguf", "plain http://"),
            ("https://models.example/", "does not end in a file name"),
            ("https://models.example/m.bin", "not a .gguf file"),
            ("org/repo:Q4 K", "not a quantization"),
            ("just-a-name", "not a model reference"),
            ("a/b/c:Q4_0", "not a model reference"),
            (
                "https://hub.example/org/repo/resolve/main/..%2F..%2Fx.gguf",
                "cannot be",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Ref::parse(text, &hub()).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn split_names() {
        let s = SplitName::parse("Model-Q4_K_M-00002-of-00003.gguf").unwrap();
        assert_eq!((s.prefix.as_str(), s.no, s.count), ("Model-Q4_K_M", 2, 3));
        assert_eq!(s.part(1), "Model-Q4_K_M-00001-of-00003.gguf");
        assert_eq!(s.merged(), "Model-Q4_K_M.gguf");
        for not in [
            "Model-Q4_K_M.gguf",
            "m-00001-of-00001.gguf",
            "m-00004-of-00003.gguf",
            "m-00000-of-00003.gguf",
            "-00001-of-00002.gguf",
            "m-1x-of-2.gguf",
            "m-00001-of-00002.bin",
        ] {
            assert_eq!(SplitName::parse(not), None, "{not}");
        }
    }

    #[test]
    fn quant_matching() {
        for (name, quant) in [
            ("Model-Q4_K_M.gguf", "q4_k_m"),
            ("model.Q4_K_M.gguf", "Q4_K_M"),
            ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
            ("Model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
            ("Model-UD-Q4_K_XL.gguf", "Q4_K_XL"),
            ("Model-Q8_0-imat.gguf", "Q8_0"),
            ("Model-BF16.gguf", "bf16"),
        ] {
            assert!(matches_quant(name, quant), "{name} {quant}");
        }
        for (name, quant) in [
            ("Model-Q4_K_M.gguf", "Q4_K"),
            ("Model-IQ4_XS.gguf", "Q4_XS"),
            ("Model-Q4_K_M.gguf", "Q8_0"),
            ("Model-Q4_K_Mx.gguf", "Q4_K_M"),
        ] {
            assert!(!matches_quant(name, quant), "{name} {quant}");
        }
    }
}
