//! `GgufFile::open_with`: a file copied onto huge pages reads exactly as the mapped file
//! does (bytes, metadata, tensor views, errors), and its copy starts on a 2 MiB boundary.

use std::path::Path;

use hearth_gguf::{GgufError, GgufFile, GgufWriter, Residency, TensorType};

const HUGE_PAGE: usize = 2 << 20;

/// A file a little over two huge pages long, with a tensor that straddles the boundaries,
/// its bytes a pattern so that a wrong offset shows.
fn write_model(path: &Path) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", "test");
    w.set("test.block_count", 3u32);
    let n = 5 * HUGE_PAGE / 2 / 34 * 34;
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
    w.add_tensor(
        "output.weight",
        TensorType::Q8_0,
        &[32, (n / 34) as u64],
        data,
    )
    .unwrap();
    w.add_tensor("output_norm.weight", TensorType::F32, &[3], vec![1; 12])
        .unwrap();
    let bytes = w.to_bytes();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[test]
fn huge_page_copy_reads_as_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let bytes = write_model(&path);
    let mapped = GgufFile::open_with(&path, Residency::Mapped).unwrap();
    let copied = GgufFile::open_with(&path, Residency::HugePages).unwrap();
    assert_eq!(mapped.residency(), Residency::Mapped);
    assert_eq!(copied.as_bytes(), &bytes[..]);
    assert_eq!(mapped.as_bytes(), copied.as_bytes());
    assert_eq!(copied.len(), bytes.len() as u64);
    assert_eq!(
        copied.as_bytes().as_ptr() as usize % HUGE_PAGE,
        0,
        "the copy starts on a huge-page boundary"
    );
    assert_eq!(mapped.version(), copied.version());
    assert_eq!(mapped.data_offset(), copied.data_offset());
    let keys = |f: &GgufFile| {
        f.metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&mapped), keys(&copied));
    for info in mapped.tensors() {
        let (a, b) = (
            mapped.tensor(info.name()).unwrap(),
            copied.tensor(info.name()).unwrap(),
        );
        assert_eq!(a.info, b.info);
        assert_eq!(a.data, b.data, "{}", info.name());
    }
}

#[test]
fn huge_pages_are_advised_where_linux_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path);
    let copied = GgufFile::open_with(&path, Residency::HugePages).unwrap();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    match thp {
        // "[never]" refuses the advice; "always" and "madvise" take it.
        Ok(mode) if cfg!(target_os = "linux") && !mode.contains("[never]") => {
            assert_eq!(copied.residency(), Residency::HugePages, "THP mode {mode}")
        }
        _ => eprintln!("skipped: no transparent huge pages here"),
    }
}

#[test]
fn errors_are_the_same_for_every_residency() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_model(&dir.path().join("m.gguf"));
    let cases: [(&str, &[u8]); 3] = [
        ("empty.gguf", &[]),
        ("header.gguf", &full[..20]),
        ("data.gguf", &full[..full.len() / 2]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mapped = GgufFile::open_with(&path, Residency::Mapped).unwrap_err();
        let copied = GgufFile::open_with(&path, Residency::HugePages).unwrap_err();
        assert!(
            matches!(
                mapped,
                GgufError::Truncated { .. } | GgufError::OutOfBounds { .. }
            ),
            "{name}: {mapped}"
        );
        assert_eq!(mapped.to_string(), copied.to_string(), "{name}");
    }
    for residency in [Residency::Mapped, Residency::HugePages] {
        let err = GgufFile::open_with(dir.path().join("missing.gguf"), residency).unwrap_err();
        assert!(matches!(err, GgufError::Io { .. }), "{residency:?}: {err}");
    }
}

/// Resident bytes of the mapping that holds `addr`, from `/proc/self/smaps`.
#[cfg(target_os = "linux")]
fn mapping_rss(addr: usize) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = (a..b).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .map(|k| k * 1024);
            }
        }
    }
    None
}

/// `GgufFile::release` lets a mapped file's tensor pages go and leaves their bytes as
/// they were (they read back from the file); a copy in anonymous memory, whose dropped
/// pages would read as zeros, and bytes of another file are not released.
#[test]
fn released_tensors_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_model(&path);
    let mapped = GgufFile::open_with(&path, Residency::Mapped).unwrap();
    let copied = GgufFile::open_with(&path, Residency::HugePages).unwrap();
    let t = mapped.tensor("output.weight").unwrap().data;
    let before: Vec<u8> = t.to_vec();
    #[cfg(target_os = "linux")]
    let rss_before = mapping_rss(t.as_ptr() as usize).unwrap();
    assert_eq!(mapped.release(t), t.len());
    #[cfg(target_os = "linux")]
    {
        let rss_after = mapping_rss(t.as_ptr() as usize).unwrap();
        assert!(
            rss_after + t.len() / 2 <= rss_before,
            "resident {rss_before} -> {rss_after} bytes after releasing {}",
            t.len()
        );
    }
    assert!(t == &before[..], "released bytes read back as the file's");
    let c = copied.tensor("output.weight").unwrap().data;
    assert_eq!(copied.release(c), 0, "a copy in anonymous memory is kept");
    assert_eq!(c, &before[..]);
    assert_eq!(mapped.release(c), 0, "bytes of another file");
    assert_eq!(mapped.release(&before), 0, "bytes on the heap");
}
