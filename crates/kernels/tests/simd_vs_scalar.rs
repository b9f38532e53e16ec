//! Every SIMD level this CPU runs, checked against the scalar references.
//!
//! The tests go only through [`Kernels::for_level`], never through an architecture's
//! module, so the same file checks AVX2 and AVX-512 on x86-64 and NEON on aarch64 (under
//! qemu in CI). `HEARTH_CPU` is not needed: each level's table is built directly.
//!
//! - Quantizers (Q8_0, Q8_1, Q8_K) must produce the scalar bytes exactly, for random rows
//!   and for the awkward ones: ties at .5, zeros, a maximum that appears with both signs,
//!   huge, tiny, infinite and NaN values.
//! - Dots must agree within a bound derived from the float arithmetic both sides do (see
//!   [`tolerance`]). Weight rows are random bytes with random finite scales written into
//!   the scale fields, so every quant value, -128 for Q8_0 included, is exercised;
//!   activations are random f32 rows quantized by the *scalar* quantizer.

use half::f16;
use hearth_kernels::dispatch::{Kernels, Level};
use hearth_kernels::quant::{activation_type, dequantize_row, TensorType};
use proptest::prelude::*;

/// The scalar table, the reference.
fn scalar() -> Kernels {
    Kernels::for_level(Level::Scalar).expect("scalar always runs")
}

/// The tables of every non-scalar level this CPU supports.
fn simd_levels() -> Vec<Kernels> {
    Level::supported()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
        .map(|l| Kernels::for_level(l).expect("supported level builds"))
        .collect()
}

/// Weight types with a scalar dot (all computable types).
fn dot_types() -> Vec<TensorType> {
    let s = scalar();
    TensorType::ALL
        .into_iter()
        .filter(|&t| s.dot(t).is_some())
        .collect()
}

const ACTIVATION_TYPES: [TensorType; 3] = [TensorType::Q8_0, TensorType::Q8_1, TensorType::Q8_K];

mod kernel_inputs;

use kernel_inputs::Rng;

/// Bytes in a buffer aligned for f32, as the `DotFn` contract asks of activations.
fn aligned_bytes(n: usize) -> Vec<u32> {
    vec![0u32; n.div_ceil(4)]
}

/// Views the first `n` bytes of an aligned buffer.
fn view(buf: &[u32], n: usize) -> &[u8] {
    &bytemuck::cast_slice(buf)[..n]
}

/// A random activation row of `n` values: mostly uniform at a random magnitude, with
/// zeros and outliers mixed in.
fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    let scale = 10f32.powf(6.0 * rng.unit() - 3.0);
    (0..n)
        .map(|_| match rng.below(16) {
            0 => 0.0,
            1 => 20.0 * scale * rng.signed(),
            _ => scale * rng.signed(),
        })
        .collect()
}

/// A random finite scale for a weight block: either sign, magnitude 2^-12 .. 1.
fn scale_f16(rng: &mut Rng) -> [u8; 2] {
    let v = rng.signed() * 2f32.powi(-(rng.below(12) as i32));
    f16::from_f32(v).to_le_bytes()
}

/// Offsets of the f16 scale fields in one block of `ty` (`d`, and `m`/`dmin` where the
/// format has one), from the block layouts in `quant::blocks`.
fn f16_fields(ty: TensorType) -> &'static [usize] {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random weight row of `n` elements of `ty` (for block formats, `n` a multiple of the
/// block length): random bytes with valid finite scales written into them.
fn weights(rng: &mut Rng, ty: TensorType, n: usize) -> Vec<u8> {
    let (len, size) = ty.layout();
    let nb = n / len;
    match ty {
        TensorType::F32 => (0..n)
            .flat_map(|_| (rng.signed() * 2f32.powi(rng.below(8) as i32)).to_le_bytes())
            .collect(),
        TensorType::F16 => (0..n)
            .flat_map(|_| {
                f16::from_f32(rng.signed() * 2f32.powi(rng.below(16) as i32)).to_le_bytes()
            })
            .collect(),
        TensorType::BF16 => (0..n)
            .flat_map(|_| {
                let v = rng.signed() * 2f32.powi(rng.below(32) as i32 - 16);
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect(),
        _ => {
            let mut w = rng.bytes(nb * size);
            for b in w.chunks_exact_mut(size) {
                for &off in f16_fields(ty) {
                    b[off..off + 2].copy_from_slice(&scale_f16(rng));
                }
                if ty == TensorType::Q8_K {
                    b[..4].copy_from_slice(&(rng.signed() * 0.01).to_le_bytes());
                }
            }
            w
        }
    }
}

/// The largest magnitude of any single product term's weight factor in one block of
/// `ty`, from its scale fields: e.g. Q4_K weights are `d·sc·q - dmin·m` with sc, m < 64
/// and q < 16, and the two parts are summed separately, so the bound is
/// `63·15·|d| + 63·|dmin|`.
fn weight_part_bound(ty: TensorType, block: &[u8]) -> f32 {
    use TensorType::*;
    let h = |off: usize| {
        f16::from_le_bytes([block[off], block[off + 1]])
            .to_f32()
            .abs()
    };
    match ty {
        Q4_0 => 8.0 * h(0),
        Q4_1 => 15.0 * h(0) + h(2),
        Q5_0 => 16.0 * h(0),
        Q5_1 => 31.0 * h(0) + h(2),
        Q8_0 => 128.0 * h(0),
        IQ4_NL => 127.0 * h(0),
        Q2_K => 15.0 * 3.0 * h(80) + 15.0 * h(82),
        Q3_K => 32.0 * 4.0 * h(108),
        Q4_K => 63.0 * 15.0 * h(0) + 63.0 * h(2),
        Q5_K => 63.0 * 31.0 * h(0) + 63.0 * h(2),
        Q6_K => 128.0 * 32.0 * h(208),
        IQ4_XS => 32.0 * 127.0 * h(0),
        Q8_K => 128.0 * f32::from_le_bytes([block[0], block[1], block[2], block[3]]).abs(),
        _ => unreachable!("{ty} is not a block format"),
    }
}

/// The bound `M` on every partial sum either implementation forms: Σ over elements of
/// (largest weight part in its block) × |activation as quantized|; for the float formats,
/// Σ |w·a| exactly.
fn magnitude(ty: TensorType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let act = activation_type(ty);
    let mut a_deq = vec![0f32; n];
    dequantize_row(act, a, &mut a_deq).expect("activation dequantizes");
    match ty {
        TensorType::F32 | TensorType::F16 | TensorType::BF16 => {
            let mut w_deq = vec![0f32; n];
            dequantize_row(ty, w, &mut w_deq).expect("weights dequantize");
            w_deq
                .iter()
                .zip(&a_deq)
                .map(|(w, a)| (w * a).abs() as f64)
                .sum()
        }
        _ => {
            let (len, size) = ty.layout();
            w.chunks_exact(size)
                .zip(a_deq.chunks_exact(len))
                .map(|(b, a)| {
                    weight_part_bound(ty, b) as f64 * a.iter().map(|v| v.abs() as f64).sum::<f64>()
                })
                .sum()
        }
    }
}

/// How far a level's dot may be from the scalar one, given the magnitude `m`.
///
/// Both sides compute the same exact integer sums (quantized formats) or the same
/// products (float formats); they differ only in the order of float additions and in
/// fused vs separate multiply-adds. Each such operation errs by at most ε = 2⁻²⁴ of a
/// value bounded by `m`, and the chains of dependent additions are short for the
/// quantized formats: the longest is the IQ4_XS reference's, one addition per 32-weight
/// sub-block (64 for the 8 super-blocks tested), next to which a kernel's per-lane sums
/// and final reduction add fewer than 32 more, so 128ε covers both sides. For float
/// formats the chain grows with the row
/// (n/16 elements per lane for 16 lanes, the narrowest NEON split; the reference sums in
/// f64 and is effectively exact), hence `(n/16 + 64)ε`.
///
/// Any real kernel bug (one wrong quant among n) moves the result by roughly `m/(q·n)`
/// for a format with quant range q, far above these bounds for the sizes tested here.
fn tolerance(ty: TensorType, n: usize, m: f64) -> f64 {
    let eps = f32::EPSILON as f64 / 2.0;
    let ops = match ty {
        TensorType::F32 | TensorType::F16 | TensorType::BF16 => (n / 16 + 64) as f64,
        _ => 128.0,
    };
    ops * eps * m + f32::MIN_POSITIVE as f64
}

/// Quantizes `x` into `act` with `k`'s quantizer (F32 activations: the raw f32 bytes),
/// into an f32-aligned buffer.
fn quantize(k: &Kernels, act: TensorType, x: &[f32]) -> (Vec<u32>, usize) {
    let bytes = act.row_bytes(x.len() as u64).expect("whole blocks") as usize;
    let mut buf = aligned_bytes(bytes);
    let q = k.quantizer(act).expect("activation quantizer");
    q(x, &mut bytemuck::cast_slice_mut(&mut buf)[..bytes]);
    (buf, bytes)
}

/// Checks every level's dot for `ty` on one weight row and one activation row.
fn check_dot(ty: TensorType, w: &[u8], x: &[f32]) -> Result<(), TestCaseError> {
    let reference = scalar();
    let act = activation_type(ty);
    let (abuf, alen) = quantize(&reference, act, x);
    let a = view(&abuf, alen);
    let want = reference.dot(ty).unwrap()(w, a);
    let m = magnitude(ty, w, a, x.len());
    let tol = tolerance(ty, x.len(), m);
    for k in simd_levels() {
        let got = k.dot(ty).expect("every level has every scalar dot")(w, a);
        let diff = (got as f64 - want as f64).abs();
        // Overflow to the same infinity (or NaN on both sides) is agreement too.
        let same_nonfinite = got == want || (got.is_nan() && want.is_nan());
        prop_assert!(
            diff <= tol || same_nonfinite,
            "{ty} dot at {:?}, {} elements: got {got}, scalar {want}, |diff| {diff:e} > \
             tolerance {tol:e} (magnitude {m:e})",
            k.level(),
            x.len()
        );
    }
    Ok(())
}

/// Checks every level's quantizer for `act` on `x` against the scalar bytes.
fn check_quantizer(act: TensorType, x: &[f32]) -> Result<(), TestCaseError> {
    let (want, n) = quantize(&scalar(), act, x);
    for k in simd_levels() {
        let (got, _) = quantize(&k, act, x);
        let (got, want) = (view(&got, n), view(&want, n));
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            let block = act.block_bytes();
            prop_assert!(
                false,
                "{act} quantizer at {:?}: byte {i} (block {}, offset {}) is {:#04x}, scalar \
                 {:#04x}; block input {:?}",
                k.level(),
                i / block,
                i % block,
                got[i],
                want[i],
                &x[(i / block) * act.block_len()..][..act.block_len()]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Block formats: 1..=8 blocks of random weights against random activations.
    #[test]
    fn block_dots_match_scalar(seed in any::<u64>(), nb in 1usize..=8) {
        let mut rng = Rng(seed);
        for ty in dot_types() {
            if ty.block_len() == 1 {
                continue;
            }
            let n = nb * ty.block_len();
            let w = weights(&mut rng, ty, n);
            let x = activations(&mut rng, n);
            check_dot(ty, &w, &x)?;
        }
    }

    /// Float formats at every length from 0 to 300, which covers each kernel's unrolled
    /// body, its narrower loop and its scalar tail.
    #[test]
    fn float_dots_match_scalar(seed in any::<u64>(), n in 0usize..=300) {
        let mut rng = Rng(seed);
        for ty in [TensorType::F32, TensorType::F16, TensorType::BF16] {
            let w = weights(&mut rng, ty, n);
            let x = activations(&mut rng, n);
            check_dot(ty, &w, &x)?;
        }
    }

    /// Random rows, 1..=8 blocks of each activation format.
    #[test]
    fn quantizers_match_scalar(seed in any::<u64>(), nb in 1usize..=8) {
        let mut rng = Rng(seed);
        for act in ACTIVATION_TYPES {
            let x = activations(&mut rng, nb * act.block_len());
            check_quantizer(act, &x)?;
        }
    }

    /// Rows of half-integers whose largest magnitude is 127, so that `x / d` lands exactly
    /// on .5 ties: Q8_0/Q8_1 round them away from zero, Q8_K to even.
    #[test]
    fn quantizers_match_scalar_on_ties(seed in any::<u64>(), nb in 1usize..=4) {
        let mut rng = Rng(seed);
        for act in ACTIVATION_TYPES {
            let len = act.block_len();
            let mut x: Vec<f32> = (0..nb * len)
                .map(|_| rng.below(253) as f32 - 126.0 + if rng.below(2) == 0 { 0.5 } else { 0.0 })
                .collect();
            for b in 0..nb {
                let i = b * len + rng.below(len as u64) as usize;
                x[i] = if rng.below(2) == 0 { 127.0 } else { -127.0 };
            }
            check_quantizer(act, &x)?;
        }
    }
}

/// Fixed awkward activation rows, one block each of the given length.
fn awkward_rows(len: usize) -> Vec<Vec<f32>> {
    let ramp = |s: f32| {
        (0..len)
            .map(|i| s * (i as f32 - len as f32 / 2.0))
            .collect::<Vec<_>>()
    };
    let mut both_signs = vec![0.5f32; len];
    both_signs[3] = -2.0;
    both_signs[len - 1] = 2.0;
    let mut one = vec![0.0f32; len];
    one[len / 2] = -1.0;
    let mut with_nan = ramp(1.0);
    with_nan[1] = f32::NAN;
    let mut with_inf = ramp(1.0);
    with_inf[2] = f32::INFINITY;
    vec![
        vec![0.0; len],
        vec![-0.0; len],
        one,
        both_signs,
        ramp(1.0),
        ramp(1e-3),
        ramp(1e6),
        ramp(1e30),
        ramp(1e-38),
        ramp(1e-42),
        vec![f32::MAX; len],
        vec![f32::MIN_POSITIVE; len],
        with_nan,
        with_inf,
        vec![f32::NAN; len],
        vec![f32::NEG_INFINITY; len],
    ]
}

/// Zeros, a maximum present with both signs (the first one decides Q8_K's sign), huge,
/// tiny, subnormal, infinite and NaN values: the quantizers still match byte for byte.
#[test]
fn quantizers_match_scalar_on_awkward_rows() {
    for act in ACTIVATION_TYPES {
        for x in awkward_rows(act.block_len()) {
            check_quantizer(act, &x).unwrap();
        }
        // Several blocks of different character in one row.
        let row: Vec<f32> = awkward_rows(act.block_len()).concat();
        check_quantizer(act, &row).unwrap();
    }
}

/// Empty rows, all-zero activations and large activations, for every dot.
#[test]
fn dots_match_scalar_on_awkward_rows() {
    let mut rng = Rng(7);
    for ty in dot_types() {
        let len = ty.block_len();
        // An empty row is a valid row of zero blocks; every level must return 0. (The
        // slices come from aligned buffers: the `DotFn` contract asks that of `a`.)
        let empty = aligned_bytes(0);
        for k in simd_levels() {
            let got = k.dot(ty).unwrap()(view(&empty, 0), view(&empty, 0));
            assert_eq!(got, 0.0, "{ty} empty dot at {:?}", k.level());
        }
        let n = if len == 1 { 67 } else { 3 * len };
        let w = weights(&mut rng, ty, n);
        check_dot(ty, &w, &vec![0.0; n]).unwrap();
        // Large activations. Q8_0's f16 scale amax/127 stays finite up to 8e6, but Q8_1's
        // `s = d·Σq` overflows f16 sooner, so its rows get 1e3 for a finite case as well.
        for big in [1e6f32, 1e3] {
            let x: Vec<f32> = (0..n).map(|_| big * rng.signed()).collect();
            check_dot(ty, &w, &x).unwrap();
        }
    }
}

/// Float rows long enough to run the unrolled loops many times, with odd tails.
#[test]
fn float_dots_match_scalar_on_long_rows() {
    let mut rng = Rng(11);
    for n in [1023, 4096, 4099] {
        for ty in [TensorType::F32, TensorType::F16, TensorType::BF16] {
            let w = weights(&mut rng, ty, n);
            let x = activations(&mut rng, n);
            check_dot(ty, &w, &x).unwrap();
        }
    }
}

/// The tolerance is tight enough to see a single wrong quant: flipping one Q4_0 nibble
/// in a 256-element row must exceed it. (Guards the tests themselves against a bound so
/// loose that broken kernels pass.)
#[test]
fn tolerance_detects_one_wrong_quant() {
    let mut rng = Rng(3);
    let ty = TensorType::Q4_0;
    let n = 256;
    let x: Vec<f32> = (0..n).map(|_| 1.0 + rng.unit()).collect();
    let mut w = weights(&mut rng, ty, n);
    let reference = scalar();
    let (abuf, alen) = quantize(&reference, TensorType::Q8_0, &x);
    let a = view(&abuf, alen);
    let dot = reference.dot(ty).unwrap();
    let before = dot(&w, a);
    w[2] ^= 0x01;
    let after = dot(&w, a);
    let tol = tolerance(ty, n, magnitude(ty, &w, a, n));
    assert!(
        (after - before).abs() as f64 > 10.0 * tol,
        "one flipped quant moved the dot by {:e}, tolerance {tol:e}",
        (after - before).abs()
    );
}
