//! Weights of any supported format, rewritten as small integers with a scale and a min
//! per lane of [`LANE`] values: `w = scale · v - min`.
//!
//! Every format this module knows decodes to that shape exactly (the products below are
//! the ones ggml's dequantizers compute, in the same order, so `scale · v - min` in f32
//! is bit-equal to `dequantize_row`), which lets one integer micro-kernel serve them all:
//! the format-specific work is done once per weight and call, not once per token.

use bytemuck::Pod;

use super::LANE;
use crate::quant::blocks::{
    f16_le, BlockIQ4NL, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, KVALUES_IQ4NL,
};
use crate::quant::kquants::get_scale_min_k4;
use crate::quant::{q5_0::unpack5, q5_k, q6_k, TensorType, QK_K};

/// The integer rows of a stretch of weights: `v` holds the values, `scale` and `min` one
/// entry per lane of [`LANE`] values.
pub(crate) struct Unpacked<'a> {
    pub(crate) v: &'a mut [i8],
    pub(crate) scale: &'a mut [f32],
    pub(crate) min: &'a mut [f32],
}

/// Whether [`unpack`] handles `ty`.
pub(crate) fn supports(ty: TensorType) -> bool {
    use TensorType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K | IQ4_NL
    )
}

/// Whether `ty`'s weights have a non-zero min (`w = scale · v - min`), which costs the
/// micro-kernel one more multiply-add per lane.
pub(crate) fn has_min(ty: TensorType) -> bool {
    use TensorType::*;
    matches!(ty, Q4_1 | Q5_1 | Q4_K | Q5_K)
}

/// Values that share one scale and one min in every block of `ty`: 16 for Q6_K, 32 for
/// the others [`supports`] accepts. The micro-kernels sum each such run in integers
/// before scaling it.
pub(crate) fn scale_run(ty: TensorType) -> usize {
    match ty {
        TensorType::Q6_K => 16,
        _ => 32,
    }
}

/// Rewrites `src`, whole blocks of `ty` holding `out.v.len()` values, into `out`.
///
/// # Panics
/// When `ty` is not [`supports`]ed or the lengths disagree (callers size them from the
/// same block counts).
pub(crate) fn unpack(ty: TensorType, src: &[u8], out: Unpacked<'_>) {
    let n = out.v.len();
    assert!(out.scale.len() == n / LANE && out.min.len() == n / LANE);
    use TensorType as T;
    match ty {
        T::Q4_0 => blocks::<BlockQ4_0>(src, out, 32, |b, v, s, m| {
            let d = f16_le(b.d);
            for (j, &q) in b.qs.iter().enumerate() {
                v[j] = (q & 0xF) as i8 - 8;
                v[j + 16] = (q >> 4) as i8 - 8;
            }
            s.fill(d);
            m.fill(0.0);
        }),
        T::Q4_1 => blocks::<BlockQ4_1>(src, out, 32, |b, v, s, m| {
            // ggml: `q * d + m`, so the min is `-m` (the sign flip is exact).
            for (j, &q) in b.qs.iter().enumerate() {
                v[j] = (q & 0xF) as i8;
                v[j + 16] = (q >> 4) as i8;
            }
            s.fill(f16_le(b.d));
            m.fill(-f16_le(b.m));
        }),
        T::Q5_0 => blocks::<BlockQ5_0>(src, out, 32, |b, v, s, m| {
            for (v, q) in v.iter_mut().zip(unpack5(&b.qs, b.qh)) {
                *v = q as i8 - 16;
            }
            s.fill(f16_le(b.d));
            m.fill(0.0);
        }),
        T::Q5_1 => blocks::<BlockQ5_1>(src, out, 32, |b, v, s, m| {
            for (v, q) in v.iter_mut().zip(unpack5(&b.qs, b.qh)) {
                *v = q as i8;
            }
            s.fill(f16_le(b.d));
            m.fill(-f16_le(b.m));
        }),
        T::Q8_0 => blocks::<BlockQ8_0>(src, out, 32, |b, v, s, m| {
            v.copy_from_slice(&b.qs);
            s.fill(f16_le(b.d));
            m.fill(0.0);
        }),
        T::IQ4_NL => blocks::<BlockIQ4NL>(src, out, 32, |b, v, s, m| {
            for (j, &q) in b.qs.iter().enumerate() {
                v[j] = KVALUES_IQ4NL[(q & 0xF) as usize];
                v[j + 16] = KVALUES_IQ4NL[(q >> 4) as usize];
            }
            s.fill(f16_le(b.d));
            m.fill(0.0);
        }),
        T::Q4_K => blocks::<BlockQ4K>(src, out, QK_K, |b, v, s, m| {
            let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
            for (j, q) in b.qs.chunks_exact(32).enumerate() {
                for l in 0..32 {
                    v[64 * j + l] = (q[l] & 0xF) as i8;
                    v[64 * j + 32 + l] = (q[l] >> 4) as i8;
                }
            }
            for j in 0..8 {
                let (sc, mn) = get_scale_min_k4(j, &b.scales);
                s[8 * j..8 * j + 8].fill(d * sc as f32);
                m[8 * j..8 * j + 8].fill(dmin * mn as f32);
            }
        }),
        T::Q5_K => blocks::<BlockQ5K>(src, out, QK_K, |b, v, s, m| {
            let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
            for (v, q) in v.iter_mut().zip(q5_k::unpack(b)) {
                *v = q as i8;
            }
            for j in 0..8 {
                let (sc, mn) = get_scale_min_k4(j, &b.scales);
                s[8 * j..8 * j + 8].fill(d * sc as f32);
                m[8 * j..8 * j + 8].fill(dmin * mn as f32);
            }
        }),
        T::Q6_K => blocks::<BlockQ6K>(src, out, QK_K, |b, v, s, m| {
            let d = f16_le(b.d);
            v.copy_from_slice(&q6_k::unpack(b));
            // ggml: `d * sc * q`, i.e. `(d * sc) * q`, one scale per 16 values.
            for (j, &sc) in b.scales.iter().enumerate() {
                s[4 * j..4 * j + 4].fill(d * sc as f32);
            }
            m.fill(0.0);
        }),
        _ => panic!("no integer unpacking for {ty}"),
    }
}

/// Runs `f` on every block of `src` with its slices of `out` (`per_block` values).
fn blocks<B: Pod>(
    src: &[u8],
    out: Unpacked<'_>,
    per_block: usize,
    f: impl Fn(&B, &mut [i8], &mut [f32], &mut [f32]),
) {
    let size = size_of::<B>();
    assert_eq!(src.len() / size * per_block, out.v.len(), "unpack length");
    let lanes = per_block / LANE;
    for (((b, v), s), m) in src
        .chunks_exact(size)
        .zip(out.v.chunks_exact_mut(per_block))
        .zip(out.scale.chunks_exact_mut(lanes))
        .zip(out.min.chunks_exact_mut(lanes))
    {
        // Rows of a mapped file are not aligned for `B` in general; blocks are small.
        let block: B = bytemuck::pod_read_unaligned(b);
        f(&block, v, s, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, quantize_row};

    /// `scale · v - min` must be `dequantize_row`'s value, bit for bit, for every format.
    #[test]
    fn unpacked_values_equal_dequantized() {
        use TensorType::*;
        let n = 2 * QK_K;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * (1.0 + (i % 13) as f32))
            .collect();
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL] {
            assert!(supports(ty));
            let bytes = ty.row_bytes(n as u64).unwrap() as usize;
            let mut q = vec![0u8; bytes];
            quantize_row(ty, &x, &mut q).unwrap();
            let mut want = vec![0f32; n];
            dequantize_row(ty, &q, &mut want).unwrap();
            let (mut v, mut s, mut m) = (vec![0i8; n], vec![0f32; n / 4], vec![0f32; n / 4]);
            unpack(
                ty,
                &q,
                Unpacked {
                    v: &mut v,
                    scale: &mut s,
                    min: &mut m,
                },
            );
            for i in 0..n {
                let got = s[i / 4] * v[i] as f32 - m[i / 4];
                assert_eq!(got.to_bits(), want[i].to_bits(), "{ty} value {i}");
            }
            assert_eq!(has_min(ty), m.iter().any(|&m| m != 0.0), "{ty} mins");
        }
    }
}
