//! Q6_K · Q8_K on AVX-512, one row or [`ROWS`] rows per call.
//!
//! The integer scheme is `kquants::dot_q6_k`'s, lane for lane: the 6-bit quants enter
//! `maddubs` unsigned (0..64), the `- 32` is taken off once per super-block through Q8_K's
//! `bsums`, and each 64-weight step's i16 pair sums are multiplied by their sub-block
//! scales and added into the same sixteen i32 lanes. Because every i32 lane receives the
//! same products (integer sums do not depend on their order) and the float operations are
//! the same (one FMA per super-block, one reduction at the end), the results equal that
//! kernel's bit for bit (`tests/dot_rows.rs` checks the multi-row kernel against the
//! installed single-row one, `tests/simd_vs_scalar.rs` that one against the reference).
//!
//! What changes is the instruction count per super-block and row, ~50 → ~30 vector ops:
//! - the quants are rebuilt with `vpternlogd` bit-selects from one masked copy of `qh`
//!   (two ops per 64 weights instead of four, plus one shared `and`), with `qh`'s two
//!   halves formed by one variable shift of a broadcast load;
//! - with AVX512-VNNI, `vpdpbusd` forms four-product sums, two of which (one from each
//!   half of 128 weights) share an i32 lane as an i16 pair, and one `vpdpwssd` scales
//!   and adds both; each lane receives the same products as before, so the sums are
//!   the same;
//! - the offset is one `madd` of the scales times 32 with the negated `bsums` (the latter
//!   shared by all rows).
//!
//! The multi-row kernel shares the activation quants (four 512-bit loads per block) and
//! negated `bsums` across its rows, and prefetches two groups of rows ahead, as the
//! Q4_K one does (four interleaved row streams defeat the hardware prefetchers).

use core::arch::x86_64::*;

use super::super::avx2::kquants::{q8k_d, Q8K, Q8K_BSUMS, Q8K_QS};
use super::super::avx2::util::f16_at;
use super::kquants::{prefetch_ahead, PREFETCH_GROUPS};

/// Bytes of a Q6_K block: `ql[128]`, `qh[64]`, 16 i8 `scales`, f16 `d`.
const BYTES: usize = 210;
/// Offsets of `qh`, `scales` and `d` in a Q6_K block (`ql` is at 0).
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

/// Rows per multi-row call.
pub const ROWS: usize = 4;

/// Permutation indices that put i16 lane `first + l / 8` in lane `l` of 32: step `c`'s
/// 64 weights are sub-blocks 4c..4c+4, 16 weights (8 i16 pair sums) each.
const fn sub16(first: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut l = 0;
    while l < 32 {
        idx[l] = first + (l / 8) as i16;
        l += 1;
    }
    idx
}

static SUB16: [[i16; 32]; 4] = [sub16(0), sub16(4), sub16(8), sub16(12)];

/// Permutation indices for the VNNI path's half `h` (128 weights): i32 lane `j` of
/// 128-bit lane `L` holds the i16 pair of sub-blocks `(8h + L, 8h + 4 + L)`, so its
/// scales are that pair.
const fn pairs(h: usize) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut l = 0;
    while l < 32 {
        idx[l] = (8 * h + l / 8 + 4 * (l % 2)) as i16;
        l += 1;
    }
    idx
}

static PAIRS: [[i16; 32]; 2] = [pairs(0), pairs(1)];

/// `vpternlogd` truth table of `a ? b : c` (bit select, `a` the mask).
const SELECT: i32 = 0xCA;

/// Per-block values the rows share: the activation quants in four 64-weight steps and
/// the negated `bsums`.
#[derive(Clone, Copy)]
struct Acts {
    yv: [__m512i; 4],
    neg_bsums: __m256i,
}

/// Loads block `y`'s [`Acts`].
///
/// # Safety
/// AVX-512 F/BW; `y` must point at a whole Q8_K block.
#[inline(always)]
unsafe fn acts(y: *const u8) -> Acts {
    let yq = y.add(Q8K_QS);
    let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
    Acts {
        yv: [0, 1, 2, 3].map(|c| _mm512_loadu_si512(yq.add(64 * c) as *const _)),
        neg_bsums: _mm256_sub_epi16(_mm256_setzero_si256(), bsums),
    }
}

/// One Q6_K block `x` against shared activations: the sixteen i32 lane sums of
/// `kquants::dot_q6_k` (lanes 0..8 carry the `-32·Σ scale·bsum` offset). Every kernel
/// here forms it from [`Decoded::new`] and [`Decoded::sums`], so their lane sums match.
///
/// # Safety
/// AVX-512 F/BW/VL, AVX2 (and AVX512-VNNI when `VNNI`); `x` must point at a whole block.
#[inline(always)]
unsafe fn block_sums<const VNNI: bool>(x: *const u8, y: &Acts) -> __m512i {
    Decoded::new::<VNNI>(x).sums::<VNNI>(y)
}

/// One row's Q6_K block, decoded once for every token that meets it.
struct Decoded {
    /// The 6-bit quants of the four 64-weight steps: step `2h + c` is `q_lo` (`c = 0`) or
    /// `q_hi` of half `h`.
    q: [__m512i; 4],
    /// `32·scale` as i16 (it fits: |scale| ≤ 128), for the offset.
    scales32: __m256i,
    /// The scales spread over the steps' i16 products: without VNNI step `v`'s
    /// ([`SUB16`]), with VNNI half `h`'s pairs ([`PAIRS`]) in entries 0 and 1.
    sc: [__m512i; 4],
}

impl Decoded {
    /// Decodes block `x`.
    #[inline(always)]
    unsafe fn new<const VNNI: bool>(x: *const u8) -> Decoded {
        let m4 = _mm512_set1_epi8(0x0F);
        let m33 = _mm512_set1_epi8(0x33);
        // Bits 0/1 and 4/5 of each qh byte are weights l and l+64; bits 2/3 and 6/7 (l+32,
        // l+96) move down by two in the upper 256 bits, matching ql's layout below.
        let qh_shift = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(SCALES) as *const __m128i));
        let mut q = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            // 128 weights: ql[64h..64h+64] holds weights 0..64 in its low nibbles and
            // 64..128 in its high ones; qh[32h..32h+32] two bits for each of them.
            let ql = _mm512_loadu_si512(x.add(64 * h) as *const _);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(x.add(QH + 32 * h) as *const __m256i));
            // Top bits of weights 0..64 in bits 0/1 of each byte, of 64..128 in bits 4/5.
            let qh = _mm512_and_si512(_mm512_srlv_epi64(qh, qh_shift), m33);
            // Low nibble from ql, bits 4/5 from qh (bits 6/7 of the shifted qh are zero;
            // its low nibble, from the byte below, is masked off by the select).
            q[2 * h] = _mm512_ternarylogic_epi32::<SELECT>(m4, ql, _mm512_slli_epi64::<4>(qh));
            q[2 * h + 1] = _mm512_ternarylogic_epi32::<SELECT>(m4, _mm512_srli_epi64::<4>(ql), qh);
        }
        let wide = _mm512_castsi256_si512(scales);
        let idx = |t: &[i16; 32]| _mm512_loadu_si512(t.as_ptr() as *const _);
        let sc = if VNNI {
            let zero = _mm512_setzero_si512();
            [
                _mm512_permutexvar_epi16(idx(&PAIRS[0]), wide),
                _mm512_permutexvar_epi16(idx(&PAIRS[1]), wide),
                zero,
                zero,
            ]
        } else {
            // A loop, not `array::from_fn`: a closure's body does not inherit the target
            // features, and it is not always inlined.
            let mut sc = [_mm512_setzero_si512(); 4];
            for v in 0..4 {
                sc[v] = _mm512_permutexvar_epi16(idx(&SUB16[v]), wide);
            }
            sc
        };
        Decoded {
            q,
            scales32: _mm256_slli_epi16::<5>(scales),
            sc,
        }
    }

    /// The block's sixteen i32 lane sums against one token's activations.
    #[inline(always)]
    unsafe fn sums<const VNNI: bool>(&self, y: &Acts) -> __m512i {
        // One madd forms each lane's offset pair.
        let offset = _mm256_madd_epi16(self.scales32, y.neg_bsums);
        let mut sumi = _mm512_zextsi256_si512(offset);
        for h in 0..2 {
            let (q_lo, q_hi) = (self.q[2 * h], self.q[2 * h + 1]);
            if VNNI {
                // vpdpbusd sums four products per i32 lane: at most 4·63·128 < 2¹⁵, so the
                // sums of sub-blocks 8h+L (q_lo) and 8h+4+L (q_hi) share a lane as an i16
                // pair, and one vpdpwssd applies both scales (three multiplies per 128
                // weights instead of four, one scale shuffle instead of two).
                let zero = _mm512_setzero_si512();
                let lo = _mm512_dpbusd_epi32(zero, q_lo, y.yv[2 * h]);
                let hi = _mm512_dpbusd_epi32(zero, q_hi, y.yv[2 * h + 1]);
                // (lo & 0xFFFF) | (hi << 16)
                let pair = _mm512_ternarylogic_epi32::<0xEC>(
                    lo,
                    _mm512_slli_epi32::<16>(hi),
                    _mm512_set1_epi32(0xFFFF),
                );
                sumi = _mm512_dpwssd_epi32(sumi, pair, self.sc[h]);
                continue;
            }
            for (c, q) in [q_lo, q_hi].into_iter().enumerate() {
                let step = 2 * h + c;
                let p = _mm512_maddubs_epi16(q, y.yv[step]);
                sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(self.sc[step], p));
            }
        }
        sumi
    }
}

/// The single-row loop.
///
/// # Safety
/// As [`dot_q6_k`].
#[inline(always)]
unsafe fn dot<const VNNI: bool>(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let mut acc = _mm512_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(BYTES * i), a.add(Q8K * i));
        let d = _mm512_set1_ps(q8k_d(y) * f16_at(x.add(D)));
        let sumi = block_sums::<VNNI>(x, &acts(y));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// The multi-row loop: each row's operations are [`dot`]'s in the same order.
///
/// # Safety
/// As [`dot_rows_q6_k`].
#[inline(always)]
unsafe fn dot_rows<const VNNI: bool>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let mut acc = [_mm512_setzero_ps(); ROWS];
    for i in 0..nb {
        // The group's rows are contiguous, so the lines PREFETCH_GROUPS groups ahead
        // stream at the rate this group is read.
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + BYTES * i));
        prefetch_ahead(ahead, ROWS * BYTES, stride);
        let y = a.add(Q8K * i);
        let yd = q8k_d(y);
        let shared = acts(y);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = w.add(r * stride + BYTES * i);
            let d = _mm512_set1_ps(yd * f16_at(x.add(D)));
            let sumi = block_sums::<VNNI>(x, &shared);
            *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), *acc);
        }
    }
    // A loop, not `map`: a closure's body does not inherit the target features, so the
    // reduction would be an out-of-line call per row.
    let mut out = [0.0; ROWS];
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = _mm512_reduce_add_ps(acc);
    }
    out
}

/// Tokens per call of the several-tokens kernels (see `q32::TOKENS`).
pub const TOKENS: usize = 4;

/// The several-tokens loop: `out[t][r]` is exactly [`dot`] of row `r` and token `t`, each
/// (row, token) pair receiving that row's operations of [`dot_rows`] in the same order;
/// each row's block is decoded once for all `T` tokens, each token's activations loaded
/// once for all [`ROWS`] rows.
///
/// # Safety
/// As [`dot_rows_q6_k`], and each of the `T` rows at `a + t·a_stride` must hold `nb`
/// Q8_K blocks.
// The tile is indexed by (token, row) while rows are the outer loop.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn dot_tokens<const VNNI: bool, const T: usize>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; ROWS]; T] {
    let mut acc = [[_mm512_setzero_ps(); ROWS]; T];
    for i in 0..nb {
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + BYTES * i));
        prefetch_ahead(ahead, ROWS * BYTES, stride);
        let mut yd = [0.0f32; T];
        let zero = Acts {
            yv: [_mm512_setzero_si512(); 4],
            neg_bsums: _mm256_setzero_si256(),
        };
        let mut shared = [zero; T];
        for t in 0..T {
            let y = a.add(t * a_stride + Q8K * i);
            yd[t] = q8k_d(y);
            shared[t] = acts(y);
        }
        for r in 0..ROWS {
            let x = w.add(r * stride + BYTES * i);
            let dx = f16_at(x.add(D));
            let q = Decoded::new::<VNNI>(x);
            for t in 0..T {
                let d = _mm512_set1_ps(yd[t] * dx);
                let sumi = q.sums::<VNNI>(&shared[t]);
                acc[t][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[t][r]);
            }
        }
    }
    // Loops, not `map` (see `dot_rows`).
    let mut out = [[0.0; ROWS]; T];
    for (o, acc) in out.iter_mut().zip(acc) {
        for (o, acc) in o.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(acc);
        }
    }
    out
}

/// Defines the `#[target_feature]` several-tokens entry points.
macro_rules! tokens_kernel {
    ($name:ident, $vnni:expr, $features:literal, $what:literal) => {
        #[doc = concat!($what, " for [`ROWS`] rows `stride` bytes apart and `n_tokens` ")]
        #[doc = "(1..=[`TOKENS`]) Q8_K rows `a_stride` bytes apart: `out[t][r]` for"]
        #[doc = "`t < n_tokens` is the single-row dot of row `r` and token `t`."]
        ///
        /// # Safety
        /// The CPU must support the features this function enables; each of the [`ROWS`]
        /// rows at `w + r·stride` must hold `nb` Q6_K blocks, and each of the `n_tokens`
        /// rows at `a + t·a_stride` `nb` Q8_K blocks.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            w: *const u8,
            stride: usize,
            a: *const u8,
            a_stride: usize,
            nb: usize,
            n_tokens: usize,
        ) -> [[f32; ROWS]; TOKENS] {
            let mut out = [[0.0; ROWS]; TOKENS];
            match n_tokens {
                0 => {}
                1 => out[0] = dot_rows::<$vnni>(w, stride, a, nb),
                2 => out[..2].copy_from_slice(&dot_tokens::<$vnni, 2>(w, stride, a, a_stride, nb)),
                3 => out[..3].copy_from_slice(&dot_tokens::<$vnni, 3>(w, stride, a, a_stride, nb)),
                _ => out = dot_tokens::<$vnni, TOKENS>(w, stride, a, a_stride, nb),
            }
            out
        }
    };
}

tokens_kernel!(
    dot_tokens_q6_k,
    false,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    "Q6_K · Q8_K"
);
tokens_kernel!(
    dot_tokens_q6_k_vnni,
    true,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "Q6_K · Q8_K with VNNI"
);

/// Q6_K · Q8_K.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C; `w` must hold `nb` Q6_K
/// blocks (210 bytes) and `a` `nb` Q8_K blocks (292 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot::<false>(w, a, nb)
}

/// [`dot_q6_k`] with `vpdpwssd`.
///
/// # Safety
/// As [`dot_q6_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q6_k_vnni(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot::<true>(w, a, nb)
}

/// Q6_K · Q8_K for [`ROWS`] rows `stride` bytes apart; `out[r]` equals [`dot_q6_k`] of
/// row `r` bit for bit.
///
/// # Safety
/// As [`dot_q6_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q6_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows::<false>(w, stride, a, nb)
}

/// [`dot_rows_q6_k`] with `vpdpwssd`.
///
/// # Safety
/// As [`dot_rows_q6_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_rows_q6_k_vnni(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    dot_rows::<true>(w, stride, a, nb)
}

#[cfg(test)]
mod tests {
    //! These kernels against `kquants::dot_q6_k`, which they must equal bit for bit (the
    //! same i32 lane sums, the same float operations), on random quant and scale bytes
    //! (every 6-bit quant, scales -128..=127) under finite random block scales.

    use super::*;
    use crate::dispatch::Level;

    /// Xorshift bytes: `nb` Q6_K blocks for each of `n_rows` rows and `nb` Q8_K blocks
    /// with activation quants in -127..=127 and `bsums` that match them.
    fn data(n_rows: usize, nb: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut s = seed | 1;
        let mut byte = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        };
        let mut w: Vec<u8> = (0..n_rows * nb * BYTES).map(|_| byte()).collect();
        for b in w.chunks_exact_mut(BYTES) {
            // Clearing exponent bits 6 and 2 of the high byte keeps the half finite.
            b[D + 1] &= 0xBB;
        }
        let mut a: Vec<u8> = (0..nb * Q8K).map(|_| byte()).collect();
        for b in a.chunks_exact_mut(Q8K) {
            let d = (byte() as f32 + 1.0) * 1e-3;
            b[..4].copy_from_slice(&d.to_le_bytes());
            let qs = &mut b[Q8K_QS..Q8K_BSUMS];
            for q in qs.iter_mut() {
                if *q == 0x80 {
                    *q = 0x81;
                }
            }
            let sums: Vec<i16> = qs
                .chunks_exact(16)
                .map(|c| c.iter().map(|&q| q as i8 as i16).sum())
                .collect();
            for (dst, s) in b[Q8K_BSUMS..].chunks_exact_mut(2).zip(sums) {
                dst.copy_from_slice(&s.to_le_bytes());
            }
        }
        (w, a)
    }

    #[test]
    fn q6k_kernels_equal_kquants_dot_q6_k() {
        if !Level::Avx512.is_supported() {
            eprintln!("skipped: this CPU lacks AVX-512");
            return;
        }
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni");
        let stride = 9 * BYTES;
        for nb in 0..=9 {
            let (w, a) = data(ROWS, nb, 0x9E37_79B9 + nb as u64);
            let (w, a) = (w.as_ptr(), a.as_ptr());
            // SAFETY: AVX-512 F/BW/VL (with AVX2, FMA, F16C) was detected above, VNNI
            // before each VNNI call; `w` holds ROWS rows of 9 ≥ nb blocks, `stride`
            // bytes apart, and `a` nb Q8_K blocks.
            unsafe {
                let plain = dot_rows_q6_k(w, stride, a, nb);
                let fused = vnni.then(|| dot_rows_q6_k_vnni(w, stride, a, nb));
                for r in 0..ROWS {
                    let x = w.add(r * stride);
                    let want = super::super::kquants::dot_q6_k(x, a, nb).to_bits();
                    assert_eq!(dot_q6_k(x, a, nb).to_bits(), want, "row {r}, {nb} blocks");
                    assert_eq!(plain[r].to_bits(), want, "rows: row {r}, {nb} blocks");
                    if let Some(fused) = fused {
                        assert_eq!(dot_q6_k_vnni(x, a, nb).to_bits(), want, "vnni {r} {nb}");
                        assert_eq!(fused[r].to_bits(), want, "vnni rows {r} {nb}");
                    }
                }
            }
        }
    }
}
