//! The micro-kernel with AVX-512 VNNI: one `vpdpbusd` per (row, token, 64 values), and
//! one scaling per (row, token, segment), [`MR`] rows × [`NR`] tokens at a time.

use std::arch::x86_64::*;

use super::{Micro, CHUNK, LANES, MR, NR};

/// See [`super::reference::micro`], for weights without mins or with their mins left to
/// [`super::avx2::sub_mins`] (`has_min` is false); chosen only when the CPU has AVX-512
/// F/BW/VL + VNNI.
pub(super) fn micro(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    assert!(!has_min, "the VNNI kernel leaves the mins to sub_mins");
    m.check(has_min, out, stride);
    // SAFETY: `MicroKernel::for_level` hands this kernel out only after detecting
    // avx512f/bw/vl and avx512vnni; the slices cover the layout (checked above).
    unsafe { micro_vnni(m, out, stride) }
}

/// Pointers to the current [`NR`] tokens' activations.
struct Tokens {
    a: [*const u8; NR],
    scale: [*const f32; NR],
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_vnni(m: &Micro<'_>, out: &mut [f32], stride: usize) {
    let rows = &m.a;
    for t0 in (0..rows.n_tokens).step_by(NR) {
        // SAFETY: `check` verified that every token's row, at its stride, holds the
        // layout.
        let tokens = unsafe {
            Tokens {
                a: std::array::from_fn(|j| rows.a.as_ptr().add((t0 + j) * rows.a_stride)),
                scale: std::array::from_fn(|j| {
                    rows.scale.as_ptr().add((t0 + j) * rows.lane_stride)
                }),
            }
        };
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        // SAFETY: segment s covers values base..base + chunks·64 and lanes
        // 16s..16s + 16, within every row's slices (checked).
        unsafe {
            let mut base = 0;
            for (s, runs) in m.segs.iter().enumerate() {
                let chunks = m.segs.chunks(runs);
                match chunks {
                    8 => segment::<8>(m, &tokens, base, s, &mut acc),
                    4 => segment::<4>(m, &tokens, base, s, &mut acc),
                    2 => segment::<2>(m, &tokens, base, s, &mut acc),
                    1 => segment::<1>(m, &tokens, base, s, &mut acc),
                    c => unreachable!("segments of {c} chunks"),
                }
                base += chunks * CHUNK;
            }
        }
        let sums = reduce16(&acc);
        for (i, sums) in sums[..MR * NR].chunks_exact(NR).enumerate() {
            for (j, &s) in sums.iter().enumerate() {
                out[(t0 + j) * stride + i] += s;
            }
        }
    }
}

/// The 16 lane sums of `acc[i][j]`, at `4i + j`: a transposing tree (45 operations)
/// instead of 16 separate reductions (8 each).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(acc: &[[__m512; NR]; MR]) -> [f32; 16] {
    const { assert!(MR * NR <= 16) };
    let v: [__m512; 16] = std::array::from_fn(|k| {
        if k < MR * NR {
            acc[k / NR][k % NR]
        } else {
            _mm512_setzero_ps()
        }
    });
    let c: [__m512; 4] = std::array::from_fn(|g| {
        quad(
            pair(v[4 * g], v[4 * g + 1]),
            pair(v[4 * g + 2], v[4 * g + 3]),
        )
    });
    let total = fold(fold(c[0], c[1]), fold(c[2], c[3]));
    let mut out = [0f32; 16];
    // SAFETY: `out` holds 16 floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), total) };
    out
}

/// Per 128-bit block: `[a0+a2, b0+b2, a1+a3, b1+b3]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
}

/// From two [`pair`]s of vectors a, b and c, d: per 128-bit block, that block's sums of
/// `[a, b, c, d]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn quad(ab: __m512, cd: __m512) -> __m512 {
    let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
    _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
    )
}

/// `[x0+x1, x2+x3, y0+y1, y2+y3]` in 128-bit blocks.
#[inline]
#[target_feature(enable = "avx512f")]
fn fold(x: __m512, y: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
    )
}

/// Adds one segment of `C` chunks, starting at value `base`, lanes `16s..`, to `acc`.
///
/// # Safety
/// The CPU has AVX-512 VNNI, and the segment is within every row's data.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn segment<const C: usize>(
    m: &Micro<'_>,
    t: &Tokens,
    base: usize,
    s: usize,
    acc: &mut [[__m512; NR]; MR],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut isum = [[_mm512_setzero_si512(); NR]; MR];
        for (w, isum) in m.w.iter().zip(isum.iter_mut()) {
            let corr = _mm512_loadu_si512(w.corr.as_ptr().add(s * LANES).cast());
            *isum = [corr; NR];
        }
        for c in 0..C {
            let at = base + c * CHUNK;
            let a: [__m512i; NR] =
                std::array::from_fn(|j| _mm512_loadu_si512(t.a[j].add(at).cast()));
            for (w, isum) in m.w.iter().zip(isum.iter_mut()) {
                let v = _mm512_loadu_si512(w.v.as_ptr().add(at).cast());
                for j in 0..NR {
                    isum[j] = _mm512_dpbusd_epi32(isum[j], a[j], v);
                }
            }
        }
        for j in 0..NR {
            let a_scale = _mm512_loadu_ps(t.scale[j].add(s * LANES));
            for (i, w) in m.w.iter().enumerate() {
                let scale =
                    _mm512_mul_ps(_mm512_loadu_ps(w.scale.as_ptr().add(s * LANES)), a_scale);
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), scale, acc[i][j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce16_sums_each_vector() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let vals: Vec<f32> = (0..256).map(|i| (i * 7 % 23) as f32).collect();
        // SAFETY: avx512f detected above.
        let got = unsafe {
            let acc: [[__m512; NR]; MR] = std::array::from_fn(|i| {
                std::array::from_fn(|j| _mm512_loadu_ps(vals[(i * NR + j) * 16..].as_ptr()))
            });
            reduce16(&acc)
        };
        for k in 0..MR * NR {
            let want: f32 = vals[k * 16..k * 16 + 16].iter().sum();
            assert_eq!(got[k], want, "vector {k}: {got:?}");
        }
    }
}
