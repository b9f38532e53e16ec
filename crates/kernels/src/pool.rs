//! A persistent thread pool for the kernels.
