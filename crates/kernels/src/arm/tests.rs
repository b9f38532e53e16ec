//! NEON (both aarch64 levels: plain, and with the dot-product extension when the CPU
//! has it, as qemu's `max` CPU does) against scalar, bit for bit, on this machine (run
//! under qemu by `scripts/test-aarch64.sh`). `tests/simd_vs_scalar.rs` checks every level the same
//! way; these add the cases the NEON kernels are most likely to get wrong: arbitrary
//! bytes (quants of -128, odd scales, every high bit pattern), float tails shorter than a
//! vector, and ties in the quantizers' rounding and maximum search.

use crate::dispatch::{Kernels, Level};
use crate::quant::{activation_type, TensorType};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Roughly normal values with a few outliers, like activations.
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if self.next() & 63 == 0 {
                    u * 40.0
                } else {
                    u * 2.0
                }
            })
            .collect()
    }
}

/// The scalar table and every aarch64 level's this CPU runs.
fn tables() -> (Kernels, Vec<Kernels>) {
    let scalar = Kernels::for_level(Level::Scalar).expect("scalar");
    let neon = Kernels::for_level(Level::Neon).expect("aarch64 always has NEON");
    let levels = [neon]
        .into_iter()
        .chain(Kernels::for_level(Level::NeonDot))
        .collect();
    (scalar, levels)
}

#[test]
fn qemu_runs_the_dot_product_level() {
    // qemu-user's default `max` CPU has FEAT_DotProd and FEAT_I8MM: under
    // scripts/test-aarch64.sh every kernel of both levels must be exercised. On real
    // hardware without the extension this test has nothing to check.
    if std::env::var_os("HEARTH_EXPECT_DOTPROD").is_some() {
        assert!(Level::NeonDot.is_supported(), "dotprod not detected");
        assert!(
            std::arch::is_aarch64_feature_detected!("i8mm"),
            "i8mm not detected"
        );
    }
}

/// Makes every f16 scale at byte offsets `at` of each `bytes`-long block finite and
/// modest, so that random blocks do not produce inf/NaN sums (which compare unequal).
fn tame_f16(row: &mut [u8], bytes: usize, at: &[usize], rng: &mut Rng) {
    for block in row.chunks_exact_mut(bytes) {
        for &o in at {
            let h = half::f16::from_f32((rng.next() % 2000) as f32 / 1000.0 - 1.0);
            block[o..o + 2].copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// Byte offsets of the f16 fields of a format's blocks.
fn f16_fields(ty: TensorType) -> &'static [usize] {
    use TensorType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random activation row of `ty`'s activation format: raw bytes with tamed scales.
fn activations(ty: TensorType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let act = activation_type(ty);
    let mut a = rng.bytes(act.row_bytes(n as u64).unwrap() as usize);
    if act == TensorType::Q8_K {
        for block in a.chunks_exact_mut(act.block_bytes()) {
            let d = (rng.next() % 1000) as f32 / 1e5;
            block[..4].copy_from_slice(&d.to_le_bytes());
        }
    } else {
        tame_f16(&mut a, act.block_bytes(), f16_fields(act), rng);
    }
    a
}

const QUANT_DOTS: [TensorType; 13] = {
    use TensorType::*;
    [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_XS,
    ]
};

#[test]
fn quantized_dots_match_scalar_bits_on_random_bytes() {
    let (scalar, levels) = tables();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (ty, neon) in QUANT_DOTS
        .into_iter()
        .flat_map(|t| levels.iter().map(move |k| (t, k)))
    {
        for blocks in [1, 2, 7] {
            let n = blocks * ty.block_len();
            for _ in 0..20 {
                let mut w = rng.bytes(ty.row_bytes(n as u64).unwrap() as usize);
                tame_f16(&mut w, ty.block_bytes(), f16_fields(ty), &mut rng);
                if ty == TensorType::Q8_K {
                    for block in w.chunks_exact_mut(ty.block_bytes()) {
                        block[..4].copy_from_slice(&0.01f32.to_le_bytes());
                    }
                }
                let a = activations(ty, n, &mut rng);
                let want = scalar.dot(ty).unwrap()(&w, &a);
                let got = neon.dot(ty).unwrap()(&w, &a);
                let level = neon.level().name();
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} {level} n={n}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn several_rows_match_scalar_bits_on_random_bytes() {
    let (scalar, levels) = tables();
    let mut rng = Rng(0x5eed);
    let mut checked = 0;
    for neon in &levels {
        for ty in QUANT_DOTS {
            let Some(dot_rows) = neon.dot_rows(ty) else {
                continue;
            };
            for (blocks, n_rows) in [(1, 4), (3, 9), (2, 5), (1, 0)] {
                let n = blocks * ty.block_len();
                let row_bytes = ty.row_bytes(n as u64).unwrap() as usize;
                let mut w = rng.bytes(n_rows * row_bytes);
                tame_f16(&mut w, ty.block_bytes(), f16_fields(ty), &mut rng);
                let a = activations(ty, n, &mut rng);
                let mut got = vec![f32::NAN; n_rows];
                dot_rows(&w, row_bytes, &a, &mut got);
                for (r, got) in got.iter().enumerate() {
                    let want = scalar.dot(ty).unwrap()(&w[r * row_bytes..][..row_bytes], &a);
                    let level = neon.level().name();
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} {level} row {r} of {n_rows}, n={n}: {got} vs {want}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no several-rows kernel was checked");
}

#[test]
fn float_dots_match_scalar_with_tails() {
    let (scalar, levels) = tables();
    let neon = &levels[0];
    let mut rng = Rng(42);
    for ty in [TensorType::F32, TensorType::F16, TensorType::BF16] {
        for n in [1, 3, 4, 15, 16, 17, 64, 100, 4096] {
            let x = rng.floats(n);
            let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            crate::quant::quantize_row(ty, &x, &mut w).unwrap();
            let a: Vec<u8> = rng.floats(n).iter().flat_map(|v| v.to_le_bytes()).collect();
            let want = scalar.dot(ty).unwrap()(&w, &a);
            let got = neon.dot(ty).unwrap()(&w, &a);
            assert_eq!(got.to_bits(), want.to_bits(), "{ty} n={n}: {got} vs {want}");
        }
    }
}

#[test]
fn f16_widening_is_exact_for_every_half() {
    // Every finite half (subnormals included) through the NEON F16 dot with a one-hot
    // activation must come back as the half crate's value.
    let (_, levels) = tables();
    let dot = levels[0].dot(TensorType::F16).unwrap();
    let mut w = Vec::with_capacity(2 * 16);
    let a: Vec<u8> = (0..16)
        .flat_map(|i| if i == 5 { 1f32 } else { 0f32 }.to_le_bytes())
        .collect();
    for bits in 0..=u16::MAX {
        let h = half::f16::from_bits(bits);
        if !h.is_finite() {
            continue;
        }
        w.clear();
        for i in 0..16 {
            w.extend_from_slice(&if i == 5 { bits } else { 0 }.to_le_bytes());
        }
        // `+ 0.0`: the sum starts from +0, so a lone -0 product comes back as +0.
        let want = h.to_f32() + 0.0;
        assert_eq!(dot(&w, &a).to_bits(), want.to_bits(), "half {bits:#06x}");
    }
}

#[test]
fn scalar_half_conversion_is_the_crates_for_every_half() {
    // Against both of the crate's paths: the hardware one (taken under qemu, whose CPU
    // has FEAT_FP16) and the software one (taken on CPUs without it).
    for bits in 0..=u16::MAX {
        let h = half::f16::from_bits(bits);
        let got = super::simd::f16_le(bits.to_le_bytes());
        for want in [h.to_f32(), h.to_f32_const()] {
            assert_eq!(got.to_bits(), want.to_bits(), "half {bits:#06x}");
        }
    }
}

#[test]
fn quantizers_match_scalar_bytes() {
    let (scalar, levels) = tables();
    let neon = &levels[0];
    let mut rng = Rng(7);
    for act in [TensorType::Q8_0, TensorType::Q8_1, TensorType::Q8_K] {
        let len = act.block_len();
        let mut cases: Vec<Vec<f32>> = (0..30).map(|_| rng.floats(3 * len)).collect();
        // Ties: halves that round differently ties-away and ties-even once scaled
        // (amax 127 makes the scale 1), zeros, a repeated maximum of both signs.
        let mut ties: Vec<f32> = (0..len).map(|i| (i as f32 - 16.0) + 0.5).collect();
        ties[3] = 127.0;
        ties[9] = -127.0;
        cases.push(ties);
        cases.push(vec![0.0; len]);
        let mut neg_first = vec![0.25; len];
        neg_first[1] = -3.0;
        neg_first[len - 1] = 3.0;
        cases.push(neg_first);
        for x in cases {
            let size = act.row_bytes(x.len() as u64).unwrap() as usize;
            let (mut want, mut got) = (vec![0u8; size], vec![0u8; size]);
            scalar.quantizer(act).unwrap()(&x, &mut want);
            neon.quantizer(act).unwrap()(&x, &mut got);
            assert_eq!(got, want, "{act} quantizer on {:?}", &x[..8]);
        }
    }
}
