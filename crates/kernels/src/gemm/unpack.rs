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
    f16_le, BlockIQ4NL, BlockIQ4XS, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8_0, KVALUES_IQ4NL,
};
use crate::quant::kquants::get_scale_min_k4;
use crate::quant::{iq4_xs, q5_0::unpack5, q5_k, q6_k, TensorType, QK_K};

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
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
    )
}

/// Whether `ty`'s weights have a non-zero min (`w = scale · v - min`), which costs the
/// micro-kernel one more multiply-add per lane.
pub(crate) fn has_min(ty: TensorType) -> bool {
    use TensorType::*;
    matches!(ty, Q4_1 | Q5_1 | Q4_K | Q5_K)
}

/// The largest `|v|` that [`unpack`] writes for `ty`: what bounds the byte products of
/// kernels whose sums saturate (AVX2's `vpmaddubsw`).
pub(crate) fn v_max(ty: TensorType) -> u32 {
    use TensorType::*;
    match ty {
        Q4_0 => 8,
        Q4_1 | Q4_K => 15,
        Q5_0 => 16,
        Q5_1 | Q5_K => 31,
        Q6_K => 32,
        // Q8_0 holds any byte; IQ4_NL's and IQ4_XS's table spans -127..=113.
        _ => 128,
    }
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
        T::IQ4_XS => blocks::<BlockIQ4XS>(src, out, QK_K, |b, v, s, m| {
            let d = f16_le(b.d);
            for (ib, q) in b.qs.chunks_exact(16).enumerate() {
                for (j, &q) in q.iter().enumerate() {
                    v[32 * ib + j] = KVALUES_IQ4NL[(q & 0xF) as usize];
                    v[32 * ib + 16 + j] = KVALUES_IQ4NL[(q >> 4) as usize];
                }
                // ggml: `dl = d * (ls - 32)`, then `dl * kvalue`.
                s[8 * ib..8 * ib + 8].fill(d * iq4_xs::sub_scale(b, ib) as f32);
            }
            m.fill(0.0);
        }),
        _ => panic!("no integer unpacking for {ty}"),
    }
}

/// One group of 16 runs, written straight into the micro-kernels' layout (lane `l` is
/// run `l`; its values `4p..4p + 4` at bytes `64p + 4l..`), with each lane's
/// `corr = -128 · Σv`, scale and min: what [`unpack`] followed by the generic layout
/// gives, bit for bit, without the per-value passes. `src` is the group's blocks.
/// Returns `false` (and writes nothing) for formats without this path.
///
/// Q4_K, Q5_0, Q6_K and Q8_0 take AVX2 where the CPU has it: on x86 the GEMM runs only at
/// the AVX2 and AVX-512 levels (the scalar level keeps the row path), and the tile is the
/// same bytes either way.
pub(crate) fn unpack_group(
    ty: TensorType,
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(
        ty,
        TensorType::Q4_K | TensorType::Q5_0 | TensorType::Q6_K | TensorType::Q8_0
    ) && std::is_x86_feature_detected!("avx2")
    {
        use super::unpack_avx2 as simd;
        // SAFETY: AVX2 was detected; the functions index every slice with bounds checks.
        unsafe {
            match ty {
                TensorType::Q4_K => simd::q4_k(src, v, corr, scale, min),
                TensorType::Q5_0 => simd::q5_0(src, v, corr, scale, min),
                TensorType::Q6_K => simd::q6_k(src, v, corr, scale, min),
                _ => simd::q8_0(src, v, corr, scale, min),
            }
        }
        return true;
    }
    unpack_group_scalar(ty, src, v, corr, scale, min)
}

/// [`unpack_group`] one 4-byte word at a time: every CPU's path, and the reference of the
/// SIMD ones.
pub(crate) fn unpack_group_scalar(
    ty: TensorType,
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) -> bool {
    match ty {
        TensorType::Q4_K => {
            // Two super-blocks of 8 runs; in each 64 values, byte l holds run 2j's value
            // l in its low nibble and run 2j + 1's in its high nibble.
            for (sb, b) in src.chunks_exact(size_of::<BlockQ4K>()).enumerate() {
                let b: BlockQ4K = bytemuck::pod_read_unaligned(b);
                let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
                for j in 0..4 {
                    let (lo_run, hi_run) = (sb * 8 + 2 * j, sb * 8 + 2 * j + 1);
                    let (mut lo_sum, mut hi_sum) = (0u32, 0u32);
                    for p in 0..8 {
                        let x = u32::from_le_bytes(b.qs[32 * j + 4 * p..][..4].try_into().unwrap());
                        let (lo, hi) = (x & 0x0F0F_0F0F, (x >> 4) & 0x0F0F_0F0F);
                        put4(v, 64 * p + 4 * lo_run, lo);
                        put4(v, 64 * p + 4 * hi_run, hi);
                        lo_sum += lo;
                        hi_sum += hi;
                    }
                    for (run, sum, sub) in [(lo_run, lo_sum, 2 * j), (hi_run, hi_sum, 2 * j + 1)] {
                        let (sc, mn) = get_scale_min_k4(sub, &b.scales);
                        corr[run] = -128 * byte_sum(sum) as i32;
                        scale[run] = d * sc as f32;
                        min[run] = dmin * mn as f32;
                    }
                }
            }
            true
        }
        TensorType::Q6_K => {
            // One super-block of 16 runs of 16. Run r = 8n + 2k + h (half n of 128
            // values, quarter k, half h of its 32) takes bytes l = 16h.. of
            // `ql[64n + 32(k & 1)..]`, low nibbles for k < 2 and high ones after, and
            // bits 2k, 2k + 1 of `qh[32n + l]` as bits 4, 5: ggml's `q - 32`.
            let b: BlockQ6K = bytemuck::pod_read_unaligned(src);
            let d = f16_le(b.d);
            for run in 0..16 {
                let (n, k, h) = (run / 8, run % 8 / 2, run % 2);
                let mut sum = 0u32;
                for p in 0..4 {
                    let l = 16 * h + 4 * p;
                    let x = u32::from_le_bytes(
                        b.ql[64 * n + 32 * (k & 1) + l..][..4].try_into().unwrap(),
                    );
                    let hi = u32::from_le_bytes(b.qh[32 * n + l..][..4].try_into().unwrap());
                    let low = if k < 2 { x } else { x >> 4 } & 0x0F0F_0F0F;
                    let q = low | ((hi >> (2 * k)) & 0x0303_0303) << 4;
                    sum += q;
                    // q - 32 in every byte, without borrows between bytes.
                    put4(
                        v,
                        64 * p + 4 * run,
                        ((q | 0x8080_8080) - 0x2020_2020) ^ 0x8080_8080,
                    );
                }
                corr[run] = -128 * (byte_sum(sum) as i32 - 32 * 16);
                scale[run] = d * b.scales[run] as f32;
                min[run] = 0.0;
            }
            true
        }
        TensorType::Q5_0 => {
            for (run, b) in src.chunks_exact(size_of::<BlockQ5_0>()).enumerate() {
                let b: BlockQ5_0 = bytemuck::pod_read_unaligned(b);
                let qh = u32::from_le_bytes(b.qh);
                let mut sum = 0u32;
                for p in 0..8 {
                    // Values 4p..4p + 4: low nibbles of qs[4p..] for the first half,
                    // high nibbles of qs[4p - 16..] for the second; bit 4 from qh.
                    let x = u32::from_le_bytes(b.qs[4 * (p % 4)..][..4].try_into().unwrap());
                    let q = if p < 4 {
                        x & 0x0F0F_0F0F
                    } else {
                        (x >> 4) & 0x0F0F_0F0F
                    };
                    let q = q | HIGH_BIT[((qh >> (4 * p)) & 0xF) as usize];
                    sum += q;
                    // q - 16 in every byte, without borrows between bytes.
                    put4(
                        v,
                        64 * p + 4 * run,
                        ((q | 0x8080_8080) - 0x1010_1010) ^ 0x8080_8080,
                    );
                }
                corr[run] = -128 * (byte_sum(sum) as i32 - 16 * 32);
                scale[run] = f16_le(b.d);
                min[run] = 0.0;
            }
            true
        }
        TensorType::Q8_0 => {
            for (run, b) in src.chunks_exact(size_of::<BlockQ8_0>()).enumerate() {
                let b: BlockQ8_0 = bytemuck::pod_read_unaligned(b);
                for p in 0..8 {
                    let q: [i8; 4] = b.qs[4 * p..][..4].try_into().unwrap();
                    v[64 * p + 4 * run..][..4].copy_from_slice(&q);
                }
                corr[run] = -128 * b.qs.iter().map(|&q| q as i32).sum::<i32>();
                scale[run] = f16_le(b.d);
                min[run] = 0.0;
            }
            true
        }
        _ => false,
    }
}

/// A row's last 8 runs when they are all that is left after the groups of 16 (Q4_K
/// rows of an odd number of super-blocks, such as 768 or 8960 columns): one segment of
/// 8 runs, written straight into its layout (lane `2r + h` holds values `16h..16h + 16`
/// of run `r`, 4 per chunk), with each lane's `corr`, scale and min, as the generic
/// layout gives them. Returns `false` (and writes nothing) unless `ty` is Q4_K and
/// `src` is one block.
pub(crate) fn unpack_half_group(
    ty: TensorType,
    src: &[u8],
    v: &mut [i8],
    corr: &mut [i32],
    scale: &mut [f32],
    min: &mut [f32],
) -> bool {
    if ty != TensorType::Q4_K || src.len() != size_of::<BlockQ4K>() {
        return false;
    }
    let b: BlockQ4K = bytemuck::pod_read_unaligned(src);
    let (d, dmin) = (f16_le(b.d), f16_le(b.dmin));
    for run in 0..8 {
        // Run 2j: the low nibbles of bytes 32j..32j + 32; run 2j + 1: the high ones.
        let (j, shift) = (run / 2, 4 * (run % 2));
        let (sc, mn) = get_scale_min_k4(run, &b.scales);
        for h in 0..2 {
            let lane = 2 * run + h;
            let mut sum = 0u32;
            for p in 0..4 {
                let x =
                    u32::from_le_bytes(b.qs[32 * j + 16 * h + 4 * p..][..4].try_into().unwrap());
                let q = (x >> shift) & 0x0F0F_0F0F;
                put4(v, 64 * p + 4 * lane, q);
                sum += q;
            }
            corr[lane] = -128 * byte_sum(sum) as i32;
            scale[lane] = d * sc as f32;
            min[lane] = dmin * mn as f32;
        }
    }
    true
}

/// Bit 4 of each byte of a `u32`, from 4 bits: `HIGH_BIT[b]` has `0x10` in byte `i` when
/// bit `i` of `b` is set.
const HIGH_BIT: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut b = 0;
    while b < 16 {
        let mut i = 0;
        while i < 4 {
            if b & (1 << i) != 0 {
                t[b] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// Stores the 4 bytes of `x` (little-endian) at `v[at..at + 4]`.
fn put4(v: &mut [i8], at: usize, x: u32) {
    v[at..at + 4].copy_from_slice(&bytemuck::cast::<[u8; 4], [i8; 4]>(x.to_le_bytes()));
}

/// The sum of the 4 bytes of `x`.
fn byte_sum(x: u32) -> u32 {
    let pairs = (x & 0x00FF_00FF) + ((x >> 8) & 0x00FF_00FF);
    (pairs & 0xFFFF) + (pairs >> 16)
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
        for ty in [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS,
        ] {
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
