//! The micro-kernel with AVX2 (no VNNI): byte products through `vpmaddubsw` (unsigned ×
//! signed bytes, pairs summed into saturating i16) and `vpmaddwd` against ones (i16 pairs
//! into the i32 lanes of 4 products that the layout defines), [`ROWS`] rows × [`TOKENS`]
//! tokens at a time, one 256-bit half of a chunk (8 lanes) at a time.
//!
//! Exactness: `vpmaddubsw` saturates at ±32767, so each path keeps its i16 sums below it
//! and every i32 lane receives exactly the integer sum the reference computes.
//! - Narrow formats (weights `|v| ≤ 64`: the 4-, 5- and 6-bit formats) multiply the
//!   stored activations `a + 128 ≤ 255` by the weights directly, as VNNI does, with the
//!   lane starting at `corr = -128 · Σv`: a pair is at most `2 · 255 · 64 = 32640`. With
//!   `|v| ≤ 32` two pairs of consecutive chunks still fit in i16 (`2 · 2 · 255 · 32 =
//!   32640`), and with `|v| ≤ 16` four (`4 · 2 · 255 · 16 = 32640` for Q5_0's -16..15,
//!   less for the 4-bit formats): those chunks are added as i16 (`vpaddw`) and
//!   widened once, which saves `vpmaddwd`s, the multiply ports' bottleneck.
//! - Wide formats (Q8_0, IQ4_NL, IQ4_XS: `|v|` up to 128) take ggml's sign trick: the signed
//!   activation `a` (every ggml activation quantizer keeps it in -127..=127) gets the sign
//!   of `v`, and `|v|` (128 read as an unsigned byte is right) is the unsigned operand:
//!   `|v| · (±a)` pairs are at most `2 · 128 · 127 = 32512`. The offset is then never
//!   added, so the lane starts at zero instead of `corr`.
//! - 4-bit formats with mins (Q4_1, Q4_K: values `0..=15`, never negative) come with a
//!   panel of signed `a` ([`super::MicroKernel::unsigned_max`]): the weights are the
//!   unsigned operand and there is no `corr`. A pair is then at most
//!   `2 · 15 · 127 = 3810`, so a whole segment of 8 chunks adds in i16 (`30480`) and is
//!   widened once.
//!
//! The f32 side is the reference's: per (row, token, segment) each lane's sum is scaled by
//! `weight scale · activation scale` into a per-lane accumulator; the lanes are added at
//! the end, in another order than the reference's. The mins' term of the formats that
//! have them is not here: [`sub_mins`] subtracts it for a whole tile
//! ([`super::MicroKernel::mins`]).

use std::arch::x86_64::*;

use super::{check_mins, Micro, CHUNK, LANES, MR, NR, TILE_ROWS};

/// Weight rows and tokens per inner pass of [`micro_avx2`]: 2 × 2 i32 sums and as many
/// i16 pair sums, the 2 rows' weights and the 2 tokens' activations (12 registers) fit
/// AVX2's 16 registers, where 2 × 4 would spill (measured: a third of the multiply
/// ports' rate). Paths with no i32 sums to keep take 4 × 2 ([`whole_segments`]).
const ROWS: usize = 2;
const TOKENS: usize = 2;

/// See [`super::reference::micro`], for weights without mins or with their mins left to
/// [`sub_mins`] (`has_min` is false); chosen only when the CPU has AVX2 and FMA.
pub(super) fn micro(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    assert!(!has_min, "the AVX2 kernel leaves the mins to sub_mins");
    m.check(has_min, out, stride);
    // SAFETY: `MicroKernel::for_level` hands this kernel out only for the AVX2 level,
    // which `Level::is_supported` grants only with avx2 and fma detected; the slices
    // cover the layout (checked above).
    unsafe {
        match (m.v_max, m.a.signed) {
            (0..=15, true) => whole_segments(m, out, stride),
            (v_max, true) => unreachable!("a signed panel for weights up to {v_max}"),
            (0..=16, false) => micro_avx2::<4, NARROW>(m, out, stride),
            (17..=32, false) => micro_avx2::<2, NARROW>(m, out, stride),
            (33..=64, false) => micro_avx2::<1, NARROW>(m, out, stride),
            (_, false) => micro_avx2::<1, WIDE>(m, out, stride),
        }
    }
}

/// How the byte products are formed (see the module doc): the panel's `a + 128` times
/// the weights;
const NARROW: u8 = 0;
/// ggml's sign trick on the panel's values flipped back to `a`;
const WIDE: u8 = 1;
/// the weights (never negative) times a signed panel's `a`.
const UNSIGNED_W: u8 = 2;

/// Pointers to the current [`TOKENS`] tokens' activations.
struct Tokens {
    a: [*const u8; TOKENS],
    scale: [*const f32; TOKENS],
}

impl Tokens {
    /// Tokens `t0..t0 + TOKENS` of `rows`.
    ///
    /// # Safety
    /// Those tokens' rows lie within `rows`' slices.
    unsafe fn at(rows: &super::ActRows<'_>, t0: usize) -> Tokens {
        // SAFETY: the caller's contract.
        unsafe {
            Tokens {
                a: std::array::from_fn(|j| rows.a.as_ptr().add((t0 + j) * rows.a_stride)),
                scale: std::array::from_fn(|j| {
                    rows.scale.as_ptr().add((t0 + j) * rows.lane_stride)
                }),
            }
        }
    }
}

/// Adds lane `r` of `sums` to `out[r]`, for a token's [`MR`] rows.
#[inline]
#[target_feature(enable = "avx2")]
fn add_rows(out: &mut [f32], sums: __m128) {
    let mut s = [0f32; MR];
    // SAFETY: `s` holds 4 floats.
    unsafe { _mm_storeu_ps(s.as_mut_ptr(), sums) };
    for (o, s) in out[..MR].iter_mut().zip(s) {
        *o += s;
    }
}

/// Per (row, token): the f32 accumulators of a chunk's two halves (lanes 0..8, 8..16).
type Acc = [[[__m256; 2]; TOKENS]; ROWS];

/// `K`: chunks whose i16 pair sums are added before widening (see the module doc);
/// `PATH`: how the byte products are formed.
#[target_feature(enable = "avx2,fma")]
unsafe fn micro_avx2<const K: usize, const PATH: u8>(
    m: &Micro<'_>,
    out: &mut [f32],
    stride: usize,
) {
    const { assert!(MR.is_multiple_of(ROWS) && NR.is_multiple_of(TOKENS)) };
    let rows = &m.a;
    for t0 in (0..rows.n_tokens).step_by(TOKENS) {
        // SAFETY: `check` verified that every token's row, at its stride, holds the
        // layout (the token count is a multiple of NR, so of TOKENS).
        let tokens = unsafe { Tokens::at(rows, t0) };
        let mut acc = [[[[_mm256_setzero_ps(); 2]; TOKENS]; ROWS]; MR / ROWS];
        for (p, acc) in acc.iter_mut().enumerate() {
            let w = [&m.w[ROWS * p], &m.w[ROWS * p + 1]];
            // SAFETY: segment s covers values base..base + chunks·64 and lanes
            // 16s..16s + 16, within every row's slices (checked).
            unsafe {
                let mut base = 0;
                for (s, runs) in m.segs.iter().enumerate() {
                    let chunks = m.segs.chunks(runs);
                    for half in 0..2 {
                        let at = (base + half * CHUNK / 2, s * LANES + half * LANES / 2);
                        match chunks {
                            8 => segment::<8, K, PATH>(w, &tokens, at, half, acc),
                            4 => segment::<4, K, PATH>(w, &tokens, at, half, acc),
                            2 => segment::<2, K, PATH>(w, &tokens, at, half, acc),
                            1 => segment::<1, K, PATH>(w, &tokens, at, half, acc),
                            c => unreachable!("segments of {c} chunks"),
                        }
                    }
                    base += chunks * CHUNK;
                }
            }
        }
        // Each token's MR rows: 4 vectors (two row pairs) summed at once.
        for j in 0..TOKENS {
            let sums = sum4(std::array::from_fn(|r| {
                let acc = &acc[r / ROWS][r % ROWS][j];
                _mm256_add_ps(acc[0], acc[1])
            }));
            add_rows(&mut out[(t0 + j) * stride..][..MR], sums);
        }
    }
}

/// [`micro_avx2`] for the path whose whole segments add in i16 (`K` = 8, the most
/// chunks a segment has), which keeps no i32 sums: all [`MR`] rows × [`TOKENS`] tokens
/// per pass, 8 pair sums, the 4 rows' weights and the 2 tokens' activations (15
/// registers). A chunk is then 6 loads for 8 byte products (4 for 4 in [`ROWS`] ×
/// [`TOKENS`]), and each call reads the activations once, not once per row pair.
/// Measured at the AVX2 level on Emerald Rapids: Q4_K `gemm_speed` +3 %, and the
/// R1-Distill-Qwen-1.5B shape's pp512 +6 % (one thread).
#[target_feature(enable = "avx2,fma")]
unsafe fn whole_segments(m: &Micro<'_>, out: &mut [f32], stride: usize) {
    const { assert!(TOKENS == 2 && NR.is_multiple_of(TOKENS)) };
    let rows = &m.a;
    for t0 in (0..rows.n_tokens).step_by(TOKENS) {
        // SAFETY: `check` verified that every token's row, at its stride, holds the
        // layout (the token count is a multiple of NR, so of TOKENS).
        let tokens = unsafe { Tokens::at(rows, t0) };
        // Per (row, token) one f32 accumulator: both halves of every segment add into it.
        let mut acc = [[_mm256_setzero_ps(); TOKENS]; MR];
        let w: [&super::WeightRow<'_>; MR] = std::array::from_fn(|i| &m.w[i]);
        // SAFETY: segment s covers values base..base + chunks·64 and lanes
        // 16s..16s + 16, within every row's slices (checked).
        unsafe {
            let mut base = 0;
            for (s, runs) in m.segs.iter().enumerate() {
                let chunks = m.segs.chunks(runs);
                for half in 0..2 {
                    let at = (base + half * CHUNK / 2, s * LANES + half * LANES / 2);
                    whole_segment(w, &tokens, at, chunks, &mut acc);
                }
                base += chunks * CHUNK;
            }
        }
        for j in 0..TOKENS {
            add_rows(
                &mut out[(t0 + j) * stride..][..MR],
                sum4(acc.map(|acc| acc[j])),
            );
        }
    }
}

/// Adds one half (8 lanes) of a segment of `chunks` chunks, summed whole in i16, to
/// `acc`: values from `at.0` every [`CHUNK`], lanes from `at.1`.
///
/// # Safety
/// The CPU has AVX2 and FMA, and the segment is within every row's data.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn whole_segment(
    w: [&super::WeightRow<'_>; MR],
    t: &Tokens,
    at: (usize, usize),
    chunks: usize,
    acc: &mut [[__m256; TOKENS]; MR],
) {
    let (v0, lane0) = at;
    // SAFETY: the caller's contract.
    unsafe {
        let pairs = chunk_sums(
            [t.a[0].add(v0), t.a[1].add(v0)],
            std::array::from_fn(|i| w[i].v.as_ptr().add(v0).cast()),
            chunks,
        );
        let ones = _mm256_set1_epi16(1);
        for j in 0..TOKENS {
            let a_scale = _mm256_loadu_ps(t.scale[j].add(lane0));
            for (i, w) in w.iter().enumerate() {
                let scale = _mm256_mul_ps(_mm256_loadu_ps(w.scale.as_ptr().add(lane0)), a_scale);
                let isum = _mm256_madd_epi16(pairs[i][j], ones);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[i][j]);
            }
        }
    }
}

/// Per (row, token), the i16 pair sums `maddubs(w, a)` of `chunks` chunks (one
/// [`CHUNK`] apart from the pointers), as [`whole_segment`] wants them.
///
/// Assembly, not intrinsics: LLVM turns the loop's 6 streams into 6 pointers, each
/// bumped by its own scalar add, and on x86 the scalar adds share ports 0, 1 and 5 with
/// the vector ones. Here one index walks all 6, so a chunk is 6 loads, 8 byte products,
/// 8 adds and one add and branch (Q4_K `gemm_speed` +1 % over the intrinsics). Fully
/// unrolled intrinsics were worse: LLVM regrouped the loads by (row, token) and
/// spilled.
///
/// # Safety
/// The CPU has AVX2, `chunks ≥ 1`, and each pointer is readable for 32 bytes at every
/// multiple of [`CHUNK`] below `chunks · CHUNK`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn chunk_sums(a: [*const u8; 2], w: [*const u8; MR], chunks: usize) -> [[__m256i; 2]; MR] {
    const { assert!(MR == 4 && CHUNK == 64) };
    let (p00, p01, p10, p11, p20, p21, p30, p31);
    // SAFETY: the caller's contract; the block reads memory only at those addresses.
    unsafe {
        std::arch::asm!(
            // The first chunk writes the sums, the others add to them.
            "vmovdqu {a0}, ymmword ptr [{pa0}]",
            "vmovdqu {a1}, ymmword ptr [{pa1}]",
            "vmovdqu {v}, ymmword ptr [{pw0}]",
            "vpmaddubsw {p00}, {v}, {a0}",
            "vpmaddubsw {p01}, {v}, {a1}",
            "vmovdqu {v}, ymmword ptr [{pw1}]",
            "vpmaddubsw {p10}, {v}, {a0}",
            "vpmaddubsw {p11}, {v}, {a1}",
            "vmovdqu {v}, ymmword ptr [{pw2}]",
            "vpmaddubsw {p20}, {v}, {a0}",
            "vpmaddubsw {p21}, {v}, {a1}",
            "vmovdqu {v}, ymmword ptr [{pw3}]",
            "vpmaddubsw {p30}, {v}, {a0}",
            "vpmaddubsw {p31}, {v}, {a1}",
            "mov {k}, 64",
            "cmp {k}, {end}",
            "jae 3f",
            "2:",
            "vmovdqu {a0}, ymmword ptr [{pa0} + {k}]",
            "vmovdqu {a1}, ymmword ptr [{pa1} + {k}]",
            "vmovdqu {v}, ymmword ptr [{pw0} + {k}]",
            "vpmaddubsw {t}, {v}, {a0}",
            "vpaddw {p00}, {p00}, {t}",
            "vpmaddubsw {t}, {v}, {a1}",
            "vpaddw {p01}, {p01}, {t}",
            "vmovdqu {v}, ymmword ptr [{pw1} + {k}]",
            "vpmaddubsw {t}, {v}, {a0}",
            "vpaddw {p10}, {p10}, {t}",
            "vpmaddubsw {t}, {v}, {a1}",
            "vpaddw {p11}, {p11}, {t}",
            "vmovdqu {v}, ymmword ptr [{pw2} + {k}]",
            "vpmaddubsw {t}, {v}, {a0}",
            "vpaddw {p20}, {p20}, {t}",
            "vpmaddubsw {t}, {v}, {a1}",
            "vpaddw {p21}, {p21}, {t}",
            "vmovdqu {v}, ymmword ptr [{pw3} + {k}]",
            "vpmaddubsw {t}, {v}, {a0}",
            "vpaddw {p30}, {p30}, {t}",
            "vpmaddubsw {t}, {v}, {a1}",
            "vpaddw {p31}, {p31}, {t}",
            "add {k}, 64",
            "cmp {k}, {end}",
            "jb 2b",
            "3:",
            pa0 = in(reg) a[0],
            pa1 = in(reg) a[1],
            pw0 = in(reg) w[0],
            pw1 = in(reg) w[1],
            pw2 = in(reg) w[2],
            pw3 = in(reg) w[3],
            end = in(reg) chunks * CHUNK,
            k = out(reg) _,
            a0 = out(ymm_reg) _,
            a1 = out(ymm_reg) _,
            v = out(ymm_reg) _,
            t = out(ymm_reg) _,
            p00 = out(ymm_reg) p00,
            p01 = out(ymm_reg) p01,
            p10 = out(ymm_reg) p10,
            p11 = out(ymm_reg) p11,
            p20 = out(ymm_reg) p20,
            p21 = out(ymm_reg) p21,
            p30 = out(ymm_reg) p30,
            p31 = out(ymm_reg) p31,
            options(nostack, readonly, pure),
        );
    }
    [[p00, p01], [p10, p11], [p20, p21], [p30, p31]]
}

/// The totals of 4 vectors, lane `r` for `v[r]`.
#[inline]
#[target_feature(enable = "avx2")]
fn sum4(v: [__m256; MR]) -> __m128 {
    const { assert!(MR == 4) };
    let ab = _mm256_hadd_ps(v[0], v[1]);
    let cd = _mm256_hadd_ps(v[2], v[3]);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// Adds one half (8 lanes) of a segment of `C` chunks to `acc[..][..][half]`: values from
/// `at.0` every [`CHUNK`], lanes from `at.1`.
///
/// # Safety
/// The CPU has AVX2 and FMA, and the segment is within every row's data.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn segment<const C: usize, const K: usize, const PATH: u8>(
    w: [&super::WeightRow<'_>; ROWS],
    t: &Tokens,
    at: (usize, usize),
    half: usize,
    acc: &mut Acc,
) {
    let (v0, lane0) = at;
    // Chunks added as i16 before widening: K, or the whole segment when shorter.
    let group = K.min(C);
    // SAFETY: the caller's contract.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut isum = [[_mm256_setzero_si256(); TOKENS]; ROWS];
        if PATH == NARROW {
            for (w, isum) in w.iter().zip(isum.iter_mut()) {
                *isum = [_mm256_loadu_si256(w.corr.as_ptr().add(lane0).cast()); TOKENS];
            }
        }
        // Counted loops with constant trips (not `step_by`), so that LLVM unrolls them and
        // keeps the sums in registers rather than in arrays indexed at run time.
        for g in 0..C / group {
            let mut pairs = [[_mm256_setzero_si256(); TOKENS]; ROWS];
            for gc in 0..group {
                let at = v0 + (g * group + gc) * CHUNK;
                let a: [__m256i; TOKENS] = std::array::from_fn(|j| {
                    let a = _mm256_loadu_si256(t.a[j].add(at).cast());
                    if PATH == WIDE {
                        _mm256_xor_si256(a, _mm256_set1_epi8(-128))
                    } else {
                        a
                    }
                });
                for (w, pairs) in w.iter().zip(pairs.iter_mut()) {
                    let v = _mm256_loadu_si256(w.v.as_ptr().add(at).cast());
                    for j in 0..TOKENS {
                        let p = match PATH {
                            WIDE => {
                                _mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(a[j], v))
                            }
                            UNSIGNED_W => _mm256_maddubs_epi16(v, a[j]),
                            _ => _mm256_maddubs_epi16(a[j], v),
                        };
                        pairs[j] = if gc == 0 {
                            p
                        } else {
                            _mm256_add_epi16(pairs[j], p)
                        };
                    }
                }
            }
            for (isum, pairs) in isum.iter_mut().zip(&pairs) {
                for j in 0..TOKENS {
                    isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(pairs[j], ones));
                }
            }
        }
        for j in 0..TOKENS {
            let a_scale = _mm256_loadu_ps(t.scale[j].add(lane0));
            for (i, w) in w.iter().enumerate() {
                let acc = &mut acc[i][j][half];
                let scale = _mm256_mul_ps(_mm256_loadu_ps(w.scale.as_ptr().add(lane0)), a_scale);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), scale, *acc);
            }
        }
    }
}

/// See [`super::MinsFn`]; chosen only when the CPU has AVX2 and FMA (the AVX-512 level
/// uses it too). Four tokens at a
/// time, each token's 16 rows in two registers: per lane, two loads of mins and four
/// broadcasts feed 8 FMAs, and the sums go straight into `out` with no horizontal adds.
pub(super) fn sub_mins(
    min_t: &[f32],
    sum: &[f32],
    lane_stride: usize,
    n_tokens: usize,
    lanes: usize,
    out: &mut [f32],
) {
    check_mins(min_t, sum, lane_stride, n_tokens, lanes, out);
    // SAFETY: `MicroKernel::for_level` hands this out only for the AVX2 and AVX-512
    // levels, both granted only with avx2 and fma detected; `check_mins` verified the
    // reads and writes below.
    unsafe { sub_mins_avx2(min_t, sum, lane_stride, n_tokens, lanes, out) }
}

/// # Safety
/// AVX2 and FMA, and the shapes [`check_mins`]ed.
#[target_feature(enable = "avx2,fma")]
unsafe fn sub_mins_avx2(
    min_t: &[f32],
    sum: &[f32],
    lane_stride: usize,
    n_tokens: usize,
    lanes: usize,
    out: &mut [f32],
) {
    const T: usize = 4;
    const { assert!(NR.is_multiple_of(T) && TILE_ROWS == 16) };
    for t0 in (0..n_tokens).step_by(T) {
        // SAFETY: the caller's contract; t0 + T <= n_tokens (a multiple of NR).
        unsafe {
            let o = out.as_mut_ptr().add(t0 * TILE_ROWS);
            let s = sum.as_ptr().add(t0 * lane_stride);
            let mut acc: [[__m256; 2]; T] = std::array::from_fn(|j| {
                let o = o.add(j * TILE_ROWS);
                [_mm256_loadu_ps(o), _mm256_loadu_ps(o.add(8))]
            });
            for l in 0..lanes {
                let m = min_t.as_ptr().add(l * TILE_ROWS);
                let m = [_mm256_loadu_ps(m), _mm256_loadu_ps(m.add(8))];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let s = _mm256_broadcast_ss(&*s.add(j * lane_stride + l));
                    acc[0] = _mm256_fnmadd_ps(m[0], s, acc[0]);
                    acc[1] = _mm256_fnmadd_ps(m[1], s, acc[1]);
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                let o = o.add(j * TILE_ROWS);
                _mm256_storeu_ps(o, acc[0]);
                _mm256_storeu_ps(o.add(8), acc[1]);
            }
        }
    }
}
