//! `hearth inspect FILE [--json]`: what a GGUF file holds, without loading the model.
//!
//! Both outputs show the header, every metadata key (arrays summarized by element type,
//! length and first items), every tensor, and the bytes per tensor type. Only the first
//! items of an array are formatted, so a 262 144-token vocabulary costs nothing to show.
//!
//! # JSON shape (stable; scripts such as `tests/inspect_vs_gguf.py` rely on it)
//! ```text
//! {
//!   "file": str, "file_bytes": int, "version": int, "alignment": int,
//!   "data_offset": int,                    // start of the data section in the file
//!   "metadata_count": int, "tensor_count": int, "tensor_bytes": int,
//!   "metadata": [ { "key": str, ...VALUE } ],          // in file order
//!   "tensors": [ { "name": str, "type": str,            // "Q4_K", as ggml names it
//!                  "shape": [int],                      // ne[0] first, as in GGUF
//!                  "n_elements": int,
//!                  "offset": int,                       // from the data section start
//!                  "file_offset": int,                  // from the file start
//!                  "n_bytes": int } ],                  // in file order
//!   "totals": [ { "type": str, "tensors": int, "bytes": int } ]   // by type id
//! }
//! VALUE, a scalar:  "type": "UINT8" … "FLOAT64" | "BOOL" | "STRING", "value": SCALAR
//! VALUE, an array:  "type": "ARRAY", "element_type": str, "len": int,
//!                   "items": [ SCALAR or { "type": "ARRAY", ...the same fields } ],
//!                   "items_truncated": bool   // items holds the first 16 elements
//! SCALAR: a JSON number, bool or string. FLOAT32 values are written widened to f64, so
//!   they read back exactly; non-finite floats are the strings "nan", "inf", "-inf".
//! ```
//! The type names are GGUF's (`gguf.md`), which the `gguf` Python package also uses.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use hearth_gguf::{Array, GgufError, GgufFile, TensorInfo, TensorType, Value};
use hearth_models::{HParams, KvType, KvTypes};
use serde_json::{json, Map, Value as Json};

/// How many items of an array the JSON output includes.
const JSON_ITEMS: usize = 16;
/// How many items of an array the text output shows.
const TEXT_ITEMS: usize = 6;
/// Strings longer than this (in chars) are cut in the text output.
const TEXT_STRING_CHARS: usize = 72;

/// Opens `path` (a file, or a stored model's name) and prints its description to stdout.
pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    let path = &crate::store::resolve(path)?;
    let file = GgufFile::open(path).map_err(|e| match e {
        // An I/O error already names the path.
        e @ GgufError::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(path.display().to_string()),
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &to_json(path, &file))
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, path, &file)
    };
    match written.and_then(|()| out.flush()) {
        // The reader went away (`hearth inspect x.gguf | head`): not our failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Tensor count and bytes per type, in type id order.
fn totals(file: &GgufFile) -> BTreeMap<TensorType, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for t in file.tensors() {
        let e = totals.entry(t.ty()).or_insert((0, 0));
        e.0 += 1;
        e.1 += t.n_bytes();
    }
    totals
}

fn to_json(path: &Path, file: &GgufFile) -> Json {
    let metadata: Vec<Json> = file
        .metadata()
        .iter()
        .map(|(key, value)| {
            let mut entry = Map::new();
            entry.insert("key".into(), key.into());
            value_fields(value, &mut entry);
            Json::Object(entry)
        })
        .collect();
    let tensors: Vec<Json> = file.tensors().iter().map(tensor_json).collect();
    let totals: Vec<Json> = totals(file)
        .into_iter()
        .map(|(ty, (n, bytes))| json!({ "type": ty.name(), "tensors": n, "bytes": bytes }))
        .collect();
    json!({
        "file": path.display().to_string(),
        "file_bytes": file.len(),
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata_count": file.metadata().len(),
        "tensor_count": file.tensors().len(),
        "tensor_bytes": file.tensors().iter().map(TensorInfo::n_bytes).sum::<u64>(),
        "metadata": metadata,
        "tensors": tensors,
        "totals": totals,
    })
}

fn tensor_json(t: &TensorInfo) -> Json {
    json!({
        "name": t.name(),
        "type": t.ty().name(),
        "shape": t.shape(),
        "n_elements": t.n_elements(),
        "offset": t.offset(),
        "file_offset": t.file_offset(),
        "n_bytes": t.n_bytes(),
    })
}

/// Adds `"type"` and `"value"` (scalar) or the array summary fields to `entry`.
fn value_fields(value: &Value, entry: &mut Map<String, Json>) {
    entry.insert("type".into(), value.value_type().name().into());
    match value {
        Value::Array(a) => array_fields(a, entry),
        v => {
            entry.insert("value".into(), scalar_json(v));
        }
    }
}

fn array_fields(a: &Array, entry: &mut Map<String, Json>) {
    let shown = a.len().min(JSON_ITEMS);
    let items: Vec<Json> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|item| match &item {
            Value::Array(inner) => {
                let mut m = Map::new();
                m.insert("type".into(), "ARRAY".into());
                array_fields(inner, &mut m);
                Json::Object(m)
            }
            v => scalar_json(v),
        })
        .collect();
    entry.insert("element_type".into(), a.element_type().name().into());
    entry.insert("len".into(), a.len().into());
    entry.insert("items".into(), items.into());
    entry.insert("items_truncated".into(), (a.len() > shown).into());
}

fn scalar_json(v: &Value) -> Json {
    match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        Value::F32(x) => float_json(f64::from(x)),
        Value::F64(x) => float_json(x),
        Value::Bool(x) => x.into(),
        Value::String(ref s) => s.as_str().into(),
        // Arrays are summarized by `array_fields`, never passed here.
        Value::Array(_) => Json::Null,
    }
}

/// JSON has no NaN or infinity; they are written as strings.
fn float_json(x: f64) -> Json {
    if x.is_finite() {
        x.into()
    } else if x.is_nan() {
        "nan".into()
    } else if x > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

fn write_text(out: &mut impl Write, path: &Path, file: &GgufFile) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: GGUF v{}, {} bytes, alignment {}, data section at {}",
        path.display(),
        file.version(),
        file.len(),
        file.alignment(),
        file.data_offset()
    )?;

    let meta = file.metadata();
    writeln!(out, "\nmetadata ({} keys):", meta.len())?;
    let key_width = meta.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let type_width = meta
        .iter()
        .map(|(_, v)| type_text(v).len())
        .max()
        .unwrap_or(0);
    for (key, value) in meta.iter() {
        writeln!(
            out,
            "  {key:key_width$}  {:type_width$}  {}",
            type_text(value),
            value_text(value)
        )?;
    }

    writeln!(out, "\ntensors ({}):", file.tensors().len())?;
    let name_width = file
        .tensors()
        .iter()
        .map(|t| t.name().len())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "  {:name_width$}  {:<7} {:<22} {:>12}",
        "name", "type", "shape", "bytes"
    )?;
    for t in file.tensors() {
        writeln!(
            out,
            "  {:name_width$}  {:<7} {:<22} {:>12}",
            t.name(),
            t.ty().name(),
            format!("{:?}", t.shape()),
            t.n_bytes()
        )?;
    }

    writeln!(out, "\nmodel:")?;
    match HParams::from_file(file) {
        Ok(hp) => {
            let (k, v) = (hp.n_embd_k_gqa(), hp.n_embd_v_gqa());
            let what = match hp.kv_latent {
                Some(w) => format!("one latent row of {w} values per layer"),
                None => format!("{k} key and {v} value values per layer"),
            };
            writeln!(
                out,
                "  {}, {} layers{}; KV cache per token: {what}, {} bytes in f16 ({} in f32)",
                hp.arch.name(),
                hp.n_layer,
                match hp.n_expert {
                    0 => String::new(),
                    n => format!(", {} of {n} experts per token", hp.n_expert_used),
                },
                KvTypes::both(KvType::F16).bytes_per_token(&hp),
                KvTypes::F32.bytes_per_token(&hp),
            )?;
        }
        Err(e) => writeln!(out, "  not loadable by Hearth: {e}")?,
    }

    writeln!(out, "\nbytes per type:")?;
    let mut all = (0usize, 0u64);
    for (ty, (n, bytes)) in totals(file) {
        writeln!(
            out,
            "  {:<7} {n:>6} tensors {bytes:>14} bytes  {}",
            ty.name(),
            mib(bytes)
        )?;
        all.0 += n;
        all.1 += bytes;
    }
    writeln!(
        out,
        "  {:<7} {:>6} tensors {:>14} bytes  {}",
        "total",
        all.0,
        all.1,
        mib(all.1)
    )
}

fn mib(bytes: u64) -> String {
    format!("({:.1} MiB)", bytes as f64 / (1024.0 * 1024.0))
}

/// `UINT32`, or `[STRING; 262144]` for an array.
fn type_text(value: &Value) -> String {
    match value {
        Value::Array(a) => format!("[{}; {}]", a.element_type().name(), a.len()),
        v => v.value_type().name().to_string(),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Array(a) => array_text(a),
        Value::String(s) => string_text(s),
        // Debug switches to exponents for very large or small values (`1e-30`), where
        // Display would print every digit.
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(x) => x.to_string(),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
    }
}

fn array_text(a: &Array) -> String {
    let shown = a.len().min(TEXT_ITEMS);
    let mut items: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| match &v {
            Value::Array(inner) => format!("[{}; {}]", inner.element_type().name(), inner.len()),
            v => value_text(v),
        })
        .collect();
    if a.len() > shown {
        items.push("…".to_string());
    }
    format!("[{}]", items.join(", "))
}

/// A quoted, escaped string, cut if long (a chat template can be kilobytes).
fn string_text(s: &str) -> String {
    if s.chars().count() <= TEXT_STRING_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(TEXT_STRING_CHARS).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

/// `268M`, `7.6B`: a parameter count as model names write it (`hearth list`, and
/// `hearth bench` when a file has no `general.size_label`).
pub(crate) fn human_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{}M", (n as f64 / 1e6).round())
    } else {
        format!("{}K", (n as f64 / 1e3).round())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameter_counts() {
        assert_eq!(super::human_count(268_098_176), "268M");
        assert_eq!(super::human_count(7_615_616_512), "7.6B");
        assert_eq!(super::human_count(52_000), "52K");
    }
}
