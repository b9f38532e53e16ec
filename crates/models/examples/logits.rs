//! Writes the logits of every position of a token sequence, as little-endian f32
//! `[n_tokens, n_vocab]`, for comparisons with other implementations.
//!
//! ```text
//! cargo run --release -p hearth-models --example logits -- MODEL.gguf OUT.bin TOKEN...
//! ```

use hearth_gguf::GgufFile;
use hearth_kernels::pool::ThreadPool;
use hearth_models::{Batch, KvCache, Model, Scratch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: logits MODEL.gguf OUT.bin TOKEN...".into());
    }
    let tokens = args[3..]
        .iter()
        .map(|t| t.parse::<u32>())
        .collect::<Result<Vec<_>, _>>()?;
    let file = GgufFile::open(&args[1])?;
    let model = Model::load(&file)?;
    let pool = ThreadPool::new(2)?;
    let mut kv = KvCache::new(model.hparams(), tokens.len())?;
    let mut scratch = Scratch::new(&model, tokens.len().min(512), tokens.len())?;
    let seq = kv.new_sequence();
    let mut batch = Batch::new();
    batch.push_seq(&tokens, 0, seq, true);
    let logits = model.forward(&pool, &mut kv, &mut scratch, &batch)?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&args[2], bytes)?;
    Ok(())
}
