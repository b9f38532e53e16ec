//! Encoding throughput: `cargo run --release -p hearth-tokenizer --example encode_bench --
//! MODEL.gguf TEXT_FILE [--iters N] [--ids-out FILE]`.
//!
//! Loads the tokenizer, encodes the whole file once to warm up, then times `--iters`
//! encodes (no BOS/EOS, special-token text parsed, as a prompt would be) and prints one
//! JSON line: bytes, tokens, the best and median seconds, and MB/s (10^6 bytes) of the
//! best run. `--ids-out` writes the ids as a JSON array, for comparison with other
//! tokenizers. Used by bench/tokenize/run.sh.

use std::time::Instant;

use hearth_gguf::GgufFile;
use hearth_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or("usage: encode_bench MODEL TEXT [--iters N] [--ids-out FILE]")?;
    let text_path = args.next().ok_or("missing TEXT")?;
    let mut iters = 10;
    let mut ids_out = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => iters = args.next().ok_or("--iters N")?.parse()?,
            "--ids-out" => ids_out = Some(args.next().ok_or("--ids-out FILE")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let text = std::fs::read_to_string(&text_path)?;
    let t0 = Instant::now();
    let file = GgufFile::open(&model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let load_s = t0.elapsed().as_secs_f64();

    let ids = tok.encode(&text, false, true)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let again = tok.encode(&text, false, true)?;
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(again.len(), ids.len());
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    if let Some(path) = ids_out {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        std::fs::write(path, format!("[{}]\n", s.join(",")))?;
    }
    println!(
        "{{\"bytes\": {}, \"tokens\": {}, \"load_s\": {load_s:.3}, \"best_s\": {best:.4}, \"median_s\": {median:.4}, \"mb_per_s\": {:.2}}}",
        text.len(),
        ids.len(),
        text.len() as f64 / best / 1e6
    );
    Ok(())
}
