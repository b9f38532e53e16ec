//! The model store: `hearth pull`, `hearth list`, `hearth rm`, and model names for every
//! command that takes a model.
//!
//! The store is a folder, `$HEARTH_MODELS` or else `models` in Hearth's cache folder
//! (`~/.cache/hearth/models`, where `scripts/fetch-model.sh` also puts the default model).
//! A model pulled from the hub lives at `ORG/REPO/PATH.gguf` (its path in the repository
//! kept), one from another URL at `HOST/FILE.gguf`, so the folder reads like the hub. A
//! model's *name* is its path under the store less `.gguf` (`unsloth/gemma-3-270m-it-GGUF/
//! gemma-3-270m-it-Q4_K_M`); [`resolve`] also accepts the bare file name when only one
//! stored model has it, `ORG/REPO` when the repository has one model in the store, and
//! `ORG/REPO:QUANT`. Downloads in progress (`*.gguf.part`) are neither listed nor
//! resolved.
//!
//! Any `.gguf` file put in the folder by hand is a stored model too. Nothing here but
//! `pull` touches the network.

mod client;
mod download;
mod hub;
mod pull;
mod reference;
mod url;

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use hearth_gguf::GgufFile;

pub(crate) use pull::{run as pull, PullArgs};

/// Folders deeper than this under the store are not searched (the hub's layout needs
/// three or four).
const MAX_DEPTH: usize = 8;

/// `hearth list`'s arguments.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Print a JSON array (name, path, size, architecture, quant, parameters, context)
    /// instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `hearth rm`'s arguments.
#[derive(clap::Args)]
pub struct RmArgs {
    /// The stored model's name, as `hearth list` shows it.
    pub name: String,
}

/// The store's folder: `$HEARTH_MODELS`, else `models` in Hearth's cache folder.
pub(crate) fn root() -> PathBuf {
    match std::env::var_os("HEARTH_MODELS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::run::cache_dir().join("models"),
    }
}

/// The model file `model` names: an existing file's path as it is, else a stored model's
/// name (see the module doc). Called by every command that loads a model, before it
/// loads it; the error says what was looked for and where.
pub(crate) fn resolve(model: &Path) -> anyhow::Result<PathBuf> {
    if model.is_file() {
        return Ok(model.to_path_buf());
    }
    let root = root();
    let name = model.to_str().unwrap_or_default();
    match find(&root, name) {
        Found::One(path) => Ok(path),
        Found::Many(names) => bail!(
            "'{name}' matches several stored models: {}; give the full name",
            names.join(", ")
        ),
        Found::None if model.is_dir() => {
            bail!("{}: a folder, not a model file", model.display())
        }
        Found::None => bail!(
            "{}: no such file, and no stored model of that name in {} (`hearth list` shows \
             them, `hearth pull` adds one)",
            model.display(),
            root.display()
        ),
    }
}

/// What a name finds in the store.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    One(PathBuf),
    None,
    /// The names of every model it could mean.
    Many(Vec<String>),
}

/// Looks `name` up in the store at `root`: the exact name (or its `.gguf` path) first,
/// then a unique file name, then a repository's only model (`ORG/REPO`) or its model of
/// one quantization (`ORG/REPO:QUANT`).
fn find(root: &Path, name: &str) -> Found {
    let name = name.trim_end_matches('/');
    if is_relative_name(name) {
        let file = match name.ends_with(".gguf") {
            true => root.join(name),
            false => root.join(format!("{name}.gguf")),
        };
        if file.is_file() {
            return Found::One(file);
        }
    }
    let all = models(root);
    let pick = |found: Vec<&PathBuf>| match found.len() {
        0 => Found::None,
        1 => Found::One(found[0].clone()),
        _ => Found::Many(found.iter().map(|p| name_of(root, p)).collect()),
    };
    let by_file = pick(
        all.iter()
            .filter(|p| {
                let file_name = p.file_name().and_then(|n| n.to_str());
                let stem = p.file_stem().and_then(|n| n.to_str());
                file_name == Some(name) || stem == Some(name)
            })
            .collect(),
    );
    if by_file != Found::None {
        return by_file;
    }
    let (dir, quant) = match name.split_once(':') {
        Some((dir, quant)) => (dir, Some(quant)),
        None => (name, None),
    };
    if !is_relative_name(dir) {
        return Found::None;
    }
    let dir = root.join(dir);
    pick(
        all.iter()
            .filter(|p| p.starts_with(&dir))
            .filter(|p| {
                let file_name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                quant.is_none_or(|q| reference::matches_quant(file_name, q))
            })
            .collect(),
    )
}

/// A relative path of plain components (no `..`, no root): something that can only name
/// a place inside the store.
fn is_relative_name(name: &str) -> bool {
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// A stored file's name: its path under the store, `/`-separated, less `.gguf`.
pub(crate) fn name_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = parts.join("/");
    name.strip_suffix(".gguf")
        .map_or(name.clone(), str::to_string)
}

/// Every `.gguf` file under `root`, sorted. Hidden entries and `.part` files are
/// skipped, and symlinked folders are not followed (a link back up would loop); a folder
/// that cannot be read is skipped too, since a listing should show what it can.
fn models(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < MAX_DEPTH {
                    dirs.push((path, depth + 1));
                }
            } else if name.ends_with(".gguf") && path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What `hearth list` shows of one model.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    path: String,
    size: u64,
    architecture: String,
    /// llama.cpp's name of `general.file_type` (`Q4_K_M`), if the file says.
    quant: Option<String>,
    parameters: u64,
    context_length: Option<u64>,
}

impl Row {
    fn read(root: &Path, path: &Path) -> anyhow::Result<Row> {
        let file = GgufFile::open(path)?;
        let meta = file.metadata();
        let architecture = meta
            .get_str("general.architecture")
            .context("no general.architecture: not a model (a vocabulary or a split part?)")?
            .to_string();
        let quant = meta.get_uint("general.file_type").ok().map(|t| {
            hearth_gguf::file_type_name(t).map_or_else(|| format!("type {t}"), str::to_string)
        });
        Ok(Row {
            name: name_of(root, path),
            path: path.display().to_string(),
            size: file.len(),
            quant,
            parameters: file.tensors().iter().map(|t| t.n_elements()).sum(),
            context_length: meta
                .get_uint(&format!("{architecture}.context_length"))
                .ok(),
            architecture,
        })
    }
}

/// Runs `hearth list`: one row per model in the store; a file that cannot be read is
/// noted on stderr and skipped.
pub(crate) fn list(args: ListArgs) -> anyhow::Result<()> {
    let root = root();
    let mut rows = Vec::new();
    for path in models(&root) {
        match Row::read(&root, &path) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("hearth: skipping {}: {e:#}", path.display()),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "hearth: no models in {} (`hearth pull REF` adds one)",
            root.display()
        );
        return Ok(());
    }
    let header = ["NAME", "SIZE", "ARCH", "QUANT", "PARAMS", "CONTEXT"].map(String::from);
    let table: Vec<[String; 6]> = std::iter::once(header)
        .chain(rows.iter().map(|r| {
            [
                r.name.clone(),
                download::human_bytes(r.size),
                r.architecture.clone(),
                r.quant.clone().unwrap_or_else(|| "-".into()),
                crate::inspect::human_count(r.parameters),
                r.context_length.map_or("-".into(), |c| c.to_string()),
            ]
        }))
        .collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

/// Runs `hearth rm`: removes one stored model and the folders it leaves empty, never
/// anything outside the store.
pub(crate) fn rm(args: RmArgs) -> anyhow::Result<()> {
    let root = root();
    let name = args.name.as_str();
    let path = match find(&root, name) {
        Found::One(path) => path,
        Found::Many(names) => bail!(
            "'{name}' matches several stored models: {}; give the full name",
            names.join(", ")
        ),
        Found::None => {
            // A path to a file inside the store is as good as its name.
            let given = Path::new(name);
            match given.is_file() && inside(&root, given) {
                true => given.to_path_buf(),
                false => bail!(
                    "no stored model named '{name}' in {} (`hearth list` shows them)",
                    root.display()
                ),
            }
        }
    };
    if !inside(&root, &path) {
        bail!(
            "{}: outside the store {} (through a link); not removed",
            path.display(),
            root.display()
        );
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    remove_empty_folders(&root, &path);
    println!("removed {} ({})", name_of(&root, &path), path.display());
    Ok(())
}

/// Removes the folders above `path` that are empty, up to the store (which stays).
pub(crate) fn remove_empty_folders(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| *d != root && d.starts_with(root)) {
        // remove_dir refuses a folder that is not empty.
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Whether `path`'s folder is the store or inside it, links resolved.
fn inside(root: &Path, path: &Path) -> bool {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    match (root.canonicalize(), parent.canonicalize()) {
        (Ok(root), Ok(parent)) => parent.starts_with(root),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with hub-style and hand-placed files, a part and a hidden folder.
    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "gemma-3-270m-q4_k_m.gguf",
            "org/repo/m-Q4_K_M.gguf",
            "org/repo/m-Q8_0.gguf",
            "org/other/m-Q4_K_M.gguf",
            "org/single/sub/only.gguf",
            "org/single/sub/only-2.gguf.part",
            "bench/shape.gguf",
            ".hidden/x.gguf",
        ] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"GGUF").unwrap();
        }
        dir
    }

    fn names(root: &Path) -> Vec<String> {
        models(root).iter().map(|p| name_of(root, p)).collect()
    }

    #[test]
    fn lists_gguf_files_only() {
        let dir = store();
        assert_eq!(
            names(dir.path()),
            [
                "bench/shape",
                "gemma-3-270m-q4_k_m",
                "org/other/m-Q4_K_M",
                "org/repo/m-Q4_K_M",
                "org/repo/m-Q8_0",
                "org/single/sub/only"
            ]
        );
        assert!(models(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn finds_names() {
        let dir = store();
        let root = dir.path();
        let one = |name: &str| match find(root, name) {
            Found::One(p) => name_of(root, &p),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(one("org/repo/m-Q8_0"), "org/repo/m-Q8_0");
        assert_eq!(one("org/repo/m-Q8_0.gguf"), "org/repo/m-Q8_0");
        assert_eq!(one("gemma-3-270m-q4_k_m"), "gemma-3-270m-q4_k_m");
        assert_eq!(one("m-Q8_0"), "org/repo/m-Q8_0");
        assert_eq!(one("shape.gguf"), "bench/shape");
        assert_eq!(one("org/repo:q4_k_m"), "org/repo/m-Q4_K_M");
        assert_eq!(one("org/single"), "org/single/sub/only");
        assert_eq!(one("org/single/"), "org/single/sub/only");
        assert_eq!(
            find(root, "m-Q4_K_M"),
            Found::Many(vec![
                "org/other/m-Q4_K_M".into(),
                "org/repo/m-Q4_K_M".into()
            ])
        );
        assert!(matches!(find(root, "org/repo"), Found::Many(_)));
        for none in [
            "only-2",
            "x",
            "../x",
            "/etc/passwd",
            "org/repo:Q5_K_M",
            "",
            "org/repo/../repo/m-Q8_0",
        ] {
            assert_eq!(find(root, none), Found::None, "{none}");
        }
    }

    #[test]
    fn resolve_prefers_an_existing_path() {
        let dir = store();
        let file = dir.path().join("org/repo/m-Q8_0.gguf");
        assert_eq!(resolve(&file).unwrap(), file);
        let err = resolve(Path::new("/no/such/model.gguf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file, and no stored model"), "{err}");
    }

    #[test]
    fn inside_the_store_only() {
        let dir = store();
        let root = dir.path();
        assert!(inside(root, &root.join("org/repo/m-Q8_0.gguf")));
        assert!(!inside(root, Path::new("/etc/passwd")));
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.gguf"), b"GGUF").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        assert!(!inside(root, &root.join("link/x.gguf")));
    }
}
