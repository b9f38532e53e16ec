//! Hearth's numerics: tensor formats, SIMD kernels chosen at run time, transformer ops and
//! the persistent compute pool. This crate depends on none of Hearth's other crates.

pub mod alloc_counter;
pub mod dispatch;
pub mod gemm;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;

#[cfg(target_arch = "aarch64")]
pub mod arm;
#[cfg(target_arch = "x86_64")]
pub mod x86;
