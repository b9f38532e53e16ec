//! Memory for the bandwidth-bound benchmarks, in two kinds of pages, and how much of it
//! a pass must span to read from DRAM rather than from a cache.
//!
//! With transparent huge pages in `madvise` mode (the default on many distributions and on
//! this machine), plain heap memory sits on 4 KiB pages, and streaming reads through it
//! are limited by TLB misses: here about 13 GiB/s against about 20 GiB/s with huge pages
//! (numpy asks for them, which is why its `sum` reads faster than a naive Rust loop). The
//! benchmarks therefore measure both kinds, with the same kind for the bandwidth ceiling
//! and for the kernels compared with it.

use memmap2::{Advice, MmapMut};

/// Page kinds the benchmarks compare.
#[derive(Clone, Copy)]
pub enum Pages {
    /// Whatever the kernel gives anonymous memory by default (4 KiB under `madvise`).
    Default,
    /// Anonymous memory advised `MADV_HUGEPAGE` (2 MiB pages where the kernel allows).
    Huge,
}

impl Pages {
    pub const BOTH: [Pages; 2] = [Pages::Default, Pages::Huge];

    pub fn name(self) -> &'static str {
        match self {
            Pages::Default => "4k",
            Pages::Huge => "huge",
        }
    }
}

/// Bytes a pass must span so that it reads from DRAM: four times the largest cache the
/// OS reports for this CPU, and at least 64 MiB (twice a 32 MiB L3). A fixed 64 MiB fit
/// in the 260 MiB L3 of a Xeon Emerald Rapids VM, where "DRAM" figures were then L3's.
#[allow(dead_code)]
pub fn dram_span() -> usize {
    (4 * largest_cache().unwrap_or(32 << 20)).max(64 << 20)
}

/// The largest cache of CPU 0 in bytes, from Linux's sysfs (`index*/size`, e.g.
/// `266240K`); `None` elsewhere.
fn largest_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("size")).ok())
        .filter_map(|s| {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
            let mult = match unit {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return None,
            };
            num.parse::<usize>().ok()?.checked_mul(mult)
        })
        .max()
}

/// A zeroed, page-aligned buffer of `bytes`, faulted in before it is returned.
pub fn buffer(bytes: usize, pages: Pages) -> MmapMut {
    let mut map = MmapMut::map_anon(bytes).expect("anonymous map");
    if let Pages::Huge = pages {
        // Advice only: where huge pages are unavailable the figures equal the default's.
        let _ = map.advise(Advice::HugePage);
    }
    map.fill(1);
    map
}

/// Deterministic, roughly normal values of real weights' spread (what trained weights
/// look like to a quantizer; at this scale Q6_K's super-block scales are subnormal
/// halves, as in real models). Not every bench uses it.
#[allow(dead_code)]
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            let mut u = 0.0;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                u += (s >> 40) as f32 / (1u64 << 24) as f32;
            }
            (u - 2.0) * 0.05
        })
        .collect()
}
