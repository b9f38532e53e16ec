//! Transformer ops (RMSNorm, RoPE, softmax, SiLU, GELU, attention over KV tiles): scalar
//! references and the dispatch to SIMD versions.
//!
//! Each op has a scalar reference in a submodule here ([`norm`], [`rope`], [`softmax`],
//! [`act`]), written to ggml's semantics, and SIMD versions in `crate::x86::ops` (AVX2,
//! AVX-512) and `crate::arm::ops` (NEON); [`attention`]'s tile kernels keep their SIMD
//! versions in their own module. An [`Ops`] table of plain function pointers is
//! built per [`Level`], like [`Kernels`] for the dot products: the scalar entries first,
//! then each level overwrites what it implements. [`Ops::get`] follows
//! `Kernels::get().level()`, so `HEARTH_CPU` forces a level for the ops too;
//! [`Ops::for_level`] lets tests compare every level with the scalar one.
//!
//! What the SIMD versions change: rotations and norms use the same operations as the
//! references (so they agree to the last bit or two); `exp`, `tanh`, SiLU, GELU and
//! softmax use polynomial approximations of `exp`/`tanh`/`erf` whose error against the
//! references `tests/ops.rs` states and checks at every level.
//!
//! The methods take rows: model code loops over tokens and heads (and may spread them
//! over the pool). They check lengths and panic on a mismatch, which is a bug in the
//! caller's shapes, never a property of input data.

pub mod act;
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) mod approx;
pub mod attention;
pub mod norm;
pub mod rope;
pub mod select;
pub mod softmax;

use std::sync::OnceLock;

pub use rope::{RopeCache, RopeError, RopeMode, RopeParams};

use crate::dispatch::{Kernels, Level};

/// In-place element-wise op.
pub(crate) type UnaryFn = fn(x: &mut [f32]);
/// In-place gated op: `gate[i] = f(gate[i]) · up[i]`, equal lengths.
pub(crate) type GatedFn = fn(gate: &mut [f32], up: &[f32]);
/// RMSNorm with optional fused weight; all lengths equal.
pub(crate) type RmsNormFn = fn(x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]);
/// One head's rotation: `x.len() == 2 * cos.len() == 2 * sin.len()`.
pub(crate) type RopeFn = fn(x: &mut [f32], cos: &[f32], sin: &[f32]);
/// In-place softmax of one row with scale and optional mask of the same length.
pub(crate) type SoftmaxFn = fn(x: &mut [f32], scale: f32, mask: Option<&[f32]>);
/// Each block's largest order key: `out.len() == x.len().div_ceil(select::KEY_BLOCK)`.
pub(crate) type BlockKeysFn = fn(x: &[f32], out: &mut [i32]);

/// The op kernels chosen for one [`Level`].
///
/// The fields are the raw kernels, which trust their arguments' lengths; the methods are
/// the checked entry points.
#[derive(Clone, Copy)]
pub struct Ops {
    level: Level,
    pub(crate) exp: UnaryFn,
    pub(crate) tanh: UnaryFn,
    pub(crate) silu: UnaryFn,
    pub(crate) silu_mul: GatedFn,
    pub(crate) gelu: UnaryFn,
    pub(crate) gelu_mul: GatedFn,
    pub(crate) gelu_erf: UnaryFn,
    pub(crate) rms_norm: RmsNormFn,
    pub(crate) rope_normal: RopeFn,
    pub(crate) rope_neox: RopeFn,
    pub(crate) softmax: SoftmaxFn,
    pub(crate) block_max_keys: BlockKeysFn,
    pub(crate) attn_qk: attention::QkFn,
    pub(crate) attn_pv: attention::PvFn,
    pub(crate) attn_qk_f16: attention::QkF16Fn,
    pub(crate) attn_pv_f16: attention::PvF16Fn,
    pub(crate) attn_qk_q8_0: attention::QkQ8Fn,
    pub(crate) attn_pv_q8_0: attention::PvQ8Fn,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").field("level", &self.level).finish()
    }
}

impl Ops {
    /// The table for the level [`Kernels::get`] chose (the CPU's best, or `HEARTH_CPU`).
    pub fn get() -> &'static Ops {
        static TABLE: OnceLock<Ops> = OnceLock::new();
        TABLE.get_or_init(|| {
            Ops::for_level(Kernels::get().level()).expect("the kernels' level is supported")
        })
    }

    /// The table for `level`, or `None` when this CPU cannot run it.
    pub fn for_level(level: Level) -> Option<Ops> {
        if !level.is_supported() {
            return None;
        }
        let mut ops = Ops::scalar();
        match level {
            Level::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => crate::x86::ops::register_avx2(&mut ops),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                crate::x86::ops::register_avx2(&mut ops);
                crate::x86::ops::register_avx512(&mut ops);
            }
            // The ops gain nothing from the dot-product extension.
            #[cfg(target_arch = "aarch64")]
            Level::Neon | Level::NeonDot => crate::arm::ops::register_neon(&mut ops),
            #[allow(unreachable_patterns)]
            _ => return None,
        }
        attention::register(&mut ops, level);
        ops.level = level;
        Some(ops)
    }

    /// The scalar references.
    fn scalar() -> Ops {
        Ops {
            level: Level::Scalar,
            exp: act::exp,
            tanh: act::tanh,
            silu: act::silu,
            silu_mul: act::silu_mul,
            gelu: act::gelu,
            gelu_mul: act::gelu_mul,
            gelu_erf: act::gelu_erf,
            rms_norm: norm::rms_norm,
            rope_normal: rope::rope_normal,
            rope_neox: rope::rope_neox,
            softmax: softmax::softmax,
            block_max_keys: select::block_max_keys,
            attn_qk: attention::qk,
            attn_pv: attention::pv,
            attn_qk_f16: attention::qk_f16,
            attn_pv_f16: attention::pv_f16,
            attn_qk_q8_0: attention::qk_q8_0,
            attn_pv_q8_0: attention::pv_q8_0,
        }
    }

    /// The level these kernels were built for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// `out = x / sqrt(mean(x²) + eps)` (ggml's `rms_norm`), times `weight` elementwise
    /// when given (ggml's following `mul`, fused; bit-identical to doing it separately).
    ///
    /// # Panics
    /// When `out` or `weight` differ in length from `x`.
    pub fn rms_norm(&self, x: &[f32], weight: Option<&[f32]>, eps: f32, out: &mut [f32]) {
        assert_eq!(out.len(), x.len(), "rms_norm: output length");
        if let Some(w) = weight {
            assert_eq!(w.len(), x.len(), "rms_norm: weight length");
        }
        (self.rms_norm)(x, weight, eps, out)
    }

    /// Rotates every head in `x` (`[n_head, head_dim]`, flattened) by the angles in
    /// `cache`, in the cache's [`RopeMode`]; dimensions past `n_dims` are left as they are.
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `head_dim` or `head_dim < n_dims`.
    pub fn rope(&self, x: &mut [f32], head_dim: usize, cache: &RopeCache) {
        self.rope_with(x, head_dim, cache, cache.cos(), cache.sin());
    }

    /// As [`Ops::rope`], at the position of row `i` of `cache`'s table
    /// ([`RopeCache::set_positions`]).
    ///
    /// # Panics
    /// As [`Ops::rope`], and when the table holds no row `i`.
    pub fn rope_row(&self, x: &mut [f32], head_dim: usize, cache: &RopeCache, i: usize) {
        let (cos, sin) = cache.row(i);
        self.rope_with(x, head_dim, cache, cos, sin);
    }

    /// [`Ops::rope`] by the angles `cos` and `sin` (`[n_dims/2]`, from `cache`).
    fn rope_with(
        &self,
        x: &mut [f32],
        head_dim: usize,
        cache: &RopeCache,
        cos: &[f32],
        sin: &[f32],
    ) {
        let n_dims = cache.params().n_dims;
        assert!(
            head_dim >= n_dims && head_dim > 0 && x.len().is_multiple_of(head_dim),
            "rope: {} values are not heads of {head_dim} with {n_dims} rotated dims",
            x.len()
        );
        let f = match cache.params().mode {
            RopeMode::Normal => self.rope_normal,
            RopeMode::Neox => self.rope_neox,
        };
        for head in x.chunks_exact_mut(head_dim) {
            f(&mut head[..n_dims], cos, sin);
        }
    }

    /// In place: `x = softmax(x·scale + mask)` over the whole row (ggml's `soft_max_ext`
    /// without ALiBi). Masked entries are `-inf`; a row masked entirely becomes zeros.
    ///
    /// # Panics
    /// When `mask` differs in length from `x`.
    pub fn softmax(&self, x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        if let Some(m) = mask {
            assert_eq!(m.len(), x.len(), "softmax: mask length");
        }
        (self.softmax)(x, scale, mask)
    }

    /// `out[b]` = the largest [`select::order_key`] among `x[b·KEY_BLOCK..]`, for every
    /// block of [`select::KEY_BLOCK`] logits (the last one may be short): one pass over a
    /// vocabulary's logits that tells a sampler which blocks may hold its winners.
    ///
    /// # Panics
    /// When `out.len()` is not `x.len().div_ceil(KEY_BLOCK)`.
    pub fn block_max_keys(&self, x: &[f32], out: &mut [i32]) {
        assert_eq!(
            out.len(),
            x.len().div_ceil(select::KEY_BLOCK),
            "block_max_keys: one key per block"
        );
        (self.block_max_keys)(x, out)
    }

    /// In place: `x = x·sigmoid(x)`.
    pub fn silu(&self, x: &mut [f32]) {
        (self.silu)(x)
    }

    /// In place: `gate = silu(gate)·up` (SwiGLU).
    ///
    /// # Panics
    /// When the lengths differ.
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "silu_mul: lengths");
        (self.silu_mul)(gate, up)
    }

    /// In place: GELU, tanh approximation (ggml's `gelu`).
    pub fn gelu(&self, x: &mut [f32]) {
        (self.gelu)(x)
    }

    /// In place: `gate = gelu(gate)·up` (GeGLU, tanh approximation).
    ///
    /// # Panics
    /// When the lengths differ.
    pub fn gelu_mul(&self, gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "gelu_mul: lengths");
        (self.gelu_mul)(gate, up)
    }

    /// In place: GELU, erf form (ggml's `gelu_erf`).
    pub fn gelu_erf(&self, x: &mut [f32]) {
        (self.gelu_erf)(x)
    }

    /// In place: `x = exp(x)`. Results below `f32::MIN_POSITIVE` may flush to zero at SIMD
    /// levels.
    pub fn exp(&self, x: &mut [f32]) {
        (self.exp)(x)
    }

    /// In place: `x = tanh(x)` (for logit soft-capping).
    pub fn tanh(&self, x: &mut [f32]) {
        (self.tanh)(x)
    }
}

/// Runs `$body` on `$x` in place, `$w` lanes at a time: whole vectors through `$load` and
/// `$store` (safe functions of `&[f32; $w]`), the tail through a zero-padded buffer, so
/// that every element goes through the same vector code. Used by the SIMD op modules.
macro_rules! map_lanes {
    ($w:literal, $load:ident, $store:ident, $x:expr, |$v:ident| $body:expr) => {{
        let mut chunks = $x.chunks_exact_mut($w);
        for c in &mut chunks {
            let c: &mut [f32; $w] = c.try_into().expect("chunks_exact yields whole chunks");
            let $v = $load(c);
            $store(c, $body);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let n = rest.len();
            let mut buf = [0.0f32; $w];
            buf[..n].copy_from_slice(rest);
            let $v = $load(&buf);
            $store(&mut buf, $body);
            rest.copy_from_slice(&buf[..n]);
        }
    }};
}

/// As [`map_lanes`], for a gated op: `$g` is updated in place from itself and `$u`.
macro_rules! map_lanes2 {
    ($w:literal, $load:ident, $store:ident, $g:expr, $u:expr, |$gv:ident, $uv:ident| $body:expr) => {{
        let mut gs = $g.chunks_exact_mut($w);
        let mut us = $u.chunks_exact($w);
        for (g, u) in (&mut gs).zip(&mut us) {
            let g: &mut [f32; $w] = g.try_into().expect("chunks_exact yields whole chunks");
            let u: &[f32; $w] = u.try_into().expect("chunks_exact yields whole chunks");
            let ($gv, $uv) = ($load(g), $load(u));
            $store(g, $body);
        }
        let (grest, urest) = (gs.into_remainder(), us.remainder());
        if !grest.is_empty() {
            let n = grest.len();
            let (mut gbuf, mut ubuf) = ([0.0f32; $w], [0.0f32; $w]);
            gbuf[..n].copy_from_slice(grest);
            ubuf[..n].copy_from_slice(&urest[..n]);
            let ($gv, $uv) = ($load(&gbuf), $load(&ubuf));
            $store(&mut gbuf, $body);
            grest.copy_from_slice(&gbuf[..n]);
        }
    }};
}

#[allow(unused_imports)]
pub(crate) use {map_lanes, map_lanes2};
