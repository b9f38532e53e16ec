//! x86-64 SIMD versions of the ops in `crate::ops`.
