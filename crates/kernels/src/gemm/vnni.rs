//! The micro-kernel with AVX-512 VNNI: one `vpdpbusd` per (row, token, 64 values), and
//! one scaling per (row, token, segment), [`MR`] rows × [`NR`] tokens at a time.

use std::arch::x86_64::*;

use super::{Micro, CHUNK, LANES, MR, NR};

/// See [`super::reference::micro`]; chosen only when the CPU has AVX-512 F/BW/VL + VNNI.
pub(super) fn micro(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    m.check(has_min, out, stride);
    // SAFETY: `MicroKernel::for_level` hands this kernel out only after detecting
    // avx512f/bw/vl and avx512vnni; the slices cover the layout (checked above).
    unsafe {
        match (m.segs.group_chunks(), has_min) {
            (8, false) => micro_vnni::<8, false>(m, out, stride),
            (8, true) => micro_vnni::<8, true>(m, out, stride),
            (4, false) => micro_vnni::<4, false>(m, out, stride),
            (4, true) => micro_vnni::<4, true>(m, out, stride),
            (g, _) => unreachable!("groups of {g} chunks"),
        }
    }
}

/// Pointers to the current [`NR`] tokens' activations.
struct Tokens {
    a: [*const u8; NR],
    scale: [*const f32; NR],
    sum: [*const f32; NR],
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_vnni<const G: usize, const MIN: bool>(
    m: &Micro<'_>,
    out: &mut [f32],
    stride: usize,
) {
    let rows = &m.a;
    for t0 in (0..rows.n_tokens).step_by(NR) {
        // SAFETY: `check` verified that every token's row, at its stride, holds the
        // layout; `sum` is only offset (and read) when the weights have mins.
        let tokens = unsafe {
            Tokens {
                a: std::array::from_fn(|j| rows.a.as_ptr().add((t0 + j) * rows.a_stride)),
                scale: std::array::from_fn(|j| {
                    rows.scale.as_ptr().add((t0 + j) * rows.lane_stride)
                }),
                sum: std::array::from_fn(|j| {
                    if MIN {
                        rows.sum.as_ptr().add((t0 + j) * rows.lane_stride)
                    } else {
                        rows.sum.as_ptr()
                    }
                }),
            }
        };
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        // SAFETY: segment s covers values base..base + chunks·64 and lanes
        // 16s..16s + 16, within every row's slices (checked).
        unsafe {
            let mut base = 0;
            for s in 0..m.segs.n_groups {
                segment::<G, MIN>(m, &tokens, base, s, &mut acc);
                base += G * CHUNK;
            }
            for s in m.segs.n_groups..m.segs.n_groups + m.segs.n_tail {
                segment::<1, MIN>(m, &tokens, base, s, &mut acc);
                base += CHUNK;
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                out[(t0 + j) * stride + i] += _mm512_reduce_add_ps(*acc);
            }
        }
    }
}

/// Adds one segment of `C` chunks, starting at value `base`, lanes `16s..`, to `acc`.
///
/// # Safety
/// The CPU has AVX-512 VNNI, and the segment is within every row's data.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn segment<const C: usize, const MIN: bool>(
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
            let a_sum = if MIN {
                _mm512_loadu_ps(t.sum[j].add(s * LANES))
            } else {
                _mm512_setzero_ps()
            };
            for (i, w) in m.w.iter().enumerate() {
                let scale =
                    _mm512_mul_ps(_mm512_loadu_ps(w.scale.as_ptr().add(s * LANES)), a_scale);
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), scale, acc[i][j]);
                if MIN {
                    let min = _mm512_loadu_ps(w.min.as_ptr().add(s * LANES));
                    acc[i][j] = _mm512_fnmadd_ps(min, a_sum, acc[i][j]);
                }
            }
        }
    }
}
