//! Helpers shared by the CLI's integration tests: running the real binary, scratch
//! files, the tiny model and the default model.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_models::tiny;

/// Runs the real `hearth` binary with `args`.
pub fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is valid UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `bytes` to `name` in this target's scratch directory, atomically (tests run in
/// parallel and may ask for the same file).
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    let tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    tmp.persist(&path).unwrap();
    path
}

/// The tiny Llama with f32 weights (its logits match llama.cpp's to ~1e-6), written to
/// the scratch file `name`.
pub fn tiny_model(name: &str) -> PathBuf {
    let spec = tiny::specs()
        .into_iter()
        .find(|s| s.name == "llama_f32")
        .unwrap();
    scratch_file(name, &spec.to_bytes())
}

/// The default model, when it has been fetched (scripts/fetch-model.sh) and the test is
/// built with optimizations (a debug build would take minutes per run).
pub fn gemma() -> Option<PathBuf> {
    if cfg!(debug_assertions) {
        eprintln!("debug build: skipping the real-model test (run with --release)");
        return None;
    }
    let path =
        Path::new(&std::env::var_os("HOME")?).join(".cache/hearth/models/gemma-3-270m-q4_k_m.gguf");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("{} not found: skipping", path.display());
        None
    }
}

/// Runs `args`, expects failure with a one-line message containing `needle`.
pub fn refused(args: &[&str], needle: &str) {
    let out = hearth(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("hearth: ") && l.contains(needle)),
        "{args:?}: expected {needle:?} in:\n{err}"
    );
}
