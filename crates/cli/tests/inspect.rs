//! `hearth inspect` as a user runs it: the real binary on files made by the writer, valid
//! and malformed. A refused file must give a non-zero exit, one line on stderr naming the
//! field at fault, and no panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_gguf::{Array, GgufWriter, TensorType, Value};

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

/// Writes `bytes` to a file named `name` in this test target's scratch directory.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn inspect(path: &Path, json: bool) -> Output {
    let mut cmd = hearth();
    cmd.arg("inspect").arg(path);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

/// A file with every value type, a long array, nested arrays and a few tensors.
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("general.name", "sample \"model\"\nwith a newline")
        .set("t.u8", 200u8)
        .set("t.i8", -5i8)
        .set("t.u16", 60000u16)
        .set("t.i16", -300i16)
        .set("t.u32", 4_000_000_000u32)
        .set("t.i32", -2_000_000_000i32)
        .set("t.f32", 1e-6f32)
        .set("t.f32_nan", f32::NAN)
        .set("t.f64_inf", f64::NEG_INFINITY)
        .set("t.bool", true)
        .set("t.u64", u64::MAX)
        .set("t.i64", i64::MIN)
        .set("t.f64", 0.1f64)
        .set("t.long_template", "{% for m in messages %}".repeat(100))
        .set(
            "t.tokens",
            (0..100).map(|i| format!("tok{i}")).collect::<Vec<_>>(),
        )
        .set(
            "t.scores",
            (0..100).map(|i| i as f32 * 0.25).collect::<Vec<_>>(),
        )
        .set("t.small", vec![1i32, -2, 3])
        .set("t.bools", vec![true, false])
        .set("t.empty", Value::Array(Array::F64(vec![])))
        .set(
            "t.nested",
            Value::Array(Array::Array(vec![
                Array::U16(vec![1, 2, 3]),
                Array::String(["a", "é"].into_iter().collect()),
                Array::Array(vec![Array::I64(vec![-1])]),
            ])),
        );
    w.add_tensor(
        "token_embd.weight",
        TensorType::Q4_K,
        &[512, 4],
        vec![1; 144 * 8],
    )
    .unwrap();
    w.add_tensor("output_norm.weight", TensorType::F32, &[512], vec![2; 2048])
        .unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight",
        TensorType::Q8_0,
        &[64, 3],
        vec![3; 34 * 6],
    )
    .unwrap();
    w.add_tensor(
        "blk.0.ffn_up.weight",
        TensorType::IQ2_XXS,
        &[256, 1],
        vec![4; 66],
    )
    .unwrap();
    w
}

#[test]
fn text_output_lists_metadata_tensors_and_totals() {
    let path = scratch("sample.gguf", &sample().to_bytes());
    let out = inspect(&path, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "GGUF v3",
        "metadata (22 keys)",
        "general.architecture",
        "\"llama\"",
        "\"sample \\\"model\\\"\\nwith a newline\"",
        "[STRING; 100]",
        "\"tok0\", \"tok1\"",
        "…",
        "tensors (4)",
        "token_embd.weight",
        "Q4_K",
        "[512, 4]",
        "IQ2_XXS",
        "bytes per type",
        "total",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // The long template is cut, the 100 tokens are not all printed.
    assert!(text.contains("(2300 bytes)"), "{text}");
    assert!(!text.contains("tok99"), "{text}");
}

#[test]
fn json_output_has_the_documented_shape() {
    let path = scratch("sample-json.gguf", &sample().to_bytes());
    let out = inspect(&path, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["version"], 3);
    assert_eq!(j["alignment"], 32);
    assert_eq!(j["metadata_count"], 22);
    assert_eq!(j["tensor_count"], 4);
    assert_eq!(j["file_bytes"], std::fs::metadata(&path).unwrap().len());

    let meta = j["metadata"].as_array().unwrap();
    let entry = |key: &str| meta.iter().find(|e| e["key"] == key).unwrap().clone();
    assert_eq!(meta[0]["key"], "general.architecture", "file order");
    assert_eq!(entry("t.u32")["type"], "UINT32");
    assert_eq!(entry("t.u32")["value"], 4_000_000_000u32);
    assert_eq!(entry("t.u64")["value"], u64::MAX);
    assert_eq!(entry("t.i64")["value"], i64::MIN);
    assert_eq!(
        entry("t.f32")["value"],
        f64::from(1e-6f32),
        "f32 widened exactly"
    );
    assert_eq!(entry("t.f32_nan")["value"], "nan");
    assert_eq!(entry("t.f64_inf")["value"], "-inf");
    assert_eq!(entry("t.bool")["value"], true);
    assert_eq!(
        entry("general.name")["value"],
        "sample \"model\"\nwith a newline"
    );
    assert_eq!(
        entry("t.long_template")["value"].as_str().unwrap().len(),
        2300,
        "JSON strings are whole"
    );

    let tokens = entry("t.tokens");
    assert_eq!(tokens["type"], "ARRAY");
    assert_eq!(tokens["element_type"], "STRING");
    assert_eq!(tokens["len"], 100);
    assert_eq!(tokens["items"].as_array().unwrap().len(), 16);
    assert_eq!(tokens["items"][15], "tok15");
    assert_eq!(tokens["items_truncated"], true);
    assert_eq!(entry("t.scores")["items"][3], 0.75);
    assert_eq!(entry("t.small")["items"], serde_json::json!([1, -2, 3]));
    assert_eq!(entry("t.small")["items_truncated"], false);
    assert_eq!(entry("t.empty")["len"], 0);
    let nested = entry("t.nested");
    assert_eq!(nested["element_type"], "ARRAY");
    assert_eq!(nested["items"][0]["element_type"], "UINT16");
    assert_eq!(nested["items"][1]["items"], serde_json::json!(["a", "é"]));
    assert_eq!(nested["items"][2]["items"][0]["items"][0], -1);

    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors[0]["name"], "token_embd.weight");
    assert_eq!(tensors[0]["type"], "Q4_K");
    assert_eq!(tensors[0]["shape"], serde_json::json!([512, 4]));
    assert_eq!(tensors[0]["n_elements"], 2048);
    assert_eq!(tensors[0]["n_bytes"], 1152);
    assert_eq!(tensors[0]["offset"], 0);
    assert_eq!(tensors[1]["offset"], 1152);
    assert_eq!(
        tensors[1]["file_offset"].as_u64().unwrap(),
        j["data_offset"].as_u64().unwrap() + 1152
    );
    let totals = j["totals"].as_array().unwrap();
    let types: Vec<_> = totals.iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["F32", "Q8_0", "Q4_K", "IQ2_XXS"], "by type id");
    assert_eq!(j["tensor_bytes"], 1152 + 2048 + 204 + 66);
}

/// The reference check: the `gguf` Python package reads the writer's file and must agree
/// with `hearth inspect --json` on every key, value and tensor. Skipped (with a note)
/// where Python or the package is missing; CI has both.
#[test]
fn agrees_with_the_gguf_python_package() {
    let has_gguf = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_gguf {
        eprintln!("skipped: python3 with the gguf package is not available");
        return;
    }
    let mut w = sample();
    w.set_alignment(64);
    let path = scratch("sample-vs-gguf.gguf", &w.to_bytes());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/inspect_vs_gguf.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_hearth"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `hearth inspect` (text and JSON) on `bytes` and checks the refusal: non-zero
/// exit, nothing on stdout, one line on stderr that mentions every one of `parts`.
#[track_caller]
fn assert_refused(name: &str, bytes: &[u8], parts: &[&str]) {
    let path = scratch(name, bytes);
    for json in [false, true] {
        let out = inspect(&path, json);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: printed something");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with("hearth: "), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: the path is named: {stderr}");
        for p in parts {
            assert!(stderr.contains(p), "{name}: {p:?} missing from {stderr}");
        }
    }
}

fn find(bytes: &[u8], needle: &str) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap()
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + with.len()].copy_from_slice(with);
    b
}

#[test]
fn malformed_files_are_refused_with_a_named_field() {
    let good = sample().to_bytes();
    // Positions of the fields of the tensor info of "output_norm.weight" (1 dim).
    let norm = find(&good, "output_norm.weight") + "output_norm.weight".len();
    let (n_dims, ne0, ty, offset) = (norm, norm + 4, norm + 12, norm + 16);
    let embd = find(&good, "token_embd.weight") + "token_embd.weight".len();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty.gguf", vec![], vec!["header magic"]),
        (
            "cut-header.gguf",
            good[..7].to_vec(),
            vec!["header version"],
        ),
        (
            "cut-metadata.gguf",
            good[..find(&good, "t.scores") + 30].to_vec(),
            vec!["metadata key 't.scores'"],
        ),
        (
            "cut-data.gguf",
            good[..good.len() - 300].to_vec(),
            vec!["reach past the end"],
        ),
        (
            "magic.gguf",
            patch(&good, 0, b"GGML"),
            vec!["not a GGUF file"],
        ),
        (
            "v1.gguf",
            patch(&good, 4, &1u32.to_le_bytes()),
            vec!["version 1"],
        ),
        (
            "v9.gguf",
            patch(&good, 4, &9u32.to_le_bytes()),
            vec!["version 9"],
        ),
        (
            "kv-count.gguf",
            patch(&good, 16, &u64::MAX.to_le_bytes()),
            vec!["header kv_count", "cannot fit"],
        ),
        (
            "key-len.gguf",
            patch(&good, 24, &(1u64 << 60).to_le_bytes()),
            vec!["metadata key #0", "string length"],
        ),
        (
            "array-len.gguf",
            patch(
                &good,
                find(&good, "t.tokens") + 8 + 4 + 4,
                &u64::MAX.to_le_bytes(),
            ),
            vec!["metadata key 't.tokens'", "cannot fit"],
        ),
        (
            "value-type.gguf",
            patch(&good, find(&good, "t.u8") + 4, &77u32.to_le_bytes()),
            vec!["metadata key 't.u8'", "unknown value type id 77"],
        ),
        (
            "dims.gguf",
            patch(&good, n_dims, &7u32.to_le_bytes()),
            vec!["tensor 'output_norm.weight'", "7 dimensions"],
        ),
        (
            "overflow.gguf",
            patch(&good, embd + 12, &(u64::MAX / 3).to_le_bytes()),
            vec!["tensor 'token_embd.weight'", "too large"],
        ),
        (
            "type.gguf",
            patch(&good, ty, &4u32.to_le_bytes()),
            vec!["tensor 'output_norm.weight'", "unknown tensor type id 4"],
        ),
        (
            "partial-block.gguf",
            patch(&good, embd + 4, &500u64.to_le_bytes()),
            vec!["tensor 'token_embd.weight'", "row length 500", "Q4_K"],
        ),
        (
            "misaligned.gguf",
            patch(&good, offset, &1160u64.to_le_bytes()),
            vec!["tensor 'output_norm.weight'", "alignment 32"],
        ),
        (
            "out-of-range.gguf",
            patch(&good, offset, &(1u64 << 40).to_le_bytes()),
            vec!["tensor 'output_norm.weight'", "reach past the end"],
        ),
        (
            "overlap.gguf",
            patch(&good, offset, &1024u64.to_le_bytes()),
            vec!["tensor 'output_norm.weight' overlaps tensor 'token_embd.weight'"],
        ),
        (
            "ne0.gguf",
            patch(&good, ne0, &1024u64.to_le_bytes()),
            vec!["tensor 'output_norm.weight'", "4096 bytes at offset 1152"],
        ),
    ];
    for (name, bytes, parts) in &cases {
        assert_refused(name, bytes, parts);
    }

    let mut w = sample();
    w.set("general.alignment", 24u32);
    assert_refused(
        "alignment.gguf",
        &w.to_bytes(),
        &["general.alignment", "power of two"],
    );

    let mut deep = Array::F32(vec![1.0]);
    for _ in 0..20 {
        deep = Array::Array(vec![deep]);
    }
    let mut w = sample();
    w.set("t.deep", Value::Array(deep));
    assert_refused(
        "deep.gguf",
        &w.to_bytes(),
        &["metadata key 't.deep'", "nested deeper"],
    );
}

#[test]
fn missing_file_is_refused_by_path() {
    let out = inspect(Path::new("/nonexistent/model.gguf"), false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("hearth: /nonexistent/model.gguf: no such file"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

/// Every proper prefix of a small file that cuts into its tensor data or anything
/// before is refused by the binary, cleanly.
#[test]
fn every_truncation_of_a_small_file_is_refused() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("t.list", vec![1u16, 2, 3])
        .set("t.name", "x");
    w.add_tensor("a", TensorType::Q8_0, &[32], vec![7; 34])
        .unwrap();
    let bytes = w.to_bytes();
    // The file ends with the tensor's 34 bytes and 30 bytes of padding.
    let end_of_data = bytes.len() - 30;
    for len in 0..end_of_data {
        let path = scratch("prefix.gguf", &bytes[..len]);
        let out = inspect(&path, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "prefix {len}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "prefix {len}: {stderr}");
        assert!(!stderr.contains("panicked"), "prefix {len}: {stderr}");
    }
    let path = scratch("prefix.gguf", &bytes[..end_of_data]);
    assert!(
        inspect(&path, false).status.success(),
        "the padding is optional"
    );
}
