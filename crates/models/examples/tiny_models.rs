//! Writes the tiny random-weight models of `hearth_models::tiny` to a directory, with a
//! `manifest.json` naming each file, its FNV-1a hash and the test tokens, for
//! `tests/fixtures/models/make_fixtures.py`.
//!
//! ```text
//! cargo run -p hearth-models --example tiny_models -- DIR
//! ```

use std::path::PathBuf;

use hearth_models::tiny;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: tiny_models DIR");
        std::process::exit(2)
    }));
    std::fs::create_dir_all(&dir)?;
    // The fixtures' shared token list; a model that wants more lists its own.
    let tokens = tiny::test_tokens(20);
    let mut entries = Vec::new();
    for spec in tiny::specs() {
        let bytes = spec.to_bytes();
        let file = format!("{}.gguf", spec.name);
        std::fs::write(dir.join(&file), &bytes)?;
        let own_tokens = match spec.n_tokens {
            20 => String::new(),
            n => {
                let t: Vec<String> = tiny::test_tokens(n).iter().map(u32::to_string).collect();
                format!(", \"tokens\": [{}]", t.join(", "))
            }
        };
        entries.push(format!(
            "    {{\"name\": \"{}\", \"file\": \"{file}\", \"fnv1a64\": \"{:016x}\", \"bytes\": {}{own_tokens}}}",
            spec.name,
            tiny::fnv1a64(&bytes),
            bytes.len()
        ));
        eprintln!(
            "wrote {} ({} bytes)",
            dir.join(&file).display(),
            bytes.len()
        );
    }
    let tokens: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let manifest = format!(
        "{{\n  \"tokens\": [{}],\n  \"models\": [\n{}\n  ]\n}}\n",
        tokens.join(", "),
        entries.join(",\n")
    );
    std::fs::write(dir.join("manifest.json"), manifest)
}
