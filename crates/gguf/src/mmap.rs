//! The crate's one `unsafe` call: mapping a model file into memory.

use std::fs::File;

use memmap2::Mmap;

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
