//! Element-wise activations (SiLU, GELU in its tanh and erf forms) and the `exp`/`tanh`
//! they rest on: the scalar references, defined as ggml's `ggml-cpu/vec.h` defines them.
//!
//! The SIMD versions (`crate::x86::ops`, `crate::arm::ops`) replace `expf`, `tanhf` and
//! `erff` with polynomial approximations; `tests/ops.rs` states and checks how far they
//! may stray from these references.
//!
//! One deliberate difference from ggml's CPU backend: by default it evaluates GELU
//! through a table of f16 inputs (`GGML_GELU_FP16`), so its results carry f16 rounding
//! (about 1e-3 relative). Hearth computes the formula below in f32 at every level.

/// The cubic coefficient of the tanh approximation of GELU (`GELU_COEF_A` in ggml).
pub const GELU_COEF_A: f32 = 0.044715;
/// `sqrt(2/pi)` (`SQRT_2_OVER_PI` in ggml).
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// `1/sqrt(2)` (`SQRT_2_INV` in ggml).
pub const SQRT_2_INV: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// `x·sigmoid(x)`, ggml's `ggml_silu_f32`.
#[inline]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation: `0.5·x·(1 + tanh(sqrt(2/pi)·x·(1 + 0.044715·x²)))`, ggml's
/// `ggml_gelu_f32`.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// GELU, exact form: `0.5·x·(1 + erf(x/sqrt(2)))`, ggml's `ggml_gelu_erf_f32`.
#[inline]
pub fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * SQRT_2_INV))
}

/// `erf(x)` rounded to f32 (Rust's standard library has no stable `erf`).
#[inline]
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// `erf(x)` in f64, accurate to a few units in the last place (checked against Python's
/// `math.erf` in `tests/ops.rs`).
///
/// Below 2.5 it sums the series `erf(x) = 2/sqrt(pi)·exp(-x²)·Σ 2ⁿx²ⁿ⁺¹/(1·3·…·(2n+1))`,
/// whose terms are all positive (no cancellation); above it evaluates the continued
/// fraction `erfc(x) = exp(-x²)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`,
/// which converges quickly there (Abramowitz & Stegun 7.1.6 and 7.1.14).
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a.is_nan() {
        return x;
    } else if a < 2.5 {
        let x2 = a * a;
        let (mut term, mut sum) = (a, a);
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
    } else if a < 6.0 {
        let mut f = a;
        for k in (1..=80).rev() {
            f = a + (k as f64 * 0.5) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    } else {
        // erfc(6) < 2.2e-17: erf is 1 to f64 precision.
        1.0
    };
    r.copysign(x)
}

/// `x[i] = exp(x[i])`.
pub fn exp(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

/// `x[i] = tanh(x[i])`.
pub fn tanh(x: &mut [f32]) {
    for v in x {
        *v = v.tanh();
    }
}

/// `x[i] = silu(x[i])`.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v = silu_f32(*v);
    }
}

/// `gate[i] = silu(gate[i]) · up[i]`: the SwiGLU feed-forward gate (ggml's `swiglu`).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_f32(*g) * u;
    }
}

/// `x[i] = gelu(x[i])`, tanh approximation.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = gelu_f32(*v);
    }
}

/// `gate[i] = gelu(gate[i]) · up[i]`: the GeGLU feed-forward gate (ggml's `geglu`).
pub fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_f32(*g) * u;
    }
}

/// `x[i] = gelu_erf(x[i])`.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x {
        *v = gelu_erf_f32(*v);
    }
}
