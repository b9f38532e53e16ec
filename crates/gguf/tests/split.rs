//! Merging split models: a model written whole and the same model written as parts (as
//! llama.cpp's `gguf-split` lays them out) merge to the same metadata, tensors and bytes;
//! parts that do not make one model are refused with the part named. The merge of a split
//! written by the `gguf` Python package is tested end to end by `tests/store/test_pull.py`.

use hearth_gguf::{
    merge_split, split_part, GgufError, GgufFile, GgufWriter, SplitPart, TensorType, Value,
    SPLIT_COUNT_KEY, SPLIT_NO_KEY, SPLIT_TENSORS_COUNT_KEY,
};

/// Tensors with distinct bytes and sizes that do not fill the alignment, so that a wrong
/// offset or padding shows.
fn tensors() -> Vec<(String, TensorType, Vec<u64>, Vec<u8>)> {
    (0..7u8)
        .map(|i| {
            let n = 3 + usize::from(i) * 5;
            let data = (0..n * 4)
                .map(|j| (j as u8).wrapping_mul(13).wrapping_add(i))
                .collect();
            (format!("blk.{i}.w"), TensorType::F32, vec![n as u64], data)
        })
        .collect()
}

fn metadata(w: &mut GgufWriter) {
    w.set("general.architecture", "llama")
        .set("llama.context_length", 128u32)
        .set("tokenizer.ggml.tokens", vec!["a", "b", "<s>"]);
}

/// The tensors written as `counts.len()` parts of `counts[i]` tensors each, with the
/// `split.*` keys the Python package writes (only part 1 has the model's metadata).
fn parts(dir: &std::path::Path, counts: &[usize], alignment: u32) -> Vec<GgufFile> {
    let all = tensors();
    let mut next = all.iter();
    let mut out = Vec::new();
    for (i, &n) in counts.iter().enumerate() {
        let mut w = GgufWriter::new();
        if i == 0 {
            metadata(&mut w);
            w.set_alignment(alignment);
        }
        w.set(SPLIT_NO_KEY, i as u16)
            .set(SPLIT_COUNT_KEY, counts.len() as u16)
            .set(SPLIT_TENSORS_COUNT_KEY, all.len() as i32);
        for (name, ty, shape, data) in next.by_ref().take(n) {
            w.add_tensor(name.as_str(), *ty, shape, data.clone())
                .unwrap();
        }
        let path = dir.join(format!("m-{:05}-of-{:05}.gguf", i + 1, counts.len()));
        w.write_to_path(&path).unwrap();
        out.push(GgufFile::open(&path).unwrap());
    }
    out
}

#[test]
fn merged_parts_equal_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    for alignment in [32u32, 64] {
        let mut whole = GgufWriter::new();
        metadata(&mut whole);
        whole.set_alignment(alignment);
        for (name, ty, shape, data) in tensors() {
            whole.add_tensor(name, ty, &shape, data).unwrap();
        }
        let parts = parts(dir.path(), &[3, 1, 3], alignment);
        assert_eq!(
            split_part(&parts[1]).unwrap(),
            Some(SplitPart { no: 1, count: 3 })
        );
        let out = dir.path().join("merged.gguf");
        let len = merge_split(&parts, &out).unwrap();
        let merged = std::fs::read(&out).unwrap();
        assert_eq!(len, merged.len() as u64);
        // Same metadata order, same tensor order and padding: byte for byte the file
        // written whole.
        assert_eq!(merged, whole.to_bytes(), "alignment {alignment}");
        let file = GgufFile::open(&out).unwrap();
        assert_eq!(split_part(&file).unwrap(), None);
        assert_eq!(file.tensors().len(), 7);
    }
}

#[test]
fn parts_that_do_not_make_one_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged.gguf");
    let mut p = parts(dir.path(), &[2, 2, 3], 32);

    // A part missing: split.count says 3.
    let two = [p.remove(0), p.remove(0)];
    let err = merge_split(&two, &out).unwrap_err();
    assert!(matches!(err, GgufError::Split { part: 1, .. }), "{err}");
    assert!(err.to_string().contains("split.count"), "{err}");

    // Parts out of order.
    let third = p.remove(0);
    let [a, b] = two;
    let err = merge_split(&[a, third, b], &out).unwrap_err();
    assert!(matches!(err, GgufError::Split { part: 2, .. }), "{err}");
    assert!(err.to_string().contains("split.no"), "{err}");

    // A whole file is not a part.
    let mut w = GgufWriter::new();
    metadata(&mut w);
    let whole = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = merge_split(&[whole], &out).unwrap_err();
    assert!(err.to_string().contains("no 'split.count'"), "{err}");

    assert!(matches!(
        merge_split(&[], &out),
        Err(GgufError::Split { .. })
    ));
}

#[test]
fn tensor_count_and_duplicates_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged.gguf");
    let part = |no: u16, total: i32, names: &[&str]| {
        let mut w = GgufWriter::new();
        w.set(SPLIT_NO_KEY, no)
            .set(SPLIT_COUNT_KEY, 2u16)
            .set(SPLIT_TENSORS_COUNT_KEY, total);
        for name in names {
            w.add_tensor(*name, TensorType::F32, &[2], vec![0u8; 8])
                .unwrap();
        }
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    };
    let err = merge_split(&[part(0, 3, &["a"]), part(1, 3, &["b"])], &out).unwrap_err();
    assert!(err.to_string().contains("hold 2 tensors"), "{err}");
    let err = merge_split(&[part(0, 2, &["a"]), part(1, 2, &["a"])], &out).unwrap_err();
    assert!(
        matches!(&err, GgufError::DuplicateTensor { tensor } if tensor == "a"),
        "{err}"
    );
    // A split.count of the wrong type is named.
    let mut w = GgufWriter::new();
    w.set(SPLIT_COUNT_KEY, Value::from("two"));
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(split_part(&file)
        .unwrap_err()
        .to_string()
        .contains("split.count"));
}
