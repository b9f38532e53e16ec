//! Rotary position embedding (RoPE): the angle cache and the scalar rotations.
//!
//! As ggml's `ggml_rope_ext` (`ggml-cpu/ops.cpp`): for a token at position `pos`, pair
//! `i` of the first `n_dims` dimensions of every head is rotated by
//! `theta_i = pos · freq_base^(-2i/n_dims)`, scaled by `freq_scale` (linear scaling),
//! divided by the model's `rope_freqs` factor when it has one (Llama 3.1), and blended
//! with YaRN's extrapolation when `ext_factor != 0` (DeepSeek-V2, long-context Qwen).
//! Dimensions from `n_dims` to the head size pass through unchanged.
//!
//! Two layouts pair the dimensions differently:
//! - [`RopeMode::Normal`] (Llama, Mistral): adjacent elements `(x[2i], x[2i+1])`;
//! - [`RopeMode::Neox`] (GPT-NeoX, Qwen2, Gemma, DeepSeek's rope half): the two halves,
//!   `(x[i], x[i + n_dims/2])`.
//!
//! The angles depend only on the position, not on the head or the layer, so they are
//! computed once per token into a [`RopeCache`] (as ggml's `ggml_rope_cache_init` does
//! per row) and the per-head work is two multiplies and an add per element. `theta` is
//! advanced by repeated multiplication in f32, as ggml does, rather than by `powf`; that
//! costs some accuracy at large positions (`tests/ops.rs` bounds it) but keeps Hearth's
//! angles identical to llama.cpp's.

use std::fmt;

/// Which dimensions RoPE pairs up; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(x[2i], x[2i+1])`; ggml mode 0.
    Normal,
    /// Split halves `(x[i], x[i + n_dims/2])`; ggml mode 2 (`GGML_ROPE_TYPE_NEOX`).
    Neox,
}

/// The RoPE hyper-parameters of a model, named as in GGUF (`rope.*`) and ggml.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    /// Dimensions rotated per head (`rope.dimension_count`): even, at most the head size.
    pub n_dims: usize,
    /// Which dimensions are paired.
    pub mode: RopeMode,
    /// Base of the geometric frequency ladder (`rope.freq_base`, 10000 by default).
    pub freq_base: f32,
    /// Position scale (1 / `rope.scaling.factor` for linear scaling; 1 for none).
    pub freq_scale: f32,
    /// YaRN's extrapolation mix; 0 disables YaRN.
    pub ext_factor: f32,
    /// Magnitude scale applied to cos and sin (ggml's `attn_factor`, YaRN's mscale).
    pub attn_factor: f32,
    /// YaRN: rotations per context above which dimensions extrapolate (32 by default).
    pub beta_fast: f32,
    /// YaRN: rotations per context below which dimensions interpolate (1 by default).
    pub beta_slow: f32,
    /// YaRN: the context length the model was trained with
    /// (`rope.scaling.original_context_length`).
    pub n_ctx_orig: u32,
}

impl RopeParams {
    /// Plain RoPE: no scaling, no YaRN.
    pub fn new(n_dims: usize, mode: RopeMode, freq_base: f32) -> RopeParams {
        RopeParams {
            n_dims,
            mode,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 0,
        }
    }

    /// YaRN's correction range `[low, high]` of pair indices, as ggml's
    /// `ggml_rope_yarn_corr_dims`.
    pub fn yarn_corr_dims(&self) -> [f32; 2] {
        let n_dims = self.n_dims as f32;
        let corr_dim = |n_rot: f32| {
            n_dims * (self.n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.freq_base.ln())
        };
        let start = corr_dim(self.beta_fast).floor();
        let end = corr_dim(self.beta_slow).ceil();
        [start.max(0.0), end.min(n_dims - 1.0)]
    }
}

/// Why RoPE parameters were refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeError {
    /// `n_dims` must be even and non-zero.
    Dims(usize),
    /// `freq_base` must be finite and above 1, `freq_scale` finite and positive.
    Frequencies { freq_base: f32, freq_scale: f32 },
    /// `rope_freqs` must hold one factor per rotated pair.
    FreqFactors { expected: usize, actual: usize },
}

impl fmt::Display for RopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RopeError::Dims(n) => {
                write!(f, "rope.dimension_count {n} is not a positive even number")
            }
            RopeError::Frequencies {
                freq_base,
                freq_scale,
            } => write!(
                f,
                "rope.freq_base {freq_base} / freq_scale {freq_scale} out of range"
            ),
            RopeError::FreqFactors { expected, actual } => write!(
                f,
                "rope_freqs holds {actual} factors, expected {expected} (n_dims / 2)"
            ),
        }
    }
}

impl std::error::Error for RopeError {}

/// The cos and sin of every rotated pair for one position, plus the parameters they came
/// from. Built once per model (it allocates), refilled per token with
/// [`RopeCache::set_pos`] (it does not). It also keeps a table of the pairs of a whole
/// batch's positions ([`RopeCache::set_positions`]), so that the layers sharing a cache
/// compute each position's angles once, not once per layer: that took about 3 % of a
/// 188-token prompt step of Gemma 3 270M, serially.
#[derive(Debug, Clone)]
pub struct RopeCache {
    params: RopeParams,
    /// `rope_freqs` (one divisor per pair), or empty.
    freq_factors: Vec<f32>,
    /// `powf(freq_base, -2/n_dims)`: the ratio between neighbouring pairs' angles.
    theta_scale: f32,
    corr_dims: [f32; 2],
    pos: u32,
    /// `[n_dims/2]`
    cos: Vec<f32>,
    /// `[n_dims/2]`
    sin: Vec<f32>,
    /// The positions [`RopeCache::set_positions`] last filled the table for.
    table_pos: Vec<u32>,
    /// `[table_pos.len(), n_dims/2]` each.
    table_cos: Vec<f32>,
    table_sin: Vec<f32>,
}

impl RopeCache {
    /// Validates `params` (they come from a model file) and `freq_factors` (a model's
    /// `rope_freqs` tensor, `[n_dims/2]`), and fills the cache for position 0.
    pub fn new(params: RopeParams, freq_factors: Option<&[f32]>) -> Result<RopeCache, RopeError> {
        let n = params.n_dims;
        if n == 0 || !n.is_multiple_of(2) {
            return Err(RopeError::Dims(n));
        }
        let ok_base = params.freq_base.is_finite() && params.freq_base > 1.0;
        let ok_scale = params.freq_scale.is_finite() && params.freq_scale > 0.0;
        if !ok_base || !ok_scale {
            return Err(RopeError::Frequencies {
                freq_base: params.freq_base,
                freq_scale: params.freq_scale,
            });
        }
        let freq_factors = match freq_factors {
            Some(f) if f.len() != n / 2 => {
                return Err(RopeError::FreqFactors {
                    expected: n / 2,
                    actual: f.len(),
                })
            }
            Some(f) => f.to_vec(),
            None => Vec::new(),
        };
        let mut cache = RopeCache {
            theta_scale: params.freq_base.powf(-2.0 / n as f32),
            corr_dims: params.yarn_corr_dims(),
            params,
            freq_factors,
            pos: 0,
            cos: vec![0.0; n / 2],
            sin: vec![0.0; n / 2],
            table_pos: Vec::new(),
            table_cos: Vec::new(),
            table_sin: Vec::new(),
        };
        cache.set_pos(0);
        Ok(cache)
    }

    /// Makes room in the table for `n` positions, so that filling it for up to `n`
    /// allocates nothing.
    pub fn reserve(&mut self, n: usize) {
        let half = self.params.n_dims / 2;
        self.table_pos.reserve(n);
        self.table_cos.reserve(n * half);
        self.table_sin.reserve(n * half);
    }

    /// Fills the table for `pos`, unless it holds exactly those positions already; row
    /// `i` ([`RopeCache::row`]) is then what [`RopeCache::set_pos`]`(pos[i])` computes.
    pub fn set_positions(&mut self, pos: &[u32]) {
        if self.table_pos == pos {
            return;
        }
        let half = self.params.n_dims / 2;
        self.table_pos.clear();
        self.table_cos.clear();
        self.table_sin.clear();
        for &p in pos {
            self.set_pos(p);
            self.table_pos.push(p);
            self.table_cos.extend_from_slice(&self.cos);
            self.table_sin.extend_from_slice(&self.sin);
        }
        debug_assert_eq!(self.table_cos.len(), pos.len() * half);
    }

    /// The cos and sin of row `i` of the table (`[n_dims/2]` each).
    ///
    /// # Panics
    /// When the table holds no row `i`.
    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        let half = self.params.n_dims / 2;
        (
            &self.table_cos[i * half..][..half],
            &self.table_sin[i * half..][..half],
        )
    }

    /// Refills the cache for position `pos` (ggml's `ggml_rope_cache_init`).
    pub fn set_pos(&mut self, pos: u32) {
        let p = &self.params;
        let mut theta = pos as f32;
        for i in 0..p.n_dims / 2 {
            let ff = self.freq_factors.get(i).copied().unwrap_or(1.0);
            let (c, s) = rope_yarn(theta / ff, p, self.corr_dims, 2 * i);
            self.cos[i] = c;
            self.sin[i] = s;
            theta *= self.theta_scale;
        }
        self.pos = pos;
    }

    /// The position the cache holds.
    pub fn pos(&self) -> u32 {
        self.pos
    }

    /// The parameters the cache was built with.
    pub fn params(&self) -> &RopeParams {
        &self.params
    }

    /// `cos(theta_i)·mscale` for each pair `i`, `[n_dims/2]`.
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// `sin(theta_i)·mscale` for each pair `i`, `[n_dims/2]`.
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }
}

/// cos and sin of one pair's angle with YaRN's interpolation/extrapolation blend and
/// magnitude correction, as ggml's `rope_yarn` (`i0` is the pair's first dimension).
fn rope_yarn(theta_extrap: f32, p: &RopeParams, corr_dims: [f32; 2], i0: usize) -> (f32, f32) {
    let theta_interp = p.freq_scale * theta_extrap;
    let mut theta = theta_interp;
    let mut mscale = p.attn_factor;
    if p.ext_factor != 0.0 {
        let ramp_mix = yarn_ramp(corr_dims[0], corr_dims[1], i0) * p.ext_factor;
        theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
        mscale *= 1.0 + 0.1 * (1.0 / p.freq_scale).ln();
    }
    (theta.cos() * mscale, theta.sin() * mscale)
}

/// ggml's `rope_yarn_ramp`: 1 below `low`, 0 above `high`, linear in between.
fn yarn_ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// Rotates adjacent pairs: `x` is the first `n_dims` elements of one head
/// (`x.len() == 2 * cos.len()`).
pub fn rope_normal(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

/// Rotates split halves: `x` is the first `n_dims` elements of one head
/// (`x.len() == 2 * cos.len()`).
pub fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (lo, hi) = x.split_at_mut(cos.len());
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi).zip(cos).zip(sin) {
        let (x0, x1) = (*a, *b);
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
}
