//! Transformer ops (RMSNorm, RoPE, softmax, SiLU, GELU): scalar references and the dispatch to SIMD versions.
