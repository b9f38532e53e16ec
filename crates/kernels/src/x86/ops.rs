//! x86-64 SIMD versions of the ops in `crate::ops`: AVX2 (+FMA) and AVX-512F.
//!
//! Every kernel is a safe `#[target_feature]` function (the arithmetic intrinsics need no
//! `unsafe` there); the only `unsafe` is in the loads and stores, which take fixed-size
//! arrays, and in the plain-`fn` wrappers the [`Ops`] table stores. Those wrappers are
//! private to this module and reach the table only through [`register_avx2`] and
//! [`register_avx512`], which `Ops::for_level` calls only after
//! `Level::is_supported` confirmed the CPU features.
//!
//! Numerics, shared by both levels (and by `crate::arm::ops`):
//! - RMSNorm and RoPE do the references' operations in the same order, without FMA, so
//!   RoPE is bit-identical and RMSNorm differs only by the order of its f64 sum.
//! - `exp`, `tanh` and `erfc` are the polynomial approximations of [`crate::ops::approx`].
//! - SiLU is `x/(1 + e^-x)`; GELU (tanh form) is evaluated as `x/(1 + e^-2z)`, the same
//!   function as ggml's `0.5·x·(1 + tanh z)` without its cancellation for negative x;
//!   GELU (erf form) is `0.5·x·(2 - erfc(x/√2))`, or `0.5·x·erfc(-x/√2)` below zero.
//! - Softmax sums in f64, as ggml does.
//!
//! `tests/ops.rs` checks each against the scalar reference with stated tolerances.

use crate::ops::{map_lanes, map_lanes2, Ops};

/// Installs the AVX2 versions over the scalar ones.
pub(crate) fn register_avx2(ops: &mut Ops) {
    ops.exp = wrap::exp_avx2;
    ops.tanh = wrap::tanh_avx2;
    ops.silu = wrap::silu_avx2;
    ops.silu_mul = wrap::silu_mul_avx2;
    ops.gelu = wrap::gelu_avx2;
    ops.gelu_mul = wrap::gelu_mul_avx2;
    ops.gelu_erf = wrap::gelu_erf_avx2;
    ops.rms_norm = wrap::rms_norm_avx2;
    ops.rope_normal = wrap::rope_normal_avx2;
    ops.rope_neox = wrap::rope_neox_avx2;
    ops.softmax = wrap::softmax_avx2;
    ops.block_max_keys = wrap::block_max_keys_avx2;
}

/// Installs the AVX-512 versions over the AVX2 ones.
pub(crate) fn register_avx512(ops: &mut Ops) {
    ops.exp = wrap::exp_avx512;
    ops.tanh = wrap::tanh_avx512;
    ops.silu = wrap::silu_avx512;
    ops.silu_mul = wrap::silu_mul_avx512;
    ops.gelu = wrap::gelu_avx512;
    ops.gelu_mul = wrap::gelu_mul_avx512;
    ops.gelu_erf = wrap::gelu_erf_avx512;
    ops.rms_norm = wrap::rms_norm_avx512;
    ops.rope_normal = wrap::rope_normal_avx512;
    ops.rope_neox = wrap::rope_neox_avx512;
    ops.softmax = wrap::softmax_avx512;
    ops.block_max_keys = wrap::block_max_keys_avx512;
}

/// The plain-`fn` wrappers that the [`Ops`] table stores.
mod wrap {
    use super::{avx2, avx512};

    /// Defines safe wrappers around `#[target_feature]` kernels.
    macro_rules! wrappers {
        ($($name:ident = $kernel:path, ($($arg:ident: $ty:ty),*);)*) => {$(
            pub(super) fn $name($($arg: $ty),*) {
                // SAFETY: a `#[target_feature]` kernel only needs a CPU with its features.
                // This wrapper reaches an `Ops` table only through `register_avx2` /
                // `register_avx512`, which `Ops::for_level` calls only after
                // `Level::is_supported` confirmed AVX2+FMA (resp. AVX-512F) for this CPU.
                unsafe { $kernel($($arg),*) }
            }
        )*};
    }

    wrappers! {
        exp_avx2 = avx2::exp, (x: &mut [f32]);
        tanh_avx2 = avx2::tanh, (x: &mut [f32]);
        silu_avx2 = avx2::silu, (x: &mut [f32]);
        silu_mul_avx2 = avx2::silu_mul, (g: &mut [f32], u: &[f32]);
        gelu_avx2 = avx2::gelu, (x: &mut [f32]);
        gelu_mul_avx2 = avx2::gelu_mul, (g: &mut [f32], u: &[f32]);
        gelu_erf_avx2 = avx2::gelu_erf, (x: &mut [f32]);
        rms_norm_avx2 = avx2::rms_norm, (x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]);
        rope_normal_avx2 = avx2::rope_normal, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        rope_neox_avx2 = avx2::rope_neox, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        softmax_avx2 = avx2::softmax, (x: &mut [f32], scale: f32, mask: Option<&[f32]>);
        block_max_keys_avx2 = avx2::block_max_keys, (x: &[f32], out: &mut [i32]);
        exp_avx512 = avx512::exp, (x: &mut [f32]);
        tanh_avx512 = avx512::tanh, (x: &mut [f32]);
        silu_avx512 = avx512::silu, (x: &mut [f32]);
        silu_mul_avx512 = avx512::silu_mul, (g: &mut [f32], u: &[f32]);
        gelu_avx512 = avx512::gelu, (x: &mut [f32]);
        gelu_mul_avx512 = avx512::gelu_mul, (g: &mut [f32], u: &[f32]);
        gelu_erf_avx512 = avx512::gelu_erf, (x: &mut [f32]);
        rms_norm_avx512 = avx512::rms_norm, (x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]);
        rope_normal_avx512 = avx512::rope_normal, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        rope_neox_avx512 = avx512::rope_neox, (x: &mut [f32], cos: &[f32], sin: &[f32]);
        softmax_avx512 = avx512::softmax, (x: &mut [f32], scale: f32, mask: Option<&[f32]>);
        block_max_keys_avx512 = avx512::block_max_keys, (x: &[f32], out: &mut [i32]);
    }
}

/// AVX2 + FMA, 8 lanes.
mod avx2 {
    use std::arch::x86_64::*;

    use super::{map_lanes, map_lanes2};
    use crate::ops::approx::*;
    use crate::ops::{norm, rope};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load(x: &[f32; 8]) -> __m256 {
        // SAFETY: `x` is 8 readable f32; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn store(x: &mut [f32; 8], v: __m256) {
        // SAFETY: `x` is 8 writable f32; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load4(x: &[f32; 4]) -> __m128 {
        // SAFETY: `x` is 4 readable f32; `loadu` has no alignment requirement.
        unsafe { _mm_loadu_ps(x.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }

    /// Lane-wise `e^x`; see the module docs for the method.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, splat(EXP_LO)), splat(EXP_HI));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, splat(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, splat(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, splat(LN2_LO), r);
        let mut p = splat(EXP_P[0]);
        for c in &EXP_P[1..] {
            p = _mm256_fmadd_ps(p, r, splat(*c));
        }
        let y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, splat(1.0)));
        // 2^n through the exponent bits. n reaches 128 only just below overflow, where
        // 2^128 is not a float: use 2^127 and double y first.
        let ni = _mm256_cvtps_epi32(n);
        let big = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
        let y = _mm256_blendv_ps(y, _mm256_add_ps(y, y), _mm256_castsi256_ps(big));
        let ni = _mm256_min_epi32(ni, _mm256_set1_epi32(127));
        let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            ni,
            _mm256_set1_epi32(127),
        )));
        let e = _mm256_mul_ps(y, pow2n);
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, splat(EXP_LO));
        let e = _mm256_andnot_ps(tiny, e);
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(e, x, nan)
    }

    /// Lane-wise `tanh x`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn tanh8(x: __m256) -> __m256 {
        let sign = _mm256_and_ps(x, splat(-0.0));
        let a = _mm256_andnot_ps(splat(-0.0), x);
        // Large |x|: 1 - 2/(e^2a + 1), with x's sign.
        let e = exp8(_mm256_add_ps(a, a));
        let big = _mm256_sub_ps(
            splat(1.0),
            _mm256_div_ps(splat(2.0), _mm256_add_ps(e, splat(1.0))),
        );
        let big = _mm256_or_ps(big, sign);
        // Small |x|: x + x·z·P(z).
        let z = _mm256_mul_ps(x, x);
        let mut p = splat(TANH_P[0]);
        for c in &TANH_P[1..] {
            p = _mm256_fmadd_ps(p, z, splat(*c));
        }
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, splat(TANH_SMALL));
        _mm256_blendv_ps(big, small, is_small)
    }

    /// Lane-wise `x / (1 + e^-x)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn silu8(x: __m256) -> __m256 {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_div_ps(x, _mm256_add_ps(splat(1.0), e))
    }

    /// Lane-wise GELU (tanh form) as `x / (1 + e^-2z)`, `z = sqrt(2/pi)·x·(1 + a·x²)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn gelu8(x: __m256) -> __m256 {
        use crate::ops::act::{GELU_COEF_A, SQRT_2_OVER_PI};
        let x2 = _mm256_mul_ps(x, x);
        let inner = _mm256_fmadd_ps(splat(GELU_COEF_A), x2, splat(1.0));
        let m2z = _mm256_mul_ps(_mm256_mul_ps(splat(-2.0 * SQRT_2_OVER_PI), x), inner);
        _mm256_div_ps(x, _mm256_add_ps(splat(1.0), exp8(m2z)))
    }

    /// Lane-wise GELU (erf form) as `0.5·x·(2 - erfc(u))` for `x ≥ 0` and
    /// `0.5·x·erfc(-u)` below, `u = x/sqrt(2)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn gelu_erf8(x: __m256) -> __m256 {
        use crate::ops::act::SQRT_2_INV;
        let z = _mm256_andnot_ps(splat(-0.0), _mm256_mul_ps(x, splat(SQRT_2_INV)));
        let t = _mm256_div_ps(splat(1.0), _mm256_fmadd_ps(z, splat(0.5), splat(1.0)));
        let mut p = splat(ERFC_P[0]);
        for c in &ERFC_P[1..] {
            p = _mm256_fmadd_ps(p, t, splat(*c));
        }
        let arg = _mm256_fnmadd_ps(z, z, p);
        let erfc = _mm256_mul_ps(t, exp8(arg));
        let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps());
        let g = _mm256_blendv_ps(erfc, _mm256_sub_ps(splat(2.0), erfc), pos);
        _mm256_mul_ps(_mm256_mul_ps(splat(0.5), x), g)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp(x: &mut [f32]) {
        map_lanes!(8, load, store, x, |v| exp8(v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tanh(x: &mut [f32]) {
        map_lanes!(8, load, store, x, |v| tanh8(v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu(x: &mut [f32]) {
        map_lanes!(8, load, store, x, |v| silu8(v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        map_lanes2!(8, load, store, gate, up, |g, u| _mm256_mul_ps(silu8(g), u));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu(x: &mut [f32]) {
        map_lanes!(8, load, store, x, |v| gelu8(v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_mul(gate: &mut [f32], up: &[f32]) {
        map_lanes2!(8, load, store, gate, up, |g, u| _mm256_mul_ps(gelu8(g), u));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gelu_erf(x: &mut [f32]) {
        map_lanes!(8, load, store, x, |v| gelu_erf8(v));
    }

    /// Adds the eight lanes of `v`, widened to f64, into `acc`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn add_f64(acc: __m256d, v: __m256) -> __m256d {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        _mm256_add_pd(acc, _mm256_add_pd(lo, hi))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum_f64(v: __m256d) -> f64 {
        let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn rms_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
        if x.is_empty() {
            return;
        }
        // Squares rounded to f32 and summed in f64, as the reference (and ggml) do.
        let mut acc = _mm256_setzero_pd();
        let chunks = x.chunks_exact(8);
        let mut sum = chunks
            .remainder()
            .iter()
            .map(|&v| (v * v) as f64)
            .sum::<f64>();
        for c in chunks {
            let v = load(c.try_into().expect("whole chunk"));
            acc = add_f64(acc, _mm256_mul_ps(v, v));
        }
        sum += hsum_f64(acc);
        let scale = norm::rms_scale(sum, x.len(), eps);
        let s = splat(scale);
        let n = x.len() / 8 * 8;
        match weight {
            None => {
                for (o, c) in out.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
                    let v = load(c.try_into().expect("whole chunk"));
                    store(o.try_into().expect("whole chunk"), _mm256_mul_ps(v, s));
                }
                for (o, &v) in out[n..].iter_mut().zip(&x[n..]) {
                    *o = v * scale;
                }
            }
            Some(w) => {
                let vecs = out.chunks_exact_mut(8).zip(x.chunks_exact(8));
                for ((o, c), wc) in vecs.zip(w.chunks_exact(8)) {
                    let v = load(c.try_into().expect("whole chunk"));
                    let wv = load(wc.try_into().expect("whole chunk"));
                    let r = _mm256_mul_ps(_mm256_mul_ps(v, s), wv);
                    store(o.try_into().expect("whole chunk"), r);
                }
                for ((o, &v), &w) in out[n..].iter_mut().zip(&x[n..]).zip(&w[n..]) {
                    *o = (v * scale) * w;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn rope_normal(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        // Four pairs per vector: x = [x0 x1 x2 x3 …], cos and sin widened to
        // [c0 c0 c1 c1 …] and [-s0 s0 -s1 s1 …], the pairs swapped to [x1 x0 x3 x2 …];
        // then x·c + swap·s is (x0·c - x1·s, x1·c + x0·s) per pair, the reference's
        // products and sums exactly.
        let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        let alt = _mm256_setr_ps(-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0);
        let mut xs = x.chunks_exact_mut(8);
        let (mut cs, mut ss) = (cos.chunks_exact(4), sin.chunks_exact(4));
        for ((xc, c), s) in (&mut xs).zip(&mut cs).zip(&mut ss) {
            let xc: &mut [f32; 8] = xc.try_into().expect("whole chunk");
            let v = load(xc);
            let c = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(load4(c.try_into().expect("whole chunk"))),
                dup,
            );
            let s = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(load4(s.try_into().expect("whole chunk"))),
                dup,
            );
            let s = _mm256_mul_ps(s, alt);
            let swapped = _mm256_permute_ps::<0b10_11_00_01>(v);
            store(
                xc,
                _mm256_add_ps(_mm256_mul_ps(v, c), _mm256_mul_ps(swapped, s)),
            );
        }
        rope::rope_normal(xs.into_remainder(), cs.remainder(), ss.remainder());
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let (lo, hi) = x.split_at_mut(half);
        let n = half / 8 * 8;
        let pairs = lo.chunks_exact_mut(8).zip(hi.chunks_exact_mut(8));
        for ((l, h), (c, s)) in pairs.zip(cos.chunks_exact(8).zip(sin.chunks_exact(8))) {
            let (l, h): (&mut [f32; 8], &mut [f32; 8]) = (
                l.try_into().expect("whole chunk"),
                h.try_into().expect("whole chunk"),
            );
            let c = load(c.try_into().expect("whole chunk"));
            let s = load(s.try_into().expect("whole chunk"));
            let (x0, x1) = (load(l), load(h));
            store(l, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
            store(h, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
        }
        for i in n..half {
            let (x0, x1) = (lo[i], hi[i]);
            lo[i] = x0 * cos[i] - x1 * sin[i];
            hi[i] = x0 * sin[i] + x1 * cos[i];
        }
    }

    /// The reference's integer code, compiled for 256-bit registers.
    #[target_feature(enable = "avx2")]
    pub(super) fn block_max_keys(x: &[f32], out: &mut [i32]) {
        crate::ops::select::block_max_keys(x, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn softmax(x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        // Pass 1: w = x·scale + mask (a multiply and an add, as the reference), and max.
        let s = splat(scale);
        let mut vmax = splat(f32::NEG_INFINITY);
        let n = x.len() / 8 * 8;
        match mask {
            None => {
                for c in x.chunks_exact_mut(8) {
                    let c: &mut [f32; 8] = c.try_into().expect("whole chunk");
                    let w = _mm256_mul_ps(load(c), s);
                    vmax = _mm256_max_ps(vmax, w);
                    store(c, w);
                }
                x[n..].iter_mut().for_each(|v| *v *= scale);
            }
            Some(m) => {
                for (c, mc) in x.chunks_exact_mut(8).zip(m.chunks_exact(8)) {
                    let c: &mut [f32; 8] = c.try_into().expect("whole chunk");
                    let mv = load(mc.try_into().expect("whole chunk"));
                    let w = _mm256_add_ps(_mm256_mul_ps(load(c), s), mv);
                    vmax = _mm256_max_ps(vmax, w);
                    store(c, w);
                }
                for (v, &m) in x[n..].iter_mut().zip(&m[n..]) {
                    *v = *v * scale + m;
                }
            }
        }
        let max = x[n..].iter().copied().fold(hmax(vmax), f32::max);
        if max == f32::NEG_INFINITY {
            x.fill(0.0);
            return;
        }
        // Pass 2: e = exp(w - max), summed in f64. The tail is padded with -inf, whose
        // exp is 0, so it adds nothing.
        let vm = splat(max);
        let mut acc = _mm256_setzero_pd();
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            let c: &mut [f32; 8] = c.try_into().expect("whole chunk");
            let e = exp8(_mm256_sub_ps(load(c), vm));
            acc = add_f64(acc, e);
            store(c, e);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [f32::NEG_INFINITY; 8];
            buf[..rest.len()].copy_from_slice(rest);
            let e = exp8(_mm256_sub_ps(load(&buf), vm));
            acc = add_f64(acc, e);
            store(&mut buf, e);
            let k = rest.len();
            rest.copy_from_slice(&buf[..k]);
        }
        // Pass 3: scale by the reciprocal of the sum, rounded to f32 as the reference.
        let inv = (1.0 / hsum_f64(acc)) as f32;
        let vi = splat(inv);
        map_lanes!(8, load, store, x, |v| _mm256_mul_ps(v, vi));
    }
}

/// AVX-512F, 16 lanes. The same algorithms as [`avx2`]; `exp` scales with `vscalefps`,
/// which handles the exponent range (and overflow to infinity) in one instruction.
mod avx512 {
    use std::arch::x86_64::*;

    use super::{map_lanes, map_lanes2};
    use crate::ops::approx::*;
    use crate::ops::{norm, rope};

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(x: &[f32; 16]) -> __m512 {
        // SAFETY: `x` is 16 readable f32; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(x: &mut [f32; 16], v: __m512) {
        // SAFETY: `x` is 16 writable f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load8(x: &[f32; 8]) -> __m256 {
        // SAFETY: `x` is 8 readable f32; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(x.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn abs(x: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(0x7fff_ffff),
        ))
    }

    /// Lane-wise `e^x`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(_mm512_max_ps(x, splat(EXP_LO)), splat(EXP_HI));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(xc, splat(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, splat(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, splat(LN2_LO), r);
        let mut p = splat(EXP_P[0]);
        for c in &EXP_P[1..] {
            p = _mm512_fmadd_ps(p, r, splat(*c));
        }
        let y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, splat(1.0)));
        let e = _mm512_scalef_ps(y, n);
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, splat(EXP_LO));
        let e = _mm512_mask_mov_ps(e, tiny, _mm512_setzero_ps());
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_mov_ps(e, nan, x)
    }

    /// Lane-wise `tanh x`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn tanh16(x: __m512) -> __m512 {
        let a = abs(x);
        let e = exp16(_mm512_add_ps(a, a));
        let big = _mm512_sub_ps(
            splat(1.0),
            _mm512_div_ps(splat(2.0), _mm512_add_ps(e, splat(1.0))),
        );
        let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        let big = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big), sign));
        let z = _mm512_mul_ps(x, x);
        let mut p = splat(TANH_P[0]);
        for c in &TANH_P[1..] {
            p = _mm512_fmadd_ps(p, z, splat(*c));
        }
        let small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, splat(TANH_SMALL));
        _mm512_mask_mov_ps(big, is_small, small)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn silu16(x: __m512) -> __m512 {
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_div_ps(x, _mm512_add_ps(splat(1.0), e))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu16(x: __m512) -> __m512 {
        use crate::ops::act::{GELU_COEF_A, SQRT_2_OVER_PI};
        let x2 = _mm512_mul_ps(x, x);
        let inner = _mm512_fmadd_ps(splat(GELU_COEF_A), x2, splat(1.0));
        let m2z = _mm512_mul_ps(_mm512_mul_ps(splat(-2.0 * SQRT_2_OVER_PI), x), inner);
        _mm512_div_ps(x, _mm512_add_ps(splat(1.0), exp16(m2z)))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu_erf16(x: __m512) -> __m512 {
        use crate::ops::act::SQRT_2_INV;
        let z = abs(_mm512_mul_ps(x, splat(SQRT_2_INV)));
        let t = _mm512_div_ps(splat(1.0), _mm512_fmadd_ps(z, splat(0.5), splat(1.0)));
        let mut p = splat(ERFC_P[0]);
        for c in &ERFC_P[1..] {
            p = _mm512_fmadd_ps(p, t, splat(*c));
        }
        let arg = _mm512_fnmadd_ps(z, z, p);
        let erfc = _mm512_mul_ps(t, exp16(arg));
        let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
        let g = _mm512_mask_mov_ps(erfc, pos, _mm512_sub_ps(splat(2.0), erfc));
        _mm512_mul_ps(_mm512_mul_ps(splat(0.5), x), g)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn exp(x: &mut [f32]) {
        map_lanes!(16, load, store, x, |v| exp16(v));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn tanh(x: &mut [f32]) {
        map_lanes!(16, load, store, x, |v| tanh16(v));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu(x: &mut [f32]) {
        map_lanes!(16, load, store, x, |v| silu16(v));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        map_lanes2!(16, load, store, gate, up, |g, u| _mm512_mul_ps(
            silu16(g),
            u
        ));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu(x: &mut [f32]) {
        map_lanes!(16, load, store, x, |v| gelu16(v));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_mul(gate: &mut [f32], up: &[f32]) {
        map_lanes2!(16, load, store, gate, up, |g, u| _mm512_mul_ps(
            gelu16(g),
            u
        ));
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn gelu_erf(x: &mut [f32]) {
        map_lanes!(16, load, store, x, |v| gelu_erf16(v));
    }

    /// Adds the sixteen lanes of `v`, widened to f64, into `acc`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add_f64(acc: __m512d, v: __m512) -> __m512d {
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(v),
        )));
        _mm512_add_pd(acc, _mm512_add_pd(lo, hi))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn rms_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
        if x.is_empty() {
            return;
        }
        let mut acc = _mm512_setzero_pd();
        let chunks = x.chunks_exact(16);
        let mut sum = chunks
            .remainder()
            .iter()
            .map(|&v| (v * v) as f64)
            .sum::<f64>();
        for c in chunks {
            let v = load(c.try_into().expect("whole chunk"));
            acc = add_f64(acc, _mm512_mul_ps(v, v));
        }
        sum += _mm512_reduce_add_pd(acc);
        let scale = norm::rms_scale(sum, x.len(), eps);
        let s = splat(scale);
        let n = x.len() / 16 * 16;
        match weight {
            None => {
                for (o, c) in out.chunks_exact_mut(16).zip(x.chunks_exact(16)) {
                    let v = load(c.try_into().expect("whole chunk"));
                    store(o.try_into().expect("whole chunk"), _mm512_mul_ps(v, s));
                }
                for (o, &v) in out[n..].iter_mut().zip(&x[n..]) {
                    *o = v * scale;
                }
            }
            Some(w) => {
                let vecs = out.chunks_exact_mut(16).zip(x.chunks_exact(16));
                for ((o, c), wc) in vecs.zip(w.chunks_exact(16)) {
                    let v = load(c.try_into().expect("whole chunk"));
                    let wv = load(wc.try_into().expect("whole chunk"));
                    let r = _mm512_mul_ps(_mm512_mul_ps(v, s), wv);
                    store(o.try_into().expect("whole chunk"), r);
                }
                for ((o, &v), &w) in out[n..].iter_mut().zip(&x[n..]).zip(&w[n..]) {
                    *o = (v * scale) * w;
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn rope_normal(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        // As the AVX2 version, eight pairs per vector.
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        let alt = _mm512_setr_ps(
            -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0,
        );
        let mut xs = x.chunks_exact_mut(16);
        let (mut cs, mut ss) = (cos.chunks_exact(8), sin.chunks_exact(8));
        for ((xc, c), s) in (&mut xs).zip(&mut cs).zip(&mut ss) {
            let xc: &mut [f32; 16] = xc.try_into().expect("whole chunk");
            let v = load(xc);
            let c = _mm512_permutexvar_ps(
                dup,
                _mm512_castps256_ps512(load8(c.try_into().expect("whole chunk"))),
            );
            let s = _mm512_permutexvar_ps(
                dup,
                _mm512_castps256_ps512(load8(s.try_into().expect("whole chunk"))),
            );
            let s = _mm512_mul_ps(s, alt);
            let swapped = _mm512_permute_ps::<0b10_11_00_01>(v);
            store(
                xc,
                _mm512_add_ps(_mm512_mul_ps(v, c), _mm512_mul_ps(swapped, s)),
            );
        }
        rope::rope_normal(xs.into_remainder(), cs.remainder(), ss.remainder());
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let (lo, hi) = x.split_at_mut(half);
        let n = half / 16 * 16;
        let pairs = lo.chunks_exact_mut(16).zip(hi.chunks_exact_mut(16));
        for ((l, h), (c, s)) in pairs.zip(cos.chunks_exact(16).zip(sin.chunks_exact(16))) {
            let (l, h): (&mut [f32; 16], &mut [f32; 16]) = (
                l.try_into().expect("whole chunk"),
                h.try_into().expect("whole chunk"),
            );
            let c = load(c.try_into().expect("whole chunk"));
            let s = load(s.try_into().expect("whole chunk"));
            let (x0, x1) = (load(l), load(h));
            store(l, _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
            store(h, _mm512_add_ps(_mm512_mul_ps(x0, s), _mm512_mul_ps(x1, c)));
        }
        for i in n..half {
            let (x0, x1) = (lo[i], hi[i]);
            lo[i] = x0 * cos[i] - x1 * sin[i];
            hi[i] = x0 * sin[i] + x1 * cos[i];
        }
    }

    /// The reference's integer code, compiled for 512-bit registers.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn block_max_keys(x: &[f32], out: &mut [i32]) {
        crate::ops::select::block_max_keys(x, out)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn softmax(x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        let s = splat(scale);
        let mut vmax = splat(f32::NEG_INFINITY);
        let n = x.len() / 16 * 16;
        match mask {
            None => {
                for c in x.chunks_exact_mut(16) {
                    let c: &mut [f32; 16] = c.try_into().expect("whole chunk");
                    let w = _mm512_mul_ps(load(c), s);
                    vmax = _mm512_max_ps(vmax, w);
                    store(c, w);
                }
                x[n..].iter_mut().for_each(|v| *v *= scale);
            }
            Some(m) => {
                for (c, mc) in x.chunks_exact_mut(16).zip(m.chunks_exact(16)) {
                    let c: &mut [f32; 16] = c.try_into().expect("whole chunk");
                    let mv = load(mc.try_into().expect("whole chunk"));
                    let w = _mm512_add_ps(_mm512_mul_ps(load(c), s), mv);
                    vmax = _mm512_max_ps(vmax, w);
                    store(c, w);
                }
                for (v, &m) in x[n..].iter_mut().zip(&m[n..]) {
                    *v = *v * scale + m;
                }
            }
        }
        let max = x[n..]
            .iter()
            .copied()
            .fold(_mm512_reduce_max_ps(vmax), f32::max);
        if max == f32::NEG_INFINITY {
            x.fill(0.0);
            return;
        }
        let vm = splat(max);
        let mut acc = _mm512_setzero_pd();
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            let c: &mut [f32; 16] = c.try_into().expect("whole chunk");
            let e = exp16(_mm512_sub_ps(load(c), vm));
            acc = add_f64(acc, e);
            store(c, e);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut buf = [f32::NEG_INFINITY; 16];
            buf[..rest.len()].copy_from_slice(rest);
            let e = exp16(_mm512_sub_ps(load(&buf), vm));
            acc = add_f64(acc, e);
            store(&mut buf, e);
            let k = rest.len();
            rest.copy_from_slice(&buf[..k]);
        }
        let inv = (1.0 / _mm512_reduce_add_pd(acc)) as f32;
        let vi = splat(inv);
        map_lanes!(16, load, store, x, |v| _mm512_mul_ps(v, vi));
    }
}
