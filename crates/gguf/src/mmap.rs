//! Where a model file's bytes live: mapped from the file (the crate's one `unsafe` call),
//! or copied into anonymous memory on huge pages.

use std::fs::File;
use std::io::Read;

use memmap2::{Mmap, MmapMut};

/// Maps `file` read-only.
///
/// Mapping instead of reading keeps opening a multi-gigabyte model instant and lets
/// tensors be used in place (zero-copy), paged in by the OS as they are touched.
#[allow(unsafe_code)]
pub(crate) fn map(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapping's bytes belong to the file, and
    // Rust assumes the `&[u8]` we hand out never changes. If another process writes the
    // file while it is mapped, tensor bytes (and metadata, which is parsed once, at open)
    // can change under us; if it truncates the file, touching the lost pages raises
    // SIGBUS. Neither can make us index out of bounds: every range was validated against
    // the mapping's length, which is fixed. Like llama.cpp and every other mmap-based
    // loader, we accept this: model files are not modified while a model is loaded, and
    // the alternative (copying gigabytes into the heap) defeats the purpose.
    unsafe { Mmap::map(file) }
}

/// Drops bytes `offset..offset + len` of `map` from this process's memory (the pages
/// around them included); says whether the OS took the advice. Off Unix, nothing is done.
#[allow(unsafe_code)]
pub(crate) fn release(map: &Mmap, offset: usize, len: usize) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: `map` is a read-only mapping of a file that this process never writes;
        // `MADV_DONTNEED` drops its pages from the page tables, and the next access reads
        // the file's bytes again, so no reference into the map ever sees other contents.
        // (Only for writable or anonymous memory does the advice change what a read
        // returns.) memmap2 checks the range against the map.
        unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
                .is_ok()
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (map, offset, len);
        false
    }
}

/// The size of an x86-64 / aarch64 (4 KiB granule) transparent huge page.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// How much of a file is copied between progress reports (a few hundred reports for a
/// model of several GiB).
const PROGRESS_CHUNK: usize = 32 << 20;

/// A file's bytes copied into private anonymous memory, read-only once filled.
///
/// The mapping is `HUGE_PAGE` longer than needed so that the bytes can start on a
/// huge-page boundary wherever the kernel placed it; the slack is never touched, so it
/// costs address space only.
pub(crate) struct AnonCopy {
    map: Mmap,
    start: usize,
    len: usize,
    huge: bool,
}

impl AnonCopy {
    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// Whether the kernel accepted the huge-page advice (it may still fall back to small
    /// pages when it has no free 2 MiB frames).
    pub(crate) fn huge(&self) -> bool {
        self.huge
    }
}

/// Reads the first `len` bytes of `file` into anonymous memory advised
/// `MADV_HUGEPAGE`, starting on a 2 MiB boundary.
///
/// The advice is given before the copy, so that the first touch of each 2 MiB range
/// faults in a huge page directly (with THP in `madvise` mode, the common default, memory
/// that is not advised never gets one). Where the advice does not exist (not Linux) or is
/// refused (THP disabled), the copy sits on ordinary pages: correct, only slower.
///
/// `progress` is told the bytes copied so far after every chunk of [`PROGRESS_CHUNK`].
pub(crate) fn read_anon(
    file: &mut File,
    len: usize,
    progress: Option<&dyn Fn(u64)>,
) -> std::io::Result<AnonCopy> {
    let too_big = || std::io::Error::new(std::io::ErrorKind::OutOfMemory, "file too large");
    let map_len = len
        .checked_next_multiple_of(HUGE_PAGE)
        .and_then(|l| l.checked_add(HUGE_PAGE))
        .ok_or_else(too_big)?;
    let mut map = MmapMut::map_anon(map_len)?;
    #[cfg(target_os = "linux")]
    let huge = map.advise(memmap2::Advice::HugePage).is_ok();
    #[cfg(not(target_os = "linux"))]
    let huge = false;
    let start = (map.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - map.as_ptr() as usize;
    let dest = &mut map[start..start + len];
    match progress {
        None => file.read_exact(dest)?,
        Some(progress) => {
            let mut done = 0;
            for chunk in dest.chunks_mut(PROGRESS_CHUNK) {
                file.read_exact(chunk)?;
                done += chunk.len() as u64;
                progress(done);
            }
        }
    }
    Ok(AnonCopy {
        map: map.make_read_only()?,
        start,
        len,
        huge,
    })
}
