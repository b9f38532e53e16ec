//! A small, fast, non-cryptographic hasher for the tokenizer's lookup tables.
//!
//! The keys (token texts, pairs of token ids, words of the input) are short, and a lookup
//! happens for every candidate merge, so SipHash's per-call cost shows up in profiles.
//! This is the multiply-rotate hash rustc uses (FxHash). It does not resist deliberate
//! collisions; the tables it serves are built from the model file and hold the input's
//! words only for the length of one call.

use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap` with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// FxHash: `h = (h.rotl(5) ^ word) * K` per 8-byte word.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i.into());
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest, and hashbrown picks buckets from the
        // high ones and control bytes from the top 7; a final rotate spreads both.
        self.hash.rotate_left(26)
    }
}

/// A vocabulary text as a hash-map key, stored inline when short (almost every token is),
/// so that a probe compares bytes in the table itself instead of following a pointer:
/// tokenizing is mostly lookups of short strings in a map of up to ~260 000 entries, and
/// the pointer chase was a cache miss per probe. Looked up by `&[u8]`.
#[derive(Clone, Debug)]
pub(crate) enum TextKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const INLINE: usize = 22;

impl TextKey {
    pub(crate) fn new(s: &str) -> TextKey {
        let b = s.as_bytes();
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            TextKey::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            TextKey::Heap(b.into())
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            TextKey::Inline { len, bytes } => &bytes[..*len as usize],
            TextKey::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for TextKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::hash::Hash for TextKey {
    /// The same hash as the `[u8]` it stands for, as `Borrow` requires.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for TextKey {
    #[inline]
    fn eq(&self, other: &TextKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TextKey {}
