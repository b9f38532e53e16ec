//! Constants of the SIMD approximations of `exp`, `tanh` and `erfc`, shared by every
//! SIMD level (`crate::x86::ops`, `crate::arm::ops`) so that all levels compute the same
//! polynomials. The references these approximate are in [`super::act`].
//!
//! - `exp` is Cephes' `expf`: `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln2 split in two so the
//!   reduction is exact), `e^r ≈ 1 + r + r²·P(r)`, and `2^n` put into the exponent bits.
//!   Results below `f32::MIN_POSITIVE` flush to zero (no denormals, which are slow on
//!   many cores); NaN stays NaN.
//! - `tanh` is Cephes' `tanhf`: an odd polynomial below 0.625, `1 - 2/(e^2x + 1)` above.
//! - `erfc` is Numerical Recipes' `erfcc` (relative error below 1.2e-7 everywhere).

/// Inputs are clamped to `[EXP_LO, EXP_HI]`; below `EXP_LO` (just above
/// `ln(f32::MIN_POSITIVE)` = -87.33654) the result flushes to zero, and at `EXP_HI`
/// `e^x` already overflows to infinity.
pub(crate) const EXP_LO: f32 = -87.336_54;
pub(crate) const EXP_HI: f32 = 89.0;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split as in Cephes: `LN2_HI` (exactly 0.693359375) has few mantissa bits, so
/// `n·LN2_HI` is exact.
#[allow(clippy::excessive_precision)]
pub(crate) const LN2_HI: f32 = 0.693359375;
#[allow(clippy::excessive_precision)]
pub(crate) const LN2_LO: f32 = -2.12194440e-4;
/// Cephes `expf` polynomial: `e^r ≈ 1 + r + r²·P(r)`, highest power first. The
/// constants are written as Cephes prints them (hence the allowed excess digits).
#[allow(clippy::excessive_precision)]
pub(crate) const EXP_P: [f32; 6] = [
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
];
/// Cephes `tanhf`: below 0.625, `tanh x ≈ x + x·z·P(z)`, `z = x²`.
pub(crate) const TANH_SMALL: f32 = 0.625;
#[allow(clippy::excessive_precision)]
pub(crate) const TANH_P: [f32; 5] = [
    -5.70498872745e-3,
    2.06390887954e-2,
    -5.37397155531e-2,
    1.33314422036e-1,
    -3.33332819422e-1,
];
/// Numerical Recipes `erfcc`: `erfc(z) ≈ t·exp(-z² + P(t))`, `t = 1/(1 + z/2)`, with
/// `P` of degree 9 (highest power first), as printed there.
#[allow(clippy::excessive_precision)]
pub(crate) const ERFC_P: [f32; 10] = [
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
];
