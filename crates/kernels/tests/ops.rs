//! The transformer ops: scalar references against f64 math (and `erf` against Python's
//! `math.erf`), then every SIMD level this CPU supports against the scalar reference.
//!
//! Tolerances, and why (ulp = 2^-23 relative ≈ 1.19e-7):
//! - exp: 2.5e-7 relative (about 2 ulp; measured 1.2e-7) where the result is a normal
//!   float; results below `f32::MIN_POSITIVE` may flush to 0 (absolute error < 1.2e-38).
//! - tanh: 4e-7 relative (measured 2.2e-7, at the polynomial's edge |x| = 0.625).
//! - SiLU: 6e-7 relative (measured 3.5e-7: `exp`'s error carried through `x/(1+e^-x)`).
//! - GELU (both forms): 4e-7·|x| absolute (measured 2.0e-7·|x|). Relative error is the
//!   wrong yardstick for negative x: ggml's formula `0.5·x·(1 + tanh z)` (the reference)
//!   cancels there and is itself only accurate to about 1e-7·|x|.
//! - RMSNorm: 2 ulp relative (only the order of the f64 sum differs).
//! - RoPE: bit-identical (the same multiplies and adds, no FMA).
//! - softmax: 8e-7 relative per entry plus 1e-9 absolute (exp's error, and the sum's).
//! - block maxima of order keys: integer code, equal at every level.

mod kernel_inputs;

use hearth_kernels::dispatch::Level;
use hearth_kernels::ops::select::{order_key, raw_key, KEY_BLOCK};
use hearth_kernels::ops::{act, Ops, RopeCache, RopeError, RopeMode, RopeParams};
use kernel_inputs::Rng;
use proptest::prelude::*;

/// Every level this CPU supports, except Scalar.
fn simd_levels() -> Vec<Ops> {
    Level::supported()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
        .map(|l| Ops::for_level(l).expect("supported level"))
        .collect()
}

fn scalar() -> Ops {
    Ops::for_level(Level::Scalar).expect("scalar always builds")
}

/// Asserts `|got - want| ≤ rel·|want| + abs` elementwise (NaN must match NaN).
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f64, abs: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        if g == w {
            continue;
        }
        let err = (g as f64 - w as f64).abs();
        let tol = rel * (w as f64).abs() + abs(i);
        assert!(
            err <= tol,
            "{what}[{i}]: got {g:e}, want {w:e} (err {err:e} > {tol:e})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Scalar references against f64 math.

/// `math.erf` of CPython 3 (a correctly rounded libm `erf`), made by:
/// `for x in XS: print((x, math.erf(x)))`.
const PY_ERF: [(f64, f64); 28] = [
    (0.0, 0.0),
    (1e-08, 1.1283791670955126e-08),
    (0.0001, 0.00011283791633342487),
    (0.01, 0.011283415555849616),
    (0.1, 0.1124629160182849),
    (0.25, 0.2763263901682369),
    (0.5, 0.5204998778130465),
    (0.75, 0.7111556336535151),
    (1.0, 0.8427007929497149),
    (1.25, 0.9229001282564582),
    (1.5, 0.9661051464753108),
    (1.75, 0.9866716712191824),
    (2.0, 0.9953222650189527),
    (2.25, 0.9985372834133188),
    (2.4, 0.999311486103355),
    (2.49, 0.9995707121322661),
    (2.5, 0.999593047982555),
    (2.51, 0.9996142945182758),
    (2.75, 0.9998993780778803),
    (3.0, 0.9999779095030014),
    (3.5, 0.9999992569016276),
    (4.0, 0.9999999845827421),
    (4.5, 0.9999999998033839),
    (5.0, 0.9999999999984626),
    (5.5, 0.9999999999999927),
    (5.9, 0.9999999999999999),
    (6.0, 1.0),
    (7.0, 1.0),
];

#[test]
fn erf_matches_python() {
    for (x, want) in PY_ERF {
        for (x, want) in [(x, want), (-x, -want)] {
            let got = act::erf_f64(x);
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1e-300),
                "erf({x}) = {got}, Python says {want}"
            );
        }
    }
    assert!(act::erf_f64(f64::NAN).is_nan());
}

/// Points spread over the range where the activations do something interesting.
fn activation_inputs() -> Vec<f32> {
    let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0075).collect();
    v.extend([
        1e-30, -1e-30, 1e-7, -1e-7, 80.0, -80.0, 100.0, -100.0, 0.0, -0.0,
    ]);
    v
}

#[test]
fn activation_references_match_f64() {
    for &x in &activation_inputs() {
        let xd = x as f64;
        let silu = xd / (1.0 + (-xd).exp());
        let z = (2.0f64 / std::f64::consts::PI).sqrt() * xd * (1.0 + 0.044715 * xd * xd);
        let gelu = 0.5 * xd * (1.0 + z.tanh());
        let gelu_erf = 0.5 * xd * (1.0 + act::erf_f64(xd / std::f64::consts::SQRT_2));
        // SiLU: a few f32 roundings. GELU: the f32 formula cancels for negative x (see the
        // file docs), so its error is bounded by |x|, not by the result.
        let cases = [
            (
                "silu",
                act::silu_f32(x) as f64,
                silu,
                4e-7 * silu.abs() + 1e-40,
            ),
            (
                "gelu",
                act::gelu_f32(x) as f64,
                gelu,
                2e-7 * xd.abs() + 1e-40,
            ),
            (
                "gelu_erf",
                act::gelu_erf_f32(x) as f64,
                gelu_erf,
                2e-7 * xd.abs() + 1e-40,
            ),
        ];
        for (name, got, want, tol) in cases {
            assert!(
                (got - want).abs() <= tol,
                "{name}({x}) = {got}, f64 says {want}"
            );
        }
    }
}

#[test]
fn rms_norm_reference_matches_f64() {
    let x: Vec<f32> = (0..4096)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.013)
        .collect();
    let w: Vec<f32> = (0..4096).map(|i| 0.5 + (i % 13) as f32 * 0.1).collect();
    let eps = 1e-5f32;
    let mean = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (mean + eps as f64).sqrt();
    let ops = scalar();
    let mut out = vec![0.0; x.len()];
    ops.rms_norm(&x, None, eps, &mut out);
    let want: Vec<f32> = x.iter().map(|&v| (v as f64 * scale) as f32).collect();
    assert_close("rms_norm", &out, &want, 3e-7, |_| 0.0);
    ops.rms_norm(&x, Some(&w), eps, &mut out);
    let want: Vec<f32> = x
        .iter()
        .zip(&w)
        .map(|(&v, &w)| (v as f64 * scale * w as f64) as f32)
        .collect();
    assert_close("rms_norm·w", &out, &want, 4e-7, |_| 0.0);
}

#[test]
fn softmax_reference_matches_f64() {
    let x: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
        .collect();
    let mask: Vec<f32> = (0..1000)
        .map(|i| {
            if i % 7 == 3 {
                f32::NEG_INFINITY
            } else {
                (i % 5) as f32 * -0.5
            }
        })
        .collect();
    let scale = 0.125f32;
    let w: Vec<f64> = x
        .iter()
        .zip(&mask)
        .map(|(&v, &m)| v as f64 * scale as f64 + m as f64)
        .collect();
    let max = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = w.iter().map(|v| (v - max).exp()).sum();
    let want: Vec<f32> = w.iter().map(|v| ((v - max).exp() / sum) as f32).collect();
    let mut got = x.clone();
    scalar().softmax(&mut got, scale, Some(&mask));
    assert_close("softmax", &got, &want, 5e-7, |_| 1e-12);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &v)| (i % 7 == 3) == (v == 0.0)));

    let mut all_masked = vec![1.0f32; 10];
    scalar().softmax(&mut all_masked, 1.0, Some(&[f32::NEG_INFINITY; 10]));
    assert_eq!(all_masked, [0.0; 10], "a fully masked row becomes zeros");
}

#[test]
fn rope_cache_matches_f64_angles() {
    // theta_i = pos·base^(-2i/n_dims)·freq_scale / freq_factor_i. ggml advances theta by
    // repeated f32 multiplication, so the angle's relative error grows by about one
    // rounding per pair; cos/sin inherit that absolute error.
    let n_dims = 128;
    let factors: Vec<f32> = (0..n_dims / 2).map(|i| 1.0 + (i % 4) as f32).collect();
    for (base, scale, ff) in [
        (10000.0f32, 1.0f32, None),
        (500000.0, 0.25, Some(&factors[..])),
    ] {
        let mut p = RopeParams::new(n_dims, RopeMode::Normal, base);
        p.freq_scale = scale;
        let mut cache = RopeCache::new(p, ff).unwrap();
        for pos in [0u32, 1, 7, 100, 4095, 65535] {
            cache.set_pos(pos);
            for i in 0..n_dims / 2 {
                let f = ff.map_or(1.0, |f| f[i] as f64);
                let theta =
                    pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_dims as f64) * scale as f64
                        / f;
                let tol = theta * (2 * i + 3) as f64 * 6e-8 + 3e-7;
                let (c, s) = (cache.cos()[i] as f64, cache.sin()[i] as f64);
                assert!(
                    (c - theta.cos()).abs() <= tol,
                    "cos pos {pos} pair {i}: {c}"
                );
                assert!(
                    (s - theta.sin()).abs() <= tol,
                    "sin pos {pos} pair {i}: {s}"
                );
            }
        }
    }
}

/// A table of a batch's positions gives each row what `set_pos` gives that position, bit
/// for bit, whether it was filled for those positions or kept from a call with the same
/// ones, and it is refilled when the positions change.
#[test]
fn rope_table_rows_equal_single_positions() {
    let (head_dim, n_dims) = (64, 64);
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let mut cache = RopeCache::new(RopeParams::new(n_dims, mode, 10000.0), None).unwrap();
        let mut single = cache.clone();
        cache.reserve(4);
        for pos in [
            &[5u32, 6, 7, 900][..],
            &[5, 6, 7, 900],
            &[0, 3],
            &[70000, 1, 2, 3, 4],
        ] {
            cache.set_positions(pos);
            for (i, &p) in pos.iter().enumerate() {
                single.set_pos(p);
                let (cos, sin) = cache.row(i);
                assert_eq!((cos, sin), (single.cos(), single.sin()), "{mode:?} pos {p}");
                let x: Vec<f32> = (0..2 * head_dim).map(|j| 1.0 + j as f32 * 0.1).collect();
                let (mut a, mut b) = (x.clone(), x);
                scalar().rope(&mut a, head_dim, &single);
                scalar().rope_row(&mut b, head_dim, &cache, i);
                assert_eq!(a, b, "{mode:?} pos {p}");
            }
        }
    }
}

#[test]
fn rope_yarn_cache_matches_f64() {
    // YaRN as ggml's rope_yarn: theta = interp·(1 - mix) + extrap·mix with
    // mix = ramp(i)·ext_factor, and mscale = attn_factor·(1 + 0.1·ln(1/freq_scale)).
    let mut p = RopeParams::new(64, RopeMode::Neox, 10000.0);
    p.freq_scale = 0.25;
    p.ext_factor = 1.0;
    p.attn_factor = 1.0;
    p.n_ctx_orig = 4096;
    let [low, high] = p.yarn_corr_dims();
    // corr_dim(n_rot) = n_dims·ln(n_ctx_orig / (2π·n_rot)) / (2·ln base)
    let corr = |n_rot: f64| {
        64.0 * (4096.0 / (2.0 * std::f64::consts::PI * n_rot)).ln() / (2.0 * 10000f64.ln())
    };
    assert_eq!(low as f64, corr(32.0).floor().max(0.0));
    assert_eq!(high as f64, corr(1.0).ceil().min(63.0));
    let mut cache = RopeCache::new(p, None).unwrap();
    let pos = 3000u32;
    cache.set_pos(pos);
    let mscale = 1.0 + 0.1 * (4.0f64).ln();
    for i in 0..32 {
        let extrap = pos as f64 * 10000f64.powf(-2.0 * i as f64 / 64.0);
        let y = (i as f64 - low as f64) / (high as f64 - low as f64).max(0.001);
        let mix = 1.0 - y.clamp(0.0, 1.0);
        let theta = 0.25 * extrap * (1.0 - mix) + extrap * mix;
        let tol = theta * (2 * i + 3) as f64 * 6e-8 + 5e-7;
        assert!(
            (cache.cos()[i] as f64 - theta.cos() * mscale).abs() <= tol,
            "cos {i}"
        );
        assert!(
            (cache.sin()[i] as f64 - theta.sin() * mscale).abs() <= tol,
            "sin {i}"
        );
    }
}

#[test]
fn rope_rotates_the_documented_pairs() {
    let (head_dim, n_dims, n_head) = (16, 8, 2);
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        let mut cache = RopeCache::new(RopeParams::new(n_dims, mode, 10000.0), None).unwrap();
        cache.set_pos(3);
        let x: Vec<f32> = (0..head_dim * n_head)
            .map(|i| 1.0 + i as f32 * 0.25)
            .collect();
        let mut got = x.clone();
        scalar().rope(&mut got, head_dim, &cache);
        for h in 0..n_head {
            let (xh, gh) = (
                &x[h * head_dim..][..head_dim],
                &got[h * head_dim..][..head_dim],
            );
            for i in 0..n_dims / 2 {
                let (a, b) = match mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + n_dims / 2),
                };
                let (c, s) = (cache.cos()[i] as f64, cache.sin()[i] as f64);
                let (x0, x1) = (xh[a] as f64, xh[b] as f64);
                assert!(
                    (gh[a] as f64 - (x0 * c - x1 * s)).abs() < 1e-5,
                    "{mode:?} h{h} {a}"
                );
                assert!(
                    (gh[b] as f64 - (x0 * s + x1 * c)).abs() < 1e-5,
                    "{mode:?} h{h} {b}"
                );
            }
            assert_eq!(
                &gh[n_dims..],
                &xh[n_dims..],
                "{mode:?}: dims past n_dims unchanged"
            );
        }
    }
}

#[test]
fn rope_position_zero_is_identity_and_params_are_validated() {
    let cache = RopeCache::new(RopeParams::new(64, RopeMode::Neox, 10000.0), None).unwrap();
    let x: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let mut y = x.clone();
    scalar().rope(&mut y, 64, &cache);
    assert_eq!(x, y);
    let bad = |n, base: f32, ff: Option<&[f32]>| {
        RopeCache::new(RopeParams::new(n, RopeMode::Normal, base), ff).unwrap_err()
    };
    assert_eq!(bad(0, 1e4, None), RopeError::Dims(0));
    assert_eq!(bad(7, 1e4, None), RopeError::Dims(7));
    assert!(matches!(
        bad(8, f32::NAN, None),
        RopeError::Frequencies { .. }
    ));
    assert_eq!(
        bad(8, 1e4, Some(&[1.0; 3])),
        RopeError::FreqFactors {
            expected: 4,
            actual: 3
        }
    );
}

// ---------------------------------------------------------------------------------------
// SIMD levels against the scalar reference.

#[test]
fn exp_special_values_at_every_level() {
    let x = [
        0.0f32,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.72,
        88.73,
        89.0,
        1000.0,
        -87.33,
        -87.4,
        -104.0,
        -1000.0,
    ];
    for ops in simd_levels() {
        let mut got = x;
        ops.exp(&mut got);
        let want = x.map(f32::exp);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w < f32::MIN_POSITIVE {
                g <= w.max(f32::MIN_POSITIVE) && g >= 0.0
            } else if w.is_infinite() {
                g == w
            } else {
                (g as f64 - w as f64).abs() <= 2.5e-7 * w as f64
            };
            assert!(ok, "{:?}: exp({}) = {g:e}, want {w:e}", ops.level(), x[i]);
        }
    }
}

/// Runs `f` on a copy of `x` with the scalar table and with each SIMD table, handing both
/// results to `check`.
fn compare_unary(x: &[f32], f: impl Fn(&Ops, &mut [f32]), check: impl Fn(&str, &[f32], &[f32])) {
    let mut want = x.to_vec();
    f(&scalar(), &mut want);
    for ops in simd_levels() {
        let mut got = x.to_vec();
        f(&ops, &mut got);
        check(ops.level().name(), &got, &want);
    }
}

fn values(range: std::ops::Range<f32>, max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(range, 0..max_len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn exp_matches_scalar(x in values(-87.3f32..88.7, 100)) {
        compare_unary(&x, |o, v| o.exp(v), |l, g, w| assert_close(&format!("{l} exp"), g, w, 2.5e-7, |_| 0.0));
    }

    #[test]
    fn tanh_matches_scalar(x in values(-12.0f32..12.0, 100)) {
        compare_unary(&x, |o, v| o.tanh(v), |l, g, w| assert_close(&format!("{l} tanh"), g, w, 4e-7, |_| 0.0));
    }

    #[test]
    fn silu_matches_scalar(x in values(-60.0f32..60.0, 100)) {
        compare_unary(&x, |o, v| o.silu(v), |l, g, w| assert_close(&format!("{l} silu"), g, w, 6e-7, |_| 1e-37));
    }

    #[test]
    fn gelu_matches_scalar(x in values(-30.0f32..30.0, 100)) {
        let xs = x.clone();
        compare_unary(&x, |o, v| o.gelu(v), |l, g, w| assert_close(&format!("{l} gelu"), g, w, 0.0, |i| 4e-7 * xs[i].abs() as f64 + 1e-37));
        let xs = x.clone();
        compare_unary(&x, |o, v| o.gelu_erf(v), |l, g, w| assert_close(&format!("{l} gelu_erf"), g, w, 0.0, |i| 4e-7 * xs[i].abs() as f64 + 1e-37));
    }

    #[test]
    fn gated_match_scalar(pairs in prop::collection::vec((-30.0f32..30.0, -4.0f32..4.0), 0..100)) {
        let (gate, up): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
        let s = scalar();
        for ops in simd_levels() {
            let (mut want, mut got) = (gate.clone(), gate.clone());
            s.silu_mul(&mut want, &up);
            ops.silu_mul(&mut got, &up);
            assert_close(&format!("{} silu_mul", ops.level().name()), &got, &want, 6e-7, |_| 1e-37);
            let (mut want, mut got) = (gate.clone(), gate.clone());
            s.gelu_mul(&mut want, &up);
            ops.gelu_mul(&mut got, &up);
            let tol = |i: usize| 4e-7 * (gate[i] * up[i]).abs() as f64 + 1e-37;
            assert_close(&format!("{} gelu_mul", ops.level().name()), &got, &want, 0.0, tol);
        }
    }

    #[test]
    fn rms_norm_matches_scalar(
        x in values(-100.0f32..100.0, 300),
        w_seed in 0u32..1000,
        eps in prop::sample::select(vec![1e-5f32, 1e-6, 0.0]),
    ) {
        prop_assume!(x.iter().any(|&v| v != 0.0) || eps > 0.0);
        let w: Vec<f32> = (0..x.len()).map(|i| ((i as u32 * 31 + w_seed) % 200) as f32 * 0.01 - 1.0).collect();
        let s = scalar();
        for ops in simd_levels() {
            for weight in [None, Some(&w[..])] {
                let (mut want, mut got) = (vec![0.0; x.len()], vec![0.0; x.len()]);
                s.rms_norm(&x, weight, eps, &mut want);
                ops.rms_norm(&x, weight, eps, &mut got);
                assert_close(&format!("{} rms_norm", ops.level().name()), &got, &want, 2.4e-7, |_| 0.0);
            }
        }
    }

    #[test]
    fn rope_matches_scalar_bit_for_bit(
        half in 1usize..80,
        extra in 0usize..20,
        n_head in 1usize..4,
        pos in 0u32..100_000,
        neox in any::<bool>(),
        seed in any::<u32>(),
    ) {
        let n_dims = 2 * half;
        let head_dim = n_dims + extra;
        let mode = if neox { RopeMode::Neox } else { RopeMode::Normal };
        let mut cache = RopeCache::new(RopeParams::new(n_dims, mode, 10000.0), None).unwrap();
        cache.set_pos(pos);
        let x: Vec<f32> = (0..head_dim * n_head)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 * 8.0 - 4.0)
            .collect();
        let mut want = x.clone();
        scalar().rope(&mut want, head_dim, &cache);
        for ops in simd_levels() {
            let mut got = x.clone();
            ops.rope(&mut got, head_dim, &cache);
            prop_assert_eq!(&got, &want, "{} {:?}", ops.level().name(), mode);
        }
    }

    #[test]
    fn softmax_matches_scalar(
        entries in prop::collection::vec((-50.0f32..50.0, 0u8..10), 1..300),
        scale in prop::sample::select(vec![1.0f32, 0.125, 0.0883883]),
    ) {
        let x: Vec<f32> = entries.iter().map(|e| e.0).collect();
        // About one entry in five masked out, the rest with a small additive bias.
        let mask: Vec<f32> = entries
            .iter()
            .map(|e| if e.1 < 2 { f32::NEG_INFINITY } else { -0.1 * e.1 as f32 })
            .collect();
        for m in [None, Some(&mask[..])] {
            let mut want = x.clone();
            scalar().softmax(&mut want, scale, m);
            for ops in simd_levels() {
                let mut got = x.clone();
                ops.softmax(&mut got, scale, m);
                assert_close(&format!("{} softmax", ops.level().name()), &got, &want, 8e-7, |_| 1e-9);
                if m.is_some() {
                    prop_assert!(got.iter().zip(&mask).all(|(&v, &m)| (m == f32::NEG_INFINITY) <= (v == 0.0)));
                }
            }
        }
    }
}

#[test]
fn softmax_fully_masked_row_is_zero_at_every_level() {
    for ops in simd_levels() {
        for n in [1, 7, 8, 16, 33] {
            let mut x = vec![3.0f32; n];
            ops.softmax(&mut x, 1.0, Some(&vec![f32::NEG_INFINITY; n]));
            assert_eq!(x, vec![0.0; n], "{:?} n={n}", ops.level());
        }
    }
}

/// Floats that a key must order as `total_cmp` does: both zeros, both infinities, both
/// NaN signs, subnormals, the extremes.
fn awkward_floats() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.0,
        3.5,
        -7.25,
    ]
}

#[test]
fn keys_order_as_total_cmp_with_nan_as_minus_infinity() {
    let xs = awkward_floats();
    for &a in &xs {
        for &b in &xs {
            assert_eq!(
                raw_key(a).cmp(&raw_key(b)),
                a.total_cmp(&b),
                "raw_key({a:?}) against raw_key({b:?})"
            );
            let read = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
            assert_eq!(
                order_key(a).cmp(&order_key(b)),
                read(a).total_cmp(&read(b)),
                "order_key({a:?}) against order_key({b:?})"
            );
        }
    }
}

/// The reference written the plain way: each block's largest logit in `total_cmp`'s
/// order, NaN read as `-inf`, then its key.
fn block_maxima_by_total_cmp(x: &[f32]) -> Vec<i32> {
    x.chunks(KEY_BLOCK)
        .map(|b| {
            let read = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
            let m = b.iter().map(|&x| read(x)).max_by(f32::total_cmp);
            raw_key(m.expect("blocks are not empty"))
        })
        .collect()
}

#[test]
fn block_max_keys_at_every_level_equal_the_reference() {
    let awkward = awkward_floats();
    let mut rng = Rng(7);
    for n in [0, 1, 15, 63, 64, 65, 200, 4096, 262_144 / 8 + 3] {
        for case in 0..4 {
            // Random bit patterns (every kind of float), logits-like values, blocks that
            // are all negative, and awkward values sprinkled over logits.
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let r = rng.next();
                    match case {
                        0 => f32::from_bits(r as u32),
                        1 => (r % 20_000) as f32 / 1000.0 - 10.0,
                        2 => -((r % 1000) as f32) / 7.0,
                        _ if r.is_multiple_of(9) => awkward[i % awkward.len()],
                        _ => (r % 2000) as f32 / 100.0 - 10.0,
                    }
                })
                .collect();
            let want = block_maxima_by_total_cmp(&x);
            let mut got = vec![0; n.div_ceil(KEY_BLOCK)];
            scalar().block_max_keys(&x, &mut got);
            assert_eq!(got, want, "scalar n={n} case={case}");
            for ops in simd_levels() {
                got.fill(0);
                ops.block_max_keys(&x, &mut got);
                assert_eq!(got, want, "{:?} n={n} case={case}", ops.level());
            }
        }
    }
}

#[test]
#[should_panic(expected = "one key per block")]
fn block_max_keys_checks_its_output_length() {
    Ops::get().block_max_keys(&[1.0; 65], &mut [0; 1]);
}

#[test]
fn ops_get_follows_the_kernels_level() {
    assert_eq!(
        Ops::get().level(),
        hearth_kernels::dispatch::Kernels::get().level()
    );
}

#[test]
#[cfg(target_arch = "aarch64")]
fn neon_is_among_the_levels_tested() {
    assert!(simd_levels().iter().any(|o| o.level() == Level::Neon));
}
