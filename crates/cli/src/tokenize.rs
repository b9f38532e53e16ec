//! `hearth tokenize MODEL (--text T | --file F) [--no-bos] [--no-special]`: the token ids
//! of a text, as one JSON array on stdout (like llama.cpp's `llama-tokenize --ids`).
//!
//! By default BOS/EOS are added as the model's metadata asks and the text of special
//! tokens (`<start_of_turn>`, `<|im_start|>`) stands for those tokens. `--no-bos` adds no
//! special tokens; `--no-special` tokenizes special-token text as plain text.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;

/// The arguments of `hearth tokenize`.
#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// The GGUF model file, or a stored model's name (only its tokenizer metadata is
    /// read).
    pub model: PathBuf,
    /// The text to tokenize.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub text: Option<String>,
    /// A file holding the text to tokenize (UTF-8).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Add no BOS/EOS, whatever the model asks.
    #[arg(long)]
    pub no_bos: bool,
    /// Tokenize special-token text as plain text.
    #[arg(long)]
    pub no_special: bool,
}

/// Runs `hearth tokenize` with parsed arguments.
pub fn run_args(args: TokenizeArgs) -> anyhow::Result<()> {
    let text = match (args.text, &args.file) {
        (Some(t), _) => t,
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not UTF-8 (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
        }
        (None, None) => anyhow::bail!("give the text with --text or --file"),
    };
    let model = crate::store::resolve(&args.model)?;
    run(&model, text, !args.no_bos, !args.no_special)
}

/// Prints the ids of `text` under `model`'s tokenizer as a JSON array.
pub fn run(model: &Path, text: String, add_bos: bool, parse_special: bool) -> anyhow::Result<()> {
    let ids = tokenize(model, &text, add_bos, parse_special)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", to_json(&ids))?;
    Ok(())
}

fn tokenize(
    model: &Path,
    text: &str,
    add_bos: bool,
    parse_special: bool,
) -> anyhow::Result<Vec<u32>> {
    let file = GgufFile::open(model)?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: cannot build the tokenizer", model.display()))?;
    if tok.pre_tokenizer_missing() {
        eprintln!(
            "hearth: {}: no tokenizer.ggml.pre; using llama.cpp's default pre-tokenizer (tokens may differ from the model's training)",
            model.display()
        );
    }
    Ok(tok.encode(text, add_bos, parse_special)?)
}

/// `[1, 2, 3]`, as llama-tokenize prints ids.
fn to_json(ids: &[u32]) -> String {
    let mut s = String::with_capacity(ids.len() * 7 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array() {
        assert_eq!(to_json(&[]), "[]");
        assert_eq!(to_json(&[2, 9259, 1902]), "[2, 9259, 1902]");
        let parsed: Vec<u32> = serde_json::from_str(&to_json(&[1, 22, 333])).unwrap();
        assert_eq!(parsed, [1, 22, 333]);
    }

    /// The default model's tokenizer, when the model has been fetched
    /// (scripts/fetch-model.sh): BOS added by default, special text parsed.
    #[test]
    fn gemma_modes() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let model = Path::new(&home).join(".cache/hearth/models/gemma-3-270m-q4_k_m.gguf");
        if !model.is_file() {
            eprintln!("{} not found: skipping", model.display());
            return;
        }
        let with = tokenize(&model, "<start_of_turn>user", true, true).unwrap();
        assert_eq!(&with[..2], [2, 105]);
        let plain = tokenize(&model, "<start_of_turn>user", false, false).unwrap();
        assert_ne!(plain[0], 2);
        assert!(!plain.contains(&105));
    }
}
