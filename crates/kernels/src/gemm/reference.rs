//! The micro-kernel in plain Rust: the definition every SIMD kernel is tested against.

#[cfg(test)]
use super::{check_mins, TILE_ROWS};
use super::{Micro, CHUNK, LANE, LANES, MR};

/// Per (row, token) and segment: each lane's exact integer sum `corr + Σ (a + 128) · v`
/// (or `Σ a · v` from a signed panel) over the segment's chunks is scaled by
/// `weight scale · activation scale` and added into that lane's f32 accumulator (then
/// the weight min times `scale · Σa` subtracted); the 16 lanes are added at the end.
pub(super) fn micro(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    m.check(has_min, out, stride);
    let (segs, rows) = (m.segs, &m.a);
    for t in 0..rows.n_tokens {
        let out = &mut out[t * stride..][..MR];
        let a = &rows.a[t * rows.a_stride..];
        let a_scale = &rows.scale[t * rows.lane_stride..];
        let a_sum = rows.sum.get(t * rows.lane_stride..).unwrap_or(&[]);
        for (w, out) in m.w.iter().zip(out.iter_mut()) {
            let mut acc = [0f32; LANES];
            let mut base = 0;
            for (s, runs) in segs.iter().enumerate() {
                let chunks = segs.chunks(runs);
                for (l, acc) in acc.iter_mut().enumerate() {
                    let at = s * LANES + l;
                    let mut isum = if rows.signed { 0 } else { w.corr[at] };
                    for c in 0..chunks {
                        let k = base + c * CHUNK + l * LANE;
                        for (&a, &v) in a[k..k + LANE].iter().zip(&w.v[k..k + LANE]) {
                            let a = if rows.signed {
                                a as i8 as i32
                            } else {
                                a as i32
                            };
                            isum += a * v as i32;
                        }
                    }
                    let scale = w.scale[at] * a_scale[at];
                    *acc = (isum as f32).mul_add(scale, *acc);
                    if has_min {
                        *acc = (-w.min[at]).mul_add(a_sum[at], *acc);
                    }
                }
                base += chunks * CHUNK;
            }
            *out += acc.iter().sum::<f32>();
        }
    }
}

/// The [`super::MinsFn`] every SIMD one is tested against: per (token, row), the lanes'
/// products added in order and subtracted once.
#[cfg(test)]
pub(super) fn mins(
    min_t: &[f32],
    sum: &[f32],
    lane_stride: usize,
    n_tokens: usize,
    lanes: usize,
    out: &mut [f32],
) {
    check_mins(min_t, sum, lane_stride, n_tokens, lanes, out);
    for t in 0..n_tokens {
        let sum = &sum[t * lane_stride..][..lanes];
        for (i, out) in out[t * TILE_ROWS..][..TILE_ROWS].iter_mut().enumerate() {
            let dot: f32 = sum
                .iter()
                .enumerate()
                .map(|(l, &s)| min_t[l * TILE_ROWS + i] * s)
                .sum();
            *out -= dot;
        }
    }
}
