//! An opened, validated GGUF file and zero-copy views of its tensors.

use std::collections::HashMap;
use std::path::Path;

use crate::error::GgufError;
use crate::metadata::Metadata;
use crate::read::parse;
use crate::tensor::TensorInfo;

/// Where an opened file's bytes are held, chosen by the caller of [`GgufFile::open_with`].
///
/// Decoding one token reads every weight once, so its speed is the speed at which the
/// weights stream from memory. Streaming through 4 KiB pages is limited by TLB misses:
/// on a Zen 5 core that read ~15.6 GiB/s from 4 KiB pages, it read ~29 GiB/s from 2 MiB
/// ones. A mapped file's page cache is on 4 KiB pages; a private copy advised
/// `MADV_HUGEPAGE` gets 2 MiB ones, at the cost of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residency {
    /// The file is mapped (no copy): opening is instant, the bytes are shared with the
    /// page cache and with other processes mapping the same file, and pages the OS
    /// evicts are read back on demand. Small pages.
    #[default]
    Mapped,
    /// The file is read into private anonymous memory that starts on a 2 MiB boundary
    /// and is advised `MADV_HUGEPAGE`, then made read-only. Costs the file's size in
    /// resident, unshared memory (plus whatever of it the page cache keeps, which the OS
    /// may reclaim) and one read of the file at open (~0.1 s per GiB from a warm cache).
    /// Off Linux, or where the advice is refused, the copy sits on ordinary pages.
    HugePages,
}

/// The file's bytes: mapped from disk, copied into anonymous memory, or owned (built in
/// memory, or a fuzzer's input).
enum Storage {
    Mapped(memmap2::Mmap),
    Anon(crate::mmap::AnonCopy),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Anon(a) => a.bytes(),
            Storage::Owned(v) => v,
        }
    }
}

/// A GGUF file (version 2 or 3) whose header, metadata and tensor infos have been read
/// and validated; tensor bytes are borrowed from the file's storage (the mapping, or the
/// one copy made at open with [`Residency::HugePages`]), never copied again.
///
/// Metadata is decoded once, at open, into owned values. Tensor bytes are not checked
/// (any bit pattern is a valid tensor), only their placement.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// A tensor's info and its bytes in the file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.len())
            .field("metadata keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path` (as [`GgufFile::open_with`] with
    /// [`Residency::Mapped`]).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        Self::open_with(path, Residency::Mapped)
    }

    /// Opens and validates the file at `path`, its bytes held as `residency` says.
    /// Everything else (validation, errors, views) is the same for every residency.
    pub fn open_with(path: impl AsRef<Path>, residency: Residency) -> Result<GgufFile, GgufError> {
        Self::open_with_progress(path, residency, None)
    }

    /// As [`GgufFile::open_with`], telling `progress` (bytes read, file length) as a copy
    /// onto huge pages goes on, which for a model of several GiB takes seconds; a mapped
    /// open reads nothing up front and reports nothing.
    pub fn open_with_progress(
        path: impl AsRef<Path>,
        residency: Residency,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        // An empty file cannot be mapped on every platform; it is refused as truncated
        // all the same.
        let storage = if len == 0 {
            Storage::Owned(Vec::new())
        } else {
            match residency {
                Residency::Mapped => Storage::Mapped(crate::mmap::map(&file).map_err(io_err)?),
                Residency::HugePages => {
                    let len = usize::try_from(len).map_err(|_| {
                        io_err(std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            "file larger than the address space",
                        ))
                    })?;
                    let report = progress.map(|p| move |done| p(done, len as u64));
                    let report = report.as_ref().map(|r| r as &dyn Fn(u64));
                    Storage::Anon(crate::mmap::read_anon(&mut file, len, report).map_err(io_err)?)
                }
            }
        };
        Self::from_storage(storage)
    }

    /// Validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let p = parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version: p.version,
            metadata: p.metadata,
            tensors: p.tensors,
            by_name: p.by_name,
            alignment: p.alignment,
            data_offset: p.data_offset,
        })
    }

    /// Where the bytes are actually held: [`Residency::HugePages`] only when they were
    /// copied and the kernel accepted the huge-page advice; a file built in memory
    /// reports [`Residency::Mapped`] (its bytes are on ordinary pages, like a mapping's).
    pub fn residency(&self) -> Residency {
        match &self.storage {
            Storage::Anon(a) if a.huge() => Residency::HugePages,
            _ => Residency::Mapped,
        }
    }

    /// The GGUF version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of the tensor named `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, with its bytes.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = self.tensor_info(name)?;
        Some(TensorView {
            info,
            data: self.tensor_data(info),
        })
    }

    /// The bytes of a tensor of this file: `info.n_bytes()` bytes, not copied.
    ///
    /// # Panics
    /// If `info` comes from another file and lies outside this one (a programming error;
    /// infos of this file were validated at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = usize::try_from(info.file_offset)
            .ok()
            .zip(usize::try_from(info.n_bytes).ok())
            .and_then(|(start, n)| Some(start..start.checked_add(n)?));
        range
            .and_then(|r| self.storage.bytes().get(r))
            .expect("TensorInfo belongs to another GgufFile")
    }

    /// The alignment of the data section and of every tensor offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts, from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// Whether the file is empty (never true: an empty file is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Lets the OS take `bytes` (a part of this file, such as a tensor's data) out of this
    /// process's memory, where the file is mapped: the pages read back from the file on
    /// demand, unchanged, so whatever still holds the slice sees the same bytes, at the
    /// price of a page fault. Meant for tensors that are no longer read, such as weights
    /// a packed copy replaces. Returns the bytes released: none for a copy in anonymous
    /// memory (whose dropped pages would read back as zeros), for bytes of another file,
    /// or off Unix.
    pub fn release(&self, bytes: &[u8]) -> usize {
        let whole = self.storage.bytes();
        let Some(offset) = (bytes.as_ptr() as usize).checked_sub(whole.as_ptr() as usize) else {
            return 0;
        };
        if bytes.is_empty() || offset.saturating_add(bytes.len()) > whole.len() {
            return 0;
        }
        match &self.storage {
            Storage::Mapped(m) if crate::mmap::release(m, offset, bytes.len()) => bytes.len(),
            _ => 0,
        }
    }
}
