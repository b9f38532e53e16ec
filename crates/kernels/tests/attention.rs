//! Attention over KV tiles ([`hearth_kernels::ops::attention`]): every level against
//! softmax attention computed in f64, and every SIMD level against the scalar one.
//!
//! Errors are absolute, relative to the largest |value| (the output is a convex
//! combination of value rows). Sources of error: the scores' f32 dot products (the SIMD
//! levels fuse multiply-adds, the reference does not), `exp` (the SIMD levels'
//! polynomial, 2 ulp), the f32 running sum and the rescaling by `e^(m - m')`. Measured
//! over the shapes below: scalar vs f64 4.6e-7, AVX2 and AVX-512 vs f64 5.1e-7, SIMD vs
//! scalar 2.7e-7 (all × max|v|); the bound is 2e-6, about four times that. (AVX2 and
//! AVX-512 agree bit for bit: each lane does the same fused operations in the same
//! order.)
//!
//! Masked keys past the end of the cached ones hold NaN, so a kernel that reads a key or
//! value no row may see fails the comparison.
//!
//! Every stored type ([`KvType`]) is checked the same way: the f64 reference computes
//! with the stored keys and values widened back to f32 (an f16 exactly, a Q8_0 element
//! as `q·d`), so the bound is the kernels' own error, not the storage's rounding (that is
//! the fidelity gates' business). The SIMD kernels widen each element exactly as the
//! scalar ones do, so the f32 bound holds unchanged.

use hearth_kernels::dispatch::Level;
use hearth_kernels::ops::attention::{
    f16_to_f32, flash_finish, FlashRows, KvData, KvTile, KvType, KV_TILE, Q8_0_BLOCK,
};
use hearth_kernels::ops::Ops;
use hearth_kernels::quant::blocks::BlockQ8_0;
use hearth_kernels::quant::q8_0;

const TOL: f64 = 2e-6;

/// A small deterministic generator (xorshift64*), values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        x as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n.max(1)
    }
}

/// One test case: `n_tok` tokens of `per_tok` query rows each, over `n_keys` cached keys
/// laid out in tiles as the KV cache does (keys transposed per tile, values as rows of
/// `v_stride`), token `t` seeing keys `vis[t]`.
struct Case {
    hd_k: usize,
    hd_v: usize,
    per_tok: usize,
    scale: f32,
    q: Vec<f32>,
    /// `[n_tiles][hd_k, KV_TILE]`
    k: Vec<f32>,
    /// `[n_tiles · KV_TILE, v_stride]`
    v: Vec<f32>,
    v_stride: usize,
    n_keys: usize,
    vis: Vec<(usize, usize)>,
    k_store: Stored,
    v_store: Stored,
}

/// Keys or values in a stored type (for f32, the `Case`'s own arrays are used).
#[derive(Default)]
struct Stored {
    ty: Option<KvType>,
    half: Vec<u16>,
    qs: Vec<i8>,
    d: Vec<u16>,
}

/// f16 bits of a NaN: the scale of a Q8_0 block of unused cells, so that reading one
/// shows up as NaN like an unused f32 cell.
const F16_NAN: u16 = 0x7e00;

impl Stored {
    fn data<'a>(&'a self, f32s: &'a [f32]) -> KvData<'a> {
        match self.ty {
            None | Some(KvType::F32) => KvData::F32(f32s),
            Some(KvType::F16) => KvData::F16(&self.half),
            Some(KvType::Q8_0) => KvData::Q8_0 {
                qs: &self.qs,
                d: &self.d,
            },
        }
    }
}

/// Quantizes 32 values as ggml does, or marks them unused (NaN scale) when any is NaN.
fn q8_block(x: &[f32]) -> BlockQ8_0 {
    let mut b = [BlockQ8_0 {
        d: [0; 2],
        qs: [0; Q8_0_BLOCK],
    }];
    if x.iter().any(|v| v.is_nan()) {
        b[0].d = F16_NAN.to_le_bytes();
    } else {
        q8_0::quantize(x, &mut b);
    }
    b[0]
}

fn to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

impl Case {
    fn new(
        seed: u64,
        hd_k: usize,
        hd_v: usize,
        per_tok: usize,
        n_tok: usize,
        n_keys: usize,
        (kt, vt): (KvType, KvType),
    ) -> Case {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let n_tiles = n_keys.div_ceil(KV_TILE);
        // A stride past the row (as the cache's rows of all heads), a multiple of 32
        // for Q8_0.
        let v_stride = match vt {
            KvType::Q8_0 => hd_v + Q8_0_BLOCK,
            _ => hd_v + 3,
        };
        // Queries and keys large enough that the scores spread over a few units.
        let q = (0..n_tok * per_tok * hd_k)
            .map(|_| 2.0 * rng.next())
            .collect();
        let mut k = vec![f32::NAN; n_tiles * KV_TILE * hd_k];
        let mut v = vec![f32::NAN; n_tiles * KV_TILE * v_stride];
        for j in 0..n_keys {
            let (b, l) = (j / KV_TILE, j % KV_TILE);
            for d in 0..hd_k {
                k[b * KV_TILE * hd_k + d * KV_TILE + l] = 2.0 * rng.next();
            }
            for d in 0..hd_v {
                v[j * v_stride + d] = rng.next();
            }
        }
        // Causal-like ranges: token t sees up to n_keys - n_tok + t + 1 keys, from a
        // window start for some tokens; one token sees nothing when there are several.
        let vis = (0..n_tok)
            .map(|t| {
                let hi = (n_keys + 1 + t).saturating_sub(n_tok).min(n_keys);
                let lo = if t % 3 == 1 { rng.below(hi) } else { 0 };
                if n_tok > 2 && t == n_tok / 2 {
                    (hi, hi)
                } else {
                    (lo, hi)
                }
            })
            .collect();
        let (k_store, v_store) = (
            store_keys(kt, &mut k, hd_k),
            store_values(vt, &mut v, v_stride),
        );
        Case {
            hd_k,
            hd_v,
            per_tok,
            scale: 1.0 / (hd_k as f32).sqrt(),
            q,
            k,
            v,
            v_stride,
            n_keys,
            vis,
            k_store,
            v_store,
        }
    }

    /// Tile `b` in the stored types.
    fn tile(&self, b: usize) -> KvTile<'_> {
        let (hd_k, vs) = (self.hd_k, self.v_stride);
        let k = match self.k_store.data(&self.k) {
            KvData::F32(k) => KvData::F32(&k[b * KV_TILE * hd_k..][..KV_TILE * hd_k]),
            KvData::F16(k) => KvData::F16(&k[b * KV_TILE * hd_k..][..KV_TILE * hd_k]),
            KvData::Q8_0 { qs, d } => KvData::Q8_0 {
                qs: &qs[b * KV_TILE * hd_k..][..KV_TILE * hd_k],
                d: &d[b * KV_TILE * hd_k / Q8_0_BLOCK..][..KV_TILE * hd_k / Q8_0_BLOCK],
            },
        };
        let v = match self.v_store.data(&self.v) {
            KvData::F32(v) => KvData::F32(&v[b * KV_TILE * vs..]),
            KvData::F16(v) => KvData::F16(&v[b * KV_TILE * vs..]),
            KvData::Q8_0 { qs, d } => KvData::Q8_0 {
                qs: &qs[b * KV_TILE * vs..],
                d: &d[b * KV_TILE * vs / Q8_0_BLOCK..],
            },
        };
        KvTile { k, v, v_stride: vs }
    }

    fn n_rows(&self) -> usize {
        self.vis.len() * self.per_tok
    }

    /// Softmax attention in f64: `[n_rows, hd_v]`.
    fn reference(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n_rows() * self.hd_v];
        for r in 0..self.n_rows() {
            let (lo, hi) = self.vis[r / self.per_tok];
            let q = &self.q[r * self.hd_k..][..self.hd_k];
            let s: Vec<f64> = (lo..hi)
                .map(|j| {
                    let base = j / KV_TILE * KV_TILE * self.hd_k + j % KV_TILE;
                    let dot: f64 = (0..self.hd_k)
                        .map(|d| q[d] as f64 * self.k[base + d * KV_TILE] as f64)
                        .sum();
                    dot * self.scale as f64
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
            for (j, x) in (lo..hi).zip(&s) {
                let w = (x - max).exp() / sum;
                for d in 0..self.hd_v {
                    out[r * self.hd_v + d] += w * self.v[j * self.v_stride + d] as f64;
                }
            }
        }
        out
    }

    /// The tiled kernels over keys `0..n_keys`, cut into `n_split` passes of whole tiles
    /// whose states [`flash_finish`] merges.
    fn flash(&self, ops: &Ops, n_split: usize) -> Vec<f32> {
        let (n, hd_v) = (self.n_rows(), self.hd_v);
        let n_tiles = self.n_keys.div_ceil(KV_TILE);
        let mut states: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = Vec::new();
        let (mut s, mut alpha) = (vec![0.0; n * KV_TILE], vec![0.0; n]);
        for split in 0..n_split {
            let (mut m, mut l, mut o) = (vec![0.0; n], vec![0.0; n], vec![0.0; n * hd_v]);
            let mut st = FlashRows {
                m: &mut m,
                l: &mut l,
                o: &mut o,
                s: &mut s,
                alpha: &mut alpha,
            };
            st.reset();
            let end = n_tiles * (split + 1) / n_split;
            for b in n_tiles * split / n_split..end {
                let tile = self.tile(b);
                // As attention passes it: the next tile of the pass, fetched meanwhile.
                let next = (b + 1 < end).then(|| self.tile(b + 1));
                let j0 = b * KV_TILE;
                let vis: Vec<(usize, usize)> = self
                    .vis
                    .iter()
                    .map(|&(lo, hi)| (lo.saturating_sub(j0), hi.saturating_sub(j0)))
                    .collect();
                ops.attn_tile(&self.q, self.scale, &tile, next.as_ref(), &vis, &mut st);
            }
            states.push((m, l, o));
        }
        let mut out = vec![0.0; n * hd_v];
        for (r, y) in out.chunks_exact_mut(hd_v).enumerate() {
            let parts = states
                .iter()
                .map(|(m, l, o)| (m[r], l[r], &o[r * hd_v..][..hd_v]));
            flash_finish(parts, y);
        }
        out
    }
}

/// Stores transposed key tiles `k` (`[n_tiles][hd_k, KV_TILE]`) as `ty`, as the KV
/// cache does (Q8_0 in blocks of 32 dimensions of one key), and replaces `k` by the
/// stored values widened back to f32.
fn store_keys(ty: KvType, k: &mut [f32], hd_k: usize) -> Stored {
    const T: usize = KV_TILE;
    let mut st = Stored {
        ty: Some(ty),
        ..Stored::default()
    };
    match ty {
        KvType::F32 => {}
        KvType::F16 => {
            st.half = k.iter().map(|&x| to_f16(x)).collect();
            for (x, &h) in k.iter_mut().zip(&st.half) {
                *x = f16_to_f32(h);
            }
        }
        KvType::Q8_0 => {
            st.qs = vec![0; k.len()];
            st.d = vec![0; k.len() / Q8_0_BLOCK];
            for (tile, (qs, d)) in k.chunks_exact_mut(hd_k * T).zip(
                st.qs
                    .chunks_exact_mut(hd_k * T)
                    .zip(st.d.chunks_exact_mut(hd_k / Q8_0_BLOCK * T)),
            ) {
                for lane in 0..T {
                    for blk in 0..hd_k / Q8_0_BLOCK {
                        let dims = blk * Q8_0_BLOCK..(blk + 1) * Q8_0_BLOCK;
                        let x: Vec<f32> = dims.clone().map(|dd| tile[dd * T + lane]).collect();
                        let b = q8_block(&x);
                        let h = u16::from_le_bytes(b.d);
                        d[blk * T + lane] = h;
                        for (dd, &q) in dims.zip(&b.qs) {
                            qs[dd * T + lane] = q;
                            tile[dd * T + lane] = q as f32 * f16_to_f32(h);
                        }
                    }
                }
            }
        }
    }
    st
}

/// Stores value rows `v` (`[n, v_stride]`) as `ty` (Q8_0 in blocks of 32 along a row)
/// and replaces `v` by the stored values widened back to f32.
fn store_values(ty: KvType, v: &mut [f32], v_stride: usize) -> Stored {
    let mut st = Stored {
        ty: Some(ty),
        ..Stored::default()
    };
    match ty {
        KvType::F32 => {}
        KvType::F16 => {
            st.half = v.iter().map(|&x| to_f16(x)).collect();
            for (x, &h) in v.iter_mut().zip(&st.half) {
                *x = f16_to_f32(h);
            }
        }
        KvType::Q8_0 => {
            assert_eq!(v_stride % Q8_0_BLOCK, 0);
            st.qs = vec![0; v.len()];
            st.d = vec![0; v.len() / Q8_0_BLOCK];
            for ((x, qs), d) in v
                .chunks_exact_mut(Q8_0_BLOCK)
                .zip(st.qs.chunks_exact_mut(Q8_0_BLOCK))
                .zip(&mut st.d)
            {
                // The padding past a row's `hd_v` columns is NaN; a block of it is never
                // read, and quantizes to a NaN scale like an unused cell's.
                let b = q8_block(x);
                *d = u16::from_le_bytes(b.d);
                qs.copy_from_slice(&b.qs);
                for (x, &q) in x.iter_mut().zip(&b.qs) {
                    *x = q as f32 * f16_to_f32(*d);
                }
            }
        }
    }
    st
}

/// The stored `(key, value)` types checked: each alone, and mixed.
const TYPES: &[(KvType, KvType)] = &[
    (KvType::F32, KvType::F32),
    (KvType::F16, KvType::F16),
    (KvType::Q8_0, KvType::Q8_0),
    (KvType::F16, KvType::Q8_0),
    (KvType::Q8_0, KvType::F32),
];

/// Whether the head sizes suit the types (Q8_0 needs whole blocks).
fn fits((kt, vt): (KvType, KvType), hd_k: usize, hd_v: usize) -> bool {
    hd_k.is_multiple_of(kt.block_size()) && hd_v.is_multiple_of(vt.block_size())
}

/// `(hd_k, hd_v, rows per token, tokens, keys)`: Gemma 3 270M (4 query heads on one KV
/// head, 256), DeepSeek-R1-Distill-Qwen 1.5B and 7B (6 and 7 per KV head, 128), a decode
/// step, and odd sizes for the kernels' row and column tails.
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (256, 256, 4, 16, 200),
    (256, 256, 4, 1, 513),
    (128, 128, 6, 10, 77),
    (128, 128, 7, 9, 160),
    (128, 128, 7, 1, 31),
    (64, 64, 1, 13, 45),
    (40, 24, 3, 5, 33),
    (8, 8, 2, 3, 16),
    (32, 96, 5, 3, 40),
];

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, |a, e| {
            if e.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(e)
            }
        })
}

/// The values lie in [-1, 1), so errors are already relative to max|v| (≤ 1).
fn check(what: &str, err: f64) {
    assert!(err <= TOL, "{what}: error {err:e} > {TOL:e}");
}

#[test]
fn every_level_matches_f64_softmax_attention() {
    for level in Level::supported() {
        let ops = Ops::for_level(level).expect("supported level");
        for &types in TYPES {
            for (i, &(hd_k, hd_v, per_tok, n_tok, n_keys)) in SHAPES.iter().enumerate() {
                if !fits(types, hd_k, hd_v) {
                    continue;
                }
                let case = Case::new(i as u64 + 1, hd_k, hd_v, per_tok, n_tok, n_keys, types);
                let want = case.reference();
                for n_split in [1, 2, 3] {
                    let got = case.flash(&ops, n_split);
                    let err = max_err(&got, &want);
                    check(
                        &format!("{level:?} {types:?} shape {i} split {n_split} vs f64"),
                        err,
                    );
                }
            }
        }
    }
}

#[test]
fn simd_levels_match_scalar() {
    let scalar = Ops::for_level(Level::Scalar).expect("scalar always builds");
    for level in Level::supported()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
    {
        let ops = Ops::for_level(level).expect("supported level");
        for &types in TYPES {
            for (i, &(hd_k, hd_v, per_tok, n_tok, n_keys)) in SHAPES.iter().enumerate() {
                if !fits(types, hd_k, hd_v) {
                    continue;
                }
                let case = Case::new(100 + i as u64, hd_k, hd_v, per_tok, n_tok, n_keys, types);
                let want: Vec<f64> = case.flash(&scalar, 1).iter().map(|&x| x as f64).collect();
                let err = max_err(&case.flash(&ops, 1), &want);
                check(&format!("{level:?} {types:?} shape {i} vs scalar"), err);
            }
        }
    }
}

#[test]
fn rows_that_see_nothing_are_zero() {
    let ops = Ops::get();
    for &types in TYPES {
        let mut case = Case::new(7, 32, 32, 2, 3, 20, types);
        case.vis = vec![(0, 0), (5, 5), (20, 20)];
        let got = case.flash(ops, 2);
        assert!(got.iter().all(|&x| x == 0.0), "{types:?}: {got:?}");
    }
}

#[test]
fn cache_type_names_parse_and_unknown_ones_list_the_valid() {
    for t in KvType::ALL {
        assert_eq!(t.name().parse::<KvType>(), Ok(t));
    }
    assert_eq!("F16".parse::<KvType>(), Ok(KvType::F16));
    let err = "q4_0".parse::<KvType>().unwrap_err().to_string();
    assert!(
        err.contains("\"q4_0\"") && err.contains("f32, f16, q8_0"),
        "{err}"
    );
}

/// Multi-head Latent Attention's values are its cached keys transposed: every stored
/// type gives exactly the stored keys, widened, as value rows (`[KV_TILE, n_dims]`), for
/// the first `n_dims` of the tile's dimensions.
#[test]
fn keys_to_values_is_the_stored_keys_transposed() {
    use hearth_kernels::ops::attention::keys_to_values;
    const T: usize = KV_TILE;
    let (hd_k, n_dims) = (576, 512);
    let mut rng = Rng(0x4b2f);
    for ty in [KvType::F32, KvType::F16, KvType::Q8_0] {
        let mut k: Vec<f32> = (0..hd_k * T).map(|_| rng.next() * 3.0).collect();
        let st = store_keys(ty, &mut k, hd_k);
        let (mut tmp, mut out) = (vec![0.0; n_dims * T], vec![f32::NAN; n_dims * T]);
        keys_to_values(&st.data(&k), n_dims, &mut tmp, &mut out);
        for j in 0..T {
            for d in 0..n_dims {
                assert_eq!(
                    out[j * n_dims + d].to_bits(),
                    k[d * T + j].to_bits(),
                    "{ty}: key {j}, dimension {d}"
                );
            }
        }
    }
}
