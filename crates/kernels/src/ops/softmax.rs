//! Softmax over one row, the scalar reference.
//!
//! As ggml's `ggml_soft_max_ext` (without ALiBi): `w = x·scale + mask`, then
//! `y = exp(w - max(w)) / Σ exp(w - max(w))`, the sum accumulated in double and its
//! reciprocal rounded to float before the final scaling (`ggml_vec_soft_max_f32` and
//! `ggml_vec_scale_f32`). Subtracting the maximum keeps every exponent at or below zero,
//! so nothing overflows.
//!
//! One deliberate difference: when every entry is `-inf` (a fully masked row) ggml
//! produces NaN; Hearth produces zeros, so a degenerate row cannot poison the rest of a
//! forward pass.

/// In place: `x = softmax(x·scale + mask)`.
///
/// Lengths are checked by [`crate::ops::Ops::softmax`], the public entry point.
pub fn softmax(x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        None => x.iter_mut().for_each(|v| *v *= scale),
        Some(m) => x.iter_mut().zip(m).for_each(|(v, &m)| *v = *v * scale + m),
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}
