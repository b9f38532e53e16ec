//! Writes a few small valid GGUF files to seed the `gguf_read` fuzz target:
//! `cargo run -p hearth-gguf --example write_fuzz_seeds -- fuzz/corpus/gguf_read`.
//!
//! Each seed exercises a different part of the format (every value type, nested arrays,
//! several tensor types, version 2, unusual alignments), so the fuzzer starts from
//! inputs that get past the header.

use std::path::PathBuf;

use hearth_gguf::{Array, GgufWriter, TensorType, Value};

fn main() -> std::io::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "fuzz/corpus/gguf_read".into());
    std::fs::create_dir_all(&dir)?;

    let mut seeds: Vec<(&str, GgufWriter)> = Vec::new();

    seeds.push(("empty.gguf", GgufWriter::new()));

    let mut every = GgufWriter::new();
    every
        .set("general.architecture", "llama")
        .set("u8", 1u8)
        .set("i8", -1i8)
        .set("u16", 2u16)
        .set("i16", -2i16)
        .set("u32", 3u32)
        .set("i32", -3i32)
        .set("f32", 0.5f32)
        .set("bool", true)
        .set("u64", 4u64)
        .set("i64", -4i64)
        .set("f64", 0.25f64)
        .set("tokens", vec!["<s>", "</s>", "a"])
        .set("scores", vec![0.0f32, -1.0, 2.0])
        .set("types", vec![1i32, 3, 6])
        .set("flags", vec![true, false])
        .set(
            "nested",
            Value::Array(Array::Array(vec![
                Array::U8(vec![1, 2]),
                Array::Array(vec![Array::String(["x"].into_iter().collect())]),
            ])),
        );
    every
        .add_tensor("f32", TensorType::F32, &[4, 2], vec![0x3f; 32])
        .unwrap()
        .add_tensor("q8_0", TensorType::Q8_0, &[32], vec![1; 34])
        .unwrap()
        .add_tensor("q4_k", TensorType::Q4_K, &[256], vec![2; 144])
        .unwrap()
        .add_tensor("f16.scalar", TensorType::F16, &[], vec![0, 0x3c])
        .unwrap();
    seeds.push(("every_type.gguf", every));

    let mut v2 = GgufWriter::new();
    v2.set_version(2).set_alignment(8).set("general.name", "v2");
    v2.add_tensor("a", TensorType::Q5_0, &[32, 1, 1, 1], vec![3; 22])
        .unwrap()
        .add_tensor("b", TensorType::I8, &[3], vec![4; 3])
        .unwrap()
        .add_tensor("empty", TensorType::F32, &[0], Vec::new())
        .unwrap();
    seeds.push(("v2_align8.gguf", v2));

    let mut align1 = GgufWriter::new();
    align1.set_alignment(1).set("k", "v");
    align1
        .add_tensor("iq4_nl", TensorType::IQ4_NL, &[32, 2], vec![5; 36])
        .unwrap();
    seeds.push(("align1.gguf", align1));

    for (name, w) in seeds {
        let bytes = w.to_bytes();
        println!("{name}: {} bytes", bytes.len());
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
