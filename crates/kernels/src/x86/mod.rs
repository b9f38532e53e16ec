//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL, VNNI where present).

pub mod ops;

use crate::dispatch::Kernels;

/// Installs the AVX2 kernels over the scalar ones.
pub fn register_avx2(_k: &mut Kernels) {}

/// Installs the AVX-512 kernels over the AVX2 ones.
pub fn register_avx512(_k: &mut Kernels) {}
