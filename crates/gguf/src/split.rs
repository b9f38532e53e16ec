//! Split GGUF models (llama.cpp's `gguf-split` format), merged into one file.
//!
//! llama.cpp's `gguf-split --split` (`tools/gguf-split/gguf-split.cpp`) and the `gguf`
//! Python package's `GGUFWriter` (with `split_max_tensors` or `split_max_size`) write a
//! large model as parts named `NAME-00001-of-0000N.gguf`. Each part is a GGUF file of its
//! own: the first holds the model's metadata, every part holds `split.no` (its 0-based
//! index, UINT16), `split.count` (UINT16) and `split.tensors.count` (the tensors of all
//! parts, INT32), and the tensors are spread over the parts in order, each part's data
//! section laid out as in any GGUF file.
//!
//! [`merge_split`] does what `gguf-split --merge` does: part 1's metadata less the
//! `split.*` keys, every part's tensor infos in order with offsets recomputed for a single
//! data section (part 1's alignment), then the data copied. Loading the parts in place
//! instead would mean one model over several mappings, which every consumer of
//! [`GgufFile`] (one file, one byte slice) would have to learn; a merged file is an
//! ordinary one.

use std::path::Path;

use crate::error::GgufError;
use crate::file::GgufFile;
use crate::metadata::Metadata;
use crate::write::{write_head, Counting, HeadTensor};

/// `split.no`: a part's 0-based index.
pub const SPLIT_NO_KEY: &str = "split.no";
/// `split.count`: how many parts the model has.
pub const SPLIT_COUNT_KEY: &str = "split.count";
/// `split.tensors.count`: the tensors of all parts together.
pub const SPLIT_TENSORS_COUNT_KEY: &str = "split.tensors.count";

/// Where a file stands in a split model, from its `split.*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPart {
    /// 0-based index of this part.
    pub no: u64,
    /// Number of parts.
    pub count: u64,
}

/// The file's place in a split model, or `None` when it has no `split.count` (a whole
/// model; a file with `split.count` 1 is a split of one part, which is whole too).
pub fn split_part(file: &GgufFile) -> Result<Option<SplitPart>, GgufError> {
    let meta = file.metadata();
    if !meta.contains(SPLIT_COUNT_KEY) {
        return Ok(None);
    }
    let count = meta.get_uint(SPLIT_COUNT_KEY)?;
    let no = meta.get_uint(SPLIT_NO_KEY)?;
    Ok(Some(SplitPart { no, count }))
}

/// Writes the model split over `parts` (in order, part 1 first) to `out` as one GGUF
/// file, and returns its size. Refuses parts that do not make one model: a part out of
/// place or missing, a tensor count that differs from `split.tensors.count`, a tensor
/// name twice. `out` is created or truncated; on an error it may hold part of a file,
/// which the caller removes.
pub fn merge_split(parts: &[GgufFile], out: &Path) -> Result<u64, GgufError> {
    let split_err = |part: usize, reason: String| GgufError::Split { part, reason };
    let Some(first) = parts.first() else {
        return Err(split_err(1, "no parts given".into()));
    };
    let n_tensors: usize = parts.iter().map(|p| p.tensors().len()).sum();
    for (i, part) in parts.iter().enumerate() {
        let Some(place) = split_part(part)? else {
            return Err(split_err(i + 1, format!("no '{SPLIT_COUNT_KEY}' key")));
        };
        if place.count != parts.len() as u64 {
            return Err(split_err(
                i + 1,
                format!(
                    "'{SPLIT_COUNT_KEY}' is {}, but {} parts were given",
                    place.count,
                    parts.len()
                ),
            ));
        }
        if place.no != i as u64 {
            return Err(split_err(
                i + 1,
                format!("'{SPLIT_NO_KEY}' is {}, expected {i}", place.no),
            ));
        }
        // Optional, as llama.cpp's loader treats it; when present it must add up.
        if let Some(total) = part.metadata().get(SPLIT_TENSORS_COUNT_KEY) {
            if total.to_u64_lossless() != Some(n_tensors as u64) {
                return Err(split_err(
                    i + 1,
                    format!(
                        "'{SPLIT_TENSORS_COUNT_KEY}' is {}, but the parts hold {n_tensors} \
                         tensors",
                        total
                            .to_u64_lossless()
                            .map_or_else(|| total.type_description(), |n| n.to_string())
                    ),
                ));
            }
        }
    }

    let mut metadata = Metadata::new();
    for (key, value) in first.metadata().iter() {
        if !key.starts_with("split.") {
            metadata.set(key, value.clone());
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(n_tensors);
    let mut infos = Vec::with_capacity(n_tensors);
    for part in parts {
        for t in part.tensors() {
            if !seen.insert(t.name()) {
                return Err(GgufError::DuplicateTensor {
                    tensor: crate::error::shown_name(t.name()),
                });
            }
            infos.push(HeadTensor {
                name: t.name(),
                ty: t.ty(),
                shape: t.shape(),
                n_bytes: t.n_bytes(),
            });
        }
    }

    let io_err = |source| GgufError::Io {
        path: out.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(out).map_err(io_err)?;
    let mut w = Counting {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        written: 0,
    };
    let alignment = first.alignment();
    write_head(&mut w, first.version(), &metadata, &infos, alignment).map_err(io_err)?;
    for part in parts {
        for t in part.tensors() {
            w.write_all(part.tensor_data(t)).map_err(io_err)?;
            w.pad(alignment).map_err(io_err)?;
        }
    }
    let file = w.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(w.written)
}
