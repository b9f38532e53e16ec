//! Reading the reference fixtures made by `tests/fixtures/quant/make_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;

use hearth_kernels::quant::TensorType;

/// `tests/fixtures/quant` at the workspace root.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

fn u32_at(b: &[u8], off: usize) -> usize {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn read(name: &str, magic: &[u8; 4], ty: TensorType) -> (usize, usize, Vec<u8>) {
    let path = fixture_dir().join(name);
    let b = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `python3 tests/fixtures/quant/make_fixtures.py`)",
            path.display()
        )
    });
    assert_eq!(&b[0..4], magic, "{name}: magic");
    assert_eq!(u32_at(&b, 4) as u32, ty.id(), "{name}: type id");
    (u32_at(&b, 8), u32_at(&b, 12), b[16..].to_vec())
}

/// A dequantization fixture: row bytes and the values the `gguf` package decoded.
pub struct Dequant {
    pub data: Vec<u8>,
    pub expected: Vec<f32>,
}

pub fn dequant(ty: TensorType) -> Dequant {
    let name = format!("dequant_{}.bin", ty.name());
    let (n, n_bytes, body) = read(&name, b"HQDQ", ty);
    assert_eq!(body.len(), n_bytes + 4 * n, "{name}: size");
    Dequant {
        data: body[..n_bytes].to_vec(),
        expected: f32s(&body[n_bytes..]),
    }
}

/// A quantization fixture: f32 input and the bytes the `gguf` package produced.
pub struct Quant {
    pub input: Vec<f32>,
    pub expected: Vec<u8>,
}

pub fn quant(ty: TensorType) -> Quant {
    let name = format!("quant_{}.bin", ty.name());
    let (n, n_bytes, body) = read(&name, b"HQQT", ty);
    assert_eq!(body.len(), 4 * n + n_bytes, "{name}: size");
    Quant {
        input: f32s(&body[..4 * n]),
        expected: body[4 * n..].to_vec(),
    }
}

/// A small deterministic generator (xorshift64*), so tests need no extra crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The 16 types Hearth computes with.
pub const COMPUTABLE: [TensorType; 16] = {
    use TensorType::*;
    [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL,
        IQ4_XS,
    ]
};
