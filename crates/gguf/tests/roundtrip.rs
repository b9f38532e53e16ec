//! Writer → reader round trips: every value type (nested arrays included), tensors of
//! several types and shapes, both versions, several alignments, from memory and from a
//! mapped file. The writer's output is also checked against the `gguf` Python package by
//! `tests/inspect_vs_gguf.py` (see `crates/cli/tests/inspect.rs`), so the two cannot
//! agree on a wrong layout.

use hearth_gguf::{Array, GgufFile, GgufWriter, TensorType, Value, ValueType};

/// One value of every type, with edge values, in a fixed order.
fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(u8::MAX)),
        ("t.i8", Value::I8(i8::MIN)),
        ("t.u16", Value::U16(u16::MAX)),
        ("t.i16", Value::I16(i16::MIN)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool_true", Value::Bool(true)),
        ("t.bool_false", Value::Bool(false)),
        ("t.string", Value::from("héllo \"wörld\"\n\u{1F525}")),
        ("t.empty_string", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.arr_u8", vec![0u8, 1, 255].into()),
        ("t.arr_i8", vec![-128i8, 0, 127].into()),
        ("t.arr_u16", vec![0u16, 65535].into()),
        ("t.arr_i16", vec![-32768i16, 32767].into()),
        ("t.arr_u32", vec![1u32, 2, 3].into()),
        ("t.arr_i32", vec![-1i32, 0, 1].into()),
        ("t.arr_f32", vec![0.5f32, -0.0, f32::INFINITY].into()),
        ("t.arr_bool", vec![true, false, true].into()),
        ("t.arr_string", vec!["", "a", "<0x0A>", "▁the"].into()),
        ("t.arr_u64", vec![u64::MAX, 0].into()),
        ("t.arr_i64", vec![i64::MIN, i64::MAX].into()),
        ("t.arr_f64", vec![1e300f64, -1e-300].into()),
        ("t.arr_empty", Value::Array(Array::U32(vec![]))),
        (
            "t.arr_nested",
            Value::Array(Array::Array(vec![
                Array::U32(vec![1, 2]),
                Array::String(["x"].into_iter().collect()),
                Array::Array(vec![Array::F32(vec![1.0]), Array::Array(vec![])]),
                Array::Bool(vec![]),
            ])),
        ),
    ]
}

fn writer_with_everything() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in every_value() {
        w.set(k, v);
    }
    // Tensor bytes are distinct patterns so that a wrong offset shows.
    let pattern = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    w.add_tensor(
        "token_embd.weight",
        TensorType::Q4_K,
        &[512, 3],
        pattern(144 * 2 * 3, 1),
    )
    .unwrap();
    w.add_tensor("output_norm.weight", TensorType::F32, &[7], pattern(28, 2))
        .unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight",
        TensorType::Q8_0,
        &[64, 2, 3, 1],
        pattern(34 * 2 * 6, 3),
    )
    .unwrap();
    // Known to ggml but not computable by Hearth: readable all the same.
    w.add_tensor(
        "blk.0.ffn_up.weight",
        TensorType::IQ2_XXS,
        &[256],
        pattern(66, 4),
    )
    .unwrap();
    w.add_tensor("scalar", TensorType::F16, &[], pattern(2, 5))
        .unwrap();
    w.add_tensor("empty", TensorType::F32, &[0, 4], Vec::new())
        .unwrap();
    w
}

#[test]
fn every_value_type_round_trips() {
    let file = GgufFile::from_bytes(writer_with_everything().to_bytes()).unwrap();
    let expected = every_value();
    let got: Vec<_> = file.metadata().iter().collect();
    assert_eq!(got.len(), expected.len());
    for ((k, v), (ek, ev)) in got.iter().zip(&expected) {
        assert_eq!(k, ek, "keys keep their order");
        assert_eq!(*v, ev, "value of {k}");
        assert_eq!(v.value_type(), ev.value_type());
    }
}

#[test]
fn nan_and_negative_zero_keep_their_bits() {
    let mut w = GgufWriter::new();
    w.set("nan32", f32::from_bits(0x7fc0_1234));
    w.set("nan64", f64::from_bits(0x7ff8_0000_0000_beef));
    w.set("negzero", -0.0f32);
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let m = file.metadata();
    assert_eq!(m.get_f32("nan32").unwrap().to_bits(), 0x7fc0_1234);
    assert_eq!(
        m.get_as::<f64>("nan64").unwrap().to_bits(),
        0x7ff8_0000_0000_beef
    );
    assert_eq!(m.get_f32("negzero").unwrap().to_bits(), (-0.0f32).to_bits());
}

#[test]
fn tensors_round_trip_with_their_bytes() {
    let w = writer_with_everything();
    let bytes = w.to_bytes();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    let names: Vec<_> = file.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "token_embd.weight",
            "output_norm.weight",
            "blk.0.attn_q.weight",
            "blk.0.ffn_up.weight",
            "scalar",
            "empty"
        ]
    );
    let t = file.tensor("token_embd.weight").unwrap();
    assert_eq!(t.info.ty(), TensorType::Q4_K);
    assert_eq!(t.info.shape(), &[512, 3]);
    assert_eq!(t.info.n_elements(), 1536);
    assert_eq!(t.info.n_bytes(), 864);
    assert_eq!(t.info.offset(), 0);
    assert_eq!(t.data.len(), 864);
    assert_eq!(t.data[0], 1);
    // Each tensor starts where the writer put it: after the previous one, padded.
    let norm = file.tensor_info("output_norm.weight").unwrap();
    assert_eq!(norm.offset(), 864);
    assert_eq!(norm.file_offset(), file.data_offset() + 864);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.info.offset(), 896, "864 + 28 rounded up to 32");
    assert_eq!(q.data[0], 3);
    assert_eq!(q.info.shape(), &[64, 2, 3, 1]);
    let iq = file.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!(iq.info.ty(), TensorType::IQ2_XXS);
    assert_eq!(iq.data.len(), 66);
    let scalar = file.tensor("scalar").unwrap();
    assert_eq!(scalar.info.shape(), &[] as &[u64]);
    assert_eq!(scalar.info.n_elements(), 1);
    assert_eq!(scalar.data, &[5, 36]);
    assert_eq!(file.tensor("empty").unwrap().data.len(), 0);
    assert!(file.tensor("missing").is_none());
    // The bytes handed out are the file's own (zero-copy).
    let start = q.info.file_offset() as usize;
    assert!(std::ptr::eq(
        q.data.as_ptr(),
        file.as_bytes()[start..].as_ptr()
    ));
}

#[test]
fn version_2_and_other_alignments() {
    for alignment in [1u32, 8, 64, 4096] {
        let mut w = writer_with_everything();
        w.set_version(2).set_alignment(alignment);
        let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
        assert_eq!(file.version(), 2);
        assert_eq!(file.alignment(), u64::from(alignment));
        assert_eq!(file.data_offset() % u64::from(alignment), 0);
        for t in file.tensors() {
            assert_eq!(t.offset() % u64::from(alignment), 0, "{}", t.name());
        }
        assert_eq!(
            file.metadata().get_u32("general.alignment").unwrap(),
            alignment
        );
    }
}

#[test]
fn open_maps_a_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    writer_with_everything().write_to_path(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensors().len(), 6);
    assert_eq!(file.len(), std::fs::metadata(&path).unwrap().len());
    assert_eq!(file.tensor("output_norm.weight").unwrap().data[0], 2);
}

#[test]
fn open_reports_a_missing_file_by_path() {
    let err = GgufFile::open("/nonexistent/x.gguf").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.gguf"), "{err}");
}

#[test]
fn empty_file_without_tensors_is_valid() {
    let bytes = GgufWriter::new().to_bytes();
    assert_eq!(bytes.len(), 32, "24-byte header padded to 32");
    let file = GgufFile::from_bytes(bytes[..24].to_vec()).unwrap();
    assert!(file.metadata().is_empty());
    assert!(file.tensors().is_empty());
}

#[test]
fn typed_getters_name_the_key() {
    let file = GgufFile::from_bytes(writer_with_everything().to_bytes()).unwrap();
    let m = file.metadata();
    assert_eq!(m.get_u32("t.u32").unwrap(), u32::MAX);
    assert_eq!(m.get_str("t.empty_string").unwrap(), "");
    assert!(m.get_bool("t.bool_true").unwrap());
    assert_eq!(m.get_i32("t.i32").unwrap(), i32::MIN);
    assert_eq!(m.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(m.get_uint("t.u8").unwrap(), 255);
    assert_eq!(m.get_array("t.arr_f32").unwrap().as_f32().unwrap()[0], 0.5);
    assert_eq!(
        &m.get_array("t.arr_string").unwrap().as_strings().unwrap()[3],
        "▁the"
    );
    assert_eq!(
        m.get_array("t.arr_nested").unwrap().element_type(),
        ValueType::Array
    );
    assert_eq!(m.get_opt::<u32>("absent").unwrap(), None);

    let err = m.get_u32("t.f32").unwrap_err().to_string();
    assert_eq!(err, "metadata key 't.f32' is FLOAT32, expected UINT32");
    let err = m.get_str("t.arr_u8").unwrap_err().to_string();
    assert_eq!(
        err,
        "metadata key 't.arr_u8' is ARRAY[UINT8], expected STRING"
    );
    let err = m.get_f32("absent").unwrap_err().to_string();
    assert_eq!(err, "metadata key 'absent' is missing");
    assert!(m.get_uint("t.i8").is_err(), "negative");
}

#[test]
fn writer_refuses_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    let err = w
        .add_tensor("a", TensorType::F32, &[4], vec![0; 15])
        .unwrap_err();
    assert!(
        err.to_string().contains("tensor 'a': 15 bytes given"),
        "{err}"
    );
    let err = w
        .add_tensor("b", TensorType::Q4_0, &[33], vec![0; 18])
        .unwrap_err();
    assert!(err.to_string().contains("row length 33"), "{err}");
    let err = w
        .add_tensor("c", TensorType::F32, &[1, 1, 1, 1, 1], vec![0; 4])
        .unwrap_err();
    assert!(err.to_string().contains("5 dimensions"), "{err}");
    w.add_tensor("d", TensorType::F32, &[1], vec![0; 4])
        .unwrap();
    let err = w
        .add_tensor("d", TensorType::F32, &[1], vec![0; 4])
        .unwrap_err();
    assert!(err.to_string().contains("'d' appears twice"), "{err}");
}

#[test]
fn setting_a_key_twice_keeps_one_entry() {
    let mut w = GgufWriter::new();
    w.set("a", 1u32).set("b", 2u32).set("a", 3u32);
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let keys: Vec<_> = file.metadata().iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(file.metadata().get_u32("a").unwrap(), 3);
}

#[test]
fn string_arrays_share_one_buffer_and_index_like_slices() {
    let mut w = GgufWriter::new();
    w.set("tokens", vec!["<s>", "", "▁a", "b\u{0}c"]);
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let tokens = file
        .metadata()
        .get_array("tokens")
        .unwrap()
        .as_strings()
        .unwrap();
    assert_eq!(tokens.len(), 4);
    assert_eq!(tokens.total_bytes(), 3 + 4 + 3);
    assert_eq!(
        tokens.iter().collect::<Vec<_>>(),
        ["<s>", "", "▁a", "b\u{0}c"]
    );
    assert_eq!(tokens.iter().len(), 4);
    assert_eq!(&tokens[2], "▁a");
    assert_eq!(tokens.get(1), Some(""));
    assert_eq!(tokens.get(4), None);
    assert_eq!(format!("{tokens:?}"), r#"["<s>", "", "▁a", "b\0c"]"#);
    let rebuilt: hearth_gguf::StringArray = tokens.iter().collect();
    assert_eq!(&rebuilt, tokens);
}
