//! Pathological inputs: time and outcome of encoding long runs (a development aid, not a
//! test): `stress MODEL.gguf [PRE]`.
use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = GgufFile::open(args.get(1).ok_or("usage: stress MODEL.gguf [PRE]")?)?;
    let mut md = file.metadata().clone();
    if let Some(pre) = args.get(2) {
        md.set("tokenizer.ggml.pre", pre.as_str());
    }
    let tok = Tokenizer::from_metadata(&md)?;
    let n = 1_000_000;
    for (name, text) in [
        ("spaces", " ".repeat(n) + "a"),
        ("newlines", "\n".repeat(n)),
        ("tabs+spaces", " \t".repeat(n / 2) + "x"),
        ("punctuation", "!?".repeat(n / 2)),
        ("letters", "a".repeat(n)),
        ("digits", "7".repeat(n)),
        ("cjk", "中".repeat(n / 3)),
        ("special text", "<start_of_turn><|im_start|>".repeat(n / 27)),
    ] {
        let t = std::time::Instant::now();
        let r = tok.encode(&text, false, true);
        let r = r.map(|v| v.len()).map_err(|e| e.to_string());
        println!("{name:>12}: {r:?} in {:.2?}", t.elapsed());
    }
    Ok(())
}
