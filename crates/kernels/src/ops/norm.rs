//! RMSNorm, the scalar reference.
//!
//! ggml's `ggml_rms_norm` computes `y = x / sqrt(mean(x²) + eps)` with the sum of squares
//! accumulated in double (`ggml_float`); the model's weight is a separate `ggml_mul`.
//! Here the weight multiply is optionally fused into the same pass, but with the same two
//! roundings (`(x·scale)·w`), so fused and unfused results are bit-identical.

/// `out = x · 1/sqrt(mean(x²) + eps)`, then `· weight` elementwise when given.
///
/// Lengths are checked by [`crate::ops::Ops::rms_norm`], the public entry point.
pub fn rms_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mut sum = 0.0f64;
    for &v in x {
        sum += (v * v) as f64;
    }
    let scale = rms_scale(sum, x.len(), eps);
    match weight {
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale;
            }
        }
        Some(w) => {
            for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
                *o = (v * scale) * w;
            }
        }
    }
}

/// `1/sqrt(mean + eps)` from the f64 sum of squares, rounded as ggml does: the mean is
/// taken in double and then stored as float.
#[inline]
pub fn rms_scale(sum_sq: f64, n: usize, eps: f32) -> f32 {
    let mean = (sum_sq / n as f64) as f32;
    1.0 / (mean + eps).sqrt()
}
