//! GGUF: read (mapped, validated, zero-copy) and write.
