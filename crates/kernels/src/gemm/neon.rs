//! The micro-kernels of [`Level::NeonDot`]: [`MR`] rows × [`NR`] tokens with `usdot`
//! (FEAT_I8MM) or, without it, `sdot` (FEAT_DotProd), chosen at run time.
//!
//! A chunk of 64 values is four 16-byte vectors, each holding four of the layout's lanes
//! (a *quarter*). Both instructions add into each 32-bit lane the four products of its
//! bytes, exactly, so each lane's integer sum is the reference's `corr + Σ (a + 128)·v`:
//! - `usdot` multiplies unsigned by signed bytes, the panel's `a + 128` by the weights
//!   directly, from `corr` (as VNNI's `vpdpbusd` does);
//! - `sdot` multiplies signed by signed: the activations are flipped back to `a`
//!   (`eor 0x80`, once per vector for all [`MR`] rows) and the sums start from 0, which
//!   equals `corr + Σ (a + 128)·v` because `corr = -128·Σv`.
//!
//! The f32 side is the reference's, lane by lane and in its order: per segment, each
//! lane's sum times `weight scale · activation scale` fused into the lane's accumulator,
//! the weight min times `scale · Σa` fused out of it, and the 16 lanes added left to
//! right at the end. So both kernels give the reference micro-kernel's bits (the test
//! below demands it). The 16 × 4 f32 accumulators of a 4 × 4 block do not fit the 32
//! vector registers beside the 16 integer ones, so they live in a stack array that each
//! segment's scaling (once per 8 chunks of a full segment) reads and writes.
//!
//! Instructions per 64 values and (row, token) pair, counted in the release build's
//! loops (aarch64, Rust 1.95; loads and loop control included):
//! - scalar (`reference.rs`): 288 (18 per lane of 4 values);
//! - plain NEON: no micro-kernel at that level, whose row path spends 50 (two Q8_0
//!   blocks of `block32::dot_q8_0`); `smull`/`smull2` + two `sadalp` per 16 bytes would
//!   make a micro-kernel's arithmetic 16 before loads;
//! - `usdot`: 8.5 (a 4 × 4 block's 16-byte quarter of a chunk is 34 instructions: 16
//!   `usdot`, 8 loads, loop control);
//! - `sdot`: 9.5 (38: the same plus 4 `eor`).
//!
//! Plus, per segment (8 chunks in the full segments of 16 runs) and pair, ≈ 41 for the
//! f32 side (166 per quarter for the block with mins: `scvtf`, the scale product, `fmla`,
//! `fmls`, and the accumulators' loads and stores), so a full segment costs ≈ 109 per
//! pair with `usdot` against ≈ 2300 in the reference.
//!
//! Not `usmmla` (FEAT_I8MM's 2 × 8 by 8 × 2 matrix multiply, 32 products per
//! instruction against `usdot`'s 16): its 8-byte dots would have to take one lane from
//! two chunks (a lane's four values share a scale only with the same lane of the
//! segment's other chunks), and the layout keeps those 64 bytes apart. Gathering them is
//! a 4 × 4 transpose of 32-bit elements (8 `trn1`/`trn2`) per quarter, two chunks and
//! two tokens, shared by the block's two pairs of rows; the weights' transposes could be
//! done once per call into a buffer, but the activations' 8 then buy 8 `usmmla` in place
//! of 16 `usdot`: no fewer instructions. It would pay with a panel laid out for it,
//! which is a change to the shared layout (`gemm/mod.rs`, `panel.rs`), not to this file.
//!
//! [`Level::NeonDot`]: crate::dispatch::Level::NeonDot

use std::arch::aarch64::*;

use super::{Micro, MicroKernel, CHUNK, LANES, MR, NR};
use crate::dispatch::Level;

/// Lanes per 16-byte vector.
const QUARTER: usize = 4;
/// Vectors per chunk.
const QUARTERS: usize = LANES / QUARTER;

/// The fastest kernel this CPU runs at `level`: `usdot` with FEAT_I8MM, else `sdot`.
pub(super) fn for_level(level: Level) -> Option<MicroKernel> {
    if level != Level::NeonDot || !level.is_supported() {
        return None;
    }
    let f = if std::arch::is_aarch64_feature_detected!("i8mm") {
        micro_usdot
    } else {
        micro_sdot
    };
    // No float micro-kernel yet: float weights take the row path's NEON dots.
    Some(MicroKernel {
        f,
        float: None,
        level,
        unsigned_max: 0,
        mins: None,
    })
}

/// See [`super::reference::micro`]; for CPUs with NEON and FEAT_DotProd.
pub(super) fn micro_sdot(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    m.check(has_min, out, stride);
    // SAFETY: this kernel is handed out (by `for_level`, and by the tests) only after
    // `Level::NeonDot.is_supported()` detected NEON and dotprod; `check` verified that
    // the slices cover the layout.
    unsafe {
        if has_min {
            body_sdot::<true>(m, out, stride)
        } else {
            body_sdot::<false>(m, out, stride)
        }
    }
}

/// See [`super::reference::micro`]; for CPUs with NEON, FEAT_DotProd and FEAT_I8MM.
pub(super) fn micro_usdot(m: &Micro<'_>, has_min: bool, out: &mut [f32], stride: usize) {
    m.check(has_min, out, stride);
    // SAFETY: handed out only after detecting NEON, dotprod and i8mm (`for_level`, the
    // tests); `check` verified that the slices cover the layout.
    unsafe {
        if has_min {
            body_usdot::<true>(m, out, stride)
        } else {
            body_usdot::<false>(m, out, stride)
        }
    }
}

/// The panel's `a + 128` flipped back to `a`, as signed bytes, for `sdot`.
#[inline]
#[target_feature(enable = "neon")]
fn signed(a: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(veorq_u8(a, vdupq_n_u8(0x80)))
}

/// The panel's `a + 128` as they are, for `usdot`.
#[inline]
#[target_feature(enable = "neon")]
fn unsigned(a: uint8x16_t) -> uint8x16_t {
    a
}

/// `acc + Σ a·w` per 32-bit lane over its four unsigned bytes `a` and signed bytes `w`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
fn usdot(acc: int32x4_t, a: uint8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `usdot` only reads and writes the named vector registers; it touches no
    // memory, stack or flags, and this function's `i8mm` feature means the CPU has it.
    unsafe {
        std::arch::asm!(
            "usdot {acc:v}.4s, {a:v}.16b, {w:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            w = in(vreg) w,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Defines the kernel body `$name` around the lane dot `$dot`, which takes activations
/// of type `$aty` made from the panel's bytes by `$act`; `$from_corr` says whether the
/// integer sums start from the weights' `corr` (unsigned activations) or from 0.
///
/// A macro rather than a generic function: each body needs its own `target_feature`
/// set, and the `usdot` one must not run where only `sdot` exists.
macro_rules! body {
    ($name:ident, $features:literal, $aty:ty, $act:ident, $dot:path, $from_corr:literal) => {
        /// # Safety
        /// The CPU has the features named above, and `m` passed `Micro::check`.
        #[target_feature(enable = $features)]
        unsafe fn $name<const MIN: bool>(m: &Micro<'_>, out: &mut [f32], stride: usize) {
            let rows = &m.a;
            for t0 in (0..rows.n_tokens).step_by(NR) {
                let lanes_at = |j: usize| (t0 + j) * rows.lane_stride;
                // SAFETY: `check` verified that every token's row, at its stride, holds
                // the layout; `sum` is only offset (and read) when the weights have mins.
                let a: [*const u8; NR] = std::array::from_fn(|j| unsafe {
                    rows.a.as_ptr().add((t0 + j) * rows.a_stride)
                });
                // SAFETY: as above.
                let a_scale: [*const f32; NR] =
                    std::array::from_fn(|j| unsafe { rows.scale.as_ptr().add(lanes_at(j)) });
                // SAFETY: as above.
                let a_sum: [*const f32; NR] = std::array::from_fn(|j| {
                    if MIN {
                        unsafe { rows.sum.as_ptr().add(lanes_at(j)) }
                    } else {
                        rows.sum.as_ptr()
                    }
                });
                // Per row, token and quarter: four lanes' f32 accumulators.
                let mut acc = [[[vdupq_n_f32(0.0); QUARTERS]; NR]; MR];
                let mut base = 0;
                for (s, runs) in m.segs.iter().enumerate() {
                    let chunks = m.segs.chunks(runs);
                    for q in 0..QUARTERS {
                        let lane0 = s * LANES + q * QUARTER;
                        // SAFETY: segment s covers values base..base + chunks·64 and
                        // lanes 16s..16s + 16 of every row and token (checked).
                        unsafe {
                            let mut isum = [[vdupq_n_s32(0); NR]; MR];
                            if $from_corr {
                                for (w, isum) in m.w.iter().zip(isum.iter_mut()) {
                                    *isum = [vld1q_s32(w.corr.as_ptr().add(lane0)); NR];
                                }
                            }
                            for c in 0..chunks {
                                let at = base + c * CHUNK + q * 16;
                                let av: [$aty; NR] =
                                    std::array::from_fn(|j| $act(vld1q_u8(a[j].add(at))));
                                for (w, isum) in m.w.iter().zip(isum.iter_mut()) {
                                    let wv = vld1q_s8(w.v.as_ptr().add(at));
                                    for (isum, &av) in isum.iter_mut().zip(&av) {
                                        *isum = $dot(*isum, av, wv);
                                    }
                                }
                            }
                            for j in 0..NR {
                                let a_scale = vld1q_f32(a_scale[j].add(lane0));
                                for (i, w) in m.w.iter().enumerate() {
                                    let scale =
                                        vmulq_f32(vld1q_f32(w.scale.as_ptr().add(lane0)), a_scale);
                                    let acc = &mut acc[i][j][q];
                                    *acc = vfmaq_f32(*acc, vcvtq_f32_s32(isum[i][j]), scale);
                                    if MIN {
                                        let min = vld1q_f32(w.min.as_ptr().add(lane0));
                                        let a_sum = vld1q_f32(a_sum[j].add(lane0));
                                        *acc = vfmsq_f32(*acc, min, a_sum);
                                    }
                                }
                            }
                        }
                    }
                    base += chunks * CHUNK;
                }
                for (i, acc) in acc.iter().enumerate() {
                    for (j, acc) in acc.iter().enumerate() {
                        let mut lanes = [0f32; LANES];
                        for (q, &v) in acc.iter().enumerate() {
                            // SAFETY: `lanes` holds 16 f32, four per quarter.
                            unsafe { vst1q_f32(lanes.as_mut_ptr().add(q * QUARTER), v) };
                        }
                        // Left to right, as the reference adds its lanes.
                        out[(t0 + j) * stride + i] += lanes.iter().sum::<f32>();
                    }
                }
            }
        }
    };
}

body!(
    body_sdot,
    "neon,dotprod",
    int8x16_t,
    signed,
    crate::arm::simd::sdot,
    false
);
body!(
    body_usdot,
    "neon,dotprod,i8mm",
    uint8x16_t,
    unsigned,
    usdot,
    true
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Kernels;
    use crate::matmul::{matmul_with, MatmulScratch, WeightMatrix};
    use crate::pool::ThreadPool;
    use crate::quant::{quantize_row, TensorType};

    /// Both kernels, wherever this CPU runs them, through the GEMM driver against the
    /// reference micro-kernel: the same bits, for formats with and without mins, rows
    /// that leave a partial row group and several column blocks, and tokens that leave a
    /// partial group of [`NR`].
    #[test]
    fn both_kernels_equal_the_reference_bit_for_bit() {
        let Some(mut k) = Kernels::for_level(Level::NeonDot) else {
            return;
        };
        let mut kernels = vec![("sdot", micro_sdot as super::super::MicroFn)];
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            kernels.push(("usdot", micro_usdot));
        }
        let pool = ThreadPool::new(2).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        use TensorType::*;
        for (ty, n_cols) in [
            (Q4_K, 2560),
            (Q6_K, 768),
            (Q5_0, 672),
            (Q8_0, 1056),
            (Q4_0, 96),
            (Q4_1, 672),
            (Q5_K, 512),
        ] {
            let (n_rows, n_tokens) = (19, 18);
            let row_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize;
            let mut data = vec![0u8; row_bytes * n_rows];
            for row in data.chunks_exact_mut(row_bytes) {
                let x: Vec<f32> = (0..n_cols).map(|_| next()).collect();
                quantize_row(ty, &x, row).unwrap();
            }
            let w = WeightMatrix::new(ty, n_rows, n_cols, &data).unwrap();
            let x: Vec<f32> = (0..n_tokens * n_cols).map(|_| next()).collect();
            let mut scratch = MatmulScratch::new();
            let mut run = |micro: MicroKernel| {
                k.set_gemm(Some(micro));
                let mut out = vec![f32::NAN; n_rows * n_tokens];
                matmul_with(&k, &pool, &w, &x, n_tokens, &mut out, &mut scratch).unwrap();
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let want = run(MicroKernel::reference());
            for &(name, f) in &kernels {
                let got = run(MicroKernel {
                    f,
                    float: None,
                    level: Level::NeonDot,
                    unsigned_max: 0,
                    mins: None,
                });
                if let Some(at) = (0..want.len()).find(|&i| got[i] != want[i]) {
                    let (g, w) = (f32::from_bits(got[at]), f32::from_bits(want[at]));
                    panic!("{ty} [{n_rows}x{n_cols}]·{n_tokens}: {name} out[{at}] {g} vs {w}");
                }
            }
        }
    }
}
