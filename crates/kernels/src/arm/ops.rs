//! NEON versions of the ops in `crate::ops`.
