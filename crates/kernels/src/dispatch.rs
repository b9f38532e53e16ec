//! Run-time choice of kernels.
//!
//! The CPU's features are detected once and the best routine for each tensor format is
//! stored in a [`Kernels`] table of plain function pointers (as memchr does), so the hot
//! loops pay one indirect call and no feature test. The table is built in layers: the
//! scalar references first, then each SIMD level overwrites the entries it implements, so
//! a format without a SIMD kernel silently keeps its scalar one.
//!
//! `HEARTH_CPU=scalar|avx2|avx512|neon|neondot` forces a level (lower than the machine's
//! best), so that tests and benchmarks can exercise every level on one machine.

use std::sync::OnceLock;

use crate::gemm::MicroKernel;
use crate::matmul::packed::PackedFormat;
use crate::quant::TensorType;

/// Every level, lowest first (on one architecture, each supported level's kernels are at
/// least as fast as the ones before it).
const ALL_LEVELS: [Level; 5] = [
    Level::Scalar,
    Level::Avx2,
    Level::Avx512,
    Level::Neon,
    Level::NeonDot,
];

/// An instruction-set level that kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust; the reference every other level is tested against.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL (and VNNI used where present).
    Avx512,
    /// aarch64 with NEON only: the widening multiplies of base ARMv8 (every aarch64 CPU).
    Neon,
    /// aarch64 with NEON and the dot-product extension (FEAT_DotProd: `sdot`, ARMv8.4, and
    /// most ARMv8.2 cores since Cortex-A75/Neoverse N1); its GEMM also uses FEAT_I8MM
    /// (`usdot`) where present.
    NeonDot,
}

impl Level {
    /// The name `HEARTH_CPU` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
            Level::NeonDot => "neondot",
        }
    }

    /// Parses a `HEARTH_CPU` value.
    pub fn parse(s: &str) -> Option<Level> {
        ALL_LEVELS
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => {
                Level::Neon.is_supported() && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level this CPU supports, lowest first.
    pub fn supported() -> Vec<Level> {
        ALL_LEVELS
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// The best level of this CPU.
    pub fn best() -> Level {
        *Level::supported().last().unwrap_or(&Level::Scalar)
    }
}

/// Dot product of one weight row with one activation row, both as raw bytes: `w` in the
/// weight's format, `a` in its [`activation_type`]. For F32/F16/BF16 weights `a` holds
/// f32 values and must be 4-byte aligned. Lengths must describe the same element count.
pub type DotFn = fn(w: &[u8], a: &[u8]) -> f32;

/// Dot products of several consecutive weight rows with one activation row:
/// `out[r] = dot(w[r·row_bytes..][..row_bytes], a)` for every `r` in `0..out.len()`, where
/// `dot` is the same level's [`DotFn`] for the format, bit for bit. Decoding (one token)
/// multiplies whole matrices by one activation row; a kernel that takes several rows per
/// call shares the activation loads and scales between them and pays the call and loop
/// overhead once per group, which matters for narrow rows (640 columns are 20 blocks).
/// `w.len()` must be `out.len() · row_bytes`, and `a` must match one row, as for `DotFn`.
pub type DotRowsFn = fn(w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]);

/// Dot products of several consecutive weight rows with the activation rows of several
/// tokens: `out[t·n_rows + r] = dot(w[r·row_bytes..][..row_bytes], a[t·a_stride..][..len])`
/// for every token `t` in `0..n_tokens` and row `r` in `0..n_rows`, where `n_rows` is
/// `out.len() / n_tokens`, `len` the bytes of one activation row (as for [`DotFn`]) and
/// `dot` the same level's [`DotFn`] for the format, bit for bit.
///
/// Continuous batching decodes a few sequences per step, so each weight matrix meets 2–15
/// activation rows. Looping [`DotRowsFn`] over them decodes every weight block once per
/// token; a kernel of this type decodes it once and multiplies it with the activations of
/// several tokens held in registers, which is what makes a step of four tokens cost much
/// less than four steps. Because every (row, token) result equals the single-token dot, a
/// sequence's output does not depend on which others share its batch.
///
/// `w.len()` must be `n_rows · row_bytes`, `a_stride` at least `len`, and `a` must hold
/// `n_tokens` rows `a_stride` apart (the last may end after `len` bytes).
pub type DotTokensFn =
    fn(w: &[u8], row_bytes: usize, a: &[u8], a_stride: usize, n_tokens: usize, out: &mut [f32]);

/// Products of packed rows of one format (`crate::matmul::packed`): `out[t·n + r]` for
/// the `n` rows of `groups` (whole groups of `nb` blocks) and the `n_tokens` prepared
/// activation rows of `acts`, equal bit for bit to the format's
/// `crate::matmul::packed::reference`.
pub type PackedDotFn = fn(groups: &[u8], nb: usize, acts: &[u8], n_tokens: usize, out: &mut [f32]);

/// Converts f32 activations into an activation format (Q8_0, Q8_1, Q8_K) as raw bytes.
/// `x.len()` must be a multiple of the format's block length and `out` exactly its size.
pub type QuantizeFn = fn(x: &[f32], out: &mut [u8]);

/// Number of slots in the per-type tables: one past the largest GGUF type id.
const N_TYPES: usize = 40;

/// The kernels chosen for one [`Level`].
#[derive(Clone)]
pub struct Kernels {
    level: Level,
    dots: [Option<DotFn>; N_TYPES],
    quantizers: [Option<QuantizeFn>; N_TYPES],
    gemm: Option<MicroKernel>,
    dot_rows: [Option<DotRowsFn>; N_TYPES],
    dot_tokens: [Option<DotTokensFn>; N_TYPES],
    packed: [Option<PackedDotFn>; PackedFormat::ALL.len()],
    /// Whether the packed kernels beat this level's GEMM at prompt sizes too.
    packed_prompts: bool,
}

impl Kernels {
    /// The table for the best level of this CPU, or the one `HEARTH_CPU` names.
    pub fn get() -> &'static Kernels {
        static TABLE: OnceLock<Kernels> = OnceLock::new();
        TABLE.get_or_init(|| {
            let level = match std::env::var("HEARTH_CPU") {
                Ok(name) => match Level::parse(&name) {
                    Some(l) if l.is_supported() => l,
                    _ => {
                        eprintln!(
                            "hearth: HEARTH_CPU={name:?} is not a level this CPU supports \
                             ({:?}); using {}",
                            Level::supported(),
                            Level::best().name()
                        );
                        Level::best()
                    }
                },
                Err(_) => Level::best(),
            };
            Kernels::for_level(level).expect("a supported level always builds")
        })
    }

    /// The table for `level`, or `None` when this CPU cannot run it. Tests use this to
    /// compare every level against [`Level::Scalar`] in one process.
    pub fn for_level(level: Level) -> Option<Kernels> {
        if !level.is_supported() {
            return None;
        }
        let mut k = Kernels {
            level,
            dots: [None; N_TYPES],
            quantizers: [None; N_TYPES],
            gemm: MicroKernel::for_level(level),
            dot_rows: [None; N_TYPES],
            dot_tokens: [None; N_TYPES],
            packed: [None; PackedFormat::ALL.len()],
            packed_prompts: false,
        };
        crate::quant::register_scalar(&mut k);
        match level {
            Level::Scalar => {}
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => crate::x86::register_avx2(&mut k),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                crate::x86::register_avx2(&mut k);
                crate::x86::register_avx512(&mut k);
            }
            #[cfg(target_arch = "aarch64")]
            Level::Neon => crate::arm::register_neon(&mut k),
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => {
                crate::arm::register_neon(&mut k);
                crate::arm::register_neon_dot(&mut k);
            }
            #[allow(unreachable_patterns)]
            _ => return None,
        }
        Some(k)
    }

    /// The level these kernels were built for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The dot-product kernel for weights of type `ty`, if that type can be computed with.
    pub fn dot(&self, ty: TensorType) -> Option<DotFn> {
        self.dots.get(ty.id() as usize).copied().flatten()
    }

    /// The quantizer producing activation format `act` (Q8_0, Q8_1 or Q8_K).
    pub fn quantizer(&self, act: TensorType) -> Option<QuantizeFn> {
        self.quantizers.get(act.id() as usize).copied().flatten()
    }

    /// The micro-kernel for matrix × matrix products over many tokens, where this level
    /// has one that beats the row-by-row dots (see [`crate::gemm`]).
    pub fn gemm(&self) -> Option<MicroKernel> {
        self.gemm
    }

    /// Installs (or removes) the GEMM micro-kernel; tests use it to run the plain-Rust
    /// reference through the same driver.
    pub fn set_gemm(&mut self, micro: Option<MicroKernel>) {
        self.gemm = micro;
    }

    /// Installs the dot kernel for weights of type `ty` (used by the level modules).
    pub fn set_dot(&mut self, ty: TensorType, f: DotFn) {
        self.dots[ty.id() as usize] = Some(f);
    }

    /// The several-rows kernel for weights of type `ty`, where this level has one (see
    /// [`DotRowsFn`]); without one, callers loop over [`Kernels::dot`], with the same result.
    pub fn dot_rows(&self, ty: TensorType) -> Option<DotRowsFn> {
        self.dot_rows.get(ty.id() as usize).copied().flatten()
    }

    /// Installs the several-rows kernel for weights of type `ty` (used by the level
    /// modules); it must give exactly what the level's [`Kernels::dot`] gives per row.
    pub fn set_dot_rows(&mut self, ty: TensorType, f: DotRowsFn) {
        self.dot_rows[ty.id() as usize] = Some(f);
    }

    /// The several-rows, several-tokens kernel for weights of type `ty`, where this level
    /// has one (see [`DotTokensFn`]); without one, callers loop over tokens with
    /// [`Kernels::dot_rows`] or [`Kernels::dot`], with the same result.
    pub fn dot_tokens(&self, ty: TensorType) -> Option<DotTokensFn> {
        self.dot_tokens.get(ty.id() as usize).copied().flatten()
    }

    /// Installs the several-tokens kernel for weights of type `ty` (used by the level
    /// modules); it must give exactly what the level's [`Kernels::dot`] gives per row and
    /// token.
    pub fn set_dot_tokens(&mut self, ty: TensorType, f: DotTokensFn) {
        self.dot_tokens[ty.id() as usize] = Some(f);
    }

    /// The kernel for rows packed in `format`, where this level has one; without one a
    /// model keeps such matrices as they are stored (packing would only cost memory).
    pub fn packed(&self, format: PackedFormat) -> Option<PackedDotFn> {
        self.packed[format.index()]
    }

    /// Installs the kernel for rows packed in `format` (used by the level modules); it
    /// must give exactly what `crate::matmul::packed::reference(format)` gives.
    pub fn set_packed(&mut self, format: PackedFormat, f: PackedDotFn) {
        self.packed[format.index()] = Some(f);
    }

    /// Whether a packed matrix should take a prompt's tokens as well, not only decoding
    /// ones: where this level's packed kernels beat its GEMM at prompt sizes (see
    /// `matmul::packed::matmul_rows_packed`).
    pub fn packed_prompts(&self) -> bool {
        self.packed_prompts
    }

    /// Says that this level's packed kernels beat its GEMM at prompt sizes (used by the
    /// level modules).
    pub fn set_packed_prompts(&mut self, yes: bool) {
        self.packed_prompts = yes;
    }

    /// Installs the quantizer for activation format `act` (used by the level modules).
    pub fn set_quantizer(&mut self, act: TensorType, f: QuantizeFn) {
        self.quantizers[act.id() as usize] = Some(f);
    }
}
