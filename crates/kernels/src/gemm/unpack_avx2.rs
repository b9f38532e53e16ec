//! [`super::unpack::unpack_group`] for Q4_K, Q5_0, Q6_K and Q8_0 with AVX2: the same bytes, a
//! whole group at a time.
//!
//! A group's layout is a transpose: lane `l` (run `l`) holds its values `4p..4p + 4` at
//! bytes `64p + 4l`, so chunk `p` gathers the `p`-th 4-byte word of every run. The scalar
//! path moves one word at a time; here each run's 8 words are one register and two 8 × 8
//! transposes of 32-bit words make the 8 chunks (Q6_K's runs of 16 values: 4 words,
//! 4 × 4 transposes). A prompt's GEMM over few tokens (a
//! mixture-of-experts layer gives each expert a few dozen) spends about a fifth of its
//! time unpacking on the scalar path.
//!
//! The scales and mins are converted exactly as the scalar path does (one f32 product per
//! run), so the tile is bit-identical (`tests::avx2_groups_equal_the_scalar_ones`).

use std::arch::x86_64::*;

use crate::quant::blocks::{f16_le, BlockQ4K, BlockQ5_0, BlockQ6K, BlockQ8_0};
use crate::quant::kquants::get_scale_min_k4;

/// Bytes of a group: 16 runs of 32 values.
const GROUP: usize = 512;

/// Q4_K: two super-blocks of 8 runs (see the scalar path for the nibble order).
///
/// # Safety
/// The CPU has AVX2 (every slice is indexed with bounds checks: `src` must hold two
/// blocks, `v` [`GROUP`] values and the others 16, or this panics).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q4_k(
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) {
    const B: usize = size_of::<BlockQ4K>();
    debug_assert!(src.len() == 2 * B && v.len() == GROUP && corr.len() == 16);
    let low = _mm256_set1_epi8(0x0F);
    for sb in 0..2 {
        let b: BlockQ4K = bytemuck::pod_read_unaligned(&src[sb * B..][..B]);
        // Runs 2j and 2j + 1: the low and high nibbles of bytes 32j..32j + 32.
        let runs: [__m256i; 8] = std::array::from_fn(|r| {
            // SAFETY: `qs` holds 128 bytes.
            let x = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * (r / 2)).cast()) };
            let x = if r % 2 == 0 {
                x
            } else {
                _mm256_srli_epi16::<4>(x)
            };
            _mm256_and_si256(x, low)
        });
        // SAFETY: the caller's contract for `v`'s length.
        let sums = unsafe { store_chunks(transpose8(runs), v, sb) };
        store_corr(sums, corr, sb);
        let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
        for sub in 0..8 {
            let (sc, mn) = get_scale_min_k4(sub, &b.scales);
            scale[8 * sb + sub] = d * sc as f32;
            min[8 * sb + sub] = dmin * mn as f32;
        }
    }
}

/// Q6_K: one super-block of 16 runs of 16 values (see the scalar path for where each
/// run's low nibbles and high bits lie); the values are ggml's `q - 32`.
///
/// # Safety
/// The CPU has AVX2 (as [`q4_k`], with one block in `src` and 256 values in `v`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q6_k(
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) {
    let b: BlockQ6K = bytemuck::pod_read_unaligned(src);
    let v = &mut v[..GROUP / 2];
    let (low, high) = (_mm_set1_epi8(0x0F), _mm_set1_epi8(0x30));
    // SAFETY (loads): every offset + 16 is within `ql` (128 bytes) or `qh` (64).
    let load =
        |bytes: &[u8], at: usize| unsafe { _mm_loadu_si128(bytes[at..][..16].as_ptr().cast()) };
    // Run r = 8n + 2k + h.
    let runs: [__m128i; 16] = std::array::from_fn(|r| {
        let (n, k, h) = (r / 8, r % 8 / 2, r % 2);
        let x = load(&b.ql, 64 * n + 32 * (k & 1) + 16 * h);
        let x = if k < 2 { x } else { _mm_srli_epi16::<4>(x) };
        let qh = load(&b.qh, 32 * n + 16 * h);
        // Bits 2k, 2k + 1 of each qh byte, as bits 4 and 5.
        let hi = match k {
            0 => _mm_slli_epi16::<4>(qh),
            1 => _mm_slli_epi16::<2>(qh),
            2 => qh,
            _ => _mm_srli_epi16::<2>(qh),
        };
        let q = _mm_or_si128(_mm_and_si128(x, low), _mm_and_si128(hi, high));
        _mm_sub_epi8(q, _mm_set1_epi8(32))
    });
    let ones8 = _mm_set1_epi8(1);
    for g in 0..4 {
        let r = &runs[4 * g..4 * g + 4];
        let t0 = _mm_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm_unpackhi_epi32(r[2], r[3]);
        let chunks = [
            _mm_unpacklo_epi64(t0, t2),
            _mm_unpackhi_epi64(t0, t2),
            _mm_unpacklo_epi64(t1, t3),
            _mm_unpackhi_epi64(t1, t3),
        ];
        let mut pairs = _mm_setzero_si128();
        for (p, c) in chunks.into_iter().enumerate() {
            let out = &mut v[64 * p + 16 * g..][..16];
            // SAFETY: `out` holds 16 bytes.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), c) };
            pairs = _mm_add_epi16(pairs, _mm_maddubs_epi16(ones8, c));
        }
        let sums = _mm_madd_epi16(pairs, _mm_set1_epi16(1));
        let c = _mm_sub_epi32(_mm_setzero_si128(), _mm_slli_epi32::<7>(sums));
        let out = &mut corr[4 * g..][..4];
        // SAFETY: `out` holds 4 i32s.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), c) };
    }
    let d = f16_le(b.d);
    for run in 0..16 {
        scale[run] = d * b.scales[run] as f32;
        min[run] = 0.0;
    }
}

/// Q5_0: 16 blocks, one run each: value `j` is nibble `j` of `qs` (the low ones first)
/// with bit `j` of `qh` as bit 4, less 16.
///
/// # Safety
/// The CPU has AVX2 (as [`q4_k`], with 16 blocks in `src`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q5_0(
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) {
    const B: usize = size_of::<BlockQ5_0>();
    let low = _mm_set1_epi8(0x0F);
    // Byte j of the 32 takes byte j / 8 of qh and tests bit j % 8 of it.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    one_run_blocks::<B>(src, v, corr, scale, min, |b| {
        let b: BlockQ5_0 = bytemuck::pod_read_unaligned(b);
        // SAFETY: `qs` holds 16 bytes.
        let qs = unsafe { _mm_loadu_si128(b.qs.as_ptr().cast()) };
        let nibbles = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(qs), low),
            _mm_and_si128(qs, low),
        );
        let qh = _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(b.qh)), spread);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        let q = _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        _mm256_sub_epi8(q, _mm256_set1_epi8(16))
    });
}

/// Q8_0: 16 blocks, one run each.
///
/// # Safety
/// The CPU has AVX2 (as [`q4_k`], with 16 blocks in `src`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q8_0(
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) {
    const B: usize = size_of::<BlockQ8_0>();
    one_run_blocks::<B>(src, v, corr, scale, min, |b| {
        // SAFETY: a block ends with its 32 values.
        unsafe { _mm256_loadu_si256(b[B - 32..].as_ptr().cast()) }
    });
}

/// The formats of 16 blocks of one run each with `d` in their first two bytes (Q5_0,
/// Q8_0): `values(block)` gives a block's 32 values in order.
#[inline]
#[target_feature(enable = "avx2")]
fn one_run_blocks<const B: usize>(
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
    values: impl Fn(&[u8]) -> __m256i,
) {
    for half in 0..2 {
        let runs: [__m256i; 8] = std::array::from_fn(|r| values(&src[(8 * half + r) * B..][..B]));
        // SAFETY: AVX2 (this function's feature); `store_chunks` checks `v`.
        let sums = unsafe { store_chunks(transpose8(runs), v, half) };
        store_corr(sums, corr, half);
    }
    for (run, b) in src.chunks_exact(B).enumerate() {
        scale[run] = f16_le([b[0], b[1]]);
        min[run] = 0.0;
    }
}

/// Stores chunk `p`'s 8 words of runs `8·half..` at bytes `64p + 32·half`, and returns
/// each run's sum of its 32 values (as signed bytes; Q4_K's are 0..=15 either way).
///
/// # Safety
/// The CPU has AVX2 (`v` is checked).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_chunks(chunks: [__m256i; 8], v: &mut [i8], half: usize) -> __m256i {
    assert!(v.len() >= GROUP);
    let ones8 = _mm256_set1_epi8(1);
    let mut pairs = _mm256_setzero_si256();
    for (p, c) in chunks.into_iter().enumerate() {
        // SAFETY: 64p + 32·half + 32 <= GROUP (asserted).
        unsafe { _mm256_storeu_si256(v.as_mut_ptr().add(64 * p + 32 * half).cast(), c) };
        // Pair sums of signed bytes are within ±256, 8 of them within i16.
        pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(ones8, c));
    }
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// `corr = -128 · Σv` of runs `8·half..8·half + 8`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_corr(sums: __m256i, corr: &mut [i32], half: usize) {
    let c = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(sums));
    let out = &mut corr[8 * half..][..8];
    // SAFETY: `out` holds 8 i32s.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), c) };
}

/// The activation panel's groups of 16 runs of 32 (`plain`: `n_groups` groups of
/// [`GROUP`] values in column order, stored XORed with `zero`), laid out as the weights'
/// groups are into `a`, with (unless `sums` is empty) each lane's sum of its values read
/// as signed bytes after undoing the XOR (16 per group): what the generic layout gives,
/// by the same transpose as [`q4_k`]'s.
///
/// # Safety
/// The CPU has AVX2 (every slice is indexed with bounds checks).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn panel_groups(
    plain: &[u8],
    n_groups: usize,
    zero: u8,
    a: &mut [u8],
    sums: &mut [f32],
) {
    let (plain, a) = (&plain[..n_groups * GROUP], &mut a[..n_groups * GROUP]);
    let flip = _mm256_set1_epi8(zero as i8);
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    for g in 0..n_groups {
        for half in 0..2 {
            let at = g * GROUP + half * GROUP / 2;
            let runs: [__m256i; 8] = std::array::from_fn(|r| {
                let run = &plain[at + 32 * r..][..32];
                // SAFETY: `run` holds 32 bytes.
                unsafe { _mm256_loadu_si256(run.as_ptr().cast()) }
            });
            let mut pairs = _mm256_setzero_si256();
            for (p, c) in transpose8(runs).into_iter().enumerate() {
                let out = &mut a[g * GROUP + 64 * p + 32 * half..][..32];
                // SAFETY: `out` holds 32 bytes.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), c) };
                // Pair sums of signed bytes are within ±256, 8 of them within i16.
                let signed = _mm256_xor_si256(c, flip);
                pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(ones8, signed));
            }
            if !sums.is_empty() {
                let out = &mut sums[16 * g + 8 * half..][..8];
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones16));
                // SAFETY: `out` holds 8 floats.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sums) };
            }
        }
    }
}

/// `out[p]` = word `p` of every `rows[r]` (an 8 × 8 transpose of 32-bit words).
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    // Pairs of rows interleaved: words 0, 1, 4, 5 (lo) and 2, 3, 6, 7 (hi) of each.
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // Four rows each: u[4q + k] holds words k and k + 4 of rows 4q..4q + 4.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (q, k) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + k / 2], t[4 * q + 2 + k / 2]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    std::array::from_fn(|p| {
        let (a, b) = (u[p % 4], u[4 + p % 4]);
        if p < 4 {
            _mm256_permute2x128_si256::<0x20>(a, b)
        } else {
            _mm256_permute2x128_si256::<0x31>(a, b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::TensorType;

    /// Random bytes for the blocks, with valid (finite) f16 scales.
    fn blocks(n: usize, block: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut out: Vec<u8> = (0..n * block)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        for b in out.chunks_exact_mut(block) {
            // d (and Q4_K's dmin) finite.
            if block == size_of::<BlockQ6K>() {
                b[block - 1] &= 0x3F;
            } else {
                b[1] &= 0x3F;
            }
            if block == size_of::<BlockQ4K>() {
                b[3] &= 0x3F;
            }
        }
        out
    }

    #[test]
    fn avx2_groups_equal_the_scalar_ones() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        for (ty, n, block) in [
            (TensorType::Q4_K, 2, size_of::<BlockQ4K>()),
            (TensorType::Q6_K, 1, size_of::<BlockQ6K>()),
            (TensorType::Q5_0, 16, size_of::<BlockQ5_0>()),
            (TensorType::Q8_0, 16, size_of::<BlockQ8_0>()),
        ] {
            for seed in 0..50 {
                let mut src = blocks(n, block, 0x1234_5678 + seed);
                if seed == 0 {
                    // The extremes: every value bit set (Q8_0's -1, Q4_K's 15, Q6_K's 31).
                    for b in src.chunks_exact_mut(block) {
                        match ty {
                            TensorType::Q4_K => b[16..].fill(0xFF),
                            TensorType::Q6_K => b[..192].fill(0xFF),
                            TensorType::Q5_0 => b[2..].fill(0xFF),
                            _ => b[2..].fill(0xFF),
                        }
                    }
                }
                if seed == 1 && ty == TensorType::Q8_0 {
                    for b in src.chunks_exact_mut(block) {
                        b[2..].fill(0x80); // -128
                    }
                }
                let (mut v, mut corr, mut scale, mut min) =
                    ([0i8; GROUP], [0i32; 16], [0f32; 16], [0f32; 16]);
                let (mut v2, mut corr2, mut scale2, mut min2) =
                    ([0i8; GROUP], [0i32; 16], [0f32; 16], [0f32; 16]);
                // SAFETY: AVX2 was detected; the slices have the lengths asked for.
                unsafe {
                    match ty {
                        TensorType::Q4_K => q4_k(&src, &mut v, &mut corr, &mut scale, &mut min),
                        TensorType::Q6_K => q6_k(&src, &mut v, &mut corr, &mut scale, &mut min),
                        TensorType::Q5_0 => q5_0(&src, &mut v, &mut corr, &mut scale, &mut min),
                        _ => q8_0(&src, &mut v, &mut corr, &mut scale, &mut min),
                    }
                }
                assert!(super::super::unpack::unpack_group_scalar(
                    ty,
                    &src,
                    &mut v2,
                    &mut corr2,
                    &mut scale2,
                    &mut min2
                ));
                assert_eq!(v, v2, "{ty} seed {seed}");
                assert_eq!(corr, corr2, "{ty} seed {seed}");
                assert_eq!(scale.map(f32::to_bits), scale2.map(f32::to_bits), "{ty}");
                assert_eq!(min.map(f32::to_bits), min2.map(f32::to_bits), "{ty}");
            }
        }
    }
}
