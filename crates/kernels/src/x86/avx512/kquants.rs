//! Q4_K, Q5_K and Q6_K against Q8_K activations, 64 weights per 512-bit step.
//!
//! The same exact integer scheme as the AVX2 kernels (`maddubs`, then `madd` with the
//! sub-block scales), twice as wide: a Q4_K/Q5_K step covers two 32-weight sub-blocks, a
//! Q6_K step four 16-weight ones. With VNNI, Q4_K/Q5_K instead form four-product sums
//! with `vpdpbusd` and scale two sub-blocks' sums with one `vpdpwssd` (see
//! [`block_sumi`]); each i32 lane gets the same products, so the sums are the same.

use core::arch::x86_64::*;

use super::super::avx2::kquants::{q8k_d, Q8K, Q8K_BSUMS, Q8K_QS};
use super::super::avx2::util::f16_at;

/// Two 256-bit halves as one vector, `lo` in the low lanes.
#[inline(always)]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Permutation indices that put i16 lane `first + l / group` in lane `l` of 32.
const fn lanes(first: i16, group: usize) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut l = 0;
    while l < 32 {
        idx[l] = first + (l / group) as i16;
        l += 1;
    }
    idx
}

/// For Q6_K step c (0..4): scales 4c..4c+4, one per 8 i16 lanes (16 weights).
static SUB16: [[i16; 32]; 4] = [lanes(0, 8), lanes(4, 8), lanes(8, 8), lanes(12, 8)];

/// Loads a permutation table row.
#[inline(always)]
unsafe fn idx(row: &[i16; 32]) -> __m512i {
    _mm512_loadu_si512(row.as_ptr() as *const _)
}

/// Byte-shuffle controls that spread one row's sub-block scales (bytes 0..8 of each
/// 128-bit lane, see [`unpack4`]) over the i16 products of step `v` (see [`acts`]):
/// sub-block `4·(v / 2) + v % 2` in the low 256 bits, two sub-blocks on in the high ones.
const fn spread(v: usize) -> [u8; 64] {
    let mut c = [0x80u8; 64];
    let mut k = 0;
    while k < 32 {
        c[2 * k] = (4 * (v / 2) + v % 2 + 2 * (k / 16)) as u8;
        k += 1;
    }
    c
}

/// [`spread`] for the four steps of a block.
static SPREAD: [[u8; 64]; 4] = [spread(0), spread(1), spread(2), spread(3)];

/// Byte-shuffle control that widens the eight mins (bytes 8..16 of each 128-bit lane) to
/// i16.
static MINS: [u8; 16] = [
    8, 0x80, 9, 0x80, 10, 0x80, 11, 0x80, 12, 0x80, 13, 0x80, 14, 0x80, 15, 0x80,
];

/// Loads a 64-byte control table.
#[inline(always)]
unsafe fn ctl(row: &[u8; 64]) -> __m512i {
    _mm512_loadu_si512(row.as_ptr() as *const _)
}

/// The activation quants of one Q8_K block in the order of the weights' nibbles: a
/// 64-byte load of Q4_K `qs` holds sub-blocks 4m (low nibbles of bytes 0..32), 4m+1
/// (their high nibbles), 4m+2 and 4m+3 (bytes 32..64), so step `2m` takes sub-blocks
/// [4m, 4m+2] and step `2m+1` [4m+1, 4m+3]. Permuting the activations once per block
/// (shared by all rows) spares every row the 256-bit split and join of its weights.
#[inline(always)]
unsafe fn acts(yq: *const u8) -> [__m512i; 4] {
    let sub = |s: usize| _mm256_loadu_si256(yq.add(32 * s) as *const __m256i);
    [
        join(sub(0), sub(2)),
        join(sub(1), sub(3)),
        join(sub(4), sub(6)),
        join(sub(5), sub(7)),
    ]
}

/// The eight per-32 sums of a Q8_K block's `bsums`, as i16.
#[inline(always)]
unsafe fn bsums32(y: *const u8) -> __m128i {
    let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
    _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    )
}

/// Unpacks the 6-bit scales and mins of up to four blocks at once (one per 128-bit lane,
/// each lane the block's first 16 bytes: `d`, `dmin`, the 12 packed bytes), as
/// `unpack_scales_mins` does for one: each lane becomes eight scales (bytes 0..8) and
/// eight mins (bytes 8..16). With the packed bytes as words q0..q2 (lane dwords 1..3):
/// `[q0 & 0x3f.., (q2 & 0x0f..) | ((q0 >> 2) & 0x30..), q1 & 0x3f..,
/// ((q2 >> 4) & 0x0f..) | ((q1 >> 2) & 0x30..)]`.
#[inline(always)]
unsafe fn unpack4(l: __m512i) -> __m512i {
    let a = _mm512_shuffle_epi32::<0b11_10_11_01>(l); // [q0, q2, q1, q2]
    let b = _mm512_shuffle_epi32::<0b10_00_01_00>(l); // [_, q0, _, q1]
    let a = _mm512_srlv_epi32(a, _mm512_set4_epi32(4, 0, 0, 0));
    let a = _mm512_and_si512(
        a,
        _mm512_set4_epi32(0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f),
    );
    let b = _mm512_srli_epi32::<2>(b);
    let high = _mm512_set4_epi32(0x3030_3030, 0, 0x3030_3030, 0);
    // a | (b & high)
    _mm512_ternarylogic_epi32::<0xF8>(a, b, high)
}

/// [`unpack4`] for one block.
#[inline(always)]
unsafe fn unpack1(l: __m128i) -> __m128i {
    let a = _mm_shuffle_epi32::<0b11_10_11_01>(l);
    let b = _mm_shuffle_epi32::<0b10_00_01_00>(l);
    let a = _mm_srlv_epi32(a, _mm_set_epi32(4, 0, 0, 0));
    let a = _mm_and_si128(
        a,
        _mm_set_epi32(0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f),
    );
    let b = _mm_srli_epi32::<2>(b);
    _mm_ternarylogic_epi32::<0xF8>(a, b, _mm_set_epi32(0x3030_3030, 0, 0x3030_3030, 0))
}

/// Byte-shuffle controls that spread one row's sub-block scales (bytes 0..8 of each
/// 128-bit lane, see [`unpack4`]) as i16 pairs over the i32 lanes of half `m` (see
/// [`block_sumi`]'s VNNI path): `(scale 4m, scale 4m+1)` in lanes 0..8, `(scale 4m+2,
/// scale 4m+3)` in lanes 8..16.
const fn pairs(m: usize) -> [u8; 64] {
    let mut c = [0x80u8; 64];
    let mut k = 0;
    while k < 16 {
        let first = (4 * m + 2 * (k / 8)) as u8;
        c[4 * k] = first;
        c[4 * k + 2] = first + 1;
        k += 1;
    }
    c
}

/// [`pairs`] for the two halves of a block.
static PAIRS: [[u8; 64]; 2] = [pairs(0), pairs(1)];

/// One Q4_K/Q5_K block's `Σ scale[s] · Σ q·a over sub-block s` as 16 i32 partial sums:
/// `x` is the block, `ya` the activations from [`acts`], `s` the unpacked scales (from
/// [`unpack4`]/[`unpack1`]) of this block in every 128-bit lane. The single-row,
/// multi-row and several-tokens kernels all form it from [`Decoded::new`] and
/// [`Decoded::sumi`], so their partial sums match lane for lane.
///
/// Without VNNI, each 64-weight step is `maddubs` (i16 pair sums) then `madd` with that
/// step's scales, two multiplies per step. With VNNI, `vpdpbusd` sums four products per
/// i32 lane in one multiply; a lane's sum is at most 4·31·128 < 2¹⁵ (5-bit quants), so
/// the low and high nibbles' sums of the same 128 weights fit one i32 lane as an i16 pair
/// (two cheap logic ops), and one `vpdpwssd` applies both sub-blocks' scales: three
/// multiplies per 128 weights instead of four, and one scale shuffle instead of two.
#[inline(always)]
unsafe fn block_sumi<const Q5: bool, const VNNI: bool>(
    x: *const u8,
    ya: &[__m512i; 4],
    s: __m512i,
) -> __m512i {
    Decoded::new::<Q5, VNNI>(x, s).sumi::<VNNI>(ya)
}

/// One row's Q4_K/Q5_K block, decoded once for every token that meets it: the quants of
/// the four 64-weight steps (step `2m + h`: the low (`h = 0`) or high nibbles of `qs`
/// bytes `64m..64m+64`, with Q5_K's fifth bit) and the scales spread for them.
struct Decoded {
    q: [__m512i; 4],
    /// Without VNNI, step `v`'s scales ([`SPREAD`]); with VNNI, half `m`'s scale pairs
    /// ([`PAIRS`]) in entries 0 and 1.
    sc: [__m512i; 4],
}

impl Decoded {
    /// Decodes block `x`, whose unpacked scales `s` are in every 128-bit lane.
    #[inline(always)]
    unsafe fn new<const Q5: bool, const VNNI: bool>(x: *const u8, s: __m512i) -> Decoded {
        let m4 = _mm512_set1_epi8(0x0F);
        let bit4 = _mm512_set1_epi8(0x10);
        // Q5_K: bit s of qh[l] tops weight l of sub-block s. With the high 256 bits
        // shifted down by 2, bit 4m (step 2m) and 4m+1 (step 2m+1) serve both halves.
        let hbits = if Q5 {
            let h = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.add(16) as *const __m256i));
            _mm512_mask_srli_epi16::<2>(h, 0xFFFF_0000, h)
        } else {
            _mm512_setzero_si512()
        };
        let qs = x.add(if Q5 { 48 } else { 16 });
        let mut q = [_mm512_setzero_si512(); 4];
        for m in 0..2 {
            let bits = _mm512_loadu_si512(qs.add(64 * m) as *const _);
            q[2 * m] = _mm512_and_si512(bits, m4);
            q[2 * m + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(bits), m4);
            if Q5 {
                // Move bit 4m (low nibbles) and 4m+1 (high nibbles) to bit 4:
                // q | (h & 0x10).
                let h = match m {
                    0 => [_mm512_slli_epi16::<4>(hbits), _mm512_slli_epi16::<3>(hbits)],
                    _ => [hbits, _mm512_srli_epi16::<1>(hbits)],
                };
                q[2 * m] = _mm512_ternarylogic_epi32::<0xF8>(q[2 * m], h[0], bit4);
                q[2 * m + 1] = _mm512_ternarylogic_epi32::<0xF8>(q[2 * m + 1], h[1], bit4);
            }
        }
        let sc = if VNNI {
            let zero = _mm512_setzero_si512();
            [
                _mm512_shuffle_epi8(s, ctl(&PAIRS[0])),
                _mm512_shuffle_epi8(s, ctl(&PAIRS[1])),
                zero,
                zero,
            ]
        } else {
            // A loop, not `array::from_fn`: a closure's body does not inherit the target
            // features, and it is not always inlined.
            let mut sc = [_mm512_setzero_si512(); 4];
            for v in 0..4 {
                sc[v] = _mm512_shuffle_epi8(s, ctl(&SPREAD[v]));
            }
            sc
        };
        Decoded { q, sc }
    }

    /// The block's 16 i32 partial sums against one token's activations `ya` (from
    /// [`acts`]).
    #[inline(always)]
    unsafe fn sumi<const VNNI: bool>(&self, ya: &[__m512i; 4]) -> __m512i {
        let mut sumi = _mm512_setzero_si512();
        for m in 0..2 {
            if VNNI {
                let zero = _mm512_setzero_si512();
                // Sub-blocks 4m | 4m+2 (low nibbles) and 4m+1 | 4m+3 (high nibbles).
                let lo = _mm512_dpbusd_epi32(zero, self.q[2 * m], ya[2 * m]);
                let hi = _mm512_dpbusd_epi32(zero, self.q[2 * m + 1], ya[2 * m + 1]);
                // (lo & 0xFFFF) | (hi << 16): each i32 lane as the i16 pair (lo, hi).
                let pair = _mm512_ternarylogic_epi32::<0xEC>(
                    lo,
                    _mm512_slli_epi32::<16>(hi),
                    _mm512_set1_epi32(0xFFFF),
                );
                sumi = _mm512_dpwssd_epi32(sumi, pair, self.sc[m]);
            } else {
                for h in 0..2 {
                    let v = 2 * m + h;
                    let p = _mm512_maddubs_epi16(self.q[v], ya[v]);
                    sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, self.sc[v]));
                }
            }
        }
        sumi
    }
}

/// The shared loop of Q4_K and Q5_K.
///
/// Per block: `d·yd · Σ lanes of` [`block_sumi`] into a 16-lane f32 accumulator, and
/// `dmin·yd · Σ min[s]·bsum[s]` (an exact i32) into a scalar one, which is added last.
///
/// # Safety
/// As the kernels: AVX-512 F/BW/VL, AVX2, FMA, F16C (and VNNI if `VNNI`); `nb` blocks of
/// `bytes` each in `w` and `nb` Q8_K blocks in `a`.
#[inline(always)]
unsafe fn dot_q4_q5<const Q5: bool, const VNNI: bool>(
    w: *const u8,
    a: *const u8,
    nb: usize,
) -> f32 {
    let bytes = if Q5 { 176 } else { 144 };
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(bytes * i), a.add(Q8K * i));
        let l = _mm_loadu_si128(x as *const __m128i);
        let u = unpack1(l);
        // [d·yd, dmin·yd, _, _]
        let dd = _mm_mul_ps(_mm_cvtph_ps(l), _mm_set1_ps(q8k_d(y)));
        let t = _mm_madd_epi16(
            _mm_shuffle_epi8(u, _mm_loadu_si128(MINS.as_ptr() as *const _)),
            bsums32(y),
        );
        let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b01_00_11_10>(t));
        let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b10_11_00_01>(t));
        acc_m = _mm_fnmadd_ss(_mm_movehdup_ps(dd), _mm_cvtepi32_ps(t), acc_m);
        let ya = acts(y.add(Q8K_QS));
        let sumi = block_sumi::<Q5, VNNI>(x, &ya, _mm512_broadcast_i32x4(u));
        acc = _mm512_fmadd_ps(_mm512_broadcastss_ps(dd), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(acc_m)
}

/// Rows per multi-row call (see `q32::ROWS`, the same trade-off).
pub const ROWS: usize = 4;

/// Groups of [`ROWS`] rows ahead that the multi-row kernel prefetches (four interleaved
/// row streams defeat the hardware prefetchers; see `q32`).
pub(super) const PREFETCH_GROUPS: usize = 2;

/// How far ahead (bytes) a prefetch into L1 still pays; farther ones go to L2. Lines
/// fetched [`PREFETCH_GROUPS`] groups of long rows ahead (40 KiB for 8960 columns) are
/// evicted from the 48 KiB L1 before they are read: into L2 instead, R1-1.5B's ffn_down
/// (1536×8960) went from 12 to 20+ GiB/s on one thread, and 3584 columns (16 KiB ahead)
/// gain a little, while short rows (1536 columns, 7 KiB ahead) lose about 5 % in L2.
const L1_AHEAD: usize = 8 << 10;

/// Prefetches the `bytes` (plus one line) from `ahead`: into L1 when the multi-row
/// kernel's rows are `stride` bytes apart and short enough for the lines to stay there
/// until read ([`L1_AHEAD`]), into L2 otherwise. `ahead` may lie past the matrix: a
/// prefetch never faults.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(ahead: *const u8, bytes: usize, stride: usize) {
    let near = ROWS * stride * PREFETCH_GROUPS <= L1_AHEAD;
    for k in 0..bytes.div_ceil(64) + 1 {
        let p = ahead.wrapping_add(64 * k) as *const i8;
        if near {
            _mm_prefetch::<_MM_HINT_T0>(p);
        } else {
            _mm_prefetch::<_MM_HINT_T1>(p);
        }
    }
}

/// Row `r`'s 128-bit lane of `v` in every lane.
#[inline(always)]
unsafe fn lane(v: __m512i, r: usize) -> __m512i {
    match r {
        0 => _mm512_shuffle_i32x4::<0x00>(v, v),
        1 => _mm512_shuffle_i32x4::<0x55>(v, v),
        2 => _mm512_shuffle_i32x4::<0xAA>(v, v),
        _ => _mm512_shuffle_i32x4::<0xFF>(v, v),
    }
}

/// [`dot_q4_q5`] for [`ROWS`] rows `stride` bytes apart: each row's operations are the
/// single-row kernel's in the same order, so `out[r]` equals its dot bit for bit. The
/// rows share the activation quants (loaded and permuted once per block), the per-32
/// sums of `bsums` and the activation scale; the four rows' scales and mins are unpacked
/// together (one row per 128-bit lane), their `d`/`dmin` converted by one `vcvtph2ps`,
/// and their min terms formed side by side.
///
/// # Safety
/// As [`dot_q4_q5`], for each of the [`ROWS`] rows at `w + r·stride`.
#[inline(always)]
unsafe fn dot_rows_q4_q5<const Q5: bool, const VNNI: bool>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    let bytes = if Q5 { 176 } else { 144 };
    let mins = _mm512_broadcast_i32x4(_mm_loadu_si128(MINS.as_ptr() as *const _));
    // Row r's d at f32 lane 2r of the converted scales, its dmin at 2r+1 (spread over
    // row r's 128-bit lane for the min terms).
    let d_lane = [0, 2, 4, 6].map(|l| _mm512_set1_epi32(l));
    let dmin_lanes = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7);
    let first_dwords = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [_mm512_setzero_ps(); ROWS];
    let mut acc_m = _mm512_setzero_ps();
    for i in 0..nb {
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + bytes * i));
        prefetch_ahead(ahead, ROWS * bytes, stride);
        let y = a.add(Q8K * i);
        let x = w.add(bytes * i);
        let head = |r: usize| _mm_loadu_si128(x.add(r * stride) as *const __m128i);
        let l = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(head(0)), head(1));
        let l = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(l, head(2)), head(3));
        let u = unpack4(l);
        // [d0, dmin0, d1, dmin1, ..] · yd
        let halves = _mm512_castsi512_si128(_mm512_permutexvar_epi32(first_dwords, l));
        let dd = _mm512_castps256_ps512(_mm256_mul_ps(
            _mm256_cvtph_ps(halves),
            _mm256_set1_ps(q8k_d(y)),
        ));
        let t = _mm512_madd_epi16(
            _mm512_shuffle_epi8(u, mins),
            _mm512_broadcast_i32x4(bsums32(y)),
        );
        let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t));
        let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b10_11_00_01>(t));
        acc_m = _mm512_fnmadd_ps(
            _mm512_permutexvar_ps(dmin_lanes, dd),
            _mm512_cvtepi32_ps(t),
            acc_m,
        );
        let ya = acts(y.add(Q8K_QS));
        for (r, acc) in acc.iter_mut().enumerate() {
            let sumi = block_sumi::<Q5, VNNI>(x.add(r * stride), &ya, lane(u, r));
            let d = _mm512_permutexvar_ps(d_lane[r], dd);
            *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), *acc);
        }
    }
    let mut m = [0.0f32; 16];
    _mm512_storeu_ps(m.as_mut_ptr(), acc_m);
    let mut out = [0.0; ROWS];
    for r in 0..ROWS {
        out[r] = _mm512_reduce_add_ps(acc[r]) + m[4 * r];
    }
    out
}

/// Tokens per call of the Q4_K/Q5_K several-tokens kernels: four rows by four tokens
/// are sixteen accumulators; the tokens' activations (four vectors each) live in L1 and
/// enter `vpdpbusd` as memory operands.
pub const TOKENS: usize = 4;

/// [`dot_rows_q4_q5`] for `T` tokens `a_stride` bytes apart: `out[t][r]` is exactly
/// `dot_q4_q5(w + r·stride, a + t·a_stride, nb)`. Each (row, token) pair gets its own
/// accumulators and the multi-row kernel's operations for that row, in the same order;
/// each row's quants and scales are decoded once per block for all `T` tokens, and each
/// token's activations, scale and min sums formed once for all [`ROWS`] rows.
///
/// # Safety
/// As [`dot_q4_q5`], for each of the [`ROWS`] rows at `w + r·stride` and each of the `T`
/// activation rows at `a + t·a_stride`.
// The tile is indexed by (token, row) while rows are the outer loop.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn dot_tokens_q4_q5<const Q5: bool, const VNNI: bool, const T: usize>(
    w: *const u8,
    stride: usize,
    a: *const u8,
    a_stride: usize,
    nb: usize,
) -> [[f32; ROWS]; T] {
    let bytes = if Q5 { 176 } else { 144 };
    let mins = _mm512_broadcast_i32x4(_mm_loadu_si128(MINS.as_ptr() as *const _));
    // As in dot_rows_q4_q5: row r's d at f32 lane 2r of the converted scales, its dmin at
    // 2r+1 (spread over row r's 128-bit lane for the min terms).
    let d_lane = [0, 2, 4, 6].map(|l| _mm512_set1_epi32(l));
    let dmin_lanes = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7);
    let first_dwords = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); ROWS]; T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    for i in 0..nb {
        let ahead = w.wrapping_add(ROWS * (stride * PREFETCH_GROUPS + bytes * i));
        prefetch_ahead(ahead, ROWS * bytes, stride);
        let x = w.add(bytes * i);
        let head = |r: usize| _mm_loadu_si128(x.add(r * stride) as *const __m128i);
        let l = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(head(0)), head(1));
        let l = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(l, head(2)), head(3));
        let u = unpack4(l);
        let dx = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(
            first_dwords,
            l,
        )));
        let row_mins = _mm512_shuffle_epi8(u, mins);
        let mut ya = [[_mm512_setzero_si512(); 4]; T];
        let mut dd = [_mm512_setzero_ps(); T];
        for t in 0..T {
            let y = a.add(t * a_stride + Q8K * i);
            // [d0, dmin0, d1, dmin1, ..] · yd
            dd[t] = _mm512_castps256_ps512(_mm256_mul_ps(dx, _mm256_set1_ps(q8k_d(y))));
            let m = _mm512_madd_epi16(row_mins, _mm512_broadcast_i32x4(bsums32(y)));
            let m = _mm512_add_epi32(m, _mm512_shuffle_epi32::<0b01_00_11_10>(m));
            let m = _mm512_add_epi32(m, _mm512_shuffle_epi32::<0b10_11_00_01>(m));
            acc_m[t] = _mm512_fnmadd_ps(
                _mm512_permutexvar_ps(dmin_lanes, dd[t]),
                _mm512_cvtepi32_ps(m),
                acc_m[t],
            );
            ya[t] = acts(y.add(Q8K_QS));
        }
        for r in 0..ROWS {
            let q = Decoded::new::<Q5, VNNI>(x.add(r * stride), lane(u, r));
            for t in 0..T {
                let sumi = q.sumi::<VNNI>(&ya[t]);
                let d = _mm512_permutexvar_ps(d_lane[r], dd[t]);
                acc[t][r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[t][r]);
            }
        }
    }
    let mut out = [[0.0; ROWS]; T];
    for t in 0..T {
        let mut m = [0.0f32; 16];
        _mm512_storeu_ps(m.as_mut_ptr(), acc_m[t]);
        for r in 0..ROWS {
            out[t][r] = _mm512_reduce_add_ps(acc[t][r]) + m[4 * r];
        }
    }
    out
}

/// Defines the `#[target_feature]` several-tokens entry points of Q4_K/Q5_K.
macro_rules! tokens_kernel {
    ($name:ident, $q5:expr, $vnni:expr, $features:literal, $what:literal) => {
        #[doc = concat!($what, " for [`ROWS`] rows `stride` bytes apart and `n_tokens` ")]
        #[doc = "(1..=[`TOKENS`]) Q8_K rows `a_stride` bytes apart: `out[t][r]` for"]
        #[doc = "`t < n_tokens` is the single-row dot of row `r` and token `t`."]
        ///
        /// # Safety
        /// The CPU must support the features this function enables; each of the [`ROWS`]
        /// rows at `w + r·stride` must hold `nb` weight blocks, and each of the `n_tokens`
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
                1 => out[0] = dot_rows_q4_q5::<$q5, $vnni>(w, stride, a, nb),
                2 => out[..2].copy_from_slice(&dot_tokens_q4_q5::<$q5, $vnni, 2>(
                    w, stride, a, a_stride, nb,
                )),
                3 => out[..3].copy_from_slice(&dot_tokens_q4_q5::<$q5, $vnni, 3>(
                    w, stride, a, a_stride, nb,
                )),
                _ => out = dot_tokens_q4_q5::<$q5, $vnni, TOKENS>(w, stride, a, a_stride, nb),
            }
            out
        }
    };
}

tokens_kernel!(
    dot_tokens_q4_k,
    false,
    false,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    "Q4_K · Q8_K"
);
tokens_kernel!(
    dot_tokens_q5_k,
    true,
    false,
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c",
    "Q5_K · Q8_K"
);
tokens_kernel!(
    dot_tokens_q4_k_vnni,
    false,
    true,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "Q4_K · Q8_K with VNNI"
);
tokens_kernel!(
    dot_tokens_q5_k_vnni,
    true,
    true,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    "Q5_K · Q8_K with VNNI"
);

/// Q4_K · Q8_K for [`ROWS`] rows `stride` bytes apart.
///
/// # Safety
/// As [`dot_q4_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q4_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<false, false>(w, stride, a, nb)
}

/// Q5_K · Q8_K for [`ROWS`] rows `stride` bytes apart.
///
/// # Safety
/// As [`dot_q5_k`], for each of the rows at `w + r·stride`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_rows_q5_k(w: *const u8, stride: usize, a: *const u8, nb: usize) -> [f32; ROWS] {
    dot_rows_q4_q5::<true, false>(w, stride, a, nb)
}

/// [`dot_rows_q4_k`] with VNNI (`vpdpwssd`: the same sums).
///
/// # Safety
/// As [`dot_rows_q4_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_rows_q4_k_vnni(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    dot_rows_q4_q5::<false, true>(w, stride, a, nb)
}

/// [`dot_rows_q5_k`] with VNNI (`vpdpwssd`: the same sums).
///
/// # Safety
/// As [`dot_rows_q5_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_rows_q5_k_vnni(
    w: *const u8,
    stride: usize,
    a: *const u8,
    nb: usize,
) -> [f32; ROWS] {
    dot_rows_q4_q5::<true, true>(w, stride, a, nb)
}

/// Q4_K · Q8_K.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C; `w` must hold `nb` Q4_K
/// blocks (144 bytes) and `a` `nb` Q8_K blocks (292 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<false, false>(w, a, nb)
}

/// Q5_K · Q8_K.
///
/// # Safety
/// As [`dot_q4_k`], with Q5_K blocks (176 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q5_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<true, false>(w, a, nb)
}

/// [`dot_q4_k`] with VNNI.
///
/// # Safety
/// As [`dot_q4_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q4_k_vnni(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<false, true>(w, a, nb)
}

/// [`dot_q5_k`] with VNNI.
///
/// # Safety
/// As [`dot_q5_k`], and the CPU must support AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q5_k_vnni(w: *const u8, a: *const u8, nb: usize) -> f32 {
    dot_q4_q5::<true, true>(w, a, nb)
}

/// Q6_K · Q8_K: unsigned quants (0..64) with the `- 32` applied through `bsums`, as in
/// the AVX2 kernel.
///
/// # Safety
/// As [`dot_q4_k`], with Q6_K blocks (210 bytes).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: *const u8, a: *const u8, nb: usize) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    for i in 0..nb {
        let (x, y) = (w.add(210 * i), a.add(Q8K * i));
        let d = _mm512_set1_ps(q8k_d(y) * f16_at(x.add(208)));
        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
        let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS) as *const __m256i);
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(scales, bsums));
        let mut sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(offset));
        let scales = _mm512_castsi256_si512(scales);
        for h in 0..2 {
            // 128 weights: ql[64h..64h+64] holds weights 0..64 in its low nibbles and
            // 64..128 in its high ones; qh[32h..32h+32] holds two bits for each of them,
            // bit pairs 0/1 for weights l, 2/3 for l+32, 4/5 for l+64, 6/7 for l+96.
            let ql = _mm512_loadu_si512(x.add(64 * h) as *const _);
            let qh = _mm256_loadu_si256(x.add(128 + 32 * h) as *const __m256i);
            let qh = join(qh, _mm256_srli_epi16::<2>(qh));
            let q_lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(qh, _mm512_set1_epi8(0x03))),
            );
            let q_hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh, _mm512_set1_epi8(0x30)),
            );
            let yq = y.add(Q8K_QS + 128 * h);
            for (c, q) in [q_lo, q_hi].into_iter().enumerate() {
                let yv = _mm512_loadu_si512(yq.add(64 * c) as *const _);
                let sc = _mm512_permutexvar_epi16(idx(&SUB16[2 * h + c]), scales);
                let p = _mm512_madd_epi16(sc, _mm512_maddubs_epi16(q, yv));
                sumi = _mm512_add_epi32(sumi, p);
            }
        }
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}
