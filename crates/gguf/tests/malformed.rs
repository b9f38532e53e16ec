//! A corpus of malformed files, each made by the writer plus byte surgery, each refused
//! with an error that names the field, key or tensor at fault, and never a panic.

use hearth_gguf::{Array, GgufError, GgufFile, GgufWriter, TensorType, Value, MAX_ARRAY_DEPTH};

/// A small valid file: a few keys of different types, a Q4_K and an F32 tensor.
fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama")
        .set("test.count", 7u32)
        .set("test.flag", true)
        .set("test.tokens", vec!["a", "bc", "def"])
        .set("test.flags", vec![true, false])
        .set("test.scores", vec![0.5f32, 1.5]);
    w.add_tensor(
        "tok_embd.weight",
        TensorType::Q4_K,
        &[256, 2],
        vec![0xAB; 288],
    )
    .unwrap();
    w.add_tensor("output_norm.weight", TensorType::F32, &[8], vec![0xCD; 32])
        .unwrap();
    w
}

fn small() -> Vec<u8> {
    small_writer().to_bytes()
}

/// The position of the first occurrence of `needle`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

/// The position just after the string `s` (key or tensor name) in the file.
fn after(bytes: &[u8], s: &str) -> usize {
    find(bytes, s.as_bytes()) + s.len()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Positions of a tensor info's fields: (n_dims, ne[0], type, offset), for a tensor with
/// `n_dims` dimensions.
fn tensor_fields(bytes: &[u8], name: &str, n_dims: usize) -> (usize, usize, usize, usize) {
    let n_dims_at = after(bytes, name);
    let ne_at = n_dims_at + 4;
    let type_at = ne_at + 8 * n_dims;
    (n_dims_at, ne_at, type_at, type_at + 4)
}

/// Parses `bytes`, expecting an error whose message contains every one of `parts`.
#[track_caller]
fn refused(bytes: Vec<u8>, parts: &[&str]) -> GgufError {
    let err = GgufFile::from_bytes(bytes).expect_err("file should be refused");
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} does not mention {p:?}");
    }
    err
}

#[test]
fn the_base_file_is_valid() {
    let file = GgufFile::from_bytes(small()).unwrap();
    assert_eq!(file.tensors().len(), 2);
    assert_eq!(file.metadata().len(), 6);
}

#[test]
fn truncated_at_every_byte_is_refused_until_the_tensor_data_is_complete() {
    let bytes = small();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let end_of_data = file
        .tensors()
        .iter()
        .map(|t| t.file_offset() + t.n_bytes())
        .max()
        .unwrap() as usize;
    let data_offset = file.data_offset() as usize;
    for len in 0..=bytes.len() {
        let result = GgufFile::from_bytes(bytes[..len].to_vec());
        if len >= end_of_data {
            // Only the padding after the last tensor is gone: still a whole file.
            assert!(result.is_ok(), "prefix of {len} bytes: {:?}", result.err());
            continue;
        }
        let err = result.expect_err("a truncated file must be refused");
        let ok = match &err {
            GgufError::Truncated { .. }
            | GgufError::StringTooLong { .. }
            | GgufError::CountTooLarge { .. }
            | GgufError::NoDataSection { .. } => len < data_offset,
            GgufError::OutOfBounds { .. } => len >= data_offset,
            _ => false,
        };
        assert!(ok, "prefix of {len} bytes: unexpected {err:?}");
    }
}

#[test]
fn truncated_in_each_section_names_the_field() {
    let bytes = small();
    let cut = |n: usize| bytes[..n].to_vec();
    refused(cut(0), &["header magic"]);
    refused(cut(3), &["header magic"]);
    refused(cut(6), &["header version"]);
    refused(cut(12), &["header tensor_count"]);
    refused(cut(20), &["header kv_count"]);
    // Counts are checked against the bytes left before anything is read for them: six
    // keys cannot fit in 4 bytes.
    refused(
        cut(28),
        &["header kv_count", "count 6 cannot fit in the 4 bytes left"],
    );
    // Inside the last key's length, then its bytes.
    let key5 = find(&bytes, b"test.scores");
    refused(cut(key5 - 4), &["truncated", "metadata key #5"]);
    refused(cut(key5 + 3), &["metadata key #5", "string length 11"]);
    // Inside a scalar value and an array's strings.
    let mut one = GgufWriter::new();
    one.set("test.big", 5u64);
    let one = one.to_bytes();
    let value_at = after(&one, "test.big") + 4;
    refused(
        one[..value_at + 5].to_vec(),
        &["metadata key 'test.big' value"],
    );
    refused(
        cut(after(&bytes, "test.tokens") + 4 + 4 + 8 + 8 + 1),
        &["metadata key 'test.tokens'"],
    );
    // Inside the first tensor info, two infos cannot fit; then inside the last one.
    let (n_dims_at, ..) = tensor_fields(&bytes, "tok_embd.weight", 2);
    refused(
        cut(n_dims_at + 2),
        &["header tensor_count", "count 2 cannot fit"],
    );
    let (n_dims_at, ne_at, type_at, offset_at) = tensor_fields(&bytes, "output_norm.weight", 1);
    refused(cut(n_dims_at - 3), &["tensor #1 name", "string length 18"]);
    refused(cut(n_dims_at + 2), &["tensor 'output_norm.weight' n_dims"]);
    refused(cut(ne_at + 4), &["tensor 'output_norm.weight' ne[0]"]);
    refused(cut(type_at + 1), &["tensor 'output_norm.weight' type"]);
    refused(cut(offset_at + 7), &["tensor 'output_norm.weight' offset"]);
    // Inside the data section.
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let data = file.data_offset() as usize;
    refused(
        cut(data + 100),
        &["tensor 'tok_embd.weight'", "data section"],
    );
    refused(cut(data - 1), &["data section starts at"]);
}

#[test]
fn bad_magic_and_versions() {
    let mut b = small();
    b[0] = b'g';
    assert!(matches!(
        refused(b, &["not a GGUF file"]),
        GgufError::BadMagic { .. }
    ));
    for (version, expect) in [
        (1u32, "version 1 is not supported"),
        (0, "version 0 is not supported"),
        (4, "version 4 is not supported"),
        (u32::MAX, "version 4294967295"),
        (0x0300_0000, "big-endian"),
        (0x0200_0000, "big-endian"),
    ] {
        let mut b = small();
        put_u32(&mut b, 4, version);
        refused(b, &[expect]);
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    for (at, field) in [(8, "header tensor_count"), (16, "header kv_count")] {
        for count in [u64::MAX, u64::MAX / 13 + 1, 1 << 40, 1000] {
            let mut b = small();
            put_u64(&mut b, at, count);
            refused(b, &[field, "cannot fit"]);
        }
    }
    // An array whose count cannot fit.
    let mut b = small();
    let count_at = after(&b, "test.scores") + 4 + 4;
    put_u64(&mut b, count_at, u64::MAX / 2);
    refused(b, &["metadata key 'test.scores' array", "cannot fit"]);
    // A count that fits the 1-byte minimum but not 4-byte floats.
    let mut b = small();
    let left = (b.len() - count_at - 8) as u64;
    put_u64(&mut b, count_at, left / 2);
    refused(b, &["metadata key 'test.scores' array"]);
}

#[test]
fn huge_string_lengths_are_refused() {
    // A key, a string value, a string in an array, a tensor name.
    let b = small();
    let cases = [
        (find(&b, b"general.architecture") - 8, "metadata key #0"),
        (
            after(&b, "general.architecture") + 4,
            "metadata key 'general.architecture' value",
        ),
        (
            after(&b, "test.tokens") + 4 + 4 + 8,
            "metadata key 'test.tokens' item 0",
        ),
        (find(&b, b"output_norm.weight") - 8, "tensor #1 name"),
    ];
    for (at, field) in cases {
        for len in [u64::MAX, 1 << 62, b.len() as u64] {
            let mut b = b.clone();
            put_u64(&mut b, at, len);
            refused(b, &[field, "exceeds"]);
        }
    }
}

#[test]
fn invalid_utf8_is_refused() {
    let b = small();
    for (needle, field) in [
        ("test.count", "metadata key #1"),
        ("llama", "metadata key 'general.architecture' value"),
        ("def", "metadata key 'test.tokens' item 2"),
        ("output_norm.weight", "tensor #1 name"),
    ] {
        let mut b = b.clone();
        let at = find(&b, needle.as_bytes());
        b[at] = 0xFF;
        refused(b, &[field, "UTF-8"]);
    }
}

#[test]
fn unknown_value_types_and_bad_bools() {
    let b = small();
    let mut t = b.clone();
    put_u32(&mut t, after(&b, "test.count"), 13);
    refused(
        t,
        &["metadata key 'test.count'", "unknown value type id 13"],
    );
    let mut t = b.clone();
    put_u32(&mut t, after(&b, "test.scores") + 4, u32::MAX);
    refused(
        t,
        &[
            "metadata key 'test.scores'",
            "unknown value type id 4294967295",
        ],
    );
    let mut t = b.clone();
    t[after(&b, "test.flag") + 4] = 2;
    refused(t, &["metadata key 'test.flag'", "bool byte is 2"]);
    let mut t = b.clone();
    t[after(&b, "test.flags") + 4 + 4 + 8 + 1] = 0x80;
    refused(t, &["metadata key 'test.flags'", "bool byte is 128"]);
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut w = GgufWriter::new();
    w.set("aaaa", 1u32).set("bbbb", 2u32);
    let mut b = w.to_bytes();
    let at = find(&b, b"bbbb");
    b[at..at + 4].copy_from_slice(b"aaaa");
    refused(b, &["metadata key 'aaaa' appears twice"]);

    let mut w = GgufWriter::new();
    w.add_tensor("t.aaaa", TensorType::F32, &[1], vec![0; 4])
        .unwrap();
    w.add_tensor("t.bbbb", TensorType::F32, &[1], vec![0; 4])
        .unwrap();
    let mut b = w.to_bytes();
    let at = find(&b, b"t.bbbb");
    b[at..at + 6].copy_from_slice(b"t.aaaa");
    refused(b, &["tensor 't.aaaa' appears twice"]);
}

/// The small file with `general.alignment` = 32, then patched to `alignment` (the writer
/// would pad to whatever it is given, gigabytes included).
fn with_alignment(alignment: u32) -> Vec<u8> {
    let mut w = small_writer();
    w.set_alignment(32);
    let mut b = w.to_bytes();
    let value_at = after(&b, "general.alignment") + 4;
    put_u32(&mut b, value_at, alignment);
    b
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 48, u32::MAX] {
        refused(with_alignment(a), &["general.alignment", "power of two"]);
    }
    let mut w = small_writer();
    w.set("general.alignment", 32u64);
    refused(
        w.to_bytes(),
        &["general.alignment", "UINT64, expected UINT32"],
    );
    let mut w = small_writer();
    w.set("general.alignment", "32");
    refused(w.to_bytes(), &["general.alignment", "STRING"]);
}

#[test]
fn huge_alignment_puts_the_data_section_past_the_end() {
    refused(
        with_alignment(1 << 31),
        &["data section starts at offset 2147483648"],
    );
}

#[test]
fn too_many_dims() {
    for n in [5u32, 64, u32::MAX] {
        let mut b = small();
        let (n_dims_at, ..) = tensor_fields(&b, "tok_embd.weight", 2);
        put_u32(&mut b, n_dims_at, n);
        refused(b, &["tensor 'tok_embd.weight'", &format!("{n} dimensions")]);
    }
}

#[test]
fn overflowing_shapes() {
    let (_, ne_at, ..) = tensor_fields(&small(), "tok_embd.weight", 2);
    // Element count overflows u64; element count overflows i64; bytes overflow.
    for (ne0, ne1) in [
        (256, u64::MAX),
        (1 << 40, 1 << 40),
        (256, 1 << 55),
        (!255u64, 1),
    ] {
        let mut b = small();
        put_u64(&mut b, ne_at, ne0);
        put_u64(&mut b, ne_at + 8, ne1);
        let err = refused(b, &["tensor 'tok_embd.weight'", "too large"]);
        assert!(matches!(err, GgufError::ShapeOverflow { .. }), "{err:?}");
    }
    // A plausible shape whose bytes just do not fit the data section.
    let mut b = small();
    put_u64(&mut b, ne_at + 8, 3);
    refused(b, &["tensor 'tok_embd.weight'", "reach past the end"]);
}

#[test]
fn unknown_tensor_types() {
    for id in [4u32, 5, 31, 40, 1000, u32::MAX] {
        let mut b = small();
        let (_, _, type_at, _) = tensor_fields(&b, "tok_embd.weight", 2);
        put_u32(&mut b, type_at, id);
        refused(
            b,
            &[
                "tensor 'tok_embd.weight'",
                &format!("unknown tensor type id {id}"),
            ],
        );
    }
}

#[test]
fn row_length_not_a_multiple_of_the_block() {
    for ne0 in [1u64, 100, 255, 257, 32] {
        let mut b = small();
        let (_, ne_at, ..) = tensor_fields(&b, "tok_embd.weight", 2);
        put_u64(&mut b, ne_at, ne0);
        refused(
            b,
            &[
                "tensor 'tok_embd.weight'",
                &format!("row length {ne0}"),
                "Q4_K",
                "256",
            ],
        );
    }
    // A Q4_K tensor changed to Q8_0 keeps a valid row (256 = 8 blocks) but not its size.
    let mut b = small();
    let (_, _, type_at, _) = tensor_fields(&b, "tok_embd.weight", 2);
    put_u32(&mut b, type_at, TensorType::Q8_0.id());
    refused(b, &["tensor 'tok_embd.weight'"]);
}

#[test]
fn out_of_range_and_misaligned_offsets() {
    let base = small();
    let data_len = {
        let f = GgufFile::from_bytes(base.clone()).unwrap();
        f.len() - f.data_offset()
    };
    let (.., offset_at) = tensor_fields(&base, "output_norm.weight", 1);
    for (offset, expect) in [
        (1u64, "not a multiple of the alignment 32"),
        (288 + 16, "not a multiple of the alignment 32"),
        (data_len, "reach past the end"),
        (!31u64, "reach past the end"),
        (1 << 62, "reach past the end"),
    ] {
        let mut b = base.clone();
        put_u64(&mut b, offset_at, offset);
        refused(b, &["tensor 'output_norm.weight'", expect]);
    }
}

#[test]
fn overlapping_tensors() {
    let base = small();
    let (.., offset_at) = tensor_fields(&base, "output_norm.weight", 1);
    for offset in [0u64, 32, 256] {
        let mut b = base.clone();
        put_u64(&mut b, offset_at, offset);
        refused(
            b,
            &[
                "tensor",
                "overlaps",
                "tok_embd.weight",
                "output_norm.weight",
            ],
        );
    }
    // Three tensors where the first spans both others: the overlap is still found.
    let mut w = GgufWriter::new();
    w.add_tensor("big", TensorType::F32, &[64], vec![0; 256])
        .unwrap();
    w.add_tensor("a", TensorType::F32, &[8], vec![0; 32])
        .unwrap();
    w.add_tensor("b", TensorType::F32, &[8], vec![0; 32])
        .unwrap();
    let mut b = w.to_bytes();
    let (.., b_offset) = tensor_fields(&b, "\u{1}\0\0\0\0\0\0\0b", 1);
    put_u64(&mut b, b_offset, 128);
    refused(b, &["tensor 'b' overlaps tensor 'big'"]);
}

/// An array nested `depth` deep (1 = an array of scalars).
fn nested(depth: usize) -> Array {
    let mut a = Array::U8(vec![1]);
    for _ in 1..depth {
        a = Array::Array(vec![a]);
    }
    a
}

#[test]
fn nesting_depth_is_bounded() {
    let mut w = GgufWriter::new();
    w.set("deep", Value::Array(nested(MAX_ARRAY_DEPTH)));
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(
        file.metadata().get_array("deep").unwrap(),
        &nested(MAX_ARRAY_DEPTH)
    );

    let mut w = GgufWriter::new();
    w.set("deep", Value::Array(nested(MAX_ARRAY_DEPTH + 1)));
    refused(
        w.to_bytes(),
        &["metadata key 'deep'", "nested deeper than 8"],
    );

    // A file of nothing but array headers nesting 100 000 levels: refused, no stack
    // overflow.
    let mut b = GgufWriter::new().to_bytes()[..24].to_vec();
    put_u64(&mut b, 16, 1);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..100_000 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    refused(b, &["metadata key 'k'", "nested deeper"]);
}

#[test]
fn no_data_section_for_declared_tensors() {
    let b = small();
    let end_of_infos = after(&b, "output_norm.weight") + 4 + 8 + 4 + 8;
    refused(b[..end_of_infos].to_vec(), &["data section starts at"]);
}

/// Every byte of the file set to a few interesting values: whatever happens, it must be
/// an `Ok` or an `Err`, never a panic. A cheap, deterministic cousin of the fuzz target.
#[test]
fn every_byte_mutated_never_panics() {
    let base = small();
    let mut refused = 0;
    for i in 0..base.len() {
        for v in [0x00, 0x01, 0x7F, 0x80, 0xFF, base[i].wrapping_add(1)] {
            let mut b = base.clone();
            b[i] = v;
            if let Err(e) = GgufFile::from_bytes(b) {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    assert!(
        refused > base.len(),
        "most header mutations are refused: {refused}"
    );
}

#[test]
fn long_names_are_shortened_in_messages() {
    let long = "x".repeat(5000);
    let mut w = GgufWriter::new();
    w.add_tensor(long.as_str(), TensorType::F32, &[1], vec![0; 4])
        .unwrap();
    let mut b = w.to_bytes();
    let (.., offset_at) = tensor_fields(&b, &long, 1);
    put_u64(&mut b, offset_at, 4);
    let err = refused(b, &["…(5000 bytes)", "not a multiple of the alignment"]);
    assert!(err.to_string().len() < 200, "{err}");
}
