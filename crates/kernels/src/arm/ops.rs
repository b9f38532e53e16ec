//! NEON versions of the ops in `crate::ops`, 4 lanes.
//!
//! The same algorithms as the x86 versions (`crate::x86::ops`, whose module docs describe
//! the numerics): RMSNorm and RoPE repeat the references' operations without FMA, `exp`,
//! `tanh` and `erfc` are the shared polynomials of [`crate::ops::approx`], and softmax
//! sums in f64. `tests/ops.rs` checks them against the scalar references under qemu
//! (`scripts/test-aarch64.sh`).
//!
//! Kernels are safe `#[target_feature(enable = "neon")]` functions; the only `unsafe` is
//! in the loads and stores (which take fixed-size arrays) and in the plain-`fn` wrappers
//! the [`Ops`] table stores, which reach it only through [`register_neon`].

use std::arch::aarch64::*;

use crate::ops::approx::*;
use crate::ops::{map_lanes, map_lanes2, norm, rope, Ops};

/// Installs the NEON versions over the scalar ones.
pub(crate) fn register_neon(ops: &mut Ops) {
    ops.exp = wrap::exp;
    ops.tanh = wrap::tanh;
    ops.silu = wrap::silu;
    ops.silu_mul = wrap::silu_mul;
    ops.gelu = wrap::gelu;
    ops.gelu_mul = wrap::gelu_mul;
    ops.gelu_erf = wrap::gelu_erf;
    ops.rms_norm = wrap::rms_norm;
    ops.rope_normal = wrap::rope_normal;
    ops.rope_neox = wrap::rope_neox;
    ops.softmax = wrap::softmax;
}

/// The plain-`fn` wrappers that the [`Ops`] table stores.
mod wrap {
    macro_rules! wrappers {
        ($($name:ident, ($($arg:ident: $ty:ty),*);)*) => {$(
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: a `#[target_feature(enable = "neon")]` function only needs a CPU
                // with NEON. This wrapper reaches an `Ops` table only through
                // `register_neon`, which `Ops::for_level` calls only after
                // `Level::Neon.is_supported()`.
                unsafe { super::$name($($arg),*) }
            }
        )*};
    }

    wrappers! {
        exp, (x: &mut [f32]);
        tanh, (x: &mut [f32]);
        silu, (x: &mut [f32]);
        silu_mul, (g: &mut [f32], u: &[f32]);
        gelu, (x: &mut [f32]);
        gelu_mul, (g: &mut [f32], u: &[f32]);
        gelu_erf, (x: &mut [f32]);
        rms_norm, (x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]);
        rope_normal, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        rope_neox, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        softmax, (x: &mut [f32], scale: f32, mask: Option<&[f32]>);
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn load(x: &[f32; 4]) -> float32x4_t {
    // SAFETY: `x` is 4 readable f32; `ld1` has no alignment requirement.
    unsafe { vld1q_f32(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "neon")]
fn store(x: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: `x` is 4 writable f32; `st1` has no alignment requirement.
    unsafe { vst1q_f32(x.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "neon")]
fn splat(x: f32) -> float32x4_t {
    vdupq_n_f32(x)
}

/// Lane-wise `e^x`.
#[inline]
#[target_feature(enable = "neon")]
fn exp4(x: float32x4_t) -> float32x4_t {
    let xc = vminq_f32(vmaxq_f32(x, splat(EXP_LO)), splat(EXP_HI));
    let n = vrndnq_f32(vmulq_f32(xc, splat(LOG2E)));
    let r = vfmsq_f32(xc, n, splat(LN2_HI));
    let r = vfmsq_f32(r, n, splat(LN2_LO));
    let mut p = splat(EXP_P[0]);
    for c in &EXP_P[1..] {
        p = vfmaq_f32(splat(*c), p, r);
    }
    let y = vfmaq_f32(vaddq_f32(r, splat(1.0)), p, vmulq_f32(r, r));
    // 2^n through the exponent bits; n = 128 (just below overflow) as 2·2^127.
    let ni = vcvtq_s32_f32(n);
    let big = vcgtq_s32(ni, vdupq_n_s32(127));
    let y = vbslq_f32(big, vaddq_f32(y, y), y);
    let ni = vminq_s32(ni, vdupq_n_s32(127));
    let pow2n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(ni, vdupq_n_s32(127))));
    let e = vmulq_f32(y, pow2n);
    let tiny = vcltq_f32(x, splat(EXP_LO));
    let e = vbslq_f32(tiny, splat(0.0), e);
    // x == x fails only for NaN, which then passes through.
    vbslq_f32(vceqq_f32(x, x), e, x)
}

/// Lane-wise `tanh x`.
#[inline]
#[target_feature(enable = "neon")]
fn tanh4(x: float32x4_t) -> float32x4_t {
    let a = vabsq_f32(x);
    let e = exp4(vaddq_f32(a, a));
    let big = vsubq_f32(splat(1.0), vdivq_f32(splat(2.0), vaddq_f32(e, splat(1.0))));
    // Copy x's sign onto `big` (which is ≥ 0): select the sign bit from x.
    let big = vbslq_f32(vdupq_n_u32(0x8000_0000), x, big);
    let z = vmulq_f32(x, x);
    let mut p = splat(TANH_P[0]);
    for c in &TANH_P[1..] {
        p = vfmaq_f32(splat(*c), p, z);
    }
    let small = vfmaq_f32(x, vmulq_f32(p, z), x);
    vbslq_f32(vcltq_f32(a, splat(TANH_SMALL)), small, big)
}

#[inline]
#[target_feature(enable = "neon")]
fn silu4(x: float32x4_t) -> float32x4_t {
    vdivq_f32(x, vaddq_f32(splat(1.0), exp4(vnegq_f32(x))))
}

#[inline]
#[target_feature(enable = "neon")]
fn gelu4(x: float32x4_t) -> float32x4_t {
    use crate::ops::act::{GELU_COEF_A, SQRT_2_OVER_PI};
    let inner = vfmaq_f32(splat(1.0), splat(GELU_COEF_A), vmulq_f32(x, x));
    let m2z = vmulq_f32(vmulq_f32(splat(-2.0 * SQRT_2_OVER_PI), x), inner);
    vdivq_f32(x, vaddq_f32(splat(1.0), exp4(m2z)))
}

#[inline]
#[target_feature(enable = "neon")]
fn gelu_erf4(x: float32x4_t) -> float32x4_t {
    use crate::ops::act::SQRT_2_INV;
    let z = vabsq_f32(vmulq_f32(x, splat(SQRT_2_INV)));
    let t = vdivq_f32(splat(1.0), vfmaq_f32(splat(1.0), z, splat(0.5)));
    let mut p = splat(ERFC_P[0]);
    for c in &ERFC_P[1..] {
        p = vfmaq_f32(splat(*c), p, t);
    }
    let erfc = vmulq_f32(t, exp4(vfmsq_f32(p, z, z)));
    let g = vbslq_f32(vcgeq_f32(x, splat(0.0)), vsubq_f32(splat(2.0), erfc), erfc);
    vmulq_f32(vmulq_f32(splat(0.5), x), g)
}

#[target_feature(enable = "neon")]
fn exp(x: &mut [f32]) {
    map_lanes!(4, load, store, x, |v| exp4(v));
}

#[target_feature(enable = "neon")]
fn tanh(x: &mut [f32]) {
    map_lanes!(4, load, store, x, |v| tanh4(v));
}

#[target_feature(enable = "neon")]
fn silu(x: &mut [f32]) {
    map_lanes!(4, load, store, x, |v| silu4(v));
}

#[target_feature(enable = "neon")]
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    map_lanes2!(4, load, store, gate, up, |g, u| vmulq_f32(silu4(g), u));
}

#[target_feature(enable = "neon")]
fn gelu(x: &mut [f32]) {
    map_lanes!(4, load, store, x, |v| gelu4(v));
}

#[target_feature(enable = "neon")]
fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    map_lanes2!(4, load, store, gate, up, |g, u| vmulq_f32(gelu4(g), u));
}

#[target_feature(enable = "neon")]
fn gelu_erf(x: &mut [f32]) {
    map_lanes!(4, load, store, x, |v| gelu_erf4(v));
}

/// Adds the four lanes of `v`, widened to f64, into `acc`.
#[inline]
#[target_feature(enable = "neon")]
fn add_f64(acc: float64x2_t, v: float32x4_t) -> float64x2_t {
    let lo = vcvt_f64_f32(vget_low_f32(v));
    let hi = vcvt_high_f64_f32(v);
    vaddq_f64(acc, vaddq_f64(lo, hi))
}

#[target_feature(enable = "neon")]
fn rms_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mut acc = vdupq_n_f64(0.0);
    let chunks = x.chunks_exact(4);
    let mut sum = chunks
        .remainder()
        .iter()
        .map(|&v| (v * v) as f64)
        .sum::<f64>();
    for c in chunks {
        let v = load(c.try_into().expect("whole chunk"));
        acc = add_f64(acc, vmulq_f32(v, v));
    }
    sum += vaddvq_f64(acc);
    let scale = norm::rms_scale(sum, x.len(), eps);
    let s = splat(scale);
    let n = x.len() / 4 * 4;
    match weight {
        None => {
            for (o, c) in out.chunks_exact_mut(4).zip(x.chunks_exact(4)) {
                let v = load(c.try_into().expect("whole chunk"));
                store(o.try_into().expect("whole chunk"), vmulq_f32(v, s));
            }
            for (o, &v) in out[n..].iter_mut().zip(&x[n..]) {
                *o = v * scale;
            }
        }
        Some(w) => {
            let vecs = out.chunks_exact_mut(4).zip(x.chunks_exact(4));
            for ((o, c), wc) in vecs.zip(w.chunks_exact(4)) {
                let v = load(c.try_into().expect("whole chunk"));
                let wv = load(wc.try_into().expect("whole chunk"));
                store(
                    o.try_into().expect("whole chunk"),
                    vmulq_f32(vmulq_f32(v, s), wv),
                );
            }
            for ((o, &v), &w) in out[n..].iter_mut().zip(&x[n..]).zip(&w[n..]) {
                *o = (v * scale) * w;
            }
        }
    }
}

#[target_feature(enable = "neon")]
fn rope_normal(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    // Four pairs (8 values) per step: cos widened to [c0 c0 c1 c1] / [c2 c2 c3 c3], sin to
    // [-s0 s0 -s1 s1] / [-s2 s2 -s3 s3], pairs swapped with `rev64`; then
    // x·c + swap·s = (x0·c - x1·s, x1·c + x0·s), the reference's operations exactly.
    let mut xs = x.chunks_exact_mut(8);
    let (mut cs, mut ss) = (cos.chunks_exact(4), sin.chunks_exact(4));
    for ((xc, c), s) in (&mut xs).zip(&mut cs).zip(&mut ss) {
        let (x_lo, x_hi) = xc.split_at_mut(4);
        let (x_lo, x_hi): (&mut [f32; 4], &mut [f32; 4]) = (
            x_lo.try_into().expect("whole chunk"),
            x_hi.try_into().expect("whole chunk"),
        );
        let c = load(c.try_into().expect("whole chunk"));
        let s = load(s.try_into().expect("whole chunk"));
        let ns = vnegq_f32(s);
        let halves = [
            (x_lo, vzip1q_f32(c, c), vzip1q_f32(ns, s)),
            (x_hi, vzip2q_f32(c, c), vzip2q_f32(ns, s)),
        ];
        for (xh, cc, sc) in halves {
            let v = load(xh);
            let swapped = vrev64q_f32(v);
            store(xh, vaddq_f32(vmulq_f32(v, cc), vmulq_f32(swapped, sc)));
        }
    }
    rope::rope_normal(xs.into_remainder(), cs.remainder(), ss.remainder());
}

#[target_feature(enable = "neon")]
fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (lo, hi) = x.split_at_mut(half);
    let n = half / 4 * 4;
    let pairs = lo.chunks_exact_mut(4).zip(hi.chunks_exact_mut(4));
    for ((l, h), (c, s)) in pairs.zip(cos.chunks_exact(4).zip(sin.chunks_exact(4))) {
        let (l, h): (&mut [f32; 4], &mut [f32; 4]) = (
            l.try_into().expect("whole chunk"),
            h.try_into().expect("whole chunk"),
        );
        let c = load(c.try_into().expect("whole chunk"));
        let s = load(s.try_into().expect("whole chunk"));
        let (x0, x1) = (load(l), load(h));
        store(l, vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s)));
        store(h, vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c)));
    }
    for i in n..half {
        let (x0, x1) = (lo[i], hi[i]);
        lo[i] = x0 * cos[i] - x1 * sin[i];
        hi[i] = x0 * sin[i] + x1 * cos[i];
    }
}

#[target_feature(enable = "neon")]
fn softmax(x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    let s = splat(scale);
    let mut vmax = splat(f32::NEG_INFINITY);
    let n = x.len() / 4 * 4;
    match mask {
        None => {
            for c in x.chunks_exact_mut(4) {
                let c: &mut [f32; 4] = c.try_into().expect("whole chunk");
                let w = vmulq_f32(load(c), s);
                vmax = vmaxq_f32(vmax, w);
                store(c, w);
            }
            x[n..].iter_mut().for_each(|v| *v *= scale);
        }
        Some(m) => {
            for (c, mc) in x.chunks_exact_mut(4).zip(m.chunks_exact(4)) {
                let c: &mut [f32; 4] = c.try_into().expect("whole chunk");
                let mv = load(mc.try_into().expect("whole chunk"));
                let w = vaddq_f32(vmulq_f32(load(c), s), mv);
                vmax = vmaxq_f32(vmax, w);
                store(c, w);
            }
            for (v, &m) in x[n..].iter_mut().zip(&m[n..]) {
                *v = *v * scale + m;
            }
        }
    }
    let max = x[n..].iter().copied().fold(vmaxvq_f32(vmax), f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let vm = splat(max);
    let mut acc = vdupq_n_f64(0.0);
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        let c: &mut [f32; 4] = c.try_into().expect("whole chunk");
        let e = exp4(vsubq_f32(load(c), vm));
        acc = add_f64(acc, e);
        store(c, e);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        // Padded with -inf, whose exp is 0, so the padding adds nothing to the sum.
        let mut buf = [f32::NEG_INFINITY; 4];
        buf[..rest.len()].copy_from_slice(rest);
        let e = exp4(vsubq_f32(load(&buf), vm));
        acc = add_f64(acc, e);
        store(&mut buf, e);
        let k = rest.len();
        rest.copy_from_slice(&buf[..k]);
    }
    let inv = (1.0 / vaddvq_f64(acc)) as f32;
    let vi = splat(inv);
    map_lanes!(4, load, store, x, |v| vmulq_f32(v, vi));
}
